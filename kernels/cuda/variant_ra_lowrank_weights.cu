// Same-FLOP low-rank RA folded into c_attn's weights (ops.h ra_lowrank_weights_fwd/bwd, SPEC §2.2):
// q̃ = [√g_std q[:D-R], √g_rec (k W)] is linear in the block input, so its columns of the effective
// weight are √g_std Wq[:D-R] and √g_rec W^T Wk (k̃ the same with q, k swapped) and one c_attn GEMM
// writes [q̃ | k̃ | v]. The work here is per weight (3E x (K+1) values, K+1 = the columns and the
// bias), not per token: microseconds per layer instead of two passes over the activations.
//
// Blocks own a head and a chunk of the K+1 columns, threads run along the columns (coalesced), and
// what a head's tail rows need from the other part (D rows forward, R rows backward) is staged in
// shared memory once per block. W's and the gates' gradients are sums over all K+1 columns: per-chunk
// partials, then the chunks and the heads summed in a fixed order (no atomics): deterministic.
#include <algorithm>

#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kCols = 64;      // forward and dw: columns of [w | b] per block
constexpr int kSumCols = 32;   // gradient sums: columns per block, one per lane
constexpr int kSumPitch = kSumCols + 1;   // padded shared-memory rows: distinct rows, distinct banks

// Column k of c_attn as a "row" of 3E values: w[:, k] for k < K, the bias for k == K.
template <class T>
struct Columns {
    T* w;
    T* b;
    int K;
    __device__ __forceinline__ T* ptr(int row, int k) const { return k < K ? w + size_t(row) * K + k : b + row; }
    __device__ __forceinline__ float at(int row, int k) const { return *ptr(row, k); }
};
using WeightColumns = Columns<const float>;

struct Gates {
    float ss, sr;
};
__device__ __forceinline__ Gates gates_of(const float* gs, const float* gr, int h, const RaLowRankDims& d) {
    const int gi = d.n_gates == 1 ? 0 : h;
    return {sqrt_gate(gate_value(gs, gi, d.g_std_fixed)), sqrt_gate(gate_value(gr, gi, d.g_rec_fixed))};
}

// for (i = threadIdx.x; i < n; i += blockDim.x) use(i, load(i)), with kBatch loads issued before
// their uses: these loops are bound by memory latency, so each thread keeps several loads in flight.
constexpr int kBatch = 8;
template <class Load, class Use>
__device__ __forceinline__ void batched_for(int n, Load load, Use use) {
    using T = decltype(load(0));
    for (int i0 = threadIdx.x; i0 < n; i0 += kBatch * blockDim.x) {
        T v[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            const int i = i0 + u * blockDim.x;
            v[u] = i < n ? load(i) : T{};
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            const int i = i0 + u * blockDim.x;
            if (i < n) use(i, v[u]);
        }
    }
}

__device__ __forceinline__ float* dyn_smem() {
    extern __shared__ float4 smem_f4[];   // float4: 16-byte aligned for the float4 reads of W
    return reinterpret_cast<float*>(smem_f4);
}

__device__ __forceinline__ void fma4(float (&acc)[4], float4 w, float x) {
    acc[0] += w.x * x;
    acc[1] += w.y * x;
    acc[2] += w.z * x;
    acc[3] += w.w * x;
}

__host__ __device__ inline int round4(int n) { return (n + 3) & ~3; }
size_t fwd_smem(const RaLowRankDims& d) { return size_t(d.D) * (kCols + round4(d.R)) * sizeof(float); }
size_t dw_smem(const RaLowRankDims& d) { return size_t(d.R) * (kCols + round4(d.D)) * sizeof(float); }
size_t sums_smem(const RaLowRankDims& d) { return size_t(4) * d.D * kSumPitch * sizeof(float); }

