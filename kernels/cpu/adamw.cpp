// AdamW with decoupled weight decay, optional AMSGrad and SPAM's per-element spike clip; and the
// sum of squares used for global-norm clipping.
#include <algorithm>
#include <cmath>

#include "cpu/cpu_kernels.h"

namespace gpt::cpu {

// Per element, in this order (all in S precision):
//   g   = grad * grad_scale
//   SPAM (spam_theta > 0 and v_prev > 0, v_prev = v before this step):
//         bound = sqrt(theta * v_prev); |g| > bound  =>  g = sign(g) * bound
//         (v_prev == 0, the first step or the first after a state reset, is not clipped)
//   m   = beta1 m + (1 - beta1) g
//   v   = beta2 v + (1 - beta2) g^2
//   vmax = max(vmax, v) with AMSGrad; the denominator uses vmax then, else v
//   p  -= lr * wd * p                        only where decay (decoupled, with the old p)
//   p  -= lr * (m / (1 - beta1^step)) / (sqrt(v_or_vmax / (1 - beta2^step)) + eps)
template <class S>
void adamw_update(S* param, const S* grad, S* m, S* v, S* vmax, size_t n, bool decay,
                  const AdamWHyper& h) {
    const S b1 = h.beta1, b2 = h.beta2, lr = h.lr, eps = h.eps, theta = h.spam_theta;
    const S bias1 = static_cast<S>(1) - std::pow(b1, static_cast<S>(h.step));
    const S bias2 = static_cast<S>(1) - std::pow(b2, static_cast<S>(h.step));
    const S wd = decay ? static_cast<S>(h.weight_decay) : S(0);
    const S gscale = h.grad_scale;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) {
        S g = grad[i] * gscale;
        if (theta > S(0) && v[i] > S(0)) {
            const S bound = std::sqrt(theta * v[i]);
            if (std::abs(g) > bound) g = std::copysign(bound, g);
        }
        m[i] = b1 * m[i] + (static_cast<S>(1) - b1) * g;
        v[i] = b2 * v[i] + (static_cast<S>(1) - b2) * g * g;
        S second = v[i];
        if (h.amsgrad) {
            vmax[i] = std::max(vmax[i], v[i]);
            second = vmax[i];
        }
        const S update = (m[i] / bias1) / (std::sqrt(second / bias2) + eps);
        param[i] -= lr * (wd * param[i] + update);
    }
}

template <class S>
double sum_squares(const S* x, size_t n) {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
    return s;
}

#define GPT_INSTANTIATE(S)                                                                    \
    template void adamw_update<S>(S*, const S*, S*, S*, S*, size_t, bool, const AdamWHyper&); \
    template double sum_squares<S>(const S*, size_t);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::cpu
