// cuDNN's fused flash attention (SDPA) through the cuDNN backend graph API: an alternative to our
// kernels (attention_fwd.cu / attention_bwd.cu) for the shapes it covers, selected per call by
// AttnDims::impl (model.attention_impl). The header is plain C++ (no cuDNN types): CudaOps holds
// one CudnnAttention, and the library builds without cuDNN (then nothing is ever supported).
//
// Graphs: the same operation graphs cudnn-frontend builds for its SDPA node (matmul, pointwise,
// reduction, reshape operations that cuDNN's runtime fusion engine recognises as flash attention):
//   forward  S = scale Q K^T, causal mask (row >= col), softmax with Stats = max + log(sum exp)
//            (natural-log log-sum-exp of the scaled logits: our lse convention), O = P V;
//   backward softmax_sum = rowsum(dO * O), P = exp(scale Q K^T - Stats) masked, dV = P^T dO,
//            dS = P (dO V^T - softmax_sum) scale, dK = dS^T Q, dQ = dS K.
// Attention dropout (p > 0): cuDNN's own Philox Bernoulli mask M (an RNG operation seeded from
// AttnDims::seed) multiplies P by M / (1 - p) before P V; backward regenerates M from the same
// seed: dV = (P M s)^T dO, dS = P (M dO V^T - (1 - p) softmax_sum) s scale, s = 1/(1 - p). The mask
// is reproducible from the seed but is not ops.h's mask (which our kernels and the CPU
// draw): the GPU test extracts it and hands it to the CPU reference (test_cuda_attention_cudnn.cpp).
// Backward variants: `deterministic` writes dQ straight from its matmul (cuDNN then keeps dP in a
// workspace of B*H*T*T bf16 and needs no atomics); the other accumulates dQ in an fp32 workspace
// with atomics (faster, not bit-reproducible).
#pragma once
#include <cstddef>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <functional>
#include <memory>
#include <string>

#include "model/ops.h"

namespace gpt::cuda {

// True when this build found the cuDNN headers and library.
bool cudnn_compiled_in();
// cudnnGetVersion() of the library loaded at run time (e.g. 91400), 0 without cuDNN.
int cudnn_runtime_version();

// Shapes the cuDNN path covers: causal, dropout in [0, 1), no band, Hq == Hkv, Dqk, Dv in {64, 128},
// T a multiple of 128 (cuDNN <= 9.15 needs a padding mask otherwise), strides multiples of 8.
// Otherwise false, with the reason in *why.
bool cudnn_attention_supports(const AttnDims& d, std::string* why = nullptr);

// Which implementation a call with these dims runs: resolves AttnImpl::auto_select (the measured
// faster one for the shapes cuDNN covers, docs/performance.md "cuDNN SDPA").
bool cudnn_attention_wanted(const AttnDims& d);

// A call on a window of larger tensors (the banded split, attention_band_split.cu): each batch's
// rows sit T_buf rows apart (0: AttnDims::T), q/k heads head_stride elements apart (0: Dqk);
// out [B, T_buf, Hq, Dv] and lse [B, Hq, T_buf] likewise. Pointers go to the window's first row.
struct CudnnView {
    int T_buf = 0, head_stride = 0;
};

class CudnnAttention {
public:
    CudnnAttention();
    ~CudnnAttention();
    CudnnAttention(const CudnnAttention&) = delete;
    CudnnAttention& operator=(const CudnnAttention&) = delete;

    // Build (or find in the cache) the plan for this shape; false when cuDNN refuses it (no
    // handle, no engine, a status error): then last_error() says which call and status, and the
    // caller uses our kernels. A failure is remembered per shape (tried once).
    bool prepare_fwd(const AttnDims& d, const CudnnView& view = {});
    bool prepare_bwd(const AttnDims& d, bool deterministic, const CudnnView& view = {});
    const std::string& last_error() const;

    // Device workspace of a prepared plan (bytes, 256-aligned pieces inside).
    size_t fwd_workspace_bytes(const AttnDims& d, const CudnnView& view = {});
    size_t bwd_workspace_bytes(const AttnDims& d, bool deterministic, const CudnnView& view = {});
    // Whether the engine cuDNN picked carries CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC.
    bool bwd_engine_nondeterministic(const AttnDims& d, bool deterministic);
    // The chosen engines, for reports ("engine 8 (knobs ...)").
    std::string describe(const AttnDims& d, bool backward, bool deterministic);

    // Layouts as our kernels (ops.h): q/k/v rows with strides, out/dout [B,T,Hq,Dv], lse [B,Hq,T].
    // Call prepare_* first (these throw gpt::Error on an unprepared shape or a status error).
    void fwd(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
             const __nv_bfloat16* v, const AttnDims& d, void* workspace, cudaStream_t s,
             const CudnnView& view = {});
    void bwd(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, const __nv_bfloat16* dout,
             const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* q,
             const __nv_bfloat16* k, const __nv_bfloat16* v, const AttnDims& d, bool deterministic,
             void* workspace, cudaStream_t s, const CudnnView& view = {});

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace gpt::cuda
