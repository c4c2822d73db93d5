// Same-FLOP low-rank RA (SPEC §2.2, ops.h RaLowRankDims): q̃ = [√g_std q[:D-R], √g_rec (k W)],
// k̃ = [√g_std k[:D-R], √g_rec (q W)], width D. One warp per (token, head) row; W [D,R] is read in
// fp32 (Param). dW sums over all rows through per-block partials and a fixed-order reduce.
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kDwRows = 128;   // (token, head) rows per block of the dW partial kernel
constexpr int kDwTile = 16;    // rows staged in shared memory at a time

struct RowPtrs {
    size_t qo, ko;
};
__device__ __forceinline__ RowPtrs row_ptrs(const RaLowRankDims& d, int nh) {
    const int n = nh / d.H, h = nh % d.H;
    return {size_t(n) * d.q_stride + size_t(h) * d.D, size_t(n) * d.k_stride + size_t(h) * d.D};
}

// One warp per (token, head) row; lane l holds channels l, l+32, l+64, l+96 (D <= kMaxD) in
// registers, so every load is coalesced and each low-rank product is one warp reduction. (The
// first version looped over the D channels inside R lanes: ~6x its memory floor on the H100.)
constexpr int kMaxD = 128;
constexpr int kSlots = kMaxD / 32;

__device__ __forceinline__ float slot_value(const float (&v)[kSlots], int slot) {
    float x = v[0];   // a uniform slot index selects a register without local memory
#pragma unroll
    for (int i = 1; i < kSlots; ++i) x = slot == i ? v[i] : x;
    return x;
}

__global__ void lowrank_fwd_kernel(bf16* qt, bf16* kt, const bf16* q, const bf16* k, const float* W,
                                   const float* gs, const float* gr, RaLowRankDims d) {
    const int nh = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (nh >= d.N * d.H) return;
    const int gi = d.n_gates == 1 ? 0 : nh % d.H, keep = d.D - d.R;
    const float ss = sqrt_gate(gate_value(gs, gi, d.g_std_fixed));
    const float sr = sqrt_gate(gate_value(gr, gi, d.g_rec_fixed));
    const RowPtrs p = row_ptrs(d, nh);
    bf16* qo = qt + size_t(nh) * d.D;
    bf16* ko = kt + size_t(nh) * d.D;
    float qv[kSlots], kv[kSlots];
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
        const int c = lane + 32 * i;
        qv[i] = c < d.D ? __bfloat162float(q[p.qo + c]) : 0.f;
        kv[i] = c < d.D ? __bfloat162float(k[p.ko + c]) : 0.f;
        if (c < keep) {
            qo[c] = __float2bfloat16(ss * qv[i]);
            ko[c] = __float2bfloat16(ss * kv[i]);
        }
    }
    for (int r = 0; r < d.R; ++r) {
        float kw = 0.f, qw = 0.f;
#pragma unroll
        for (int i = 0; i < kSlots; ++i) {
            const int c = lane + 32 * i;
            const float w = c < d.D ? W[size_t(c) * d.R + r] : 0.f;
            kw += kv[i] * w;
            qw += qv[i] * w;
        }
        kw = warp_sum(kw);
        qw = warp_sum(qw);
        if (lane == ((keep + r) & 31)) {
            qo[keep + r] = __float2bfloat16(sr * kw);
            ko[keep + r] = __float2bfloat16(sr * qw);
        }
    }
}

