// The selected entries of RA-CT's split gradient (ops.h ract_select_bwd): with the dense -beta P
// part carried by attention_bwd's delta shift, what is left of dS = P (alpha [j selected] - beta)
// is k (<= 8) entries per row, w_ij = alpha_i P_ij. No recomputed [T, T] tiles:
//  * ract_select_dq_kernel: one warp per (row, query head) walks the row's selection, recomputes
//    those k logits (one dot product each), adds scale sum w_ij k_j to dq_i and writes w_ij.
//  * ract_select_dk_kernel: one block per (64 keys, batch, key head) scans every later row's
//    selection once; each warp owns 16 of the keys and adds w_ij q_i for them in shared memory
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

// Every slot's key row is loaded before any product is formed (the slots are independent): the
// warp waits on one round of loads, not on kMaxSel dependent ones.
template <int DQK>
__global__ void __launch_bounds__(128) ract_select_dq_kernel(Geom g, SelectArgs a) {
    constexpr int kPer = DQK / 32;   // consecutive dims per lane
    constexpr int kSlots = rowstats::kMaxSel;
    const size_t row = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;   // (b, i, h)
    const int lane = threadIdx.x % 32;
    if (row >= size_t(g.B) * g.T * g.Hq) return;   // whole warps
    const int h = int(row % g.Hq), n = int(row / g.Hq), b = n / g.T, i = n % g.T, hk = h / (g.Hq / g.Hkv);
    const int c0 = lane * kPer;
    const int32_t* cols = a.sel + (size_t(n) * a.sel_heads + (a.sel_heads == 1 ? 0 : h)) * a.slots;
    const int my_col = lane < a.slots ? cols[lane] : -1;
    float qv[kPer], kv[kSlots][kPer], dot[kSlots];
    const bf16* qr = g.q + size_t(n) * g.q_stride + size_t(h) * DQK + c0;
#pragma unroll
    for (int e = 0; e < kPer; ++e) qv[e] = __bfloat162float(qr[e]);
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
        const int j = __shfl_sync(0xffffffffu, my_col, s);
        const int active = j < 0 ? 0 : active_dims(g, DQK, i, j);
        const bf16* kr = g.k + (size_t(b) * g.T + max(j, 0)) * g.k_stride + size_t(hk) * DQK + c0;
        dot[s] = 0.f;
#pragma unroll
        for (int e = 0; e < kPer; ++e) {
            kv[s][e] = c0 + e < active ? __bfloat162float(kr[e]) : 0.f;
            dot[s] += qv[e] * kv[s][e];
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
        for (int s = 0; s < kSlots; ++s) dot[s] += __shfl_xor_sync(0xffffffffu, dot[s], o);
    const size_t r = (size_t(b) * g.Hq + h) * g.T + i;
    const float lse = g.lse[r], alpha = a.alpha[r];
    float acc[kPer] = {};
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
        const int j = __shfl_sync(0xffffffffu, my_col, s);
        const float w = j >= 0 ? alpha * expf(dot[s] * g.scale - lse) : 0.f;
#pragma unroll
        for (int e = 0; e < kPer; ++e) acc[e] += w * kv[s][e];
        if (lane == s && s < a.slots) a.w[row * a.slots + s] = w;
    }
    bf16* d = a.dq + size_t(n) * g.q_stride + size_t(h) * DQK + c0;
#pragma unroll
    for (int e = 0; e < kPer; ++e) d[e] = __float2bfloat16(__bfloat162float(d[e]) + g.scale * acc[e]);
}

