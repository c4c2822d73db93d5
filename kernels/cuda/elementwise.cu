// Elementwise kernels over typed views: conversion, scale, GELU, add, dropout, masks, and the
// deterministic column sums used for bias gradients when no cuBLASLt epilogue applies.
#include <cmath>

#include "common/rng.h"
#include "cuda/cuda_kernels.cuh"
#include "cuda/dropout_vec8.cuh"
#include "cuda/vec8.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;

#define GPT_GRID_STRIDE(i, n)                                                                  \
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < (n);                    \
         i += size_t(gridDim.x) * blockDim.x)

__global__ void convert_kernel(TView dst, TView src, size_t n) {
    GPT_GRID_STRIDE(i, n) st(dst, i, ld(src, i));
}
__global__ void scale_kernel(TView x, float a, size_t n) {
    GPT_GRID_STRIDE(i, n) st(x, i, ld(x, i) * a);
}
__global__ void gelu_fwd_kernel(TView out, TView in, size_t n) {
    GPT_GRID_STRIDE(i, n) st(out, i, gelu_tanh(ld(in, i)));
}
__global__ void gelu_bwd_kernel(TView din, TView in, TView dout, size_t n) {
    GPT_GRID_STRIDE(i, n) st(din, i, gelu_tanh_grad(ld(in, i)) * ld(dout, i));
}
__global__ void add_kernel(TView out, TView a, TView b, size_t n) {
    GPT_GRID_STRIDE(i, n) st(out, i, ld(a, i) + ld(b, i));
}

// Fast paths over all-bf16 operands, eight elements per thread (n8 = n / 8 vectors).
__global__ void gelu_bwd_bf16x8_kernel(__nv_bfloat16* din, const __nv_bfloat16* in, const __nv_bfloat16* dout,
                                       size_t n8) {
    GPT_GRID_STRIDE(i, n8) {
        const F8 x = load_bf16x8(in + 8 * i), g = load_bf16x8(dout + 8 * i);
        F8 r;
#pragma unroll
        for (int j = 0; j < 8; ++j) r.v[j] = gelu_tanh_grad(x.v[j]) * g.v[j];
        store_bf16x8(din + 8 * i, r);
    }
}
// Dropout over bf16, eight elements (two draws of four decisions) per thread: dropout_kernel's
// decisions and values, one 16-byte load and store.
__global__ void dropout_bf16x8_kernel(__nv_bfloat16* x, size_t n8, DropoutArgs d) {
    GPT_GRID_STRIDE(i, n8) {
        F8 v = load_bf16x8(x + 8 * i);
        dropout_f8(v, i, d);
        store_bf16x8(x + 8 * i, v);
    }
}

__global__ void add_bf16x8_kernel(__nv_bfloat16* out, const __nv_bfloat16* a, const __nv_bfloat16* b, size_t n8) {
    GPT_GRID_STRIDE(i, n8) {
        const F8 x = load_bf16x8(a + 8 * i), y = load_bf16x8(b + 8 * i);
        F8 r;
#pragma unroll
        for (int j = 0; j < 8; ++j) r.v[j] = x.v[j] + y.v[j];
        store_bf16x8(out + 8 * i, r);
    }
}
// One thread per group of four elements: the four keep decisions of one draw (common/rng.h).
__global__ void dropout_kernel(TView x, size_t n, float p, uint64_t seed) {
    const float keep_scale = 1.f / (1.f - p);
    const uint32_t threshold = dropout_threshold(p);
    GPT_GRID_STRIDE(group, (n + 3) / 4) {
        const uint64_t draw = dropout_draw(seed, group);
        for (int lane = 0; lane < 4; ++lane) {
            const size_t i = group * 4 + lane;
            if (i < n) st(x, i, dropout_lane_keeps(draw, lane, threshold) ? ld(x, i) * keep_scale : 0.f);
        }
    }
}
__global__ void mul_kernel(TView x, TView mask, size_t n) {
    GPT_GRID_STRIDE(i, n) st(x, i, ld(x, i) * ld(mask, i));
}
__global__ void nan_kernel(TView x, size_t n) {
    GPT_GRID_STRIDE(i, n) st(x, i, __int_as_float(0x7fc00000));
}

__global__ void add_bias_kernel(TView out, TView bias, size_t n, int N) {
    GPT_GRID_STRIDE(i, n) st(out, i, ld(out, i) + ld(bias, i % N));
}

