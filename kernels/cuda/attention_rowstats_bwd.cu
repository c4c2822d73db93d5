// Backward of RA-CT's gate (ops.h ract_gate_bwd) without the [T, T] probabilities.
// With c = dL/dstat of a row and f = dstat/dP, the logits get dS = P c (f - sum_j P f), and every
// statistic turns that into dS = P (alpha phi - beta) with per-row (alpha, beta):
//   topk/max   phi = [j selected]  alpha = c        beta = c stat        (sum P f = stat)
//   entropy    phi = lse - x       alpha = c        beta = c stat        (f = -(log P + 1), x = logit)
//   rms        phi = P             alpha = c/(n rms) beta = c rms        (f = P/(n rms), n = i + 1)
//   head-mean topk/max (every head h): alpha = c/H, beta = alpha m_h with m_h = sum over the
//   selection of P_h, c = sum_h dz_h scale_h (the statistic is shared by the heads).
// The selection comes from the forward (sel), so near-ties cannot flip between the passes.
// Then dq_i += scale sum_j dS_ij k_j (one block per query tile: streams the key tiles) and
// dk_j += scale sum_i dS_ij q_i (one block per key tile: streams the query tiles of every query
// head of the key head), both recomputing the logits with tensor cores: no atomics, fixed order,
// deterministic. Head-mean entropy/rms: f depends on the head-mean row A = sum_h P_h / H, so a
// first kernel (ract_headmean_phi_kernel) writes phi = c f / H for every entry ([B, T, T] fp32,
// scratch) and each head's beta = sum_j P_h phi, then the same passes read phi (alpha = 1).
#include <string>

#include "cuda/attention_rowstats.cuh"
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace rowstats {
namespace {

enum Phi { kPhiSelected = 0, kPhiLogit = 1, kPhiProb = 2, kPhiBuffer = 3 };

struct BwdArgs {
    const float *alpha, *beta;   // [B, Hq, T] (lse's layout)
    const float* phi;            // [B, T, T], row i's entry j at (b T + i) T + j (kPhiBuffer)
    const int32_t* sel;          // [B*T, sel_heads, slots] (kPhiSelected)
    int sel_heads, slots;
    bf16 *dq, *dk;               // q's and k's layouts, accumulated
};

// The selected columns of row (b, i) for query head h, as a bit mask over the key tile at k0.
__device__ __forceinline__ uint64_t sel_mask(const BwdArgs& a, int T, int b, int i, int h, int k0) {
    const int32_t* c = a.sel + ((size_t(b) * T + i) * a.sel_heads + (a.sel_heads == 1 ? 0 : h)) * a.slots;
    uint64_t m = 0;
    for (int s = 0; s < a.slots; ++s) {
        const unsigned d = unsigned(c[s] - k0);
        if (c[s] >= 0 && d < unsigned(kBC)) m |= 1ull << d;
    }
    return m;
}

// One logit scale q_i.k_j with the band rule, fp32 from bf16 (the head-mean coefficients' few
// selected entries).
__device__ float logit(const Geom& g, int Dqk, int b, int h, int i, int j) {
    const bf16* qr = g.q + (size_t(b) * g.T + i) * g.q_stride + size_t(h) * Dqk;
    const bf16* kr = g.k + (size_t(b) * g.T + j) * g.k_stride + size_t(h / (g.Hq / g.Hkv)) * Dqk;
    const int n = (g.band > 0 && i - j > g.band) ? g.band_split : Dqk;
    float s = 0.f;
    for (int c = 0; c < n; ++c) s += __bfloat162float(qr[c]) * __bfloat162float(kr[c]);
    return s * g.scale;
}

struct CoefArgs {
    const bf16 *dgate, *gate;
    const float *stat, *scale;
    float *cs, *cb;               // per (row, head): dz stat, dz (dscale, dbias contributions)
    float *alpha, *beta;          // null: detached statistic
    RactStat stat_kind;
    bool head_average;
    int B, T, H, Dqk;
    const int32_t* sel;
    int slots;
};

// One thread per row n = b T + i: dz = dgate sigma' per head, the parameter-gradient
// contributions, and the row's (alpha, beta) per head.
__global__ void ract_coef_kernel(CoefArgs c, Geom g) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= c.B * c.T) return;
    const int b = n / c.T, i = n % c.T;
    float shared = 0.f;   // head_average: sum_h dz_h scale_h
    for (int h = 0; h < c.H; ++h) {
        const size_t o = size_t(n) * c.H + h;
        const float gt = __bfloat162float(c.gate[o]);
        const float z = __bfloat162float(c.dgate[o]) * gt * (1.f - gt);
        c.cs[o] = z * c.stat[o];
        c.cb[o] = z;
        if (!c.alpha) continue;
        const float cz = z * c.scale[h], st = c.stat[o];
        const size_t r = (size_t(b) * c.H + h) * c.T + i;
        if (c.head_average) {
            shared += cz;
        } else if (c.stat_kind == RactStat::rms) {
            c.alpha[r] = st > 0.f ? cz / (float(i + 1) * st) : 0.f;
            c.beta[r] = cz * st;
        } else {
            c.alpha[r] = cz;
            c.beta[r] = cz * st;
        }
    }
    if (!c.alpha || !c.head_average) return;
    const int32_t* sel = c.sel + size_t(n) * c.slots;
    for (int h = 0; h < c.H; ++h) {
        const size_t r = (size_t(b) * c.H + h) * c.T + i;
        const float l = g.lse[r];
        float m = 0.f;
        for (int s = 0; s < c.slots; ++s)
            if (sel[s] >= 0) m += expf(logit(g, c.Dqk, b, h, i, sel[s]) - l);
        c.alpha[r] = shared / float(c.H);
        c.beta[r] = c.alpha[r] * m;
    }
}

