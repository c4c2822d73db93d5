// cuBLASLt GEMMs in column-major terms, bf16 operands, fp32 accumulation, with the fused
// epilogues the layers use. Descriptors, layouts and the chosen algorithm are cached per shape;
// the workspace is allocated once.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <tuple>

#include "cuda/cuda_common.cuh"

namespace gpt::cuda {

enum class Epilogue : int { None, Bias, GeluAux, GeluAuxBias, BGradB };

// D[m, n] = op(A) op(B) (+ beta D) with the epilogue, all column-major. A, B are bf16.
struct GemmArgs {
    bool trans_a = false, trans_b = false;
    int m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldd = 0;
    const void* a = nullptr;
    const void* b = nullptr;
    void* d = nullptr;
    DType d_type = DType::BF16;
    float beta = 0.f;
    Epilogue epilogue = Epilogue::None;
    const void* bias = nullptr;   // Bias / GeluAuxBias: read; BGradB: written (overwrite)
    DType bias_type = DType::BF16;
    void* aux = nullptr;          // GeluAux*: the pre-activation, type of D, leading dim ldd
};

class Gemm {
public:
    Gemm();
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    // Enqueues the GEMM on s. Returns false (and enqueues nothing) when cuBLASLt has no algorithm
    // for this epilogue/shape, so the caller can fall back to a plain GEMM plus its own kernel.
    bool run(const GemmArgs& g, cudaStream_t s);

private:
    using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, int>;
    struct Plan {
        bool ok = false;
        cublasLtMatmulDesc_t desc = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
        cublasLtMatmulAlgo_t algo{};
    };
    Plan& plan_for(const GemmArgs& g);

    cublasLtHandle_t handle_ = nullptr;
    void* workspace_ = nullptr;
    size_t workspace_bytes_ = 32u << 20;   // cuBLAS's recommendation for Hopper
    std::map<Key, Plan> plans_;
};

}  // namespace gpt::cuda
