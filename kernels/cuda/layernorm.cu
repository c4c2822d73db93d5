// LayerNorm over rows of C channels with fp32 statistics. Forward: one warp per row, also fused with
// the residual add before it (residual_layernorm_fwd). Backward: din per row (one warp), then dw/db
// as column sums over fixed row chunks followed by an in-order reduction of the chunks, so the
// result does not depend on scheduling (deterministic).
#include "cuda/cuda_kernels.cuh"
#include "cuda/vec8.cuh"

namespace gpt::cuda {
namespace {

constexpr float kEps = 1e-5f;
constexpr int kWarps = 8;
constexpr int kChunkRows = 64;
constexpr int kColThreads = 256;

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

__global__ void layernorm_dwdb_finish_kernel(TView dw, TView db, bool has_db,
                                             const float* partial, int C, int chunks) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sw = 0.f, sb = 0.f;
    for (int k = 0; k < chunks; ++k) {
        sw += partial[size_t(k) * C + c];
        sb += partial[(size_t(chunks) + k) * C + c];
    }
    st(dw, c, ld(dw, c) + sw);
    if (has_db) st(db, c, ld(db, c) + sb);
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

template <int kVecs>
__global__ void residual_layernorm_fwd_bf16x8_kernel(__nv_bfloat16* out_sum, __nv_bfloat16* out, float* mean,
                                                     float* rstd, const __nv_bfloat16* a, const __nv_bfloat16* b,
                                                     const float* w, const float* bias, int N, int C) {
    const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const size_t base = size_t(row) * C;
    F8 x[kVecs];   // vector k holds channels [8 * lane + 256 k, +8): the plain kernel's visiting order
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
        const int c = 8 * lane + 8 * 32 * k;
        if (c >= C) continue;
        const F8 u = load_bf16x8(a + base + c), v = load_bf16x8(b + base + c);
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
                                   int N, int C, cudaStream_t s) {
    if constexpr (kVecs < kResidualMaxVecs) {
        if (vecs > kVecs) {
            launch_residual_layernorm_fwd<kVecs + 1>(vecs, out_sum, out, mean, rstd, a, b, w, bias, N, C, s);
            return;
        }
    }
    residual_layernorm_fwd_bf16x8_kernel<kVecs><<<(N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(
        out_sum, out, mean, rstd, a, b, w, bias, N, C);
    GPT_CUDA_LAUNCHED("residual_layernorm_fwd_bf16x8_kernel");
}

// din: one warp per row, eight channels per lane-step.
__global__ void layernorm_din_bf16x8_kernel(__nv_bfloat16* din, const __nv_bfloat16* dout, const __nv_bfloat16* in,
                                            const float* w, const float* mean, const float* rstd, int N, int C) {
    const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const size_t base = size_t(row) * C;
    const float m = mean[row], r = rstd[row];
    float sd = 0.f, sdn = 0.f;
    for (int c = 8 * lane; c < C; c += 8 * 32) {
        const F8 g = load_bf16x8(dout + base + c), x = load_bf16x8(in + base + c), wv = load_f32x8(w + c);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const float dn = g.v[j] * wv.v[j];
            sd += dn;
            sdn += dn * (x.v[j] - m) * r;
        }
    }
    const float mean_dn = warp_sum(sd) / C, mean_dnn = warp_sum(sdn) / C;
    for (int c = 8 * lane; c < C; c += 8 * 32) {
        const F8 g = load_bf16x8(dout + base + c), x = load_bf16x8(in + base + c), wv = load_f32x8(w + c);
        F8 d = load_bf16x8(din + base + c);
#pragma unroll
        for (int j = 0; j < 8; ++j) d.v[j] += (g.v[j] * wv.v[j] - mean_dn - (x.v[j] - m) * r * mean_dnn) * r;
        store_bf16x8(din + base + c, d);
    }
}

// dw/db partials: block y sums its chunk of rows; each thread owns eight adjacent channels.
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
        for (int j = 0; j < 8; ++j) {
            sw[j] += g.v[j] * (x.v[j] - m) * r;
            sb[j] += g.v[j];
        }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        partial[size_t(blockIdx.y) * C + c + j] = sw[j];
        partial[(size_t(chunks) + blockIdx.y) * C + c + j] = sb[j];
    }
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
                            TView bias, int N, int C, cudaStream_t s) {
    if (N == 0) return;
    const int vecs = (C + 8 * 32 - 1) / (8 * 32);
    if (C % 8 == 0 && vecs <= kResidualMaxVecs && is_bf16x8(out_sum) && is_bf16x8(out) && is_bf16x8(a) &&
        is_bf16x8(b) && is_f32x8(w) && (!bias.p || is_f32x8(bias))) {
        launch_residual_layernorm_fwd<1>(vecs, bf16_ptr(out_sum), bf16_ptr(out), mean, rstd, bf16_ptr(a),
                                         bf16_ptr(b), f32_ptr(w), bias.p ? f32_ptr(bias) : nullptr, N, C, s);
        return;
    }
    // Other types, shapes and alignments: the two calls themselves (same results, one more pass).
    add(out_sum, a, b, size_t(N) * C, s);
    layernorm_fwd(out, mean, rstd, out_sum, w, bias, N, C, s);
}

