// CpuOps' variant operations (ops.h, "variant operations"): thin adapters from Ten views to the
// gpt::ref reference math of kernels/cpu/variant_*.cpp, plus the materialised attention
// probabilities. The ref functions accumulate their gradients; where an Ops method overwrites,
// the target is zeroed first (only the columns the operation owns, for strided layouts).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"
#include "cpu/cpu_kernels.h"
#include "cpu/cpu_ops.h"
#include "cpu/variant_attention.h"
#include "cpu/variant_head_gate.h"
#include "cpu/variant_mlp.h"
#include "cpu/variant_ract.h"
#include "cpu/variant_ract_entropy.h"

namespace gpt {
namespace {

// Elements from a strided view's start to the end of its last row's used columns.
size_t strided_extent(int rows, int stride, int width) { return (size_t(rows) - 1) * stride + width; }

// Zero `width` columns of each of `rows` rows of a strided view.
void zero_rows(float* p, int rows, int stride, int width) {
    for (int n = 0; n < rows; ++n) std::fill_n(p + size_t(n) * stride, width, 0.f);
}

// A gate tensor's values, or n_gates copies of the fixed value when the tensor is absent.
struct Gates {
    std::vector<float> fixed;
    const float* ptr = nullptr;
};

void check_positive(const char* what, std::initializer_list<long long> dims) {
    for (long long x : dims)
        GPT_CHECK(x > 0, fmt::format("cpu backend: {}: every dimension must be positive, got {}; fix the "
                                     "shapes the model passes",
                                     what, x));
}

// Every index of a sparse row list must address one of the N rows (or be -1 = unused).
void check_indices(const int32_t* idx, size_t n, int N, const char* what) {
    for (size_t e = 0; e < n; ++e)
        GPT_CHECK(idx[e] >= -1 && idx[e] < N,
                  fmt::format("cpu backend: {}: row index {} outside [-1, {}); the index must come from "
                              "topk_rows on the same batch",
                              what, idx[e], N));
}

void check_gate_count(int n_gates, int H, const char* what) {
    GPT_CHECK(n_gates == 1 || n_gates == H,
              fmt::format("cpu backend: {}: n_gates = {} must be 1 (per layer) or H = {} (per head)",
                          what, n_gates, H));
}

}  // namespace

// ---- RA folds ------------------------------------------------------------------------------------

namespace {
ref::FoldDims to_ref(const RaFoldDims& d) { return {d.N, d.H, d.Hk, d.D, d.q_stride, d.k_stride, d.n_gates}; }
ref::LowRankDims to_ref(const RaLowRankDims& d) {
    return {d.N, d.H, d.D, d.R, d.q_stride, d.k_stride, d.n_gates};
}
}  // namespace

#define GPT_GATES(name, ten, fixed_value, n)                                             \
    std::vector<float> name##_fixed(size_t(n), fixed_value);                             \
    const float* name = ten.present() ? f32(ten, size_t(n), "gate " #name) : name##_fixed.data()

void CpuOps::ra_fold_fwd(Ten qt, Ten kt, Ten q, Ten k, Ten g_std, Ten g_rec, const RaFoldDims& d) {
    check_positive("ra_fold_fwd", {d.N, d.H, d.Hk, d.D});
    check_gate_count(d.n_gates, d.H, "ra_fold_fwd");
    GPT_GATES(gs, g_std, d.g_std_fixed, d.n_gates);
    GPT_GATES(gr, g_rec, d.g_rec_fixed, d.n_gates);
    const size_t nt = size_t(d.N) * d.H * 2 * d.D;
    ref::ra_fold_fwd(f32(qt, nt, "ra_fold_fwd qt"), f32(kt, nt, "ra_fold_fwd kt"),
                     f32_extent(q, strided_extent(d.N, d.q_stride, d.H * d.D), "ra_fold_fwd q"),
                     f32_extent(k, strided_extent(d.N, d.k_stride, d.Hk * d.D), "ra_fold_fwd k"), gs, gr,
                     to_ref(d));
}

void CpuOps::ra_fold_bwd(Ten dq, Ten dk, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k, Ten g_std,
                         Ten g_rec, const RaFoldDims& d, Ten dbias, Ten dv) {
    check_positive("ra_fold_bwd", {d.N, d.H, d.Hk, d.D});
    check_gate_count(d.n_gates, d.H, "ra_fold_bwd");
    GPT_GATES(gs, g_std, d.g_std_fixed, d.n_gates);
    GPT_GATES(gr, g_rec, d.g_rec_fixed, d.n_gates);
    const size_t nt = size_t(d.N) * d.H * 2 * d.D;
    const size_t q_ext = strided_extent(d.N, d.q_stride, d.H * d.D);
    const size_t k_ext = strided_extent(d.N, d.k_stride, d.Hk * d.D);
    float* dqp = f32_extent(dq, q_ext, "ra_fold_bwd dq");
    float* dkp = f32_extent(dk, k_ext, "ra_fold_bwd dk");
    zero_rows(dqp, d.N, d.q_stride, d.H * d.D);
    zero_rows(dkp, d.N, d.k_stride, d.Hk * d.D);
    ref::ra_fold_bwd(dqp, dkp, f32_optional(dg_std, d.n_gates, "ra_fold_bwd dg_std"),
                     f32_optional(dg_rec, d.n_gates, "ra_fold_bwd dg_rec"), f32(dqt, nt, "ra_fold_bwd dqt"),
                     f32(dkt, nt, "ra_fold_bwd dkt"), f32_extent(q, q_ext, "ra_fold_bwd q"),
                     f32_extent(k, k_ext, "ra_fold_bwd k"), gs, gr, to_ref(d));
    GPT_CHECK(dbias.present() || !dv.present(), "ra_fold_bwd: dv is only read for dbias");
    if (!dbias.present()) return;
    // c_attn's bias gradient: column sums of the rows just written (and of dv), in row order.
    const int HD = d.H * d.D, HkD = d.Hk * d.D;
    float* db = f32(dbias, size_t(HD + HkD + (dv.present() ? HD : 0)), "ra_fold_bwd dbias");
    const float* dvp = dv.present() ? f32_extent(dv, q_ext, "ra_fold_bwd dv") : nullptr;
    for (int n = 0; n < d.N; ++n) {
        for (int c = 0; c < HD; ++c) db[c] += dqp[size_t(n) * d.q_stride + c];
        for (int c = 0; c < HkD; ++c) db[HD + c] += dkp[size_t(n) * d.k_stride + c];
        if (dvp)
            for (int c = 0; c < HD; ++c) db[HD + HkD + c] += dvp[size_t(n) * d.q_stride + c];
    }
}

// The fold inside the attention: the CPU twin is the composition the CUDA kernel computes in one go,
// the fold into temporaries, then the attention on them (backward: q̃, k̃ rebuilt from q, k as the
// kernel does, the attention's backward into dq̃, dk̃, the fold's backward).
namespace {
void check_fused_fold(const RaFoldDims& f, const AttnDims& a, const char* op) {
    check_positive(op, {f.N, f.H, f.D, a.B, a.T, a.Dv});
    check_gate_count(f.n_gates, f.H, op);
    GPT_CHECK(f.Hk == f.H, fmt::format("cpu backend: {}: the fold inside the attention needs Hk = H", op));
    GPT_CHECK(a.Hq == f.H && a.Hkv == f.H && a.Dqk == 2 * f.D && size_t(a.B) * a.T == size_t(f.N) &&
                  (a.band == 0 || a.band_split == f.D),
              fmt::format("cpu backend: {}: attention dims (Hq {}, Hkv {}, Dqk {}, B*T {}, band_split {}) do not "
                          "match the fold (H {}, 2D {}, N {}, D {})",
                          op, a.Hq, a.Hkv, a.Dqk, a.B * a.T, a.band_split, f.H, 2 * f.D, f.N, f.D));
}
AttnDims on_fold(const AttnDims& a, const RaFoldDims& f) {
    AttnDims d = a;
    d.q_stride = d.k_stride = f.H * 2 * f.D;   // the temporaries' layout
    return d;
}
}  // namespace

void CpuOps::ra_attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, Ten g_std, Ten g_rec, const RaFoldDims& f,
                              const AttnDims& a) {
    check_fused_fold(f, a, "ra_attention_fwd");
    GPT_GATES(gs, g_std, f.g_std_fixed, f.n_gates);
    GPT_GATES(gr, g_rec, f.g_rec_fixed, f.n_gates);
    const size_t nt = size_t(f.N) * f.H * 2 * f.D, nh = size_t(f.N) * f.H;
    std::vector<float> qt(nt), kt(nt);
    ref::ra_fold_fwd(qt.data(), kt.data(),
                     f32_extent(q, strided_extent(f.N, f.q_stride, f.H * f.D), "ra_attention_fwd q"),
                     f32_extent(k, strided_extent(f.N, f.k_stride, f.H * f.D), "ra_attention_fwd k"), gs, gr,
                     to_ref(f));
    const AttnDims d = on_fold(a, f);
    cpu::attention_fwd(f32(out, nh * d.Dv, "ra_attention_fwd out"), f32(lse, nh, "ra_attention_fwd lse"), qt.data(),
                       kt.data(), f32_extent(v, strided_extent(f.N, d.v_stride, f.H * d.Dv), "ra_attention_fwd v"),
                       d);
}

void CpuOps::ra_attention_bwd(Ten dq, Ten dk, Ten dv, Ten dg_std, Ten dg_rec, Ten dout, Ten out, Ten lse, Ten q,
                              Ten k, Ten v, Ten g_std, Ten g_rec, const RaFoldDims& f, const AttnDims& a) {
    (void)out;   // the CPU forms D from the recomputed rows (attention_bwd)
    check_fused_fold(f, a, "ra_attention_bwd");
    GPT_GATES(gs, g_std, f.g_std_fixed, f.n_gates);
    GPT_GATES(gr, g_rec, f.g_rec_fixed, f.n_gates);
    const size_t nt = size_t(f.N) * f.H * 2 * f.D, nh = size_t(f.N) * f.H;
    const size_t q_ext = strided_extent(f.N, f.q_stride, f.H * f.D), k_ext = strided_extent(f.N, f.k_stride, f.H * f.D);
    const float* qp = f32_extent(q, q_ext, "ra_attention_bwd q");
    const float* kp = f32_extent(k, k_ext, "ra_attention_bwd k");
    std::vector<float> qt(nt), kt(nt), dqt(nt), dkt(nt);
    ref::ra_fold_fwd(qt.data(), kt.data(), qp, kp, gs, gr, to_ref(f));
    const AttnDims d = on_fold(a, f);
    const size_t v_ext = strided_extent(f.N, d.v_stride, f.H * d.Dv);
    cpu::attention_bwd(dqt.data(), dkt.data(), f32_extent(dv, v_ext, "ra_attention_bwd dv"),
                       f32(dout, nh * d.Dv, "ra_attention_bwd dout"), f32(lse, nh, "ra_attention_bwd lse"), qt.data(),
                       kt.data(), f32_extent(v, v_ext, "ra_attention_bwd v"), d);
    float* dqp = f32_extent(dq, q_ext, "ra_attention_bwd dq");
    float* dkp = f32_extent(dk, k_ext, "ra_attention_bwd dk");
    zero_rows(dqp, f.N, f.q_stride, f.H * f.D);
    zero_rows(dkp, f.N, f.k_stride, f.H * f.D);
    ref::ra_fold_bwd(dqp, dkp, f32_optional(dg_std, f.n_gates, "ra_attention_bwd dg_std"),
                     f32_optional(dg_rec, f.n_gates, "ra_attention_bwd dg_rec"), dqt.data(), dkt.data(), qp, kp, gs,
                     gr, to_ref(f));
}

void CpuOps::ra_lowrank_fwd(Ten qt, Ten kt, Ten q, Ten k, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) {
    check_positive("ra_lowrank_fwd", {d.N, d.H, d.D, d.R});
    check_gate_count(d.n_gates, d.H, "ra_lowrank_fwd");
    GPT_GATES(gs, g_std, d.g_std_fixed, d.n_gates);
    GPT_GATES(gr, g_rec, d.g_rec_fixed, d.n_gates);
    const size_t nt = size_t(d.N) * d.H * d.D;
    ref::ra_lowrank_fwd(f32(qt, nt, "ra_lowrank_fwd qt"), f32(kt, nt, "ra_lowrank_fwd kt"),
                        f32_extent(q, strided_extent(d.N, d.q_stride, d.H * d.D), "ra_lowrank_fwd q"),
                        f32_extent(k, strided_extent(d.N, d.k_stride, d.H * d.D), "ra_lowrank_fwd k"),
                        f32(W, size_t(d.D) * d.R, "ra_lowrank_fwd W"), gs, gr, to_ref(d));
}

void CpuOps::ra_lowrank_bwd(Ten dq, Ten dk, Ten dW, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k,
                            Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) {
    check_positive("ra_lowrank_bwd", {d.N, d.H, d.D, d.R});
    check_gate_count(d.n_gates, d.H, "ra_lowrank_bwd");
    GPT_GATES(gs, g_std, d.g_std_fixed, d.n_gates);
    GPT_GATES(gr, g_rec, d.g_rec_fixed, d.n_gates);
    const size_t nt = size_t(d.N) * d.H * d.D;
    const size_t q_ext = strided_extent(d.N, d.q_stride, d.H * d.D);
    const size_t k_ext = strided_extent(d.N, d.k_stride, d.H * d.D);
    float* dqp = f32_extent(dq, q_ext, "ra_lowrank_bwd dq");
    float* dkp = f32_extent(dk, k_ext, "ra_lowrank_bwd dk");
    zero_rows(dqp, d.N, d.q_stride, d.H * d.D);
    zero_rows(dkp, d.N, d.k_stride, d.H * d.D);
    ref::ra_lowrank_bwd(dqp, dkp, f32_optional(dW, size_t(d.D) * d.R, "ra_lowrank_bwd dW"),
                        f32_optional(dg_std, d.n_gates, "ra_lowrank_bwd dg_std"),
                        f32_optional(dg_rec, d.n_gates, "ra_lowrank_bwd dg_rec"),
                        f32(dqt, nt, "ra_lowrank_bwd dqt"), f32(dkt, nt, "ra_lowrank_bwd dkt"),
                        f32_extent(q, q_ext, "ra_lowrank_bwd q"), f32_extent(k, k_ext, "ra_lowrank_bwd k"),
                        f32(W, size_t(d.D) * d.R, "ra_lowrank_bwd W"), gs, gr, to_ref(d));
}

// ---- the low-rank fold on c_attn's weights: the rows form applied to the rows of [w^T; b] --------

namespace {
// [w^T; b]: K + 1 rows of 3E values (row k < K: column k of w; row K: the bias).
std::vector<float> weight_rows(const float* w, const float* b, int E3, int K) {
    std::vector<float> t(size_t(K + 1) * E3);
    for (int o = 0; o < E3; ++o) {
        for (int k = 0; k < K; ++k) t[size_t(k) * E3 + o] = w[size_t(o) * K + k];
        t[size_t(K) * E3 + o] = b[o];
    }
    return t;
}
ref::LowRankDims weight_rows_dims(const RaLowRankDims& d) {
    const int E3 = 3 * d.H * d.D;
    return {d.N + 1, d.H, d.D, d.R, E3, E3, d.n_gates};
}
}  // namespace

void CpuOps::ra_lowrank_weights_fwd(Ten w_eff, Ten b_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec,
                                    const RaLowRankDims& d) {
    check_positive("ra_lowrank_weights_fwd", {d.N, d.H, d.D, d.R});
    check_gate_count(d.n_gates, d.H, "ra_lowrank_weights_fwd");
    GPT_GATES(gs, g_std, d.g_std_fixed, d.n_gates);
    GPT_GATES(gr, g_rec, d.g_rec_fixed, d.n_gates);
    const int E = d.H * d.D, E3 = 3 * E, K = d.N;
    const size_t nw = size_t(E3) * K;
    const std::vector<float> rows =
        weight_rows(f32(w, nw, "ra_lowrank_weights_fwd w"), f32(b, E3, "ra_lowrank_weights_fwd b"), E3, K);
    std::vector<float> qt(size_t(K + 1) * E), kt(size_t(K + 1) * E);
    ref::ra_lowrank_fwd(qt.data(), kt.data(), rows.data(), rows.data() + E,
                        f32(W, size_t(d.D) * d.R, "ra_lowrank_weights_fwd W"), gs, gr, weight_rows_dims(d));
    float* we = f32(w_eff, nw, "ra_lowrank_weights_fwd w_eff");
    float* be = f32(b_eff, E3, "ra_lowrank_weights_fwd b_eff");
    for (int o = 0; o < E3; ++o)
        for (int k = 0; k <= K; ++k) {
            const size_t r = size_t(k) * E;
            const float v = o < E ? qt[r + o] : o < 2 * E ? kt[r + o - E] : rows[size_t(k) * E3 + o];
            (k < K ? we[size_t(o) * K + k] : be[o]) = v;
        }
}

void CpuOps::ra_lowrank_weights_bwd(Ten dw, Ten db, Ten dW, Ten dg_std, Ten dg_rec, Ten dw_eff, Ten db_eff,
                                    Ten w, Ten b, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) {
    check_positive("ra_lowrank_weights_bwd", {d.N, d.H, d.D, d.R});
    check_gate_count(d.n_gates, d.H, "ra_lowrank_weights_bwd");
    GPT_GATES(gs, g_std, d.g_std_fixed, d.n_gates);
    GPT_GATES(gr, g_rec, d.g_rec_fixed, d.n_gates);
    const int E = d.H * d.D, E3 = 3 * E, K = d.N;
    const size_t nw = size_t(E3) * K;
    const std::vector<float> rows =
        weight_rows(f32(w, nw, "ra_lowrank_weights_bwd w"), f32(b, E3, "ra_lowrank_weights_bwd b"), E3, K);
    const float* ge = f32(dw_eff, nw, "ra_lowrank_weights_bwd dw_eff");
    const float* gbe = f32(db_eff, E3, "ra_lowrank_weights_bwd db_eff");
    const std::vector<float> grows = weight_rows(ge, gbe, E3, K);   // the gradients of q̃ | k̃ | v rows
    std::vector<float> gq(size_t(K + 1) * E), gk(size_t(K + 1) * E);
    for (int k = 0; k <= K; ++k)
        for (int j = 0; j < E; ++j) {
            gq[size_t(k) * E + j] = grows[size_t(k) * E3 + j];
            gk[size_t(k) * E + j] = grows[size_t(k) * E3 + E + j];
        }
    std::vector<float> drows(size_t(K + 1) * E3, 0.f);   // q, k columns written by the rows backward
    ref::ra_lowrank_bwd(drows.data(), drows.data() + E, f32_optional(dW, size_t(d.D) * d.R, "ra_lowrank_weights_bwd dW"),
                        f32_optional(dg_std, d.n_gates, "ra_lowrank_weights_bwd dg_std"),
                        f32_optional(dg_rec, d.n_gates, "ra_lowrank_weights_bwd dg_rec"), gq.data(), gk.data(),
                        rows.data(), rows.data() + E, f32(W, size_t(d.D) * d.R, "ra_lowrank_weights_bwd W"), gs, gr,
                        weight_rows_dims(d));
    for (size_t i = size_t(2) * E; i < size_t(E3); ++i)   // v passes through
        for (int k = 0; k <= K; ++k) drows[size_t(k) * E3 + i] = grows[size_t(k) * E3 + i];
    float* dwp = f32(dw, nw, "ra_lowrank_weights_bwd dw");
    float* dbp = f32(db, E3, "ra_lowrank_weights_bwd db");
    for (int o = 0; o < E3; ++o) {
        for (int k = 0; k < K; ++k) dwp[size_t(o) * K + k] += drows[size_t(k) * E3 + o];
        dbp[o] += drows[size_t(K) * E3 + o];
    }
}
#undef GPT_GATES

// ---- MLA maps ------------------------------------------------------------------------------------

namespace {
void check_head_map(const HeadMapDims& d) {
    GPT_CHECK((d.Hin == d.H || d.Hin == 1) && (d.Hm == d.H || d.Hm == 1) && d.in_stride >= d.Hin * d.Din,
              fmt::format("cpu backend: head_map: Hin = {} and Hm = {} must be H = {} or 1, and in_stride {} must "
                          "cover the input heads ({})",
                          d.Hin, d.Hm, d.H, d.in_stride, d.Hin * d.Din));
}
}  // namespace

// One strided GEMM per head (OpenBLAS): head h reads rows of `in` at in_stride from column
// hin(h)*Din and writes the columns h*Dout of rows of H*Dout. Same math as ref::head_map_*.
void CpuOps::head_map_fwd(Ten out, Ten in, Ten M, const HeadMapDims& d) {
    check_positive("head_map_fwd", {d.N, d.H, d.Hin, d.Hm, d.Din, d.Dout});
    check_head_map(d);
    float* o = f32(out, size_t(d.N) * d.H * d.Dout, "head_map_fwd out");
    const float* x = f32_extent(in, strided_extent(d.N, d.in_stride, d.Hin * d.Din), "head_map_fwd in");
    const float* m = f32(M, size_t(d.Hm) * d.Din * d.Dout, "head_map_fwd M");
    for (int h = 0; h < d.H; ++h)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.N, d.Dout, d.Din, 1.f,
                    x + size_t(d.Hin == 1 ? 0 : h) * d.Din, d.in_stride, m + size_t(d.Hm == 1 ? 0 : h) * d.Din * d.Dout,
                    d.Dout, 0.f, o + size_t(h) * d.Dout, d.H * d.Dout);
}

