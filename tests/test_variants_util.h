// Helpers for the variant tests: random tensors and a central-difference gradient check in double.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "common/rng.h"

namespace gpt::test {

using Vec = std::vector<double>;

inline Vec random_vec(size_t n, Rng& rng, double scale = 1.0) {
    Vec v(n);
    for (auto& x : v) x = scale * (2.0 * rng.uniform() - 1.0);
    return v;
}

inline double dot(const Vec& a, const Vec& b) {
    REQUIRE(a.size() == b.size());
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

inline double max_abs_diff(const Vec& a, const Vec& b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
}

// One input of a gradient check: its values (perturbed in place) and the analytic gradient.
struct GradInput {
    std::string name;
    Vec* x;
    const Vec* grad;
};

// For every element of every input, compares the analytic gradient with the central difference
// (loss(x+h) - loss(x-h)) / 2h. loss() must recompute everything from the current inputs.
// Also requires each gradient to be non-zero somewhere, so an input the code forgets fails.
inline void check_gradients(const std::function<double()>& loss, const std::vector<GradInput>& ins,
                            double h = 1e-5, double tol = 1e-7) {
    for (const GradInput& in : ins) {
        REQUIRE(in.x->size() == in.grad->size());
        double worst = 0, grad_norm = 0;
        size_t worst_i = 0;
        for (size_t i = 0; i < in.x->size(); ++i) {
            double& xi = (*in.x)[i];
            const double keep = xi;
            xi = keep + h;
            const double lp = loss();
            xi = keep - h;
            const double lm = loss();
            xi = keep;
            const double fd = (lp - lm) / (2 * h);
            const double an = (*in.grad)[i];
            const double err = std::abs(fd - an) / std::max(1.0, std::abs(fd));
            if (err > worst) worst = err, worst_i = i;
            grad_norm += an * an;
        }
        INFO("input " << in.name << ": worst relative error " << worst << " at element " << worst_i);
        CHECK(worst <= tol);
        CHECK(grad_norm > 0);
    }
}

}  // namespace gpt::test
