// The selected entries of RA-CT's split gradient (ops.h ract_select_bwd): with the dense -beta P
// part carried by attention_bwd's delta shift, what is left of dS = P (alpha [j selected] - beta)
// is k (<= 8) entries per row, w_ij = alpha_i P_ij. No recomputed [T, T] tiles:
//  * ract_select_dq_kernel: 8 lanes per (row, query head) walk the row's selection, recompute
//    those k logits (one dot product each), add scale sum w_ij k_j to dq_i and write the w_ij
//    beside the selection (scratch) for the dK kernel.
//  * ract_select_dk_kernel: one block per (64 keys, batch, key head) streams the query tiles of
//    every query head of the group; each step scatters the tile's selected entries (w, bf16) into
//    a zeroed 64 x 64 tile W^T in shared memory and adds W^T Q to the keys' accumulators on tensor
//    cores (dk_j += scale sum_i w_ij q_i): fixed order, no atomics, deterministic, and the cost
//    per tile is the same however skewed the selection is (a key can be selected by hundreds of
//    rows at GPT-2 init, which made the earlier gather-per-key kernels latency-bound: 5.4 ms per
//    GPT-2 step at B = 32, docs/performance.md).
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
    float* w;             // [B*T, Hq, slots]: w_ij of each selected entry (the dQ kernel writes it)
    bf16 *dq, *dk;        // q's and k's layouts, accumulated
    int sel_heads, slots;
};

// Dims [0, n) of a logit count: the band's reciprocal dims only within the band (attention_fwd).
__device__ __forceinline__ int active_dims(const Geom& g, int dqk, int i, int j) {
    return (g.band > 0 && i - j > g.band) ? g.band_split : dqk;
}

// The dQ kernel gives a row's selection to a group of 8 lanes, four rows per warp, each lane
// holding DQK / 8 dims as 16-byte vectors: one warp-wide round of loads serves four rows, and a
// dot product needs three shuffles. It is latency-bound (a chain of dependent loads per row), so
// rows in flight is what counts.
constexpr int kGroup = 8, kSelWarps = 4;

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
// (lane s of the group reads slot s), four slots at a time; lane s also writes its slot's w_is
// for the dK kernel.
template <int DQK>
__global__ void __launch_bounds__(32 * kSelWarps) ract_select_dq_kernel(Geom g, SelectArgs a) {
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
    L qv;
    qv.load(g.q + size_t(n) * g.q_stride + size_t(h) * DQK + c0, DQK, c0);
    const size_t r = (size_t(b) * g.Hq + h) * g.T + i;
    const float lse = g.lse[r], alpha = a.alpha[r];
    float acc[kDims] = {}, my_w = 0.f;
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
            if (half * kHalf + u == sl) my_w = w;
#pragma unroll
            for (int e = 0; e < kDims; ++e) acc[e] += w * kv[u].v[e];
        }
    }
    if (live && sl < a.slots) a.w[(size_t(n) * g.Hq + h) * a.slots + sl] = my_w;
    if (live) L::add_to(a.dq + size_t(n) * g.q_stride + size_t(h) * DQK + c0, acc, g.scale);
}

// dk_j += scale sum_i w_ij q_i, one block per (64 keys, batch, key head), streaming (query head
// of the group, query tile) steps like ract_dk_kernel (attention_rowstats_bwd.cu) but without
// recomputing logits: thread t scatters the entries (row t / 2, slots 4 (t % 2) ..) of the step's
// tile into W^T[key][row] (bf16, zero elsewhere), and the warps add W^T Q (their 16 keys x the
// tile's 64 rows) into fp32 accumulators. With a band, pairs beyond it saw only the plain dims
// [0, band_split): W_in holds just the in-band entries and feeds the dims past the split.
// W is double-buffered; each thread clears its own entries of the previous step's buffer (whose
// products every warp finished before this step's first barrier), so a step has two barriers.
constexpr int kDkSlotsPerThread = rowstats::kMaxSel / 2, kWld = rowstats::kBC + attn::kPad;
static_assert(rowstats::kBR * 2 == rowstats::kThreads, "two threads per query row");

template <int DQK, bool BAND>
struct DkTileSmem {
    bf16 q[2][rowstats::kTile<DQK>];
    bf16 w[BAND ? 2 : 1][2][rowstats::kBC * kWld];   // [all entries, in-band only][buffer]
};

// The step's entries of this thread: keys j - k0 (or -1) with their w.
struct DkEntries {
    int key[kDkSlotsPerThread];
    float w[kDkSlotsPerThread];
};

