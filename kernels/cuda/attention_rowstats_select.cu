// The selected entries of RA-CT's split gradient (ops.h ract_select_bwd): with the dense -beta P
// part carried by attention_bwd's delta shift, what is left of dS = P (alpha [j selected] - beta)
// is k (<= 8) entries per row, w_ij = alpha_i P_ij. No recomputed [T, T] tiles:
//  * ract_select_dq_kernel: 8 lanes per (row, query head) walk the row's selection, recompute
//    those k logits (one dot product each) and add scale sum w_ij k_j to dq_i; on the way they
//    transpose the selection into a bit mask (key j -> rows i).
//  * ract_select_dk_kernel: 8 lanes per key walk its rows from the mask in increasing order,
//    recompute w_ij the same way and add scale sum w_ij q_i to dk_j: a deterministic scatter
//    without float atomics. (The earlier versions scanned every later row's selection once per
//    64-key block, or gave a key a whole warp: 10.7-10.9 ms per GPT-2 step at B = 32, ncu,
//    docs/performance.md; both were latency-bound, too few independent loads in flight.)
#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda/attention_rowstats.cuh"
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"
#include "cuda/vec8.cuh"

namespace gpt::cuda {
namespace {

using rowstats::Geom;

struct SelectArgs {
    const float* alpha;   // [B, Hq, T]
    const int32_t* sel;   // [B*T, sel_heads, slots]
    bf16 *dq, *dk;        // q's and k's layouts, accumulated
    int sel_heads, slots;
};

// Dims [0, n) of a logit count: the band's reciprocal dims only within the band (attention_fwd).
__device__ __forceinline__ int active_dims(const Geom& g, int dqk, int i, int j) {
    return (g.band > 0 && i - j > g.band) ? g.band_split : dqk;
}

// Both kernels give an item (a row's selection, or a key's column) to a group of 8 lanes, four
// items per warp, each lane holding DQK / 8 dims as 16-byte vectors: one warp-wide round of loads
// serves four items, and a dot product needs three shuffles. The kernels are latency-bound (a
// chain of dependent loads per item), so items in flight is what counts.
constexpr int kGroup = 8, kItemsPerWarp = 32 / kGroup, kSelWarps = 4;

template <int DQK>
struct Lanes {
    static constexpr int kDims = DQK / kGroup, kVecs = kDims / 8;
    float v[kDims];
    __device__ __forceinline__ void load(const bf16* p, int active, int c0) {   // dims >= active read as 0
#pragma unroll
        for (int x = 0; x < kVecs; ++x) {
            const F8 f = load_bf16x8(p + 8 * x);
#pragma unroll
            for (int e = 0; e < 8; ++e) v[8 * x + e] = c0 + 8 * x + e < active ? f.v[e] : 0.f;
        }
    }
    static __device__ __forceinline__ void add_to(bf16* p, const float (&acc)[kDims], float mul) {
#pragma unroll
        for (int x = 0; x < kVecs; ++x) {
            F8 f = load_bf16x8(p + 8 * x);
#pragma unroll
            for (int e = 0; e < 8; ++e) f.v[e] += mul * acc[8 * x + e];
            store_bf16x8(p + 8 * x, f);
        }
    }
};

template <int N>
__device__ __forceinline__ float group_dot(const float (&a)[N], const float (&b)[N]) {
    float d = 0.f;
#pragma unroll
    for (int e = 0; e < N; ++e) d += a[e] * b[e];
    return d;
}

// dq_i += scale sum_s w_is k_{j_s}, w = alpha_i exp(scale q_i.k_j - lse_i), over the row's slots
// (lane s of the group reads slot s), four slots at a time. With `mask` (one mask pass covers the
// batch) it also records the selection there for the dK kernel.
template <int DQK>
__global__ void __launch_bounds__(32 * kSelWarps) ract_select_dq_kernel(Geom g, SelectArgs a, uint32_t* mask, int words) {
    using L = Lanes<DQK>;
    constexpr int kDims = L::kDims, kHalf = rowstats::kMaxSel / 2;
    static_assert(rowstats::kMaxSel == kGroup, "one slot per lane of the group");
    const int lane = threadIdx.x % 32, sl = lane % kGroup, base = lane & ~(kGroup - 1), c0 = sl * kDims;
    const size_t item = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) / kGroup;   // (b, i, h), h fastest
    const bool live = item < size_t(g.B) * g.T * g.Hq;   // no early exit: the shuffles need whole warps
    const size_t it = live ? item : 0;
    const int h = int(it % g.Hq), n = int(it / g.Hq), b = n / g.T, i = n % g.T, hk = h / (g.Hq / g.Hkv);
    const int sh = a.sel_heads == 1 ? 0 : h;
    const int my_col = live && sl < a.slots ? a.sel[(size_t(n) * a.sel_heads + sh) * a.slots + sl] : -1;
    if (mask && my_col >= 0 && (a.sel_heads > 1 || h == 0))
        atomicOr(mask + ((size_t(b) * a.sel_heads + sh) * g.T + my_col) * words + i / 32, 1u << (i % 32));
    L qv;
    qv.load(g.q + size_t(n) * g.q_stride + size_t(h) * DQK + c0, DQK, c0);
    const size_t r = (size_t(b) * g.Hq + h) * g.T + i;
    const float lse = g.lse[r], alpha = a.alpha[r];
    float acc[kDims] = {};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        L kv[kHalf];
        float dot[kHalf];
        int col[kHalf];
#pragma unroll
        for (int u = 0; u < kHalf; ++u) {
            col[u] = __shfl_sync(0xffffffffu, my_col, base + half * kHalf + u);
            const int j = max(col[u], 0), active = col[u] < 0 ? 0 : active_dims(g, DQK, i, j);
            kv[u].load(g.k + (size_t(b) * g.T + j) * g.k_stride + size_t(hk) * DQK + c0, active, c0);
            dot[u] = group_dot(qv.v, kv[u].v);
        }
#pragma unroll
        for (int u = 0; u < kHalf; ++u) {
            const float d = lanes_sum<kGroup>(dot[u]);
            const float w = col[u] >= 0 ? alpha * expf(d * g.scale - lse) : 0.f;
#pragma unroll
            for (int e = 0; e < kDims; ++e) acc[e] += w * kv[u].v[e];
        }
    }
    if (live) L::add_to(a.dq + size_t(n) * g.q_stride + size_t(h) * DQK + c0, acc, g.scale);
}

