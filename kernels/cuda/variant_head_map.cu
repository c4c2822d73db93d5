// MLA's per-head maps (SPEC §2.3, ops.h HeadMapDims): out_h = in_hin(h) . M_hm(h), bf16 operands,
// fp32 accumulation. Each direction is ONE cuBLAS(Lt) call, not one per head:
//  - one input head shared by all (Hin == 1: v_lat -> v_h): the maps are packed side by side into
//    Mcat [Din, H*Dout] (a small copy of M), so out = in . Mcat, din = dout . Mcat^T (the sum over
//    heads happens inside the GEMM's k loop) and dMcat = in^T . dout are single plain GEMMs; dMcat
//    is then added back into dM (summed over the heads that share a map, in head order);
//  - a head per input head (Hin == H: Q -> q_lat, o -> ctx): one strided-batched GEMM over the
//    heads (a shared map has batch stride 0); a shared map's gradient sums over heads, which is one
//    plain GEMM over N*H rows when the input rows are packed, else a per-head loop with beta = 1.
// All of it is deterministic (fixed GEMMs, fixed-order sums). Where cuBLAS has no algorithm for a
// shape/alignment, a plain fp32-accumulating kernel does the product.
#include <algorithm>

#include "cuda/batched_gemm.cuh"
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

// The same GEMM for `batch` entries at element strides sa, sb, sd: one cuBLAS call, or (where it
// has no kernel for the combination) one GEMM per entry.
void batched(const VariantEnv& e, const GemmArgs& g, int batch, long long sa, long long sb, long long sd) {
    if (batch > 1 && e.batched && e.batched->run(g, batch, sa, sb, sd, e.stream)) return;
    const size_t db = dtype_bytes(g.d_type);
    for (int i = 0; i < batch; ++i) {
        GemmArgs one = g;
        one.a = static_cast<const bf16*>(g.a) + sa * i;
        one.b = static_cast<const bf16*>(g.b) + sb * i;
        one.d = static_cast<char*>(g.d) + size_t(sd) * i * db;
        gemm(e, one);
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

// Mcat[c, h*Dout + o] = M[hm(h), c, o]: the maps side by side, row-major [Din, H*Dout].
__global__ void pack_maps_kernel(bf16* mcat, const bf16* M, int H, int Hm, int Din, int Dout) {
    const size_t total = size_t(Din) * H * Dout;
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
        const int c = int(e / (size_t(H) * Dout)), j = int(e % (size_t(H) * Dout));
        const int h = j / Dout, o = j % Dout;
        mcat[e] = M[(size_t(Hm == 1 ? 0 : h) * Din + c) * Dout + o];
    }
}

// dM[m, c, o] += sum over the heads h with hm(h) = m, in head order, of G[c, h*Dout + o]
// (G = in^T dout, fp32 row-major [Din, H*Dout]).
__global__ void unpack_map_grads_kernel(float* dM, const float* G, int H, int Hm, int Din, int Dout) {
    const size_t total = size_t(Hm) * Din * Dout;
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
        const int m = int(e / (size_t(Din) * Dout)), c = int(e / Dout % Din), o = int(e % Dout);
        const float* row = G + size_t(c) * H * Dout + o;
        float acc = 0.f;
        if (Hm == 1)
            for (int h = 0; h < H; ++h) acc += row[size_t(h) * Dout];
        else
            acc = row[size_t(m) * Dout];
        dM[e] += acc;
    }
}

void check_map(const HeadMapDims& d, const char* op) {
    variant::check_positive(op, {d.N, d.H, d.Hin, d.Hm, d.Din, d.Dout});
    GPT_CHECK((d.Hin == d.H || d.Hin == 1) && (d.Hm == d.H || d.Hm == 1) && d.in_stride >= d.Hin * d.Din,
              std::string("cuda-bf16 ") + op + ": Hin = " + std::to_string(d.Hin) + " and Hm = " +
                  std::to_string(d.Hm) + " must be H = " + std::to_string(d.H) + " or 1, and in_stride " +
                  std::to_string(d.in_stride) + " must cover the input heads");
}

// Hin == 1 with H > 1 (or the trivial H = 1): the packed-maps path.
bool shared_input(const HeadMapDims& d) { return d.Hin == 1; }

}  // namespace