// Pass 1: block (bx, by) sums rows [by*rows, (by+1)*rows) of columns bx*256.. into partial[by, :].
constexpr int kColsumRows = 256;
__global__ void colsum_partial_kernel(float* partial, TView x, int M, int N) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= N) return;
    const int r0 = blockIdx.y * kColsumRows, r1 = min(M, r0 + kColsumRows);
    float s = 0.f;
    for (int r = r0; r < r1; ++r) s += ld(x, size_t(r) * N + col);
    partial[size_t(blockIdx.y) * N + col] = s;
}
// Pass 1 for bf16 rows of 16-byte vectors (N % 8 == 0): block (bx, by) takes 256 columns (32
// vectors) and 256 rows, thread (vector v, row group g) adds rows g, g + 8, ... with 16-byte loads
// (eight in flight), then the 8 groups are added in group order: a bias gradient's column sum at
// memory bandwidth instead of one 2-byte load per thread and row.
__global__ void colsum_partial_bf16x8_kernel(float* partial, const __nv_bfloat16* x, int M, int N) {
    __shared__ float groups[8][256];
    const int v = threadIdx.x % 32, g = threadIdx.x / 32;
    const int col = blockIdx.x * 256 + 8 * v;
    const int r0 = blockIdx.y * kColsumRows, r1 = min(M, r0 + kColsumRows);
    F8 acc{};
    if (col < N) {
#pragma unroll 8
        for (int r = r0 + g; r < r1; r += 8) {
            const F8 xv = load_bf16x8(x + size_t(r) * N + col);
#pragma unroll
            for (int j = 0; j < 8; ++j) acc.v[j] += xv.v[j];
        }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) groups[g][8 * v + j] = acc.v[j];
    __syncthreads();
    const int c = blockIdx.x * 256 + threadIdx.x;
    if (c >= N) return;
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) sum += groups[k][threadIdx.x];
    partial[size_t(blockIdx.y) * N + c] = sum;
}

// Pass 1 for narrow matrices (N <= kNarrowCols, e.g. per-head sums over tokens): there the kernel
// above would leave most of a block idle and walk 256 rows one dependent add at a time. Here a block
// sums a contiguous run of rows as one flat run of elements: thread t reads elements t, t+S, ... with
// S = N * floor(256 / N), all in column t % N; then thread c < N adds the threads of column c in
// thread order (fixed for a given M, N).
constexpr int kNarrowCols = 64;
int narrow_rows_per_part(int N) { return max(kColsumRows, 16 * (kThreads / N)); }
__global__ void colsum_partial_narrow_kernel(float* partial, TView x, int M, int N, int rows_per_part) {
    __shared__ float sums[kThreads];
    const int S = N * (kThreads / N);
    const int r0 = blockIdx.x * rows_per_part, r1 = min(M, r0 + rows_per_part);
    const size_t e1 = size_t(r1) * N;
    float s = 0.f;
    if (int(threadIdx.x) < S)
        for (size_t e = size_t(r0) * N + threadIdx.x; e < e1; e += S) s += ld(x, e);
    sums[threadIdx.x] = s;
    __syncthreads();
    if (int(threadIdx.x) < N) {
        float acc = 0.f;
        for (int t = threadIdx.x; t < S; t += N) acc += sums[t];
        partial[size_t(blockIdx.x) * N + threadIdx.x] = acc;
    }
}
// Pass 2: out[col] += sum over the partial rows, in order.
__global__ void colsum_finish_kernel(TView out, const float* partial, int parts, int N) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= N) return;
    float s = 0.f;
    for (int p = 0; p < parts; ++p) s += partial[size_t(p) * N + col];
    st(out, col, ld(out, col) + s);
}

}  // namespace

