// MLA's per-head maps (SPEC §2.3, ops.h HeadMapDims): out_h = in_h . M_h for each head, as one
// cuBLASLt GEMM per head over the strided rows (bf16 operands, fp32 accumulation). Parameter
// gradients and the shared-input gradient accumulate head after head on the stream: a fixed order.
// Where cuBLASLt has no algorithm for a shape/alignment, a plain fp32-accumulating kernel does it.
#include <algorithm>

#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

// Fallback GEMM, column-major as GemmArgs: D[i,j] = sum_p op(A)[i,p] op(B)[p,j] + beta D[i,j].
__global__ void plain_gemm_kernel(GemmArgs g) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x, j = blockIdx.y;
    if (i >= g.m) return;
    const bf16* A = static_cast<const bf16*>(g.a);
    const bf16* B = static_cast<const bf16*>(g.b);
    float acc = 0.f;
    for (int p = 0; p < g.k; ++p) {
        const float a = __bfloat162float(g.trans_a ? A[p + size_t(i) * g.lda] : A[i + size_t(p) * g.lda]);
        const float b = __bfloat162float(g.trans_b ? B[j + size_t(p) * g.ldb] : B[p + size_t(j) * g.ldb]);
        acc += a * b;
    }
    const TView d{g.d, g.d_type};
    const size_t o = i + size_t(j) * g.ldd;
    st(d, o, g.beta != 0.f ? acc + g.beta * ld(d, o) : acc);
}

void gemm(const VariantEnv& e, const GemmArgs& g) {
    if (e.gemm->run(g, e.stream)) return;
    GPT_CHECK(g.n <= 65535 * 64, "cuda-bf16 head_map: too many rows for the fallback GEMM");
    // gridDim.y is limited to 65535: split the columns.
    for (int j0 = 0; j0 < g.n; j0 += 65535) {
        GemmArgs part = g;
        part.n = std::min(65535, g.n - j0);
        part.b = static_cast<const bf16*>(g.b) + (g.trans_b ? size_t(j0) : size_t(j0) * g.ldb);
        part.d = static_cast<char*>(g.d) + size_t(j0) * g.ldd * dtype_bytes(g.d_type);
        plain_gemm_kernel<<<dim3((g.m + 127) / 128, part.n), 128, 0, e.stream>>>(part);
        GPT_CUDA_LAUNCHED("plain_gemm_kernel");
    }
}

GemmArgs args(bool ta, bool tb, int m, int n, int k, const void* a, int lda, const void* b, int ldb, void* d,
              int ldd, DType dt, float beta) {
    GemmArgs g;
    g.trans_a = ta;
    g.trans_b = tb;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = a;
    g.lda = lda;
    g.b = b;
    g.ldb = ldb;
    g.d = d;
    g.ldd = ldd;
    g.d_type = dt;
    g.beta = beta;
    return g;
}

// Strided bf16 rows from fp32 [N, W]: the shared input's gradient, summed over heads in fp32.
__global__ void store_rows_kernel(bf16* dst, int stride, const float* src, int N, int W) {
    const size_t total = size_t(N) * W;
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x)
        dst[(e / W) * stride + e % W] = __float2bfloat16(src[e]);
}

void check_map(const HeadMapDims& d, const char* op) {
    variant::check_positive(op, {d.N, d.H, d.Hin, d.Hm, d.Din, d.Dout});
    GPT_CHECK((d.Hin == d.H || d.Hin == 1) && (d.Hm == d.H || d.Hm == 1) && d.in_stride >= d.Hin * d.Din,
              std::string("cuda-bf16 ") + op + ": Hin = " + std::to_string(d.Hin) + " and Hm = " +
                  std::to_string(d.Hm) + " must be H = " + std::to_string(d.H) + " or 1, and in_stride " +
                  std::to_string(d.in_stride) + " must cover the input heads");
}

}  // namespace

