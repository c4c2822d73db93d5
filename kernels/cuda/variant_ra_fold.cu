// Reciprocal-attention fold (SPEC §2.2, ops.h RaFoldDims): q̃ = [g_std q, k] and k̃ = [k, g_rec q]
// of width 2D (g = max(g, 1e-8): the logits of SPEC's sqrt(g) on both sides), materialised in Act so
// the flash kernel runs RA as plain attention with Dqk = 2D. Backward: the gate gradients need only q
// (g_std scales q̃[:D], g_rec k̃[D:]), summed over rows in a fixed order.
// Both directions are memory-bound passes: the fast path moves 8 channels (16 bytes) per load and
// store (D and the strides multiples of 8, 16-byte aligned rows); the scalar kernels cover the rest.
#include <algorithm>

#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"
#include "cuda/vec8.cuh"

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
        const float fs = floored_gate(gate_value(gs, gi, d.g_std_fixed));
        const float fr = floored_gate(gate_value(gr, gi, d.g_rec_fixed));
        const float qv = __bfloat162float(q[n * d.q_stride + size_t(h) * d.D + c]);
        const bf16 kv = k[n * d.k_stride + size_t(d.Hk == 1 ? 0 : h) * d.D + c];
        const size_t o = (n * d.H + h) * 2 * d.D;
        qt[o + c] = __float2bfloat16(fs * qv);
        qt[o + d.D + c] = kv;
        kt[o + c] = kv;
        kt[o + d.D + c] = __float2bfloat16(fr * qv);
    }
}

// One warp per token row n. cs/cr (null = no gradient): [N, H] gate-gradient contributions.
__global__ void ra_fold_bwd_kernel(bf16* dq, bf16* dk, float* cs, float* cr, const bf16* dqt, const bf16* dkt,
                                   const bf16* q, const float* gs, const float* gr, RaFoldDims d) {
    const int n = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (n >= d.N) return;
    const int D = d.D;
    for (int h = 0; h < d.H; ++h) {
        const int gi = d.n_gates == 1 ? 0 : h;
        const float gsv = gate_value(gs, gi, d.g_std_fixed), grv = gate_value(gr, gi, d.g_rec_fixed);
        const float fs = floored_gate(gsv), fr = floored_gate(grv);
        const size_t qo = size_t(n) * d.q_stride + size_t(h) * D;
        const size_t ko = size_t(n) * d.k_stride + size_t(d.Hk == 1 ? 0 : h) * D;
        const size_t to = (size_t(n) * d.H + h) * 2 * D;
        float dss = 0.f, dsr = 0.f;
        for (int c = lane; c < D; c += 32) {
            const float gq0 = __bfloat162float(dqt[to + c]), gq1 = __bfloat162float(dqt[to + D + c]);
            const float gk0 = __bfloat162float(dkt[to + c]), gk1 = __bfloat162float(dkt[to + D + c]);
            const float qv = __bfloat162float(q[qo + c]);
            dq[qo + c] = __float2bfloat16(fs * gq0 + fr * gk1);
            if (d.Hk != 1) dk[ko + c] = __float2bfloat16(gk0 + gq1);
            dss += gq0 * qv;
            dsr += gk1 * qv;
        }
        dss = warp_sum(dss);
        dsr = warp_sum(dsr);
        if (lane == 0) {
            if (cs) cs[size_t(n) * d.H + h] = dss * dfloored_gate(gsv);
            if (cr) cr[size_t(n) * d.H + h] = dsr * dfloored_gate(grv);
        }
    }
    if (d.Hk != 1) return;
    // Shared key (RA+MLA's k_lat): its gradient sums over the heads, in head order.
    for (int c = lane; c < D; c += 32) {
        float acc = 0.f;
        for (int h = 0; h < d.H; ++h) {
            const size_t to = (size_t(n) * d.H + h) * 2 * D;
            acc += __bfloat162float(dkt[to + c]) + __bfloat162float(dqt[to + D + c]);
        }
        dk[size_t(n) * d.k_stride + c] = __float2bfloat16(acc);
    }
}