// dq, dk (overwritten) and the gates' per-row contributions cs/cr [N*H] (null = skip).
// With A = W gq[keep:] and Bq = W gk[keep:]: dk = sr A (+ ss gk[:keep]), dq = sr Bq (+ ss gq[:keep]),
// and d(sr) = k.A + q.Bq (= sum_r gq[keep+r] (kW)_r + gk[keep+r] (qW)_r). Same lane layout as the
// forward; gq[keep + r] reaches every lane by a shuffle from the lane that holds it.
__global__ void lowrank_bwd_kernel(bf16* dq, bf16* dk, float* cs, float* cr, const bf16* dqt, const bf16* dkt,
                                   const bf16* q, const bf16* k, const float* W, const float* gs, const float* gr,
                                   RaLowRankDims d) {
    const int nh = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (nh >= d.N * d.H) return;
    const int gi = d.n_gates == 1 ? 0 : nh % d.H, keep = d.D - d.R;
    const float gsv = gate_value(gs, gi, d.g_std_fixed), grv = gate_value(gr, gi, d.g_rec_fixed);
    const float ss = sqrt_gate(gsv), sr = sqrt_gate(grv);
    const RowPtrs p = row_ptrs(d, nh);
    const bf16* gq = dqt + size_t(nh) * d.D;
    const bf16* gk = dkt + size_t(nh) * d.D;
    float gqv[kSlots], gkv[kSlots], A[kSlots], Bq[kSlots];
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
        const int c = lane + 32 * i;
        gqv[i] = c < d.D ? __bfloat162float(gq[c]) : 0.f;
        gkv[i] = c < d.D ? __bfloat162float(gk[c]) : 0.f;
        A[i] = Bq[i] = 0.f;
    }
    for (int r = 0; r < d.R; ++r) {
        const int src = keep + r;
        const float g1 = __shfl_sync(0xffffffffu, slot_value(gqv, src >> 5), src & 31);
        const float g2 = __shfl_sync(0xffffffffu, slot_value(gkv, src >> 5), src & 31);
#pragma unroll
        for (int i = 0; i < kSlots; ++i) {
            const int c = lane + 32 * i;
            const float w = c < d.D ? W[size_t(c) * d.R + r] : 0.f;
            A[i] += w * g1;
            Bq[i] += w * g2;
        }
    }
    float dss = 0.f, dsr = 0.f;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
        const int c = lane + 32 * i;
        if (c >= d.D) continue;
        const float qv = __bfloat162float(q[p.qo + c]), kv = __bfloat162float(k[p.ko + c]);
        float dqv = sr * Bq[i], dkv = sr * A[i];
        if (c < keep) {
            dqv += ss * gqv[i];
            dkv += ss * gkv[i];
            dss += gqv[i] * qv + gkv[i] * kv;
        }
        dsr += kv * A[i] + qv * Bq[i];
        dq[p.qo + c] = __float2bfloat16(dqv);
        dk[p.ko + c] = __float2bfloat16(dkv);
    }
    dss = warp_sum(dss);
    dsr = warp_sum(dsr);
    if (lane == 0) {
        if (cs) cs[nh] = dss * dsqrt_gate(gsv);
        if (cr) cr[nh] = dsr * dsqrt_gate(grv);
    }
}

// partial[block][c*R + r] = sum over the block's rows of sr (k[c] gq[keep+r] + q[c] gk[keep+r]).
// Each thread owns a fixed set of outputs: no races, a fixed order.
__global__ void lowrank_dw_partial_kernel(float* partial, const bf16* dqt, const bf16* dkt, const bf16* q,
                                          const bf16* k, const float* gr, RaLowRankDims d) {
    extern __shared__ float tile[];   // [kDwTile][D] k, [kDwTile][D] q, [kDwTile][R] sr gq, sr gk
    float* sk = tile;
    float* sq = sk + kDwTile * d.D;
    float* sgq = sq + kDwTile * d.D;
    float* sgk = sgq + kDwTile * d.R;
    const int rows = d.N * d.H, keep = d.D - d.R, DR = d.D * d.R;
    const int r0 = blockIdx.x * kDwRows, r1 = min(rows, r0 + kDwRows);
    float* out = partial + size_t(blockIdx.x) * DR;
    for (int o = threadIdx.x; o < DR; o += blockDim.x) out[o] = 0.f;
    for (int t0 = r0; t0 < r1; t0 += kDwTile) {
        const int nt = min(kDwTile, r1 - t0);
        __syncthreads();   // the previous tile is consumed
        for (int i = threadIdx.x; i < nt * d.D; i += blockDim.x) {
            const int rr = i / d.D, c = i % d.D;
            const RowPtrs p = row_ptrs(d, t0 + rr);
            sk[rr * d.D + c] = __bfloat162float(k[p.ko + c]);
            sq[rr * d.D + c] = __bfloat162float(q[p.qo + c]);
        }
        for (int i = threadIdx.x; i < nt * d.R; i += blockDim.x) {
            const int rr = i / d.R, r = i % d.R, nh = t0 + rr;
            const float sr = sqrt_gate(gate_value(gr, d.n_gates == 1 ? 0 : nh % d.H, d.g_rec_fixed));
            sgq[rr * d.R + r] = sr * __bfloat162float(dqt[size_t(nh) * d.D + keep + r]);
            sgk[rr * d.R + r] = sr * __bfloat162float(dkt[size_t(nh) * d.D + keep + r]);
        }
        __syncthreads();
        for (int o = threadIdx.x; o < DR; o += blockDim.x) {
            const int c = o / d.R, r = o % d.R;
            float acc = 0.f;
            for (int rr = 0; rr < nt; ++rr)
                acc += sk[rr * d.D + c] * sgq[rr * d.R + r] + sq[rr * d.D + c] * sgk[rr * d.R + r];
            out[o] += acc;
        }
    }
}

void check_lowrank(const RaLowRankDims& d, const char* op) {
    variant::check_positive(op, {d.N, d.H, d.D, d.R});
    variant::check_gate_count(d.n_gates, d.H, op);
    GPT_CHECK(d.D <= kMaxD, std::string("cuda-bf16 ") + op + ": head dim " + std::to_string(d.D) + " above " +
                                std::to_string(kMaxD) + " (the row kernels keep a row in one warp's registers)");
    GPT_CHECK(d.R < d.D && d.q_stride >= d.H * d.D && d.k_stride >= d.H * d.D,
              std::string("cuda-bf16 ") + op + ": rank R = " + std::to_string(d.R) + " must be below the head dim " +
                  std::to_string(d.D) + " (ra.rank), and q_stride/k_stride must cover the heads");
}

}  // namespace

