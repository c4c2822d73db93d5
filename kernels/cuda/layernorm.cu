// LayerNorm over rows of C channels with fp32 statistics. Forward: one warp per row, also fused with
// the residual add before it (residual_layernorm_fwd). Backward: din per row (one warp) and dw/db
// as column sums over fixed row chunks (on the bf16 path in the same kernel as din), followed by a
// fixed-order reduction of the chunks, so the result does not depend on scheduling (deterministic).
#include "cuda/cuda_kernels.cuh"
#include "cuda/dropout_vec8.cuh"
#include "cuda/vec8.cuh"

#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace gpt::cuda {
namespace {

constexpr float kEps = 1e-5f;
constexpr int kWarps = 8;
constexpr int kChunkRows = 64;   // rows per dw/db partial
constexpr int kColThreads = 256;
constexpr int kFinishCols = 32, kFinishGroups = 32;   // finish block: 32 columns x 32 groups of chunks

__global__ void layernorm_fwd_kernel(TView out, float* mean, float* rstd, TView in, TView w,
                                     TView b, bool has_b, int N, int C) {
    const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const size_t base = size_t(row) * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += ld(in, base + c);
    const float m = warp_sum(s) / C;
    float v = 0.f;
    for (int c = lane; c < C; c += 32) {
        const float d = ld(in, base + c) - m;
        v += d * d;
    }
    const float r = rsqrtf(warp_sum(v) / C + kEps);
    for (int c = lane; c < C; c += 32) {
        const float y = (ld(in, base + c) - m) * r * ld(w, c) + (has_b ? ld(b, c) : 0.f);
        st(out, base + c, y);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

__global__ void layernorm_din_kernel(TView din, TView dout, TView in, TView w, const float* mean,
                                     const float* rstd, int N, int C) {
    const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const size_t base = size_t(row) * C;
    const float m = mean[row], r = rstd[row];
    float sd = 0.f, sdn = 0.f;
    for (int c = lane; c < C; c += 32) {
        const float dn = ld(dout, base + c) * ld(w, c);
        sd += dn;
        sdn += dn * (ld(in, base + c) - m) * r;
    }
    const float mean_dn = warp_sum(sd) / C, mean_dnn = warp_sum(sdn) / C;
    for (int c = lane; c < C; c += 32) {
        const float norm = (ld(in, base + c) - m) * r;
        const float g = (ld(dout, base + c) * ld(w, c) - mean_dn - norm * mean_dnn) * r;
        st(din, base + c, ld(din, base + c) + g);
    }
}

// partial[0][chunk][c] = sum dout*norm, partial[1][chunk][c] = sum dout, over the chunk's rows.
__global__ void layernorm_dwdb_partial_kernel(float* partial, TView dout, TView in,
                                              const float* mean, const float* rstd, int N, int C,
                                              int chunks) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int r0 = blockIdx.y * kChunkRows, r1 = min(N, r0 + kChunkRows);
    float sw = 0.f, sb = 0.f;
    for (int r = r0; r < r1; ++r) {
        const float g = ld(dout, size_t(r) * C + c);
        sw += g * (ld(in, size_t(r) * C + c) - mean[r]) * rstd[r];
        sb += g;
    }
    partial[size_t(blockIdx.y) * C + c] = sw;
    partial[(size_t(chunks) + blockIdx.y) * C + c] = sb;
}

// dw += sum over chunks of partial[0], db += sum of partial[1], dsum += sum of partial[2] (db and
// dsum optional). Thread (x, y) sums chunks y, y + 32, ... of column x in order, then the block adds
// its 32 sums in a fixed tree: deterministic, and 32x more loads in flight than one thread walking
// every chunk of its column.
__global__ void __launch_bounds__(kFinishCols * kFinishGroups) layernorm_dwdb_finish_kernel(
    TView dw, TView db, TView dsum, const float* partial, int C, int chunks) {
    __shared__ float sums[3][kFinishGroups][kFinishCols];
    const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * kFinishCols + tx;
    const bool has_db = db.p != nullptr, has_sum = dsum.p != nullptr;
    float sw = 0.f, sb = 0.f, ss = 0.f;
    if (c < C) {
#pragma unroll 4
        for (int k = ty; k < chunks; k += kFinishGroups) {
            sw += partial[size_t(k) * C + c];
            if (has_db) sb += partial[(size_t(chunks) + k) * C + c];
            if (has_sum) ss += partial[(2 * size_t(chunks) + k) * C + c];
        }
    }
    sums[0][ty][tx] = sw;
    sums[1][ty][tx] = sb;
    sums[2][ty][tx] = ss;
    __syncthreads();
#pragma unroll
    for (int half = kFinishGroups / 2; half > 0; half /= 2) {
        if (ty < half) {
            sums[0][ty][tx] += sums[0][ty + half][tx];
            sums[1][ty][tx] += sums[1][ty + half][tx];
            sums[2][ty][tx] += sums[2][ty + half][tx];
        }
        __syncthreads();
    }
    if (ty != 0 || c >= C) return;
    st(dw, c, ld(dw, c) + sums[0][0][tx]);
    if (has_db) st(db, c, ld(db, c) + sums[1][0][tx]);
    if (has_sum) st(dsum, c, ld(dsum, c) + sums[2][0][tx]);
}

void launch_dwdb_finish(TView dw, TView db, const float* partial, int C, int chunks, cudaStream_t s,
                        TView dsum = {}) {
    layernorm_dwdb_finish_kernel<<<(C + kFinishCols - 1) / kFinishCols, dim3(kFinishCols, kFinishGroups), 0, s>>>(
        dw, db, dsum, partial, C, chunks);
    GPT_CUDA_LAUNCHED("layernorm_dwdb_finish_kernel");
}

// The bf16x8 forwards' arithmetic, shared so that the plain and the residual forward agree bit for
// bit: the row statistics accumulate eight channels at a time in the same order in both.
__device__ __forceinline__ void ln_add_sum(float& sum, const F8& x) {
#pragma unroll
    for (int j = 0; j < 8; ++j) sum += x.v[j];
}
__device__ __forceinline__ void ln_add_var(float& var, const F8& x, float m) {
#pragma unroll
    for (int j = 0; j < 8; ++j) var += (x.v[j] - m) * (x.v[j] - m);
}
__device__ __forceinline__ F8 ln_normalise(const F8& x, float m, float r, const float* w, const float* b, int c) {
    const F8 wv = load_f32x8(w + c);
    F8 y;
    if (b) {
        const F8 bv = load_f32x8(b + c);
#pragma unroll
        for (int j = 0; j < 8; ++j) y.v[j] = (x.v[j] - m) * r * wv.v[j] + bv.v[j];
    } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) y.v[j] = (x.v[j] - m) * r * wv.v[j];
    }
    return y;
}