size_t layernorm_bwd_scratch(int N, int C) { return 2 * size_t(chunk_count(N)) * C; }

void layernorm_bwd(TView din, TView dw, TView db, TView dout, TView in, TView w,
                   const float* mean, const float* rstd, int N, int C, float* partial,
                   cudaStream_t s) {
    if (N == 0) return;
    const bool fast = C % 8 == 0 && is_bf16x8(dout) && is_bf16x8(in) && is_f32x8(w) && (!din.p || is_bf16x8(din));
    if (fast) {
        if (din.p) {
            layernorm_din_bf16x8_kernel<<<(N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(
                bf16_ptr(din), bf16_ptr(dout), bf16_ptr(in), f32_ptr(w), mean, rstd, N, C);
            GPT_CUDA_LAUNCHED("layernorm_din_bf16x8_kernel");
        }
        if (!dw.p) return;
        const int chunks = chunk_count(N);
        const int threads = 128, col_blocks = (C / 8 + threads - 1) / threads;
        layernorm_dwdb_partial_bf16x8_kernel<<<dim3(col_blocks, chunks), threads, 0, s>>>(
            partial, bf16_ptr(dout), bf16_ptr(in), mean, rstd, N, C, chunks);
        GPT_CUDA_LAUNCHED("layernorm_dwdb_partial_bf16x8_kernel");
        layernorm_dwdb_finish_kernel<<<(C + kColThreads - 1) / kColThreads, kColThreads, 0, s>>>(
            dw, db, db.p != nullptr, partial, C, chunks);
        GPT_CUDA_LAUNCHED("layernorm_dwdb_finish_kernel");
        return;
    }
    if (din.p) {
        layernorm_din_kernel<<<(N + kWarps - 1) / kWarps, 32 * kWarps, 0, s>>>(din, dout, in, w,
                                                                               mean, rstd, N, C);
        GPT_CUDA_LAUNCHED("layernorm_din_kernel");
    }
    if (!dw.p) return;
    const int chunks = chunk_count(N);
    const int col_blocks = (C + kColThreads - 1) / kColThreads;
    layernorm_dwdb_partial_kernel<<<dim3(col_blocks, chunks), kColThreads, 0, s>>>(
        partial, dout, in, mean, rstd, N, C, chunks);
    GPT_CUDA_LAUNCHED("layernorm_dwdb_partial_kernel");
    layernorm_dwdb_finish_kernel<<<col_blocks, kColThreads, 0, s>>>(dw, db, db.p != nullptr,
                                                                    partial, C, chunks);
    GPT_CUDA_LAUNCHED("layernorm_dwdb_finish_kernel");
}

}  // namespace gpt::cuda
