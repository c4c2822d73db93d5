// Matrix multiply through OpenBLAS: out[M,N] = in[M,K] . w[N,K]^T (+ bias), optional fused GELU,
// and its backward. Row-major throughout; w is [out features, in features] like llm.c.
#include <cblas.h>

#include "cpu/cpu_kernels.h"

namespace gpt::cpu {
namespace {

// C[m,n] = alpha op(A) op(B) + beta C, row-major; overloads pick sgemm or dgemm.
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
}
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const double* a, int lda,
          const double* b, int ldb, double beta, double* c, int ldc) {
    cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace

template <class S>
void matmul_fwd(S* out, const S* in, const S* w, const S* bias, int M, int K, int N, S* gelu_out) {
    gemm(CblasNoTrans, CblasTrans, M, N, K, in, K, w, K, S(0), out, N);
    if (!bias && !gelu_out) return;
        // Epilogue in one pass: bias, then GELU into gelu_out (out keeps the pre-activation).
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; ++i) {
        S* o = out + static_cast<size_t>(i) * N;
        if (bias)
            for (int j = 0; j < N; ++j) o[j] += bias[j];
        if (gelu_out) {
            S* g = gelu_out + static_cast<size_t>(i) * N;
            for (int j = 0; j < N; ++j) g[j] = gelu(o[j]);
        }
    }
}

template <class S>
void matmul_bwd(S* din, S* dw, S* dbias, const S* dout, const S* in, const S* w, int M, int K,
                int N) {
    if (din) gemm(CblasNoTrans, CblasNoTrans, M, K, N, dout, N, w, K, S(0), din, K);   // overwrite
    if (dw) gemm(CblasTrans, CblasNoTrans, N, K, M, dout, N, in, K, S(1), dw, K);      // accumulate
    if (!dbias) return;
#pragma omp parallel
    {
        const auto [j0, j1] = this_thread_columns(N);
        for (int i = 0; i < M; ++i) {
            const S* g = dout + static_cast<size_t>(i) * N;
            for (int j = j0; j < j1; ++j) dbias[j] += g[j];
        }
    }
}

#define GPT_INSTANTIATE(S)                                                            \
    template void matmul_fwd<S>(S*, const S*, const S*, const S*, int, int, int, S*); \
    template void matmul_bwd<S>(S*, S*, S*, const S*, const S*, const S*, int, int, int);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::cpu
