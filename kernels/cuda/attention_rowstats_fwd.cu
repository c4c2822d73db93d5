// Forward row statistics without the [T, T] probabilities (ops.h ract_gate_fwd, topk_rows):
//  * ract_stat_kernel: one block per (64 query rows, batch, head); it streams the key tiles,
//    recomputes the logits with tensor cores and keeps the row's statistic online: a running
//    top-8 of the logits (top-k of probabilities = top-k of logits; the quad's lists are merged at
//    the end), or sum P (lse - x) (entropy), or sum P^2 (rms).
//  * headmean_kernel: one block per (64 query rows, batch); for each key tile it loops over the
//    heads, sums P / H in registers (the head-mean tile), then updates the same statistics on it:
//    M2's renormalised top-8 and RA-CT's head_average statistic.
// Every output is written by one thread after fixed-order reductions: deterministic.
#include <string>

#include "cuda/attention_rowstats.cuh"
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace rowstats {
namespace {

__device__ __forceinline__ float sigmoidf(float z) { return 1.f / (1.f + expf(-z)); }

// The statistic of a finished row from its merged top list (topk/max) or its quad-summed
// accumulator (entropy: sum P (lse - x) or -sum P log P; rms: sum P^2). Top values are raw dot
// products q.k (logits = scale times them) when values_are_dots (per-head rows), probabilities
// otherwise (head-mean rows).
__device__ __forceinline__ float finish_stat(RactStat stat, const TopK& m, float acc, int i, int topk,
                                             float lse, float scale, bool values_are_dots) {
    switch (stat) {
        case RactStat::topk:
        case RactStat::max: {
            const int kk = min(stat == RactStat::max ? 1 : topk, i + 1);
            float s = 0.f;
#pragma unroll
            for (int r = 0; r < kMaxSel; ++r)
                if (r < kk) s += values_are_dots ? expf(m.v[r] * scale - lse) : m.v[r];
            return s;
        }
        case RactStat::entropy: return acc;
        case RactStat::rms: return sqrtf(acc / float(i + 1));
    }
    return 0.f;
}

struct GateOut {
    float* stat;       // [B*T, Hq]
    bf16* gate;        // [B*T, Hq]
    int32_t* sel;      // [B*T, Hsel, slots] or null
    const float *scale, *bias;
    RactStat stat_kind;
    int topk, slots;
};

// Per-head statistic. STAT is the RactStat as an int (one specialisation per statistic keeps the
// inner loop free of branches).
// Four blocks per SM: the first tile's own bound (topk_insert_tile<true>) took the top-k kernel
// from 126 to 146 registers (three blocks, slower than without it); capped, 128 and no spills.
template <int DQK, int STAT>
__global__ void __launch_bounds__(kThreads, 4) ract_stat_kernel(Geom g, GateOut o) {
    constexpr RactStat kStat = RactStat(STAT);
    constexpr bool kTop = kStat == RactStat::topk || kStat == RactStat::max;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
    bf16* sK = sQ + kTile<DQK>;   // two buffers

    const int q_tile = gridDim.x - 1 - blockIdx.x;   // the longest rows first
    const int bh = blockIdx.y, b = bh / g.Hq, h = bh % g.Hq, hk = h / (g.Hq / g.Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, t = lane % 4;
    const int q0 = q_tile * kBR, wrow = warp * 16;
    const bf16* qg = g.q + size_t(b) * g.T * g.q_stride + size_t(h) * DQK;
    const bf16* kg = g.k + size_t(b) * g.T * g.k_stride + size_t(hk) * DQK;
    const int n_tiles = (min(q0 + kBR, g.T) - 1) / kBC + 1;

    attn::load_tile<kBR, DQK, kThreads>(sQ, qg, g.q_stride, q0, g.T);
    attn::load_tile<kBC, DQK, kThreads>(sK, kg, g.k_stride, 0, g.T);
    attn::cp_async_commit();

    int row[2];
    float lse[2], lse2[2], acc[2] = {0.f, 0.f};
    TopK top[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row[r] = q0 + wrow + gq + 8 * r;
        lse[r] = row[r] < g.T ? g.lse[(size_t(b) * g.Hq + h) * g.T + row[r]] : 0.f;
        lse2[r] = lse[r] * kLog2e;
        topk_init(top[r]);
    }

    for (int kt = 0; kt < n_tiles; ++kt) {
        const int buf = kt & 1;
        if (kt + 1 < n_tiles) {
            attn::load_tile<kBC, DQK, kThreads>(sK + (buf ^ 1) * kTile<DQK>, kg, g.k_stride, (kt + 1) * kBC, g.T);
            attn::cp_async_commit();
            attn::cp_async_wait<1>();
        } else {
            attn::cp_async_wait<0>();
        }
        __syncthreads();
        const int k0 = kt * kBC;
        float s[kBC / 8][4];
        dot_tile<DQK, false>(s, g, sQ, wrow, sK + buf * kTile<DQK>, q0 + wrow, k0, lane);
        if constexpr (kTop) {
            if (kt == 0) topk_insert_tile<true>(top, s, k0, row, lane);
            else topk_insert_tile<false>(top, s, k0, row, lane);
        } else {
#pragma unroll
            for (int r = 0; r < 2; ++r)
#pragma unroll
                for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
                    for (int e = 2 * r; e < 2 * r + 2; ++e) {
                        if (k0 + nt * 8 + 2 * t + (e & 1) > row[r]) continue;
                        const float p = attn::fast_exp2(fmaf(s[nt][e], g.scale_log2, -lse2[r]));
                        acc[r] += kStat == RactStat::entropy ? p * (lse[r] - s[nt][e] * g.scale) : p * p;
                    }
        }
        __syncthreads();   // this buffer is refilled by the next iteration's prefetch
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        TopK m;
        topk_init(m);
        if constexpr (kTop) topk_quad_merge(top[r], m);
        const float a = quad_sum(acc[r]);
        if (t != 0 || row[r] >= g.T) continue;
        const int i = row[r];
        const size_t on = (size_t(b) * g.T + i) * g.Hq + h;
        const float st = finish_stat(kStat, m, a, i, o.topk, lse[r], g.scale, true);
        o.stat[on] = st;
        o.gate[on] = __float2bfloat16(sigmoidf(st * o.scale[h] + o.bias[h]));
        if constexpr (kTop) {
            const int kk = min(o.slots, i + 1);
            for (int s = 0; s < o.slots; ++s) o.sel[on * o.slots + s] = s < kk ? m.c[s] : -1;
        }
    }
}

// What headmean_kernel writes: M2's rows (m2_idx non-null) or RA-CT's head_average gate, and
// where the rows of a query tile split over several blocks leave their partial state.
struct HeadMeanOut {
    int32_t* m2_idx;   // [B*T, topk]: global row b*T + j, largest first, -1 unused
    float* m2_wts;     // [B*T, topk]: renormalised
    GateOut ract;
    int chunk_tiles;   // key tiles per block (a query tile with more is split: headmean_job)
    int max_chunks;    // the most blocks one query tile is split over
    float* part_v;     // [B*T, max_chunks, kMaxSel] a chunk's merged top list, values
    int32_t* part_c;   // [B*T, max_chunks, kMaxSel] and columns
    float* part_acc;   // [B*T, max_chunks] its quad-summed accumulator (entropy, rms)
};

// The query tile and the key tiles [kt_begin, kt_end) block `job` of a batch row covers. A
// block per query tile took 16 times longer on the last tile than on the first, and with 512 blocks
// on ~400 resident slots at GPT-2 B = 32 the longest blocks set the kernel's time; chunks of at
// most chunk_tiles key tiles (half the tiles) even them out. Jobs go from the last query tile
// down (the longest first).
struct HeadMeanJob {
    int q_tile, kt_begin, kt_end, chunk, n_chunks;
};
__device__ __forceinline__ HeadMeanJob headmean_job(int job, int n_qt, int chunk_tiles) {
    for (int qt = n_qt - 1; qt > 0; --qt) {
        const int nc = (qt + chunk_tiles) / chunk_tiles;   // ceil((qt + 1) / chunk_tiles)
        if (job < nc) return {qt, job * chunk_tiles, min((job + 1) * chunk_tiles, qt + 1), job, nc};
        job -= nc;
    }
    return {0, 0, 1, 0, 1};
}

// One row's outputs from its merged top list m and accumulator a (called by one thread per row).
__device__ void finish_headmean_row(const Geom& g, const HeadMeanOut& o, int b, int i, const TopK& m, float a) {
    const size_t n = size_t(b) * g.T + i;
    if (o.m2_idx != nullptr) {
        const int k = o.ract.topk, kk = min(k, i + 1);
        float sum = 0.f;
        for (int s = 0; s < kk; ++s) sum += m.v[s];
        for (int s = 0; s < k; ++s) {
            o.m2_idx[n * k + s] = s < kk ? b * g.T + m.c[s] : -1;
            o.m2_wts[n * k + s] = s < kk ? m.v[s] / sum : 0.f;
        }
        return;
    }
    const GateOut& go = o.ract;
    const int H = g.Hq;
    const float st = finish_stat(go.stat_kind, m, a, i, go.topk, 0.f, 1.f, false);
    for (int h = 0; h < H; ++h) {
        go.stat[n * H + h] = st;
        go.gate[n * H + h] = __float2bfloat16(sigmoidf(st * go.scale[h] + go.bias[h]));
    }
    if (go.stat_kind == RactStat::topk || go.stat_kind == RactStat::max) {
        const int kk = min(go.slots, i + 1);
        for (int s = 0; s < go.slots; ++s) go.sel[n * go.slots + s] = s < kk ? m.c[s] : -1;
    }
}

template <int DQK>
__global__ void __launch_bounds__(kThreads) headmean_kernel(Geom g, HeadMeanOut o) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16* sQ = reinterpret_cast<bf16*>(smem_raw);                   // two buffers
    bf16* sK = sQ + 2 * kTile<DQK>;                                  // two buffers
    float* sLse2 = reinterpret_cast<float*>(sK + 2 * kTile<DQK>);   // [H][kBR]: log2-unit lse of the rows

    const int b = blockIdx.x, H = g.Hq, group = g.Hq / g.Hkv;
    const HeadMeanJob job = headmean_job(blockIdx.y, (g.T + kBR - 1) / kBR, o.chunk_tiles);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, t = lane % 4;
    const int q0 = job.q_tile * kBR, wrow = warp * 16;
    const bool m2 = o.m2_idx != nullptr;
    const RactStat kind = m2 ? RactStat::topk : o.ract.stat_kind;
    const bool top_stat = kind == RactStat::topk || kind == RactStat::max;
    const float inv_h = 1.f / float(H);

    // Step (kt, h): head h's query tile and the key tile kt of its kv head; the key tiles outer,
    // the heads inner, counted without divisions.
    auto issue = [&](int kt, int h, int buf) {
        load_head_pair<DQK>(sQ + buf * kTile<DQK>, sK + buf * kTile<DQK>, g, b, h, group == 1 ? h : h / group, q0,
                            kt * kBC);
    };
    issue(job.kt_begin, 0, 0);
    // Every head's lse of the block's rows, read once (the first step's barrier publishes it): a
    // global load per step sat in front of the exponentials.
    for (int x = threadIdx.x; x < H * kBR; x += kThreads) {
        const int h = x / kBR, i = q0 + x % kBR;
        sLse2[x] = i < g.T ? g.lse[(size_t(b) * g.Hq + h) * g.T + i] * kLog2e : 0.f;
    }

    int row[2];
    float acc[2] = {0.f, 0.f};
    TopK top[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row[r] = q0 + wrow + gq + 8 * r;
        topk_init(top[r]);
    }
    int buf = 0;
    for (int kt = job.kt_begin; kt < job.kt_end; ++kt) {
        const int k0 = kt * kBC;
        float pbar[kBC / 8][4];
#pragma unroll
        for (int nt = 0; nt < kBC / 8; ++nt) pbar[nt][0] = pbar[nt][1] = pbar[nt][2] = pbar[nt][3] = 0.f;
        for (int h = 0; h < H; ++h, buf ^= 1) {
            const bool last_head = h + 1 == H;
            step_ready(!last_head || kt + 1 < job.kt_end,
                       [&] { issue(last_head ? kt + 1 : kt, last_head ? 0 : h + 1, buf ^ 1); });
            const float lse2[2] = {sLse2[h * kBR + wrow + gq], sLse2[h * kBR + wrow + gq + 8]};
            float s[kBC / 8][4];
            head_tile_probs<DQK>(s, g, sQ + buf * kTile<DQK>, sK + buf * kTile<DQK>, q0, wrow, k0, row, lse2, lane);
#pragma unroll
            for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) pbar[nt][e] += s[nt][e] * inv_h;
            __syncthreads();   // this buffer is refilled by the next step's prefetch
        }
        // The head-mean tile is complete: its statistics.
        if (top_stat) {
            // A chunk's first tile meets empty lists, wherever the chunk starts.
            if (kt == job.kt_begin) topk_insert_tile<true>(top, pbar, k0, row, lane);
            else topk_insert_tile<false>(top, pbar, k0, row, lane);
        } else {
#pragma unroll
            for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int j = k0 + nt * 8 + 2 * t + (e & 1), r = e >> 1;
                    if (j > row[r]) continue;
                    const float pv = pbar[nt][e];
                    if (kind == RactStat::entropy) acc[r] -= pv > 0.f ? pv * logf(pv) : 0.f;
                    else acc[r] += pv * pv;
                }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        TopK m;
        topk_init(m);
        if (top_stat) topk_quad_merge(top[r], m);   // every lane takes part (shuffles), used or not
        const float a = quad_sum(acc[r]);
        if (t != 0 || row[r] >= g.T) continue;
        if (job.n_chunks == 1) {
            finish_headmean_row(g, o, b, row[r], m, a);
            continue;
        }
        const size_t at = (size_t(b) * g.T + row[r]) * o.max_chunks + job.chunk;
#pragma unroll
        for (int s = 0; s < kMaxSel; ++s) {
            o.part_v[at * kMaxSel + s] = m.v[s];
            o.part_c[at * kMaxSel + s] = m.c[s];
        }
        o.part_acc[at] = a;
    }
}

// The rows of split query tiles: their chunks' top lists merged (chunks hold increasing columns,
// so an earlier chunk's entry wins a tie, as in one block's lists), accumulators summed in chunk
// order, then the row's outputs. One thread per row.
__global__ void headmean_merge_kernel(Geom g, HeadMeanOut o, int first_row) {
    const int i = first_row + int(blockIdx.x * blockDim.x + threadIdx.x), b = blockIdx.y;
    if (i >= g.T) return;
    const int qt = i / kBR, nc = (qt + o.chunk_tiles) / o.chunk_tiles;
    if (nc == 1) return;   // finished by its block
    const size_t at = (size_t(b) * g.T + i) * o.max_chunks;
    int pos[8] = {};   // next entry of each chunk's list (max_chunks <= 8: launch_headmean)
    TopK m;
    float a = 0.f;
    for (int c = 0; c < nc; ++c) a += o.part_acc[at + c];
    for (int s = 0; s < kMaxSel; ++s) {
        int best = 0;
        float bv = -INFINITY;
        int bc = -1;
        for (int c = 0; c < nc; ++c) {
            if (pos[c] >= kMaxSel) continue;
            const float v = o.part_v[(at + c) * kMaxSel + pos[c]];
            const int col = o.part_c[(at + c) * kMaxSel + pos[c]];
            if (col >= 0 && (bc < 0 || v > bv)) {   // strictly greater: the earlier chunk keeps a tie
                best = c;
                bv = v;
                bc = col;
            }
        }
        m.v[s] = bv;
        m.c[s] = bc;
        if (bc >= 0) ++pos[best];
    }
    finish_headmean_row(g, o, b, i, m, a);
}

template <auto Kernel, class Out>
void launch(dim3 grid, size_t smem, cudaStream_t stream, const char* name, const Geom& g, const Out& out) {
    allow_smem<Kernel>(smem);
    Kernel<<<grid, kThreads, smem, stream>>>(g, out);
    GPT_CUDA_LAUNCHED(name);
}

template <int DQK>
void launch_stat(const Geom& g, const GateOut& o, cudaStream_t s) {
    const dim3 grid((g.T + kBR - 1) / kBR, g.B * g.Hq);
    const size_t smem = size_t(3) * kTile<DQK> * sizeof(bf16);
    switch (o.stat_kind) {
        case RactStat::topk: launch<ract_stat_kernel<DQK, 0>>(grid, smem, s, "ract_stat_kernel", g, o); break;
        case RactStat::max: launch<ract_stat_kernel<DQK, 1>>(grid, smem, s, "ract_stat_kernel", g, o); break;
        case RactStat::entropy: launch<ract_stat_kernel<DQK, 2>>(grid, smem, s, "ract_stat_kernel", g, o); break;
        case RactStat::rms: launch<ract_stat_kernel<DQK, 3>>(grid, smem, s, "ract_stat_kernel", g, o); break;
    }
}

// Splits the query tiles' key ranges into chunks of half the tiles (headmean_job), runs the
// blocks, then merges the split rows' partial lists.
template <int DQK>
void launch_headmean(const VariantEnv& e, const Geom& g, HeadMeanOut o) {
    const int n_qt = (g.T + kBR - 1) / kBR;
    o.chunk_tiles = (n_qt + 1) / 2;
    o.max_chunks = (n_qt + o.chunk_tiles - 1) / o.chunk_tiles;   // 1 or 2
    int jobs = 0;
    for (int qt = 0; qt < n_qt; ++qt) jobs += (qt + o.chunk_tiles) / o.chunk_tiles;
    if (o.max_chunks > 1) {
        const size_t rows = size_t(g.B) * g.T * o.max_chunks;
        variant::ScratchPlan sp;
        const size_t at_v = sp.add(rows * kMaxSel), at_c = sp.add(rows * kMaxSel), at_acc = sp.add(rows);
        float* base = sp.take(e);
        o.part_v = base + at_v;
        o.part_c = reinterpret_cast<int32_t*>(base + at_c);
        o.part_acc = base + at_acc;
    }
    const dim3 grid(g.B, jobs);
    const size_t smem = size_t(4) * kTile<DQK> * sizeof(bf16) + size_t(g.Hq) * kBR * sizeof(float);
    launch<headmean_kernel<DQK>>(grid, smem, e.stream, "headmean_kernel", g, o);
    if (o.max_chunks > 1) {
        const int first_row = o.chunk_tiles * kBR, n = g.T - first_row;   // rows of tiles with two chunks
        headmean_merge_kernel<<<dim3((n + 127) / 128, g.B), 128, 0, e.stream>>>(g, o, first_row);
        GPT_CUDA_LAUNCHED("headmean_merge_kernel");
    }
}

}  // namespace