namespace variant {

void ra_lowrank_fwd(const VariantEnv& e, Ten qt, Ten kt, Ten q, Ten k, Ten W, Ten g_std, Ten g_rec,
                    const RaLowRankDims& d) {
    const char* op = "ra_lowrank_fwd";
    check_lowrank(d, op);
    const size_t nt = size_t(d.N) * d.H * d.D;
    const int rows = d.N * d.H;
    lowrank_fwd_kernel<<<(rows + kWarps - 1) / kWarps, kThreads, 0, e.stream>>>(
        act(e, qt, nt, op, "qt"), act(e, kt, nt, op, "kt"),
        act(e, q, strided_extent(d.N, d.q_stride, d.H * d.D), op, "q"),
        act(e, k, strided_extent(d.N, d.k_stride, d.H * d.D), op, "k"), f32(e, W, size_t(d.D) * d.R, op, "W"),
        f32_opt(e, g_std, d.n_gates, op, "g_std"), f32_opt(e, g_rec, d.n_gates, op, "g_rec"), d);
    GPT_CUDA_LAUNCHED("lowrank_fwd_kernel");
}

void ra_lowrank_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten dW, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q,
                    Ten k, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) {
    const char* op = "ra_lowrank_bwd";
    check_lowrank(d, op);
    const size_t nt = size_t(d.N) * d.H * d.D;
    const size_t q_ext = strided_extent(d.N, d.q_stride, d.H * d.D);
    const size_t k_ext = strided_extent(d.N, d.k_stride, d.H * d.D);
    const int rows = d.N * d.H, DR = d.D * d.R, blocks = (rows + kDwRows - 1) / kDwRows;
    float* dgs = f32_opt(e, dg_std, d.n_gates, op, "dg_std");
    float* dgr = f32_opt(e, dg_rec, d.n_gates, op, "dg_rec");
    float* dw = f32_opt(e, dW, size_t(DR), op, "dW");
    const int g_rows = d.n_gates == 1 ? rows : d.N, g_width = d.n_gates == 1 ? 1 : d.H;
    ScratchPlan sp;
    const size_t o_cs = sp.add(size_t(rows)), o_cr = sp.add(size_t(rows)),
                 o_gpart = sp.add(colsum_scratch(g_rows, g_width)), o_wpart = sp.add(size_t(blocks) * DR),
                 o_wsum = sp.add(colsum_scratch(blocks, DR));
    float* scratch = sp.take(e);
    const bf16* qp = act(e, q, q_ext, op, "q");
    const bf16* kp = act(e, k, k_ext, op, "k");
    const bf16* gq = act(e, dqt, nt, op, "dqt");
    const bf16* gk = act(e, dkt, nt, op, "dkt");
    const float* Wp = f32(e, W, size_t(DR), op, "W");
    const float* gsp = f32_opt(e, g_std, d.n_gates, op, "g_std");
    const float* grp = f32_opt(e, g_rec, d.n_gates, op, "g_rec");
    lowrank_bwd_kernel<<<(rows + kWarps - 1) / kWarps, kThreads, 0, e.stream>>>(
        act(e, dq, q_ext, op, "dq"), act(e, dk, k_ext, op, "dk"), dgs ? scratch + o_cs : nullptr,
        dgr ? scratch + o_cr : nullptr, gq, gk, qp, kp, Wp, gsp, grp, d);
    GPT_CUDA_LAUNCHED("lowrank_bwd_kernel");
    if (dgs) rows_sum_add(dgs, scratch + o_cs, g_rows, g_width, scratch + o_gpart, e.stream);
    if (dgr) rows_sum_add(dgr, scratch + o_cr, g_rows, g_width, scratch + o_gpart, e.stream);
    if (!dw) return;
    const size_t smem = size_t(kDwTile) * (2 * d.D + 2 * d.R) * sizeof(float);
    GPT_CHECK(smem <= 48 * 1024, std::string("cuda-bf16 ") + op + ": head dim " + std::to_string(d.D) +
                                     " too large for the dW tile (at most 48 KiB of shared memory)");
    lowrank_dw_partial_kernel<<<blocks, kThreads, smem, e.stream>>>(scratch + o_wpart, gq, gk, qp, kp, grp, d);
    GPT_CUDA_LAUNCHED("lowrank_dw_partial_kernel");
    rows_sum_add(dw, scratch + o_wpart, blocks, DR, scratch + o_wsum, e.stream);
}

}  // namespace variant
}  // namespace gpt::cuda