// Block per (part of [q | k | v], head h, kCols columns). Plain rows (v, and q's / k's first D-R
// channels) are one scaled copy each. The R tail rows of q̃ (k̃) mix the head's D rows of k (q):
// those are staged once, and each thread forms four tail rows of its column from them.
__global__ void __launch_bounds__(kThreads) weights_fwd_kernel(Columns<bf16> out, WeightColumns src, const float* W,
                                                               const float* gs, const float* gr, RaLowRankDims d) {
    const int part = blockIdx.y / d.H, h = blockIdx.y % d.H, k0 = blockIdx.x * kCols, K = src.K;
    const int E = d.H * d.D, keep = d.D - d.R, R4 = round4(d.R), row0 = part * E + h * d.D;
    const Gates g = part < 2 ? gates_of(gs, gr, h, d) : Gates{1.f, 1.f};
    // Item i = (row c, column k0 + i % kCols) of the block's rows at `first`; 0 past K.
    auto column = [&](int first) {
        return [=](int i) {
            const int k = k0 + i % kCols;
            return k <= K ? src.at(first + i / kCols, k) : 0.f;
        };
    };
    batched_for((part == 2 ? d.D : keep) * kCols, column(row0), [&](int i, float v) {
        const int k = k0 + i % kCols;
        if (k <= K) *out.ptr(row0 + i / kCols, k) = __float2bfloat16(g.ss * v);
    });
    if (part == 2) return;

    float* sX = dyn_smem();         // [D][kCols]: the other part's rows of head h (0 past K)
    float* sW = sX + d.D * kCols;   // [D][R4]: W, zero padded to R4 columns
    batched_for(d.D * kCols, column((1 - part) * E + h * d.D), [&](int i, float v) { sX[i] = v; });
    batched_for(
        d.D * R4, [&](int i) { return i % R4 < d.R ? W[size_t(i / R4) * d.R + i % R4] : 0.f; },
        [&](int i, float v) { sW[i] = v; });
    __syncthreads();
    // Item = (four tail rows r0.., column): a warp shares r0, so W's float4 is a broadcast.
    for (int i = threadIdx.x; i < R4 / 4 * kCols; i += blockDim.x) {
        const int r0 = i / kCols * 4, col = i % kCols, k = k0 + col;
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
        for (int c = 0; c < d.D; ++c)
            fma4(acc, *reinterpret_cast<const float4*>(sW + c * R4 + r0), sX[c * kCols + col]);
        if (k > K) continue;
        for (int j = 0; j < 4 && r0 + j < d.R; ++j) *out.ptr(row0 + keep + r0 + j, k) = __float2bfloat16(g.sr * acc[j]);
    }
}