namespace variant {

// Column-major view: out_h^T [Dout, N] (ld H*Dout) = M_h^T [Dout, Din] (M_h row-major, ld Dout)
// . in_h^T [Din, N] (ld in_stride).
void head_map_fwd(const VariantEnv& e, Ten out, Ten in, Ten M, const HeadMapDims& d) {
    const char* op = "head_map_fwd";
    check_map(d, op);
    bf16* o = act(e, out, size_t(d.N) * d.H * d.Dout, op, "out");
    const bf16* x = act(e, in, strided_extent(d.N, d.in_stride, d.Hin * d.Din), op, "in");
    const bf16* m = operand(e, M, size_t(d.Hm) * d.Din * d.Dout, op, "M");
    for (int h = 0; h < d.H; ++h)
        gemm(e, args(false, false, d.Dout, d.N, d.Din, m + size_t(d.Hm == 1 ? 0 : h) * d.Din * d.Dout, d.Dout,
                     x + size_t(d.Hin == 1 ? 0 : h) * d.Din, d.in_stride, o + size_t(h) * d.Dout, d.H * d.Dout,
                     DType::BF16, 0.f));
}

void head_map_bwd(const VariantEnv& e, Ten din, Ten dM, Ten dout, Ten in, Ten M, const HeadMapDims& d) {
    const char* op = "head_map_bwd";
    check_map(d, op);
    const size_t in_ext = strided_extent(d.N, d.in_stride, d.Hin * d.Din);
    bf16* dx = act_opt(e, din, in_ext, op, "din");
    float* dm = f32_opt(e, dM, size_t(d.Hm) * d.Din * d.Dout, op, "dM");
    const bf16* gy = act(e, dout, size_t(d.N) * d.H * d.Dout, op, "dout");
    const bf16* x = act(e, in, in_ext, op, "in");
    const bf16* m = operand(e, M, size_t(d.Hm) * d.Din * d.Dout, op, "M");
    float* shared_dx = nullptr;   // Hin == 1: fp32 sum over heads, stored once
    if (dx && d.Hin == 1) {
        ScratchPlan sp;
        sp.add(size_t(d.N) * d.Din);
        shared_dx = sp.take(e);
    }
    for (int h = 0; h < d.H; ++h) {
        const bf16* mh = m + size_t(d.Hm == 1 ? 0 : h) * d.Din * d.Dout;
        const bf16* xh = x + size_t(d.Hin == 1 ? 0 : h) * d.Din;
        const bf16* gh = gy + size_t(h) * d.Dout;
        // din_h^T [Din, N] = M_h [Din, Dout] (stored as [Dout, Din] col-major: transposed) . dout_h^T [Dout, N]
        if (dx && shared_dx)
            gemm(e, args(true, false, d.Din, d.N, d.Dout, mh, d.Dout, gh, d.H * d.Dout, shared_dx, d.Din,
                         DType::F32, h == 0 ? 0.f : 1.f));
        else if (dx)
            gemm(e, args(true, false, d.Din, d.N, d.Dout, mh, d.Dout, gh, d.H * d.Dout, dx + size_t(h) * d.Din,
                         d.in_stride, DType::BF16, 0.f));
        // dM_h^T [Dout, Din] += dout_h^T [Dout, N] . in_h [N, Din] (in_h^T stored [Din, N]: transposed)
        if (dm)
            gemm(e, args(false, true, d.Dout, d.Din, d.N, gh, d.H * d.Dout, xh, d.in_stride,
                         dm + size_t(d.Hm == 1 ? 0 : h) * d.Din * d.Dout, d.Dout, DType::F32, 1.f));
    }
    if (shared_dx) {
        store_rows_kernel<<<elementwise_blocks(size_t(d.N) * d.Din), 256, 0, e.stream>>>(dx, d.in_stride, shared_dx,
                                                                                      d.N, d.Din);
        GPT_CUDA_LAUNCHED("store_rows_kernel");
    }
}

}  // namespace variant
}  // namespace gpt::cuda
