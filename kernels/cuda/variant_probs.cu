// Materialised attention probabilities (ops.h attention_probs / attention_probs_bwd), for RA-CT's
// row statistics and M2's sparse rows: P[b,h,i,j] = exp(scale q_i.k_j - lse[b,h,i]) with the band
// rule of attention_fwd, in fp32 Stat. Straightforward kernels (one block per probability row or
// per key row; fp32 accumulation); every output element is written by exactly one thread, so the
// results are deterministic.
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 128;

struct ProbsGeom {
    int B, T, Hq, group, Dqk, q_stride, k_stride, band, band_split;
    float scale;
};

ProbsGeom geom(const AttnDims& d) {
    return {d.B, d.T, d.Hq, d.Hq / d.Hkv, d.Dqk, d.q_stride, d.k_stride, d.band, d.band_split, d.scale};
}

// Leading q.k dims that count for the pair (i, j): the banded reciprocal half is the tail.
__device__ __forceinline__ int active_dims(const ProbsGeom& g, int i, int j) {
    return (g.band > 0 && i - j > g.band) ? g.band_split : g.Dqk;
}
__device__ __forceinline__ size_t q_at(const ProbsGeom& g, int b, int t, int h) {
    return (size_t(b) * g.T + t) * g.q_stride + size_t(h) * g.Dqk;
}
__device__ __forceinline__ size_t k_at(const ProbsGeom& g, int b, int t, int hk) {
    return (size_t(b) * g.T + t) * g.k_stride + size_t(hk) * g.Dqk;
}

// One block per probability row (b, h, i) = blockIdx.x; the query row is staged in shared memory.
__global__ void probs_kernel(float* P, const float* lse, const bf16* q, const bf16* k, ProbsGeom g) {
    extern __shared__ float qs[];
    const size_t row = blockIdx.x;
    const int i = int(row % g.T), h = int((row / g.T) % g.Hq), b = int(row / (size_t(g.T) * g.Hq));
    for (int c = threadIdx.x; c < g.Dqk; c += blockDim.x) qs[c] = __bfloat162float(q[q_at(g, b, i, h) + c]);
    __syncthreads();
    const float l = lse[row];
    float* p = P + row * g.T;
    for (int j = threadIdx.x; j < g.T; j += blockDim.x) {
        if (j > i) {
            p[j] = 0.f;
            continue;
        }
        const bf16* kr = k + k_at(g, b, j, h / g.group);
        float s = 0.f;
        for (int c = 0, n = active_dims(g, i, j); c < n; ++c) s += qs[c] * __bfloat162float(kr[c]);
        p[j] = expf(g.scale * s - l);
    }
}

// pg[row] = sum_j P G over the causal row (fixed-shape block reduction).
__global__ void probs_rowdot_kernel(float* pg, const float* P, const float* G, int T) {
    __shared__ float part[kThreads / 32];
    const size_t row = blockIdx.x;
    const int i = int(row % T);
    float s = 0.f;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) s += P[row * T + j] * G[row * T + j];
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int w = 0; w < kThreads / 32; ++w) t += part[w];
        pg[row] = t;
    }
}

// dq_i += sum_j dlogit_ij k_j, dlogit = scale P (G - pg). One block per (b, h, i); threads over dims.
__global__ void probs_dq_kernel(bf16* dq, const float* P, const float* G, const float* pg, const bf16* k,
                                ProbsGeom g) {
    const size_t row = blockIdx.x;
    const int i = int(row % g.T), h = int((row / g.T) % g.Hq), b = int(row / (size_t(g.T) * g.Hq));
    const float pgr = pg[row];
    for (int c = threadIdx.x; c < g.Dqk; c += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j <= i; ++j) {
            if (c >= active_dims(g, i, j)) continue;
            const float dl = g.scale * P[row * g.T + j] * (G[row * g.T + j] - pgr);
            acc += dl * __bfloat162float(k[k_at(g, b, j, h / g.group) + c]);
        }
        bf16& o = dq[q_at(g, b, i, h) + c];
        o = __float2bfloat16(__bfloat162float(o) + acc);
    }
}

