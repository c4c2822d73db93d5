// Causal scaled-dot-product attention with grouped heads, Dqk != Dv, dropout on the probabilities
// and the band of folded reciprocal attention (AttnDims::band). One query row at a time (flash
// style): nothing of size T x T is stored, only the row's log-sum-exp, and backward recomputes the
// probabilities from it.
#include <algorithm>
#include <limits>
#include <vector>

#include "common/rng.h"
#include "cpu/cpu_kernels.h"

namespace gpt::cpu {
namespace {

// `omp simd` lets the compiler reorder these sums into vector lanes (it would not otherwise).
template <class S>
S dot(const S* a, const S* b, int n) {
    S s = 0;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < n; ++c) s += a[c] * b[c];
    return s;
}

template <class S>
void axpy(S* y, S a, const S* x, int n) {   // y += a x
#pragma omp simd
    for (int c = 0; c < n; ++c) y[c] += a * x[c];
}

// Token t's slice for head `head` (of width `width`) in a per-token row layout with `stride`.
template <class P>
P* at(P* base, const AttnDims& d, int b, int t, int stride, int head, int width) {
    return base + (static_cast<size_t>(b) * d.T + t) * stride + static_cast<size_t>(head) * width;
}

// How many leading q.k dims count for the pair (i, j): all Dqk, or, outside the band of banded
// reciprocal attention (d.band > 0 and i - j > band), only [0, band_split). The banded channels
// are the tail [band_split, Dqk), so a pair's logit and gradients use a prefix of the head.
inline int active_dims(const AttnDims& d, int i, int j) {
    return (d.band > 0 && i - j > d.band) ? d.band_split : d.Dqk;
}

// Multiplier for probability (i, j) of query head h in batch b: 0 (dropped), 1/(1-p) (kept), or
// 1 without dropout. attention_dropout_keep is the contract shared with our CUDA kernels (ops.h);
// an explicit keep_mask (one byte per entry, at ((b Hq + h) T + i) T + j) replaces it.
template <class S>
S dropout_factor(const AttnDims& d, int b, int h, int i, int j, S keep_scale, const uint8_t* keep_mask) {
    if (d.dropout <= 0.f) return S(1);
    const uint64_t counter =
        ((static_cast<uint64_t>(b) * d.Hq + h) * d.T + i) * static_cast<uint64_t>(d.T) + j;
    const bool keep = keep_mask ? keep_mask[counter] != 0
                                : attention_dropout_keep(d.seed, uint64_t(b) * d.Hq + h, i, j, d.T, d.dropout);
    return keep ? keep_scale : S(0);
}

}  // namespace

template <class S>
void attention_fwd(S* out, S* lse, const S* q, const S* k, const S* v, const AttnDims& d,
                   const uint8_t* keep_mask) {
    const int T = d.T, group = d.Hq / d.Hkv;
    const S scale = static_cast<S>(d.scale);
    const S keep_scale = static_cast<S>(1) / (static_cast<S>(1) - static_cast<S>(d.dropout));
#pragma omp parallel
    {
        std::vector<S> prob(T);
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < d.B; ++b)
            for (int h = 0; h < d.Hq; ++h) {
                const int hk = h / group;
                for (int i = 0; i < T; ++i) {
                    const S* qi = at(q, d, b, i, d.q_stride, h, d.Dqk);
                    S mx = -std::numeric_limits<S>::infinity();
                    for (int j = 0; j <= i; ++j) {
                        const S* kj = at(k, d, b, j, d.k_stride, hk, d.Dqk);
                        prob[j] = scale * dot(qi, kj, active_dims(d, i, j));
                        mx = std::max(mx, prob[j]);
                    }
                    S sum = 0;
#pragma omp simd reduction(+ : sum)
                    for (int j = 0; j <= i; ++j) {
                        prob[j] = exp_softmax(prob[j] - mx);
                        sum += prob[j];
                    }
                    lse[(size_t(b) * d.Hq + h) * T + i] = mx + std::log(sum);
                    S* oi = at(out, d, b, i, d.Hq * d.Dv, h, d.Dv);
                    std::fill(oi, oi + d.Dv, S(0));
                    for (int j = 0; j <= i; ++j) {
                        const S pij = prob[j] / sum * dropout_factor(d, b, h, i, j, keep_scale, keep_mask);
                        if (pij == S(0)) continue;
                        axpy(oi, pij, at(v, d, b, j, d.v_stride, hk, d.Dv), d.Dv);
                    }
                }
            }
    }
}