// Fast path, forward: one thread per (row n, head h, 8 channels).
__global__ void ra_fold_fwd_vec_kernel(bf16* qt, bf16* kt, const bf16* q, const bf16* k, const float* gs,
                                       const float* gr, RaFoldDims d) {
    const int D8 = d.D / 8;
    const size_t total = size_t(d.N) * d.H * D8;
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
        const int c = int(e % D8) * 8, h = int((e / D8) % d.H);
        const size_t n = e / (size_t(D8) * d.H);
        const int gi = d.n_gates == 1 ? 0 : h;
        const float fs = floored_gate(gate_value(gs, gi, d.g_std_fixed));
        const float fr = floored_gate(gate_value(gr, gi, d.g_rec_fixed));
        const F8 qv = load_bf16x8(q + n * d.q_stride + size_t(h) * d.D + c);
        const uint4 kv = *reinterpret_cast<const uint4*>(k + n * d.k_stride + size_t(d.Hk == 1 ? 0 : h) * d.D + c);
        F8 a, y;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            a.v[j] = fs * qv.v[j];
            y.v[j] = fr * qv.v[j];
        }
        const size_t o = (n * d.H + h) * 2 * d.D;
        store_bf16x8(qt + o + c, a);
        *reinterpret_cast<uint4*>(qt + o + d.D + c) = kv;   // k as it is: no rounding
        *reinterpret_cast<uint4*>(kt + o + c) = kv;
        store_bf16x8(kt + o + d.D + c, y);
    }
}

// Fast path, backward (Hk == H): a block of V = H*D/8 threads, thread v owning the 8-channel vector
// v of every row it visits (rows blockIdx.x, + gridDim.x, ...; in order). So each thread's columns
// are its own: c_attn's bias sums (dq, dk and dv: 24 floats) stay in its registers over all its
// rows and go to part_b[block][3 parts][H*D] at the end without any cross-thread reduction. The
// gate dot products of a head (D/8 consecutive threads of one warp) are added by shuffles in a
// fixed order and accumulated by the head's first thread into part_s/part_r[block][h]. The
// blocks' partials are summed by ra_fold_gate_finish and ra_fold_bias_finish.
// (A first version, a warp per row with three vectors per lane, needed 72 accumulators per lane:
// 126 registers and 25% occupancy, 68% of DRAM bandwidth; docs/performance.md, seventh session.)
constexpr int kFoldBwdMaxBlocks = 1024;
int fold_bwd_blocks(int N) { return std::min(N, kFoldBwdMaxBlocks); }
__global__ void ra_fold_bwd_vec_kernel(bf16* __restrict__ dq, bf16* __restrict__ dk, float* __restrict__ part_s,
                                       float* __restrict__ part_r, float* __restrict__ part_b,
                                       const bf16* __restrict__ dqt, const bf16* __restrict__ dkt,
                                       const bf16* __restrict__ q, const bf16* __restrict__ dv, const float* gs,
                                       const float* gr, RaFoldDims d) {
    const int D8 = d.D / 8, V = d.H * D8, v = threadIdx.x;
    const int h = v / D8, c = (v % D8) * 8;
    const int gi = d.n_gates == 1 ? 0 : h;
    const float fs = floored_gate(gate_value(gs, gi, d.g_std_fixed));
    const float fr = floored_gate(gate_value(gr, gi, d.g_rec_fixed));
    const bool gates = part_s || part_r;
    F8 bq{}, bk{}, bv{};
    float acc_s = 0.f, acc_r = 0.f;
    for (int n = blockIdx.x; n < d.N; n += gridDim.x) {
        const size_t qo = size_t(n) * d.q_stride + size_t(h) * d.D + c;
        const size_t ko = size_t(n) * d.k_stride + size_t(h) * d.D + c;
        const size_t to = (size_t(n) * d.H + h) * 2 * d.D + c;
        const F8 gq0 = load_bf16x8(dqt + to), gq1 = load_bf16x8(dqt + to + d.D);
        const F8 gk0 = load_bf16x8(dkt + to), gk1 = load_bf16x8(dkt + to + d.D);
        F8 oq, ok;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            oq.v[j] = fs * gq0.v[j] + fr * gk1.v[j];
            ok.v[j] = gk0.v[j] + gq1.v[j];
        }
        store_bf16x8(dq + qo, oq);
        store_bf16x8(dk + ko, ok);
        if (part_b) {   // fp32 values, before the bf16 store rounds them
            const F8 vv = dv ? load_bf16x8(dv + qo) : F8{};
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                bq.v[j] += oq.v[j];
                bk.v[j] += ok.v[j];
                bv.v[j] += vv.v[j];
            }
        }
        if (gates) {   // g_std scales q̃[:D] = g q, g_rec k̃[D:] = g q: only q is read
            const F8 qv = load_bf16x8(q + qo);
            float s0 = 0.f, s1 = 0.f;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                s0 += gq0.v[j] * qv.v[j];
                s1 += gk1.v[j] * qv.v[j];
            }
            for (int off = D8 / 2; off > 0; off /= 2) {   // the head's D8 lanes, a fixed butterfly
                s0 += __shfl_xor_sync(0xffffffffu, s0, off);
                s1 += __shfl_xor_sync(0xffffffffu, s1, off);
            }
            acc_s += s0;
            acc_r += s1;
        }
    }
    if (part_b) {
        const size_t HD = size_t(8) * V, o = size_t(blockIdx.x) * 3 * HD + size_t(v) * 8;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            part_b[o + j] = bq.v[j];
            part_b[o + HD + j] = bk.v[j];
            part_b[o + 2 * HD + j] = bv.v[j];
        }
    }
    if (gates && v % D8 == 0) {
        if (part_s) part_s[size_t(blockIdx.x) * d.H + h] = acc_s;
        if (part_r) part_r[size_t(blockIdx.x) * d.H + h] = acc_r;
    }
}

