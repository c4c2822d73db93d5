// Flash-attention backward, deterministic (no atomics): a preprocessing pass computes
// delta_i = dO_i . O_i; a key-major kernel accumulates dK, dV of one 64-key tile in registers over
// every query tile and every query head of its group; a query-major kernel recomputes the
// probabilities and accumulates dQ. Warps own 16 rows each, so P^T / dS^T go from accumulators
// straight into the next MMA (see attention_common.cuh). Same dropout counter and band as forward.
#include <cstdlib>
#include <type_traits>

#include "cuda/attention_common.cuh"
#include "cuda/cuda_kernels.cuh"

// Resident dK/dV blocks per SM asked of the compiler for Dqk = 64 (3 caps registers at 168).
#ifndef GPT_ATTN_KV_MINBLOCKS
#define GPT_ATTN_KV_MINBLOCKS 3
#endif

namespace gpt::cuda {
namespace attn {
namespace {

constexpr int kWarps = 4, kThreads = 32 * kWarps;

// delta_i = dO_i . O_i over Dv: 8 consecutive elements (16 bytes) per thread, Dv / 8 threads a row.
__global__ void attn_delta_kernel(float* delta, const __nv_bfloat16* out, const __nv_bfloat16* dout,
                                  const float* shift, int B, int T, int Hq, int DV) {
    const int per_row = DV / 8;   // 8 or 16 threads, a power of two dividing 32
    const size_t row = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) / per_row;   // (b, t, h)
    const int c = (threadIdx.x % per_row) * 8;
    const bool valid = row < size_t(B) * T * Hq;
    float s = 0.f;
    if (valid) {
        const uint4 a = *reinterpret_cast<const uint4*>(out + row * DV + c);
        const uint4 g = *reinterpret_cast<const uint4*>(dout + row * DV + c);
        const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
        const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(&g);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float2 x = __bfloat1622float2(a2[k]), y = __bfloat1622float2(g2[k]);
            s += x.x * y.x + x.y * y.y;
        }
    }
    for (int o = per_row / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (valid && threadIdx.x % per_row == 0) {
        const int h = int(row % Hq), bt = int(row / Hq), b = bt / T, t = bt % T;
        const size_t o = (size_t(b) * Hq + h) * T + t;
        delta[o] = shift ? s + shift[o] : s;
    }
}

// out_adj = out + (shift / (m |u|^2)) u per row, u = dout / m, m = max |dout|: then
// dout . out_adj = dout . out + shift (up to one bf16 rounding per element), i.e. a backward that
// forms D from (out, dout), as cuDNN's graph does, sees D + shift. Rows with dout = 0 keep out.
__global__ void attn_shift_out_kernel(__nv_bfloat16* out_adj, const __nv_bfloat16* out,
                                      const __nv_bfloat16* dout, const float* shift, int B, int T,
                                      int Hq, int DV) {
    const int per_row = DV / 8;
    const size_t row = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) / per_row;   // (b, t, h)
    const int c = (threadIdx.x % per_row) * 8;
    const bool valid = row < size_t(B) * T * Hq;
    float o[8] = {}, g[8] = {}, m = 0.f;
    if (valid) {
        const uint4 a = *reinterpret_cast<const uint4*>(out + row * DV + c);
        const uint4 b = *reinterpret_cast<const uint4*>(dout + row * DV + c);
        const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
        const __nv_bfloat162* b2 = reinterpret_cast<const __nv_bfloat162*>(&b);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float2 x = __bfloat1622float2(a2[k]), y = __bfloat1622float2(b2[k]);
            o[2 * k] = x.x, o[2 * k + 1] = x.y, g[2 * k] = y.x, g[2 * k + 1] = y.y;
            m = fmaxf(m, fmaxf(fabsf(y.x), fabsf(y.y)));
        }
    }
    for (int off = per_row / 2; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    const float inv_m = m > 0.f ? 1.f / m : 0.f;
    float u2 = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) u2 += (g[k] * inv_m) * (g[k] * inv_m);
    for (int off = per_row / 2; off > 0; off >>= 1) u2 += __shfl_xor_sync(0xffffffffu, u2, off);
    if (!valid) return;
    const int h = int(row % Hq), bt = int(row / Hq), b = bt / T, t = bt % T;
    const float lambda = m > 0.f ? shift[(size_t(b) * Hq + h) * T + t] / (m * u2) : 0.f;
    uint4 r;
    __nv_bfloat162* r2 = reinterpret_cast<__nv_bfloat162*>(&r);
#pragma unroll
    for (int k = 0; k < 4; ++k)
        r2[k] = __floats2bfloat162_rn(o[2 * k] + lambda * g[2 * k] * inv_m, o[2 * k + 1] + lambda * g[2 * k + 1] * inv_m);
    *reinterpret_cast<uint4*>(out_adj + row * DV + c) = r;
}

