// Reference math of the attention variants (see variant_attention.h). Plain loops: clarity over speed.
#include "cpu/variant_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "cpu/ref_dot.h"

namespace gpt::ref {
namespace {

template <class S>
S sqrt_gate(S g) {
    return std::sqrt(std::max(g, static_cast<S>(kGateFloor)));
}

// d sqrt(max(g, floor)) / dg
template <class S>
S dsqrt_gate(S g) {
    return g > static_cast<S>(kGateFloor) ? S(0.5) / std::sqrt(g) : S(0);
}

// The exact fold applies max(g, floor) on one side (the same logits as sqrt on both sides).
template <class S>
S floored_gate(S g) {
    return std::max(g, static_cast<S>(kGateFloor));
}
template <class S>
S dfloored_gate(S g) {
    return g > static_cast<S>(kGateFloor) ? S(1) : S(0);
}

// Softmax of logits[0..n) in place -> probabilities; returns the log-sum-exp.
template <class S>
S softmax_row(S* row, int n) {
    S m = row[0];
    for (int j = 1; j < n; ++j) m = std::max(m, row[j]);
    S sum = 0;
    for (int j = 0; j < n; ++j) sum += std::exp(row[j] - m);
    const S lse = m + std::log(sum);
    for (int j = 0; j < n; ++j) row[j] = std::exp(row[j] - lse);
    return lse;
}

// dlogit = P (dP - sum_j P dP), in place over dP.
template <class S>
void softmax_row_bwd(S* dp, const S* p, int n) {
    S dot_pdp = 0;
    for (int j = 0; j < n; ++j) dot_pdp += p[j] * dp[j];
    for (int j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - dot_pdp);
}

void check_attn_dims(const AttnDims& d, const char* who) {
    GPT_CHECK(d.B > 0 && d.T > 0 && d.Hq > 0 && d.Hkv > 0 && d.Dqk > 0 && d.Dv > 0,
              std::string(who) + ": AttnDims B, T, Hq, Hkv, Dqk, Dv must all be > 0");
    GPT_CHECK(d.Hq % d.Hkv == 0, std::string(who) + ": Hkv must divide Hq");
    GPT_CHECK(d.band >= 0 && d.band_split >= 0 && d.band_split <= d.Dqk,
              std::string(who) + ": need band >= 0 and 0 <= band_split <= Dqk");
    GPT_CHECK(d.dropout == 0.f, std::string(who) + ": the variant reference has no dropout; set dropout 0");
}

template <class S>
struct AttnView {
    const AttnDims& d;
    const S* q;
    const S* k;
    const S* v;
    const S* key_bias;
    size_t qi(int b, int t, int h) const { return size_t(b * d.T + t) * d.q_stride + size_t(h) * d.Dqk; }
    size_t ki(int b, int t, int h) const { return size_t(b * d.T + t) * d.k_stride + size_t(h) * d.Dqk; }
    size_t vi(int b, int t, int h) const { return size_t(b * d.T + t) * d.v_stride + size_t(h) * d.Dv; }
    size_t oi(int b, int t, int h) const { return (size_t(b * d.T + t) * d.Hq + h) * d.Dv; }
    size_t pi(int b, int h, int i) const { return (size_t(b * d.Hq + h) * d.T + i) * d.T; }
    int split() const { return d.band > 0 ? d.band_split : d.Dqk; }
    bool in_band(int i, int j) const { return d.band <= 0 || i - j <= d.band; }
    // The logit row i of head h (causal part j = 0..i) into row[].
    void logits(S* row, int b, int h, int i) const {
        const int hk = h / (d.Hq / d.Hkv), sp = split();
        const S* qr = q + qi(b, i, h);
        for (int j = 0; j <= i; ++j) {
            const S* kr = k + ki(b, j, hk);
            S s = dot(qr, kr, sp);
            if (in_band(i, j)) s += dot(qr + sp, kr + sp, d.Dqk - sp);
            row[j] = static_cast<S>(d.scale) * s;
            if (key_bias) row[j] += key_bias[size_t(b * d.T + j) * d.Hq + h];
        }
    }
};

}  // namespace

template <class S>
void attention_ref_fwd(S* out, S* lse, S* probs, const S* q, const S* k, const S* v,
                       const AttnDims& d, const S* key_bias) {
    check_attn_dims(d, "attention_ref_fwd");
    const AttnView<S> a{d, q, k, v, key_bias};
    std::vector<S> row(d.T);
    for (int b = 0; b < d.B; ++b)
        for (int h = 0; h < d.Hq; ++h) {
            const int hk = h / (d.Hq / d.Hkv);
            for (int i = 0; i < d.T; ++i) {
                a.logits(row.data(), b, h, i);
                lse[size_t(b * d.Hq + h) * d.T + i] = softmax_row(row.data(), i + 1);
                S* o = out + a.oi(b, i, h);
                std::fill(o, o + d.Dv, S(0));
                for (int j = 0; j <= i; ++j) {
                    const S* vr = v + a.vi(b, j, hk);
                    for (int c = 0; c < d.Dv; ++c) o[c] += row[j] * vr[c];
                }
                if (probs) {
                    S* p = probs + a.pi(b, h, i);
                    for (int j = 0; j < d.T; ++j) p[j] = j <= i ? row[j] : S(0);
                }
            }
        }
}

template <class S>
void attention_ref_bwd(S* dq, S* dk, S* dv, S* dkey_bias, const S* dout, const S* lse,
                       const S* q, const S* k, const S* v, const AttnDims& d, const S* key_bias,
                       const S* dprobs) {
    check_attn_dims(d, "attention_ref_bwd");
    const AttnView<S> a{d, q, k, v, key_bias};
    for (int b = 0; b < d.B; ++b)
        for (int t = 0; t < d.T; ++t) {
            for (int h = 0; h < d.Hq; ++h) std::fill_n(dq + a.qi(b, t, h), d.Dqk, S(0));
            for (int h = 0; h < d.Hkv; ++h) {
                std::fill_n(dk + a.ki(b, t, h), d.Dqk, S(0));
                std::fill_n(dv + a.vi(b, t, h), d.Dv, S(0));
            }
        }
    const S scale = static_cast<S>(d.scale);
    const int sp = a.split();
    std::vector<S> p(d.T), g(d.T);
    for (int b = 0; b < d.B; ++b)
        for (int h = 0; h < d.Hq; ++h) {
            const int hk = h / (d.Hq / d.Hkv);
            for (int i = 0; i < d.T; ++i) {
                a.logits(p.data(), b, h, i);
                const S l = lse[size_t(b * d.Hq + h) * d.T + i];
                for (int j = 0; j <= i; ++j) p[j] = std::exp(p[j] - l);
                const S* go = dout + a.oi(b, i, h);
                for (int j = 0; j <= i; ++j) {
                    g[j] = dot(go, v + a.vi(b, j, hk), d.Dv);
                    if (dprobs) g[j] += dprobs[a.pi(b, h, i) + j];
                    S* dvr = dv + a.vi(b, j, hk);
                    for (int c = 0; c < d.Dv; ++c) dvr[c] += p[j] * go[c];
                }
                softmax_row_bwd(g.data(), p.data(), i + 1);
                const S* qr = q + a.qi(b, i, h);
                S* dqr = dq + a.qi(b, i, h);
                for (int j = 0; j <= i; ++j) {
                    if (dkey_bias) dkey_bias[size_t(b * d.T + j) * d.Hq + h] += g[j];
                    const S* kr = k + a.ki(b, j, hk);
                    S* dkr = dk + a.ki(b, j, hk);
                    const int n = a.in_band(i, j) ? d.Dqk : sp;
                    const S gs = g[j] * scale;
                    for (int c = 0; c < n; ++c) {
                        dqr[c] += gs * kr[c];
                        dkr[c] += gs * qr[c];
                    }
                }
            }
        }
}

// ---- RA exact --------------------------------------------------------------------------------

namespace {
void check_ra_dims(const RaDims& d) {
    GPT_CHECK(d.B > 0 && d.T > 0 && d.H > 0 && d.D > 0, "ra_exact: B, T, H, D must be > 0");
    GPT_CHECK(d.n_gates == 1 || d.n_gates == d.H, "ra_exact: n_gates must be 1 (per layer) or H (per head)");
    GPT_CHECK(d.band >= 0, "ra_exact: band W must be >= 0 (0 = full transpose)");
}

template <class S>
struct RaView {
    const RaDims& d;
    const S* q;
    const S* k;
    const S* g_std;
    const S* g_rec;
    size_t at(int b, int t, int h) const { return (size_t(b * d.T + t) * d.H + h) * d.D; }
    bool in_band(int i, int j) const { return d.band <= 0 || i - j <= d.band; }
    S c() const { return S(1) / std::sqrt(static_cast<S>(d.D)); }
    void logits(S* row, int b, int h, int i) const {
        const S gs = g_std[gate_index(h, d.n_gates)], gr = g_rec[gate_index(h, d.n_gates)];
        for (int j = 0; j <= i; ++j) {
            S s = gs * dot(q + at(b, i, h), k + at(b, j, h), d.D);
            if (in_band(i, j)) s += gr * dot(q + at(b, j, h), k + at(b, i, h), d.D);
            row[j] = s * c();
        }
    }
};
}  // namespace

template <class S>
void ra_exact_fwd(S* out, S* lse, const S* q, const S* k, const S* v, const S* g_std,
                  const S* g_rec, const RaDims& d) {
    check_ra_dims(d);
    const RaView<S> a{d, q, k, g_std, g_rec};
    std::vector<S> row(d.T);
    for (int b = 0; b < d.B; ++b)
        for (int h = 0; h < d.H; ++h)
            for (int i = 0; i < d.T; ++i) {
                a.logits(row.data(), b, h, i);
                lse[size_t(b * d.H + h) * d.T + i] = softmax_row(row.data(), i + 1);
                S* o = out + a.at(b, i, h);
                std::fill_n(o, d.D, S(0));
                for (int j = 0; j <= i; ++j)
                    for (int c = 0; c < d.D; ++c) o[c] += row[j] * v[a.at(b, j, h) + c];
            }
}

template <class S>
void ra_exact_bwd(S* dq, S* dk, S* dv, S* dg_std, S* dg_rec, const S* dout, const S* lse,
                  const S* q, const S* k, const S* v, const S* g_std, const S* g_rec,
                  const RaDims& d) {
    check_ra_dims(d);
    const RaView<S> a{d, q, k, g_std, g_rec};
    const S c = a.c();
    std::vector<S> p(d.T), g(d.T);
    for (int b = 0; b < d.B; ++b)
        for (int h = 0; h < d.H; ++h) {
            const int gi = gate_index(h, d.n_gates);
            const S gs = g_std[gi], gr = g_rec[gi];
            for (int i = 0; i < d.T; ++i) {
                a.logits(p.data(), b, h, i);
                const S l = lse[size_t(b * d.H + h) * d.T + i];
                for (int j = 0; j <= i; ++j) p[j] = std::exp(p[j] - l);
                const S* go = dout + a.at(b, i, h);
                for (int j = 0; j <= i; ++j) {
                    g[j] = dot(go, v + a.at(b, j, h), d.D);
                    for (int e = 0; e < d.D; ++e) dv[a.at(b, j, h) + e] += p[j] * go[e];
                }
                softmax_row_bwd(g.data(), p.data(), i + 1);
                for (int j = 0; j <= i; ++j) {
                    const S gl = g[j] * c;
                    const S *qi = q + a.at(b, i, h), *kj = k + a.at(b, j, h);
                    const S *qj = q + a.at(b, j, h), *ki = k + a.at(b, i, h);
                    // standard score S = q_i.k_j
                    if (dg_std) dg_std[gi] += gl * dot(qi, kj, d.D);
                    for (int e = 0; e < d.D; ++e) {
                        dq[a.at(b, i, h) + e] += gl * gs * kj[e];
                        dk[a.at(b, j, h) + e] += gl * gs * qi[e];
                    }
                    if (!a.in_band(i, j)) continue;
                    // reciprocal score R = q_j.k_i
                    if (dg_rec) dg_rec[gi] += gl * dot(qj, ki, d.D);
                    for (int e = 0; e < d.D; ++e) {
                        dq[a.at(b, j, h) + e] += gl * gr * ki[e];
                        dk[a.at(b, i, h) + e] += gl * gr * qj[e];
                    }
                }
            }
        }
}

// ---- fold ------------------------------------------------------------------------------------

namespace {
void check_fold_dims(const FoldDims& f) {
    GPT_CHECK(f.N > 0 && f.H > 0 && f.D > 0, "ra_fold: N, H, D must be > 0");
    GPT_CHECK(f.Hk == f.H || f.Hk == 1, "ra_fold: Hk must be H (RA) or 1 (RA+MLA shared k_lat)");
    GPT_CHECK(f.n_gates == 1 || f.n_gates == f.H, "ra_fold: n_gates must be 1 or H");
    GPT_CHECK(f.q_stride >= f.H * f.D && f.k_stride >= f.Hk * f.D,
              "ra_fold: q_stride/k_stride must cover all heads of a token");
}
}  // namespace

template <class S>
void ra_fold_fwd(S* qt, S* kt, const S* q, const S* k, const S* g_std, const S* g_rec,
                 const FoldDims& f) {
    check_fold_dims(f);
    const int D = f.D;
    for (int n = 0; n < f.N; ++n)
        for (int h = 0; h < f.H; ++h) {
            const int gi = gate_index(h, f.n_gates);
            const S gs = floored_gate(g_std[gi]), gr = floored_gate(g_rec[gi]);
            const S* qr = q + size_t(n) * f.q_stride + size_t(h) * D;
            const S* kr = k + size_t(n) * f.k_stride + size_t(f.Hk == 1 ? 0 : h) * D;
            S* qo = qt + (size_t(n) * f.H + h) * 2 * D;
            S* ko = kt + (size_t(n) * f.H + h) * 2 * D;
            for (int c = 0; c < D; ++c) {
                qo[c] = gs * qr[c];
                qo[D + c] = kr[c];
                ko[c] = kr[c];
                ko[D + c] = gr * qr[c];
            }
        }
}

// Only q is read for the gate gradients: g_std scales q̃[:D] = ĝ_std q and g_rec k̃[D:] = ĝ_rec q.
template <class S>
void ra_fold_bwd(S* dq, S* dk, S* dg_std, S* dg_rec, const S* dqt, const S* dkt, const S* q,
                 const S* k, const S* g_std, const S* g_rec, const FoldDims& f) {
    check_fold_dims(f);
    (void)k;
    const int D = f.D;
    for (int n = 0; n < f.N; ++n)
        for (int h = 0; h < f.H; ++h) {
            const int gi = gate_index(h, f.n_gates);
            const S gs = floored_gate(g_std[gi]), gr = floored_gate(g_rec[gi]);
            const size_t qo = size_t(n) * f.q_stride + size_t(h) * D;
            const size_t ko = size_t(n) * f.k_stride + size_t(f.Hk == 1 ? 0 : h) * D;
            const S* gq = dqt + (size_t(n) * f.H + h) * 2 * D;
            const S* gk = dkt + (size_t(n) * f.H + h) * 2 * D;
            S dss = 0, dsr = 0;
            for (int c = 0; c < D; ++c) {
                dq[qo + c] += gs * gq[c] + gr * gk[D + c];
                dk[ko + c] += gk[c] + gq[D + c];
                dss += gq[c] * q[qo + c];
                dsr += gk[D + c] * q[qo + c];
            }
            if (dg_std) dg_std[gi] += dss * dfloored_gate(g_std[gi]);
            if (dg_rec) dg_rec[gi] += dsr * dfloored_gate(g_rec[gi]);
        }
}

AttnDims ra_fold_attn_dims(int B, int T, int H, int D, int Dv, int band, int v_stride) {
    AttnDims d;
    d.B = B;
    d.T = T;
    d.Hq = d.Hkv = H;
    d.Dqk = 2 * D;
    d.Dv = Dv;
    d.q_stride = d.k_stride = H * 2 * D;
    d.v_stride = v_stride;
    d.scale = 1.f / std::sqrt(static_cast<float>(D));
    d.band = band;
    d.band_split = D;
    return d;
}

// ---- same-FLOP low-rank ----------------------------------------------------------------------

namespace {
void check_lowrank_dims(const LowRankDims& d) {
    GPT_CHECK(d.N > 0 && d.H > 0 && d.D > 0, "ra_lowrank: N, H, D must be > 0");
    GPT_CHECK(d.R > 0 && d.R < d.D, "ra_lowrank: rank R must satisfy 0 < R < head_dim (ra.rank)");
    GPT_CHECK(d.n_gates == 1 || d.n_gates == d.H, "ra_lowrank: n_gates must be 1 or H");
}
}  // namespace

template <class S>
void ra_lowrank_fwd(S* qt, S* kt, const S* q, const S* k, const S* W, const S* g_std,
                    const S* g_rec, const LowRankDims& d) {
    check_lowrank_dims(d);
    const int D = d.D, R = d.R, keep = D - R;
    for (int n = 0; n < d.N; ++n)
        for (int h = 0; h < d.H; ++h) {
            const int gi = gate_index(h, d.n_gates);
            const S ss = sqrt_gate(g_std[gi]), sr = sqrt_gate(g_rec[gi]);
            const S* qr = q + size_t(n) * d.q_stride + size_t(h) * D;
            const S* kr = k + size_t(n) * d.k_stride + size_t(h) * D;
            S* qo = qt + (size_t(n) * d.H + h) * D;
            S* ko = kt + (size_t(n) * d.H + h) * D;
            for (int c = 0; c < keep; ++c) {
                qo[c] = ss * qr[c];
                ko[c] = ss * kr[c];
            }
            for (int r = 0; r < R; ++r) {
                S kw = 0, qw = 0;
                for (int c = 0; c < D; ++c) {
                    kw += kr[c] * W[size_t(c) * R + r];
                    qw += qr[c] * W[size_t(c) * R + r];
                }
                qo[keep + r] = sr * kw;
                ko[keep + r] = sr * qw;
            }
        }
}

template <class S>
void ra_lowrank_bwd(S* dq, S* dk, S* dW, S* dg_std, S* dg_rec, const S* dqt, const S* dkt,
                    const S* q, const S* k, const S* W, const S* g_std, const S* g_rec,
                    const LowRankDims& d) {
    check_lowrank_dims(d);
    const int D = d.D, R = d.R, keep = D - R;
    for (int n = 0; n < d.N; ++n)
        for (int h = 0; h < d.H; ++h) {
            const int gi = gate_index(h, d.n_gates);
            const S ss = sqrt_gate(g_std[gi]), sr = sqrt_gate(g_rec[gi]);
            const size_t qo = size_t(n) * d.q_stride + size_t(h) * D;
            const size_t ko = size_t(n) * d.k_stride + size_t(h) * D;
            const S* gq = dqt + (size_t(n) * d.H + h) * D;
            const S* gk = dkt + (size_t(n) * d.H + h) * D;
            S dss = 0, dsr = 0;
            for (int c = 0; c < keep; ++c) {
                dq[qo + c] += ss * gq[c];
                dk[ko + c] += ss * gk[c];
                dss += gq[c] * q[qo + c] + gk[c] * k[ko + c];
            }
            for (int r = 0; r < R; ++r) {
                const S gkw = gq[keep + r], gqw = gk[keep + r];  // grads of (kW)_r and (qW)_r
                S kw = 0, qw = 0;
                for (int c = 0; c < D; ++c) {
                    const S w = W[size_t(c) * R + r];
                    kw += k[ko + c] * w;
                    qw += q[qo + c] * w;
                    dk[ko + c] += sr * gkw * w;
                    dq[qo + c] += sr * gqw * w;
                    if (dW) dW[size_t(c) * R + r] += sr * (k[ko + c] * gkw + q[qo + c] * gqw);
                }
                dsr += gkw * kw + gqw * qw;
            }
            if (dg_std) dg_std[gi] += dss * dsqrt_gate(g_std[gi]);
            if (dg_rec) dg_rec[gi] += dsr * dsqrt_gate(g_rec[gi]);
        }
}

// ---- discoverability bias ----------------------------------------------------------------------

template <class S>
void disc_bias_fwd(S* bias, const S* k, const S* u, const S* g_disc, int N, int H, int D,
                   int k_stride) {
    for (int n = 0; n < N; ++n)
        for (int h = 0; h < H; ++h)
            bias[size_t(n) * H + h] =
                g_disc[h] * dot(k + size_t(n) * k_stride + size_t(h) * D, u + size_t(h) * D, D);
}

template <class S>
void disc_bias_bwd(S* dk, S* du, S* dg_disc, const S* dbias, const S* k, const S* u,
                   const S* g_disc, int N, int H, int D, int k_stride) {
    for (int n = 0; n < N; ++n)
        for (int h = 0; h < H; ++h) {
            const S gb = dbias[size_t(n) * H + h];
            const S* kr = k + size_t(n) * k_stride + size_t(h) * D;
            const S* ur = u + size_t(h) * D;
            if (dg_disc) dg_disc[h] += gb * dot(kr, ur, D);
            for (int c = 0; c < D; ++c) {
                if (dk) dk[size_t(n) * k_stride + size_t(h) * D + c] += gb * g_disc[h] * ur[c];
                if (du) du[size_t(h) * D + c] += gb * g_disc[h] * kr[c];
            }
        }
}

#define GPT_INSTANTIATE(S)                                                                          \
    template void attention_ref_fwd<S>(S*, S*, S*, const S*, const S*, const S*, const AttnDims&,   \
                                       const S*);                                                   \
    template void attention_ref_bwd<S>(S*, S*, S*, S*, const S*, const S*, const S*, const S*,     \
                                       const S*, const AttnDims&, const S*, const S*);             \
    template void ra_exact_fwd<S>(S*, S*, const S*, const S*, const S*, const S*, const S*,        \
                                  const RaDims&);                                                   \
    template void ra_exact_bwd<S>(S*, S*, S*, S*, S*, const S*, const S*, const S*, const S*,      \
                                  const S*, const S*, const S*, const RaDims&);                     \
    template void ra_fold_fwd<S>(S*, S*, const S*, const S*, const S*, const S*, const FoldDims&); \
    template void ra_fold_bwd<S>(S*, S*, S*, S*, const S*, const S*, const S*, const S*, const S*, \
                                 const S*, const FoldDims&);                                        \
    template void ra_lowrank_fwd<S>(S*, S*, const S*, const S*, const S*, const S*, const S*,      \
                                    const LowRankDims&);                                            \
    template void ra_lowrank_bwd<S>(S*, S*, S*, S*, S*, const S*, const S*, const S*, const S*,    \
                                    const S*, const S*, const S*, const LowRankDims&);              \
    template void disc_bias_fwd<S>(S*, const S*, const S*, const S*, int, int, int, int);          \
    template void disc_bias_bwd<S>(S*, S*, S*, const S*, const S*, const S*, const S*, int, int,   \
                                   int, int);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::ref