void CpuOps::head_map_bwd(Ten din, Ten dM, Ten dout, Ten in, Ten M, const HeadMapDims& d) {
    check_positive("head_map_bwd", {d.N, d.H, d.Hin, d.Hm, d.Din, d.Dout});
    check_head_map(d);
    const size_t in_ext = strided_extent(d.N, d.in_stride, d.Hin * d.Din);
    float* dx = din.present() ? f32_extent(din, in_ext, "head_map_bwd din") : nullptr;
    float* dm = f32_optional(dM, size_t(d.Hm) * d.Din * d.Dout, "head_map_bwd dM");
    const float* gy = f32(dout, size_t(d.N) * d.H * d.Dout, "head_map_bwd dout");
    const float* x = f32_extent(in, in_ext, "head_map_bwd in");
    const float* m = f32(M, size_t(d.Hm) * d.Din * d.Dout, "head_map_bwd M");
    if (dx) zero_rows(dx, d.N, d.in_stride, d.Hin * d.Din);
    for (int h = 0; h < d.H; ++h) {
        const size_t xo = size_t(d.Hin == 1 ? 0 : h) * d.Din, mo = size_t(d.Hm == 1 ? 0 : h) * d.Din * d.Dout;
        const float* g = gy + size_t(h) * d.Dout;
        if (dx)   // din_h += dout_h M_h^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.N, d.Din, d.Dout, 1.f, g, d.H * d.Dout, m + mo,
                        d.Dout, 1.f, dx + xo, d.in_stride);
        if (dm)   // dM_h += in_h^T dout_h
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.Din, d.Dout, d.N, 1.f, x + xo, d.in_stride, g,
                        d.H * d.Dout, 1.f, dm + mo, d.Dout);
    }
}

