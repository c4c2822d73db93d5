// Per-head output gate (ops.h head_gate_fwd/bwd; RA-CT apply and M1's consumer):
// out[n,h,:] = ((1-a) + a gate[n,h]) ctx[n,h,:]. Backward: one warp per (n, h); dalpha is a
// per-(n, h) contribution summed over rows in a fixed order.
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"
#include "cuda/vec8.cuh"

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


// The 16-byte paths (Dv = 8 x a power of two up to 256, aligned rows): 8 values per thread, a row
// is Dv / 8 consecutive lanes. Same per-element math as the kernels above.
__global__ void head_gate_fwd_vec_kernel(bf16* out, const bf16* ctx, const bf16* gate, const float* alpha, float fixed,
                                         size_t n8, int Dv) {
    const float a = alpha_of(alpha, fixed);
    for (size_t v = size_t(blockIdx.x) * blockDim.x + threadIdx.x; v < n8; v += size_t(gridDim.x) * blockDim.x) {
        const size_t e = v * 8;
        const float f = (1.f - a) + a * __bfloat162float(gate[e / Dv]);
        F8 x = load_bf16x8(ctx + e);
#pragma unroll
        for (int k = 0; k < 8; ++k) x.v[k] *= f;
        store_bf16x8(out + e, x);
    }
}
__global__ void head_gate_bwd_vec_kernel(bf16* dctx, bf16* dgate, float* calpha, const bf16* dout, const bf16* ctx,
                                         const bf16* gate, const float* alpha, float fixed, int rows, int Dv) {
    const int per_row = Dv / 8;
    const size_t v = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int r = int(v / per_row);
    const bool valid = r < rows;   // whole row groups: per_row divides 32
    const float a = alpha_of(alpha, fixed), g = valid ? __bfloat162float(gate[r]) : 0.f;
    const float f = (1.f - a) + a * g;
    float df = 0.f;
    if (valid) {
        const size_t e = v * 8;
        F8 dy = load_bf16x8(dout + e);
        const F8 x = load_bf16x8(ctx + e);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            df += dy.v[k] * x.v[k];
            dy.v[k] *= f;
        }
        store_bf16x8(dctx + e, dy);
    }
    for (int o = per_row / 2; o > 0; o >>= 1) df += __shfl_xor_sync(0xffffffffu, df, o);
    if (!valid || threadIdx.x % per_row != 0) return;
    if (dgate) dgate[r] = __float2bfloat16(a * df);
    if (calpha) calpha[r] = (g - 1.f) * df;
}

bool vec_rows(int Dv, std::initializer_list<const void*> ptrs) {
    const int per_row = Dv / 8;
    if (Dv % 8 != 0 || per_row > 32 || (per_row & (per_row - 1)) != 0) return false;
    return all_aligned16(ptrs);
}
}  // namespace

namespace variant {

void head_gate_fwd(const VariantEnv& e, Ten out, Ten ctx, Ten gate, Ten alpha, float alpha_fixed, int N, int H,
                   int Dv) {
    const char* op = "head_gate_fwd";
    check_positive(op, {N, H, Dv});
    const size_t n = size_t(N) * H * Dv;
    bf16* o = act(e, out, n, op, "out");
    const bf16* c = act(e, ctx, n, op, "ctx");
    const bf16* g = act(e, gate, size_t(N) * H, op, "gate");
    const float* a = f32_opt(e, alpha, 1, op, "alpha");
    if (vec_rows(Dv, {o, c})) {
        head_gate_fwd_vec_kernel<<<elementwise_blocks(n / 8, kThreads), kThreads, 0, e.stream>>>(o, c, g, a, alpha_fixed,
                                                                                                  n / 8, Dv);
        GPT_CUDA_LAUNCHED("head_gate_fwd_vec_kernel");
        return;
    }
    head_gate_fwd_kernel<<<elementwise_blocks(n, kThreads), kThreads, 0, e.stream>>>(o, c, g, a, alpha_fixed, n, Dv);
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
    bf16* dc = act(e, dctx, n, op, "dctx");
    bf16* dg = act_opt(e, dgate, size_t(rows), op, "dgate");
    const bf16* dy = act(e, dout, n, op, "dout");
    const bf16* c = act(e, ctx, n, op, "ctx");
    const bf16* g = act(e, gate, size_t(rows), op, "gate");
    const float* a = f32_opt(e, alpha, 1, op, "alpha");
    if (vec_rows(Dv, {dc, dy, c})) {
        const size_t threads = n / 8;
        head_gate_bwd_vec_kernel<<<unsigned((threads + kThreads - 1) / kThreads), kThreads, 0, e.stream>>>(
            dc, dg, da ? scratch + o_c : nullptr, dy, c, g, a, alpha_fixed, rows, Dv);
        GPT_CUDA_LAUNCHED("head_gate_bwd_vec_kernel");
    } else {
        head_gate_bwd_kernel<<<(rows + kWarps - 1) / kWarps, kThreads, 0, e.stream>>>(
            dc, dg, da ? scratch + o_c : nullptr, dy, c, g, a, alpha_fixed, rows, Dv);
        GPT_CUDA_LAUNCHED("head_gate_bwd_kernel");
    }
    if (da) rows_sum_add(da, scratch + o_c, rows, 1, scratch + o_part, e.stream);
}

}  // namespace variant
}  // namespace gpt::cuda
