// Flash-attention forward: causal, online softmax in fp32, bf16 mma.sync tensor cores, grouped
// heads, strided q/k/v rows, dropout on the probabilities (counter RNG shared with the CPU), and
// the banded reciprocal half of folded RA. One block = 16 MT NW query rows of one (batch, head), NW
// warps of 16 x MT rows (FwdCfg); 64-row key/value tiles double-buffered by cp.async.
#include <cstdlib>
#include <string>

#include "cuda/attention_common.cuh"
#include "cuda/cuda_kernels.cuh"

namespace gpt::cuda {
namespace attn {
namespace {

constexpr int kBC = 64;

// Each warp owns MT m-tiles of 16 query rows: two tiles reuse every K/V fragment loaded from shared
// memory twice (half the shared-memory traffic per MMA). NW warps share each K/V tile.
template <int DQK, int DV, int NW, int MT_>
struct FwdCfg {
    static constexpr int MT = MT_, kThreads = 32 * NW;
    static constexpr int BR = 16 * MT * NW;
    static constexpr int SQ = DQK + kPad, SV = DV + kPad;
    static constexpr int kQ = BR * SQ, kK = kBC * SQ, kV = kBC * SV;
    static constexpr size_t bytes = size_t(kQ + 2 * kK + 2 * kV) * sizeof(__nv_bfloat16);
};

// s += Q K^T over the k-steps in [kk_begin, kk_end) for this warp's MT m-tiles against a 64-key
// tile. The whole range runs unrolled (fragments load ahead of the MMAs) for one m-tile or Dqk = 64;
// otherwise the loop stays rolled, so the kernel's code fits the instruction cache.
template <int DQK, int MT>
__device__ __forceinline__ void qk_steps(float (&s)[MT][kBC / 8][4], const __nv_bfloat16* sQ,
                                         int q_row0, const __nv_bfloat16* sK, int kk_begin,
                                         int kk_end, int lane) {
    auto step = [&](int kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) load_a(a[mt], sQ, DQK + kPad, q_row0 + mt * 16, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < kBC / 16; ++np) {
            uint32_t b[4];
            load_b_nk(b, sK, DQK + kPad, np * 16, kk * 16, lane);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma16816(s[mt][2 * np], a[mt], b[0], b[1]);
                mma16816(s[mt][2 * np + 1], a[mt], b[2], b[3]);
            }
        }
    };
    if ((MT == 1 || DQK == 64) && kk_begin == 0 && kk_end == DQK / 16) {
#pragma unroll
        for (int kk = 0; kk < DQK / 16; ++kk) step(kk);
    } else {
#pragma unroll 1
        for (int kk = kk_begin; kk < kk_end; ++kk) step(kk);
    }
}

template <int DQK, int DV, int NW, int MT_>
__global__ void __launch_bounds__(32 * NW) attn_fwd_kernel(Params p) {
    using C = FwdCfg<DQK, DV, NW, MT_>;
    constexpr int MT = C::MT, BR = C::BR, kThreads = C::kThreads;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
    __nv_bfloat16* sK = sQ + C::kQ;        // two buffers
    __nv_bfloat16* sV = sK + 2 * C::kK;    // two buffers

    const int q_tile = gridDim.x - 1 - blockIdx.x;   // the longest rows first
    const int bh = blockIdx.y, b = bh / p.Hq, h = bh % p.Hq, hk = h / (p.Hq / p.Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int q0 = q_tile * BR, wrow0 = warp * 16 * MT;   // warp's first row within the tile
    const HalfRows qg = query_rows<DQK>(p, b, h), kg = key_rows<DQK>(p, b, hk);
    const __nv_bfloat16* vg = p.v + size_t(b) * p.T * p.v_stride + size_t(hk) * DV;

    const int last_row = min(q0 + BR, p.T) - 1;
    const int n_tiles = last_row / kBC + 1;
    // With offband, keys at or before q0 - offband are cuDNN's for every row of the block.
    const int kt_begin = p.offband > 0 ? max(0, q0 - p.offband + 1) / kBC : 0;

    load_halves<BR, DQK, kThreads>(sQ, qg, p.q_stride, q0, p.T);
    load_halves<kBC, DQK, kThreads>(sK, kg, p.k_stride, kt_begin * kBC, p.T);
    load_tile<kBC, DV, kThreads>(sV, vg, p.v_stride, kt_begin * kBC, p.T);
    cp_async_commit();

    float o[MT][DV / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < DV / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    float m[MT][2], l[MT][2];
    int row[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            m[mt][r] = -INFINITY;
            l[mt][r] = 0.f;
            row[mt][r] = q0 + wrow0 + mt * 16 + g + 8 * r;
        }
    const int split_steps = p.band > 0 ? p.band_split / 16 : DQK / 16;

    for (int kt = kt_begin; kt < n_tiles; ++kt) {
        const int buf = (kt - kt_begin) & 1;
        if (kt + 1 < n_tiles) {
            load_halves<kBC, DQK, kThreads>(sK + (buf ^ 1) * C::kK, kg, p.k_stride, (kt + 1) * kBC, p.T);
            load_tile<kBC, DV, kThreads>(sV + (buf ^ 1) * C::kV, vg, p.v_stride, (kt + 1) * kBC, p.T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        if (p.fold_d > 0 && kt == kt_begin)   // the fold's gates on q̃, loaded once
            scale_halves<BR, DQK, kThreads>(sQ, fold_gates(p, h).x, fold_gates(p, h).y);
        __syncthreads();
        const __nv_bfloat16* k_s = sK + buf * C::kK;
        const __nv_bfloat16* v_s = sV + buf * C::kV;
        const int k0 = kt * kBC;
        if (offband_all<false>(p, q0 + wrow0, 16 * MT, k0, kBC)) {   // all of this warp's pairs are cuDNN's
            __syncthreads();
            continue;
        }

        float s[MT][kBC / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < kBC / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
        // Banded reciprocal dims first (masked to the band), then the plain dims on top.
        const int mode = band_mode(p, q0 + wrow0, 16 * MT, k0, kBC);
        if (mode != kBandNone)
            qk_steps<DQK, MT>(s, sQ, wrow0, k_s, split_steps, DQK / 16, lane);
        if (mode == kBandMixed) mask_pairs<false>(s, q0 + wrow0, k0, p.band + 1, 0.f, g, t);
        qk_steps<DQK, MT>(s, sQ, wrow0, k_s, 0, split_steps, lane);

        // Causal mask (only tiles that cross the diagonal), then the online softmax in log2 units
        // with the scale folded into one FFMA per element (scale > 0 keeps the max's position).
        if (k0 + kBC - 1 > q0 + wrow0) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        if (k0 + nt * 8 + 2 * t + (e & 1) > row[mt][e / 2]) s[mt][nt][e] = -INFINITY;
        }
        if (offband_some<false>(p, q0 + wrow0, 16 * MT, k0, kBC)) mask_pairs<false>(s, q0 + wrow0, k0, p.offband, -INFINITY, g, t);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) mx[e / 2] = fmaxf(mx[e / 2], s[mt][nt][e]);
            float corr[2], neg_m[2];
            bool same = true;
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                const float m_new = fmaxf(m[mt][r], mx[r] * p.scale_log2);
                same = same && m_new == m[mt][r];
                corr[r] = m[mt][r] == -INFINITY ? 0.f : fast_exp2(m[mt][r] - m_new);
                m[mt][r] = m_new;
                neg_m[r] = m_new == -INFINITY ? 0.f : -m_new;
            }
            // Rescale only when some row's running max moved (rarely after the first tiles): the
            // multiply by exp2(0) = 1 would change nothing. One vote saves DV / 2 FMULs a thread.
            if (!__all_sync(0xffffffffu, same)) {
#pragma unroll
                for (int r = 0; r < 2; ++r) l[mt][r] *= corr[r];
#pragma unroll
                for (int i = 0; i < DV / 8; ++i) {
                    o[mt][i][0] *= corr[0];
                    o[mt][i][1] *= corr[0];
                    o[mt][i][2] *= corr[1];
                    o[mt][i][3] *= corr[1];
                }
            }
#pragma unroll
            for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float pr = fast_exp2(fmaf(s[mt][nt][e], p.scale_log2, neg_m[e / 2]));
                    l[mt][e / 2] += pr;
                    s[mt][nt][e] = pr;
                }
        }
        if (p.dropout > 0.f) {   // the row sums above keep the undropped probabilities
            const uint64_t keep = drop_mask<MT, kBC / 8, false>(p, b, h, q0 + wrow0, k0, g, t);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        s[mt][nt][e] *= (keep >> ((mt * (kBC / 8) + nt) * 4 + e)) & 1 ? p.keep_scale : 0.f;
        }
        // o += P V
#pragma unroll
        for (int j = 0; j < kBC / 16; ++j) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) c_to_a<kBC / 8>(a[mt], s[mt], j);
#pragma unroll
            for (int np = 0; np < DV / 16; ++np) {
                uint32_t bv[4];
                load_b_kn(bv, v_s, DV + kPad, np * 16, j * 16, lane);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma16816(o[mt][2 * np], a[mt], bv[0], bv[1]);
                    mma16816(o[mt][2 * np + 1], a[mt], bv[2], bv[3]);
                }
            }
        }
        __syncthreads();   // this buffer is refilled by the next iteration's prefetch
    }

    // Finish: full row sums across the quad, normalise, store out and lse.
    const int out_stride = p.Hq * DV;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float lr = l[mt][r];
            lr += __shfl_xor_sync(0xffffffffu, lr, 1);
            lr += __shfl_xor_sync(0xffffffffu, lr, 2);
            const bool valid = row[mt][r] < p.T;
            // cuDNN's part of this row (offband): merged by the two log-sum-exps. Every lane of the
            // quad reads the old lse before lane 0 overwrites it.
            const bool merge = valid && p.offband > 0 && row[mt][r] >= p.offband;
            float* lse_row = p.lse + (size_t(b) * p.Hq + h) * p.T + row[mt][r];
            const float old2 = merge ? *lse_row * kLog2e : 0.f;
            __syncwarp();
            if (!valid) continue;
            __nv_bfloat16* orow = p.out + (size_t(b) * p.T + row[mt][r]) * out_stride + size_t(h) * DV;
            float lse2 = m[mt][r] + log2f(lr);   // log2 units
            float inv = 1.f / lr, w_old = 0.f;
            if (merge) {
                const float mx = fmaxf(old2, lse2);
                const float new2 = mx + log2f(exp2f(old2 - mx) + exp2f(lse2 - mx));
                w_old = exp2f(old2 - new2);
                inv = exp2f(lse2 - new2) / lr;
                lse2 = new2;
            }
