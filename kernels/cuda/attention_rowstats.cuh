// Flash-style statistics of attention rows, never materialising the [T, T] probabilities (RA-CT's
// gate statistic, M2's head-mean top-8; attention_rowstats_fwd.cu / _bwd.cu). The logits are
// recomputed tile by tile with the attention kernels' tensor-core building blocks (mma.sync
// m16n8k16, ldmatrix, cp.async from attention_common.cuh, included read-only), and the probability
// is exact from the forward's log-sum-exp: P = exp(scale q.k - lse), before dropout (ops.h).
//
// Layout shared by the kernels: a block of 4 warps covers 64 rows (queries, or keys in the dK
// pass), a warp owns 16 rows; its 16 x 64 accumulator s[nt][e] holds rows g and g + 8
// (g = lane / 4) and columns nt * 8 + 2t + (e & 1) (t = lane % 4), so the four lanes of a quad
// share a row: per-row reductions end with two xor-shuffles over the quad.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention_common.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda::rowstats {

using bf16 = __nv_bfloat16;
using attn::kPad;

constexpr int kWarps = 4, kThreads = 32 * kWarps, kBR = 64, kBC = 64;
constexpr int kMaxSel = 8;   // slots of the running top-k (RA-CT topk <= 8, M2's 8)
constexpr float kLog2e = 1.4426950408889634f;

struct Geom {
    const bf16 *q, *k;
    const float* lse;   // [B, Hq, T]
    int B, T, Hq, Hkv, q_stride, k_stride;
    float scale, scale_log2;
    int band, band_split;   // band_split = Dqk when there is no band
};

template <int DQK>
constexpr int kTile = kBR * (DQK + kPad);   // bf16 elements of one 64-row tile in shared memory

// The head-mean kernels' step loads: head h's query tile at q0 and the key tile at k0 of its key
// head hk, into one buffer of each (one cp.async group).
template <int DQK>
__device__ __forceinline__ void load_head_pair(bf16* sQ, bf16* sK, const Geom& g, int b, int h, int hk, int q0,
                                               int k0) {
    attn::load_tile<kBR, DQK, kThreads>(sQ, g.q + size_t(b) * g.T * g.q_stride + size_t(h) * DQK, g.q_stride, q0,
                                        g.T);
    attn::load_tile<kBC, DQK, kThreads>(sK, g.k + size_t(b) * g.T * g.k_stride + size_t(hk) * DQK, g.k_stride, k0,
                                        g.T);
    attn::cp_async_commit();
}

// The double-buffered step of the streaming kernels: prefetch the next step (issue_next) if there
// is one while this step's group completes, then make its buffer visible to the block.
template <class F>
__device__ __forceinline__ void step_ready(bool more, F&& issue_next) {
    if (more) {
        issue_next();
        attn::cp_async_wait<1>();
    } else {
        attn::cp_async_wait<0>();
    }
    __syncthreads();
}

// Calls f(std::integral_constant<int, DQK>{}) for the q/k widths the kernels are built for: 64 and 128,
// and 80 and 144 (the RA folds with the discoverability channel padded to 16). make_geom has
// checked the width already.
template <class F>
void with_dqk(int dqk, F&& f) {
    switch (dqk) {
        case 64: f(std::integral_constant<int, 64>{}); break;
        case 80: f(std::integral_constant<int, 80>{}); break;
        case 128: f(std::integral_constant<int, 128>{}); break;
        default: f(std::integral_constant<int, 144>{}); break;
    }
}
inline bool dqk_supported(int dqk) { return dqk == 64 || dqk == 80 || dqk == 128 || dqk == 144; }

// Checks the shapes the row-statistics kernels support (those of the attention kernels: Dqk 64, 80,
// 128 or 144, 16-byte rows, band_split a multiple of 16) and resolves q, k, lse (attention_rowstats_fwd.cu).
Geom make_geom(const VariantEnv& e, Ten q, Ten k, Ten lse, const AttnDims& d, const char* op);

