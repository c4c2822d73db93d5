// cuBLAS strided-batched GEMM: see batched_gemm.cuh.
#include <string>

#include "cuda/batched_gemm.cuh"
#include "cuda/device_memory.cuh"

namespace gpt::cuda {
namespace {
void check_blas(cublasStatus_t st, const char* call) {
    if (st != CUBLAS_STATUS_SUCCESS)
        fail(std::string("cuda-bf16: cuBLAS call failed: ") + call + ": " + cublasGetStatusString(st) + " (status " +
             std::to_string(int(st)) + ")");
}
}  // namespace

BatchedGemm::~BatchedGemm() {
    if (handle_) {
        cublasSetStream(handle_, nullptr);   // the owner's stream may be gone by now
        cublasDestroy(handle_);
    }
    tracked_free(workspace_);
}

bool BatchedGemm::run(const GemmArgs& g, int batch, long long stride_a, long long stride_b, long long stride_d,
                      cudaStream_t s) {
    GPT_CHECK(g.epilogue == Epilogue::None && batch >= 1 && stride_d != 0,
              "cuda-bf16 BatchedGemm: no epilogue, batch >= 1 and a non-zero output stride");
    if (!handle_) {
        check_blas(cublasCreate(&handle_), "cublasCreate");
        GPT_CUDA(tracked_malloc(&workspace_, kWorkspaceBytes));
    }
    if (!stream_set_ || s != stream_) {
        // cublasSetStream resets the workspace to cuBLAS's own pool (which allocates, also while a
        // CUDA graph is being captured): hand ours over again after every stream change.
        check_blas(cublasSetStream(handle_, s), "cublasSetStream");
        check_blas(cublasSetWorkspace(handle_, workspace_, kWorkspaceBytes), "cublasSetWorkspace");
        stream_ = s;
        stream_set_ = true;
    }
    const float alpha = 1.f, beta = g.beta;
    const cublasStatus_t st = cublasGemmStridedBatchedEx(
        handle_, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha,
        g.a, CUDA_R_16BF, g.lda, stride_a, g.b, CUDA_R_16BF, g.ldb, stride_b, &beta, g.d,
        g.d_type == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F, g.ldd, stride_d, batch, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED) return false;
    check_blas(st, "cublasGemmStridedBatchedEx");
    return true;
}

}  // namespace gpt::cuda