// The selection transposed, for the dK side: bit i % 32 of word mask[(bl, sel head, j)][i / 32]
// is set when row i selected key j. OR is order-free, so the mask is the same however the
// atomics interleave; the dK kernel then reads each key's rows in increasing order. (Used when
// the mask needs several passes over the batch; otherwise the dQ kernel writes it.)
__global__ void ract_select_mask_kernel(uint32_t* mask, SelectArgs a, int T, int b0, int nb, int words) {
    const size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x;   // (bl, i, sel head, slot)
    if (e >= size_t(nb) * T * a.sel_heads * a.slots) return;
    const size_t rs = e / a.slots;   // (bl, i, sel head)
    const int sh = int(rs % a.sel_heads), n = int(rs / a.sel_heads), bl = n / T, i = n % T;
    const int j = a.sel[(size_t(b0) * T * a.sel_heads) * a.slots + e];
    if (j < 0) return;
    atomicOr(mask + ((size_t(bl) * a.sel_heads + sh) * T + j) * words + i / 32, 1u << (i % 32));
}

// dk_j += scale sum_i w_ij q_i over the rows i that selected key j, balanced: a key can be
// selected by hundreds of rows (keys with large norms win most rows' top-k: at GPT-2 init, B = 32,
// up to 930 rows, 1% of keys above 115, half at most 1), so a block takes 16 keys and splits
// their matches evenly over its 16 lane groups. Per pass of 256 rows: the groups list their
// key's rows from the mask (increasing row order) into one key-major list; group g takes slice
// g of it, kBatch entries at a time (q rows, lse, alpha loaded before any product; w recomputed
// as in the dQ kernel), summing runs of equal key. A run inside the slice is that key's only
// contribution (to keyacc); a run touching the slice's ends goes to the group's two boundary
// slots; then group g adds, for key g, keyacc or the boundary slots in group order. Fixed order,
// no atomics: deterministic.
// One mask word per lane and pass (256 rows), two matches in flight per group and 80 registers at
// DQK = 64: six blocks per SM. Measured against two words, four matches and 110 registers (four
// blocks) in one call: 5.43 vs 7.87 ms per GPT-2 step at B = 32 (docs/performance.md).
constexpr int kDkKeys = 16, kDkWordsPerLane = 1, kDkPassWords = kGroup * kDkWordsPerLane;
constexpr int kDkPassRows = 32 * kDkPassWords;