// dS = P (alpha phi - beta) for one entry (kPhiBuffer: phi read from the buffer at (b, i, j)).
template <int PHI>
__device__ __forceinline__ float dlogit(float s, const Geom& g, float lse, float lse2, float alpha, float beta,
                                        bool selected, const BwdArgs& a, int b, int i, int j) {
    const float p = attn::fast_exp2(fmaf(s, g.scale_log2, -lse2));
    float phi;
    if constexpr (PHI == kPhiSelected) phi = selected ? 1.f : 0.f;
    else if constexpr (PHI == kPhiLogit) phi = lse - s * g.scale;
    else if constexpr (PHI == kPhiProb) phi = p;
    else phi = i < g.T ? a.phi[(size_t(b) * g.T + i) * g.T + j] : 0.f;   // rows past T: alpha = beta = 0
    return p * (alpha * phi - beta);
}

// Head-mean entropy/rms: phi_ij = c_i f(A_ij) / H with A the head-mean row (entropy f = -(log A + 1)
// where A > 0, rms f = A / (n stat)), c_i / H read from alpha (ract_coef_kernel), and every head's
// beta_hi = sum_j P_hij phi_ij; alpha becomes 1. One block per (64 query rows, batch); per key
// tile, H steps sum the head-mean tile, then H more recompute each head's P against phi. beta sums
// in shared memory, each row's by the warp that owns it, in key order: deterministic.
struct PhiArgs {
    float* phi;             // [B, T, T]
    float *alpha, *beta;    // [B, Hq, T]
    const float* stat;      // [B*T, Hq] (rms: the shared statistic)
    RactStat kind;
};

