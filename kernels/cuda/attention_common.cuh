// Building blocks of the flash-attention kernels: bf16 tensor-core MMA (mma.sync m16n8k16,
// sm_80+), ldmatrix fragment loads, cp.async tile copies, and the per-launch parameters.
//
// Fragment layouts of m16n8k16 (g = lane / 4, t = lane % 4):
//   A 16x16: a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B 16x8 : b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
//   C 16x8 : c0,c1 (g, 2t..2t+1)   c2,c3 (g+8, 2t..2t+1)
// Two adjacent C tiles (n 0..15) have exactly A's layout for k 0..15: probabilities computed in
// registers feed the next MMA without going through shared memory.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "common/rng.h"
#include "cuda/cuda_common.cuh"
#include "cuda/ra_gates.cuh"
#include "model/ops.h"

namespace gpt::cuda {
struct FusedFold;   // cuda_kernels.cuh
}

namespace gpt::cuda::attn {

struct Params {
    const __nv_bfloat16 *q, *k, *v, *o, *dout;
    __nv_bfloat16 *out, *dq, *dk, *dv;
    float *lse, *delta;
    int B, T, Hq, Hkv, q_stride, k_stride, v_stride;
    float scale, scale_log2;   // logits = scale q.k; scale_log2 = scale * log2(e)
    float dropout, keep_scale;
    uint64_t seed;
    int band, band_split;      // band > 0: dims [band_split, Dqk) count only where i - j <= band
    // offband > 0: this call covers only the pairs with i - j < offband; cuDNN did the rest (plain
    // attention on dims [0, band_split), attention_band_split.cu) and out/lse hold its rows
    // i >= offband (merged here), dq/dk/dv its gradients (added to here).
    int offband;
    // The RA fold inside the kernel (fold_d > 0, Dqk = 2 fold_d; ops.h ra_attention_*): q, k are the
    // plain operands (heads fold_d apart, q_stride == k_stride) and every q̃/k̃ tile is built from
    // them in shared memory, [q, k] on the query side and [k, q] on the key side. The gates (g_std
    // on the first half, g_rec on the second) go on the side a kernel loads once: q̃ = [g_std q, g_rec k]
    // in the forward and the dQ pass, k̃ = [g_std k, g_rec q] in the dK/dV pass (the same logits,
    // g_std q_i.k_j + g_rec k_i.q_j). The backward writes dq, dk, not dq̃, dk̃: the dK/dV pass
    // overwrites the keys' rows, the dQ pass adds the queries' and the gates' partial sums.
    int fold_d;
    const float *g_std, *g_rec;   // [n_gates] or null: the fixed values
    float g_std_fixed, g_rec_fixed;
    int n_gates;
    float* gate_part;             // dQ pass: 2 floats per block (the gates' gradient partials), or null
};

// Head `head`'s fold gates (g_std, g_rec) as the exact fold takes them (floored_gate), times f.
__device__ __forceinline__ float2 fold_gates(const Params& p, int head, float f = 1.f) {
    const int i = p.n_gates == 1 ? 0 : head;
    return make_float2(f * floored_gate(gate_value(p.g_std, i, p.g_std_fixed)),
                       f * floored_gate(gate_value(p.g_rec, i, p.g_rec_fixed)));
}

Params make_params(const AttnDims& d);   // sizes, scale, dropout, band
// The fold inside the kernel (fold null or D = 0: none), checked against d.
void apply_fold(Params& p, const AttnDims& d, const FusedFold* fold, int offband);

// 16-row m-tiles per warp. Measured on an H100 (docs/performance.md): one m-tile per warp is
// faster for Dqk = 64 (fewer registers, more resident warps), two for the Dqk = 128 forwards.
// -DGPT_ATTN_MT=N forces N for the Dqk = 64 kernels (for experiments).
#ifndef GPT_ATTN_MT
#define GPT_ATTN_MT 1
#endif

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kPad = 8;   // bf16 elements of padding per smem row: ldmatrix without bank conflicts

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// A fragment (16 x 16) at (row0, col0) of a row-major smem tile with row stride `ld`.
__device__ __forceinline__ void load_a(uint32_t a[4], const __nv_bfloat16* s, int ld, int row0,
                                       int col0, int lane) {
    ldsm_x4(a, s + (row0 + (lane % 16)) * ld + col0 + (lane / 16) * 8);
}
// B fragments for two n-tiles (n0..n0+15) at k0, from a tile stored [n][k] (k contiguous):
// b[0], b[1] for n-tile n0; b[2], b[3] for n0 + 8.
__device__ __forceinline__ void load_b_nk(uint32_t b[4], const __nv_bfloat16* s, int ld, int n0,
                                          int k0, int lane) {
    ldsm_x4(b, s + (n0 + (lane % 8) + (lane / 16) * 8) * ld + k0 + ((lane / 8) % 2) * 8);
}
// The same from a tile stored [k][n] (n contiguous), through the transposing ldmatrix.
__device__ __forceinline__ void load_b_kn(uint32_t b[4], const __nv_bfloat16* s, int ld, int n0,
                                          int k0, int lane) {
    ldsm_x4_t(b, s + (k0 + (lane % 8) + ((lane / 8) % 2) * 8) * ld + n0 + (lane / 16) * 8);
}

// 2^x on the special-function unit, flushing denormals (probabilities that small are 0 anyway).
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
}

