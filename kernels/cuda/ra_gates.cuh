// RA's gates on the device, shared by the fold kernels (variant_ra_*.cu) and the flash kernels that
// fold inside the attention (attention_*.cu): the CPU's rules (kernels/cpu/variant_attention.h).
#pragma once
#include <cuda_runtime.h>

namespace gpt::cuda {

// Gates enter the low-rank folds as sqrt(max(g, 1e-8)) on both sides and the exact fold as max(g, 1e-8)
// on one side; below the floor a gate gets no gradient (ops.h, RaFoldDims).
__device__ __forceinline__ float sqrt_gate(float g) { return sqrtf(fmaxf(g, 1e-8f)); }
__device__ __forceinline__ float dsqrt_gate(float g) { return g > 1e-8f ? 0.5f / sqrtf(g) : 0.f; }
__device__ __forceinline__ float floored_gate(float g) { return fmaxf(g, 1e-8f); }
__device__ __forceinline__ float dfloored_gate(float g) { return g > 1e-8f ? 1.f : 0.f; }
// A gate's value: the tensor's entry, or the fixed value when the tensor is absent (null).
__device__ __forceinline__ float gate_value(const float* g, int i, float fixed) { return g ? g[i] : fixed; }

}  // namespace gpt::cuda