// The block's 128 threads scan the selections of rows i >= k0 together, 128 entries a round; the
// round's matches (columns in this block's 64 keys) go to a shared queue in entry order, and
// each warp then applies, in queue order, those of its 16 keys: fixed order, no atomics.
template <int DQK>
__global__ void __launch_bounds__(32 * kSelectWarps) ract_select_dk_kernel(Geom g, SelectArgs a) {
    constexpr int kPer = DQK / 32, kThreadsDk = 32 * kSelectWarps;
    __shared__ float acc[kKeysPerBlock][DQK];
    __shared__ int qi[kThreadsDk], qh[kThreadsDk], qj[kThreadsDk];
    __shared__ float qw[kThreadsDk];
    __shared__ int warp_count[kSelectWarps];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, c0 = lane * kPer;
    const int k0 = blockIdx.x * kKeysPerBlock, bhk = blockIdx.y, b = bhk / g.Hkv, hk = bhk % g.Hkv;
    const int group = g.Hq / g.Hkv, per_row = group * a.slots;
    const int k_end = min(k0 + kKeysPerBlock, g.T);
    for (int x = tid; x < kKeysPerBlock * DQK; x += kThreadsDk) acc[x / DQK][x % DQK] = 0.f;

    const int total = (g.T - k0) * per_row;   // entries of rows k0 .. T-1 (earlier rows cannot select these keys)
    for (int base = 0; base < total; base += kThreadsDk) {
        const int e = base + tid;
        int i = 0, h = 0, s = 0, j = -1;
        if (e < total) {
            const int ri = e / per_row, rem = e - ri * per_row, hh = rem / a.slots;
            i = k0 + ri;
            h = hk * group + hh;
            s = rem - hh * a.slots;
            j = a.sel[((size_t(b) * g.T + i) * a.sel_heads + (a.sel_heads == 1 ? 0 : h)) * a.slots + s];
        }
        const bool match = j >= k0 && j < k_end;
        const unsigned m = __ballot_sync(0xffffffffu, match);
        if (lane == 0) warp_count[warp] = __popc(m);
        __syncthreads();   // also orders the previous round's queue reads before these writes
        int at = __popc(m & ((1u << lane) - 1)), n = 0;
#pragma unroll
        for (int w = 0; w < kSelectWarps; ++w) {
            if (w < warp) at += warp_count[w];
            n += warp_count[w];
        }
        if (match) {
            qi[at] = i, qh[at] = h, qj[at] = j;
            qw[at] = a.w[((size_t(b) * g.T + i) * g.Hq + h) * a.slots + s];
        }
        __syncthreads();
        // This warp's matches in queue order, four at a time: the four q rows are loaded before
        // any is added (one round of load latency instead of four).
        const int own_lo = k0 + warp * kKeysPerWarp;
        for (int x0 = 0; x0 < n; x0 += 32) {
            const int x = x0 + lane;
            unsigned mine = __ballot_sync(0xffffffffu, x < n && qj[x] >= own_lo && qj[x] < own_lo + kKeysPerWarp);
            while (mine) {
                int idx[4];
                float qv[4][kPer];
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    idx[u] = mine ? x0 + __ffs(mine) - 1 : -1;
                    mine &= mine - 1;
                    if (idx[u] < 0) continue;
                    const int mi = qi[idx[u]], mh = qh[idx[u]];
                    const int active = active_dims(g, DQK, mi, qj[idx[u]]);
                    const bf16* qr = g.q + (size_t(b) * g.T + mi) * g.q_stride + size_t(mh) * DQK + c0;
#pragma unroll
                    for (int c = 0; c < kPer; ++c) qv[u][c] = c0 + c < active ? __bfloat162float(qr[c]) : 0.f;
                }
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    if (idx[u] < 0) continue;
                    float* rowp = acc[qj[idx[u]] - k0];
                    const float w = qw[idx[u]];
#pragma unroll
                    for (int c = 0; c < kPer; ++c) rowp[c0 + c] += w * qv[u][c];
                }
            }
        }
    }
    __syncthreads();
    for (int jl = warp; jl < k_end - k0; jl += kSelectWarps) {
        bf16* d = a.dk + (size_t(b) * g.T + k0 + jl) * g.k_stride + size_t(hk) * DQK + c0;
#pragma unroll
        for (int c = 0; c < kPer; ++c) d[c] = __float2bfloat16(__bfloat162float(d[c]) + g.scale * acc[jl][c0 + c]);
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