// ---- attention probabilities, one batch row at a time (RA-CT, M2) ----------------------------------
// The reference materialises P [Hq, T, T] of one batch row internally; the CUDA backend never does.

namespace {

void check_probs_dims(const AttnDims& d, const char* what) {
    check_positive(what, {d.B, d.T, d.Hq, d.Hkv, d.Dqk});
    GPT_CHECK(d.Hq % d.Hkv == 0, fmt::format("cpu backend: {}: Hkv = {} must divide Hq = {}", what, d.Hkv, d.Hq));
    GPT_CHECK(d.band >= 0 && d.band_split >= 0 && d.band_split <= d.Dqk,
              fmt::format("cpu backend: {}: band {} / band_split {} invalid (0 <= band_split <= Dqk = {})", what,
                          d.band, d.band_split, d.Dqk));
}

// Leading q.k dims that count for the pair (i, j) (the banded reciprocal half is the tail).
int active_dims(const AttnDims& d, int i, int j) { return (d.band > 0 && i - j > d.band) ? d.band_split : d.Dqk; }

const float* row_at(const float* base, const AttnDims& d, int b, int t, int stride, int head) {
    return base + (size_t(b) * d.T + t) * stride + size_t(head) * d.Dqk;
}

// The views of q, k, lse an operation on the probabilities reads.
struct ProbsInputs {
    const float *q, *k, *lse;
};

// P [Hq, T, T] of batch row b: exp(logit - lse) for j <= i, 0 above the diagonal, before dropout.
void batch_probs(float* P, const ProbsInputs& in, const AttnDims& d, int b) {
    const int group = d.Hq / d.Hkv;
#pragma omp parallel for schedule(static)
    for (int h = 0; h < d.Hq; ++h)
        for (int i = 0; i < d.T; ++i) {
            const float* qr = row_at(in.q, d, b, i, d.q_stride, h);
            const float l = in.lse[(size_t(b) * d.Hq + h) * d.T + i];
            float* p = P + (size_t(h) * d.T + i) * d.T;
            for (int j = 0; j <= i; ++j) {
                const float* kr = row_at(in.k, d, b, j, d.k_stride, h / group);
                float s = 0.f;
                for (int c = 0, n = active_dims(d, i, j); c < n; ++c) s += qr[c] * kr[c];
                p[j] = std::exp(d.scale * s - l);
            }
            std::fill(p + i + 1, p + d.T, 0.f);
        }
}

// The gradient reaching the logits of batch row b through the softmax from G = dL/dP [Hq, T, T]:
// dlogit = P (G - sum_j P G) per row; dq_i += scale sum_j dlogit k_j, dk_j += scale sum_i dlogit q_i
// (band honoured, dk summed over the query heads of a key head). dq, dk accumulated.
void batch_probs_bwd(float* dq, float* dk, const float* G, const float* P, const ProbsInputs& in,
                     const AttnDims& d, int b) {
    const int group = d.Hq / d.Hkv;
    std::vector<float> dl(d.T);
    for (int h = 0; h < d.Hq; ++h)
        for (int i = 0; i < d.T; ++i) {
            const size_t o = (size_t(h) * d.T + i) * d.T;
            float pg = 0.f;
            for (int j = 0; j <= i; ++j) pg += P[o + j] * G[o + j];
            for (int j = 0; j <= i; ++j) dl[j] = P[o + j] * (G[o + j] - pg) * d.scale;
            const float* qr = row_at(in.q, d, b, i, d.q_stride, h);
            float* dqr = dq + (size_t(b) * d.T + i) * d.q_stride + size_t(h) * d.Dqk;
            for (int j = 0; j <= i; ++j) {
                const size_t ko = (size_t(b) * d.T + j) * d.k_stride + size_t(h / group) * d.Dqk;
                for (int c = 0, n = active_dims(d, i, j); c < n; ++c) {
                    dqr[c] += dl[j] * in.k[ko + c];
                    dk[ko + c] += dl[j] * qr[c];
                }
            }
        }
}

}  // namespace