// A fragment for k-step j from C tiles 2j, 2j+1 of a 16 x (8 * NT) fp32 accumulator.
template <int NT>
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float (&c)[NT][4], int j) {
    a[0] = pack_bf16(c[2 * j][0], c[2 * j][1]);
    a[1] = pack_bf16(c[2 * j][2], c[2 * j][3]);
    a[2] = pack_bf16(c[2 * j + 1][0], c[2 * j + 1][1]);
    a[3] = pack_bf16(c[2 * j + 1][2], c[2 * j + 1][3]);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)),
                 "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// The tile loads' chunk c (16 bytes: row c / (D / 8), column (c % (D / 8)) * 8) goes to thread
// c % THREADS. When THREADS is a multiple of the chunks per row and ROWS of the rows a pass
// covers, a thread's chunks share one column and sit kLoadStep rows apart: tile_chunks_fixed.
template <int ROWS, int D, int THREADS>
constexpr bool tile_chunks_fixed() {
    return THREADS % (D / 8) == 0 && ROWS % (THREADS / (D / 8)) == 0;
}

// Copies this thread's chunks of rows [row0, row0 + ROWS) from src_row0 (the thread's column of
// row row0 of its half) into smem (row stride D + kPad), zero-filling rows at or past T. With fixed
// chunks the address is formed once and stepped (the general loop's per-chunk division and 64-bit
// products cost ~130 instructions a 64 x 64 tile, 8% of the top-k statistic kernel's).
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void load_fixed_chunks(__nv_bfloat16* s, const __nv_bfloat16* src_row0,
                                                  const __nv_bfloat16* fallback, int stride, int row0, int T) {
    constexpr int kChunks = D / 8, kLoadStep = THREADS / kChunks;
    const int r = threadIdx.x / kChunks, col = (threadIdx.x % kChunks) * 8;
    const __nv_bfloat16* src = src_row0 + size_t(r) * stride;
    const size_t step = size_t(kLoadStep) * stride;
    __nv_bfloat16* dst = s + r * (D + kPad) + col;
#pragma unroll
    for (int i = 0; i < ROWS / kLoadStep; ++i) {
        const bool valid = row0 + r + i * kLoadStep < T;
        cp_async16(dst + i * kLoadStep * (D + kPad), valid ? src + i * step : fallback, valid);
    }
}

