// Same-FLOP low-rank RA folded into c_attn's weights (ops.h ra_lowrank_weights_fwd/bwd, SPEC §2.2):
// q̃ = [√g_std q[:D-R], √g_rec (k W)] is linear in the block input, so its columns of the effective
// weight are √g_std Wq[:D-R] and √g_rec W^T Wk (k̃ the same with q, k swapped) and one c_attn GEMM
// writes [q̃ | k̃ | v]. The work here is per weight (3E x (K+1) values, K+1 = the columns and the
// bias), not per token: microseconds per layer instead of two passes over the activations.
// Every gradient sum has a fixed order (per-warp reductions, then one block): deterministic.
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;

// Column k of c_attn as a "row" of 3E values: w[:, k] for k < K, the bias for k == K.
struct WeightColumns {
    const float* w;
    const float* b;
    int K;
    __device__ __forceinline__ float at(int row, int k) const {
        return k < K ? w[size_t(row) * K + k] : b[row];
    }
};

struct Gates {
    float ss, sr;
};
__device__ __forceinline__ Gates gates_of(const float* gs, const float* gr, int h, const RaLowRankDims& d) {
    const int gi = d.n_gates == 1 ? 0 : h;
    return {sqrt_gate(gate_value(gs, gi, d.g_std_fixed)), sqrt_gate(gate_value(gr, gi, d.g_rec_fixed))};
}

// One thread per (row o of 3E, column k of K+1): threads run along k, so reads are coalesced.
__global__ void weights_fwd_kernel(bf16* we, bf16* be, WeightColumns src, const float* W, const float* gs,
                                   const float* gr, RaLowRankDims d) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x, o = blockIdx.y, K = src.K;
    if (k > K) return;
    const int E = d.H * d.D, keep = d.D - d.R, part = o / E, j = o % E, h = j / d.D, c = j % d.D;
    float v;
    if (part == 2) {
        v = src.at(o, k);
    } else {
        const Gates g = gates_of(gs, gr, h, d);
        if (c < keep) {
            v = g.ss * src.at(o, k);
        } else {   // q̃'s tail reads k (part 1), k̃'s reads q (part 0)
            const int r = c - keep, other = (1 - part) * E + h * d.D;
            float acc = 0.f;
            for (int cc = 0; cc < d.D; ++cc) acc += W[size_t(cc) * d.R + r] * src.at(other + cc, k);
            v = g.sr * acc;
        }
    }
    if (k < K)
        we[size_t(o) * K + k] = __float2bfloat16(v);
    else
        be[o] = __float2bfloat16(v);
}

// dw[o, k] (db for k == K) += the gradient of c_attn's value there through the fold:
// q rows: √g_std G_q̃[c] (c < D-R) + √g_rec sum_r W[c,r] G_k̃[D-R+r]; k rows: q and k swapped; v: G_v.
__global__ void weights_dw_kernel(float* dw, float* db, WeightColumns grad, const float* W, const float* gs,
                                  const float* gr, RaLowRankDims d) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x, o = blockIdx.y, K = grad.K;
    if (k > K) return;
    const int E = d.H * d.D, keep = d.D - d.R, part = o / E, j = o % E, h = j / d.D, c = j % d.D;
    float v;
    if (part == 2) {
        v = grad.at(o, k);
    } else {
        const Gates g = gates_of(gs, gr, h, d);
        v = c < keep ? g.ss * grad.at(o, k) : 0.f;
        const int other_tail = (1 - part) * E + h * d.D + keep;
        float acc = 0.f;
        for (int r = 0; r < d.R; ++r) acc += W[size_t(c) * d.R + r] * grad.at(other_tail + r, k);
        v += g.sr * acc;
    }
    if (k < K)
        dw[size_t(o) * K + k] += v;
    else
        db[o] += v;
}

