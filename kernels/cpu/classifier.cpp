// Fused softmax cross-entropy over padded vocabulary rows, with the logits' gradient in place.
#include <algorithm>
#include <limits>

#include "cpu/cpu_kernels.h"

namespace gpt::cpu {

namespace {

// sum_j exp(x[j] - mx) over [0, n), optionally storing the terms into x. Float lanes within blocks
// of 1024 (vectorised), double across blocks: V ~ 5e4 terms lose nothing to the sum's rounding.
template <class S>
double exp_sum(S* x, int n, S mx, bool store) {
    constexpr int kBlock = 1024;
    double total = 0;
    for (int j0 = 0; j0 < n; j0 += kBlock) {
        const int j1 = std::min(n, j0 + kBlock);
        S part = 0;
        if (store) {
#pragma omp simd reduction(+ : part)
            for (int j = j0; j < j1; ++j) {
                x[j] = exp_softmax(x[j] - mx);
                part += x[j];
            }
        } else {
#pragma omp simd reduction(+ : part)
            for (int j = j0; j < j1; ++j) part += exp_softmax(x[j] - mx);
        }
        total += part;
    }
    return total;
}

}  // namespace

template <class S>
void classifier(S* losses, S* logits, const int32_t* targets, int N, int V, int Vp, S dloss) {
    const bool backward = dloss != S(0);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
        S* x = logits + static_cast<size_t>(i) * Vp;
        // Only the V real columns take part; the max-subtraction keeps exp() in range.
        S mx = -std::numeric_limits<S>::infinity();
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < V; ++j) mx = x[j] > mx ? x[j] : mx;
        const S target_logit = x[targets[i]];
        // Backward keeps exp(x - max) in the row so the gradient pass needs no second exp().
        const double sum = exp_sum(x, V, mx, backward);
        losses[i] = static_cast<S>(std::log(sum)) + mx - target_logit;
        if (!backward) continue;
        const S norm = static_cast<S>(1.0 / sum) * dloss;
#pragma omp simd
        for (int j = 0; j < V; ++j) x[j] *= norm;
        x[targets[i]] -= dloss;
        std::fill(x + V, x + Vp, S(0));   // padded columns get no gradient
    }
}

#define GPT_INSTANTIATE(S) template void classifier<S>(S*, S*, const int32_t*, int, int, int, S);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::cpu