// dw[o, k] (db for k == K) += the gradient of c_attn's value there through the fold:
// q rows: √g_std G_q̃[c] (c < D-R) + √g_rec sum_r W[c,r] G_k̃[D-R+r]; k rows: q and k swapped; v: G_v.
// Block per (part, head h, kCols columns): the other part's R tail rows are staged once, and each
// thread forms four channels of its column (W^T in shared memory, read as a float4 broadcast).
__global__ void __launch_bounds__(kThreads) weights_dw_kernel(Columns<float> out, WeightColumns grad, const float* W,
                                                              const float* gs, const float* gr, RaLowRankDims d) {
    const int part = blockIdx.y / d.H, h = blockIdx.y % d.H, k0 = blockIdx.x * kCols, K = grad.K;
    const int E = d.H * d.D, keep = d.D - d.R, D4 = round4(d.D), row0 = part * E + h * d.D;
    if (part == 2) {
        batched_for(
            d.D * kCols,
            [&](int i) {
                const int k = k0 + i % kCols, o = row0 + i / kCols;
                return k <= K ? make_float2(grad.at(o, k), *out.ptr(o, k)) : make_float2(0.f, 0.f);
            },
            [&](int i, float2 v) {
                const int k = k0 + i % kCols;
                if (k <= K) *out.ptr(row0 + i / kCols, k) = v.y + v.x;
            });
        return;
    }
    float* sG = dyn_smem();          // [R][kCols]: the other part's tail gradient rows (0 past K)
    float* sWt = sG + d.R * kCols;   // [R][D4]: W^T, zero padded to D4 columns
    const int other_tail = (1 - part) * E + h * d.D + keep;
    batched_for(
        d.R * kCols,
        [&](int i) {
            const int k = k0 + i % kCols;
            return k <= K ? grad.at(other_tail + i / kCols, k) : 0.f;
        },
        [&](int i, float v) { sG[i] = v; });
    batched_for(
        d.R * D4, [&](int i) { return i % D4 < d.D ? W[size_t(i % D4) * d.R + i / D4] : 0.f; },
        [&](int i, float v) { sWt[i] = v; });
    __syncthreads();
    const Gates g = gates_of(gs, gr, h, d);
    for (int i = threadIdx.x; i < D4 / 4 * kCols; i += blockDim.x) {
        const int c0 = i / kCols * 4, col = i % kCols, k = k0 + col;
        // The channels' own gradients and old dw first: in flight during the sum.
        float own[4], old[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int c = c0 + j;
            const bool ok = c < d.D && k <= K;
            own[j] = ok && c < keep ? grad.at(row0 + c, k) : 0.f;
            old[j] = ok ? *out.ptr(row0 + c, k) : 0.f;
        }
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
        for (int r = 0; r < d.R; ++r)
            fma4(acc, *reinterpret_cast<const float4*>(sWt + r * D4 + c0), sG[r * kCols + col]);
        if (k > K) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (c0 + j < d.D)
                *out.ptr(row0 + c0 + j, k) = old[j] + __fmaf_rn(g.sr, acc[j], c0 + j < keep ? g.ss * own[j] : 0.f);
    }
}

// Block per (head h, chunk of kSumCols columns): the head's D rows of wq, wk, G_q̃, G_k̃ over the
// chunk are staged, then (keep = D-R)
//   S[c]   = sum_k wq[c] G_q̃[c] + wk[c] G_k̃[c]                 c < keep (d√g_std; 0 otherwise)
//   P[c,s] = sum_k wk[c] G_q̃[keep+s] + wq[c] G_k̃[keep+s]       (dW = sum_h √g_rec P)
// S with a warp per channel, P (a D x R product) with a 2x2 tile per thread. Written to
// part[chunk][h][c][R+1] (slot R: S); weights_reduce_kernel sums the chunks.
__global__ void __launch_bounds__(kThreads) weights_sums_kernel(float* part, WeightColumns wts, WeightColumns grad,
                                                                RaLowRankDims d) {
    constexpr int P = kSumPitch;
    const int h = blockIdx.y, k0 = blockIdx.x * kSumCols, K = wts.K, E = d.H * d.D, keep = d.D - d.R;
    float* sWq = dyn_smem();   // rows m*D + c of [wq; wk; G_q̃; G_k̃] for head h, P floats apart
    const float* sWk = sWq + d.D * P;
    const float* sGq = sWq + 2 * d.D * P;
    const float* sGk = sWq + 3 * d.D * P;
    batched_for(
        4 * d.D * kSumCols,
        [&](int i) {
            const int row = i / kSumCols, k = k0 + i % kSumCols, m = row / d.D;
            const int o = (m & 1) * E + h * d.D + row % d.D;
            return k > K ? 0.f : *(m < 2 ? wts.ptr(o, k) : grad.ptr(o, k));
        },
        [&](int i, float v) { sWq[i / kSumCols * P + i % kSumCols] = v; });
    __syncthreads();
    const int slots = d.R + 1, lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    float* out = part + (size_t(blockIdx.x) * d.H + h) * d.D * slots;
    for (int c = warp; c < d.D; c += blockDim.x / 32) {   // c is warp-uniform
        float v = 0.f;
        if (c < keep) v = warp_sum(sWq[c * P + lane] * sGq[c * P + lane] + sWk[c * P + lane] * sGk[c * P + lane]);
        if (lane == 0) out[c * slots + d.R] = v;
    }
    // Tiles (c0, c0+1) x (s0, s0+1); an odd D or R clamps the second row to the last (not written).
    const int ns = (d.R + 1) / 2, nc = (d.D + 1) / 2;
    for (int t = threadIdx.x; t < ns * nc; t += blockDim.x) {
        const int s0 = t % ns * 2, c0 = t / ns * 2, s1 = min(s0 + 1, d.R - 1), c1 = min(c0 + 1, d.D - 1);
        const float *ak0 = sWk + c0 * P, *ak1 = sWk + c1 * P, *aq0 = sWq + c0 * P, *aq1 = sWq + c1 * P;
        const float *bq0 = sGq + (keep + s0) * P, *bq1 = sGq + (keep + s1) * P;
        const float *bk0 = sGk + (keep + s0) * P, *bk1 = sGk + (keep + s1) * P;
        float a00 = 0.f, a01 = 0.f, a10 = 0.f, a11 = 0.f;
#pragma unroll
        for (int k = 0; k < kSumCols; ++k) {
            a00 += ak0[k] * bq0[k];
            a00 += aq0[k] * bk0[k];
            a01 += ak0[k] * bq1[k];
            a01 += aq0[k] * bk1[k];
            a10 += ak1[k] * bq0[k];
            a10 += aq1[k] * bk0[k];
            a11 += ak1[k] * bq1[k];
            a11 += aq1[k] * bk1[k];
        }
        out[c0 * slots + s0] = a00;
        if (s1 != s0) out[c0 * slots + s1] = a01;
        if (c1 != c0) out[c1 * slots + s0] = a10;
        if (c1 != c0 && s1 != s0) out[c1 * slots + s1] = a11;
    }
}

