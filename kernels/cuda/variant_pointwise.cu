// M1/M2's pointwise helpers (ops.h sigmoid_fwd/bwd, add_scaled_fwd/bwd) on bf16 activations;
// alpha is read on the device from its fp32 Param, and dalpha is a fixed-order dot product.
// add_scaled was written for M2's [N, F] rows (200 MB at GPT-2 B = 32; M2 and M3 now scale only
// their [N, r] inputs): 16-byte vectors, and the backward is one pass (db and the dot's partials
// together) over enough blocks to reach memory bandwidth (docs/performance.md).
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"
#include "cuda/vec8.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;

#define GPT_GRID_STRIDE(e, n) \
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < (n); e += size_t(gridDim.x) * blockDim.x)

__global__ void sigmoid_fwd_kernel(bf16* out, const bf16* in, size_t n) {
    GPT_GRID_STRIDE(e, n) out[e] = __float2bfloat16(1.f / (1.f + expf(-__bfloat162float(in[e]))));
}
__global__ void sigmoid_bwd_kernel(bf16* din, const bf16* out, const bf16* dout, size_t n) {
    GPT_GRID_STRIDE(e, n) {
        const float y = __bfloat162float(out[e]);
        din[e] = __float2bfloat16(y * (1.f - y) * __bfloat162float(dout[e]));
    }
}
// out = a + alpha b (a null: alpha b); `vec`: n % 8 == 0 and every pointer 16-byte aligned.
__global__ void add_scaled_fwd_kernel(bf16* out, const bf16* a, const bf16* b, const float* alpha, size_t n,
                                      bool vec) {
    const float s = alpha[0];
    if (vec) {
        GPT_GRID_STRIDE(c, n / 8) {
            const F8 x = a ? load_bf16x8(a + 8 * c) : F8{}, y = load_bf16x8(b + 8 * c);
            F8 o;
#pragma unroll
            for (int j = 0; j < 8; ++j) o.v[j] = x.v[j] + s * y.v[j];
            store_bf16x8(out + 8 * c, o);
        }
    } else {
        GPT_GRID_STRIDE(e, n) out[e] = __float2bfloat16((a ? __bfloat162float(a[e]) : 0.f) + s * __bfloat162float(b[e]));
    }
}

// The dot's fixed grid: its partials, and so dalpha, come out the same on every run.
constexpr int kDotBlocks = 1024, kDotThreads = 256;

// One pass of add_scaled's backward: db = alpha dout (db null: skipped) and, when partial is
// non-null, block x's share of sum dout b in partial[x]. db may alias dout: each element is read
// before the same thread writes it.
__global__ void __launch_bounds__(kDotThreads) add_scaled_bwd_kernel(float* partial, bf16* db, const bf16* dy,
                                                                     const bf16* b, const float* alpha, size_t n,
                                                                     bool vec) {
    const float s = alpha[0];
    float acc = 0.f;
    if (vec) {
        GPT_GRID_STRIDE(c, n / 8) {
            const F8 g = load_bf16x8(dy + 8 * c);
            if (partial) {
                const F8 x = load_bf16x8(b + 8 * c);
#pragma unroll
                for (int j = 0; j < 8; ++j) acc += g.v[j] * x.v[j];
            }
            if (db) {
                F8 o;
#pragma unroll
                for (int j = 0; j < 8; ++j) o.v[j] = s * g.v[j];
                store_bf16x8(db + 8 * c, o);
            }
        }
    } else {
        GPT_GRID_STRIDE(e, n) {
            const float g = __bfloat162float(dy[e]);
            if (partial) acc += g * __bfloat162float(b[e]);
            if (db) db[e] = __float2bfloat16(s * g);
        }
    }
    if (!partial) return;
    __shared__ float warp_part[kDotThreads / 32];
    acc = warp_sum(acc);
    if (threadIdx.x % 32 == 0) warp_part[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int w = 0; w < kDotThreads / 32; ++w) t += warp_part[w];
        partial[blockIdx.x] = t;
    }
}

// out[0] += the partials' sum: one block, each warp a fixed 32-way tree, then the warps in order.
__global__ void __launch_bounds__(kDotBlocks) dot_finish_kernel(float* out, const float* partial) {
    __shared__ float warp_part[kDotBlocks / 32];
    const float v = warp_sum(partial[threadIdx.x]);
    if (threadIdx.x % 32 == 0) warp_part[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int w = 0; w < kDotBlocks / 32; ++w) t += warp_part[w];
        out[0] += t;
    }
}
#undef GPT_GRID_STRIDE

}  // namespace

namespace variant {

void sigmoid_fwd(const VariantEnv& e, Ten out, Ten in, size_t n) {
    if (n == 0) return;
    sigmoid_fwd_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, e.stream>>>(
        act(e, out, n, "sigmoid_fwd", "out"), act(e, in, n, "sigmoid_fwd", "in"), n);
    GPT_CUDA_LAUNCHED("sigmoid_fwd_kernel");
}

void sigmoid_bwd(const VariantEnv& e, Ten din, Ten out, Ten dout, size_t n) {
    if (n == 0) return;
    sigmoid_bwd_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, e.stream>>>(
        act(e, din, n, "sigmoid_bwd", "din"), act(e, out, n, "sigmoid_bwd", "out"),
        act(e, dout, n, "sigmoid_bwd", "dout"), n);
    GPT_CUDA_LAUNCHED("sigmoid_bwd_kernel");
}

void add_scaled_fwd(const VariantEnv& e, Ten out, Ten a, Ten b, Ten alpha, size_t n) {
    const char* op = "add_scaled_fwd";
    if (n == 0) return;
    bf16* o = act(e, out, n, op, "out");
    const bf16 *x = act_opt(e, a, n, op, "a"), *y = act(e, b, n, op, "b");
    const bool vec = n % 8 == 0 && all_aligned16({o, x, y});
    add_scaled_fwd_kernel<<<elementwise_blocks(vec ? n / 8 : n, kThreads), kThreads, 0, e.stream>>>(
        o, x, y, f32(e, alpha, 1, op, "alpha"), n, vec);
    GPT_CUDA_LAUNCHED("add_scaled_fwd_kernel");
}

void add_scaled_bwd(const VariantEnv& e, Ten db, Ten dalpha, Ten dout, Ten b, Ten alpha, size_t n) {
    const char* op = "add_scaled_bwd";
    if (n == 0 || (!db.present() && !dalpha.present())) return;
    const bf16* dy = act(e, dout, n, op, "dout");
    bf16* dbp = act_opt(e, db, n, op, "db");
    const bf16* bp = dalpha.present() ? act(e, b, n, op, "b") : nullptr;
    float* partial = dalpha.present() ? static_cast<float*>(e.scratch(kDotBlocks * sizeof(float) + 256)) : nullptr;
    const bool vec = n % 8 == 0 && all_aligned16({dy, dbp, bp});
    add_scaled_bwd_kernel<<<kDotBlocks, kDotThreads, 0, e.stream>>>(partial, dbp, dy, bp, f32(e, alpha, 1, op, "alpha"),
                                                                   n, vec);
    GPT_CUDA_LAUNCHED("add_scaled_bwd_kernel");
    if (partial) {
        dot_finish_kernel<<<1, kDotBlocks, 0, e.stream>>>(f32(e, dalpha, 1, op, "dalpha"), partial);
        GPT_CUDA_LAUNCHED("dot_finish_kernel");
    }
}

}  // namespace variant
}  // namespace gpt::cuda