// Fast path (bf16 activations, fp32 weight, C % 8 == 0): the same arithmetic with 16-byte loads.
__global__ void layernorm_fwd_bf16x8_kernel(__nv_bfloat16* out, float* mean, float* rstd, const __nv_bfloat16* in,
                                            const float* w, const float* b, int N, int C) {
    const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const size_t base = size_t(row) * C;
    float sum = 0.f;
    for (int c = 8 * lane; c < C; c += 8 * 32) ln_add_sum(sum, load_bf16x8(in + base + c));
    const float m = warp_sum(sum) / C;
    float var = 0.f;
    for (int c = 8 * lane; c < C; c += 8 * 32) ln_add_var(var, load_bf16x8(in + base + c), m);
    const float r = rsqrtf(warp_sum(var) / C + kEps);
    for (int c = 8 * lane; c < C; c += 8 * 32)
        store_bf16x8(out + base + c, ln_normalise(load_bf16x8(in + base + c), m, r, w, b, c));
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

// Residual add + LayerNorm: s = a + b rounded to bf16 (as add_bf16x8_kernel rounds it), written to
// out_sum and kept in registers (kVecs groups of eight channels per lane), then normalised exactly
// as layernorm_fwd_bf16x8_kernel normalises the stored sum. Against add + layernorm_fwd this saves
// LayerNorm's reads of the sum (a full pass over memory for the first) and one launch.
constexpr int kResidualMaxVecs = 8;   // rows up to 8 * 8 * 32 = 2048 channels stay in registers

// s rounded to bf16 with store_bf16x8's conversion, stored at p; returns the rounded values as
// load_bf16x8 would read them back.
__device__ __forceinline__ F8 store_rounded_bf16x8(__nv_bfloat16* p, const F8& s) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
    F8 r;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        h[j] = __floats2bfloat162_rn(s.v[2 * j], s.v[2 * j + 1]);
        const float2 x = __bfloat1622float2(h[j]);
        r.v[2 * j] = x.x;
        r.v[2 * j + 1] = x.y;
    }
    *reinterpret_cast<uint4*>(p) = raw;
    return r;
}

