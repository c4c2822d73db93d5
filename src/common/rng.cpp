#include "common/rng.h"

#include <cmath>

namespace gpt {

float Rng::normal() {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    float u1 = 1.0f - uniform();
    float u2 = uniform();
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530717958647692f * u2);
}

}  // namespace gpt
