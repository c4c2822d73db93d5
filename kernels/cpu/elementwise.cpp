// Elementwise kernels and the embedding: GELU, add, scale, mask, dropout, token+position lookup.
#include "common/rng.h"
#include "cpu/cpu_kernels.h"

namespace gpt::cpu {

template <class S>
void embedding_fwd(S* out, const int32_t* tokens, const S* wte, const S* wpe, int B, int T, int E) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < T; ++t) {
            S* o = out + (static_cast<size_t>(b) * T + t) * E;
            const S* te = wte + static_cast<size_t>(tokens[b * T + t]) * E;
            const S* pe = wpe + static_cast<size_t>(t) * E;
            for (int e = 0; e < E; ++e) o[e] = te[e] + pe[e];
        }
}

template <class S>
void embedding_bwd(S* dwte, S* dwpe, const S* dout, const int32_t* tokens, int B, int T, int E) {
    // Tokens repeat, so rows of dwte collide: split by channels (see this_thread_columns).
#pragma omp parallel
    {
        const auto [e0, e1] = this_thread_columns(E);
        for (int bt = 0; bt < B * T; ++bt) {
            S* dw = dwte + static_cast<size_t>(tokens[bt]) * E;
            S* dp = dwpe + static_cast<size_t>(bt % T) * E;
            const S* g = dout + static_cast<size_t>(bt) * E;
            for (int e = e0; e < e1; ++e) {
                dw[e] += g[e];
                dp[e] += g[e];
            }
        }
    }
}

template <class S>
void gelu_fwd(S* out, const S* in, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] = gelu(in[i]);
}

template <class S>
void gelu_bwd(S* din, const S* in, const S* dout, size_t n) {
    // din may alias dout: each element is read before it is written, by the same iteration.
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) din[i] = gelu_grad(in[i]) * dout[i];
}

template <class S>
void add(S* out, const S* a, const S* b, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <class S>
void add_inplace(S* acc, const S* x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) acc[i] += x[i];
}

template <class S>
void scale(S* x, S s, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) x[i] *= s;
}

template <class S>
void mul_inplace(S* x, const S* mask, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) x[i] *= mask[i];
}

template <class S>
void dropout(S* x, size_t n, float p, uint64_t seed) {
    if (p <= 0.f) return;   // dropout_keep is always true at p = 0: skip the hashing
    const S keep_scale = static_cast<S>(1) / (static_cast<S>(1) - static_cast<S>(p));
    const uint32_t threshold = dropout_threshold(p);
#pragma omp parallel for schedule(static)
    for (size_t group = 0; group < (n + 3) / 4; ++group) {   // one draw, four elements (common/rng.h)
        const uint64_t draw = dropout_draw(seed, group);
        for (size_t i = group * 4; i < std::min(n, group * 4 + 4); ++i)
            x[i] = dropout_lane_keeps(draw, int(i - group * 4), threshold) ? x[i] * keep_scale : S(0);
    }
}

#define GPT_INSTANTIATE(S)                                                                 \
    template void embedding_fwd<S>(S*, const int32_t*, const S*, const S*, int, int, int); \
    template void embedding_bwd<S>(S*, S*, const S*, const int32_t*, int, int, int);       \
    template void gelu_fwd<S>(S*, const S*, size_t);                                       \
    template void gelu_bwd<S>(S*, const S*, const S*, size_t);                             \
    template void add<S>(S*, const S*, const S*, size_t);                                  \
    template void add_inplace<S>(S*, const S*, size_t);                                    \
    template void scale<S>(S*, S, size_t);                                                 \
    template void mul_inplace<S>(S*, const S*, size_t);                                    \
    template void dropout<S>(S*, size_t, float, uint64_t);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::cpu
