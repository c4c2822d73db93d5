// Reciprocal-attention fold (SPEC §2.2, ops.h RaFoldDims): q̃ = [√g_std q, √g_rec k] and
// k̃ = [√g_std k, √g_rec q] of width 2D, materialised in Act so the flash kernel runs RA as plain
// attention with Dqk = 2D. Backward: one warp per token row; the gates' gradients are per-(row,
// head) contributions summed over rows in a fixed order (rows_sum_add).
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__global__ void ra_fold_fwd_kernel(bf16* qt, bf16* kt, const bf16* q, const bf16* k, const float* gs,
                                   const float* gr, RaFoldDims d) {
    const size_t total = size_t(d.N) * d.H * d.D;
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
        const int c = int(e % d.D);
        const int h = int((e / d.D) % d.H);
        const size_t n = e / (size_t(d.D) * d.H);
        const int gi = d.n_gates == 1 ? 0 : h;
        const float ss = sqrt_gate(gate_value(gs, gi, d.g_std_fixed));
        const float sr = sqrt_gate(gate_value(gr, gi, d.g_rec_fixed));
        const float qv = __bfloat162float(q[n * d.q_stride + size_t(h) * d.D + c]);
        const float kv = __bfloat162float(k[n * d.k_stride + size_t(d.Hk == 1 ? 0 : h) * d.D + c]);
        const size_t o = (n * d.H + h) * 2 * d.D;
        qt[o + c] = __float2bfloat16(ss * qv);
        qt[o + d.D + c] = __float2bfloat16(sr * kv);
        kt[o + c] = __float2bfloat16(ss * kv);
        kt[o + d.D + c] = __float2bfloat16(sr * qv);
    }
}

// One warp per token row n. cs/cr (null = no gradient): [N, H] gate-gradient contributions.
__global__ void ra_fold_bwd_kernel(bf16* dq, bf16* dk, float* cs, float* cr, const bf16* dqt, const bf16* dkt,
                                   const bf16* q, const bf16* k, const float* gs, const float* gr, RaFoldDims d) {
    const int n = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (n >= d.N) return;
    const int D = d.D;
    for (int h = 0; h < d.H; ++h) {
        const int gi = d.n_gates == 1 ? 0 : h;
        const float gsv = gate_value(gs, gi, d.g_std_fixed), grv = gate_value(gr, gi, d.g_rec_fixed);
        const float ss = sqrt_gate(gsv), sr = sqrt_gate(grv);
        const size_t qo = size_t(n) * d.q_stride + size_t(h) * D;
        const size_t ko = size_t(n) * d.k_stride + size_t(d.Hk == 1 ? 0 : h) * D;
        const size_t to = (size_t(n) * d.H + h) * 2 * D;
        float dss = 0.f, dsr = 0.f;
        for (int c = lane; c < D; c += 32) {
            const float gq0 = __bfloat162float(dqt[to + c]), gq1 = __bfloat162float(dqt[to + D + c]);
            const float gk0 = __bfloat162float(dkt[to + c]), gk1 = __bfloat162float(dkt[to + D + c]);
            const float qv = __bfloat162float(q[qo + c]), kv = __bfloat162float(k[ko + c]);
            dq[qo + c] = __float2bfloat16(ss * gq0 + sr * gk1);
            if (d.Hk != 1) dk[ko + c] = __float2bfloat16(ss * gk0 + sr * gq1);
            dss += gq0 * qv + gk0 * kv;
            dsr += gq1 * kv + gk1 * qv;
        }
        dss = warp_sum(dss);
        dsr = warp_sum(dsr);
        if (lane == 0) {
            if (cs) cs[size_t(n) * d.H + h] = dss * dsqrt_gate(gsv);
            if (cr) cr[size_t(n) * d.H + h] = dsr * dsqrt_gate(grv);
        }
    }
    if (d.Hk != 1) return;
    // Shared key (RA+MLA's k_lat): its gradient sums over the heads, in head order.
    for (int c = lane; c < D; c += 32) {
        float acc = 0.f;
        for (int h = 0; h < d.H; ++h) {
            const int gi = d.n_gates == 1 ? 0 : h;
            const float ss = sqrt_gate(gate_value(gs, gi, d.g_std_fixed));
            const float sr = sqrt_gate(gate_value(gr, gi, d.g_rec_fixed));
            const size_t to = (size_t(n) * d.H + h) * 2 * D;
            acc += ss * __bfloat162float(dkt[to + c]) + sr * __bfloat162float(dqt[to + D + c]);
        }
        dk[size_t(n) * d.k_stride + c] = __float2bfloat16(acc);
    }
}