Geom make_geom(const VariantEnv& e, Ten q, Ten k, Ten lse, const AttnDims& d, const char* op) {
    variant::check_positive(op, {d.B, d.T, d.Hq, d.Hkv, d.Dqk});
    const std::string pre = std::string("cuda-bf16 ") + op + ": ";
    GPT_CHECK(dqk_supported(d.Dqk), pre + "Dqk = " + std::to_string(d.Dqk) +
                                        " unsupported (the row-statistics kernels take 64, 80, 128 or 144, "
                                        "like the attention kernels)");
    GPT_CHECK(d.Hq % d.Hkv == 0, pre + "Hkv must divide Hq");
    GPT_CHECK(d.q_stride % 8 == 0 && d.k_stride % 8 == 0 && d.q_stride >= d.Hq * d.Dqk &&
                  d.k_stride >= d.Hkv * d.Dqk,
              pre + "q/k row strides must be multiples of 8 covering the heads");
    GPT_CHECK(d.band >= 0 && (d.band == 0 || (d.band_split >= 0 && d.band_split <= d.Dqk && d.band_split % 16 == 0)),
              pre + "band_split must be a multiple of 16 in [0, Dqk]");
    GPT_CHECK(d.scale > 0.f, pre + "scale must be positive");
    const size_t rows = size_t(d.B) * d.T;
    Geom g{};
    g.q = variant::act(e, q, variant::strided_extent(rows, d.q_stride, size_t(d.Hq) * d.Dqk), op, "q");
    g.k = variant::act(e, k, variant::strided_extent(rows, d.k_stride, size_t(d.Hkv) * d.Dqk), op, "k");
    GPT_CHECK(reinterpret_cast<uintptr_t>(g.q) % 16 == 0 && reinterpret_cast<uintptr_t>(g.k) % 16 == 0,
              pre + "q and k must start on 16-byte boundaries (Act offsets multiple of 8)");
    g.lse = variant::f32(e, lse, rows * d.Hq, op, "lse");
    g.B = d.B, g.T = d.T, g.Hq = d.Hq, g.Hkv = d.Hkv, g.q_stride = d.q_stride, g.k_stride = d.k_stride;
    g.scale = d.scale, g.scale_log2 = d.scale * kLog2e;
    g.band = d.band, g.band_split = d.band > 0 ? d.band_split : d.Dqk;
    return g;
}

}  // namespace rowstats