// dbias[col] += the blocks' partial sums of col in block order: a block takes 32 columns, thread
// (column c, group g) sums blocks g, g + 8, ..., and the 8 groups are added in group order. (Not
// colsum_finish / rows_sum_add: with up to 1024 partial rows, a thread per column walking them all,
// or a second partial pass, costs more than this one launch.)
__global__ void ra_fold_bias_finish_kernel(float* dbias, const float* part, int blocks, int part_cols, int cols) {
    __shared__ float groups[8][32];
    const int c = threadIdx.x % 32, g = threadIdx.x / 32, col = blockIdx.x * 32 + c;
    float s = 0.f;
    if (col < cols)
        for (int b = g; b < blocks; b += 8) s += part[size_t(b) * part_cols + col];
    groups[g][c] = s;
    __syncthreads();
    if (g != 0 || col >= cols) return;
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) sum += groups[k][c];
    dbias[col] += sum;
}

// Fallback for the bias sums (scalar path): one thread per column walks the rows in order.
__global__ void strided_colsum_add_kernel(float* out, const bf16* x, int rows, int stride, int cols) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    float s = 0.f;
    for (int r = 0; r < rows; ++r) s += __bfloat162float(x[size_t(r) * stride + col]);
    out[col] += s;
}

// One warp per (gate, kind): the blocks' partial sums of its heads, lane-strided then a fixed
// butterfly, zeroed below the gate floor.
__global__ void ra_fold_gate_finish_kernel(float* dgs, float* dgr, const float* part_s, const float* part_r,
                                           int blocks, const float* gs, const float* gr, RaFoldDims d) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, warps = blockDim.x / 32;
    for (int item = warp; item < 2 * d.n_gates; item += warps) {
        const bool std_gate = item < d.n_gates;
        const int gi = std_gate ? item : item - d.n_gates;
        float* out = std_gate ? dgs : dgr;
        const float* part = std_gate ? part_s : part_r;
        if (!out) continue;
        const int h0 = d.n_gates == 1 ? 0 : gi, h1 = d.n_gates == 1 ? d.H : gi + 1;
        float sum = 0.f;
        for (int b = lane; b < blocks; b += 32)
            for (int h = h0; h < h1; ++h) sum += part[size_t(b) * d.H + h];
        sum = warp_sum(sum);
        const float g = std_gate ? gate_value(gs, gi, d.g_std_fixed) : gate_value(gr, gi, d.g_rec_fixed);
        if (lane == 0) out[gi] += sum * dfloored_gate(g);
    }
}