// With drop.on, b's eight values go through the dropout and are rounded to bf16 first: what the
// dropout kernel would have stored into b for add to read; keep (optional) records the decisions.
template <int kVecs>
__global__ void residual_layernorm_fwd_bf16x8_kernel(__nv_bfloat16* out_sum, __nv_bfloat16* out, float* mean,
                                                     float* rstd, const __nv_bfloat16* a, const __nv_bfloat16* b,
                                                     const float* w, const float* bias, int N, int C,
                                                     DropoutArgs drop, uint8_t* keep) {
    const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const size_t base = size_t(row) * C;
    F8 x[kVecs];   // vector k holds channels [8 * lane + 256 k, +8): the plain kernel's visiting order
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
        const int c = 8 * lane + 8 * 32 * k;
        if (c >= C) continue;
        const F8 u = load_bf16x8(a + base + c);
        F8 v = load_bf16x8(b + base + c);
        if (drop.on) {
            const uint32_t bits = dropout_keep_bits((base + c) / 8, drop);
            if (keep) keep[(base + c) / 8] = uint8_t(bits);
            apply_keep_bits(v, bits, drop.keep_scale);
            v = bf16x8_to_f8(pack_bf16x8(v));
        }
        F8 s;
#pragma unroll
        for (int j = 0; j < 8; ++j) s.v[j] = u.v[j] + v.v[j];
        x[k] = store_rounded_bf16x8(out_sum + base + c, s);
        ln_add_sum(sum, x[k]);
    }
    const float m = warp_sum(sum) / C;
    float var = 0.f;
#pragma unroll
    for (int k = 0; k < kVecs; ++k)
        if (8 * lane + 8 * 32 * k < C) ln_add_var(var, x[k], m);
    const float r = rsqrtf(warp_sum(var) / C + kEps);
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
        const int c = 8 * lane + 8 * 32 * k;
        if (c < C) store_bf16x8(out + base + c, ln_normalise(x[k], m, r, w, bias, c));
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