// ---- RA-CT and per-head gates --------------------------------------------------------------------

namespace {
ref::RactDims to_ref(const RactDims& d) { return {d.B, d.T, d.H, d.stat, d.topk, d.head_average}; }

// The RA-CT dims of one batch row (the reference functions then see B = 1).
ref::RactDims one_batch(const RactDims& d) {
    ref::RactDims r = to_ref(d);
    r.B = 1;
    return r;
}

void check_ract_dims(const AttnDims& a, const RactDims& d, const char* what) {
    check_probs_dims(a, what);
    check_positive(what, {d.B, d.T, d.H});
    GPT_CHECK(a.B == d.B && a.T == d.T && a.Hq == d.H,
              fmt::format("cpu backend: {}: the attention dims (B {}, T {}, Hq {}) and the RA-CT dims (B {}, T {}, "
                          "H {}) disagree",
                          what, a.B, a.T, a.Hq, d.B, d.T, d.H));
}

}  // namespace

void CpuOps::ract_gate_fwd(Ten stat, Ten gate, Ten sel, Ten q, Ten k, Ten lse, Ten scale, Ten bias,
                           const AttnDims& a, const RactDims& d) {
    check_ract_dims(a, d, "ract_gate_fwd");
    const size_t nh = size_t(d.B) * d.T * d.H, th = size_t(d.T) * d.H;
    const int slots = ract_sel_slots(d), sel_heads = d.head_average ? 1 : d.H;
    const ProbsInputs in{f32_extent(q, strided_extent(a.B * a.T, a.q_stride, a.Hq * a.Dqk), "ract_gate_fwd q"),
                         f32_extent(k, strided_extent(a.B * a.T, a.k_stride, a.Hkv * a.Dqk), "ract_gate_fwd k"),
                         f32(lse, size_t(a.B) * a.T * a.Hq, "ract_gate_fwd lse")};
    float* st = f32(stat, nh, "ract_gate_fwd stat");
    float* gt = f32(gate, nh, "ract_gate_fwd gate");
    int32_t* sp = slots > 0 ? i32(sel, size_t(d.B) * d.T * sel_heads * slots, "ract_gate_fwd sel") : nullptr;
    const float* sc = f32(scale, d.H, "ract_gate_fwd scale");
    const float* bi = f32(bias, d.H, "ract_gate_fwd bias");
    std::vector<float> P(size_t(d.H) * d.T * d.T);
    for (int b = 0; b < d.B; ++b) {
        batch_probs(P.data(), in, a, b);
        ref::ract_gate_fwd(st + b * th, gt + b * th, P.data(), sc, bi, one_batch(d));
        if (sp) ref::ract_selection(sp + size_t(b) * d.T * sel_heads * slots, P.data(), one_batch(d));
    }
}