template <int DQK>
__global__ void __launch_bounds__(kThreads) ract_headmean_phi_kernel(Geom g, PhiArgs o) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16* sQ = reinterpret_cast<bf16*>(smem_raw);   // two buffers
    bf16* sK = sQ + 2 * kTile<DQK>;                  // two buffers
    float* sBeta = reinterpret_cast<float*>(sK + 2 * kTile<DQK>);   // [H][kBR]

    const int q_tile = gridDim.x - 1 - blockIdx.x;
    const int b = blockIdx.y, H = g.Hq;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, t = lane % 4;
    const int q0 = q_tile * kBR, wrow = warp * 16;
    const int n_tiles = (min(q0 + kBR, g.T) - 1) / kBC + 1, steps = n_tiles * 2 * H;
    const float inv_h = 1.f / float(H);

    // Step s = (key tile s / 2H, head s % H), the first H of a tile summing A, the next H using phi.
    auto issue = [&](int step, int buf) {
        load_head_pair<DQK>(sQ + buf * kTile<DQK>, sK + buf * kTile<DQK>, g, b, step % H, step % H / (H / g.Hkv), q0,
                            step / (2 * H) * kBC);
    };
    for (int x = threadIdx.x; x < H * kBR; x += kThreads) sBeta[x] = 0.f;
    issue(0, 0);

    int row[2];
    float coef[2], nrms[2];   // c / H, and n stat for rms
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row[r] = q0 + wrow + gq + 8 * r;
        const bool in = row[r] < g.T;
        coef[r] = in ? o.alpha[(size_t(b) * H) * g.T + row[r]] : 0.f;   // head 0's: the same for every head
        nrms[r] = in ? float(row[r] + 1) * o.stat[(size_t(b) * g.T + row[r]) * H] : 0.f;
    }
    float pbar[kBC / 8][4], phi[kBC / 8][4];

    for (int step = 0; step < steps; ++step) {
        const int buf = step & 1, kt = step / (2 * H), h = step % H, k0 = kt * kBC;
        const bool second = step % (2 * H) >= H;
        step_ready(step + 1 < steps, [&] { issue(step + 1, buf ^ 1); });
        if (!second && h == 0) {
#pragma unroll
            for (int nt = 0; nt < kBC / 8; ++nt) pbar[nt][0] = pbar[nt][1] = pbar[nt][2] = pbar[nt][3] = 0.f;
        }
        float p[kBC / 8][4];
        float lse2[2];
        head_lse2(lse2, g, b, h, row);
        head_tile_probs<DQK>(p, g, sQ + buf * kTile<DQK>, sK + buf * kTile<DQK>, q0, wrow, k0, row, lse2, lane);
        float bsum[2] = {0.f, 0.f};
#pragma unroll
        for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                if (second) bsum[e >> 1] += p[nt][e] * phi[nt][e];
                else pbar[nt][e] += p[nt][e] * inv_h;
            }
        if (!second && h == H - 1) {   // the head-mean tile is complete: phi, kept and written
#pragma unroll
            for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int j = k0 + nt * 8 + 2 * t + (e & 1), r = e >> 1;
                    const float A = pbar[nt][e];
                    float f = 0.f;
                    if (o.kind == RactStat::entropy) f = A > 0.f ? -(logf(A) + 1.f) : 0.f;
                    else f = nrms[r] > 0.f ? A / nrms[r] : 0.f;
                    phi[nt][e] = j > row[r] ? 0.f : coef[r] * f;
                    if (row[r] < g.T && j <= row[r]) o.phi[(size_t(b) * g.T + row[r]) * g.T + j] = phi[nt][e];
                }
        }
        if (second) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const float v = quad_sum(bsum[r]);
                if (t == 0) sBeta[h * kBR + wrow + gq + 8 * r] += v;   // this warp's own rows
            }
        }
        __syncthreads();   // this buffer is refilled by the next iteration's prefetch
    }
    for (int x = threadIdx.x; x < H * kBR; x += kThreads) {
        const int h = x / kBR, i = q0 + x % kBR;
        if (i >= g.T) continue;
        const size_t r = (size_t(b) * H + h) * g.T + i;
        o.beta[r] = sBeta[x];
        o.alpha[r] = 1.f;
    }
}