// Copy rows [row0, row0 + ROWS) x D of a strided bf16 tensor into smem (row stride D + kPad);
// rows at or past T are zero-filled (so masked products never meet NaN garbage).
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void load_tile(__nv_bfloat16* s, const __nv_bfloat16* g, int stride,
                                          int row0, int T) {
    constexpr int kChunks = D / 8;
    if constexpr (tile_chunks_fixed<ROWS, D, THREADS>()) {
        const int col = (threadIdx.x % kChunks) * 8;
        load_fixed_chunks<ROWS, D, THREADS>(s, g + size_t(row0) * stride + col, g, stride, row0, T);
    } else {
        for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
            const int r = c / kChunks, col = (c % kChunks) * 8;
            const bool valid = row0 + r < T;
            const __nv_bfloat16* src = valid ? g + size_t(row0 + r) * stride + col : g;
            cp_async16(s + r * (D + kPad) + col, src, valid);
        }
    }
}

// A q̃ or k̃ operand: its rows' first half [0, D/2) starts at lo, the second at hi (lo + D/2 for a
// materialised operand; q's and k's head slices with the fold inside the kernel).
struct HalfRows {
    const __nv_bfloat16 *lo, *hi;
};
// Head `head` of batch row b: `own`'s rows (DQK wide), or with the fold `own`'s then `other`'s
// fold_d-wide head slices.
template <int DQK>
__device__ __forceinline__ HalfRows half_rows(const Params& p, const __nv_bfloat16* own, const __nv_bfloat16* other,
                                              int stride, int b, int head) {
    const size_t row0 = size_t(b) * p.T * stride;
    if (p.fold_d > 0) return {own + row0 + size_t(head) * p.fold_d, other + row0 + size_t(head) * p.fold_d};
    const __nv_bfloat16* lo = own + row0 + size_t(head) * DQK;
    return {lo, lo + DQK / 2};
}
template <int DQK>
__device__ __forceinline__ HalfRows query_rows(const Params& p, int b, int h) {   // q̃ = [q, k]
    return half_rows<DQK>(p, p.q, p.k, p.q_stride, b, h);
}
template <int DQK>
__device__ __forceinline__ HalfRows key_rows(const Params& p, int b, int hk) {    // k̃ = [k, q]
    return half_rows<DQK>(p, p.k, p.q, p.k_stride, b, hk);
}
// load_tile of a HalfRows operand (D / 2 a multiple of 8: no 16-byte chunk straddles the halves).
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void load_halves(__nv_bfloat16* s, const HalfRows& g, int stride, int row0, int T) {
    static_assert(D % 16 == 0, "halves of whole 16-byte chunks");
    constexpr int kChunks = D / 8;
    if constexpr (tile_chunks_fixed<ROWS, D, THREADS>()) {
        const int col = (threadIdx.x % kChunks) * 8;
        const __nv_bfloat16* base = col < D / 2 ? g.lo + col : g.hi + (col - D / 2);
        load_fixed_chunks<ROWS, D, THREADS>(s, base + size_t(row0) * stride, g.lo, stride, row0, T);
    } else {
        for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
            const int r = c / kChunks, col = (c % kChunks) * 8;
            const bool valid = row0 + r < T;
            const __nv_bfloat16* base = col < D / 2 ? g.lo + col : g.hi + (col - D / 2);
            cp_async16(s + r * (D + kPad) + col, valid ? base + size_t(row0 + r) * stride : g.lo, valid);
        }
    }
}
// Scales the halves of a tile this thread loaded with load_halves (the same chunks: call after its
// cp.async wait, before the barrier that publishes the tile): the fold's gates.
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void scale_halves(__nv_bfloat16* s, float lo, float hi) {
    constexpr int kChunks = D / 8;
    for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
        const int r = c / kChunks, col = (c % kChunks) * 8;
        const float f = col < D / 2 ? lo : hi;
        uint4* ptr = reinterpret_cast<uint4*>(s + r * (D + kPad) + col);
        uint4 v = *ptr;
        __nv_bfloat162* h2 = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float2 x = __bfloat1622float2(h2[k]);
            h2[k] = __floats2bfloat162_rn(x.x * f, x.y * f);
        }
        *ptr = v;
    }
}