// The smallest instantiation whose registers hold vecs groups per lane.
template <int kVecs>
void launch_residual_layernorm_fwd(int vecs, __nv_bfloat16* out_sum, __nv_bfloat16* out, float* mean, float* rstd,
                                   const __nv_bfloat16* a, const __nv_bfloat16* b, const float* w, const float* bias,
                                   int N, int C, const DropoutArgs& drop, uint8_t* keep, cudaStream_t s) {
    if constexpr (kVecs < kResidualMaxVecs) {
        if (vecs > kVecs) {
            launch_residual_layernorm_fwd<kVecs + 1>(vecs, out_sum, out, mean, rstd, a, b, w, bias, N, C, drop, keep,
                                                     s);
            return;
        }
    }
    residual_layernorm_fwd_bf16x8_kernel<kVecs><<<(N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(
        out_sum, out, mean, rstd, a, b, w, bias, N, C, drop, keep);
    GPT_CUDA_LAUNCHED("residual_layernorm_fwd_bf16x8_kernel");
}

// The keep decisions alone, one byte per eight elements (the forward's record where the fused kernel
// does not run, so a backward that reads it finds it written).
__global__ void dropout_keep_bits_kernel(uint8_t* keep, size_t n, DropoutArgs drop) {
    const size_t g = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
    if (8 * g >= n) return;
    keep[g] = uint8_t(dropout_keep_bits(g, drop));
}

// The backward's per-element arithmetic, shared so that the din-only and the fused kernel give the
// same din, and the partial-only and the fused kernel the same partials, bit for bit. Spelled out
// with _rn intrinsics: the compiler's own FMA contraction depends on what else a kernel reuses (the
// fused kernel shares dout * w between its passes) and could round the two kernels differently.
__device__ __forceinline__ void ln_din_sums(float& sd, float& sdn, const F8& g, const F8& x, const F8& wv, float m,
                                            float r) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const float dn = __fmul_rn(g.v[j], wv.v[j]);
        sd = __fadd_rn(sd, dn);
        sdn = __fmaf_rn(__fmul_rn(dn, __fsub_rn(x.v[j], m)), r, sdn);
    }
}
// d += (dout * w - mean_dn - norm * mean_dnn) * r
__device__ __forceinline__ void ln_din_add(F8& d, const F8& g, const F8& x, const F8& wv, float m, float r,
                                           float mean_dn, float mean_dnn) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const float norm = __fmul_rn(__fsub_rn(x.v[j], m), r);
        const float t = __fmaf_rn(-norm, mean_dnn, __fmaf_rn(g.v[j], wv.v[j], -mean_dn));
        d.v[j] = __fmaf_rn(t, r, d.v[j]);
    }
}
__device__ __forceinline__ void ln_dwdb_add(float& sw, float& sb, float g, float x, float m, float r) {
    sw = __fmaf_rn(__fmul_rn(g, __fsub_rn(x, m)), r, sw);
    sb = __fadd_rn(sb, g);
}

// din: one warp per row, eight channels per lane-step. Six blocks per SM keep it at the 40 registers
// it had before the helpers above (44 without the bound: five blocks).
__global__ void __launch_bounds__(32 * kWarps, 6)
    layernorm_din_bf16x8_kernel(__nv_bfloat16* din, const __nv_bfloat16* dout, const __nv_bfloat16* in,
                                const float* w, const float* mean, const float* rstd, int N, int C) {
    const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const size_t base = size_t(row) * C;
    const float m = mean[row], r = rstd[row];
    float sd = 0.f, sdn = 0.f;
    for (int c = 8 * lane; c < C; c += 8 * 32)
        ln_din_sums(sd, sdn, load_bf16x8(dout + base + c), load_bf16x8(in + base + c), load_f32x8(w + c), m, r);
    const float mean_dn = warp_sum(sd) / C, mean_dnn = warp_sum(sdn) / C;
    for (int c = 8 * lane; c < C; c += 8 * 32) {
        F8 d = load_bf16x8(din + base + c);
        ln_din_add(d, load_bf16x8(dout + base + c), load_bf16x8(in + base + c), load_f32x8(w + c), m, r, mean_dn,
                   mean_dnn);
        store_bf16x8(din + base + c, d);
    }
}

// dw/db partials: block y sums its chunk of rows in row order; each thread owns eight adjacent channels.
// Used where din is not wanted, and for rows too wide for the fused kernel.
__global__ void layernorm_dwdb_partial_bf16x8_kernel(float* partial, const __nv_bfloat16* dout,
                                                     const __nv_bfloat16* in, const float* mean, const float* rstd,
                                                     int N, int C, int chunks) {
    const int c = 8 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (c >= C) return;
    const int r0 = blockIdx.y * kChunkRows, r1 = min(N, r0 + kChunkRows);
    float sw[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int row = r0; row < r1; ++row) {
        const F8 g = load_bf16x8(dout + size_t(row) * C + c), x = load_bf16x8(in + size_t(row) * C + c);
        const float m = mean[row], r = rstd[row];
#pragma unroll
        for (int j = 0; j < 8; ++j) ln_dwdb_add(sw[j], sb[j], g.v[j], x.v[j], m, r);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        partial[size_t(blockIdx.y) * C + c + j] = sw[j];
        partial[(size_t(chunks) + blockIdx.y) * C + c + j] = sb[j];
    }
}

