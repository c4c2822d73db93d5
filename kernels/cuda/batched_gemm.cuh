// Strided-batched GEMMs through cuBLAS (cublasGemmStridedBatchedEx): bf16 operands, fp32
// accumulation, bf16 or fp32 output, column-major exactly as GemmArgs. The cuBLASLt wrapper
// (gemm.cuh) runs one matrix product per call; MLA's per-head maps are H small products at fixed
// strides (docs/kernels-cuda-variants.md), which one batched call covers instead of H launches.
// A or B may have batch stride 0 (the same matrix for every entry, which cuBLAS allows); D may not.
// The handle is created on first use (never inside a graph capture: the first training step runs
// eagerly) with its own workspace, so the results are run-to-run deterministic (cuBLAS's guarantee
// for a fixed stream and workspace) and nothing is allocated while a step is captured.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda/gemm.cuh"

namespace gpt::cuda {

class BatchedGemm {
public:
    BatchedGemm() = default;
    ~BatchedGemm();
    BatchedGemm(const BatchedGemm&) = delete;
    BatchedGemm& operator=(const BatchedGemm&) = delete;

    // D_b = op(A_b) op(B_b) + beta D_b for b < batch, X_b = X + b * stride_x (elements). Only the
    // plain-GEMM fields of g are used (no epilogue). Returns false (nothing enqueued) when cuBLAS
    // does not support the combination, so the caller can loop over the entries instead.
    bool run(const GemmArgs& g, int batch, long long stride_a, long long stride_b, long long stride_d,
             cudaStream_t s);

private:
    cublasHandle_t handle_ = nullptr;
    void* workspace_ = nullptr;
    cudaStream_t stream_ = nullptr;   // the stream the handle (and our workspace) is set for
    bool stream_set_ = false;
    static constexpr size_t kWorkspaceBytes = 8u << 20;
};

}  // namespace gpt::cuda
