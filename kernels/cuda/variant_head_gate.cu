// Per-head output gate (ops.h head_gate_fwd/bwd; RA-CT apply and M1's consumer):
// out[n,h,:] = ((1-a) + a gate[n,h]) ctx[n,h,:]. Backward: one warp per (n, h); dalpha is a
// per-(n, h) contribution summed over rows in a fixed order.
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float alpha_of(const float* alpha, float fixed) { return alpha ? alpha[0] : fixed; }

__global__ void head_gate_fwd_kernel(bf16* out, const bf16* ctx, const bf16* gate, const float* alpha, float fixed,
                                     size_t n, int Dv) {
    const float a = alpha_of(alpha, fixed);
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
        const float f = (1.f - a) + a * __bfloat162float(gate[e / Dv]);
        out[e] = __float2bfloat16(f * __bfloat162float(ctx[e]));
    }
}

// calpha (null = skip): [N*H] contributions (gate - 1) dout.ctx.
__global__ void head_gate_bwd_kernel(bf16* dctx, bf16* dgate, float* calpha, const bf16* dout, const bf16* ctx,
                                     const bf16* gate, const float* alpha, float fixed, int rows, int Dv) {
    const int r = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (r >= rows) return;
    const float a = alpha_of(alpha, fixed), g = __bfloat162float(gate[r]);
    const float f = (1.f - a) + a * g;
    float df = 0.f;
    for (int c = lane; c < Dv; c += 32) {
        const size_t e = size_t(r) * Dv + c;
        const float dy = __bfloat162float(dout[e]);
        df += dy * __bfloat162float(ctx[e]);
        dctx[e] = __float2bfloat16(f * dy);
    }
    df = warp_sum(df);
    if (lane != 0) return;
    if (dgate) dgate[r] = __float2bfloat16(a * df);
    if (calpha) calpha[r] = (g - 1.f) * df;
}

}  // namespace

namespace variant {

void head_gate_fwd(const VariantEnv& e, Ten out, Ten ctx, Ten gate, Ten alpha, float alpha_fixed, int N, int H,
                   int Dv) {
    const char* op = "head_gate_fwd";
    check_positive(op, {N, H, Dv});
    const size_t n = size_t(N) * H * Dv;
    head_gate_fwd_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, e.stream>>>(
        act(e, out, n, op, "out"), act(e, ctx, n, op, "ctx"), act(e, gate, size_t(N) * H, op, "gate"),
        f32_opt(e, alpha, 1, op, "alpha"), alpha_fixed, n, Dv);
    GPT_CUDA_LAUNCHED("head_gate_fwd_kernel");
}

void head_gate_bwd(const VariantEnv& e, Ten dctx, Ten dgate, Ten dalpha, Ten dout, Ten ctx, Ten gate, Ten alpha,
                   float alpha_fixed, int N, int H, int Dv) {
    const char* op = "head_gate_bwd";
    check_positive(op, {N, H, Dv});
    const size_t n = size_t(N) * H * Dv;
    const int rows = N * H;
    float* da = f32_opt(e, dalpha, 1, op, "dalpha");
    ScratchPlan sp;
    const size_t o_c = sp.add(size_t(rows)), o_part = sp.add(colsum_scratch(rows, 1));
    float* scratch = da ? sp.take(e) : nullptr;
    head_gate_bwd_kernel<<<(rows + kWarps - 1) / kWarps, kThreads, 0, e.stream>>>(
        act(e, dctx, n, op, "dctx"), act_opt(e, dgate, size_t(rows), op, "dgate"), da ? scratch + o_c : nullptr,
        act(e, dout, n, op, "dout"), act(e, ctx, n, op, "ctx"), act(e, gate, size_t(rows), op, "gate"),
        f32_opt(e, alpha, 1, op, "alpha"), alpha_fixed, rows, Dv);
    GPT_CUDA_LAUNCHED("head_gate_bwd_kernel");
    if (da) rows_sum_add(da, scratch + o_c, rows, 1, scratch + o_part, e.stream);
}

}  // namespace variant
}  // namespace gpt::cuda