// Block sum in a fixed order (warps, then warp 0 over the warps); the result in thread 0.
__device__ __forceinline__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = warp == 0 && lane < warps ? red[lane] : 0.f;
    return warp == 0 ? warp_sum(v) : 0.f;
}

// Thread per (head h, channel c, slot s): tot[h][c][s] = the chunks' partials summed in chunk order.
// Each block also leaves its share of head h's gate sums in head_part[h][block]: {sum W[c,r] P[h,c,r]
// (g_rec), sum_{c < keep} S[h,c] (g_std)}.
__global__ void __launch_bounds__(kThreads) weights_reduce_kernel(float* tot, float* head_part, const float* part,
                                                                  int chunks, const float* W, RaLowRankDims d) {
    __shared__ float red[2][kThreads / 32];
    const int slots = d.R + 1, per_head = d.D * slots, h = blockIdx.y;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float rec = 0.f, sstd = 0.f;
    if (i < per_head) {
        const float* p = part + size_t(h) * per_head + i;
        const size_t stride = size_t(d.H) * per_head;
        float acc = 0.f;
#pragma unroll 8
        for (int ch = 0; ch < chunks; ++ch) acc += p[ch * stride];
        tot[size_t(h) * per_head + i] = acc;
        const int c = i / slots, s = i % slots;
        if (s < d.R)
            rec = W[size_t(c) * d.R + s] * acc;
        else if (c < d.D - d.R)
            sstd = acc;
    }
    rec = block_sum(rec, red[0]);
    sstd = block_sum(sstd, red[1]);
    if (threadIdx.x == 0) {
        float* hp = head_part + (size_t(h) * gridDim.x + blockIdx.x) * 2;
        hp[0] = rec;
        hp[1] = sstd;
    }
}

