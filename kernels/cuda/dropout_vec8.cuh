// Dropout of eight consecutive bf16 elements in registers, shared by the elementwise dropout kernel
// and the kernels that fuse the residual dropout into the LayerNorm next to it (layernorm.cu), so
// that all of them keep and scale the same elements to the same values (common/rng.h contract).
#pragma once
#include <cstdint>

#include "common/rng.h"
#include "cuda/vec8.cuh"

namespace gpt::cuda {

// What a kernel needs to drop out: the seed, the 16-bit keep threshold and 1 / (1 - p); `on` is false
// at p = 0 (everything kept unscaled, no hashing, as the CPU does).
struct DropoutArgs {
    uint64_t seed = 0;
    uint32_t threshold = 0;
    float keep_scale = 1.f;
    bool on = false;
};
inline DropoutArgs dropout_args(float p, uint64_t seed) {
    DropoutArgs a;
    if (p <= 0.f) return a;
    a.seed = seed;
    a.threshold = dropout_threshold(p);
    a.keep_scale = 1.f / (1.f - p);
    a.on = true;
    return a;
}

// The keep decisions of elements [8 g, 8 g + 8) of the flat tensor (draws 2 g and 2 g + 1, four
// decisions each) as the bits of a byte: bit j for element 8 g + j (ResidualDropout::keep's layout).
__device__ __forceinline__ uint32_t dropout_keep_bits(size_t g, const DropoutArgs& d) {
    const uint64_t draws[2] = {dropout_draw(d.seed, 2 * g), dropout_draw(d.seed, 2 * g + 1)};
    uint32_t bits = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) bits |= uint32_t(dropout_lane_keeps(draws[j >> 2], j & 3, d.threshold)) << j;
    return bits;
}
// Kept values times keep_scale, the others 0 (fp32, not yet rounded: storing them rounds as
// dropout's own store does).
__device__ __forceinline__ void apply_keep_bits(F8& v, uint32_t bits, float keep_scale) {
#pragma unroll
    for (int j = 0; j < 8; ++j) v.v[j] = (bits >> j) & 1u ? v.v[j] * keep_scale : 0.f;
}
__device__ __forceinline__ void dropout_f8(F8& v, size_t g, const DropoutArgs& d) {
    apply_keep_bits(v, dropout_keep_bits(g, d), d.keep_scale);
}

}  // namespace gpt::cuda