void CpuOps::ract_gate_bwd(Ten dq, Ten dk, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse, Ten stat,
                           Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d) {
    (void)sel;   // the reference recomputes the selection from the probabilities
    check_ract_dims(a, d, "ract_gate_bwd");
    const int rows = d.B * d.T;
    const size_t nh = size_t(rows) * d.H, th = size_t(d.T) * d.H;
    GPT_CHECK(dq.present() == dk.present(), "cpu backend: ract_gate_bwd: dq and dk are both present or both absent");
    const bool through = dq.present();
    float* dqp = through ? f32_extent(dq, strided_extent(rows, a.q_stride, a.Hq * a.Dqk), "ract_gate_bwd dq") : nullptr;
    float* dkp = through ? f32_extent(dk, strided_extent(rows, a.k_stride, a.Hkv * a.Dqk), "ract_gate_bwd dk") : nullptr;
    float* ds = f32_optional(dscale, d.H, "ract_gate_bwd dscale");
    float* db = f32_optional(dbias, d.H, "ract_gate_bwd dbias");
    const float* dg = f32(dgate, nh, "ract_gate_bwd dgate");
    const float* st = f32(stat, nh, "ract_gate_bwd stat");
    const float* gt = f32(gate, nh, "ract_gate_bwd gate");
    const float* sc = f32(scale, d.H, "ract_gate_bwd scale");
    if (!through) {
        ref::ract_gate_bwd((float*)nullptr, ds, db, dg, (const float*)nullptr, st, gt, sc, to_ref(d));
        return;
    }
    const ProbsInputs in{f32_extent(q, strided_extent(a.B * a.T, a.q_stride, a.Hq * a.Dqk), "ract_gate_bwd q"),
                         f32_extent(k, strided_extent(a.B * a.T, a.k_stride, a.Hkv * a.Dqk), "ract_gate_bwd k"),
                         f32(lse, size_t(a.B) * a.T * a.Hq, "ract_gate_bwd lse")};
    const size_t pn = size_t(d.H) * d.T * d.T;
    std::vector<float> P(pn), G(pn);
    for (int b = 0; b < d.B; ++b) {
        batch_probs(P.data(), in, a, b);
        std::fill(G.begin(), G.end(), 0.f);
        ref::ract_gate_bwd(G.data(), ds, db, dg + b * th, P.data(), st + b * th, gt + b * th, sc, one_batch(d));
        batch_probs_bwd(dqp, dkp, G.data(), P.data(), in, a, b);
    }
}

namespace {
// P[b, h, i, j] = exp(scale q_i.k_j - lse) for one entry (band honoured), as batch_probs.
float one_prob(const ProbsInputs& in, const AttnDims& d, int b, int h, int i, int j) {
    const float* qr = row_at(in.q, d, b, i, d.q_stride, h);
    const float* kr = row_at(in.k, d, b, j, d.k_stride, h / (d.Hq / d.Hkv));
    float s = 0.f;
    for (int c = 0, n = active_dims(d, i, j); c < n; ++c) s += qr[c] * kr[c];
    return std::exp(d.scale * s - in.lse[(size_t(b) * d.Hq + h) * d.T + i]);
}

bool selection_stat(const RactDims& d) { return d.stat == RactStat::topk || d.stat == RactStat::max; }
}  // namespace