// s += A B^T over k-steps [kk_begin, kk_end) for the warp's 16 rows at a_row0 of sA against the
// 64 rows of sB (both [row][k], k contiguous). Rolled k loop (instruction cache).
template <int DQK>
__device__ __forceinline__ void mma_steps(float (&s)[kBC / 8][4], const bf16* sA, int a_row0, const bf16* sB,
                                          int kk_begin, int kk_end, int lane) {
#pragma unroll 1
    for (int kk = kk_begin; kk < kk_end; ++kk) {
        uint32_t a[4];
        attn::load_a(a, sA, DQK + kPad, a_row0, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < kBC / 16; ++np) {
            uint32_t b[4];
            attn::load_b_nk(b, sB, DQK + kPad, np * 16, kk * 16, lane);
            attn::mma16816(s[2 * np], a, b[0], b[1]);
            attn::mma16816(s[2 * np + 1], a, b[2], b[3]);
        }
    }
}

// How a tile pair meets the reciprocal band (as attention_common.cuh's band_mode).
enum BandMode { kBandAll = 0, kBandNone = 1, kBandMixed = 2 };
__device__ __forceinline__ int band_mode(const Geom& g, int q_lo, int q_hi, int k_lo, int k_hi) {
    if (g.band <= 0) return kBandAll;
    if (q_hi - k_lo <= g.band) return kBandAll;
    if (q_lo - k_hi > g.band) return kBandNone;
    return kBandMixed;
}

// Query and key index of accumulator entry (nt, e): rows are queries, or keys when KEY_ROWS.
template <bool KEY_ROWS>
__device__ __forceinline__ void entry_ij(int row0, int col0, int nt, int e, int g, int t, int& i, int& j) {
    const int r = row0 + g + 8 * (e >> 1), c = col0 + nt * 8 + 2 * t + (e & 1);
    i = KEY_ROWS ? c : r;
    j = KEY_ROWS ? r : c;
}

// Zeroes the entries of the warp's 16 x 64 accumulator outside the reciprocal band (i - j > band).
template <bool KEY_ROWS>
__device__ __forceinline__ void mask_outside_band(float (&x)[kBC / 8][4], const Geom& g, int row0, int col0,
                                                  int lane) {
    const int gg = lane / 4, t = lane % 4;
#pragma unroll
    for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            int i, j;
            entry_ij<KEY_ROWS>(row0, col0, nt, e, gg, t, i, j);
            if (i - j > g.band) x[nt][e] = 0.f;
        }
}

// The warp's raw dot products s = a.b for its 16 rows (global index row0 = first row of the warp)
// x 64 columns (col0): the banded reciprocal dims first, masked to the band, then the plain dims
// (attention_fwd's order). Returns the pair's band mode.
template <int DQK, bool KEY_ROWS>
__device__ __forceinline__ int dot_tile(float (&s)[kBC / 8][4], const Geom& g, const bf16* sA, int a_row0,
                                        const bf16* sB, int row0, int col0, int lane) {
#pragma unroll
    for (int nt = 0; nt < kBC / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    const int q_lo = KEY_ROWS ? col0 : row0, q_hi = q_lo + (KEY_ROWS ? kBC : 16) - 1;
    const int k_lo = KEY_ROWS ? row0 : col0, k_hi = k_lo + (KEY_ROWS ? 16 : kBC) - 1;
    const int mode = band_mode(g, q_lo, q_hi, k_lo, k_hi);
    const int split = g.band > 0 ? g.band_split / 16 : DQK / 16;
    if (mode != kBandNone) mma_steps<DQK>(s, sA, a_row0, sB, split, DQK / 16, lane);
    if (mode == kBandMixed) mask_outside_band<KEY_ROWS>(s, g, row0, col0, lane);
    mma_steps<DQK>(s, sA, a_row0, sB, 0, split, lane);
    return mode;
}

// Head h's log-sum-exp of the lane's rows, in log2 units (0 past T).
__device__ __forceinline__ void head_lse2(float (&lse2)[2], const Geom& g, int b, int h, const int (&row)[2]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) lse2[r] = row[r] < g.T ? g.lse[(size_t(b) * g.Hq + h) * g.T + row[r]] * kLog2e : 0.f;
}