// acc[mt] (16 x 8*NT) += A[mt] (rows a_row0 + 16 mt of `sa`, k-steps [kk_begin, kk_end)) times
// the [n][k] tile `sb`; each B fragment serves all MT m-tiles. The whole range with one m-tile runs
// unrolled (the compiler then loads fragments ahead of the MMAs: 3-8% faster backward, measured);
// otherwise the loop stays rolled (keeps the larger kernels' code in the instruction cache).
template <int MT, int NT, int KS>
__device__ __forceinline__ void mma_rows_nk(float (&acc)[MT][NT][4], const __nv_bfloat16* sa, int lda,
                                            int a_row0, const __nv_bfloat16* sb, int ldb,
                                            int kk_begin, int kk_end, int lane) {
    auto step = [&](int kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) load_a(a[mt], sa, lda, a_row0 + mt * 16, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
            uint32_t b[4];
            load_b_nk(b, sb, ldb, np * 16, kk * 16, lane);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma16816(acc[mt][2 * np], a[mt], b[0], b[1]);
                mma16816(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
            }
        }
    };
    if (MT == 1 && kk_begin == 0 && kk_end == KS) {
#pragma unroll
        for (int kk = 0; kk < KS; ++kk) step(kk);
    } else {
#pragma unroll 1
        for (int kk = kk_begin; kk < kk_end; ++kk) step(kk);
    }
}

// acc[mt] (16 x 8*NT, n-tile pairs [np_begin, np_end)) += C[mt] (16 x 8*CT, registers, as A)
// times the [k][n] tile `sb`.
template <int MT, int NT, int CT>
__device__ __forceinline__ void mma_regs_kn(float (&acc)[MT][NT][4], const float (&c)[MT][CT][4],
                                            const __nv_bfloat16* sb, int ldb, int np_begin,
                                            int np_end, int lane) {
#pragma unroll
    for (int j = 0; j < CT / 2; ++j) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) c_to_a<CT>(a[mt], c[mt], j);
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
            if (np < np_begin || np >= np_end) continue;
            uint32_t b[4];
            load_b_kn(b, sb, ldb, np * 16, j * 16, lane);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma16816(acc[mt][2 * np], a[mt], b[0], b[1]);
                mma16816(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
            }
        }
    }
}

// dst[0..1] = (x, y), or += when `add` (cuDNN's part of a banded split is already there).
__device__ __forceinline__ void store_or_add(__nv_bfloat16* dst, float x, float y, bool add) {
    auto* d2 = reinterpret_cast<__nv_bfloat162*>(dst);
    if (add) {
        const float2 old = __bfloat1622float2(*d2);
        x += old.x;
        y += old.y;
    }
    *d2 = __floats2bfloat162_rn(x, y);
}

// Calls f(causal, drop) with compile-time flags, so each specialisation is straight-line code.
template <class F>
__device__ __forceinline__ void dispatch_probs(F& f, bool causal, bool drop) {
    using T = std::true_type;
    using N = std::false_type;
    if (causal) {
        if (drop) f(T{}, T{});
        else f(T{}, N{});
    } else {
        if (drop) f(N{}, T{});
        else f(N{}, N{});
    }
}

template <int MT, int NT>
__device__ __forceinline__ void zero(float (&x)[MT][NT][4]) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < NT; ++i) x[mt][i][0] = x[mt][i][1] = x[mt][i][2] = x[mt][i][3] = 0.f;
}

// acc = this warp's scores (S, or S^T when KEY_ROWS): the banded dims [split, D) first, masked
// to the band, then the plain dims [0, split) on top (mode from band_mode).
template <bool KEY_ROWS, int MT, int NT, int KS>
__device__ __forceinline__ void banded_scores(float (&acc)[MT][NT][4], const __nv_bfloat16* sa, int lda,
                                              int a_row0, const __nv_bfloat16* sb, int ldb,
                                              int split_steps, int mode, int row0, int col0,
                                              int band, int g, int t, int lane) {
    zero(acc);
    if (mode != kBandNone) mma_rows_nk<MT, NT, KS>(acc, sa, lda, a_row0, sb, ldb, split_steps, KS, lane);
    if (mode == kBandMixed) mask_pairs<KEY_ROWS>(acc, row0, col0, band + 1, 0.f, g, t);
    mma_rows_nk<MT, NT, KS>(acc, sa, lda, a_row0, sb, ldb, 0, split_steps, lane);
}

