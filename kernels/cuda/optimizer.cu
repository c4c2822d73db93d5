// Multi-tensor AdamW (AMSGrad, SPAM spike clip) in one launch, refreshing the parameters' bf16
// copies in the same pass; and a deterministic sum of squares (fixed grid, ordered reductions).
#include <cmath>
#include <cstdint>

#include "cuda/cuda_kernels.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;

struct AdamWConst {
    float b1, b2, lr, eps, wd, theta, gscale, bias1, bias2;
    int amsgrad;
    const double* norm_sq;   // non-null: gscale comes from this global sum of squares (clipping)
    double clip;
};

// One element's update. The math follows kernels/cpu/adamw.cpp exactly.
__device__ __forceinline__ void adamw_element(float& p, float& m, float& v, float& vmax, float g, float wd,
                                              const AdamWConst& c) {
    if (c.theta > 0.f && v > 0.f) {
        const float bound = sqrtf(c.theta * v);
        if (fabsf(g) > bound) g = copysignf(bound, g);
    }
    m = c.b1 * m + (1.f - c.b1) * g;
    v = c.b2 * v + (1.f - c.b2) * g * g;
    float second = v;
    if (c.amsgrad) {
        second = fmaxf(vmax, v);
        vmax = second;
    }
    const float update = (m / c.bias1) / (sqrtf(second / c.bias2) + c.eps);
    p = p - c.lr * (wd * p + update);
}

__device__ __forceinline__ bool aligned(const void* p, unsigned bytes) {
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Block = one chunk of one tensor. Memory-bound (30 bytes per element): where the tensor's arrays
// are 16-byte aligned, four elements per thread step with 16-byte loads and stores; the rest one
// at a time. Same per-element math either way, so the same bits.
__global__ void adamw_kernel(const AdamWDevTensor* tensors, const AdamWChunk* chunks, AdamWConst c) {
    const AdamWChunk ch = chunks[blockIdx.x];
    const AdamWDevTensor t = tensors[ch.tensor];
    const size_t end = min(t.n, ch.start + kAdamWChunk);
    const float wd = t.decay ? c.wd : 0.f;
    float gscale = c.gscale;
    if (c.norm_sq) {   // clipping decided on the device: the host's formula, in double
        const double norm = sqrt(*c.norm_sq);
        if (!isfinite(norm)) return;   // a non-finite norm skips the update
        gscale = c.clip > 0.0 && norm > c.clip ? float(c.clip / (norm + 1e-6)) : 1.f;
    }
    size_t scalar_from = ch.start;
    const bool vec = aligned(t.p + ch.start, 16) && aligned(t.g + ch.start, 16) && aligned(t.m + ch.start, 16) &&
                     aligned(t.v + ch.start, 16) && (!c.amsgrad || aligned(t.vmax + ch.start, 16)) &&
                     (!t.p_bf16 || aligned(t.p_bf16 + ch.start, 8));
    if (vec) {
        const size_t vec_end = ch.start + (end - ch.start) / 4 * 4;
        for (size_t i = ch.start + 4 * threadIdx.x; i < vec_end; i += 4 * blockDim.x) {
            const float4 g4 = *reinterpret_cast<const float4*>(t.g + i);
            float4 p4 = *reinterpret_cast<const float4*>(t.p + i);
            float4 m4 = *reinterpret_cast<const float4*>(t.m + i);
            float4 v4 = *reinterpret_cast<const float4*>(t.v + i);
            float4 x4 = c.amsgrad ? *reinterpret_cast<const float4*>(t.vmax + i) : float4{0.f, 0.f, 0.f, 0.f};
            adamw_element(p4.x, m4.x, v4.x, x4.x, g4.x * gscale, wd, c);
            adamw_element(p4.y, m4.y, v4.y, x4.y, g4.y * gscale, wd, c);
            adamw_element(p4.z, m4.z, v4.z, x4.z, g4.z * gscale, wd, c);
            adamw_element(p4.w, m4.w, v4.w, x4.w, g4.w * gscale, wd, c);
            *reinterpret_cast<float4*>(t.p + i) = p4;
            *reinterpret_cast<float4*>(t.m + i) = m4;
            *reinterpret_cast<float4*>(t.v + i) = v4;
            if (c.amsgrad) *reinterpret_cast<float4*>(t.vmax + i) = x4;
            if (t.p_bf16) {
                __nv_bfloat162 lo = __floats2bfloat162_rn(p4.x, p4.y), hi = __floats2bfloat162_rn(p4.z, p4.w);
                uint2 packed;
                packed.x = *reinterpret_cast<uint32_t*>(&lo);
                packed.y = *reinterpret_cast<uint32_t*>(&hi);
                *reinterpret_cast<uint2*>(t.p_bf16 + i) = packed;
            }
        }
        scalar_from = vec_end;
    }
    for (size_t i = scalar_from + threadIdx.x; i < end; i += blockDim.x) {
        float p = t.p[i], m = t.m[i], v = t.v[i], x = c.amsgrad ? t.vmax[i] : 0.f;
        adamw_element(p, m, v, x, t.g[i] * gscale, wd, c);
        t.m[i] = m;
        t.v[i] = v;
        if (c.amsgrad) t.vmax[i] = x;
        t.p[i] = p;
        if (t.p_bf16) t.p_bf16[i] = __float2bfloat16(p);
    }
}

__global__ void sum_squares_partial_kernel(TView x, size_t n, double* partial) {
    __shared__ double warp_part[kThreads / 32];
    double s = 0.0;
    for (size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x; i < n;
         i += size_t(kSumSquaresBlocks) * kThreads) {
        const double v = ld(x, i);
        s += v * v;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x % 32 == 0) warp_part[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double b = 0.0;
        for (int w = 0; w < kThreads / 32; ++w) b += warp_part[w];
        partial[blockIdx.x] = b;
    }
}

__global__ void sum_squares_finish_kernel(double* partial) {
    if (threadIdx.x != 0) return;
    double s = 0.0;
    for (int b = 0; b < kSumSquaresBlocks; ++b) s += partial[b];
    partial[kSumSquaresBlocks] = s;
}

}  // namespace

void adamw(const AdamWDevTensor* tensors, const AdamWChunk* chunks, int n_chunks,
           const AdamWHyper& h, cudaStream_t s, const double* norm_sq, float clip) {
    if (n_chunks == 0) return;
    AdamWConst c;
    c.b1 = h.beta1;
    c.b2 = h.beta2;
    c.lr = h.lr;
    c.eps = h.eps;
    c.wd = h.weight_decay;
    c.theta = h.spam_theta;
    c.gscale = h.grad_scale;
    c.bias1 = 1.f - std::pow(h.beta1, static_cast<float>(h.step));
    c.bias2 = 1.f - std::pow(h.beta2, static_cast<float>(h.step));
    c.amsgrad = h.amsgrad ? 1 : 0;
    c.norm_sq = norm_sq;
    c.clip = clip;
    adamw_kernel<<<n_chunks, kThreads, 0, s>>>(tensors, chunks, c);
    GPT_CUDA_LAUNCHED("adamw_kernel");
}

void sum_squares(TView x, size_t n, double* partial, cudaStream_t s) {
    sum_squares_partial_kernel<<<kSumSquaresBlocks, kThreads, 0, s>>>(x, n, partial);
    GPT_CUDA_LAUNCHED("sum_squares_partial_kernel");
    sum_squares_finish_kernel<<<1, 32, 0, s>>>(partial);
    GPT_CUDA_LAUNCHED("sum_squares_finish_kernel");
}

}  // namespace gpt::cuda
