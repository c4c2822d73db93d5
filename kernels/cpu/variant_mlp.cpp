// MLP mechanisms M1, M2, M3 (see variant_mlp.h).
#include "cpu/variant_mlp.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/error.h"

namespace gpt::ref {
namespace {

// W as an [O, I] matrix: stored that way (trans = false) or as [I, O] (trans = true).
template <class S>
S w_at(const S* W, int o, int i, int I, int O, bool trans) {
    return trans ? W[size_t(i) * O + o] : W[size_t(o) * I + i];
}

// y[n,o] += a * sum_i x[n,i] W(o,i)
template <class S>
void linear_acc(S* y, const S* x, const S* W, int N, int I, int O, bool trans, S a) {
    for (int n = 0; n < N; ++n)
        for (int o = 0; o < O; ++o) {
            S s = 0;
            for (int i = 0; i < I; ++i) s += x[size_t(n) * I + i] * w_at(W, o, i, I, O, trans);
            y[size_t(n) * O + o] += a * s;
        }
}

// dx += a dy W, dW += a dy^T x (in W's storage layout)
template <class S>
void linear_acc_bwd(S* dx, S* dW, const S* dy, const S* x, const S* W, int N, int I, int O, bool trans, S a) {
    for (int n = 0; n < N; ++n)
        for (int o = 0; o < O; ++o) {
            const S g = a * dy[size_t(n) * O + o];
            for (int i = 0; i < I; ++i) {
                if (dx) dx[size_t(n) * I + i] += g * w_at(W, o, i, I, O, trans);
                if (dW) (trans ? dW[size_t(i) * O + o] : dW[size_t(o) * I + i]) += g * x[size_t(n) * I + i];
            }
        }
}

template <class S>
S sigmoid(S z) {
    return S(1) / (S(1) + std::exp(-z));
}

}  // namespace

template <class S>
S gelu(S x) {
    const S c = std::sqrt(S(2) / S(M_PI));
    return S(0.5) * x * (S(1) + std::tanh(c * (x + S(0.044715) * x * x * x)));
}

template <class S>
S gelu_grad(S x) {
    const S c = std::sqrt(S(2) / S(M_PI));
    const S u = c * (x + S(0.044715) * x * x * x);
    const S t = std::tanh(u);
    return S(0.5) * (S(1) + t) + S(0.5) * x * (S(1) - t * t) * c * (S(1) + S(3 * 0.044715) * x * x);
}

// ---- M1 ----------------------------------------------------------------------------------------

template <class S>
void m1_gate_fwd(S* gate, S* pre, const S* h_fc, const S* W1, const S* W2, const S* b2, int N, int F,
                 int Hid, int H) {
    std::fill_n(pre, size_t(N) * Hid, S(0));
    linear_acc(pre, h_fc, W1, N, F, Hid, false, S(1));
    std::vector<S> act(size_t(N) * Hid);
    for (size_t e = 0; e < act.size(); ++e) act[e] = gelu(pre[e]);
    for (int n = 0; n < N; ++n) std::copy(b2, b2 + H, gate + size_t(n) * H);
    linear_acc(gate, act.data(), W2, N, Hid, H, false, S(1));
    for (size_t e = 0; e < size_t(N) * H; ++e) gate[e] = sigmoid(gate[e]);
}

template <class S>
void m1_gate_bwd(S* dh_fc, S* dW1, S* dW2, S* db2, const S* dgate, const S* gate, const S* pre,
                 const S* h_fc, const S* W1, const S* W2, int N, int F, int Hid, int H) {
    std::vector<S> dz(size_t(N) * H), act(size_t(N) * Hid), dact(act.size(), S(0));
    for (size_t e = 0; e < dz.size(); ++e) dz[e] = dgate[e] * gate[e] * (S(1) - gate[e]);
    for (size_t e = 0; e < act.size(); ++e) act[e] = gelu(pre[e]);
    if (db2)
        for (int n = 0; n < N; ++n)
            for (int h = 0; h < H; ++h) db2[h] += dz[size_t(n) * H + h];
    linear_acc_bwd(dact.data(), dW2, dz.data(), act.data(), W2, N, Hid, H, false, S(1));
    for (size_t e = 0; e < act.size(); ++e) dact[e] *= gelu_grad(pre[e]);
    linear_acc_bwd(dh_fc, dW1, dact.data(), h_fc, W1, N, F, Hid, false, S(1));
}

// ---- M2 ----------------------------------------------------------------------------------------

template <class S>
void m2_sparse_rows(int* idx, S* wts, const S* probs, int B, int H, int T, int k) {
    GPT_CHECK(k > 0, "m2: the number of kept entries per row must be > 0");
    std::vector<S> row(T);
    std::vector<int> order(T);
    for (int b = 0; b < B; ++b)
        for (int i = 0; i < T; ++i) {
            std::fill(row.begin(), row.end(), S(0));
            for (int h = 0; h < H; ++h)
                for (int j = 0; j <= i; ++j) row[j] += probs[((size_t(b) * H + h) * T + i) * T + j] / S(H);
            const int kk = std::min(k, i + 1);
            std::iota(order.begin(), order.begin() + i + 1, 0);
            std::partial_sort(order.begin(), order.begin() + kk, order.begin() + i + 1,
                              [&](int x, int y) { return row[x] > row[y]; });
            S sum = 0;
            for (int t = 0; t < kk; ++t) sum += row[order[t]];
            const size_t o = (size_t(b) * T + i) * k;
            for (int t = 0; t < k; ++t) {
                idx[o + t] = t < kk ? b * T + order[t] : -1;
                wts[o + t] = t < kk ? row[order[t]] / sum : S(0);
            }
        }
}

template <class S>
void m2_fwd(S* out, S* z, S* agg, const S* h_fc, const S* W_down, const S* W_up, S alpha, const int* idx,
            const S* wts, int N, int F, int r, int k) {
    std::fill_n(z, size_t(N) * r, S(0));
    linear_acc(z, h_fc, W_down, N, F, r, false, S(1));
    std::fill_n(agg, size_t(N) * r, S(0));
    for (int n = 0; n < N; ++n)
        for (int t = 0; t < k; ++t) {
            const int src = idx[size_t(n) * k + t];
            if (src < 0) continue;
            for (int c = 0; c < r; ++c) agg[size_t(n) * r + c] += wts[size_t(n) * k + t] * z[size_t(src) * r + c];
        }
    std::copy(h_fc, h_fc + size_t(N) * F, out);
    linear_acc(out, agg, W_up, N, r, F, false, alpha);
}

template <class S>
void m2_bwd(S* dh_fc, S* dW_down, S* dW_up, S* dalpha, const S* dout, const S* h_fc, const S* agg,
            const S* W_down, const S* W_up, S alpha, const int* idx, const S* wts, int N, int F, int r, int k) {
    if (dh_fc)
        for (size_t e = 0; e < size_t(N) * F; ++e) dh_fc[e] += dout[e];
    if (dalpha) {
        std::vector<S> up(size_t(N) * F, S(0));
        linear_acc(up.data(), agg, W_up, N, r, F, false, S(1));
        for (size_t e = 0; e < up.size(); ++e) *dalpha += dout[e] * up[e];
    }
    std::vector<S> dagg(size_t(N) * r, S(0)), dz(size_t(N) * r, S(0));
    linear_acc_bwd(dagg.data(), dW_up, dout, agg, W_up, N, r, F, false, alpha);
    for (int n = 0; n < N; ++n)
        for (int t = 0; t < k; ++t) {
            const int src = idx[size_t(n) * k + t];
            if (src < 0) continue;
            for (int c = 0; c < r; ++c) dz[size_t(src) * r + c] += wts[size_t(n) * k + t] * dagg[size_t(n) * r + c];
        }
    linear_acc_bwd(dh_fc, dW_down, dz.data(), h_fc, W_down, N, F, r, false, S(1));
}

// ---- M3 ----------------------------------------------------------------------------------------

template <class S>
void m3_add_fwd(S* out, const S* in, const S* C, S alpha, int N, int F, int L, M3Direction dir) {
    if (dir == M3Direction::latent_to_hidden)
        linear_acc(out, in, C, N, L, F, false, alpha);  // C [F,L] = [out,in]
    else
        linear_acc(out, in, C, N, F, L, true, alpha);   // C [F,L] = [in,out]
}

template <class S>
void m3_add_bwd(S* din, S* dC, S* dalpha, const S* dout, const S* in, const S* C, S alpha, int N, int F, int L,
                M3Direction dir) {
    const bool to_hidden = dir == M3Direction::latent_to_hidden;
    const int I = to_hidden ? L : F, O = to_hidden ? F : L;
    if (dalpha) {
        std::vector<S> y(size_t(N) * O, S(0));
        linear_acc(y.data(), in, C, N, I, O, !to_hidden, S(1));
        for (size_t e = 0; e < y.size(); ++e) *dalpha += dout[e] * y[e];
    }
    linear_acc_bwd(din, dC, dout, in, C, N, I, O, !to_hidden, alpha);
}

#define GPT_INSTANTIATE(S)                                                                              \
    template void m1_gate_fwd<S>(S*, S*, const S*, const S*, const S*, const S*, int, int, int, int);   \
    template void m1_gate_bwd<S>(S*, S*, S*, S*, const S*, const S*, const S*, const S*, const S*,      \
                                 const S*, int, int, int, int);                                         \
    template void m2_sparse_rows<S>(int*, S*, const S*, int, int, int, int);                            \
    template void m2_fwd<S>(S*, S*, S*, const S*, const S*, const S*, S, const int*, const S*, int, int, \
                            int, int);                                                                  \
    template void m2_bwd<S>(S*, S*, S*, S*, const S*, const S*, const S*, const S*, const S*, S,        \
                            const int*, const S*, int, int, int, int);                                  \
    template void m3_add_fwd<S>(S*, const S*, const S*, S, int, int, int, M3Direction);                 \
    template void m3_add_bwd<S>(S*, S*, S*, const S*, const S*, const S*, S, int, int, int, M3Direction); \
    template S gelu<S>(S);                                                                              \
    template S gelu_grad<S>(S);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::ref