// ---- dK, dV: one block per (key tile, batch, kv head) --------------------------------------------
template <int DQK, int DV>
struct KvCfg {
    static constexpr int MT = DQK == 64 ? GPT_ATTN_MT : 1;        // 16-key m-tiles per warp
    static constexpr int kMinBlocks = (DQK == 64 && MT == 1) ? GPT_ATTN_KV_MINBLOCKS : 1;   // per SM
    static constexpr int BCK = 16 * MT * kWarps;                  // keys per block
    static constexpr int BRB = (MT == 2 || DV == 128) ? 32 : 64;  // query rows per step
    static constexpr int SQ = DQK + kPad, SV = DV + kPad;
    static constexpr int kK = BCK * SQ, kV = BCK * SV, kQ = BRB * SQ, kO = BRB * SV;
    static constexpr size_t bytes =
        size_t(kK + kV + 2 * kQ + 2 * kO) * sizeof(__nv_bfloat16) + 2 * 2 * BRB * sizeof(float);
};

template <int DQK, int DV, int MINB>
__global__ void __launch_bounds__(kThreads, MINB) attn_bwd_kv_kernel(Params p) {
    using C = KvCfg<DQK, DV>;
    constexpr int MT = C::MT, BRB = C::BRB, NQ = BRB / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem_raw);
    __nv_bfloat16* sV = sK + C::kK;
    __nv_bfloat16* sQ = sV + C::kV;          // two buffers
    __nv_bfloat16* sO = sQ + 2 * C::kQ;      // dO, two buffers
    float* sL = reinterpret_cast<float*>(sO + 2 * C::kO);   // lse * log2(e), two buffers
    float* sD = sL + 2 * BRB;                               // delta, two buffers

    const int kv0 = blockIdx.x * C::BCK;
    const int b = blockIdx.y / p.Hkv, hk = blockIdx.y % p.Hkv, G = p.Hq / p.Hkv;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int wrow0 = warp * 16 * MT, kw0 = kv0 + wrow0;   // this warp's first key
    // Queries past kv0 + BCK - 2 + offband meet this block's keys only in cuDNN's pairs (offband).
    const int last_q = p.offband > 0 ? min(p.T - 1, kv0 + C::BCK - 2 + p.offband) : p.T - 1;
    const int qt0 = kv0 / BRB, nqt = last_q / BRB + 1 - qt0, iters = G * nqt;
    const int dout_stride = p.Hq * DV;

    load_halves<C::BCK, DQK, kThreads>(sK, key_rows<DQK>(p, b, hk), p.k_stride, kv0, p.T);
    load_tile<C::BCK, DV, kThreads>(sV, p.v + size_t(b) * p.T * p.v_stride + size_t(hk) * DV,
                                    p.v_stride, kv0, p.T);
    auto prefetch = [&](int it, int buf) {
        const int h = hk * G + it / nqt, q0 = (qt0 + it % nqt) * BRB;
        load_halves<BRB, DQK, kThreads>(sQ + buf * C::kQ, query_rows<DQK>(p, b, h), p.q_stride, q0, p.T);
        load_tile<BRB, DV, kThreads>(sO + buf * C::kO,
                                     p.dout + size_t(b) * p.T * dout_stride + size_t(h) * DV,
                                     dout_stride, q0, p.T);
        for (int r = threadIdx.x; r < BRB; r += kThreads) {
            const int i = q0 + r;
            const size_t li = (size_t(b) * p.Hq + h) * p.T + i;
            sL[buf * BRB + r] = i < p.T ? p.lse[li] * kLog2e : INFINITY;
            sD[buf * BRB + r] = i < p.T ? p.delta[li] : 0.f;
        }
    };
    prefetch(0, 0);
    cp_async_commit();

    float dk[MT][DQK / 8][4], dv[MT][DV / 8][4];
    zero(dk);
    zero(dv);
    const int split_steps = p.band > 0 ? p.band_split / 16 : DQK / 16;

    for (int it = 0; it < iters; ++it) {
        const int buf = it & 1;
        if (it + 1 < iters) {
            prefetch(it + 1, buf ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        if (p.fold_d > 0 && it == 0)   // the fold's gates on k̃, loaded once
            scale_halves<C::BCK, DQK, kThreads>(sK, fold_gates(p, hk).x, fold_gates(p, hk).y);
        __syncthreads();
        const int h = hk * G + it / nqt, q0 = (qt0 + it % nqt) * BRB;
        // Queries of this step all precede this warp's keys, or are all cuDNN's: nothing to add.
        if (q0 + BRB - 1 >= kw0 && !offband_all<true>(p, kw0, 16 * MT, q0, BRB)) {
            const __nv_bfloat16* q_s = sQ + buf * C::kQ;
            const __nv_bfloat16* o_s = sO + buf * C::kO;
            const float* l_s = sL + buf * BRB;
            const float* d_s = sD + buf * BRB;

            // S^T = K Q^T (rows: this warp's keys; columns: the step's queries).
            float st[MT][NQ][4];
            const int mode = band_mode(p, q0, BRB, kw0, 16 * MT);
            banded_scores<true, MT, NQ, DQK / 16>(st, sK, C::SQ, wrow0, q_s, C::SQ, split_steps, mode,
                                                  kw0, q0, p.band, g, t, lane);
            if (offband_some<true>(p, kw0, 16 * MT, q0, BRB)) mask_pairs<true>(st, kw0, q0, p.offband, -INFINITY, g, t);
            // dP^T = V dO^T
            float dpt[MT][NQ][4];
            zero(dpt);
            mma_rows_nk<MT, NQ, DV / 16>(dpt, sV, C::SV, wrow0, o_s, C::SV, 0, DV / 16, lane);
            // P^T, then dS^T = P^T (Z dP^T - delta) into dpt and Z P^T into st. Specialised on
            // whether the causal mask can bite in this step and whether dropout is on.
            auto probs = [&](auto causal, auto drop) {
                uint64_t keep = 0;
                if constexpr (decltype(drop)::value) keep = drop_mask<MT, NQ, true>(p, b, h, kw0, q0, g, t);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int ic = nt * 8 + 2 * t + (e & 1);
                            float pr = fast_exp2(fmaf(st[mt][nt][e], p.scale_log2, -l_s[ic]));
                            if constexpr (decltype(causal)::value)
                                if (q0 + ic < kw0 + mt * 16 + g + 8 * (e / 2)) pr = 0.f;
                            float z = 1.f;
                            if constexpr (decltype(drop)::value)
                                z = (keep >> ((mt * NQ + nt) * 4 + e)) & 1 ? p.keep_scale : 0.f;
                            dpt[mt][nt][e] = pr * (z * dpt[mt][nt][e] - d_s[ic]);
                            st[mt][nt][e] = pr * z;
                        }
            };
            dispatch_probs(probs, q0 < kw0 + 16 * MT - 1, p.dropout > 0.f);
            // dV += (Z P)^T dO ; dK += dS^T Q (plain dims, then the banded dims inside the band).
            mma_regs_kn<MT, DV / 8, NQ>(dv, st, o_s, C::SV, 0, DV / 16, lane);
            mma_regs_kn<MT, DQK / 8, NQ>(dk, dpt, q_s, C::SQ, 0, split_steps, lane);
            if (mode != kBandNone && split_steps < DQK / 16) {
                if (mode == kBandMixed) mask_pairs<true>(dpt, kw0, q0, p.band + 1, 0.f, g, t);
                mma_regs_kn<MT, DQK / 8, NQ>(dk, dpt, q_s, C::SQ, split_steps, DQK / 16, lane);
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int j = kw0 + mt * 16 + g + 8 * r;
            if (j >= p.T) continue;
            __nv_bfloat16* dvr = p.dv + (size_t(b) * p.T + j) * p.v_stride + size_t(hk) * DV;
            // Keys before T - offband have cuDNN's gradients (plain dims of dk, all of dv): add to them.
            const bool add = p.offband > 0 && j < p.T - p.offband;
            if (p.fold_d > 0) {
                // dk̃ = [C, E] with k̃ = [g_std k, g_rec q]: dk_j = g_std C_j, dq_j = g_rec E_j (written
                // here, the dQ pass adds the queries' parts).
                const float2 gf = fold_gates(p, hk, p.scale);
                const size_t o = (size_t(b) * p.T + j) * p.k_stride + size_t(hk) * p.fold_d;
#pragma unroll
                for (int nt = 0; nt < DQK / 8; ++nt) {
                    const bool first = nt < DQK / 16;
                    __nv_bfloat16* dst = first ? p.dk + o + nt * 8 + 2 * t : p.dq + o + (nt - DQK / 16) * 8 + 2 * t;
                    const float f = first ? gf.x : gf.y;
                    store_or_add(dst, dk[mt][nt][2 * r] * f, dk[mt][nt][2 * r + 1] * f, false);
                }
            } else {
                __nv_bfloat16* dkr = p.dk + (size_t(b) * p.T + j) * p.k_stride + size_t(hk) * DQK;
#pragma unroll
                for (int nt = 0; nt < DQK / 8; ++nt)
                    store_or_add(dkr + nt * 8 + 2 * t, dk[mt][nt][2 * r] * p.scale, dk[mt][nt][2 * r + 1] * p.scale,
                                 add && nt * 8 < p.band_split);
            }
#pragma unroll
            for (int nt = 0; nt < DV / 8; ++nt)
                store_or_add(dvr + nt * 8 + 2 * t, dv[mt][nt][2 * r], dv[mt][nt][2 * r + 1], add);
        }
}

// ---- dQ: one block per (query tile, batch, query head) -------------------------------------------
template <int DQK, int DV>
struct QCfg {
    static constexpr int MT = DQK == 64 ? GPT_ATTN_MT : 1;   // 16-query m-tiles per warp
    static constexpr int BRQ = 16 * MT * kWarps;      // queries per block
    static constexpr int BCQ = MT == 2 ? 32 : 64;     // keys per step
    static constexpr int SQ = DQK + kPad, SV = DV + kPad;
    static constexpr int kQ = BRQ * SQ, kO = BRQ * SV, kK = BCQ * SQ, kV = BCQ * SV;
    static constexpr size_t bytes = size_t(kQ + kO + 2 * kK + 2 * kV) * sizeof(__nv_bfloat16);
};

// The dQ pass's end with the fold inside the kernel: dq̃ = [A, B] with q̃ = [g_std q, g_rec k] adds
// g_std A_i to dq_i and g_rec B_i to dk_i (the dK/dV pass wrote the keys' parts), and the block's
// partial sums of the gates' gradients, scale sum_i q_i.A_i and scale sum_i k_i.B_i, go to
// gate_part[block] (fold_gate_finish sums them in a fixed order). q_i, k_i come from the block's
// q̃ tile in shared memory (g_std q_i, g_rec k_i as bf16; the gate is divided out of the sum).
template <int MT, int DQK>
__device__ __forceinline__ void fold_q_epilogue(const Params& p, const float (&dq)[MT][DQK / 8][4],
                                                const __nv_bfloat16* sQ, int b, int h, int qw0, int wrow0, int g,
                                                int t) {
    const float2 gf = fold_gates(p, h, p.scale);
    float part_s = 0.f, part_r = 0.f;   // sum A.(g_std q) and B.(g_rec k): the block's q̃ tile in smem
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int i = qw0 + mt * 16 + g + 8 * r;
            if (i >= p.T) continue;
            const size_t o = (size_t(b) * p.T + i) * p.q_stride + size_t(h) * p.fold_d;
            const __nv_bfloat16* qt_row = sQ + (wrow0 + mt * 16 + g + 8 * r) * (DQK + kPad);
#pragma unroll
            for (int nt = 0; nt < DQK / 8; ++nt) {
                const bool first = nt < DQK / 16;
                const int c = (first ? nt : nt - DQK / 16) * 8 + 2 * t;
                const float x = dq[mt][nt][2 * r], y = dq[mt][nt][2 * r + 1];
                if (p.gate_part) {   // q̃_i at this column: g_std q_i (first half) or g_rec k_i
                    const float2 in = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(qt_row + nt * 8 + 2 * t));
                    if (first) part_s += x * in.x + y * in.y;
                    else part_r += x * in.x + y * in.y;
                }
                const float f = first ? gf.x : gf.y;
                store_or_add((first ? p.dq : p.dk) + o + c, x * f, y * f, true);
            }
        }
    if (!p.gate_part) return;
    __shared__ float red[2][kWarps];
    for (int o = 16; o > 0; o >>= 1) {
        part_s += __shfl_xor_sync(0xffffffffu, part_s, o);
        part_r += __shfl_xor_sync(0xffffffffu, part_r, o);
    }
    const int warp = threadIdx.x / 32;
    if (threadIdx.x % 32 == 0) {
        red[0][warp] = part_s;
        red[1][warp] = part_r;
    }
    __syncthreads();
    if (threadIdx.x < 2) {   // the smem tile held the gates: divide them out (each >= the floor)
        float s = 0.f;
        for (int w = 0; w < kWarps; ++w) s += red[threadIdx.x][w];
        const float2 gates = fold_gates(p, h);
        p.gate_part[(size_t(blockIdx.y) * gridDim.x + blockIdx.x) * 2 + threadIdx.x] =
            s * p.scale / (threadIdx.x == 0 ? gates.x : gates.y);
    }
}