// The vector paths need 8-channel vectors that start 16-byte aligned everywhere they are read.
bool fold_vectorizable(const RaFoldDims& d, const void* q, const void* k, const void* qt, const void* kt) {
    return d.D % 8 == 0 && d.q_stride % 8 == 0 && d.k_stride % 8 == 0 && all_aligned16({q, k, qt, kt});
}
// The thread-per-vector backward: whole warps of V threads, a head's D/8 lanes inside one warp.
bool fold_bwd_shape_ok(const RaFoldDims& d) {
    const int D8 = d.D / 8, V = d.H * D8;
    return V % 32 == 0 && V <= 1024 && D8 <= 32 && (D8 & (D8 - 1)) == 0;
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
    bf16 *qtp = act(e, qt, nt, op, "qt"), *ktp = act(e, kt, nt, op, "kt");
    const bf16* qp = act(e, q, strided_extent(d.N, d.q_stride, d.H * d.D), op, "q");
    const bf16* kp = act(e, k, strided_extent(d.N, d.k_stride, d.Hk * d.D), op, "k");
    const float *gsp = f32_opt(e, g_std, d.n_gates, op, "g_std"), *grp = f32_opt(e, g_rec, d.n_gates, op, "g_rec");
    if (fold_vectorizable(d, qp, kp, qtp, ktp)) {
        ra_fold_fwd_vec_kernel<<<elementwise_blocks(nt / 16, kThreads), kThreads, 0, e.stream>>>(qtp, ktp, qp, kp, gsp,
                                                                                                grp, d);
        GPT_CUDA_LAUNCHED("ra_fold_fwd_vec_kernel");
        return;
    }
    ra_fold_fwd_kernel<<<elementwise_blocks(nt / 2, kThreads), kThreads, 0, e.stream>>>(qtp, ktp, qp, kp, gsp, grp, d);
    GPT_CUDA_LAUNCHED("ra_fold_fwd_kernel");
}

