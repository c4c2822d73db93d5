#include "train/schedule.h"

#include <cmath>

namespace gpt {

float learning_rate(const OptimConfig& o, int step, int max_iters) {
    const int decay_end = o.lr_decay_iters > 0 ? o.lr_decay_iters : max_iters;
    if (o.warmup_iters > 0 && step <= o.warmup_iters)
        return o.lr * float(step) / float(o.warmup_iters);
    if (step >= decay_end) return o.min_lr;
    const double progress = double(step - o.warmup_iters) / double(decay_end - o.warmup_iters);
    const double coeff = 0.5 * (1.0 + std::cos(M_PI * progress));   // 1 -> 0
    return float(o.min_lr + coeff * (o.lr - o.min_lr));
}

}  // namespace gpt
