// RA-CT gate from attention-row statistics (see variant_ract.h).
#include "cpu/variant_ract.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/error.h"

namespace gpt::ref {
namespace {

template <class S>
S sigmoid(S z) {
    return S(1) / (S(1) + std::exp(-z));
}

void check_ract(const RactDims& d) {
    GPT_CHECK(d.B > 0 && d.T > 0 && d.H > 0, "ract: B, T, H must be > 0");
    GPT_CHECK(d.stat != RactStat::topk || d.topk > 0, "ract: model.ract.topk must be > 0");
}

// The row the statistic of (b, h, i) is taken from: the head's own row or the head mean.
template <class S>
void source_row(S* row, const S* probs, const RactDims& d, int b, int h, int i) {
    auto at = [&](int hh) { return probs + ((size_t(b) * d.H + hh) * d.T + i) * d.T; };
    if (!d.head_average) {
        std::copy(at(h), at(h) + i + 1, row);
        return;
    }
    std::fill(row, row + i + 1, S(0));
    for (int hh = 0; hh < d.H; ++hh)
        for (int j = 0; j <= i; ++j) row[j] += at(hh)[j] / S(d.H);
}

}  // namespace

template <class S>
S row_statistic(const S* r, int n, RactStat stat, int topk, S* grad) {
    if (grad) std::fill(grad, grad + n, S(0));
    switch (stat) {
        case RactStat::max:
        case RactStat::topk: {
            const int k = stat == RactStat::max ? 1 : std::min(topk, n);
            std::vector<int> idx(n);
            std::iota(idx.begin(), idx.end(), 0);
            std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return r[a] > r[b]; });
            S s = 0;
            for (int t = 0; t < k; ++t) {
                s += r[idx[t]];
                if (grad) grad[idx[t]] = 1;
            }
            return s;
        }
        case RactStat::entropy: {
            S s = 0;
            for (int j = 0; j < n; ++j)
                if (r[j] > 0) {
                    s -= r[j] * std::log(r[j]);
                    if (grad) grad[j] = -(std::log(r[j]) + S(1));
                }
            return s;
        }
        case RactStat::rms: {
            S ss = 0;
            for (int j = 0; j < n; ++j) ss += r[j] * r[j];
            const S rms = std::sqrt(ss / S(n));
            if (grad && rms > 0)
                for (int j = 0; j < n; ++j) grad[j] = r[j] / (S(n) * rms);
            return rms;
        }
    }
    fail("ract: unknown statistic");
}

template <class S>
void ract_gate_fwd(S* stat, S* gate, const S* probs, const S* scale, const S* bias, const RactDims& d) {
    check_ract(d);
    std::vector<S> row(d.T);
    for (int b = 0; b < d.B; ++b)
        for (int i = 0; i < d.T; ++i)
            for (int h = 0; h < d.H; ++h) {
                const size_t o = (size_t(b) * d.T + i) * d.H + h;
                if (d.head_average && h > 0) {
                    stat[o] = stat[o - h];  // one statistic for all heads of the row
                } else {
                    source_row(row.data(), probs, d, b, h, i);
                    stat[o] = row_statistic(row.data(), i + 1, d.stat, d.topk, (S*)nullptr);
                }
                gate[o] = sigmoid(stat[o] * scale[h] + bias[h]);
            }
}

template <class S>
void ract_gate_bwd(S* dprobs, S* dscale, S* dbias, const S* dgate, const S* probs, const S* stat,
                   const S* gate, const S* scale, const RactDims& d) {
    check_ract(d);
    std::vector<S> row(d.T), grad(d.T);
    for (int b = 0; b < d.B; ++b)
        for (int i = 0; i < d.T; ++i) {
            S dstat_shared = 0;  // head_average: the statistic's gradient summed over heads
            for (int h = 0; h < d.H; ++h) {
                const size_t o = (size_t(b) * d.T + i) * d.H + h;
                const S dz = dgate[o] * gate[o] * (S(1) - gate[o]);
                if (dscale) dscale[h] += dz * stat[o];
                if (dbias) dbias[h] += dz;
                if (!dprobs) continue;
                if (d.head_average) {
                    dstat_shared += dz * scale[h];
                    continue;
                }
                source_row(row.data(), probs, d, b, h, i);
                row_statistic(row.data(), i + 1, d.stat, d.topk, grad.data());
                S* dp = dprobs + ((size_t(b) * d.H + h) * d.T + i) * d.T;
                for (int j = 0; j <= i; ++j) dp[j] += dz * scale[h] * grad[j];
            }
            if (!dprobs || !d.head_average) continue;
            source_row(row.data(), probs, d, b, 0, i);
            row_statistic(row.data(), i + 1, d.stat, d.topk, grad.data());
            for (int h = 0; h < d.H; ++h) {
                S* dp = dprobs + ((size_t(b) * d.H + h) * d.T + i) * d.T;
                for (int j = 0; j <= i; ++j) dp[j] += dstat_shared * grad[j] / S(d.H);
            }
        }
}

template <class S>
void ract_selection(int* sel, const S* probs, const RactDims& d) {
    check_ract(d);
    if (d.stat != RactStat::topk && d.stat != RactStat::max) return;
    const int slots = d.stat == RactStat::max ? 1 : d.topk, heads = d.head_average ? 1 : d.H;
    std::vector<S> row(d.T);
    std::vector<int> order(d.T);
    for (int b = 0; b < d.B; ++b)
        for (int i = 0; i < d.T; ++i)
            for (int h = 0; h < heads; ++h) {
                source_row(row.data(), probs, d, b, h, i);
                const int kk = std::min(slots, i + 1);
                std::iota(order.begin(), order.begin() + i + 1, 0);
                std::partial_sort(order.begin(), order.begin() + kk, order.begin() + i + 1,
                                  [&](int x, int y) { return row[x] > row[y]; });
                int* out = sel + ((size_t(b) * d.T + i) * heads + h) * slots;
                for (int t = 0; t < slots; ++t) out[t] = t < kk ? order[t] : -1;
            }
}

#define GPT_INSTANTIATE(S)                                                                            \
    template void ract_gate_fwd<S>(S*, S*, const S*, const S*, const S*, const RactDims&);           \
    template void ract_gate_bwd<S>(S*, S*, S*, const S*, const S*, const S*, const S*, const S*,     \
                                   const RactDims&);                                                  \
    template S row_statistic<S>(const S*, int, RactStat, int, S*);                                   \
    template void ract_selection<S>(int*, const S*, const RactDims&);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::ref