// din and the dw/db partials in one pass over dout and in (C <= 256 * kVecs). Block b owns chunk b and
// walks it kWarps rows at a time: each warp does one row's din as the din kernel does (all of the
// row's loads issued at once) and leaves the row's dout and in (bf16) in shared memory; then thread t
// adds the tile's rows, in row order, into the sums of its channels t + 256 k. That is the partial
// kernel's order (the same partials, bit for bit) with 2 kVecs accumulators per thread: the two
// earlier fused versions kept 16 kVecs per lane (every channel of the lane, over a warp's rows) and
// lost the occupancy a latency-bound kernel needs. Blocks per SM it is compiled for: the most that
// need no spills; C = 768: four (64 registers), so the 512 chunks of a 32768-row call run in one
// wave on an H100's 132 SMs.
// Writing the branch's gradient too (kBranch) keeps more values live: at four blocks (64 registers)
// C = 768 spilled ~140 bytes, so three blocks (85 registers) there.
constexpr int bwd_fused_min_blocks(int vecs, bool branch) {
    return vecs == 1 ? 3 : vecs <= 3 ? (branch ? 3 : 4) : 2;
}
// kSum: also the column sums of din's new rows (as stored, bf16), as a third partial section.
// kBranch: also branch = din's new rows (as stored) through the dropout `drop` with the decisions
// the forward recorded in keep (required when drop.on: drawing them here again spilled registers),
// rounded as the dropout kernel stores them; the third section then sums branch instead of din.
template <int kVecs, bool kSum, bool kBranch>
__global__ void __launch_bounds__(32 * kWarps, bwd_fused_min_blocks(kVecs, kBranch)) layernorm_bwd_fused_bf16x8_kernel(
    __nv_bfloat16* din, float* partial, const __nv_bfloat16* dout, const __nv_bfloat16* in, const float* w,
    const float* mean, const float* rstd, int N, int C, int chunks, __nv_bfloat16* branch, DropoutArgs drop,
    const uint8_t* keep) {
    constexpr int kWidth = 8 * 32 * kVecs;
    __shared__ __align__(16) __nv_bfloat16 tile_g[kWarps][kWidth];   // the tile's rows of dout
    __shared__ __align__(16) __nv_bfloat16 tile_x[kWarps][kWidth];   // and of in
    __shared__ __align__(16) __nv_bfloat16 tile_d[kSum ? kWarps : 1][kSum ? kWidth : 8];   // and of din
    __shared__ float tile_m[kWarps], tile_r[kWarps];
    __shared__ __align__(16) float ws[kWidth];   // w: short loads the compiler does not hoist into registers
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int r0 = blockIdx.x * kChunkRows, r1 = min(N, r0 + kChunkRows);
    float sw[kVecs], sb[kVecs], sd[kVecs];
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
        sw[k] = sb[k] = sd[k] = 0.f;
        const int c = threadIdx.x + 8 * 32 * k;
        if (c < C) ws[c] = w[c];
    }
    __syncthreads();
    for (int t0 = r0; t0 < r1; t0 += kWarps) {
        const int row = t0 + warp;
        if (row < r1) {
            const size_t base = size_t(row) * C;
            const float m = mean[row], r = rstd[row];
            uint4 g[kVecs], x[kVecs], d[kVecs];
#pragma unroll
            for (int k = 0; k < kVecs; ++k) {
                const int c = 8 * lane + 8 * 32 * k;
                if (c >= C) continue;
                g[k] = load_raw16(dout + base + c);
                x[k] = load_raw16(in + base + c);
                d[k] = load_raw16(din + base + c);
            }
            float sd = 0.f, sdn = 0.f;
#pragma unroll
            for (int k = 0; k < kVecs; ++k) {
                const int c = 8 * lane + 8 * 32 * k;
                if (c >= C) continue;
                *reinterpret_cast<uint4*>(&tile_g[warp][c]) = g[k];
                *reinterpret_cast<uint4*>(&tile_x[warp][c]) = x[k];
                ln_din_sums(sd, sdn, bf16x8_to_f8(g[k]), bf16x8_to_f8(x[k]), load_f32x8(ws + c), m, r);
            }
            if (lane == 0) {
                tile_m[warp] = m;
                tile_r[warp] = r;
            }
            const float mean_dn = warp_sum(sd) / C, mean_dnn = warp_sum(sdn) / C;
#pragma unroll
            for (int k = 0; k < kVecs; ++k) {
                const int c = 8 * lane + 8 * 32 * k;
                if (c >= C) continue;
                F8 dv = bf16x8_to_f8(d[k]);
                ln_din_add(dv, bf16x8_to_f8(g[k]), bf16x8_to_f8(x[k]), load_f32x8(ws + c), m, r, mean_dn, mean_dnn);
                const uint4 packed = pack_bf16x8(dv);
                *reinterpret_cast<uint4*>(din + base + c) = packed;
                if constexpr (kBranch) {
                    F8 bv = bf16x8_to_f8(packed);
                    if (drop.on) apply_keep_bits(bv, keep[(base + c) / 8], drop.keep_scale);   // the forward's record
                    const uint4 bpacked = pack_bf16x8(bv);
                    *reinterpret_cast<uint4*>(branch + base + c) = bpacked;
                    if constexpr (kSum) *reinterpret_cast<uint4*>(&tile_d[warp][c]) = bpacked;
                } else if constexpr (kSum) {
                    *reinterpret_cast<uint4*>(&tile_d[warp][c]) = packed;
                }
            }
        }
        __syncthreads();
#pragma unroll 1
        for (int i = 0, rows = min(kWarps, r1 - t0); i < rows; ++i) {   // row by row: few live registers
            const float m = tile_m[i], r = tile_r[i];
#pragma unroll
            for (int k = 0; k < kVecs; ++k) {
                const int c = threadIdx.x + 8 * 32 * k;
                if (c < C) {
                    ln_dwdb_add(sw[k], sb[k], __bfloat162float(tile_g[i][c]), __bfloat162float(tile_x[i][c]), m, r);
                    if constexpr (kSum) sd[k] += __bfloat162float(tile_d[i][c]);
                }
            }
        }
        __syncthreads();   // the next tile overwrites this one
    }
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
        const int c = threadIdx.x + 8 * 32 * k;
        if (c >= C) continue;
        partial[size_t(blockIdx.x) * C + c] = sw[k];
        partial[(size_t(chunks) + blockIdx.x) * C + c] = sb[k];
        if constexpr (kSum) partial[(2 * size_t(chunks) + blockIdx.x) * C + c] = sd[k];
    }
}