// dq: one block per (64 query rows, batch, query head).
template <int DQK, int PHI>
__global__ void __launch_bounds__(kThreads) ract_dq_kernel(Geom g, BwdArgs a) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
    bf16* sK = sQ + kTile<DQK>;   // two buffers

    const int q_tile = gridDim.x - 1 - blockIdx.x;
    const int bh = blockIdx.y, b = bh / g.Hq, h = bh % g.Hq, hk = h / (g.Hq / g.Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, t = lane % 4;
    const int q0 = q_tile * kBR, wrow = warp * 16;
    const bf16* kg = g.k + size_t(b) * g.T * g.k_stride + size_t(hk) * DQK;
    const int n_tiles = (min(q0 + kBR, g.T) - 1) / kBC + 1;

    attn::load_tile<kBR, DQK, kThreads>(sQ, g.q + size_t(b) * g.T * g.q_stride + size_t(h) * DQK, g.q_stride, q0,
                                        g.T);
    attn::load_tile<kBC, DQK, kThreads>(sK, kg, g.k_stride, 0, g.T);
    attn::cp_async_commit();

    int row[2];
    float lse[2], lse2[2], al[2], be[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row[r] = q0 + wrow + gq + 8 * r;
        const bool in = row[r] < g.T;
        const size_t o = (size_t(b) * g.Hq + h) * g.T + row[r];
        lse[r] = in ? g.lse[o] : 0.f;
        lse2[r] = lse[r] * kLog2e;
        al[r] = in ? a.alpha[o] : 0.f;   // rows past T get dS = 0
        be[r] = in ? a.beta[o] : 0.f;
    }
    float acc[DQK / 8][4];
#pragma unroll
    for (int n = 0; n < DQK / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int kt = 0; kt < n_tiles; ++kt) {
        const int buf = kt & 1;
        if (kt + 1 < n_tiles) {
            attn::load_tile<kBC, DQK, kThreads>(sK + (buf ^ 1) * kTile<DQK>, kg, g.k_stride, (kt + 1) * kBC, g.T);
            attn::cp_async_commit();
            attn::cp_async_wait<1>();
        } else {
            attn::cp_async_wait<0>();
        }
        __syncthreads();
        const int k0 = kt * kBC;
        const bf16* k_s = sK + buf * kTile<DQK>;
        float s[kBC / 8][4];
        const int mode = dot_tile<DQK, false>(s, g, sQ, wrow, k_s, q0 + wrow, k0, lane);
        uint64_t msk[2] = {0, 0};
        if (PHI == kPhiSelected)
#pragma unroll
            for (int r = 0; r < 2; ++r)
                if (row[r] < g.T) msk[r] = sel_mask(a, g.T, b, row[r], h, k0);
#pragma unroll
        for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e >> 1, j = k0 + nt * 8 + 2 * t + (e & 1);
                s[nt][e] = j > row[r] ? 0.f
                                      : dlogit<PHI>(s[nt][e], g, lse[r], lse2[r], al[r], be[r], (msk[r] >> (j - k0)) & 1,
                                                    a, b, row[r], j);
            }
        mma_xb<DQK, false>(acc, s, k_s, g, mode, q0 + wrow, k0, lane);
        __syncthreads();   // this buffer is refilled by the next iteration's prefetch
    }

    add_scaled_rows<DQK>(a.dq + size_t(b) * g.T * g.q_stride + size_t(h) * DQK, g.q_stride, q0 + wrow, acc, g, lane);
}

// Per-query values of a query tile the dk pass reads from shared memory.
struct QRow {
    float lse[kBR], lse2[kBR], alpha[kBR], beta[kBR];
    uint64_t sel[kBR];
};

