// The CUDA backend's variant operations (model/ops.h, "variant operations", SPEC §2), as free
// functions over a VariantEnv: CudaOps (cuda_ops.cu) forwards each Ops override to the function of
// the same name here, so the kernels live in their own files (kernels/cuda/variant_*.cu) without
// reaching into the class. Semantics, spaces, overwrite vs accumulate: exactly ops.h's comments.
// Parameter gradients are reduced deterministically (per-row or per-block partials summed in a
// fixed order), never with float atomics.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>

#include "cuda/batched_gemm.cuh"
#include "cuda/cuda_common.cuh"
#include "cuda/gemm.cuh"
#include "cuda/ra_gates.cuh"
#include "model/ops.h"

namespace gpt::cuda {

using bf16 = __nv_bfloat16;

// What a variant operation needs from CudaOps, taken fresh at each call (buffers move on allocate).
struct VariantEnv {
    void* const* buf = nullptr;                  // the six spaces' device buffers, by Space
    const MemoryPlan* plan = nullptr;            // their sizes, for range checks
    const __nv_bfloat16* param_bf16 = nullptr;   // bf16 copy of Param (GEMM operands)
    Gemm* gemm = nullptr;
    cudaStream_t stream = nullptr;
    std::function<void*(size_t)> scratch;        // CudaOps' arena: valid until the next request
    BatchedGemm* batched = nullptr;              // strided-batched GEMMs (MLA's per-head maps)
};

namespace variant {

void ra_fold_fwd(const VariantEnv& e, Ten qt, Ten kt, Ten q, Ten k, Ten g_std, Ten g_rec,
                 const RaFoldDims& d);
void ra_fold_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q,
                 Ten k, Ten g_std, Ten g_rec, const RaFoldDims& d, Ten dbias = {}, Ten dv = {});
void ra_lowrank_fwd(const VariantEnv& e, Ten qt, Ten kt, Ten q, Ten k, Ten W, Ten g_std, Ten g_rec,
                    const RaLowRankDims& d);
void ra_lowrank_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten dW, Ten dg_std, Ten dg_rec, Ten dqt,
                    Ten dkt, Ten q, Ten k, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d);
// The low-rank fold on c_attn's weights (variant_ra_lowrank_weights.cu).
void ra_lowrank_weights_fwd(const VariantEnv& e, Ten w_eff, Ten b_eff, Ten w, Ten b, Ten W, Ten g_std,
                            Ten g_rec, const RaLowRankDims& d);
void ra_lowrank_weights_bwd(const VariantEnv& e, Ten dw, Ten db, Ten dW, Ten dg_std, Ten dg_rec, Ten dw_eff,
                            Ten db_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d);
void head_map_fwd(const VariantEnv& e, Ten out, Ten in, Ten M, const HeadMapDims& d);
void head_map_bwd(const VariantEnv& e, Ten din, Ten dM, Ten dout, Ten in, Ten M, const HeadMapDims& d);
// RA-CT and M2 from the attention's q, k, lse (attention_rowstats_fwd.cu / _bwd.cu).
void ract_gate_fwd(const VariantEnv& e, Ten stat, Ten gate, Ten sel, Ten q, Ten k, Ten lse, Ten scale,
                   Ten bias, const AttnDims& a, const RactDims& d);
void ract_gate_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k,
                   Ten lse, Ten stat, Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d);
// The split gradient of the selection statistics (attention_rowstats_bwd.cu / _select.cu).
void ract_gate_coef(const VariantEnv& e, Ten alpha, Ten beta, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k,
                    Ten lse, Ten stat, Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d);
void ract_select_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten alpha, Ten sel, Ten q, Ten k, Ten lse,
                     const AttnDims& a, const RactDims& d);
// RA-CT's entropy from the attention on the values [v, k], and the slice copy that packs them
// (variant_ract_entropy.cu).
void ract_entropy_fwd(const VariantEnv& e, Ten y, Ten stat, Ten gate, Ten out2, Ten q, Ten lse, Ten scale, Ten bias,
                      float alpha, const AttnDims& a);
