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

// Dropout keep decision for element `counter` of a stream keyed by `seed`.
GPT_HD bool dropout_keep(uint64_t seed, uint64_t counter, float p) {
    return uniform01(seed, counter) >= p;
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