#pragma unroll
            for (int nt = 0; nt < DV / 8; ++nt) {
                float2 x = make_float2(o[mt][nt][2 * r] * inv, o[mt][nt][2 * r + 1] * inv);
                auto* dst = reinterpret_cast<__nv_bfloat162*>(orow + nt * 8 + 2 * t);
                if (merge) {
                    const float2 y = __bfloat1622float2(*dst);
                    x.x += w_old * y.x;
                    x.y += w_old * y.y;
                }
                *dst = __floats2bfloat162_rn(x.x, x.y);
            }
            if (t == 0) *lse_row = lse2 / kLog2e;
        }
}

template <int DQK, int DV, int NW, int MT>
void launch_fwd(const Params& p, cudaStream_t s) {
    using C = FwdCfg<DQK, DV, NW, MT>;
    static bool configured = false;
    if (!configured) {
        GPT_CUDA(cudaFuncSetAttribute(attn_fwd_kernel<DQK, DV, NW, MT>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::bytes)));
        configured = true;
    }
    const dim3 grid((p.T + C::BR - 1) / C::BR, p.B * p.Hq);
    attn_fwd_kernel<DQK, DV, NW, MT><<<grid, C::kThreads, C::bytes, s>>>(p);
    GPT_CUDA_LAUNCHED("attn_fwd_kernel");
}