// A head's probabilities P = exp(scale q.k - lse) on the warp's 16 rows (row[] of the lane) x the
// 64 keys from k0, 0 above the diagonal (lse2: head_lse2): the head-mean kernels' per-step tile.
// Only a tile that reaches the warp's first row tests columns.
template <int DQK>
__device__ __forceinline__ void head_tile_probs(float (&p)[kBC / 8][4], const Geom& g, const bf16* sQ, const bf16* sK,
                                                int q0, int wrow, int k0, const int (&row)[2],
                                                const float (&lse2)[2], int lane) {
    dot_tile<DQK, false>(p, g, sQ, wrow, sK, q0 + wrow, k0, lane);
    const int t = lane % 4;
    auto probs = [&](auto test_columns) {
#pragma unroll
        for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int j = k0 + nt * 8 + 2 * t + (e & 1);
                const float x = attn::fast_exp2(fmaf(p[nt][e], g.scale_log2, -lse2[e >> 1]));
                p[nt][e] = !test_columns || j <= row[e >> 1] ? x : 0.f;
            }
    };
    if (__all_sync(0xffffffffu, k0 + kBC - 1 <= row[0])) probs(std::false_type{});
    else probs(std::true_type{});
}

// acc (16 x DQK of the warp) += X . sB where X is the warp's 16 x 64 accumulator (columns = the k
// dim of this product) and sB is [64][DQK] (the 64 rows of the tile the columns index). With a
// band, dims [band_split, DQK) take only the in-band entries: X is masked in place for them.
template <int DQK, bool KEY_ROWS>
__device__ __forceinline__ void mma_xb(float (&acc)[DQK / 8][4], float (&x)[kBC / 8][4], const bf16* sB,
                                       const Geom& g, int mode, int row0, int col0, int lane) {
    const int split16 = g.band > 0 ? g.band_split / 16 : DQK / 16;
#pragma unroll
    for (int phase = 0; phase < 2; ++phase) {
        if (phase == 1) {
            if (split16 == DQK / 16 || mode == kBandNone) break;
            if (mode == kBandMixed) mask_outside_band<KEY_ROWS>(x, g, row0, col0, lane);
        }
#pragma unroll
        for (int j = 0; j < kBC / 16; ++j) {
            uint32_t a[4];
            attn::c_to_a<kBC / 8>(a, x, j);
#pragma unroll
            for (int np = 0; np < DQK / 16; ++np) {
                if ((phase == 0) != (np < split16)) continue;
                uint32_t b[4];
                attn::load_b_kn(b, sB, DQK + kPad, np * 16, j * 16, lane);
                attn::mma16816(acc[2 * np], a, b[0], b[1]);
                attn::mma16816(acc[2 * np + 1], a, b[2], b[3]);
            }
        }
    }
}

