// Fused softmax + cross-entropy over rows of (bf16) logits, fp32 math, one block per row:
// an online max/sum pass, the loss, then (if dloss != 0) dloss * (softmax - onehot) written over
// the logits in place, with 0 in the padded columns [V, Vp).
// The GPT-2 path keeps the row in shared memory between the two passes (one read of the logits from
// memory, not two), two rows per SM; GPT_CLASSIFIER=reread selects the kernel that reads it again.
#include <cfloat>
#include <cstdlib>
#include <cstring>

#include "cuda/cuda_kernels.cuh"
#include "cuda/vec8.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 512;

// Combine two (max, sum of exp(x - max)) pairs.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
    const float mx = fmaxf(m, m2);
    s = (m == -FLT_MAX ? 0.f : s * __expf(m - mx)) + (m2 == -FLT_MAX ? 0.f : s2 * __expf(m2 - mx));
    m = mx;
}

// The row's log-sum-exp from every thread's (max, sum of exp(x - max)): warps by shuffles, then
// the warps' pairs in one fixed order, so every thread gets the same, deterministic value.
__device__ float block_logsumexp(float m, float s) {
    __shared__ float sm[32], ss[32];
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        merge(m, s, m2, s2);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    m = sm[0];
    s = ss[0];
    for (int w = 1; w < int(blockDim.x / 32); ++w) merge(m, s, sm[w], ss[w]);
    return m + __logf(s);
}

__global__ void classifier_kernel(float* losses, TView logits, const int32_t* targets, int V,
                                  int Vp, float dloss) {
    const size_t base = size_t(blockIdx.x) * Vp;
    float m = -FLT_MAX, s = 0.f;
    for (int j = threadIdx.x; j < V; j += kThreads) {
        const float x = ld(logits, base + j);
        if (x > m) {
            s = s * __expf(m - x) + 1.f;
            m = x;
        } else {
            s += __expf(x - m);
        }
    }
    const float lse = block_logsumexp(m, s);
    const int target = targets[blockIdx.x];
    const float target_logit = ld(logits, base + target);
    __syncthreads();   // every thread has read the target logit before anyone overwrites it
    if (threadIdx.x == 0) losses[blockIdx.x] = lse - target_logit;
    if (dloss == 0.f) return;
    for (int j = threadIdx.x; j < Vp; j += kThreads) {
        float g = 0.f;
        if (j < V) g = dloss * (__expf(ld(logits, base + j) - lse) - (j == target ? 1.f : 0.f));
        st(logits, base + j, g);
    }
}

// (m, s) += the logits x[0..8) at columns j.. (those below V): one max and one rescale per vector
// instead of a branch and a rescale per element.
__device__ __forceinline__ void online_add8(float& m, float& s, const F8& x, int j, int V) {
    float mx = m;
#pragma unroll
    for (int k = 0; k < 8; ++k)
        if (j + k < V) mx = fmaxf(mx, x.v[k]);
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k)
        if (j + k < V) acc += __expf(x.v[k] - mx);
    s = (m == -FLT_MAX ? 0.f : s * __expf(m - mx)) + acc;
    m = mx;
}

// Fast path: bf16 logits whose rows are 16-byte aligned (Vp % 8 == 0). Eight logits per thread
// step: one max and one rescale per vector instead of a branch and a rescale per element.
__global__ void classifier_bf16x8_kernel(float* losses, __nv_bfloat16* logits, const int32_t* targets, int V,
                                         int Vp, float dloss) {
    __nv_bfloat16* row = logits + size_t(blockIdx.x) * Vp;
    float m = -FLT_MAX, s = 0.f;
    for (int j = 8 * threadIdx.x; j < V; j += 8 * kThreads) {
        const F8 x = load_bf16x8(row + j);
        online_add8(m, s, x, j, V);
    }
    const float lse = block_logsumexp(m, s);
    const int target = targets[blockIdx.x];
    const float target_logit = __bfloat162float(row[target]);
    __syncthreads();   // every thread has read the target logit before anyone overwrites it
    if (threadIdx.x == 0) losses[blockIdx.x] = lse - target_logit;
    if (dloss == 0.f) return;
    for (int j = 8 * threadIdx.x; j < Vp; j += 8 * kThreads) {
        const F8 x = load_bf16x8(row + j);
        F8 g;
#pragma unroll
        for (int k = 0; k < 8; ++k)
            g.v[k] = j + k < V ? dloss * (__expf(x.v[k] - lse) - (j + k == target ? 1.f : 0.f)) : 0.f;
        store_bf16x8(row + j, g);
    }
}

