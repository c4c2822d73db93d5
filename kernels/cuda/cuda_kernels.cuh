// Launchers of the CUDA kernels, one family per .cu file; all enqueue on `s` and return at once.
// Views (TView) carry their element type, so one launcher serves bf16 activations and fp32
// parameters/gradients alike.
#pragma once
#include <cuda_runtime.h>

#include <vector>

#include "cuda/cuda_common.cuh"
#include "model/ops.h"

namespace gpt::cuda {

// elementwise.cu
void convert(TView dst, TView src, size_t n, cudaStream_t s);   // dst = src (type conversion)
void scale(TView x, float a, size_t n, cudaStream_t s);
void gelu_fwd(TView out, TView in, size_t n, cudaStream_t s);
void gelu_bwd(TView din, TView in, TView dout, size_t n, cudaStream_t s);
void add(TView out, TView a, TView b, size_t n, cudaStream_t s);
void dropout(TView x, size_t n, float p, uint64_t seed, cudaStream_t s);
void mul_inplace(TView x, TView mask, size_t n, cudaStream_t s);
void fill_nan(TView x, size_t n, cudaStream_t s);
void add_bias(TView out, TView bias, int M, int N, cudaStream_t s);   // out[m, :] += bias

// embedding.cu. The backward sorts (token, position) pairs and sums each token's rows in
// position order: deterministic. `scratch` holds embedding_bwd_scratch(B*T, V) bytes.
void embedding_fwd(TView out, const int32_t* tokens, TView wte, TView wpe, int B, int T, int E,
                   cudaStream_t s);
size_t embedding_bwd_scratch(int N, int V);
void embedding_bwd(TView dwte, TView dwpe, TView dout, const int32_t* tokens, int B, int T, int E,
                   int V, void* scratch, cudaStream_t s);

// layernorm.cu. `partial` is fp32 scratch of layernorm_bwd_scratch(N, C) floats.
void layernorm_fwd(TView out, float* mean, float* rstd, TView in, TView w, TView b, int N, int C,
                   cudaStream_t s);
// out_sum = a + dropout(b) (drop_p > 0: dropout's keep decisions and bf16 rounding; b is left as
// it is), then layernorm_fwd of out_sum, bit for bit, in one kernel where the row fits in registers
// (bf16 rows, C % 8 == 0, C <= 2048); otherwise dropout, add and layernorm_fwd themselves. keep
// (optional, ceil(N C / 8) bytes): the decisions, bit i % 8 of byte i / 8, for layernorm_bwd.
void residual_layernorm_fwd(TView out_sum, TView out, float* mean, float* rstd, TView a, TView b, TView w,
                            TView bias, int N, int C, cudaStream_t s, float drop_p = 0.f, uint64_t drop_seed = 0,
                            uint8_t* keep = nullptr);
size_t layernorm_bwd_scratch(int N, int C);
// dsum (optional): += the column sums of din after the update; branch (optional): = din after the
// update through dropout(drop_p, drop_seed), and dsum then sums branch (ops.h layernorm_bwd); keep
// (optional): the forward's record of those decisions, read instead of drawing them again.
void layernorm_bwd(TView din, TView dw, TView db, TView dout, TView in, TView w,
                   const float* mean, const float* rstd, int N, int C, float* partial,
                   cudaStream_t s, TView dsum = {}, TView branch = {}, float drop_p = 0.f, uint64_t drop_seed = 0,
                   const uint8_t* keep = nullptr);

// classifier.cu
void classifier(float* losses, TView logits, const int32_t* targets, int N, int V, int Vp,
                float dloss, cudaStream_t s);

// column sums: out[n] += sum_m x[m, n] over rows of width N (deterministic, two passes).
size_t colsum_scratch(int M, int N);
void colsum_add(TView out, TView x, int M, int N, float* partial, cudaStream_t s);

// optimizer.cu
struct AdamWDevTensor {   // one tensor's pointers for the multi-tensor kernel
    float *p, *g, *m, *v, *vmax;
    __nv_bfloat16* p_bf16;   // low-precision copy refreshed in the same pass (may be null)
    size_t n;
    int decay;
};
struct AdamWChunk {       // a block's share: [start, start + len) of tensor `tensor`
    int tensor;
    size_t start;
};
constexpr size_t kAdamWChunk = 16384;
// norm_sq non-null: h.grad_scale is replaced by clipping against sqrt(*norm_sq) on the device
// (Ops::adamw_clipped), and a non-finite norm skips the update.
void adamw(const AdamWDevTensor* tensors, const AdamWChunk* chunks, int n_chunks,
           const AdamWHyper& h, cudaStream_t s, const double* norm_sq = nullptr, float clip = 0.f);
constexpr int kSumSquaresBlocks = 512;   // fixed grid: the reduction order never changes
void sum_squares(TView x, size_t n, double* partial /* kSumSquaresBlocks + 1 */, cudaStream_t s);

// attention_fwd.cu / attention_bwd.cu: bf16 flash attention (AttnDims in ops.h).
void attention_check(const AttnDims& d);   // throws gpt::Error for unsupported shapes

// The RA fold inside the attention kernels (ops.h ra_attention_*; attn::Params::fold_d): q, k are
// the plain operands (Hq = Hkv heads of D = Dqk / 2 at one row stride), gates device pointers
// [n_gates] or null (the fixed values). Backward: dq, dk are written on the heads' columns (not
// dq̃, dk̃), dg_std/dg_rec (null: not wanted) accumulated through `scratch` (fused_fold_scratch_floats).
struct FusedFold {
    int D = 0;
    const float *g_std = nullptr, *g_rec = nullptr;
    float g_std_fixed = 1.f, g_rec_fixed = 1.f;
    int n_gates = 1;
    float *dg_std = nullptr, *dg_rec = nullptr;
    float* scratch = nullptr;
};
size_t fused_fold_scratch_floats(const AttnDims& d);
// offband > 0 (past the band): only the pairs with i - j < offband; cuDNN has written the others'
// out/lse (rows >= offband, merged here) and gradients (added to here): attention_band_split.cu.
void attention_fwd(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                   const __nv_bfloat16* k, const __nv_bfloat16* v, const AttnDims& d,
                   cudaStream_t s, int offband = 0, const FusedFold* fold = nullptr);
// `delta` is fp32 scratch [B, Hq, T]; delta_shift (null or [B, Hq, T]) is added to it (ops.h).
void attention_bwd(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                   const __nv_bfloat16* dout, const __nv_bfloat16* out, const float* lse,
                   const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                   const AttnDims& d, float* delta, const float* delta_shift, cudaStream_t s,
                   int offband = 0, const FusedFold* fold = nullptr);
// out_adj [B*T, Hq, Dv] = out moved along dout so that dout . out_adj = dout . out + delta_shift per
// row: how a backward that forms D from out (cuDNN's graph) gets attention_bwd's delta_shift.
void attention_shift_out(__nv_bfloat16* out_adj, const __nv_bfloat16* out, const __nv_bfloat16* dout,
                         const float* delta_shift, const AttnDims& d, cudaStream_t s);

}  // namespace gpt::cuda