// The row tiles and w take 9 KiB of shared memory per vector: five (C <= 1280, GPT-2 large) stay under
// the 48 KiB static limit; wider rows take the two-kernel path. With din's tile too (kSum), 13 KiB:
// three vectors (C <= 768).
constexpr int kBwdFusedMaxVecs = 5, kBwdFusedSumMaxVecs = 3;

// The smallest instantiation whose tiles hold vecs vectors per lane.
template <int kVecs, bool kSum, bool kBranch>
void launch_layernorm_bwd_fused(int vecs, __nv_bfloat16* din, float* partial, const __nv_bfloat16* dout,
                                const __nv_bfloat16* in, const float* w, const float* mean, const float* rstd, int N,
                                int C, int chunks, __nv_bfloat16* branch, const DropoutArgs& drop,
                                const uint8_t* keep, cudaStream_t s) {
    if constexpr (kVecs < (kSum ? kBwdFusedSumMaxVecs : kBwdFusedMaxVecs)) {
        if (vecs > kVecs) {
            launch_layernorm_bwd_fused<kVecs + 1, kSum, kBranch>(vecs, din, partial, dout, in, w, mean, rstd, N, C,
                                                                 chunks, branch, drop, keep, s);
            return;
        }
    }
    layernorm_bwd_fused_bf16x8_kernel<kVecs, kSum, kBranch><<<chunks, 32 * kWarps, 0, s>>>(
        din, partial, dout, in, w, mean, rstd, N, C, chunks, branch, drop, keep);
    GPT_CUDA_LAUNCHED("layernorm_bwd_fused_bf16x8_kernel");
}

