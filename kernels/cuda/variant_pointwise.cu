// M1/M2's pointwise helpers (ops.h sigmoid_fwd/bwd, add_scaled_fwd/bwd) on bf16 activations;
// alpha is read on the device from its fp32 Param, and dalpha is a fixed-order dot product.
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

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
__global__ void add_scaled_fwd_kernel(bf16* out, const bf16* a, const bf16* b, const float* alpha, size_t n) {
    const float s = alpha[0];
    GPT_GRID_STRIDE(e, n) out[e] = __float2bfloat16(__bfloat162float(a[e]) + s * __bfloat162float(b[e]));
}
__global__ void scale_by_kernel(bf16* out, const bf16* in, const float* alpha, size_t n) {
    const float s = alpha[0];
    GPT_GRID_STRIDE(e, n) out[e] = __float2bfloat16(s * __bfloat162float(in[e]));
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
    add_scaled_fwd_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, e.stream>>>(
        act(e, out, n, op, "out"), act(e, a, n, op, "a"), act(e, b, n, op, "b"), f32(e, alpha, 1, op, "alpha"), n);
    GPT_CUDA_LAUNCHED("add_scaled_fwd_kernel");
}

void add_scaled_bwd(const VariantEnv& e, Ten db, Ten dalpha, Ten dout, Ten b, Ten alpha, size_t n) {
    const char* op = "add_scaled_bwd";
    if (n == 0) return;
    const bf16* dy = act(e, dout, n, op, "dout");
    // dalpha first: db may alias dout.
    if (dalpha.present()) {
        ScratchPlan sp;
        sp.add(kDotPartials + 1);
        dot_add(f32(e, dalpha, 1, op, "dalpha"), dy, act(e, b, n, op, "b"), n, sp.take(e), e.stream);
    }
    if (db.present()) {
        scale_by_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, e.stream>>>(
            act(e, db, n, op, "db"), dy, f32(e, alpha, 1, op, "alpha"), n);
        GPT_CUDA_LAUNCHED("scale_by_kernel");
    }
}

}  // namespace variant
}  // namespace gpt::cuda
