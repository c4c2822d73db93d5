// Eight bf16 values at a time: one 16-byte load or store per thread, converted to/from fp32 in
// registers. The memory-bound kernels use these on their fast path (bf16 activations, rows that
// are multiples of 8 and 16-byte aligned); the typed-view loops remain the general path.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/cuda_common.cuh"

namespace gpt::cuda {

struct F8 {
    float v[8];
};

// The raw 16 bytes, for kernels that keep the bf16 form (e.g. to stage it in shared memory) and
// convert later with bf16x8_to_f8.
__device__ __forceinline__ uint4 load_raw16(const __nv_bfloat16* p) { return *reinterpret_cast<const uint4*>(p); }

__device__ __forceinline__ F8 bf16x8_to_f8(const uint4& raw) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
    F8 f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const float2 x = __bfloat1622float2(h[j]);
        f.v[2 * j] = x.x;
        f.v[2 * j + 1] = x.y;
    }
    return f;
}

__device__ __forceinline__ F8 load_bf16x8(const __nv_bfloat16* p) { return bf16x8_to_f8(load_raw16(p)); }

__device__ __forceinline__ uint4 pack_bf16x8(const F8& f) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) h[j] = __floats2bfloat162_rn(f.v[2 * j], f.v[2 * j + 1]);
    return raw;
}

__device__ __forceinline__ void store_bf16x8(__nv_bfloat16* p, const F8& f) {
    *reinterpret_cast<uint4*>(p) = pack_bf16x8(f);
}

__device__ __forceinline__ F8 load_f32x8(const float* p) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    return F8{{a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w}};
}

// True when the view is bf16 and 16-byte aligned (so element 8k starts a 16-byte vector).
inline bool is_bf16x8(TView v) {
    return v.t == DType::BF16 && v.p != nullptr && reinterpret_cast<uintptr_t>(v.p) % 16 == 0;
}
inline bool is_f32x8(TView v) {
    return v.t == DType::F32 && v.p != nullptr && reinterpret_cast<uintptr_t>(v.p) % 16 == 0;
}

inline __nv_bfloat16* bf16_ptr(TView v) { return static_cast<__nv_bfloat16*>(v.p); }
inline float* f32_ptr(TView v) { return static_cast<float*>(v.p); }

}  // namespace gpt::cuda