// One warp per (head h, channel c, slot s), summing over the K+1 columns:
//   s < R:  P[h,c,s] = sum_k wk[hD+c] G_q̃[hD+keep+s] + wq[hD+c] G_k̃[hD+keep+s]   (dW = sum_h √g_rec P)
//   s == R: S[h,c]   = sum_k wq[hD+c] G_q̃[hD+c] + wk[hD+c] G_k̃[hD+c] for c < keep (d√g_std)
// out is [H*D, R+1]; d√g_rec = sum_{c,r} W[c,r] P[h,c,r] is formed in the finalize kernel.
__global__ void weights_sums_kernel(float* out, WeightColumns wts, WeightColumns grad, RaLowRankDims d) {
    const int slots = d.R + 1;
    const long long item = (long long)blockIdx.x * (kThreads / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (item >= (long long)d.H * d.D * slots) return;
    const int s = int(item % slots), hc = int(item / slots), h = hc / d.D, c = hc % d.D;
    const int E = d.H * d.D, keep = d.D - d.R, qrow = h * d.D + c, krow = E + qrow;
    const int qtail = h * d.D + keep, ktail = E + qtail;
    float acc = 0.f;
    if (s < d.R) {
        for (int k = lane; k <= wts.K; k += 32)
            acc += wts.at(krow, k) * grad.at(qtail + s, k) + wts.at(qrow, k) * grad.at(ktail + s, k);
    } else if (c < keep) {
        for (int k = lane; k <= wts.K; k += 32)
            acc += wts.at(qrow, k) * grad.at(qrow, k) + wts.at(krow, k) * grad.at(krow, k);
    }
    acc = warp_sum(acc);
    if (lane == 0) out[item] = acc;
}

// One block: dW[c,r] += sum_h √g_rec(h) P[h,c,r]; each gate += dsqrt(g) * its heads' sums of S
// (g_std) or of W[c,r] P[h,c,r] (g_rec), one warp per gate and a fixed lane order.
__global__ void weights_finalize_kernel(float* dW, float* dgs, float* dgr, const float* sums, const float* W,
                                        const float* gs, const float* gr, RaLowRankDims d) {
    const int slots = d.R + 1;
    if (dW)
        for (int i = threadIdx.x; i < d.D * d.R; i += blockDim.x) {
            const int c = i / d.R, r = i % d.R;
            float acc = 0.f;
            for (int h = 0; h < d.H; ++h)
                acc += gates_of(gs, gr, h, d).sr * sums[(size_t(h) * d.D + c) * slots + r];
            dW[i] += acc;
        }
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, warps = blockDim.x / 32;
    const int heads_per_gate = d.n_gates == 1 ? d.H : 1;
    for (int gi = warp; gi < d.n_gates; gi += warps) {
        float s_std = 0.f, s_rec = 0.f;
        for (int i = lane; i < heads_per_gate * d.D; i += 32) {
            const int h = (d.n_gates == 1 ? i / d.D : gi), c = i % d.D;
            const float* row = sums + (size_t(h) * d.D + c) * slots;
            s_std += row[d.R];
            for (int r = 0; r < d.R; ++r) s_rec += W[size_t(c) * d.R + r] * row[r];
        }
        s_std = warp_sum(s_std);
        s_rec = warp_sum(s_rec);
        if (lane == 0) {
            if (dgs) dgs[gi] += s_std * dsqrt_gate(gate_value(gs, gi, d.g_std_fixed));
            if (dgr) dgr[gi] += s_rec * dsqrt_gate(gate_value(gr, gi, d.g_rec_fixed));
        }
    }
}

void check_weights(const RaLowRankDims& d, const char* op) {
    variant::check_positive(op, {d.N, d.H, d.D, d.R});
    variant::check_gate_count(d.n_gates, d.H, op);
    GPT_CHECK(d.R < d.D && 3 * d.H * d.D <= 65535,
              std::string("cuda-bf16 ") + op + ": rank R = " + std::to_string(d.R) + " must be below the head dim " +
                  std::to_string(d.D) + " (ra.rank), and 3 n_embd at most 65535");
}

dim3 weight_grid(const RaLowRankDims& d) {
    return dim3(unsigned((d.N + 1 + 127) / 128), unsigned(3 * d.H * d.D));
}

}  // namespace

namespace variant {

void ra_lowrank_weights_fwd(const VariantEnv& e, Ten w_eff, Ten b_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec,
                            const RaLowRankDims& d) {
    const char* op = "ra_lowrank_weights_fwd";
    check_weights(d, op);
    const size_t E3 = size_t(3) * d.H * d.D, nw = E3 * d.N;
    const WeightColumns src{f32(e, w, nw, op, "w"), f32(e, b, E3, op, "b"), d.N};
    weights_fwd_kernel<<<weight_grid(d), 128, 0, e.stream>>>(
        act(e, w_eff, nw, op, "w_eff"), act(e, b_eff, E3, op, "b_eff"), src, f32(e, W, size_t(d.D) * d.R, op, "W"),
        f32_opt(e, g_std, d.n_gates, op, "g_std"), f32_opt(e, g_rec, d.n_gates, op, "g_rec"), d);
    GPT_CUDA_LAUNCHED("weights_fwd_kernel");
}

void ra_lowrank_weights_bwd(const VariantEnv& e, Ten dw, Ten db, Ten dW, Ten dg_std, Ten dg_rec, Ten dw_eff,
                            Ten db_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) {
    const char* op = "ra_lowrank_weights_bwd";
    check_weights(d, op);
    const size_t E3 = size_t(3) * d.H * d.D, nw = E3 * d.N;
    const WeightColumns wts{f32(e, w, nw, op, "w"), f32(e, b, E3, op, "b"), d.N};
    const WeightColumns grad{f32(e, dw_eff, nw, op, "dw_eff"), f32(e, db_eff, E3, op, "db_eff"), d.N};
    const float* Wp = f32(e, W, size_t(d.D) * d.R, op, "W");
    const float* gsp = f32_opt(e, g_std, d.n_gates, op, "g_std");
    const float* grp = f32_opt(e, g_rec, d.n_gates, op, "g_rec");
    weights_dw_kernel<<<weight_grid(d), 128, 0, e.stream>>>(f32(e, dw, nw, op, "dw"), f32(e, db, E3, op, "db"),
                                                              grad, Wp, gsp, grp, d);
    GPT_CUDA_LAUNCHED("weights_dw_kernel");
    float* dWp = f32_opt(e, dW, size_t(d.D) * d.R, op, "dW");
    float* dgs = f32_opt(e, dg_std, d.n_gates, op, "dg_std");
    float* dgr = f32_opt(e, dg_rec, d.n_gates, op, "dg_rec");
    if (!dWp && !dgs && !dgr) return;
    const long long items = (long long)d.H * d.D * (d.R + 1);
    float* sums = static_cast<float*>(e.scratch(size_t(items) * sizeof(float)));
    const int warps = kThreads / 32;
    weights_sums_kernel<<<unsigned((items + warps - 1) / warps), kThreads, 0, e.stream>>>(sums, wts, grad, d);
    GPT_CUDA_LAUNCHED("weights_sums_kernel");
    weights_finalize_kernel<<<1, kThreads, 0, e.stream>>>(dWp, dgs, dgr, sums, Wp, gsp, grp, d);
    GPT_CUDA_LAUNCHED("weights_finalize_kernel");
}

}  // namespace variant
}  // namespace gpt::cuda