namespace variant {

// Column-major views throughout: a row-major [rows, cols] matrix with row stride s is the
// column-major [cols, rows] matrix with leading dimension s.
void head_map_fwd(const VariantEnv& e, Ten out, Ten in, Ten M, const HeadMapDims& d) {
    const char* op = "head_map_fwd";
    check_map(d, op);
    bf16* o = act(e, out, size_t(d.N) * d.H * d.Dout, op, "out");
    const bf16* x = act(e, in, strided_extent(d.N, d.in_stride, d.Hin * d.Din), op, "in");
    const bf16* m = operand(e, M, size_t(d.Hm) * d.Din * d.Dout, op, "M");
    const int HD = d.H * d.Dout;
    if (shared_input(d)) {
        // out^T [H*Dout, N] = Mcat^T [H*Dout, Din] . in^T [Din, N]
        const bf16* mc = m;
        if (d.H > 1) {
            ScratchPlan sp;
            sp.add((size_t(d.Din) * HD + 1) / 2);
            bf16* packed = reinterpret_cast<bf16*>(sp.take(e));
            pack_maps_kernel<<<elementwise_blocks(size_t(d.Din) * HD), 256, 0, e.stream>>>(packed, m, d.H, d.Hm,
                                                                                          d.Din, d.Dout);
            GPT_CUDA_LAUNCHED("pack_maps_kernel");
            mc = packed;
        }
        gemm(e, args(false, false, HD, d.N, d.Din, mc, HD, x, d.in_stride, o, HD, DType::BF16, 0.f));
        return;
    }
    // out_h^T [Dout, N] = M_h^T [Dout, Din] (M_h row-major, ld Dout) . in_h^T [Din, N]
    batched(e, args(false, false, d.Dout, d.N, d.Din, m, d.Dout, x, d.in_stride, o, HD, DType::BF16, 0.f), d.H,
            d.Hm == 1 ? 0 : (long long)d.Din * d.Dout, d.Din, d.Dout);
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
    const int HD = d.H * d.Dout;
    if (shared_input(d)) {
        ScratchPlan sp;
        const size_t at_packed = sp.add((size_t(d.Din) * HD + 1) / 2), at_g = sp.add(size_t(d.Din) * HD);
        float* base = sp.take(e);
        bf16* packed = reinterpret_cast<bf16*>(base + at_packed);
        if (dx) {   // din^T [Din, N] = Mcat [Din, H*Dout] . dout^T [H*Dout, N]
            pack_maps_kernel<<<elementwise_blocks(size_t(d.Din) * HD), 256, 0, e.stream>>>(packed, m, d.H, d.Hm,
                                                                                          d.Din, d.Dout);
            GPT_CUDA_LAUNCHED("pack_maps_kernel");
            gemm(e, args(true, false, d.Din, d.N, HD, packed, HD, gy, HD, dx, d.in_stride, DType::BF16, 0.f));
        }
        if (dm) {   // G^T [H*Dout, Din] = dout^T [H*Dout, N] . in [N, Din], then into dM
            float* g = base + at_g;
            gemm(e, args(false, true, HD, d.Din, d.N, gy, HD, x, d.in_stride, g, HD, DType::F32, 0.f));
            unpack_map_grads_kernel<<<elementwise_blocks(size_t(d.Hm) * d.Din * d.Dout), 256, 0, e.stream>>>(
                dm, g, d.H, d.Hm, d.Din, d.Dout);
            GPT_CUDA_LAUNCHED("unpack_map_grads_kernel");
        }
        return;
    }
    const long long map_stride = d.Hm == 1 ? 0 : (long long)d.Din * d.Dout;
    // din_h^T [Din, N] = M_h [Din, Dout] (stored [Dout, Din] col-major: transposed) . dout_h^T [Dout, N]
    if (dx)
        batched(e, args(true, false, d.Din, d.N, d.Dout, m, d.Dout, gy, HD, dx, d.in_stride, DType::BF16, 0.f), d.H,
                map_stride, d.Dout, d.Din);
    if (!dm) return;
    // dM_h^T [Dout, Din] += dout_h^T [Dout, N] . in_h [N, Din] (in_h^T stored [Din, N]: transposed)
    if (d.Hm == d.H)
        batched(e, args(false, true, d.Dout, d.Din, d.N, gy, HD, x, d.in_stride, dm, d.Dout, DType::F32, 1.f), d.H,
                d.Dout, d.Din, map_stride);
    else if (d.in_stride == d.H * d.Din)   // one map for all heads, packed rows: N*H rows of one GEMM
        gemm(e, args(false, true, d.Dout, d.Din, d.N * d.H, gy, d.Dout, x, d.Din, dm, d.Dout, DType::F32, 1.f));
    else
        for (int h = 0; h < d.H; ++h)
            gemm(e, args(false, true, d.Dout, d.Din, d.N, gy + size_t(h) * d.Dout, HD, x + size_t(h) * d.Din,
                         d.in_stride, dm, d.Dout, DType::F32, 1.f));
}

}  // namespace variant
}  // namespace gpt::cuda