// dk_j += sum over the group's query heads h and rows i >= j of dlogit_ij q_i. One block per
// (b, hk, j).
__global__ void probs_dk_kernel(bf16* dk, const float* P, const float* G, const float* pg, const bf16* q,
                                ProbsGeom g) {
    const int Hkv = g.Hq / g.group;
    const size_t key = blockIdx.x;
    const int j = int(key % g.T), hk = int((key / g.T) % Hkv), b = int(key / (size_t(g.T) * Hkv));
    for (int c = threadIdx.x; c < g.Dqk; c += blockDim.x) {
        float acc = 0.f;
        for (int h = hk * g.group; h < (hk + 1) * g.group; ++h) {
            const size_t rows0 = (size_t(b) * g.Hq + h) * g.T;
            for (int i = j; i < g.T; ++i) {
                if (c >= active_dims(g, i, j)) continue;
                const size_t row = rows0 + i;
                const float dl = g.scale * P[row * g.T + j] * (G[row * g.T + j] - pg[row]);
                acc += dl * __bfloat162float(q[q_at(g, b, i, h) + c]);
            }
        }
        bf16& o = dk[k_at(g, b, j, hk) + c];
        o = __float2bfloat16(__bfloat162float(o) + acc);
    }
}

struct Extents {
    size_t q, k, probs, rows;
};
Extents check_probs(const AttnDims& d, const char* op) {
    variant::check_positive(op, {d.B, d.T, d.Hq, d.Hkv, d.Dqk});
    GPT_CHECK(d.Hq % d.Hkv == 0 && d.band >= 0 && d.band_split >= 0 && d.band_split <= d.Dqk &&
                  d.q_stride >= d.Hq * d.Dqk && d.k_stride >= d.Hkv * d.Dqk,
              std::string("cuda-bf16 ") + op + ": Hkv must divide Hq, 0 <= band_split <= Dqk, band >= 0 and the "
                                               "strides must cover the heads");
    const size_t rows = size_t(d.B) * d.T;
    return {variant::strided_extent(rows, d.q_stride, size_t(d.Hq) * d.Dqk),
            variant::strided_extent(rows, d.k_stride, size_t(d.Hkv) * d.Dqk), rows * d.Hq * d.T, rows * d.Hq};
}

}  // namespace

namespace variant {

void attention_probs(const VariantEnv& e, Ten probs, Ten lse, Ten q, Ten k, const AttnDims& d) {
    const char* op = "attention_probs";
    const Extents x = check_probs(d, op);
    probs_kernel<<<unsigned(x.rows), kThreads, size_t(d.Dqk) * sizeof(float), e.stream>>>(
        f32(e, probs, x.probs, op, "probs"), f32(e, lse, x.rows, op, "lse"), act(e, q, x.q, op, "q"),
        act(e, k, x.k, op, "k"), geom(d));
    GPT_CUDA_LAUNCHED("probs_kernel");
}

void attention_probs_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten dprobs, Ten probs, Ten q, Ten k,
                         const AttnDims& d) {
    const char* op = "attention_probs_bwd";
    const Extents x = check_probs(d, op);
    const float* P = f32(e, probs, x.probs, op, "probs");
    const float* G = f32(e, dprobs, x.probs, op, "dprobs");
    ScratchPlan sp;
    sp.add(x.rows);
    float* pg = sp.take(e);
    probs_rowdot_kernel<<<unsigned(x.rows), kThreads, 0, e.stream>>>(pg, P, G, d.T);
    GPT_CUDA_LAUNCHED("probs_rowdot_kernel");
    probs_dq_kernel<<<unsigned(x.rows), kThreads, 0, e.stream>>>(act(e, dq, x.q, op, "dq"), P, G, pg,
                                                                 act(e, k, x.k, op, "k"), geom(d));
    GPT_CUDA_LAUNCHED("probs_dq_kernel");
    probs_dk_kernel<<<unsigned(size_t(d.B) * d.Hkv * d.T), kThreads, 0, e.stream>>>(
        act(e, dk, x.k, op, "dk"), P, G, pg, act(e, q, x.q, op, "q"), geom(d));
    GPT_CUDA_LAUNCHED("probs_dk_kernel");
}

}  // namespace variant
}  // namespace gpt::cuda