// GPT_LAYERNORM_BWD=split: the two-kernel path where the fused one applies (A/B measurements).
bool bwd_split() {
    static const bool split = [] {
        const char* v = std::getenv("GPT_LAYERNORM_BWD");
        return v != nullptr && std::strcmp(v, "split") == 0;
    }();
    return split;
}

int chunk_count(int N) { return (N + kChunkRows - 1) / kChunkRows; }

}  // namespace

void layernorm_fwd(TView out, float* mean, float* rstd, TView in, TView w, TView b, int N, int C,
                   cudaStream_t s) {
    if (N == 0) return;
    if (C % 8 == 0 && is_bf16x8(out) && is_bf16x8(in) && is_f32x8(w) && (!b.p || is_f32x8(b))) {
        layernorm_fwd_bf16x8_kernel<<<(N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(
            bf16_ptr(out), mean, rstd, bf16_ptr(in), f32_ptr(w), b.p ? f32_ptr(b) : nullptr, N, C);
        GPT_CUDA_LAUNCHED("layernorm_fwd_bf16x8_kernel");
        return;
    }
    layernorm_fwd_kernel<<<(N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(
        out, mean, rstd, in, w, b, b.p != nullptr, N, C);
    GPT_CUDA_LAUNCHED("layernorm_fwd_kernel");
}

void residual_layernorm_fwd(TView out_sum, TView out, float* mean, float* rstd, TView a, TView b, TView w,
                            TView bias, int N, int C, cudaStream_t s, float drop_p, uint64_t drop_seed,
                            uint8_t* keep) {
    if (N == 0) return;
    const DropoutArgs drop = dropout_args(drop_p, drop_seed);
    if (!drop.on) keep = nullptr;
    const int vecs = (C + 8 * 32 - 1) / (8 * 32);
    if (C % 8 == 0 && vecs <= kResidualMaxVecs && is_bf16x8(out_sum) && is_bf16x8(out) && is_bf16x8(a) &&
        is_bf16x8(b) && is_f32x8(w) && (!bias.p || is_f32x8(bias))) {
        launch_residual_layernorm_fwd<1>(vecs, bf16_ptr(out_sum), bf16_ptr(out), mean, rstd, bf16_ptr(a),
                                         bf16_ptr(b), f32_ptr(w), bias.p ? f32_ptr(bias) : nullptr, N, C, drop, keep,
                                         s);
        return;
    }
    // Other types, shapes and alignments: the calls themselves (same results, more passes).
    const size_t n = size_t(N) * C;
    if (keep) {
        const size_t groups = (n + 7) / 8;
        dropout_keep_bits_kernel<<<unsigned((groups + 255) / 256), 256, 0, s>>>(keep, n, drop);
        GPT_CUDA_LAUNCHED("dropout_keep_bits_kernel");
    }
    dropout(b, n, drop_p, drop_seed, s);
    add(out_sum, a, b, size_t(N) * C, s);
    layernorm_fwd(out, mean, rstd, out_sum, w, bias, N, C, s);
}

// Three partial sections (dw, db, dsum) of chunks x C; colsum_add's scratch is smaller than one.
size_t layernorm_bwd_scratch(int N, int C) { return 3 * size_t(chunk_count(N)) * C; }

namespace {

// The paths without the fused kernel: din, then the dw/db partials and their finish.
void layernorm_bwd_two_pass(TView din, TView dw, TView db, TView dout, TView in, TView w, const float* mean,
                            const float* rstd, int N, int C, float* partial, bool fast, cudaStream_t s) {
    const int chunks = chunk_count(N);
    if (fast) {
        if (din.p) {
            layernorm_din_bf16x8_kernel<<<(N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(
                bf16_ptr(din), bf16_ptr(dout), bf16_ptr(in), f32_ptr(w), mean, rstd, N, C);
            GPT_CUDA_LAUNCHED("layernorm_din_bf16x8_kernel");
        }
        if (!dw.p) return;
        const int threads = 128, col_blocks = (C / 8 + threads - 1) / threads;
        layernorm_dwdb_partial_bf16x8_kernel<<<dim3(col_blocks, chunks), threads, 0, s>>>(
            partial, bf16_ptr(dout), bf16_ptr(in), mean, rstd, N, C, chunks);
        GPT_CUDA_LAUNCHED("layernorm_dwdb_partial_bf16x8_kernel");
        launch_dwdb_finish(dw, db, partial, C, chunks, s);
        return;
    }
    if (din.p) {
        layernorm_din_kernel<<<(N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(din, dout, in, w,
                                                                               mean, rstd, N, C);
        GPT_CUDA_LAUNCHED("layernorm_din_kernel");
    }
    if (!dw.p) return;
    const int col_blocks = (C + kColThreads - 1) / kColThreads;
    layernorm_dwdb_partial_kernel<<<dim3(col_blocks, chunks), kColThreads, 0, s>>>(
        partial, dout, in, mean, rstd, N, C, chunks);
    GPT_CUDA_LAUNCHED("layernorm_dwdb_partial_kernel");
    launch_dwdb_finish(dw, db, partial, C, chunks, s);
}

}  // namespace

void layernorm_bwd(TView din, TView dw, TView db, TView dout, TView in, TView w,
                   const float* mean, const float* rstd, int N, int C, float* partial,
                   cudaStream_t s, TView dsum, TView branch, float drop_p, uint64_t drop_seed,
                   const uint8_t* keep) {
    if (N == 0) return;
    GPT_CHECK((!dsum.p && !branch.p) || din.p,
              "cuda-bf16 layernorm_bwd: dsum and branch are taken from din, so din is required");
    const bool fast = C % 8 == 0 && is_bf16x8(dout) && is_bf16x8(in) && is_f32x8(w) && (!din.p || is_bf16x8(din)) &&
                      (!branch.p || is_bf16x8(branch));
    const int chunks = chunk_count(N), vecs = (C + 8 * 32 - 1) / (8 * 32);
    const DropoutArgs drop = dropout_args(drop_p, drop_seed);
    // The gradient dsum sums: the branch's when there is one (ops.h).
    const TView summed = branch.p ? branch : din;
    // The fused kernel writes the branch from the forward's record of the decisions; without one
    // (the embeddings' dropout) the branch is copy + dropout after it, as on the other paths.
    const bool branch_fused = branch.p && (!drop.on || keep);
    bool branch_written = false;
    if (fast && din.p && dw.p && vecs <= kBwdFusedMaxVecs && !bwd_split()) {   // one pass over dout and in
        const bool sum_fused = dsum.p && vecs <= kBwdFusedSumMaxVecs && (branch_fused || !branch.p);
        __nv_bfloat16* const br = branch_fused ? bf16_ptr(branch) : nullptr;
        branch_written = br != nullptr;
        auto launch = [&](auto sum, auto to_branch) {
            launch_layernorm_bwd_fused<1, decltype(sum)::value, decltype(to_branch)::value>(
                vecs, bf16_ptr(din), partial, bf16_ptr(dout), bf16_ptr(in), f32_ptr(w), mean, rstd, N, C, chunks, br,
                drop, keep, s);
        };
        using Yes = std::true_type;
        using No = std::false_type;
        if (sum_fused) br ? launch(Yes{}, Yes{}) : launch(Yes{}, No{});
        else br ? launch(No{}, Yes{}) : launch(No{}, No{});
        launch_dwdb_finish(dw, db, partial, C, chunks, s, sum_fused ? dsum : TView{});
        if (sum_fused) return;
    } else {
        layernorm_bwd_two_pass(din, dw, db, dout, in, w, mean, rstd, N, C, partial, fast, s);
    }
    if (branch.p && !branch_written) {   // copy + dropout, as ops.h composes them
        convert(branch, din, size_t(N) * C, s);
        dropout(branch, size_t(N) * C, drop_p, drop_seed, s);
    }
    if (dsum.p) colsum_add(dsum, summed, N, C, partial, s);   // one more pass
}

}  // namespace gpt::cuda