void CpuOps::ract_gate_coef(Ten alpha, Ten beta, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse, Ten stat,
                            Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d) {
    check_ract_dims(a, d, "ract_gate_coef");
    GPT_CHECK(selection_stat(d), "cpu backend: ract_gate_coef: only the selection statistics (topk, max) have the "
                                 "split gradient; use ract_gate_bwd");
    const int rows = d.B * d.T, slots = ract_sel_slots(d), sel_heads = d.head_average ? 1 : d.H;
    const size_t nh = size_t(rows) * d.H;
    const ProbsInputs in{f32_extent(q, strided_extent(rows, a.q_stride, a.Hq * a.Dqk), "ract_gate_coef q"),
                         f32_extent(k, strided_extent(rows, a.k_stride, a.Hkv * a.Dqk), "ract_gate_coef k"),
                         f32(lse, nh, "ract_gate_coef lse")};
    float* al = f32(alpha, nh, "ract_gate_coef alpha");
    float* be = f32(beta, nh, "ract_gate_coef beta");
    float* ds = f32_optional(dscale, d.H, "ract_gate_coef dscale");
    float* db = f32_optional(dbias, d.H, "ract_gate_coef dbias");
    const float* dg = f32(dgate, nh, "ract_gate_coef dgate");
    const float* st = f32(stat, nh, "ract_gate_coef stat");
    const float* gt = f32(gate, nh, "ract_gate_coef gate");
    const float* sc = f32(scale, d.H, "ract_gate_coef scale");
    const int32_t* sp = i32(sel, size_t(rows) * sel_heads * slots, "ract_gate_coef sel");
    for (int n = 0; n < rows; ++n) {
        const int b = n / d.T, i = n % d.T;
        float shared = 0.f;   // head average: every head's statistic is the same, c = sum_h dz_h scale_h
        for (int h = 0; h < d.H; ++h) {
            const size_t o = size_t(n) * d.H + h, r = (size_t(b) * d.H + h) * d.T + i;
            const float z = dg[o] * gt[o] * (1.f - gt[o]);   // dL/d(stat scale + bias)
            if (ds) ds[h] += z * st[o];
            if (db) db[h] += z;
            shared += z * sc[h];
            al[r] = z * sc[h];
            be[r] = al[r] * st[o];
        }
        if (!d.head_average) continue;
        // stat = sum over the selection of the head-mean row: each head's P gets c / H there.
        const int32_t* cols = sp + size_t(n) * slots;
        for (int h = 0; h < d.H; ++h) {
            float m = 0.f;
            for (int s = 0; s < slots; ++s)
                if (cols[s] >= 0) m += one_prob(in, a, b, h, i, cols[s]);
            const size_t r = (size_t(b) * d.H + h) * d.T + i;
            al[r] = shared / float(d.H);
            be[r] = al[r] * m;
        }
    }
}

void CpuOps::ract_select_bwd(Ten dq, Ten dk, Ten alpha, Ten sel, Ten q, Ten k, Ten lse, const AttnDims& a,
                             const RactDims& d) {
    check_ract_dims(a, d, "ract_select_bwd");
    GPT_CHECK(selection_stat(d), "cpu backend: ract_select_bwd: only the selection statistics (topk, max)");
    const int rows = d.B * d.T, slots = ract_sel_slots(d), sel_heads = d.head_average ? 1 : d.H;
    const size_t nh = size_t(rows) * d.H;
    const ProbsInputs in{f32_extent(q, strided_extent(rows, a.q_stride, a.Hq * a.Dqk), "ract_select_bwd q"),
                         f32_extent(k, strided_extent(rows, a.k_stride, a.Hkv * a.Dqk), "ract_select_bwd k"),
                         f32(lse, nh, "ract_select_bwd lse")};
    float* dqp = f32_extent(dq, strided_extent(rows, a.q_stride, a.Hq * a.Dqk), "ract_select_bwd dq");
    float* dkp = f32_extent(dk, strided_extent(rows, a.k_stride, a.Hkv * a.Dqk), "ract_select_bwd dk");
    const float* al = f32(alpha, nh, "ract_select_bwd alpha");
    const int32_t* sp = i32(sel, size_t(rows) * sel_heads * slots, "ract_select_bwd sel");
    const int group = a.Hq / a.Hkv;
    for (int n = 0; n < rows; ++n) {
        const int b = n / d.T, i = n % d.T;
        for (int h = 0; h < d.H; ++h) {
            const int32_t* cols = sp + (size_t(n) * sel_heads + (d.head_average ? 0 : h)) * slots;
            const float c = al[(size_t(b) * d.H + h) * d.T + i];
            const float* qr = row_at(in.q, a, b, i, a.q_stride, h);
            float* dqr = dqp + (size_t(b) * a.T + i) * a.q_stride + size_t(h) * a.Dqk;
            for (int s = 0; s < slots; ++s) {
                const int j = cols[s];
                if (j < 0) continue;
                const float w = a.scale * c * one_prob(in, a, b, h, i, j);
                const size_t ko = (size_t(b) * a.T + j) * a.k_stride + size_t(h / group) * a.Dqk;
                for (int e = 0, m = active_dims(a, i, j); e < m; ++e) {
                    dqr[e] += w * in.k[ko + e];
                    dkp[ko + e] += w * qr[e];
                }
            }
        }
    }
}

void CpuOps::head_gate_fwd(Ten out, Ten ctx, Ten gate, Ten alpha, float alpha_fixed, int N, int H, int Dv) {
    check_positive("head_gate_fwd", {N, H, Dv});
    const size_t n = size_t(N) * H * Dv;
    const float a = alpha.present() ? *f32(alpha, 1, "head_gate_fwd alpha") : alpha_fixed;
    ref::head_gate_fwd(f32(out, n, "head_gate_fwd out"), f32(ctx, n, "head_gate_fwd ctx"),
                       f32(gate, size_t(N) * H, "head_gate_fwd gate"), a, N, H, Dv);
}

void CpuOps::head_gate_bwd(Ten dctx, Ten dgate, Ten dalpha, Ten dout, Ten ctx, Ten gate, Ten alpha,
                           float alpha_fixed, int N, int H, int Dv) {
    check_positive("head_gate_bwd", {N, H, Dv});
    const size_t n = size_t(N) * H * Dv;
    const float a = alpha.present() ? *f32(alpha, 1, "head_gate_bwd alpha") : alpha_fixed;
    float* dc = f32(dctx, n, "head_gate_bwd dctx");
    float* dg = f32_optional(dgate, size_t(N) * H, "head_gate_bwd dgate");
    std::fill_n(dc, n, 0.f);
    if (dg) std::fill_n(dg, size_t(N) * H, 0.f);
    ref::head_gate_bwd(dc, dg, f32_optional(dalpha, 1, "head_gate_bwd dalpha"), f32(dout, n, "head_gate_bwd dout"),
                       f32(ctx, n, "head_gate_bwd ctx"), f32(gate, size_t(N) * H, "head_gate_bwd gate"), a, N, H,
                       Dv);
}

namespace {
ref::EntropyDims entropy_dims(const AttnDims& a, float alpha, const char* what) {
    check_positive(what, {a.B, a.T, a.Hq, a.Dqk, a.Dv});
    GPT_CHECK(a.Hq == a.Hkv && a.band == 0,
              fmt::format("cpu backend: {}: the augmented-value entropy needs one key head per query head and no "
                          "band (Hq {}, Hkv {}, band {})",
                          what, a.Hq, a.Hkv, a.band));
    return {a.B, a.T, a.Hq, a.Dqk, a.Dv, a.q_stride, a.scale, alpha};
}
}  // namespace