// A running top-kMaxSel of (value, column), sorted descending. Equal values keep insertion order,
// and every thread inserts its columns in increasing order: ties go to the lowest column.
struct TopK {
    float v[kMaxSel];
    int c[kMaxSel];
};
__device__ __forceinline__ void topk_init(TopK& t) {
#pragma unroll
    for (int s = 0; s < kMaxSel; ++s) {
        t.v[s] = -INFINITY;
        t.c[s] = -1;
    }
}
// Inserts (x, col) if it beats the 8th value. Slot s keeps its entry when x does not exceed it
// (earlier entries win ties); the first slot that does not keep takes x and the rest move down
// one. Every slot is decided from the old list at once: a dependency chain of three operations,
// where bubbling x up the list was a chain of eight compare-and-swaps (the statistic kernels are
// latency-bound, docs/performance.md). A NaN or -inf x changes nothing.
__device__ __forceinline__ void topk_insert(TopK& t, float x, int col) {
    bool keep[kMaxSel];
#pragma unroll
    for (int s = 0; s < kMaxSel; ++s) keep[s] = !(x > t.v[s]);
#pragma unroll
    for (int s = kMaxSel - 1; s > 0; --s) {   // from the bottom: t.v[s - 1] is still the old one
        t.v[s] = keep[s] ? t.v[s] : keep[s - 1] ? x : t.v[s - 1];
        t.c[s] = keep[s] ? t.c[s] : keep[s - 1] ? col : t.c[s - 1];
    }
    t.v[0] = keep[0] ? t.v[0] : x;
    t.c[0] = keep[0] ? t.c[0] : col;
}
// Merges the lists of the quad sharing a row (lanes ^1, ^2): every lane gets the row's top list.
// Columns are unique across the quad, so exactly one lane pops each winner.
__device__ __forceinline__ void topk_quad_merge(TopK& t, TopK& out) {
#pragma unroll
    for (int r = 0; r < kMaxSel; ++r) {
        float bv = t.v[0];
        int bc = t.c[0];
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oc = __shfl_xor_sync(0xffffffffu, bc, o);
            if (ov > bv || (ov == bv && oc >= 0 && (bc < 0 || oc < bc))) {
                bv = ov;
                bc = oc;
            }
        }
        out.v[r] = bv;
        out.c[r] = bc;
        if (bc >= 0 && bc == t.c[0]) {
#pragma unroll
            for (int s = 0; s < kMaxSel - 1; ++s) {
                t.v[s] = t.v[s + 1];
                t.c[s] = t.c[s + 1];
            }
            t.v[kMaxSel - 1] = -INFINITY;
            t.c[kMaxSel - 1] = -1;
        }
    }
}

// A lower bound on the 8th largest value of the quad's four lists (sorted, descending), each a
// way for 8 of their values to be at or above it: one list's 8th (max over the quad), two lists'
// 4th (the second largest over the quad), all four lists' 2nd (the min). The last is usually
// close to the row's true 8th, so far fewer of a new tile's entries pass it than pass the first
// alone (the 8th of a list that holds a quarter of the row).
__device__ __forceinline__ float quad_cut(const TopK& t) {
    static_assert(kMaxSel == 8, "the bounds below count to 8");
    float one = t.v[7], all = t.v[1], hi = t.v[3], lo = -INFINITY;
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
        one = fmaxf(one, __shfl_xor_sync(0xffffffffu, one, o));
        all = fminf(all, __shfl_xor_sync(0xffffffffu, all, o));
        const float oh = __shfl_xor_sync(0xffffffffu, hi, o), ol = __shfl_xor_sync(0xffffffffu, lo, o);
        lo = fmaxf(fminf(hi, oh), fmaxf(lo, ol));   // (hi, lo): the two largest 4th values so far
        hi = fmaxf(hi, oh);
    }
    return fmaxf(one, fmaxf(all, lo));
}

// Entry q (0..15) of row r of the lane's part of the warp's 16 x 64 tile, x[q / 2][2r + q % 2],
// picked by the bits of q (a tree of selects four deep, not a chain of sixteen).
__device__ __forceinline__ float tile_entry(const float (&x)[kBC / 8][4], int r, int q) {
    float l0[kBC / 8];
#pragma unroll
    for (int u = 0; u < kBC / 8; ++u) l0[u] = (q & 1) ? x[u][2 * r + 1] : x[u][2 * r];
    const float l1[4] = {(q & 2) ? l0[1] : l0[0], (q & 2) ? l0[3] : l0[2], (q & 2) ? l0[5] : l0[4],
                         (q & 2) ? l0[7] : l0[6]};
    const float l2[2] = {(q & 4) ? l1[1] : l1[0], (q & 4) ? l1[3] : l1[2]};
    return (q & 8) ? l2[1] : l2[0];
}