// Keep bits of the dropout mask for this thread's MT x NT accumulator entries (bit
// (mt * NT + nt) * 4 + e), query i / key j from the entry's row and column (rows are keys when
// KEY_ROWS), by attention_dropout_keep (the CPU backend's contract, common/rng.h). The two entries
// e, e + 1 of a row half sit in columns c, c + 1 with c even, so they share one 2x2 block and one
// draw. A rolled loop keeps the hash out of the unrolled main loop (instruction-cache pressure).
template <int MT, int NT, bool KEY_ROWS>
__device__ __forceinline__ uint64_t drop_mask(const Params& p, int b, int h, int row0, int col0, int g,
                                              int t) {
    static_assert(MT * NT * 4 <= 64, "one 64-bit mask per thread");
    uint64_t keep = 0;
    const uint64_t bh = uint64_t(b) * p.Hq + h;
    const uint32_t threshold = dropout_threshold(p.dropout);
#pragma unroll 1
    for (int pair = 0; pair < MT * NT * 2; ++pair) {
        const int half = pair & 1, nt = (pair >> 1) % NT, mt = (pair >> 1) / NT;
        const int r = row0 + mt * 16 + g + 8 * half, c = col0 + nt * 8 + 2 * t;
        const int i = KEY_ROWS ? c : r, j = KEY_ROWS ? r : c;
        const uint64_t draw = dropout_draw(p.seed, attention_dropout_group(bh, i, j, p.T));
        // Entry e = 2 half + u sits at column c + u: the key (KEY_ROWS: the query) moves by u.
        const int lane0 = attention_dropout_lane(i, j);
        const int lane1 = KEY_ROWS ? attention_dropout_lane(i + 1, j) : attention_dropout_lane(i, j + 1);
        const int idx = pair * 2;
        if (dropout_lane_keeps(draw, lane0, threshold)) keep |= 1ull << idx;
        if (dropout_lane_keeps(draw, lane1, threshold)) keep |= 1ull << (idx + 1);
    }
    return keep;
}

// How a (query tile, key tile) pair meets the reciprocal band: every pair inside it (or no band),
// every pair outside it (only dims [0, band_split) count), or mixed.
enum BandMode { kBandAll = 0, kBandNone = 1, kBandMixed = 2 };
__device__ __forceinline__ int band_mode(const Params& p, int q0, int q_rows, int k0, int k_rows) {
    if (p.band <= 0) return kBandAll;
    const int max_diff = q0 + q_rows - 1 - k0, min_diff = q0 - (k0 + k_rows - 1);
    if (max_diff <= p.band) return kBandAll;
    if (min_diff > p.band) return kBandNone;
    return kBandMixed;
}

// With offband > 0: whether the pairs (rows [r0, r0 + rows), columns [c0, c0 + cols)) of queries
// i and keys j (transposed when KEY_ROWS) are all cuDNN's (i - j >= offband: skip them), and
// whether some are (mask those).
template <bool KEY_ROWS>
__device__ __forceinline__ bool offband_all(const Params& p, int r0, int rows, int c0, int cols) {
    const int min_diff = KEY_ROWS ? c0 - (r0 + rows - 1) : r0 - (c0 + cols - 1);
    return p.offband > 0 && min_diff >= p.offband;
}
template <bool KEY_ROWS>
__device__ __forceinline__ bool offband_some(const Params& p, int r0, int rows, int c0, int cols) {
    const int max_diff = KEY_ROWS ? c0 + cols - 1 - r0 : r0 + rows - 1 - c0;
    return p.offband > 0 && max_diff >= p.offband;
}
// Set the entries of a [rows x cols] accumulator whose pair is at least min_diff apart
// (i - j >= min_diff, i the query and j the key; rows are keys when KEY_ROWS) to `value`: 0 for
// the reciprocal dims outside RA's band (min_diff = band + 1), -inf for cuDNN's pairs (offband).
template <bool KEY_ROWS, int MT, int NT>
__device__ __forceinline__ void mask_pairs(float (&x)[MT][NT][4], int row0, int col0, int min_diff, float value,
                                           int g, int t) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = row0 + mt * 16 + g + 8 * (e / 2), c = col0 + nt * 8 + 2 * t + (e & 1);
                if ((KEY_ROWS ? c - r : r - c) >= min_diff) x[mt][nt][e] = value;
            }
}

}  // namespace gpt::cuda::attn