void CpuOps::ract_entropy_fwd(Ten y, Ten stat, Ten gate, Ten out2, Ten q, Ten lse, Ten scale, Ten bias, float alpha,
                              const AttnDims& a) {
    const ref::EntropyDims d = entropy_dims(a, alpha, "ract_entropy_fwd");
    const size_t rows = size_t(a.B) * a.T, nh = rows * a.Hq;
    ref::ract_entropy_fwd(f32(y, nh * a.Dv, "ract_entropy_fwd y"), f32(stat, nh, "ract_entropy_fwd stat"),
                          f32(gate, nh, "ract_entropy_fwd gate"),
                          f32(out2, nh * (a.Dv + a.Dqk), "ract_entropy_fwd out2"),
                          f32_extent(q, strided_extent(int(rows), a.q_stride, a.Hq * a.Dqk), "ract_entropy_fwd q"),
                          f32(lse, nh, "ract_entropy_fwd lse"), f32(scale, a.Hq, "ract_entropy_fwd scale"),
                          f32(bias, a.Hq, "ract_entropy_fwd bias"), d);
}

void CpuOps::ract_entropy_bwd(Ten dout2, Ten dscale, Ten dbias, Ten dy, Ten out2, Ten q, Ten stat, Ten gate,
                              Ten scale, float alpha, bool detach, const AttnDims& a) {
    const ref::EntropyDims d = entropy_dims(a, alpha, "ract_entropy_bwd");
    const size_t rows = size_t(a.B) * a.T, nh = rows * a.Hq, n2 = nh * (a.Dv + a.Dqk);
    ref::ract_entropy_bwd(f32(dout2, n2, "ract_entropy_bwd dout2"),
                          f32_optional(dscale, a.Hq, "ract_entropy_bwd dscale"),
                          f32_optional(dbias, a.Hq, "ract_entropy_bwd dbias"), f32(dy, nh * a.Dv, "ract_entropy_bwd dy"),
                          f32(out2, n2, "ract_entropy_bwd out2"),
                          f32_extent(q, strided_extent(int(rows), a.q_stride, a.Hq * a.Dqk), "ract_entropy_bwd q"),
                          f32(stat, nh, "ract_entropy_bwd stat"), f32(gate, nh, "ract_entropy_bwd gate"),
                          f32(scale, a.Hq, "ract_entropy_bwd scale"), detach, d);
}

void CpuOps::copy_heads(Ten dst, Ten src, const HeadCopyDims& d) {
    check_positive("copy_heads", {d.N, d.H, d.width});
    float* o = f32_extent(dst, strided_extent(d.N, d.dst_stride, (d.H - 1) * d.dst_head_stride + d.width),
                          "copy_heads dst");
    const float* x = f32_extent(src, strided_extent(d.N, d.src_stride, (d.H - 1) * d.src_head_stride + d.width),
                                "copy_heads src");
    for (int n = 0; n < d.N; ++n)
        for (int h = 0; h < d.H; ++h)
            std::copy_n(x + size_t(n) * d.src_stride + size_t(h) * d.src_head_stride, d.width,
                        o + size_t(n) * d.dst_stride + size_t(h) * d.dst_head_stride);
}

// ---- M1 / M2 helpers -----------------------------------------------------------------------------

void CpuOps::sigmoid_fwd(Ten out, Ten in, size_t n) {
    float* o = f32(out, n, "sigmoid_fwd out");
    const float* x = f32(in, n, "sigmoid_fwd in");
    for (size_t e = 0; e < n; ++e) o[e] = 1.f / (1.f + std::exp(-x[e]));
}

void CpuOps::sigmoid_bwd(Ten din, Ten out, Ten dout, size_t n) {
    float* dx = f32(din, n, "sigmoid_bwd din");
    const float* y = f32(out, n, "sigmoid_bwd out");
    const float* dy = f32(dout, n, "sigmoid_bwd dout");
    for (size_t e = 0; e < n; ++e) dx[e] = y[e] * (1.f - y[e]) * dy[e];
}

void CpuOps::topk_rows(Ten idx, Ten wts, Ten q, Ten k, Ten lse, const AttnDims& a, int topk) {
    check_probs_dims(a, "topk_rows");
    check_positive("topk_rows", {topk});
    const size_t tk = size_t(a.T) * topk;
    const ProbsInputs in{f32_extent(q, strided_extent(a.B * a.T, a.q_stride, a.Hq * a.Dqk), "topk_rows q"),
                         f32_extent(k, strided_extent(a.B * a.T, a.k_stride, a.Hkv * a.Dqk), "topk_rows k"),
                         f32(lse, size_t(a.B) * a.T * a.Hq, "topk_rows lse")};
    int32_t* ip = i32(idx, a.B * tk, "topk_rows idx");
    float* wp = f32(wts, a.B * tk, "topk_rows wts");
    std::vector<float> P(size_t(a.Hq) * a.T * a.T);
    for (int b = 0; b < a.B; ++b) {
        batch_probs(P.data(), in, a, b);
        ref::m2_sparse_rows(ip + b * tk, wp + b * tk, P.data(), 1, a.Hq, a.T, topk);
        for (size_t e = b * tk; e < (b + 1) * tk; ++e)   // rows of batch row b are b*T + j
            if (ip[e] >= 0) ip[e] += b * a.T;
    }
}

void CpuOps::sparse_mix_fwd(Ten agg, Ten z, Ten idx, Ten wts, int N, int r, int k) {
    check_positive("sparse_mix_fwd", {N, r, k});
    float* a = f32(agg, size_t(N) * r, "sparse_mix_fwd agg");
    const float* zp = f32(z, size_t(N) * r, "sparse_mix_fwd z");
    const int32_t* ip = i32(idx, size_t(N) * k, "sparse_mix_fwd idx");
    const float* wp = f32(wts, size_t(N) * k, "sparse_mix_fwd wts");
    check_indices(ip, size_t(N) * k, N, "sparse_mix_fwd");
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; ++n) {
        float* out = a + size_t(n) * r;
        std::fill_n(out, r, 0.f);
        for (int t = 0; t < k; ++t) {
            const int src = ip[size_t(n) * k + t];
            if (src < 0) continue;
            const float w = wp[size_t(n) * k + t];
            for (int c = 0; c < r; ++c) out[c] += w * zp[size_t(src) * r + c];
        }
    }
}

