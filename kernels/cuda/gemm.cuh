// cuBLASLt GEMMs in column-major terms, bf16 operands, fp32 accumulation, with the fused
// epilogues the layers use. Descriptors, layouts and the heuristic's candidate algorithms are
// cached per shape; the algorithm actually used is picked once per shape by timing the candidates
// (gemm_tune.cuh: process-wide and on disk, so reruns use the same one); one workspace.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <tuple>
#include <vector>

#include "cuda/cuda_common.cuh"

namespace gpt::cuda {

// DGelu: D = GELU'(aux) * (op(A) op(B)), aux the pre-activation GeluAux* kept (type of D, ld ldd).
enum class Epilogue : int { None, Bias, GeluAux, GeluAuxBias, BGradB, DGelu };

// D[m, n] = op(A) op(B) (+ beta C) with the epilogue, all column-major. A, B are bf16; C is D
// itself unless c is set (then C has D's type and leading dimension and may not overlap D).
struct GemmArgs {
    bool trans_a = false, trans_b = false;
    int m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldd = 0;
    const void* a = nullptr;
    const void* b = nullptr;
    void* d = nullptr;
    DType d_type = DType::BF16;
    float beta = 0.f;
    const void* c = nullptr;      // the beta term's matrix when it is not D (nullptr: D)
    Epilogue epilogue = Epilogue::None;
    const void* bias = nullptr;   // Bias / GeluAuxBias: read; BGradB: written (overwrite)
    DType bias_type = DType::BF16;
    void* aux = nullptr;          // GeluAux*: the pre-activation written; DGelu: read. Type of D, ld ldd
};

class Gemm {
public:
    Gemm();
    ~Gemm();
    Gemm(const Gemm&) = delete;
    Gemm& operator=(const Gemm&) = delete;

    // Enqueues the GEMM on s. Returns false (and enqueues nothing) when cuBLASLt has no algorithm
    // for this epilogue/shape, or the epilogue is switched off (GPT_GEMM_DGELU=0), so the caller
    // can fall back to a plain GEMM plus its own kernel. The first call of a new shape may time
    // the candidates on s (synchronising it; outputs are left as if the GEMM ran once).
    bool run(const GemmArgs& g, cudaStream_t s);

private:
    using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, int>;
    struct Plan {
        bool ok = false, chosen = false;
        cublasLtMatmulDesc_t desc = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
        std::vector<cublasLtMatmulAlgo_t> candidates;   // the heuristic's, best first
        cublasLtMatmulAlgo_t algo{};                    // the one used, once chosen
    };
    Plan& plan_for(const Key& key, const GemmArgs& g);
    void choose(Plan& p, const Key& key, const GemmArgs& g, cudaStream_t s);
    float time_algo(Plan& p, const cublasLtMatmulAlgo_t& algo, const GemmArgs& g, cudaStream_t s);
    cublasStatus_t matmul(Plan& p, const cublasLtMatmulAlgo_t& algo, const GemmArgs& g, cudaStream_t s);

    cublasLtHandle_t handle_ = nullptr;
    void* workspace_ = nullptr;
    size_t workspace_bytes_ = 32u << 20;   // cuBLAS's recommendation for Hopper
    std::map<Key, Plan> plans_;
};

}  // namespace gpt::cuda