template <class S>
void attention_bwd(S* dq, S* dk, S* dv, const S* dout, const S* lse, const S* q, const S* k,
                   const S* v, const AttnDims& d, const S* delta_shift, const uint8_t* keep_mask) {
    const int T = d.T, group = d.Hq / d.Hkv;
    const S scale = static_cast<S>(d.scale);
    const S keep_scale = static_cast<S>(1) / (static_cast<S>(1) - static_cast<S>(d.dropout));
#pragma omp parallel
    {
        std::vector<S> prob(T), dprob(T);
        // One task per (batch, kv head): the query heads of a group all write that kv head's dk,
        // dv, so they run in the same task (race-free without atomics).
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < d.B; ++b)
            for (int hk = 0; hk < d.Hkv; ++hk) {
                for (int t = 0; t < T; ++t) {   // overwrite semantics: clear only our slices
                    std::fill_n(at(dk, d, b, t, d.k_stride, hk, d.Dqk), d.Dqk, S(0));
                    std::fill_n(at(dv, d, b, t, d.v_stride, hk, d.Dv), d.Dv, S(0));
                    for (int h = hk * group; h < (hk + 1) * group; ++h)
                        std::fill_n(at(dq, d, b, t, d.q_stride, h, d.Dqk), d.Dqk, S(0));
                }
                for (int h = hk * group; h < (hk + 1) * group; ++h)
                    for (int i = 0; i < T; ++i) {
                        const S* qi = at(q, d, b, i, d.q_stride, h, d.Dqk);
                        const S* doi = at(dout, d, b, i, d.Hq * d.Dv, h, d.Dv);
                        const S lse_i = lse[(size_t(b) * d.Hq + h) * T + i];
                        // P_ij from the saved lse.
                        for (int j = 0; j <= i; ++j) {
                            const S* kj = at(k, d, b, j, d.k_stride, hk, d.Dqk);
                            prob[j] = scale * dot(qi, kj, active_dims(d, i, j)) - lse_i;
                        }
#pragma omp simd
                        for (int j = 0; j <= i; ++j) prob[j] = exp_softmax(prob[j]);
                        // dP_ij = d loss / d P_ij through the dropout mask; dv_j += (masked P_ij)
                        // dout_i; D_i = sum_j P_ij dP_ij.
                        S delta = 0;
                        for (int j = 0; j <= i; ++j) {
                            const S f = dropout_factor(d, b, h, i, j, keep_scale, keep_mask);
                            dprob[j] = f * dot(doi, at(v, d, b, j, d.v_stride, hk, d.Dv), d.Dv);
                            axpy(at(dv, d, b, j, d.v_stride, hk, d.Dv), f * prob[j], doi, d.Dv);
                            delta += prob[j] * dprob[j];
                        }
                        if (delta_shift) delta += delta_shift[(size_t(b) * d.Hq + h) * T + i];
                        // dS_ij = P_ij (dP_ij - D_i); logits = scale q.k.
                        S* dqi = at(dq, d, b, i, d.q_stride, h, d.Dqk);
                        for (int j = 0; j <= i; ++j) {
                            const S ds = scale * prob[j] * (dprob[j] - delta);
                            const int n = active_dims(d, i, j);
                            axpy(dqi, ds, at(k, d, b, j, d.k_stride, hk, d.Dqk), n);
                            axpy(at(dk, d, b, j, d.k_stride, hk, d.Dqk), ds, qi, n);
                        }
                    }
            }
    }
}

#define GPT_INSTANTIATE(S)                                                                       \
    template void attention_fwd<S>(S*, S*, const S*, const S*, const S*, const AttnDims&,        \
                                   const uint8_t*);                                              \
    template void attention_bwd<S>(S*, S*, S*, const S*, const S*, const S*, const S*, const S*, \
                                   const AttnDims&, const S*, const uint8_t*);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::cpu