void ract_entropy_bwd(const VariantEnv& e, Ten dout2, Ten dscale, Ten dbias, Ten dy, Ten out2, Ten q, Ten stat,
                      Ten gate, Ten scale, float alpha, bool detach, const AttnDims& a);
void copy_heads(const VariantEnv& e, Ten dst, Ten src, const HeadCopyDims& d);
void head_gate_fwd(const VariantEnv& e, Ten out, Ten ctx, Ten gate, Ten alpha, float alpha_fixed,
                   int N, int H, int Dv);
void head_gate_bwd(const VariantEnv& e, Ten dctx, Ten dgate, Ten dalpha, Ten dout, Ten ctx, Ten gate,
                   Ten alpha, float alpha_fixed, int N, int H, int Dv);
void sigmoid_fwd(const VariantEnv& e, Ten out, Ten in, size_t n);
void sigmoid_bwd(const VariantEnv& e, Ten din, Ten out, Ten dout, size_t n);
void topk_rows(const VariantEnv& e, Ten idx, Ten wts, Ten q, Ten k, Ten lse, const AttnDims& a, int topk);
void sparse_mix_fwd(const VariantEnv& e, Ten agg, Ten z, Ten idx, Ten wts, int N, int r, int k);
void sparse_mix_bwd(const VariantEnv& e, Ten dz, Ten dagg, Ten idx, Ten wts, int N, int r, int k);
void add_scaled_fwd(const VariantEnv& e, Ten out, Ten a, Ten b, Ten alpha, size_t n);
void add_scaled_bwd(const VariantEnv& e, Ten db, Ten dalpha, Ten dout, Ten b, Ten alpha, size_t n);
void disc_channel_fwd(const VariantEnv& e, Ten qt_out, Ten kt_out, Ten qt, Ten kt, Ten k, Ten u, Ten g_disc,
                      const DiscChannelDims& d);
void disc_channel_bwd(const VariantEnv& e, Ten dqt, Ten dkt, Ten dk, Ten du, Ten dg_disc, Ten dqt_out, Ten dkt_out,
                      Ten k, Ten u, Ten g_disc, const DiscChannelDims& d);

// ---- shared by the variant_*.cu files (variant_env.cu) ----------------------------------------

// Views resolved with a range check; the messages name the operation and argument.
bf16* act(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg);       // Act
bf16* act_opt(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg);   // or null
float* f32(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg);      // fp32 spaces
float* f32_opt(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg);
int32_t* index(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg);  // Index
const bf16* operand(const VariantEnv& e, Ten t, size_t need, const char* op, const char* arg);  // Act/Param(bf16)

// Elements from a strided view's start to the end of its last row's used columns.
inline size_t strided_extent(long long rows, long long stride, long long width) {
    return size_t((rows - 1) * stride + width);
}
// gpt::Error unless every dimension is positive.
void check_positive(const char* op, std::initializer_list<long long> dims);
void check_gate_count(int n_gates, int H, const char* op);

// Carves one scratch request into aligned fp32 pieces: ask for every piece's size first.
class ScratchPlan {
public:
    size_t add(size_t floats) {   // returns the piece's offset (in floats)
        const size_t at = used_;
        used_ += (floats + 63) / 64 * 64;
        return at;
    }
    float* take(const VariantEnv& e) { return static_cast<float*>(e.scratch(used_ * 4 + 256)); }

private:
    size_t used_ = 0;
};

// out[c] += sum over rows of x[r, c] (x fp32 [M, N] contiguous), in a fixed order. `partial` holds
// colsum_scratch(M, N) floats.
void rows_sum_add(float* out, const float* x, int M, int N, float* partial, cudaStream_t s);

}  // namespace variant

}  // namespace gpt::cuda
