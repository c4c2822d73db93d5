// Counter-based random numbers: the same (seed, counter) gives the same value on the CPU and the
// GPU, so dropout masks are regenerated in backward instead of stored, and CPU and CUDA backends
// draw identical masks (which is what lets the GPU be checked against the CPU with dropout on).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define GPT_HD __host__ __device__ __forceinline__
#else
#define GPT_HD inline
#endif

namespace gpt {

// SplitMix64 finaliser: a strong 64-bit mix, cheap on both sides.
GPT_HD uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Uniform in [0, 1) with 24 bits, from (seed, counter).
GPT_HD float uniform01(uint64_t seed, uint64_t counter) {
    uint64_t h = mix64(seed ^ mix64(counter));
    return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

// Dropout draws four keep decisions from one SplitMix64 output (draw `group` of the stream that
// starts at `seed`): four 16-bit uniforms, lane l in bits [16 l, 16 l + 16). A decision keeps iff
// its lane >= round(p 2^16), so p acts rounded to a multiple of 2^-16 (the kept values are still
// scaled by 1/(1-p): a relative bias below 2^-17). One draw per four decisions, not two hashes per
// decision, is what made dropout cheap inside the attention kernels (docs/performance.md).
GPT_HD uint64_t dropout_draw(uint64_t seed, uint64_t group) { return mix64(seed + group * 0x9E3779B97F4A7C15ull); }
GPT_HD uint32_t dropout_threshold(float p) { return static_cast<uint32_t>(p * 65536.f + 0.5f); }
GPT_HD bool dropout_lane_keeps(uint64_t draw, int lane, uint32_t threshold) {
    return static_cast<uint32_t>((draw >> (16 * lane)) & 0xffffu) >= threshold;
}

// Elementwise dropout: element i is lane i % 4 of draw i / 4.
GPT_HD bool dropout_keep(uint64_t seed, uint64_t i, float p) {
    return dropout_lane_keeps(dropout_draw(seed, i >> 2), int(i & 3), dropout_threshold(p));
}

// Attention-probability dropout: entry (query i, key j) of the [T, T] matrix `bh` (= b*Hq + h)
// is a lane of the draw of its 2x2 block, so the pairs a kernel thread holds (j, j+1 along a
// query row, or i, i+1 along a key row) share one draw: block ((bh*Th + i/2)*Th + j/2) with
// Th = ceil(T/2), lane 2 (i % 2) + j % 2.
GPT_HD uint64_t attention_dropout_group(uint64_t bh, int i, int j, int T) {
    const uint64_t th = uint64_t(T + 1) >> 1;
    return (bh * th + uint64_t(i >> 1)) * th + uint64_t(j >> 1);
}
GPT_HD int attention_dropout_lane(int i, int j) { return ((i & 1) << 1) | (j & 1); }
GPT_HD bool attention_dropout_keep(uint64_t seed, uint64_t bh, int i, int j, int T, float p) {
    return dropout_lane_keeps(dropout_draw(seed, attention_dropout_group(bh, i, j, T)), attention_dropout_lane(i, j),
                              dropout_threshold(p));
}

// Host-side generator for init and sampling (xoshiro-like state in one word; reproducible).
struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed = 1337) : state(seed) {}
    uint64_t next_u64() { state += 0x9E3779B97F4A7C15ull; return mix64(state); }
    float uniform() { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
    // Box-Muller normal; consumes two draws.
    float normal();
};

}  // namespace gpt