// Tile shapes (warps NW x m-tiles MT per warp), measured on an H100 (docs/performance.md): 4 warps,
// MT = 1 for Dqk = 64 (0.091 ms at the base shape; 8 x 1: 0.101, MT = 2: 0.099) and MT = 2 for
// Dqk = 128 (D = 128: 0.154 vs 0.173 with MT = 1). GPT_ATTN_FWD_VARIANT=1|2 picks an alternative
// (read per call: the tests and the benchmark cover all).
int fwd_variant() {
    const char* e = std::getenv("GPT_ATTN_FWD_VARIANT");
    const int v = e ? std::atoi(e) : 0;
    return v >= 0 && v <= 2 ? v : 0;
}
template <int DQK, int DV>
void launch_fwd(const Params& p, cudaStream_t s) {
    constexpr int kDefaultMT = DQK == 64 ? GPT_ATTN_MT : 2;
    switch (fwd_variant()) {
    case 1: launch_fwd<DQK, DV, 8, 1>(p, s); break;                 // 128 rows, 8 warps
    case 2: launch_fwd<DQK, DV, 4, 3 - kDefaultMT>(p, s); break;    // the other MT
    default: launch_fwd<DQK, DV, 4, kDefaultMT>(p, s);
    }
}

}  // namespace

Params make_params(const AttnDims& d) {
    Params p{};
    p.B = d.B;
    p.T = d.T;
    p.Hq = d.Hq;
    p.Hkv = d.Hkv;
    p.q_stride = d.q_stride;
    p.k_stride = d.k_stride;
    p.v_stride = d.v_stride;
    p.scale = d.scale;
    p.scale_log2 = d.scale * kLog2e;
    p.dropout = d.dropout;
    p.keep_scale = d.dropout > 0.f ? 1.f / (1.f - d.dropout) : 1.f;
    p.seed = d.seed;
    p.band = d.band;
    p.band_split = d.band > 0 ? d.band_split : d.Dqk;
    p.offband = 0;
    p.fold_d = 0;
    p.n_gates = 1;
    p.g_std_fixed = p.g_rec_fixed = 1.f;
    return p;
}