template <int DQK>
struct DkSmem {
    uint32_t list[kDkKeys * kDkPassRows];   // (row << 4) | key, key-major
    float kbuf[kDkKeys][DQK];               // the block's key rows
    float keyacc[kDkKeys][DQK];             // runs inside one slice
    float part[kDkKeys][2][DQK];            // each slice's first and last run
    int part_key[kDkKeys][2];               // their keys, -1 none
    int count[kDkKeys], offset[kDkKeys + 1];
};

template <int DQK>
__global__ void __launch_bounds__(32 * kSelWarps, DQK == 64 ? 6 : 1) ract_select_dk_kernel(Geom g, SelectArgs a, const uint32_t* mask,
                                                                       int b0, int words) {
    using L = Lanes<DQK>;
    constexpr int kDims = L::kDims, kBatch = 2;
    static_assert(kSelWarps * kItemsPerWarp == kDkKeys, "a lane group per key");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    DkSmem<DQK>& sm = *reinterpret_cast<DkSmem<DQK>*>(smem_raw);
    const int tid = threadIdx.x, lane = tid % 32, gi = tid / kGroup, sl = tid % kGroup, c0 = sl * kDims;
    const int j_base = blockIdx.x * kDkKeys, bhk = blockIdx.y, bl = bhk / g.Hkv, hk = bhk % g.Hkv, b = b0 + bl;
    const int j = j_base + gi, group = g.Hq / g.Hkv;
    const bool key_ok = j < g.T;
    for (int x = tid; x < kDkKeys * DQK; x += blockDim.x) {
        const int kj = x / DQK, c = x % DQK;
        sm.kbuf[kj][c] = j_base + kj < g.T
                             ? __bfloat162float(g.k[(size_t(b) * g.T + j_base + kj) * g.k_stride + size_t(hk) * DQK + c])
                             : 0.f;
        sm.keyacc[kj][c] = 0.f;
    }
    float total[kDims] = {};
    const int w_first = j_base / 32, passes = (words - w_first + kDkPassWords - 1) / kDkPassWords;
    for (int hh = 0; hh < group; ++hh) {
        const int h = hk * group + hh, sh = a.sel_heads == 1 ? 0 : h;
        const uint32_t* col = mask + ((size_t(bl) * a.sel_heads + sh) * g.T + (key_ok ? j : 0)) * words;
        const size_t stat0 = (size_t(b) * g.Hq + h) * g.T;
        const bf16* qh = g.q + size_t(b) * g.T * g.q_stride + size_t(h) * DQK + c0;
        for (int pass = 0; pass < passes; ++pass) {
            const int wb = w_first + pass * kDkPassWords;
            uint32_t word[kDkWordsPerLane];
            int cnt[kDkWordsPerLane], at[kDkWordsPerLane], run = 0;
#pragma unroll
            for (int v = 0; v < kDkWordsPerLane; ++v) {   // word wb + v * 8 + sl: row order is (v, sl)
                const int w = wb + v * kGroup + sl;
                word[v] = key_ok && w < words ? col[w] : 0u;
                cnt[v] = __popc(word[v]);
                at[v] = cnt[v];   // inclusive scan over the group's lanes
#pragma unroll
                for (int o = 1; o < kGroup; o <<= 1) {
                    const int x = __shfl_up_sync(0xffffffffu, at[v], o, kGroup);
                    if (sl >= o) at[v] += x;
                }
                at[v] += run - cnt[v];   // exclusive, after the earlier words
                run += __shfl_sync(0xffffffffu, at[v] + cnt[v] - run, (lane & ~(kGroup - 1)) + kGroup - 1);
            }
            if (sl == 0) sm.count[gi] = run;
            __syncthreads();
            if (tid == 0) {
                sm.offset[0] = 0;
                for (int x = 0; x < kDkKeys; ++x) sm.offset[x + 1] = sm.offset[x] + sm.count[x];
            }
            __syncthreads();
            const int base = sm.offset[gi], M = sm.offset[kDkKeys];
#pragma unroll
            for (int v = 0; v < kDkWordsPerLane; ++v) {
                int pos = base + at[v];
                const int row0 = (wb + v * kGroup + sl) * 32;
                for (uint32_t bits = word[v]; bits; bits &= bits - 1)
                    sm.list[pos++] = (uint32_t(row0 + __ffs(bits) - 1) << 4) | uint32_t(gi);
            }
            if (sl == 0) sm.part_key[gi][0] = sm.part_key[gi][1] = -1;
            __syncthreads();
            // Slice gi of the list, runs of equal key summed in acc.
            const int lo = int((long(M) * gi) / kDkKeys), hi = int((long(M) * (gi + 1)) / kDkKeys);
            const int rounds = (M + kDkKeys - 1) / kDkKeys;   // >= every slice's length: whole warps iterate
            int cur = -1;
            bool first_run = true;
            float acc[kDims] = {};
            auto flush = [&](bool last) {
                if (cur < 0) return;
                float* dst = first_run ? sm.part[gi][0] : last ? sm.part[gi][1] : sm.keyacc[cur];
                if (first_run || last) {
                    if (sl == 0) sm.part_key[gi][first_run ? 0 : 1] = cur;
#pragma unroll
                    for (int e = 0; e < kDims; ++e) dst[c0 + e] = acc[e];
                } else {
#pragma unroll
                    for (int e = 0; e < kDims; ++e) dst[c0 + e] += acc[e];
                }
#pragma unroll
                for (int e = 0; e < kDims; ++e) acc[e] = 0.f;
                first_run = false;
            };
            for (int m0 = 0; m0 < rounds; m0 += kBatch) {
                L qv[kBatch];
                float dot[kBatch], lse[kBatch], alpha[kBatch];
                int kj[kBatch];
#pragma unroll
                for (int u = 0; u < kBatch; ++u) {
                    const int e = lo + m0 + u;
                    const bool ok = m0 + u < rounds && e < hi;
                    const uint32_t packed = ok ? sm.list[e] : 0u;
                    const int i = int(packed >> 4);
                    kj[u] = ok ? int(packed & 15u) : -1;
                    const int jj = j_base + max(kj[u], 0);
                    qv[u].load(qh + size_t(i) * g.q_stride, ok ? active_dims(g, DQK, i, jj) : 0, c0);
                    lse[u] = g.lse[stat0 + i];
                    alpha[u] = a.alpha[stat0 + i];
                    dot[u] = group_dot(qv[u].v, *reinterpret_cast<const float(*)[kDims]>(&sm.kbuf[max(kj[u], 0)][c0]));
                }
#pragma unroll
                for (int u = 0; u < kBatch; ++u) {
                    const float d = lanes_sum<kGroup>(dot[u]);
                    if (kj[u] < 0) continue;
                    const float w = alpha[u] * expf(d * g.scale - lse[u]);
                    if (kj[u] != cur) {
                        flush(false);
                        cur = kj[u];
                    }
#pragma unroll
                    for (int e = 0; e < kDims; ++e) acc[e] += w * qv[u].v[e];
                }
            }
            flush(true);
            __syncthreads();
            // Key gi's sum: its inside run, or its boundary runs in slice order.
            uint32_t hits = 0;   // the boundary slots holding key gi, bit 2x + y
#pragma unroll
            for (int x = 0; x < 2 * kDkKeys; ++x)
                if ((&sm.part_key[0][0])[x] == gi) hits |= 1u << x;
            float s_key[kDims];
#pragma unroll
            for (int e = 0; e < kDims; ++e) {
                s_key[e] = sm.keyacc[gi][c0 + e];
                sm.keyacc[gi][c0 + e] = 0.f;
            }
            for (; hits; hits &= hits - 1) {   // slice order, first run before last
                const float* p = (&sm.part[0][0])[__ffs(hits) - 1];
#pragma unroll
                for (int e = 0; e < kDims; ++e) s_key[e] += p[c0 + e];
            }
#pragma unroll
            for (int e = 0; e < kDims; ++e) total[e] += s_key[e];
            __syncthreads();   // list, slots and keyacc are rewritten by the next pass
        }
    }
    if (key_ok) L::add_to(a.dk + (size_t(b) * g.T + j) * g.k_stride + size_t(hk) * DQK + c0, total, g.scale);
}

