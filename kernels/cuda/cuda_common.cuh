// Shared by the CUDA kernel files: status checks that name the failing call, the element types
// of the spaces, and typed views that let one kernel read/write fp32, bf16 or int32 memory.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "common/error.h"

namespace gpt::cuda {

[[noreturn]] void fail_cuda(cudaError_t err, const char* call, const char* file, int line);

// Every CUDA runtime call goes through this: a failure becomes a gpt::Error naming the call.
#define GPT_CUDA(call)                                                                     \
    do {                                                                                   \
        cudaError_t gpt_cuda_err_ = (call);                                                \
        if (gpt_cuda_err_ != cudaSuccess)                                                  \
            ::gpt::cuda::fail_cuda(gpt_cuda_err_, #call, __FILE__, __LINE__);               \
    } while (0)

// After each kernel launch: launch-configuration errors surface here, named by the kernel.
#define GPT_CUDA_LAUNCHED(name) GPT_CUDA(cudaGetLastError())

// Raises kernel K's dynamic shared-memory limit to `bytes` once per kernel (not per launch: the
// launches may be captured into the training step's CUDA graph). Above 48 KiB it is required.
template <auto K>
void allow_smem(size_t bytes) {
    static size_t allowed = 48 * 1024;
    if (bytes <= allowed) return;
    GPT_CUDA(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    allowed = bytes;
}

enum class DType : uint8_t { F32, BF16, I32 };

// A typed device pointer: what a kernel needs to read or write any space's elements as float.
struct TView {
    void* p = nullptr;
    DType t = DType::F32;
};

__device__ __forceinline__ float ld(TView v, size_t i) {
    switch (v.t) {
        case DType::F32: return static_cast<const float*>(v.p)[i];
        case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(v.p)[i]);
        default: return static_cast<float>(static_cast<const int32_t*>(v.p)[i]);
    }
}

__device__ __forceinline__ void st(TView v, size_t i, float x) {
    switch (v.t) {
        case DType::F32: static_cast<float*>(v.p)[i] = x; break;
        case DType::BF16: static_cast<__nv_bfloat16*>(v.p)[i] = __float2bfloat16(x); break;
        default: static_cast<int32_t*>(v.p)[i] = static_cast<int32_t>(x); break;
    }
}

inline size_t dtype_bytes(DType t) { return t == DType::BF16 ? 2 : 4; }

// Grid size for a grid-stride elementwise loop over n elements.
inline unsigned elementwise_blocks(size_t n, int threads = 256) {
    size_t b = (n + threads - 1) / threads;
    if (b > 65535ull * 8) b = 65535ull * 8;
    return static_cast<unsigned>(b < 1 ? 1 : b);
}

// GPT-2's tanh approximation and its derivative (shared by gelu kernels and the fallback path).
__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;   // sqrt(2/pi)
    const float u = k * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.f + tanhf(u));
}
__device__ __forceinline__ float gelu_tanh_grad(float x) {
    const float k = 0.7978845608028654f;
    const float u = k * (x + 0.044715f * x * x * x);
    const float th = tanhf(u);
    const float sech2 = 1.f - th * th;
    return 0.5f * (1.f + th) + 0.5f * x * sech2 * k * (1.f + 3.f * 0.044715f * x * x);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// The sum over each aligned group of LANES lanes (a power of two up to 32); every lane of the warp
// takes part.
template <int LANES>
__device__ __forceinline__ float lanes_sum(float v) {
#pragma unroll
    for (int o = LANES / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Whether every pointer starts on a 16-byte boundary (the 16-byte vector paths' condition).
inline bool all_aligned16(std::initializer_list<const void*> ptrs) {
    for (const void* p : ptrs)
        if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
    return true;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

}  // namespace gpt::cuda