void CpuOps::sparse_mix_bwd(Ten dz, Ten dagg, Ten idx, Ten wts, int N, int r, int k) {
    check_positive("sparse_mix_bwd", {N, r, k});
    float* dzp = f32(dz, size_t(N) * r, "sparse_mix_bwd dz");
    const float* da = f32(dagg, size_t(N) * r, "sparse_mix_bwd dagg");
    const int32_t* ip = i32(idx, size_t(N) * k, "sparse_mix_bwd idx");
    const float* wp = f32(wts, size_t(N) * k, "sparse_mix_bwd wts");
    check_indices(ip, size_t(N) * k, N, "sparse_mix_bwd");
    std::fill_n(dzp, size_t(N) * r, 0.f);
    for (int n = 0; n < N; ++n)   // serial scatter: deterministic
        for (int t = 0; t < k; ++t) {
            const int src = ip[size_t(n) * k + t];
            if (src < 0) continue;
            const float w = wp[size_t(n) * k + t];
            for (int c = 0; c < r; ++c) dzp[size_t(src) * r + c] += w * da[size_t(n) * r + c];
        }
}

void CpuOps::add_scaled_fwd(Ten out, Ten a, Ten b, Ten alpha, size_t n) {
    float* o = f32(out, n, "add_scaled_fwd out");
    const float* ap = a.present() ? f32(a, n, "add_scaled_fwd a") : nullptr;
    const float* bp = f32(b, n, "add_scaled_fwd b");
    const float s = *f32(alpha, 1, "add_scaled_fwd alpha");
    for (size_t e = 0; e < n; ++e) o[e] = (ap ? ap[e] : 0.f) + s * bp[e];
}

void CpuOps::add_scaled_bwd(Ten db, Ten dalpha, Ten dout, Ten b, Ten alpha, size_t n) {
    const float* dy = f32(dout, n, "add_scaled_bwd dout");
    const float s = *f32(alpha, 1, "add_scaled_bwd alpha");
    if (db.present()) {
        float* d = f32(db, n, "add_scaled_bwd db");
        for (size_t e = 0; e < n; ++e) d[e] = s * dy[e];
    }
    if (dalpha.present()) {
        const float* bp = f32(b, n, "add_scaled_bwd b");
        double acc = 0;
        for (size_t e = 0; e < n; ++e) acc += double(dy[e]) * bp[e];
        *f32(dalpha, 1, "add_scaled_bwd dalpha") += float(acc);
    }
}

// ---- discoverability channel ---------------------------------------------------------------------

namespace {
void check_disc(const DiscChannelDims& d) {
    check_positive("disc_channel", {d.N, d.H, d.D, d.W});
    GPT_CHECK(d.split >= 0 && d.split <= d.W && d.scale > 0.f && d.k_stride >= d.H * d.D && d.pad >= 0,
              fmt::format("cpu backend: disc_channel: split {} must lie in [0, W = {}], scale {} must be > 0, "
                          "k_stride {} must cover the heads and pad {} must be >= 0",
                          d.split, d.W, d.scale, d.k_stride, d.pad));
}
}  // namespace

void CpuOps::disc_channel_fwd(Ten qt_out, Ten kt_out, Ten qt, Ten kt, Ten k, Ten u, Ten g_disc,
                              const DiscChannelDims& d) {
    check_disc(d);
    const size_t rows = size_t(d.N) * d.H, W = d.W, Wo = d.out_width(), tail = d.split + 1 + d.pad;
    float* qo = f32(qt_out, rows * Wo, "disc_channel_fwd qt_out");
    float* ko = f32(kt_out, rows * Wo, "disc_channel_fwd kt_out");
    const float* qi = f32(qt, rows * W, "disc_channel_fwd qt");
    const float* ki = f32(kt, rows * W, "disc_channel_fwd kt");
    std::vector<float> bias(rows, 0.f);
    ref::disc_bias_fwd(bias.data(), f32_extent(k, strided_extent(d.N, d.k_stride, d.H * d.D), "disc_channel_fwd k"),
                       f32(u, size_t(d.H) * d.D, "disc_channel_fwd u"), f32(g_disc, d.H, "disc_channel_fwd g_disc"),
                       d.N, d.H, d.D, d.k_stride);
    for (size_t r = 0; r < rows; ++r) {
        const float *q = qi + r * W, *kk = ki + r * W;
        float *qd = qo + r * Wo, *kd = ko + r * Wo;
        std::copy(q, q + d.split, qd);
        std::copy(kk, kk + d.split, kd);
        qd[d.split] = 1.f;
        kd[d.split] = bias[r] / d.scale;
        std::fill(qd + d.split + 1, qd + tail, 0.f);
        std::fill(kd + d.split + 1, kd + tail, 0.f);
        std::copy(q + d.split, q + W, qd + tail);
        std::copy(kk + d.split, kk + W, kd + tail);
    }
}

void CpuOps::disc_channel_bwd(Ten dqt, Ten dkt, Ten dk, Ten du, Ten dg_disc, Ten dqt_out, Ten dkt_out, Ten k,
                              Ten u, Ten g_disc, const DiscChannelDims& d) {
    check_disc(d);
    const size_t rows = size_t(d.N) * d.H, W = d.W, Wo = d.out_width(), tail = d.split + 1 + d.pad;
    const float* gq = f32(dqt_out, rows * Wo, "disc_channel_bwd dqt_out");
    const float* gk = f32(dkt_out, rows * Wo, "disc_channel_bwd dkt_out");
    float* dq = f32_optional(dqt, rows * W, "disc_channel_bwd dqt");
    float* dkk = f32_optional(dkt, rows * W, "disc_channel_bwd dkt");
    for (size_t r = 0; r < rows; ++r) {   // drop the channel and its pad (qt's constant 1 has no gradient)
        const float *q = gq + r * Wo, *kk = gk + r * Wo;
        if (dq) {
            std::copy(q, q + d.split, dq + r * W);
            std::copy(q + tail, q + Wo, dq + r * W + d.split);
        }
        if (dkk) {
            std::copy(kk, kk + d.split, dkk + r * W);
            std::copy(kk + tail, kk + Wo, dkk + r * W + d.split);
        }
    }
    if (!dk.present() && !du.present() && !dg_disc.present()) return;
    std::vector<float> dbias(rows);
    for (size_t r = 0; r < rows; ++r) dbias[r] = gk[r * Wo + d.split] / d.scale;
    const size_t k_ext = strided_extent(d.N, d.k_stride, d.H * d.D);
    ref::disc_bias_bwd(dk.present() ? f32_extent(dk, k_ext, "disc_channel_bwd dk") : nullptr,
                       f32_optional(du, size_t(d.H) * d.D, "disc_channel_bwd du"),
                       f32_optional(dg_disc, d.H, "disc_channel_bwd dg_disc"), dbias.data(),
                       f32_extent(k, k_ext, "disc_channel_bwd k"), f32(u, size_t(d.H) * d.D, "disc_channel_bwd u"),
                       f32(g_disc, d.H, "disc_channel_bwd g_disc"), d.N, d.H, d.D, d.k_stride);
}

}  // namespace gpt