template <int DQK, int DV>
__global__ void __launch_bounds__(kThreads) attn_bwd_q_kernel(Params p) {
    using C = QCfg<DQK, DV>;
    constexpr int MT = C::MT, BCQ = C::BCQ, NK = BCQ / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
    __nv_bfloat16* sO = sQ + C::kQ;
    __nv_bfloat16* sK = sO + C::kO;        // two buffers
    __nv_bfloat16* sV = sK + 2 * C::kK;    // two buffers

    const int q_tile = gridDim.x - 1 - blockIdx.x;
    const int b = blockIdx.y / p.Hq, h = blockIdx.y % p.Hq, hk = h / (p.Hq / p.Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int q0 = q_tile * C::BRQ, wrow0 = warp * 16 * MT, qw0 = q0 + wrow0;
    const int dout_stride = p.Hq * DV;
    const HalfRows kg = key_rows<DQK>(p, b, hk);
    const __nv_bfloat16* vg = p.v + size_t(b) * p.T * p.v_stride + size_t(hk) * DV;
    const int n_tiles = (min(q0 + C::BRQ, p.T) - 1) / BCQ + 1;
    // With offband, keys at or before q0 - offband are cuDNN's for every row of the block.
    const int kt_begin = p.offband > 0 ? max(0, q0 - p.offband + 1) / BCQ : 0;

    load_halves<C::BRQ, DQK, kThreads>(sQ, query_rows<DQK>(p, b, h), p.q_stride, q0, p.T);
    load_tile<C::BRQ, DV, kThreads>(sO, p.dout + size_t(b) * p.T * dout_stride + size_t(h) * DV,
                                    dout_stride, q0, p.T);
    load_halves<BCQ, DQK, kThreads>(sK, kg, p.k_stride, kt_begin * BCQ, p.T);
    load_tile<BCQ, DV, kThreads>(sV, vg, p.v_stride, kt_begin * BCQ, p.T);
    cp_async_commit();

    float lse2[MT][2], del[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int i = qw0 + mt * 16 + g + 8 * r;
            const size_t li = (size_t(b) * p.Hq + h) * p.T + i;
            lse2[mt][r] = i < p.T ? p.lse[li] * kLog2e : INFINITY;
            del[mt][r] = i < p.T ? p.delta[li] : 0.f;
        }
    float dq[MT][DQK / 8][4];
    zero(dq);
    const int split_steps = p.band > 0 ? p.band_split / 16 : DQK / 16;

    for (int kt = kt_begin; kt < n_tiles; ++kt) {
        const int buf = (kt - kt_begin) & 1;
        if (kt + 1 < n_tiles) {
            load_halves<BCQ, DQK, kThreads>(sK + (buf ^ 1) * C::kK, kg, p.k_stride, (kt + 1) * BCQ, p.T);
            load_tile<BCQ, DV, kThreads>(sV + (buf ^ 1) * C::kV, vg, p.v_stride, (kt + 1) * BCQ, p.T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        if (p.fold_d > 0 && kt == kt_begin)   // the fold's gates on q̃, loaded once
            scale_halves<C::BRQ, DQK, kThreads>(sQ, fold_gates(p, h).x, fold_gates(p, h).y);
        __syncthreads();
        const int k0 = kt * BCQ;
        // Keys of this step all follow this warp's queries, or are all cuDNN's: nothing to add.
        if (k0 <= qw0 + 16 * MT - 1 && !offband_all<false>(p, qw0, 16 * MT, k0, BCQ)) {
            const __nv_bfloat16* k_s = sK + buf * C::kK;
            const __nv_bfloat16* v_s = sV + buf * C::kV;
            float s[MT][NK][4];
            const int mode = band_mode(p, qw0, 16 * MT, k0, BCQ);
            banded_scores<false, MT, NK, DQK / 16>(s, sQ, C::SQ, wrow0, k_s, C::SQ, split_steps, mode,
                                                   qw0, k0, p.band, g, t, lane);
            if (offband_some<false>(p, qw0, 16 * MT, k0, BCQ)) mask_pairs<false>(s, qw0, k0, p.offband, -INFINITY, g, t);
            float dp[MT][NK][4];
            zero(dp);
            mma_rows_nk<MT, NK, DV / 16>(dp, sO, C::SV, wrow0, v_s, C::SV, 0, DV / 16, lane);
            auto probs = [&](auto causal, auto drop) {
                uint64_t keep = 0;
                if constexpr (decltype(drop)::value) keep = drop_mask<MT, NK, false>(p, b, h, qw0, k0, g, t);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int nt = 0; nt < NK; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            float pr = fast_exp2(fmaf(s[mt][nt][e], p.scale_log2, -lse2[mt][e / 2]));
                            if constexpr (decltype(causal)::value)
                                if (k0 + nt * 8 + 2 * t + (e & 1) > qw0 + mt * 16 + g + 8 * (e / 2)) pr = 0.f;
                            float z = 1.f;
                            if constexpr (decltype(drop)::value)
                                z = (keep >> ((mt * NK + nt) * 4 + e)) & 1 ? p.keep_scale : 0.f;
                            dp[mt][nt][e] = pr * (z * dp[mt][nt][e] - del[mt][e / 2]);
                        }
            };
            dispatch_probs(probs, k0 + BCQ - 1 > qw0, p.dropout > 0.f);
            mma_regs_kn<MT, DQK / 8, NK>(dq, dp, k_s, C::SQ, 0, split_steps, lane);
            if (mode != kBandNone && split_steps < DQK / 16) {
                if (mode == kBandMixed) mask_pairs<false>(dp, qw0, k0, p.band + 1, 0.f, g, t);
                mma_regs_kn<MT, DQK / 8, NK>(dq, dp, k_s, C::SQ, split_steps, DQK / 16, lane);
            }
        }
        __syncthreads();
    }

    if (p.fold_d > 0) {
        fold_q_epilogue<MT, DQK>(p, dq, sQ, b, h, qw0, wrow0, g, t);
        return;
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int i = qw0 + mt * 16 + g + 8 * r;
            if (i >= p.T) continue;
            __nv_bfloat16* dqr = p.dq + (size_t(b) * p.T + i) * p.q_stride + size_t(h) * DQK;
            // Queries from offband on have cuDNN's gradient in the plain dims: add to it.
            const bool add = p.offband > 0 && i >= p.offband;
#pragma unroll
            for (int nt = 0; nt < DQK / 8; ++nt)
                store_or_add(dqr + nt * 8 + 2 * t, dq[mt][nt][2 * r] * p.scale, dq[mt][nt][2 * r + 1] * p.scale,
                             add && nt * 8 < p.band_split);
        }
}

template <int DQK, int DV, int KV_MINB>
void launch_bwd(const Params& p, cudaStream_t s) {
    constexpr size_t kv_smem = KvCfg<DQK, DV>::bytes, q_smem = QCfg<DQK, DV>::bytes;
    static bool configured = false;
    if (!configured) {
        GPT_CUDA(cudaFuncSetAttribute(attn_bwd_kv_kernel<DQK, DV, KV_MINB>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(kv_smem)));
        GPT_CUDA(cudaFuncSetAttribute(attn_bwd_q_kernel<DQK, DV>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(q_smem)));
        configured = true;
    }
    constexpr int bck = KvCfg<DQK, DV>::BCK, brq = QCfg<DQK, DV>::BRQ;
    attn_bwd_kv_kernel<DQK, DV, KV_MINB>
        <<<dim3((p.T + bck - 1) / bck, p.B * p.Hkv), kThreads, kv_smem, s>>>(p);
    GPT_CUDA_LAUNCHED("attn_bwd_kv_kernel");
    attn_bwd_q_kernel<DQK, DV>
        <<<dim3((p.T + brq - 1) / brq, p.B * p.Hq), kThreads, q_smem, s>>>(p);
    GPT_CUDA_LAUNCHED("attn_bwd_q_kernel");
}

// GPT_ATTN_BWD_VARIANT=1 asks the compiler for one resident dK/dV block per SM fewer (more
// registers, no spills, fewer warps; measured no faster on an H100: 0.299 vs 0.297 ms of backward
// at the base shape); read per call, so the tests and the benchmark cover both.
template <int DQK, int DV>
void launch_bwd(const Params& p, cudaStream_t s) {
    constexpr int kMinB = KvCfg<DQK, DV>::kMinBlocks;
    const char* e = std::getenv("GPT_ATTN_BWD_VARIANT");
    if constexpr (kMinB > 1)
        if (e && std::atoi(e) == 1) return launch_bwd<DQK, DV, kMinB - 1>(p, s);
    launch_bwd<DQK, DV, kMinB>(p, s);
}

// The fold's gate gradients from the dQ pass's block partials part[B * H][tiles][2]: block
// (gate, which) sums its gate's partials (per head: that head's; per layer: all), each thread a
// fixed stride of them, then a fixed-order tree (deterministic). A gate at the floor gets none (as
// the CPU's fold).
constexpr int kFinishThreads = 256;
__global__ void __launch_bounds__(kFinishThreads) fold_gate_finish_kernel(float* dg_std, float* dg_rec,
                                                                          const float* part, const float* g_std,
                                                                          const float* g_rec, int B, int H,
                                                                          int tiles, int n_gates) {
    const int gi = blockIdx.x, which = blockIdx.y;
    float* dg = which == 0 ? dg_std : dg_rec;
    const float* gate = which == 0 ? g_std : g_rec;
    if (!dg) return;
    const bool per_layer = n_gates == 1;
    const size_t items = size_t(B) * (per_layer ? H : 1) * tiles;
    float s = 0.f;
    for (size_t i = threadIdx.x; i < items; i += kFinishThreads) {
        // (b, h, tile) in part's order; per head: only head gi of each b
        const size_t idx = per_layer ? i : (i / tiles * H + gi) * tiles + i % tiles;
        s += part[idx * 2 + which];
    }
    __shared__ float red[kFinishThreads];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int w = kFinishThreads / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0 && (!gate || dfloored_gate(gate[gi]) > 0.f)) dg[gi] += red[0];
}

}  // namespace