void check_fold(const RaFoldDims& d, const char* op) {
    variant::check_positive(op, {d.N, d.H, d.Hk, d.D});
    variant::check_gate_count(d.n_gates, d.H, op);
    GPT_CHECK((d.Hk == d.H || d.Hk == 1) && d.q_stride >= d.H * d.D && d.k_stride >= d.Hk * d.D,
              std::string("cuda-bf16 ") + op + ": Hk must be H or 1 and q_stride/k_stride must cover the heads");
}

}  // namespace

namespace variant {

void ra_fold_fwd(const VariantEnv& e, Ten qt, Ten kt, Ten q, Ten k, Ten g_std, Ten g_rec, const RaFoldDims& d) {
    const char* op = "ra_fold_fwd";
    check_fold(d, op);
    const size_t nt = size_t(d.N) * d.H * 2 * d.D;
    ra_fold_fwd_kernel<<<elementwise_blocks(nt / 2, kThreads), kThreads, 0, e.stream>>>(
        act(e, qt, nt, op, "qt"), act(e, kt, nt, op, "kt"),
        act(e, q, strided_extent(d.N, d.q_stride, d.H * d.D), op, "q"),
        act(e, k, strided_extent(d.N, d.k_stride, d.Hk * d.D), op, "k"), f32_opt(e, g_std, d.n_gates, op, "g_std"),
        f32_opt(e, g_rec, d.n_gates, op, "g_rec"), d);
    GPT_CUDA_LAUNCHED("ra_fold_fwd_kernel");
}

void ra_fold_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k,
                 Ten g_std, Ten g_rec, const RaFoldDims& d) {
    const char* op = "ra_fold_bwd";
    check_fold(d, op);
    const size_t nt = size_t(d.N) * d.H * 2 * d.D;
    const size_t q_ext = strided_extent(d.N, d.q_stride, d.H * d.D);
    const size_t k_ext = strided_extent(d.N, d.k_stride, d.Hk * d.D);
    float* dgs = f32_opt(e, dg_std, d.n_gates, op, "dg_std");
    float* dgr = f32_opt(e, dg_rec, d.n_gates, op, "dg_rec");
    // Per-gate sums: [N, H] contributions reduced over N (per-head gates) or over N*H (one gate).
    const int rows = d.n_gates == 1 ? d.N * d.H : d.N, width = d.n_gates == 1 ? 1 : d.H;
    ScratchPlan sp;
    const size_t o_cs = sp.add(size_t(d.N) * d.H), o_cr = sp.add(size_t(d.N) * d.H),
                 o_part = sp.add(colsum_scratch(rows, width));
    float* scratch = (dgs || dgr) ? sp.take(e) : nullptr;
    float* cs = dgs ? scratch + o_cs : nullptr;
    float* cr = dgr ? scratch + o_cr : nullptr;
    ra_fold_bwd_kernel<<<(d.N + kWarps - 1) / kWarps, kThreads, 0, e.stream>>>(
        act(e, dq, q_ext, op, "dq"), act(e, dk, k_ext, op, "dk"), cs, cr, act(e, dqt, nt, op, "dqt"),
        act(e, dkt, nt, op, "dkt"), act(e, q, q_ext, op, "q"), act(e, k, k_ext, op, "k"),
        f32_opt(e, g_std, d.n_gates, op, "g_std"), f32_opt(e, g_rec, d.n_gates, op, "g_rec"), d);
    GPT_CUDA_LAUNCHED("ra_fold_bwd_kernel");
    if (cs) rows_sum_add(dgs, cs, rows, width, scratch + o_part, e.stream);
    if (cr) rows_sum_add(dgr, cr, rows, width, scratch + o_part, e.stream);
}

}  // namespace variant
}  // namespace gpt::cuda
