// The selected entries of RA-CT's split gradient (ops.h ract_select_bwd): with the dense -beta P
// part carried by attention_bwd's delta shift, what is left of dS = P (alpha [j selected] - beta)
// is k (<= 8) entries per row, w_ij = alpha_i P_ij. No recomputed [T, T] tiles:
//  * ract_select_dq_kernel: one warp per (row, query head) walks the row's selection, recomputes
//    those k logits (one dot product each), adds scale sum w_ij k_j to dq_i and writes w_ij.
//  * ract_select_dk_kernel: one block per (64 keys, batch, key head); each warp owns 16 of the
//    keys, scans every later row's selection for them and adds scale w_ij q_i in shared memory
//    in the scan's fixed order: a deterministic scatter without atomics.
#include <string>

#include "cuda/attention_rowstats.cuh"
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

using rowstats::Geom;

struct SelectArgs {
    const float* alpha;   // [B, Hq, T]
    const int32_t* sel;   // [B*T, sel_heads, slots]
    float* w;             // [B*T, Hq, slots]: alpha P of each selected entry (0 in unused slots)
    bf16 *dq, *dk;        // q's and k's layouts, accumulated
    int sel_heads, slots;
};

constexpr int kKeysPerBlock = 64, kKeysPerWarp = 16, kSelectWarps = kKeysPerBlock / kKeysPerWarp;

// Dims [0, n) of a logit count: the band's reciprocal dims only within the band (attention_fwd).
__device__ __forceinline__ int active_dims(const Geom& g, int dqk, int i, int j) {
    return (g.band > 0 && i - j > g.band) ? g.band_split : dqk;
}

template <int DQK>
__global__ void __launch_bounds__(128) ract_select_dq_kernel(Geom g, SelectArgs a) {
    constexpr int kPer = DQK / 32;   // consecutive dims per lane
    const size_t row = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;   // (b, i, h)
    const int lane = threadIdx.x % 32;
    if (row >= size_t(g.B) * g.T * g.Hq) return;   // whole warps
    const int h = int(row % g.Hq), n = int(row / g.Hq), b = n / g.T, i = n % g.T, hk = h / (g.Hq / g.Hkv);
    const int c0 = lane * kPer;
    float qv[kPer], acc[kPer] = {};
    const bf16* qr = g.q + size_t(n) * g.q_stride + size_t(h) * DQK + c0;
#pragma unroll
    for (int e = 0; e < kPer; ++e) qv[e] = __bfloat162float(qr[e]);
    const size_t r = (size_t(b) * g.Hq + h) * g.T + i;
    const float lse = g.lse[r], alpha = a.alpha[r];
    const int32_t* cols = a.sel + (size_t(n) * a.sel_heads + (a.sel_heads == 1 ? 0 : h)) * a.slots;
    for (int s = 0; s < a.slots; ++s) {
        const int j = cols[s];
        float w = 0.f;
        if (j >= 0) {
            const bf16* kr = g.k + (size_t(b) * g.T + j) * g.k_stride + size_t(hk) * DQK + c0;
            const int active = active_dims(g, DQK, i, j);
            float kv[kPer], dot = 0.f;
#pragma unroll
            for (int e = 0; e < kPer; ++e) {
                kv[e] = c0 + e < active ? __bfloat162float(kr[e]) : 0.f;
                dot += qv[e] * kv[e];
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
            w = alpha * expf(dot * g.scale - lse);
#pragma unroll
            for (int e = 0; e < kPer; ++e) acc[e] += w * kv[e];
        }
        if (lane == 0) a.w[row * a.slots + s] = w;
    }
    bf16* d = a.dq + size_t(n) * g.q_stride + size_t(h) * DQK + c0;
#pragma unroll
    for (int e = 0; e < kPer; ++e) d[e] = __float2bfloat16(__bfloat162float(d[e]) + g.scale * acc[e]);
}

template <int DQK>
__global__ void __launch_bounds__(32 * kSelectWarps) ract_select_dk_kernel(Geom g, SelectArgs a) {
    constexpr int kPer = DQK / 32;
    __shared__ float acc[kKeysPerBlock][DQK];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, c0 = lane * kPer;
    const int k0 = blockIdx.x * kKeysPerBlock, bhk = blockIdx.y, b = bhk / g.Hkv, hk = bhk % g.Hkv;
    const int group = g.Hq / g.Hkv, per_row = group * a.slots;
    const int own_lo = k0 + warp * kKeysPerWarp, own_hi = min(own_lo + kKeysPerWarp, g.T);
    for (int x = lane; x < kKeysPerWarp * DQK; x += 32) acc[warp * kKeysPerWarp + x / DQK][x % DQK] = 0.f;
    __syncwarp();
    if (own_lo >= g.T) return;

    // Entries e = ((i - own_lo) group + hh) slots + s of rows i >= own_lo (causal: no earlier row
    // selects these keys), 32 at a time, in order; the matches are applied in lane order.
    const size_t total = size_t(g.T - own_lo) * per_row;
    for (size_t e0 = 0; e0 < total; e0 += 32) {
        const size_t e = e0 + lane;
        int i = 0, h = 0, s = 0, j = -1;
        if (e < total) {
            i = own_lo + int(e / per_row);
            const int rem = int(e % per_row);
            h = hk * group + rem / a.slots;
            s = rem % a.slots;
            j = a.sel[((size_t(b) * g.T + i) * a.sel_heads + (a.sel_heads == 1 ? 0 : h)) * a.slots + s];
        }
        unsigned match = __ballot_sync(0xffffffffu, j >= own_lo && j < own_hi);
        while (match) {
            const int src = __ffs(match) - 1;
            match &= match - 1;
            const int mi = __shfl_sync(0xffffffffu, i, src), mh = __shfl_sync(0xffffffffu, h, src);
            const int ms = __shfl_sync(0xffffffffu, s, src), mj = __shfl_sync(0xffffffffu, j, src);
            const float w = a.w[((size_t(b) * g.T + mi) * g.Hq + mh) * a.slots + ms];
            const bf16* qr = g.q + (size_t(b) * g.T + mi) * g.q_stride + size_t(mh) * DQK + c0;
            const int active = active_dims(g, DQK, mi, mj);
            float* row = acc[mj - k0];
#pragma unroll
            for (int c = 0; c < kPer; ++c)
                if (c0 + c < active) row[c0 + c] += w * __bfloat162float(qr[c]);
        }
    }
    __syncwarp();
    for (int j = own_lo; j < own_hi; ++j) {
        bf16* d = a.dk + (size_t(b) * g.T + j) * g.k_stride + size_t(hk) * DQK + c0;
#pragma unroll
        for (int c = 0; c < kPer; ++c) d[c] = __float2bfloat16(__bfloat162float(d[c]) + g.scale * acc[j - k0][c0 + c]);
    }
}

template <int DQK>
void launch_select(const Geom& g, const SelectArgs& a, cudaStream_t s) {
    const size_t warps = size_t(g.B) * g.T * g.Hq;
    ract_select_dq_kernel<DQK><<<unsigned((warps * 32 + 127) / 128), 128, 0, s>>>(g, a);
    GPT_CUDA_LAUNCHED("ract_select_dq_kernel");
    const dim3 grid((g.T + kKeysPerBlock - 1) / kKeysPerBlock, g.B * g.Hkv);
    ract_select_dk_kernel<DQK><<<grid, 32 * kSelectWarps, 0, s>>>(g, a);
    GPT_CUDA_LAUNCHED("ract_select_dk_kernel");
}

}  // namespace

