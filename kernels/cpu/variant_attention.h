// CPU reference math of the attention variants of SPEC §2.2: a generic causal attention that
// honours AttnDims::band/band_split, reciprocal attention (RA) exact, its fold onto the generic
// attention op, the same-FLOP low-rank fold, and the discoverability bias.
//
// Plain loops over float or double arrays (double is what the finite-difference tests use).
// Gradient convention: attention_ref_bwd OVERWRITES dq, dk, dv like Ops::attention_bwd; every other
// function in the variant_* headers ACCUMULATES (+=) into its gradient outputs, because the inputs
// usually feed several consumers (and parameter gradients are always accumulated).
// A gradient pointer that is nullptr is skipped (a fixed gate, a detached input).
#pragma once
#include "model/ops.h"

namespace gpt::ref {

// Gates enter the folds as max(g, kGateFloor) (the exact fold, on one side) or sqrt(max(g, kGateFloor))
// (the low-rank fold, on both sides): the floor keeps the square root and its derivative finite;
// below it the gate gets no gradient.
constexpr double kGateFloor = 1e-8;

// Gate of head h when a layer has n_gates gates: n_gates == H (per head) or 1 (per layer: one value
// shared by all heads, whose gradient is the sum over heads).
inline int gate_index(int h, int n_gates) { return n_gates == 1 ? 0 : h; }

// ---- generic attention (reference for Ops::attention_fwd/bwd, band extension included) --------
// logit[i,j] = scale * (q_i[:split].k_j[:split] + band_W(i,j) q_i[split:].k_j[split:]) + key_bias[j]
// for j <= i (band = 0: no band, every dim counts). Dropout must be 0 here.
// Optional (nullptr = absent):
//   probs    [B,Hq,T,T] written with the post-softmax probabilities (0 above the diagonal);
//   key_bias [B,T,Hq]   an additive logit per key column and query head (discoverability bias).
template <class S>
void attention_ref_fwd(S* out, S* lse, S* probs, const S* q, const S* k, const S* v,
                       const AttnDims& d, const S* key_bias = nullptr);

// dq, dk, dv overwritten; dkey_bias [B,T,Hq] accumulated (may be nullptr). dprobs [B,Hq,T,T]
// (optional) is a further gradient that arrives directly at the probabilities (RA-CT statistic).
template <class S>
void attention_ref_bwd(S* dq, S* dk, S* dv, S* dkey_bias, const S* dout, const S* lse,
                       const S* q, const S* k, const S* v, const AttnDims& d,
                       const S* key_bias = nullptr, const S* dprobs = nullptr);

// ---- RA exact (direct formula; the ground truth the folds are checked against) --------------
// q, k, v, out contiguous [B,T,H,D]; lse [B,H,T]; gates [n_gates].
// logit[i,j] = (g_std S[i,j] + g_rec band_W(i,j) R[i,j]) / sqrt(D), S = q_i.k_j, R = q_j.k_i.
struct RaDims {
    int B = 0, T = 0, H = 0, D = 0;
    int band = 0;     // W; 0 = full transpose
    int n_gates = 0;  // H (per head) or 1 (per layer)
};
template <class S>
void ra_exact_fwd(S* out, S* lse, const S* q, const S* k, const S* v, const S* g_std,
                  const S* g_rec, const RaDims& d);
template <class S>
void ra_exact_bwd(S* dq, S* dk, S* dv, S* dg_std, S* dg_rec, const S* dout, const S* lse,
                  const S* q, const S* k, const S* v, const S* g_std, const S* g_rec,
                  const RaDims& d);

// ---- the fold: RA as ordinary attention with Dqk = 2D ----------------------------------------
// qt[n,h] = [g_std q[n,h], k[n,hk]],  kt[n,h] = [k[n,hk], g_rec q[n,h]]  (g = max(g, kGateFloor): the
// same logits as SPEC §2.2's sqrt(g) on both sides, one multiply fewer, and only q needed for dg)
// with hk = h (Hk == H, RA) or 0 (Hk == 1: RA+MLA, where k is the shared latent k_lat).
// q row n (= b*T + t) starts at n*q_stride, head h at h*D; k likewise with Hk heads.
// qt, kt are contiguous [N, H, 2D]. Then attention_fwd(qt, kt, v) with ra_fold_attn_dims() is RA.
struct FoldDims {
    int N = 0, H = 0, Hk = 0, D = 0;
    int q_stride = 0, k_stride = 0;
    int n_gates = 0;  // H or 1
};
template <class S>
void ra_fold_fwd(S* qt, S* kt, const S* q, const S* k, const S* g_std, const S* g_rec,
                 const FoldDims& f);
// dq = g_std dqt[:D] + g_rec dkt[D:],  dk = dkt[:D] + dqt[D:] (summed over heads when Hk == 1);
// dg_std = sum dqt[:D].q, dg_rec = sum dkt[D:].q (zero below the floor).
template <class S>
void ra_fold_bwd(S* dq, S* dk, S* dg_std, S* dg_rec, const S* dqt, const S* dkt, const S* q,
                 const S* k, const S* g_std, const S* g_rec, const FoldDims& f);
// The AttnDims of the folded attention: Dqk = 2D, Dv = v's head width, scale 1/sqrt(D),
// band = W, band_split = D (only the reciprocal half is banded); for RA+MLA pass D = L. v has
// Hkv = H heads of width Dv at row stride v_stride; q̃, k̃ as written by ra_fold_fwd.
AttnDims ra_fold_attn_dims(int B, int T, int H, int D, int Dv, int band, int v_stride);

// ---- same-FLOP low-rank RA ---------------------------------------------------------------------
// qt[n,h] = [sqrt(g_std) q[:D-R], sqrt(g_rec) (k W)],  kt[n,h] = [sqrt(g_std) k[:D-R], sqrt(g_rec) (q W)]
// W [D,R] row-major (W[c*R + r]), one per layer shared by its heads. qt, kt contiguous [N,H,D];
// attention on them with Dqk = D, scale 1/sqrt(D), band_split = D - R (band optional).
struct LowRankDims {
    int N = 0, H = 0, D = 0, R = 0;
    int q_stride = 0, k_stride = 0;
    int n_gates = 0;
};
template <class S>
void ra_lowrank_fwd(S* qt, S* kt, const S* q, const S* k, const S* W, const S* g_std,
                    const S* g_rec, const LowRankDims& d);
template <class S>
void ra_lowrank_bwd(S* dq, S* dk, S* dW, S* dg_std, S* dg_rec, const S* dqt, const S* dkt,
                    const S* q, const S* k, const S* W, const S* g_std, const S* g_rec,
                    const LowRankDims& d);

// ---- discoverability bias ----------------------------------------------------------------------
// bias[n,h] = g_disc[h] * (k[n,h,:] . u[h,:]), added unscaled to every logit of key column n
// (the key_bias of attention_ref_fwd). k rows at n*k_stride, heads of width D; u [H,D].
template <class S>
void disc_bias_fwd(S* bias, const S* k, const S* u, const S* g_disc, int N, int H, int D,
                   int k_stride);
template <class S>
void disc_bias_bwd(S* dk, S* du, S* dg_disc, const S* dbias, const S* k, const S* u,
                   const S* g_disc, int N, int H, int D, int k_stride);

}  // namespace gpt::ref