// dW[c,r] += sum_h √g_rec(h) P[h,c,r] (thread per (c,r), heads in order); block 0 also adds to each
// gate dsqrt(g) times its heads' block sums (warp per gate, fixed lane order). No load depends on
// another, so the few L2 round trips overlap.
__global__ void __launch_bounds__(kThreads) weights_finalize_kernel(float* dW, float* dgs, float* dgr, const float* tot,
                                                                    const float* head_part, int blocks_per_head,
                                                                    const float* gs, const float* gr, RaLowRankDims d) {
    const int slots = d.R + 1;
    if (dW)
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < d.D * d.R; i += gridDim.x * blockDim.x) {
            const float* t = tot + size_t(i / d.R) * slots + i % d.R;
            float acc = 0.f;
#pragma unroll 8
            for (int h = 0; h < d.H; ++h) acc += gates_of(gs, gr, h, d).sr * t[size_t(h) * d.D * slots];
            dW[i] += acc;
        }
    if (blockIdx.x != 0 || (!dgs && !dgr)) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    const int items = (d.n_gates == 1 ? d.H : 1) * blocks_per_head;
    for (int gi = warp; gi < d.n_gates; gi += blockDim.x / 32) {
        // Per-layer gate: all heads' blocks in order; per-head gate: head gi's blocks.
        const float* hp = head_part + (d.n_gates == 1 ? 0 : size_t(gi) * blocks_per_head) * 2;
        float s_rec = 0.f, s_std = 0.f;
        for (int j = lane; j < items; j += 32) {
            s_rec += hp[size_t(j) * 2];
            s_std += hp[size_t(j) * 2 + 1];
        }
        s_rec = warp_sum(s_rec);
        s_std = warp_sum(s_std);
        if (lane == 0) {
            if (dgs) dgs[gi] += s_std * dsqrt_gate(gate_value(gs, gi, d.g_std_fixed));
            if (dgr) dgr[gi] += s_rec * dsqrt_gate(gate_value(gr, gi, d.g_rec_fixed));
        }
    }
}

size_t smem_optin() {
    static const size_t bytes = [] {
        int dev = 0, v = 0;
        GPT_CUDA(cudaGetDevice(&dev));
        GPT_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        return size_t(v);
    }();
    return bytes;
}

void check_weights(const RaLowRankDims& d, const char* op) {
    variant::check_positive(op, {d.N, d.H, d.D, d.R});
    variant::check_gate_count(d.n_gates, d.H, op);
    GPT_CHECK(d.R < d.D && 3 * d.H <= 65535,
              std::string("cuda-bf16 ") + op + ": rank R = " + std::to_string(d.R) + " must be below the head dim " +
                  std::to_string(d.D) + " (ra.rank), and 3 n_head at most 65535");
    const size_t need = std::max({fwd_smem(d), dw_smem(d), sums_smem(d)});
    GPT_CHECK(need <= 48 * 1024 || need <= smem_optin(),
              std::string("cuda-bf16 ") + op + ": head dim " + std::to_string(d.D) + " with rank " +
                  std::to_string(d.R) + " needs " + std::to_string(need) +
                  " bytes of shared memory per block, more than the device's " + std::to_string(smem_optin()));
}

// Blocks of kCols columns (the K columns and the bias) for each of the 3H (part, head) pairs.
dim3 weight_grid(const RaLowRankDims& d) { return dim3(unsigned((d.N + kCols) / kCols), unsigned(3 * d.H)); }

}  // namespace