// The row staged in shared memory: pass 1 reads it from memory (16-byte loads, four in flight
// per thread) into shared memory while forming (max, sum); pass 2 reads it from there.
__global__ void __launch_bounds__(kThreads, 2) classifier_smem_row_kernel(float* losses, __nv_bfloat16* logits,
                                                                          const int32_t* targets, int V, int Vp,
                                                                          float dloss) {
    extern __shared__ uint4 srow[];   // Vp / 8 vectors
    __nv_bfloat16* row = logits + size_t(blockIdx.x) * Vp;
    const int vecs = Vp / 8;
    float m = -FLT_MAX, s = 0.f;
#pragma unroll 4
    for (int v = threadIdx.x; v < vecs; v += kThreads) {
        const uint4 raw = load_raw16(row + 8 * v);
        srow[v] = raw;
        const int j = 8 * v;
        if (j >= V) continue;
        const F8 x = bf16x8_to_f8(raw);
        online_add8(m, s, x, j, V);
    }
    const float lse = block_logsumexp(m, s);   // its barrier also publishes srow
    const int target = targets[blockIdx.x];
    if (threadIdx.x == 0)
        losses[blockIdx.x] = lse - __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(srow)[target]);
    if (dloss == 0.f) return;
#pragma unroll 4
    for (int v = threadIdx.x; v < vecs; v += kThreads) {
        const int j = 8 * v;
        const F8 x = bf16x8_to_f8(srow[v]);
        F8 g;
#pragma unroll
        for (int k = 0; k < 8; ++k)
            g.v[k] = j + k < V ? dloss * (__expf(x.v[k] - lse) - (j + k == target ? 1.f : 0.f)) : 0.f;
        store_bf16x8(row + j, g);
    }
}

// Two blocks per SM need the row in at most half of the SM's shared memory (GPT-2: 98 KiB of 227).
constexpr size_t kSmemRowMaxBytes = 110 * 1024;
bool smem_row_enabled() {
    static const bool on = [] {
        const char* v = std::getenv("GPT_CLASSIFIER");
        return !(v && std::strcmp(v, "reread") == 0);
    }();
    return on;
}

}  // namespace

void classifier(float* losses, TView logits, const int32_t* targets, int N, int V, int Vp,
                float dloss, cudaStream_t s) {
    if (N == 0) return;
    const size_t row_bytes = size_t(Vp) * 2;
    if (Vp % 8 == 0 && is_bf16x8(logits) && row_bytes <= kSmemRowMaxBytes && smem_row_enabled()) {
        allow_smem<classifier_smem_row_kernel>(row_bytes);
        classifier_smem_row_kernel<<<N, kThreads, row_bytes, s>>>(losses, bf16_ptr(logits), targets, V, Vp, dloss);
        GPT_CUDA_LAUNCHED("classifier_smem_row_kernel");
        return;
    }
    if (Vp % 8 == 0 && is_bf16x8(logits)) {
        classifier_bf16x8_kernel<<<N, kThreads, 0, s>>>(losses, bf16_ptr(logits), targets, V, Vp, dloss);
        GPT_CUDA_LAUNCHED("classifier_bf16x8_kernel");
        return;
    }
    classifier_kernel<<<N, kThreads, 0, s>>>(losses, logits, targets, V, Vp, dloss);
    GPT_CUDA_LAUNCHED("classifier_kernel");
}

}  // namespace gpt::cuda