void convert(TView dst, TView src, size_t n, cudaStream_t s) {
    if (n == 0) return;
    if (dst.t == src.t) {   // a plain copy: the copy engine's rate, not the typed per-element loop
        if (dst.p == src.p) return;
        GPT_CUDA(cudaMemcpyAsync(dst.p, src.p, n * dtype_bytes(dst.t), cudaMemcpyDeviceToDevice, s));
        return;
    }
    convert_kernel<<<elementwise_blocks(n), kThreads, 0, s>>>(dst, src, n);
    GPT_CUDA_LAUNCHED("convert_kernel");
}
void scale(TView x, float a, size_t n, cudaStream_t s) {
    if (n == 0) return;
    scale_kernel<<<elementwise_blocks(n), kThreads, 0, s>>>(x, a, n);
    GPT_CUDA_LAUNCHED("scale_kernel");
}
void gelu_fwd(TView out, TView in, size_t n, cudaStream_t s) {
    if (n == 0) return;
    gelu_fwd_kernel<<<elementwise_blocks(n), kThreads, 0, s>>>(out, in, n);
    GPT_CUDA_LAUNCHED("gelu_fwd_kernel");
}
void gelu_bwd(TView din, TView in, TView dout, size_t n, cudaStream_t s) {
    if (n == 0) return;
    if (n % 8 == 0 && is_bf16x8(din) && is_bf16x8(in) && is_bf16x8(dout)) {
        gelu_bwd_bf16x8_kernel<<<elementwise_blocks(n / 8), kThreads, 0, s>>>(bf16_ptr(din), bf16_ptr(in),
                                                                             bf16_ptr(dout), n / 8);
        GPT_CUDA_LAUNCHED("gelu_bwd_bf16x8_kernel");
        return;
    }
    gelu_bwd_kernel<<<elementwise_blocks(n), kThreads, 0, s>>>(din, in, dout, n);
    GPT_CUDA_LAUNCHED("gelu_bwd_kernel");
}
void add(TView out, TView a, TView b, size_t n, cudaStream_t s) {
    if (n == 0) return;
    if (n % 8 == 0 && is_bf16x8(out) && is_bf16x8(a) && is_bf16x8(b)) {
        add_bf16x8_kernel<<<elementwise_blocks(n / 8), kThreads, 0, s>>>(bf16_ptr(out), bf16_ptr(a), bf16_ptr(b),
                                                                        n / 8);
        GPT_CUDA_LAUNCHED("add_bf16x8_kernel");
        return;
    }
    add_kernel<<<elementwise_blocks(n), kThreads, 0, s>>>(out, a, b, n);
    GPT_CUDA_LAUNCHED("add_kernel");
}
void dropout(TView x, size_t n, float p, uint64_t seed, cudaStream_t s) {
    if (n == 0 || p <= 0.f) return;   // p = 0 keeps everything: skip the hashing (as the CPU)
    if (n % 8 == 0 && is_bf16x8(x)) {
        dropout_bf16x8_kernel<<<elementwise_blocks(n / 8), kThreads, 0, s>>>(bf16_ptr(x), n / 8,
                                                                            dropout_args(p, seed));
        GPT_CUDA_LAUNCHED("dropout_bf16x8_kernel");
        return;
    }
    dropout_kernel<<<elementwise_blocks((n + 3) / 4), kThreads, 0, s>>>(x, n, p, seed);
    GPT_CUDA_LAUNCHED("dropout_kernel");
}
void mul_inplace(TView x, TView mask, size_t n, cudaStream_t s) {
    if (n == 0) return;
    mul_kernel<<<elementwise_blocks(n), kThreads, 0, s>>>(x, mask, n);
    GPT_CUDA_LAUNCHED("mul_kernel");
}
void fill_nan(TView x, size_t n, cudaStream_t s) {
    if (n == 0) return;
    nan_kernel<<<elementwise_blocks(n), kThreads, 0, s>>>(x, n);
    GPT_CUDA_LAUNCHED("nan_kernel");
}

void add_bias(TView out, TView bias, int M, int N, cudaStream_t s) {
    const size_t n = size_t(M) * N;
    if (n == 0) return;
    add_bias_kernel<<<elementwise_blocks(n), kThreads, 0, s>>>(out, bias, n, N);
    GPT_CUDA_LAUNCHED("add_bias_kernel");
}

size_t colsum_scratch(int M, int N) {
    return size_t((M + kColsumRows - 1) / kColsumRows) * N;
}
void colsum_add(TView out, TView x, int M, int N, float* partial, cudaStream_t s) {
    if (M <= 0 || N <= 0) return;
    int parts = (M + kColsumRows - 1) / kColsumRows;
    if (N <= kNarrowCols) {   // rows_per_part >= kColsumRows: no more parts than colsum_scratch allows
        const int rows = narrow_rows_per_part(N);
        parts = (M + rows - 1) / rows;
        colsum_partial_narrow_kernel<<<parts, kThreads, 0, s>>>(partial, x, M, N, rows);
        GPT_CUDA_LAUNCHED("colsum_partial_narrow_kernel");
    } else if (N % 8 == 0 && is_bf16x8(x)) {
        colsum_partial_bf16x8_kernel<<<dim3((N + 255) / 256, parts), 256, 0, s>>>(partial, bf16_ptr(x), M, N);
        GPT_CUDA_LAUNCHED("colsum_partial_bf16x8_kernel");
    } else {
        const dim3 grid((N + kThreads - 1) / kThreads, parts);
        colsum_partial_kernel<<<grid, kThreads, 0, s>>>(partial, x, M, N);
        GPT_CUDA_LAUNCHED("colsum_partial_kernel");
    }
    colsum_finish_kernel<<<(N + kThreads - 1) / kThreads, kThreads, 0, s>>>(out, partial, parts, N);
    GPT_CUDA_LAUNCHED("colsum_finish_kernel");
}

}  // namespace gpt::cuda