namespace variant {

void ract_gate_fwd(const VariantEnv& e, Ten stat, Ten gate, Ten sel, Ten q, Ten k, Ten lse, Ten scale, Ten bias,
                   const AttnDims& a, const RactDims& d) {
    using namespace rowstats;
    const char* op = "ract_gate_fwd";
    const Geom g = make_geom(e, q, k, lse, a, op);
    check_positive(op, {d.B, d.T, d.H});
    GPT_CHECK(d.B == a.B && d.T == a.T && d.H == a.Hq, "cuda-bf16 ract_gate_fwd: the RA-CT and attention dims disagree");
    const int slots = ract_sel_slots(d);
    GPT_CHECK(slots <= kMaxSel, "cuda-bf16 ract_gate_fwd: model.ract.topk = " + std::to_string(d.topk) +
                                    " above the kernels' running top-" + std::to_string(kMaxSel));
    const size_t nh = size_t(d.B) * d.T * d.H;
    GateOut o{};
    o.stat = f32(e, stat, nh, op, "stat");
    o.gate = act(e, gate, nh, op, "gate");
    o.sel = slots > 0 ? index(e, sel, size_t(d.B) * d.T * (d.head_average ? 1 : d.H) * slots, op, "sel") : nullptr;
    o.scale = f32(e, scale, d.H, op, "scale");
    o.bias = f32(e, bias, d.H, op, "bias");
    o.stat_kind = d.stat;
    o.topk = d.topk;
    o.slots = slots;
    if (d.head_average) {
        const HeadMeanOut ho{nullptr, nullptr, o};
        with_dqk(a.Dqk, [&](auto D) { launch_headmean<decltype(D)::value>(e, g, ho); });
    } else {
        with_dqk(a.Dqk, [&](auto D) { launch_stat<decltype(D)::value>(g, o, e.stream); });
    }
}

void topk_rows(const VariantEnv& e, Ten idx, Ten wts, Ten q, Ten k, Ten lse, const AttnDims& a, int topk) {
    using namespace rowstats;
    const char* op = "topk_rows";
    const Geom g = make_geom(e, q, k, lse, a, op);
    check_positive(op, {topk});
    GPT_CHECK(topk <= kMaxSel, "cuda-bf16 topk_rows: k = " + std::to_string(topk) + " above the kernel's running top-" +
                                   std::to_string(kMaxSel));
    const size_t nk = size_t(a.B) * a.T * topk;
    HeadMeanOut o{};
    o.m2_idx = index(e, idx, nk, op, "idx");
    o.m2_wts = f32(e, wts, nk, op, "wts");
    o.ract.topk = topk;
    with_dqk(a.Dqk, [&](auto D) { launch_headmean<decltype(D)::value>(e, g, o); });
}

}  // namespace variant
}  // namespace gpt::cuda