void apply_fold(Params& p, const AttnDims& d, const FusedFold* fold, int offband) {
    if (!fold || fold->D == 0) return;
    GPT_CHECK(d.Dqk == 2 * fold->D && fold->D % 8 == 0 && d.Hq == d.Hkv && d.q_stride == d.k_stride && offband == 0 &&
                  (d.band == 0 || d.band_split == fold->D) && (fold->n_gates == 1 || fold->n_gates == d.Hq),
              "cuda-bf16 attention: the fold inside the kernel needs Dqk = 2 D (D a multiple of 8), Hq = Hkv, q and k "
              "rows at one stride, the band on the second half, 1 or Hq gates and no off-band split");
    p.fold_d = fold->D;
    p.g_std = fold->g_std;
    p.g_rec = fold->g_rec;
    p.g_std_fixed = fold->g_std_fixed;
    p.g_rec_fixed = fold->g_rec_fixed;
    p.n_gates = fold->n_gates;
}

}  // namespace attn

void attention_check(const AttnDims& d) {
    auto bad = [&](const char* why) {
        fail("cuda-bf16 attention: unsupported shape (B=" + std::to_string(d.B) +
             " T=" + std::to_string(d.T) + " Hq=" + std::to_string(d.Hq) +
             " Hkv=" + std::to_string(d.Hkv) + " Dqk=" + std::to_string(d.Dqk) +
             " Dv=" + std::to_string(d.Dv) + " strides q/k/v=" + std::to_string(d.q_stride) + "/" +
             std::to_string(d.k_stride) + "/" + std::to_string(d.v_stride) +
             " band=" + std::to_string(d.band) + "/" + std::to_string(d.band_split) + "): " + why);
    };
    // (128, 64): the exact RA fold; (64, 128): RA-CT's entropy on the values [v, k]; (144, 64) and
    // (80, 64): the exact and same-FLOP folds with the discoverability channel (padded to 16).
    const bool dims_ok = (d.Dqk == 64 && d.Dv == 64) || (d.Dqk == 128 && d.Dv == 128) ||
                         (d.Dqk == 128 && d.Dv == 64) || (d.Dqk == 64 && d.Dv == 128) ||
                         (d.Dqk == 144 && d.Dv == 64) || (d.Dqk == 80 && d.Dv == 64);
    if (!dims_ok)
        bad("head dims (Dqk, Dv) must be (64, 64), (128, 128), (128, 64), (64, 128), (144, 64) or (80, 64)");
    if (d.B <= 0 || d.T <= 0 || d.Hq <= 0 || d.Hkv <= 0) bad("B, T, Hq, Hkv must be positive");
    if (d.Hq % d.Hkv != 0) bad("Hkv must divide Hq");
    if (d.q_stride % 8 || d.k_stride % 8 || d.v_stride % 8)
        bad("row strides must be multiples of 8 elements (16-byte rows)");
    if (d.q_stride < d.Hq * d.Dqk || d.k_stride < d.Hkv * d.Dqk || d.v_stride < d.Hkv * d.Dv)
        bad("a row stride is smaller than its heads' width");
    if (!(d.dropout >= 0.f && d.dropout < 1.f)) bad("dropout must be in [0, 1)");
    if (!(d.scale > 0.f)) bad("scale must be positive");
    if (d.band < 0) bad("band must be >= 0");
    if (d.band > 0 && (d.band_split < 0 || d.band_split > d.Dqk || d.band_split % 16 != 0))
        bad("band_split must be a multiple of 16 in [0, Dqk]");
}

void attention_fwd(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                   const __nv_bfloat16* v, const AttnDims& d, cudaStream_t s, int offband,
                   const FusedFold* fold) {
    attention_check(d);
    GPT_CHECK(offband >= 0 && (offband == 0 || offband > d.band),
              "cuda-bf16 attention_fwd: offband must be 0 or past the band");
    for (const void* ptr : {static_cast<const void*>(out), static_cast<const void*>(q),
                            static_cast<const void*>(k), static_cast<const void*>(v)})
        GPT_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0,
                  "cuda-bf16 attention_fwd: q/k/v/out must start on 16-byte boundaries (Act offsets "
                  "multiple of 8)");
    attn::Params p = attn::make_params(d);
    p.q = q;
    p.k = k;
    p.v = v;
    p.out = out;
    p.lse = lse;
    p.offband = offband;
    attn::apply_fold(p, d, fold, offband);
    if (d.Dqk == 144) attn::launch_fwd<144, 64>(p, s);
    else if (d.Dqk == 80) attn::launch_fwd<80, 64>(p, s);
    else if (d.Dqk == 64 && d.Dv == 128) attn::launch_fwd<64, 128>(p, s);
    else if (d.Dqk == 64) attn::launch_fwd<64, 64>(p, s);
    else if (d.Dv == 128) attn::launch_fwd<128, 128>(p, s);
    else attn::launch_fwd<128, 64>(p, s);
}

}  // namespace gpt::cuda