void ra_fold_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k,
                 Ten g_std, Ten g_rec, const RaFoldDims& d, Ten dbias, Ten dv) {
    const char* op = "ra_fold_bwd";
    check_fold(d, op);
    GPT_CHECK(dbias.present() || !dv.present(), "cuda-bf16 ra_fold_bwd: dv is only read for dbias");
    const size_t nt = size_t(d.N) * d.H * 2 * d.D;
    const size_t q_ext = strided_extent(d.N, d.q_stride, d.H * d.D);
    const size_t k_ext = strided_extent(d.N, d.k_stride, d.Hk * d.D);
    const int HD = d.H * d.D, HkD = d.Hk * d.D;
    float* dgs = f32_opt(e, dg_std, d.n_gates, op, "dg_std");
    float* dgr = f32_opt(e, dg_rec, d.n_gates, op, "dg_rec");
    float* db = f32_opt(e, dbias, size_t(HD + HkD + (dv.present() ? HD : 0)), op, "dbias");
    bf16 *dqp = act(e, dq, q_ext, op, "dq"), *dkp = act(e, dk, k_ext, op, "dk");
    const bf16 *dqtp = act(e, dqt, nt, op, "dqt"), *dktp = act(e, dkt, nt, op, "dkt");
    const bf16 *qp = act(e, q, q_ext, op, "q"), *kp = act(e, k, k_ext, op, "k");
    const bf16* dvp = dv.present() ? act(e, dv, q_ext, op, "dv") : nullptr;
    const float *gsp = f32_opt(e, g_std, d.n_gates, op, "g_std"), *grp = f32_opt(e, g_rec, d.n_gates, op, "g_rec");
    const bool vec = d.Hk == d.H && fold_vectorizable(d, qp, kp, dqtp, dktp) &&
                     fold_vectorizable(d, dqp, dkp, dqtp, dktp) && (!dvp || fold_vectorizable(d, dvp, dvp, dqtp, dktp)) &&
                     fold_bwd_shape_ok(d);
    if (vec) {   // the gates' and the bias's partial sums per block, then small finishing kernels
        const int blocks = fold_bwd_blocks(d.N);
        ScratchPlan sp;
        const size_t o_s = sp.add(size_t(blocks) * d.H), o_r = sp.add(size_t(blocks) * d.H);
        const size_t o_b = sp.add(size_t(blocks) * 3 * HD);
        float* scratch = (dgs || dgr || db) ? sp.take(e) : nullptr;
        float* part_s = dgs ? scratch + o_s : nullptr;
        float* part_r = dgr ? scratch + o_r : nullptr;
        float* part_b = db ? scratch + o_b : nullptr;
        ra_fold_bwd_vec_kernel<<<blocks, d.H * (d.D / 8), 0, e.stream>>>(dqp, dkp, part_s, part_r, part_b, dqtp, dktp,
                                                                         qp, dvp, gsp, grp, d);
        GPT_CUDA_LAUNCHED("ra_fold_bwd_vec_kernel");
        if (dgs || dgr) {
            ra_fold_gate_finish_kernel<<<1, 32 * std::min(2 * d.n_gates, 32), 0, e.stream>>>(dgs, dgr, part_s, part_r,
                                                                                            blocks, gsp, grp, d);
            GPT_CUDA_LAUNCHED("ra_fold_gate_finish_kernel");
        }
        if (db) {   // [dq | dk | dv] columns; dk's part is HD wide here (Hk == H)
            const int cols = dvp ? 3 * HD : 2 * HD;
            ra_fold_bias_finish_kernel<<<(cols + 31) / 32, 256, 0, e.stream>>>(db, part_b, blocks, 3 * HD, cols);
            GPT_CUDA_LAUNCHED("ra_fold_bias_finish_kernel");
        }
        return;
    }
    // Per-gate sums: [N, H] contributions reduced over N (per-head gates) or over N*H (one gate).
    const int rows = d.n_gates == 1 ? d.N * d.H : d.N, width = d.n_gates == 1 ? 1 : d.H;
    ScratchPlan sp;
    const size_t o_cs = sp.add(size_t(d.N) * d.H), o_cr = sp.add(size_t(d.N) * d.H),
                 o_part = sp.add(colsum_scratch(rows, width));
    float* scratch = (dgs || dgr) ? sp.take(e) : nullptr;
    float* cs = dgs ? scratch + o_cs : nullptr;
    float* cr = dgr ? scratch + o_cr : nullptr;
    ra_fold_bwd_kernel<<<(d.N + kWarps - 1) / kWarps, kThreads, 0, e.stream>>>(dqp, dkp, cs, cr, dqtp, dktp, qp, gsp,
                                                                               grp, d);
    GPT_CUDA_LAUNCHED("ra_fold_bwd_kernel");
    if (cs) rows_sum_add(dgs, cs, rows, width, scratch + o_part, e.stream);
    if (cr) rows_sum_add(dgr, cr, rows, width, scratch + o_part, e.stream);
    if (db) {   // the scalar path's bias sums: a thread per column, rows in order
        strided_colsum_add_kernel<<<(HD + 255) / 256, 256, 0, e.stream>>>(db, dqp, d.N, d.q_stride, HD);
        strided_colsum_add_kernel<<<(HkD + 255) / 256, 256, 0, e.stream>>>(db + HD, dkp, d.N, d.k_stride, HkD);
        if (dvp)
            strided_colsum_add_kernel<<<(HD + 255) / 256, 256, 0, e.stream>>>(db + HD + HkD, dvp, d.N, d.q_stride, HD);
        GPT_CUDA_LAUNCHED("strided_colsum_add_kernel");
    }
}

}  // namespace variant
}  // namespace gpt::cuda