namespace variant {

void ract_select_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten alpha, Ten sel, Ten q, Ten k, Ten lse,
                     const AttnDims& a, const RactDims& d) {
    const char* op = "ract_select_bwd";
    check_positive(op, {d.B, d.T, d.H});
    GPT_CHECK(d.B == a.B && d.T == a.T && d.H == a.Hq, "cuda-bf16 ract_select_bwd: the RA-CT and attention dims disagree");
    GPT_CHECK(d.stat == RactStat::topk || d.stat == RactStat::max,
              "cuda-bf16 ract_select_bwd: only the selection statistics (topk, max)");
    const int slots = ract_sel_slots(d), sel_heads = d.head_average ? 1 : d.H;
    GPT_CHECK(slots <= rowstats::kMaxSel, "cuda-bf16 ract_select_bwd: model.ract.topk above the kernels' top-8");
    const Geom g = rowstats::make_geom(e, q, k, lse, a, op);
    const int N = d.B * d.T;
    const size_t nh = size_t(N) * d.H;
    SelectArgs s{};
    s.alpha = f32(e, alpha, nh, op, "alpha");
    s.sel = index(e, sel, size_t(N) * sel_heads * slots, op, "sel");
    s.sel_heads = sel_heads;
    s.slots = slots;
    s.dq = act(e, dq, strided_extent(N, a.q_stride, size_t(a.Hq) * a.Dqk), op, "dq");
    s.dk = act(e, dk, strided_extent(N, a.k_stride, size_t(a.Hkv) * a.Dqk), op, "dk");
    s.w = static_cast<float*>(e.scratch(nh * slots * 4 + 256));
    if (a.Dqk == 64) launch_select<64>(g, s, e.stream);
    else launch_select<128>(g, s, e.stream);
}

}  // namespace variant
}  // namespace gpt::cuda