template <int DQK, bool BAND>
__global__ void __launch_bounds__(rowstats::kThreads) ract_select_dk_kernel(Geom g, SelectArgs a) {
    using namespace rowstats;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    DkTileSmem<DQK, BAND>& sm = *reinterpret_cast<DkTileSmem<DQK, BAND>*>(smem_raw);
    constexpr int kW = BAND ? 2 : 1;
    const int k_tile = blockIdx.x;   // the longest column (k_tile 0) first
    const int bhk = blockIdx.y, b = bhk / g.Hkv, hk = bhk % g.Hkv, group = g.Hq / g.Hkv;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int k0 = k_tile * kBC, wrow = warp * 16, row_in_tile = tid / 2, slot0 = (tid % 2) * kDkSlotsPerThread;
    const int n_qt = (g.T + kBR - 1) / kBR, qt0 = k0 / kBR, per_head = n_qt - qt0, steps = group * per_head;

    for (int x = tid; x < kW * 2 * kBC * kWld / 2; x += kThreads)
        reinterpret_cast<uint32_t*>(&sm.w[0][0][0])[x] = 0u;

    // Step s: query head hk group + s / per_head, query tile qt0 + s % per_head.
    auto issue_q = [&](int step) {
        const int h = hk * group + step / per_head, q0 = (qt0 + step % per_head) * kBR;
        attn::load_tile<kBR, DQK, kThreads>(sm.q[step & 1], g.q + size_t(b) * g.T * g.q_stride + size_t(h) * DQK,
                                            g.q_stride, q0, g.T);
        attn::cp_async_commit();
    };
    auto read_entries = [&](int step, DkEntries& en) {
        const int h = hk * group + step / per_head, i = (qt0 + step % per_head) * kBR + row_in_tile;
        const int sh = a.sel_heads == 1 ? 0 : h;
        const size_t n = size_t(b) * g.T + i;
#pragma unroll
        for (int u = 0; u < kDkSlotsPerThread; ++u) {
            const int s = slot0 + u;
            const bool ok = i < g.T && s < a.slots;
            const int j = ok ? a.sel[(n * a.sel_heads + sh) * a.slots + s] : -1;
            const bool here = j >= k0 && j < k0 + kBC;
            en.key[u] = here ? j - k0 : -1;
            en.w[u] = here ? a.w[(n * g.Hq + h) * a.slots + s] : 0.f;
        }
    };
    issue_q(0);
    DkEntries next, prev;
    read_entries(0, next);
#pragma unroll
    for (int u = 0; u < kDkSlotsPerThread; ++u) prev.key[u] = -1;

    float acc[DQK / 8][4];
#pragma unroll
    for (int n = 0; n < DQK / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int step = 0; step < steps; ++step) {
        const int buf = step & 1, q0 = (qt0 + step % per_head) * kBR, i = q0 + row_in_tile;
        attn::cp_async_wait<0>();
        __syncthreads();   // Q(step) landed; every warp is done with step - 1's products
        bool any = false;
#pragma unroll
        for (int u = 0; u < kDkSlotsPerThread; ++u) {
            if (prev.key[u] >= 0) {
                sm.w[0][buf ^ 1][prev.key[u] * kWld + row_in_tile] = __float2bfloat16(0.f);
                if constexpr (BAND) sm.w[1][buf ^ 1][prev.key[u] * kWld + row_in_tile] = __float2bfloat16(0.f);
            }
            const int kj = next.key[u];
            if (kj >= 0) {
                const bf16 wv = __float2bfloat16(next.w[u]);
                sm.w[0][buf][kj * kWld + row_in_tile] = wv;
                if constexpr (BAND)
                    if (i - (k0 + kj) <= g.band) sm.w[1][buf][kj * kWld + row_in_tile] = wv;
                any = true;
            }
            prev.key[u] = kj;
        }
        if (step + 1 < steps) {
            issue_q(step + 1);   // the other buffer: its products finished before the barrier above
            read_entries(step + 1, next);
        }
        if (!__syncthreads_or(any)) continue;   // no entry in this tile pair
        const bf16* q_s = sm.q[buf];
#pragma unroll
        for (int kk = 0; kk < kBR / 16; ++kk) {
            uint32_t aw[kW][4];
#pragma unroll
            for (int x = 0; x < kW; ++x) attn::load_a(aw[x], sm.w[x][buf], kWld, wrow, kk * 16, lane);
#pragma unroll
            for (int np = 0; np < DQK / 16; ++np) {
                const uint32_t* af = aw[0];
                if constexpr (BAND)
                    if (np * 16 >= g.band_split) af = aw[1];
                uint32_t bq[4];
                attn::load_b_kn(bq, q_s, DQK + kPad, np * 16, kk * 16, lane);
                attn::mma16816(acc[2 * np], af, bq[0], bq[1]);
                attn::mma16816(acc[2 * np + 1], af, bq[2], bq[3]);
            }
        }
    }

    add_scaled_rows<DQK>(a.dk + size_t(b) * g.T * g.k_stride + size_t(hk) * DQK, g.k_stride, k0 + wrow, acc, g, lane);
}

template <int DQK, bool BAND>
void launch_dk(const Geom& g, const SelectArgs& a, cudaStream_t s) {
    const size_t smem = sizeof(DkTileSmem<DQK, BAND>);
    allow_smem<ract_select_dk_kernel<DQK, BAND>>(smem);
    const dim3 grid(unsigned((g.T + rowstats::kBC - 1) / rowstats::kBC), unsigned(g.B * g.Hkv));
    ract_select_dk_kernel<DQK, BAND><<<grid, rowstats::kThreads, smem, s>>>(g, a);
    GPT_CUDA_LAUNCHED("ract_select_dk_kernel");
}

template <int DQK>
void launch_select(const Geom& g, const SelectArgs& a, cudaStream_t s) {
    const size_t rows = size_t(g.B) * g.T * g.Hq, threads = 32 * kSelWarps;
    ract_select_dq_kernel<DQK><<<unsigned((rows * kGroup + threads - 1) / threads), unsigned(threads), 0, s>>>(g, a);
    GPT_CUDA_LAUNCHED("ract_select_dq_kernel");
    if (g.band > 0) launch_dk<DQK, true>(g, a, s);
    else launch_dk<DQK, false>(g, a, s);
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
    s.w = static_cast<float*>(e.scratch(nh * slots * sizeof(float) + 256));
    if (a.Dqk == 64) launch_select<64>(g, s, e.stream);
    else launch_select<128>(g, s, e.stream);
}

}  // namespace variant
}  // namespace gpt::cuda