// Inserts both rows' entries of the warp's 16 x 64 tile (values x[nt][e], column k0 + nt * 8 + 2t +
// (e & 1), only columns <= row[r]) into the lane's two lists. (The per-head statistic passes raw
// dot products, not logits: the same order for a positive scale, one multiply less per entry.)
// Only values above a row's current cut can enter: quad_cut bounds the row's 8th value from below
// (the quad's lists hold 8 values at or above it, all from lower columns, which win ties). The
// warp then walks only the lanes' candidates, one per row per lane per round and in increasing
// column order (so ties keep going to the lowest column), instead of running every insertion for
// every entry: late in a row almost nothing passes the cut, and without the walk one passing lane
// made the whole warp run all 16 insertions. The two rows' cuts and insertions are independent
// chains, run side by side.
template <bool TILE_CUT>
__device__ __forceinline__ void topk_insert_tile(TopK (&t)[2], const float (&x)[kBC / 8][4], int k0,
                                                 const int (&row)[2], int lane) {
    static_assert(kBC == 64, "tile_entry picks from 16 entries per row");
    const int tq = lane % 4;
    const float cut[2] = {quad_cut(t[0]), quad_cut(t[1])};
    // TILE_CUT (a row's first tile, where the lists are empty and every entry would be inserted,
    // 16 rounds): also a lower bound from the tile itself, the smallest of the quad's four
    // second-largest entries (8 of the tile's entries are at or above it). Entries equal to it may
    // still win on their column: >=, not >. (ract_stat_kernel 6.34-6.44 -> 6.13 ms per GPT-2 step.)
    float floor_cut[2] = {-INFINITY, -INFINITY};
    if constexpr (TILE_CUT) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float m1 = -INFINITY, m2 = -INFINITY;
#pragma unroll
            for (int q = 0; q < kBC / 4; ++q) {
                const int col = k0 + (q / 2) * 8 + 2 * tq + (q & 1);
                const float v = col <= row[r] ? x[q / 2][2 * r + (q & 1)] : -INFINITY;
                m2 = fmaxf(m2, fminf(m1, v));
                m1 = fmaxf(m1, v);
            }
            m2 = fminf(m2, __shfl_xor_sync(0xffffffffu, m2, 1));
            floor_cut[r] = fminf(m2, __shfl_xor_sync(0xffffffffu, m2, 2));
        }
    }
    unsigned cand[2] = {0u, 0u};   // bit q = entry (nt = q / 2, e = 2r + q % 2)
    // Columns past a row occur only in tiles that reach the warp's first row (the diagonal's):
    // the other tiles skip the 32 column tests.
    const bool whole = __all_sync(0xffffffffu, k0 + kBC - 1 <= row[0]);
    auto collect = [&](auto test_columns) {
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int q = 0; q < kBC / 4; ++q) {
                const int col = k0 + (q / 2) * 8 + 2 * tq + (q & 1);
                const float v = x[q / 2][2 * r + (q & 1)];
                if ((!test_columns || col <= row[r]) && v > cut[r] && v >= floor_cut[r]) cand[r] |= 1u << q;
            }
    };
    if (whole) collect(std::false_type{});
    else collect(std::true_type{});
    while (__any_sync(0xffffffffu, (cand[0] | cand[1]) != 0u)) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int q = cand[r] ? __ffs(cand[r]) - 1 : 0;
            const float v = cand[r] ? tile_entry(x, r, q) : -INFINITY;
            cand[r] &= cand[r] - 1u;
            topk_insert(t[r], v, k0 + (q / 2) * 8 + 2 * tq + (q & 1));
        }
    }
}

// The kernels' epilogue: scale times the warp's 16 x DQK accumulator added into its rows row0 +
// lane / 4 and + 8 of the bf16 tensor at base (row stride `stride`, columns nt * 8 + 2t, +1),
// read-modify-write: dq and dk already hold the attention backward's gradient. Rows at or past T
// are skipped.
template <int DQK>
__device__ __forceinline__ void add_scaled_rows(bf16* base, int stride, int row0, const float (&acc)[DQK / 8][4],
                                                const Geom& g, int lane) {
    const int t = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int i = row0 + lane / 4 + 8 * r;
        if (i >= g.T) continue;
        bf16* dst = base + size_t(i) * stride;
#pragma unroll
        for (int nt = 0; nt < DQK / 8; ++nt) {
            __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(dst + nt * 8 + 2 * t);
            const float2 old = __bfloat1622float2(*p);
            *p = __floats2bfloat162_rn(old.x + g.scale * acc[nt][2 * r], old.y + g.scale * acc[nt][2 * r + 1]);
        }
    }
}

__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}

}  // namespace gpt::cuda::rowstats
