// LayerNorm over rows of C channels, with the per-row mean and 1/std saved for backward.
#include "cpu/cpu_kernels.h"

namespace gpt::cpu {

namespace {
// One row: y = (x - mean) * rstd * w + b. Both forwards call it, so the fused residual version
// does exactly the arithmetic of the plain one.
template <class S>
void layernorm_row(S* y, S* mean, S* rstd, const S* x, const S* w, const S* b, int C) {
    // Two passes (mean, then centred variance) avoid the cancellation of E[x^2] - E[x]^2.
    S m = 0;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    S var = 0;
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    var /= C;
    const S r = static_cast<S>(1) / std::sqrt(var + static_cast<S>(kLayerNormEps));
    for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * r * w[c] + (b ? b[c] : S(0));
    *mean = m;
    *rstd = r;
}
}  // namespace

template <class S>
void layernorm_fwd(S* out, S* mean, S* rstd, const S* in, const S* w, const S* b, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
        const size_t base = static_cast<size_t>(i) * C;
        layernorm_row(out + base, mean + i, rstd + i, in + base, w, b, C);
    }
}

template <class S>
void residual_layernorm_fwd(S* out_sum, S* out, S* mean, S* rstd, const S* a, const S* b_in, const S* w,
                            const S* bias, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
        const size_t base = static_cast<size_t>(i) * C;
        S* x = out_sum + base;
        // Row by row, so out_sum may alias a or b (each element is read before it is written).
        for (int c = 0; c < C; ++c) x[c] = a[base + c] + b_in[base + c];
        layernorm_row(out + base, mean + i, rstd + i, x, w, bias, C);
    }
}

template <class S>
void layernorm_bwd(S* din, S* dw, S* db, const S* dout, const S* in, const S* w, const S* mean,
                   const S* rstd, int N, int C, S* dsum) {
#pragma omp parallel
    {
        // din: rows are independent.
#pragma omp for schedule(static) nowait
        for (int i = 0; i < N; ++i) {
            const S* x = in + static_cast<size_t>(i) * C;
            const S* g = dout + static_cast<size_t>(i) * C;
            S* dx = din + static_cast<size_t>(i) * C;
            const S m = mean[i], r = rstd[i];
            S mean_dnorm = 0, mean_dnorm_norm = 0;   // means over the row of dnorm, dnorm*norm
            for (int c = 0; c < C; ++c) {
                const S dnorm = g[c] * w[c];
                mean_dnorm += dnorm;
                mean_dnorm_norm += dnorm * (x[c] - m) * r;
            }
            mean_dnorm /= C;
            mean_dnorm_norm /= C;
            for (int c = 0; c < C; ++c) {
                const S norm = (x[c] - m) * r;
                dx[c] += (g[c] * w[c] - mean_dnorm - norm * mean_dnorm_norm) * r;
            }
        }
        // dw, db (and dsum): column sums over all rows; each thread owns its columns. dsum reads
        // din's finished rows, so it waits for every thread's din rows first.
        if (dsum) {
#pragma omp barrier
        }
        const auto [c0, c1] = this_thread_columns(C);
        for (int i = 0; i < N; ++i) {
            const S* x = in + static_cast<size_t>(i) * C;
            const S* g = dout + static_cast<size_t>(i) * C;
            const S* dx = din + static_cast<size_t>(i) * C;
            const S m = mean[i], r = rstd[i];
            for (int c = c0; c < c1; ++c) {
                dw[c] += g[c] * (x[c] - m) * r;
                if (db) db[c] += g[c];
                if (dsum) dsum[c] += dx[c];
            }
        }
    }
}

#define GPT_INSTANTIATE(S)                                                                       \
    template void layernorm_fwd<S>(S*, S*, S*, const S*, const S*, const S*, int, int);          \
    template void residual_layernorm_fwd<S>(S*, S*, S*, S*, const S*, const S*, const S*,        \
                                            const S*, int, int);                                 \
    template void layernorm_bwd<S>(S*, S*, S*, const S*, const S*, const S*, const S*, const S*, \
                                   int, int, S*);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::cpu
