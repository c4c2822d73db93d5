// Fused softmax cross-entropy over padded vocabulary rows, with the logits' gradient in place.
#include <algorithm>
#include <limits>

#include "cpu/cpu_kernels.h"

namespace gpt::cpu {

template <class S>
void classifier(S* losses, S* logits, const int32_t* targets, int N, int V, int Vp, S dloss) {
    const bool backward = dloss != S(0);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
        S* x = logits + static_cast<size_t>(i) * Vp;
        // Only the V real columns take part; the max-subtraction keeps exp() in range.
        S mx = -std::numeric_limits<S>::infinity();
        for (int j = 0; j < V; ++j) mx = std::max(mx, x[j]);
        const S target_logit = x[targets[i]];
        double sum = 0;   // V ~ 5e4 terms: accumulate in double
        if (backward) {
            // Keep exp(x - max) in the row so the gradient pass needs no second exp().
            for (int j = 0; j < V; ++j) {
                x[j] = std::exp(x[j] - mx);
                sum += x[j];
            }
        } else {
            for (int j = 0; j < V; ++j) sum += std::exp(x[j] - mx);
        }
        losses[i] = static_cast<S>(std::log(sum)) + mx - target_logit;
        if (!backward) continue;
        const S norm = static_cast<S>(1.0 / sum) * dloss;
        for (int j = 0; j < V; ++j) x[j] *= norm;
        x[targets[i]] -= dloss;
        std::fill(x + V, x + Vp, S(0));   // padded columns get no gradient
    }
}

#define GPT_INSTANTIATE(S) \
    template void classifier<S>(S*, S*, const int32_t*, int, int, int, S);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::cpu