// dk: one block per (64 key rows, batch, key head); streams (query head of the group, query tile).
template <int DQK, int PHI>
__global__ void __launch_bounds__(kThreads) ract_dk_kernel(Geom g, BwdArgs a) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16* sK = reinterpret_cast<bf16*>(smem_raw);
    bf16* sQ = sK + kTile<DQK>;                                              // two buffers
    QRow* qrow = reinterpret_cast<QRow*>(sQ + 2 * kTile<DQK>);              // two buffers

    const int k_tile = blockIdx.x;   // the longest column (k_tile 0) first
    const int bhk = blockIdx.y, b = bhk / g.Hkv, hk = bhk % g.Hkv, group = g.Hq / g.Hkv;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, t = lane % 4;
    const int k0 = k_tile * kBC, wrow = warp * 16;
    const int n_qt = (g.T + kBR - 1) / kBR, qt0 = k0 / kBR, per_head = n_qt - qt0, steps = group * per_head;

    attn::load_tile<kBC, DQK, kThreads>(sK, g.k + size_t(b) * g.T * g.k_stride + size_t(hk) * DQK, g.k_stride, k0,
                                        g.T);
    // Step s: query head hk group + s / per_head, query tile qt0 + s % per_head.
    auto issue = [&](int step, int buf) {
        const int h = hk * group + step / per_head, q0 = (qt0 + step % per_head) * kBR;
        attn::load_tile<kBR, DQK, kThreads>(sQ + buf * kTile<DQK>,
                                            g.q + size_t(b) * g.T * g.q_stride + size_t(h) * DQK, g.q_stride, q0,
                                            g.T);
        attn::cp_async_commit();
        if (threadIdx.x < kBR) {   // plain stores: visible after the loop's __syncthreads
            QRow& qr = qrow[buf];
            const int il = threadIdx.x, i = q0 + il;
            const bool in = i < g.T;
            const size_t o = (size_t(b) * g.Hq + h) * g.T + i;
            qr.lse[il] = in ? g.lse[o] : 0.f;
            qr.lse2[il] = qr.lse[il] * kLog2e;
            qr.alpha[il] = in ? a.alpha[o] : 0.f;
            qr.beta[il] = in ? a.beta[o] : 0.f;
            qr.sel[il] = (PHI == kPhiSelected && in) ? sel_mask(a, g.T, b, i, h, k0) : 0;
        }
    };
    issue(0, 0);

    float acc[DQK / 8][4];
#pragma unroll
    for (int n = 0; n < DQK / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int step = 0; step < steps; ++step) {
        const int buf = step & 1, q0 = (qt0 + step % per_head) * kBR;
        if (step + 1 < steps) {
            issue(step + 1, buf ^ 1);
            attn::cp_async_wait<1>();
        } else {
            attn::cp_async_wait<0>();
        }
        __syncthreads();
        const bf16* q_s = sQ + buf * kTile<DQK>;
        const QRow& qr = qrow[buf];
        float s[kBC / 8][4];   // rows: the warp's 16 keys; columns: the tile's 64 queries
        const int mode = dot_tile<DQK, true>(s, g, sK, wrow, q_s, k0 + wrow, q0, lane);
#pragma unroll
        for (int nt = 0; nt < kBC / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int j = k0 + wrow + gq + 8 * (e >> 1), il = nt * 8 + 2 * t + (e & 1);
                s[nt][e] = j > q0 + il ? 0.f
                                       : dlogit<PHI>(s[nt][e], g, qr.lse[il], qr.lse2[il], qr.alpha[il], qr.beta[il],
                                                     (qr.sel[il] >> (j - k0)) & 1, a, b, q0 + il, j);
            }
        mma_xb<DQK, true>(acc, s, q_s, g, mode, k0 + wrow, q0, lane);
        __syncthreads();   // this buffer is refilled by the next iteration's prefetch
    }

    add_scaled_rows<DQK>(a.dk + size_t(b) * g.T * g.k_stride + size_t(hk) * DQK, g.k_stride, k0 + wrow, acc, g, lane);
}

template <int DQK, int PHI>
void launch_passes(const Geom& g, const BwdArgs& a, cudaStream_t s) {
    const size_t smem_q = size_t(3) * kTile<DQK> * sizeof(bf16);
    const size_t smem_k = smem_q + 2 * sizeof(QRow);
    allow_smem<ract_dq_kernel<DQK, PHI>>(smem_q);
    allow_smem<ract_dk_kernel<DQK, PHI>>(smem_k);
    const int tiles = (g.T + kBR - 1) / kBR;
    ract_dq_kernel<DQK, PHI><<<dim3(tiles, g.B * g.Hq), kThreads, smem_q, s>>>(g, a);
    GPT_CUDA_LAUNCHED("ract_dq_kernel");
    ract_dk_kernel<DQK, PHI><<<dim3(tiles, g.B * g.Hkv), kThreads, smem_k, s>>>(g, a);
    GPT_CUDA_LAUNCHED("ract_dk_kernel");
}