// Query rows per dQ block of the instantiation these dims run (the dQ grid's x extent).
int q_block_rows(const AttnDims& d) {
    if (d.Dqk == 64) return QCfg<64, 64>::BRQ;
    return QCfg<128, 64>::BRQ;
}
}  // namespace attn

void attention_bwd(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                   const __nv_bfloat16* dout, const __nv_bfloat16* out, const float* lse,
                   const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                   const AttnDims& d, float* delta, const float* delta_shift, cudaStream_t s, int offband,
                   const FusedFold* fold) {
    attention_check(d);
    GPT_CHECK(offband >= 0 && (offband == 0 || offband > d.band),
              "cuda-bf16 attention_bwd: offband must be 0 or past the band");
    for (const void* ptr : {static_cast<const void*>(dq), static_cast<const void*>(dk),
                            static_cast<const void*>(dv), static_cast<const void*>(dout),
                            static_cast<const void*>(out), static_cast<const void*>(q),
                            static_cast<const void*>(k), static_cast<const void*>(v)})
        GPT_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0,
                  "cuda-bf16 attention_bwd: tensors must start on 16-byte boundaries (Act offsets "
                  "multiple of 8)");
    const size_t rows = size_t(d.B) * d.T * d.Hq;
    const size_t delta_threads = rows * (d.Dv / 8);
    attn::attn_delta_kernel<<<unsigned((delta_threads + 255) / 256), 256, 0, s>>>(delta, out, dout, delta_shift, d.B,
                                                                                  d.T, d.Hq, d.Dv);
    GPT_CUDA_LAUNCHED("attn_delta_kernel");
    attn::Params p = attn::make_params(d);
    p.q = q;
    p.k = k;
    p.v = v;
    p.o = out;
    p.dout = dout;
    p.dq = dq;
    p.dk = dk;
    p.dv = dv;
    p.lse = const_cast<float*>(lse);
    p.delta = delta;
    p.offband = offband;
    attn::apply_fold(p, d, fold, offband);
    const bool gate_grads = fold && fold->D > 0 && (fold->dg_std || fold->dg_rec);
    if (gate_grads) {
        GPT_CHECK(fold->scratch != nullptr, "cuda-bf16 attention_bwd: the fold's gate gradients need its scratch");
        p.gate_part = fold->scratch;
    }
    if (d.Dqk == 144) attn::launch_bwd<144, 64>(p, s);
    else if (d.Dqk == 80) attn::launch_bwd<80, 64>(p, s);
    else if (d.Dqk == 64 && d.Dv == 128) attn::launch_bwd<64, 128>(p, s);
    else if (d.Dqk == 64) attn::launch_bwd<64, 64>(p, s);
    else if (d.Dv == 128) attn::launch_bwd<128, 128>(p, s);
    else attn::launch_bwd<128, 64>(p, s);
    if (gate_grads) {
        const int tiles = (d.T + attn::q_block_rows(d) - 1) / attn::q_block_rows(d);
        attn::fold_gate_finish_kernel<<<dim3(fold->n_gates, 2), attn::kFinishThreads, 0, s>>>(
            fold->dg_std, fold->dg_rec, fold->scratch, fold->g_std, fold->g_rec, d.B, d.Hq, tiles, fold->n_gates);
        GPT_CUDA_LAUNCHED("fold_gate_finish_kernel");
    }
}

size_t fused_fold_scratch_floats(const AttnDims& d) {
    return size_t(d.B) * d.Hq * ((d.T + attn::q_block_rows(d) - 1) / attn::q_block_rows(d)) * 2;
}

void attention_shift_out(__nv_bfloat16* out_adj, const __nv_bfloat16* out, const __nv_bfloat16* dout,
                         const float* delta_shift, const AttnDims& d, cudaStream_t s) {
    const int per_row = d.Dv / 8;   // lanes per row: a power of two dividing a warp
    GPT_CHECK(d.Dv % 8 == 0 && per_row <= 32 && (per_row & (per_row - 1)) == 0,
              "cuda-bf16 attention_shift_out: Dv must be 8 times a power of two up to 256, got " + std::to_string(d.Dv));
    const size_t threads = size_t(d.B) * d.T * d.Hq * (d.Dv / 8);
    attn::attn_shift_out_kernel<<<unsigned((threads + 255) / 256), 256, 0, s>>>(out_adj, out, dout, delta_shift, d.B,
                                                                                d.T, d.Hq, d.Dv);
    GPT_CUDA_LAUNCHED("attn_shift_out_kernel");
}

}  // namespace gpt::cuda