// The mask's batch items per pass: at most ~64 MiB of mask (it grows as T^2).
// GPT_RACT_MASK_MIB overrides the budget (the GPU test sets 0: one item per pass, so the pass loop
// and the separate mask kernel run at test sizes).
int mask_batch(const Geom& g, const SelectArgs& a, int words) {
    size_t mib = 64;
    if (const char* v = std::getenv("GPT_RACT_MASK_MIB")) mib = size_t(std::strtoul(v, nullptr, 10));
    const size_t per_item = size_t(a.sel_heads) * g.T * words * 4;
    return int(std::clamp<size_t>((mib << 20) / per_item, 1, size_t(g.B)));
}

template <int DQK>
void launch_select(const Geom& g, const SelectArgs& a, uint32_t* mask, int words, int nb_max, cudaStream_t s) {
    const size_t mask_words = size_t(nb_max) * a.sel_heads * g.T * words;
    const bool one_pass = nb_max >= g.B;   // the dQ kernel then fills the mask on its way
    if (one_pass) GPT_CUDA(cudaMemsetAsync(mask, 0, mask_words * 4, s));
    const size_t rows = size_t(g.B) * g.T * g.Hq, threads = 32 * kSelWarps;
    ract_select_dq_kernel<DQK><<<unsigned((rows * kGroup + threads - 1) / threads), unsigned(threads), 0, s>>>(
        g, a, one_pass ? mask : nullptr, words);
    GPT_CUDA_LAUNCHED("ract_select_dq_kernel");
    for (int b0 = 0; b0 < g.B; b0 += nb_max) {
        const int nb = std::min(nb_max, g.B - b0);
        if (!one_pass) {
            GPT_CUDA(cudaMemsetAsync(mask, 0, size_t(nb) * a.sel_heads * g.T * words * 4, s));
            const size_t entries = size_t(nb) * g.T * a.sel_heads * a.slots;
            ract_select_mask_kernel<<<unsigned((entries + 255) / 256), 256, 0, s>>>(mask, a, g.T, b0, nb, words);
            GPT_CUDA_LAUNCHED("ract_select_mask_kernel");
        }
        const dim3 grid(unsigned((g.T + kDkKeys - 1) / kDkKeys), unsigned(nb * g.Hkv));
        allow_smem<ract_select_dk_kernel<DQK>>(sizeof(DkSmem<DQK>));
        ract_select_dk_kernel<DQK><<<grid, unsigned(threads), sizeof(DkSmem<DQK>), s>>>(g, a, mask, b0, words);
        GPT_CUDA_LAUNCHED("ract_select_dk_kernel");
    }
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
    GPT_CHECK(d.T <= 65535, "cuda-bf16 ract_select_bwd: T above 65535 (the dK kernel lists rows in 16 bits)");
    // Eight lanes share a row in 16-byte pieces: widths that are multiples of 64.
    GPT_CHECK(a.Dqk == 64 || a.Dqk == 128,
              "cuda-bf16 ract_select_bwd: the gradient through RA-CT's top-k/max statistic at Dqk = " +
                  std::to_string(a.Dqk) + " (RA with model.ra.discoverability) is not implemented on the GPU; "
                  "set model.ract.detach=true, use model.ract.stat=entropy or rms, or run on the cpu backend");
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
    GPT_CHECK(reinterpret_cast<uintptr_t>(s.dq) % 16 == 0 && reinterpret_cast<uintptr_t>(s.dk) % 16 == 0,
              "cuda-bf16 ract_select_bwd: dq and dk must start on 16-byte boundaries (Act offsets multiple of 8)");
    const int words = (d.T + 31) / 32, nb = mask_batch(g, s, words);
    auto* mask = static_cast<uint32_t*>(e.scratch(size_t(nb) * sel_heads * d.T * words * 4 + 256));
    if (a.Dqk == 64) launch_select<64>(g, s, mask, words, nb, e.stream);
    else launch_select<128>(g, s, mask, words, nb, e.stream);
}

}  // namespace variant
}  // namespace gpt::cuda