template <int DQK>
void launch_passes(const Geom& g, const BwdArgs& a, RactStat stat, cudaStream_t s) {
    if (a.phi) launch_passes<DQK, kPhiBuffer>(g, a, s);
    else if (stat == RactStat::entropy) launch_passes<DQK, kPhiLogit>(g, a, s);
    else if (stat == RactStat::rms) launch_passes<DQK, kPhiProb>(g, a, s);
    else launch_passes<DQK, kPhiSelected>(g, a, s);
}

template <int DQK>
void launch_headmean_phi(const Geom& g, const PhiArgs& o, cudaStream_t s) {
    const size_t smem = size_t(4) * kTile<DQK> * sizeof(bf16) + size_t(g.Hq) * kBR * sizeof(float);
    allow_smem<ract_headmean_phi_kernel<DQK>>(smem);
    ract_headmean_phi_kernel<DQK><<<dim3((g.T + kBR - 1) / kBR, g.B), kThreads, smem, s>>>(g, o);
    GPT_CUDA_LAUNCHED("ract_headmean_phi_kernel");
}

}  // namespace
}  // namespace rowstats

namespace variant {

namespace {

// The per-row coefficients (alpha, beta: [B, Hq, T], null when detached) and the scale/bias
// gradients of either form of RA-CT's backward. `scratch` holds ract_coef_floats(N, H) floats.
size_t ract_coef_floats(int N, int H) {
    ScratchPlan sp;
    sp.add(size_t(N) * H), sp.add(size_t(N) * H), sp.add(colsum_scratch(N, H));
    return sp.add(0);
}
void ract_coefficients(const VariantEnv& e, float* alpha, float* beta, Ten dscale, Ten dbias, Ten dgate, Ten stat,
                       Ten gate, Ten scale, const rowstats::Geom& g, const int32_t* sel, const AttnDims& a,
                       const RactDims& d, float* scratch, const char* op) {
    using namespace rowstats;
    const int N = d.B * d.T;
    const size_t nh = size_t(N) * d.H;
    ScratchPlan sp;
    const size_t o_cs = sp.add(nh), o_cb = sp.add(nh), o_part = sp.add(colsum_scratch(N, d.H));
    CoefArgs c{};
    c.dgate = act(e, dgate, nh, op, "dgate");
    c.gate = act(e, gate, nh, op, "gate");
    c.stat = f32(e, stat, nh, op, "stat");
    c.scale = f32(e, scale, d.H, op, "scale");
    c.cs = scratch + o_cs;
    c.cb = scratch + o_cb;
    c.alpha = alpha;
    c.beta = beta;
    c.stat_kind = d.stat;
    c.head_average = d.head_average;
    c.B = d.B, c.T = d.T, c.H = d.H, c.Dqk = a.Dqk;
    c.slots = ract_sel_slots(d);
    c.sel = sel;
    ract_coef_kernel<<<unsigned((N + 127) / 128), 128, 0, e.stream>>>(c, g);
    GPT_CUDA_LAUNCHED("ract_coef_kernel");
    if (float* ds = f32_opt(e, dscale, d.H, op, "dscale")) rows_sum_add(ds, c.cs, N, d.H, scratch + o_part, e.stream);
    if (float* db = f32_opt(e, dbias, d.H, op, "dbias")) rows_sum_add(db, c.cb, N, d.H, scratch + o_part, e.stream);
}

void check_ract(const RactDims& d, const AttnDims& a, const char* op) {
    check_positive(op, {d.B, d.T, d.H});
    GPT_CHECK(d.B == a.B && d.T == a.T && d.H == a.Hq,
              std::string("cuda-bf16 ") + op + ": the RA-CT and attention dims disagree");
    GPT_CHECK(ract_sel_slots(d) <= rowstats::kMaxSel,
              std::string("cuda-bf16 ") + op + ": model.ract.topk above the kernels' running top-8");
}

}  // namespace

void ract_gate_bwd(const VariantEnv& e, Ten dq, Ten dk, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse,
                   Ten stat, Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d) {
    using namespace rowstats;
    const char* op = "ract_gate_bwd";
    check_ract(d, a, op);
    GPT_CHECK(dq.present() == dk.present(), "cuda-bf16 ract_gate_bwd: dq and dk are both present or both absent");
    const bool through = dq.present();
    // Head-mean entropy/rms: phi depends on every head's P, so it is written out first ([B, T, T]).
    const bool phi_buffer = through && d.head_average && (d.stat == RactStat::entropy || d.stat == RactStat::rms);
    const int N = d.B * d.T, slots = ract_sel_slots(d), sel_heads = d.head_average ? 1 : d.H;
    const size_t nh = size_t(N) * d.H;
    ScratchPlan sp;
    const size_t o_coef = sp.add(ract_coef_floats(N, d.H)), o_al = sp.add(through ? nh : 0),
                 o_be = sp.add(through ? nh : 0), o_phi = sp.add(phi_buffer ? size_t(N) * d.T : 0);
    float* scratch = sp.take(e);
    Geom g{};
    if (through) g = make_geom(e, q, k, lse, a, op);
    const int32_t* sp_sel = through && slots > 0 ? index(e, sel, size_t(N) * sel_heads * slots, op, "sel") : nullptr;
    float* alpha = through ? scratch + o_al : nullptr;
    float* beta = through ? scratch + o_be : nullptr;
    ract_coefficients(e, alpha, beta, dscale, dbias, dgate, stat, gate, scale, g, sp_sel, a, d, scratch + o_coef, op);
    if (!through) return;

    BwdArgs ba{};
    if (phi_buffer) {
        const PhiArgs po{scratch + o_phi, alpha, beta, f32(e, stat, nh, op, "stat"), d.stat};
        with_dqk(a.Dqk, [&](auto D) { launch_headmean_phi<decltype(D)::value>(g, po, e.stream); });
        ba.phi = scratch + o_phi;
    }
    ba.alpha = alpha;
    ba.beta = beta;
    ba.sel = sp_sel;
    ba.sel_heads = sel_heads;
    ba.slots = slots;
    ba.dq = act(e, dq, strided_extent(N, a.q_stride, size_t(a.Hq) * a.Dqk), op, "dq");
    ba.dk = act(e, dk, strided_extent(N, a.k_stride, size_t(a.Hkv) * a.Dqk), op, "dk");
    with_dqk(a.Dqk, [&](auto D) { launch_passes<decltype(D)::value>(g, ba, d.stat, e.stream); });
}

void ract_gate_coef(const VariantEnv& e, Ten alpha, Ten beta, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse,
                    Ten stat, Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d) {
    using namespace rowstats;
    const char* op = "ract_gate_coef";
    check_ract(d, a, op);
    GPT_CHECK(d.stat == RactStat::topk || d.stat == RactStat::max,
              "cuda-bf16 ract_gate_coef: only the selection statistics (topk, max) have the split gradient");
    const int N = d.B * d.T, sel_heads = d.head_average ? 1 : d.H;
    const size_t nh = size_t(N) * d.H;
    const Geom g = make_geom(e, q, k, lse, a, op);
    float* scratch = static_cast<float*>(e.scratch(ract_coef_floats(N, d.H) * 4 + 256));
    ract_coefficients(e, f32(e, alpha, nh, op, "alpha"), f32(e, beta, nh, op, "beta"), dscale, dbias, dgate, stat,
                      gate, scale, g, index(e, sel, size_t(N) * sel_heads * ract_sel_slots(d), op, "sel"), a, d,
                      scratch, op);
}

}  // namespace variant
}  // namespace gpt::cuda