namespace variant {

void ra_lowrank_weights_fwd(const VariantEnv& e, Ten w_eff, Ten b_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec,
                            const RaLowRankDims& d) {
    const char* op = "ra_lowrank_weights_fwd";
    check_weights(d, op);
    const size_t E3 = size_t(3) * d.H * d.D, nw = E3 * d.N;
    const WeightColumns src{f32(e, w, nw, op, "w"), f32(e, b, E3, op, "b"), d.N};
    allow_smem<weights_fwd_kernel>(fwd_smem(d));
    const Columns<bf16> out{act(e, w_eff, nw, op, "w_eff"), act(e, b_eff, E3, op, "b_eff"), d.N};
    weights_fwd_kernel<<<weight_grid(d), kThreads, fwd_smem(d), e.stream>>>(
        out, src, f32(e, W, size_t(d.D) * d.R, op, "W"), f32_opt(e, g_std, d.n_gates, op, "g_std"),
        f32_opt(e, g_rec, d.n_gates, op, "g_rec"), d);
    GPT_CUDA_LAUNCHED("weights_fwd_kernel");
}

void ra_lowrank_weights_bwd(const VariantEnv& e, Ten dw, Ten db, Ten dW, Ten dg_std, Ten dg_rec, Ten dw_eff,
                            Ten db_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) {
    const char* op = "ra_lowrank_weights_bwd";
    check_weights(d, op);
    const size_t E3 = size_t(3) * d.H * d.D, nw = E3 * d.N;
    const WeightColumns wts{f32(e, w, nw, op, "w"), f32(e, b, E3, op, "b"), d.N};
    const WeightColumns grad{f32(e, dw_eff, nw, op, "dw_eff"), f32(e, db_eff, E3, op, "db_eff"), d.N};
    const float* Wp = f32(e, W, size_t(d.D) * d.R, op, "W");
    const float* gsp = f32_opt(e, g_std, d.n_gates, op, "g_std");
    const float* grp = f32_opt(e, g_rec, d.n_gates, op, "g_rec");
    allow_smem<weights_dw_kernel>(dw_smem(d));
    const Columns<float> out{f32(e, dw, nw, op, "dw"), f32(e, db, E3, op, "db"), d.N};
    weights_dw_kernel<<<weight_grid(d), kThreads, dw_smem(d), e.stream>>>(out, grad, Wp, gsp, grp, d);
    GPT_CUDA_LAUNCHED("weights_dw_kernel");
    float* dWp = f32_opt(e, dW, size_t(d.D) * d.R, op, "dW");
    float* dgs = f32_opt(e, dg_std, d.n_gates, op, "dg_std");
    float* dgr = f32_opt(e, dg_rec, d.n_gates, op, "dg_rec");
    if (!dWp && !dgs && !dgr) return;

    // One scratch request (successive requests alias): chunk partials, their sums, the gate shares.
    const int chunks = (d.N + kSumCols) / kSumCols;
    const size_t per_head = size_t(d.D) * (d.R + 1);
    const int blocks_per_head = int((per_head + kThreads - 1) / kThreads);
    ScratchPlan plan;
    const size_t at_part = plan.add(size_t(chunks) * d.H * per_head);
    const size_t at_tot = plan.add(d.H * per_head);
    const size_t at_head = plan.add(size_t(d.H) * blocks_per_head * 2);
    float* s = plan.take(e);

    allow_smem<weights_sums_kernel>(sums_smem(d));
    weights_sums_kernel<<<dim3(unsigned(chunks), unsigned(d.H)), kThreads, sums_smem(d), e.stream>>>(s + at_part, wts,
                                                                                                     grad, d);
    GPT_CUDA_LAUNCHED("weights_sums_kernel");
    weights_reduce_kernel<<<dim3(unsigned(blocks_per_head), unsigned(d.H)), kThreads, 0, e.stream>>>(
        s + at_tot, s + at_head, s + at_part, chunks, Wp, d);
    GPT_CUDA_LAUNCHED("weights_reduce_kernel");
    const unsigned dW_blocks = unsigned((d.D * d.R + kThreads - 1) / kThreads);
    weights_finalize_kernel<<<dW_blocks, kThreads, 0, e.stream>>>(dWp, dgs, dgr, s + at_tot, s + at_head,
                                                                  blocks_per_head, gsp, grp, d);
    GPT_CUDA_LAUNCHED("weights_finalize_kernel");
}

}  // namespace variant
}  // namespace gpt::cuda
