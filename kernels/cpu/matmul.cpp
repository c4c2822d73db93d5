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

// Splits [0, n) into one contiguous block per OpenMP thread and runs body(begin, count) on each.
// Each block is one single-threaded BLAS call (CpuOps pins OpenBLAS to 1 thread): the backend then
// has a single thread pool. With OpenBLAS's own pthread pool next to OpenMP's, each pool's
// spin-waiting workers steal the cores the other needs; on two cores a training step ran 1.5x
// slower that way (docs/kernels-cpu.md).
template <class F>
void for_each_thread_block(int n, const F& body) {
#pragma omp parallel
    {
        const auto [begin, end] = this_thread_columns(n);
        if (end > begin) body(begin, end - begin);
    }
}

}  // namespace

template <class S>
void matmul_fwd(S* out, const S* in, const S* w, const S* bias, int M, int K, int N, S* gelu_out) {
    // Blocks of rows of out; the epilogue (bias, then GELU into gelu_out; out keeps the
    // pre-activation) runs on the block its thread just computed, while it is in cache.
    for_each_thread_block(M, [&](int m0, int rows) {
        S* o = out + size_t(m0) * N;
        gemm(CblasNoTrans, CblasTrans, rows, N, K, in + size_t(m0) * K, K, w, K, S(0), o, N);
        for (size_t i = 0; i < size_t(rows) * N; i += N) {
            if (bias)
                for (int j = 0; j < N; ++j) o[i + j] += bias[j];
            if (gelu_out)
                for (int j = 0; j < N; ++j) gelu_out[size_t(m0) * N + i + j] = gelu(o[i + j]);
        }
    });
}

template <class S>
void matmul_fwd_add(S* out, const S* in, const S* w, int M, int K, int N) {
    for_each_thread_block(M, [&](int m0, int rows) {   // out holds the residual: beta = 1
        gemm(CblasNoTrans, CblasTrans, rows, N, K, in + size_t(m0) * K, K, w, K, S(1), out + size_t(m0) * N, N);
    });
}

template <class S>
void matmul_bwd(S* din, S* dw, S* dbias, const S* dout, const S* in, const S* w, int M, int K,
                int N, bool din_add) {
    if (din)   // din = dout . w (or += with din_add); blocks of rows
        for_each_thread_block(M, [&](int m0, int rows) {
            gemm(CblasNoTrans, CblasNoTrans, rows, K, N, dout + size_t(m0) * N, N, w, K, S(din_add ? 1 : 0),
                 din + size_t(m0) * K, K);
        });
    if (!dw && !dbias) return;
    // dw += dout^T . in and dbias += colsum(dout): blocks of output features (rows of dw).
    for_each_thread_block(N, [&](int n0, int cols) {
        if (dw)
            gemm(CblasTrans, CblasNoTrans, cols, K, M, dout + n0, N, in, K, S(1),
                 dw + size_t(n0) * K, K);
        if (dbias)
            for (int i = 0; i < M; ++i) {
                const S* g = dout + size_t(i) * N;
                for (int j = n0; j < n0 + cols; ++j) dbias[j] += g[j];
            }
    });
}

#define GPT_INSTANTIATE(S)                                                            \
    template void matmul_fwd<S>(S*, const S*, const S*, const S*, int, int, int, S*); \
    template void matmul_fwd_add<S>(S*, const S*, const S*, int, int, int);            \
    template void matmul_bwd<S>(S*, S*, S*, const S*, const S*, const S*, int, int, int, bool);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::cpu
