// RA discoverability bias as one more folded channel (ops.h disc_channel_fwd/bwd, DiscChannelDims):
// q̃ gains a constant 1 and k̃ the bias g_disc[h] (k.u_h) / scale at column `split`, then `pad` zeros. One warp per
// (token, head) row; du and dg_disc are per-row contributions summed over tokens in a fixed order.
#include <algorithm>

#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// k_r . u_h over the warp (every lane gets it).
__device__ float key_dot_u(const bf16* k, const float* u, const DiscChannelDims& d, int n, int h) {
    const bf16* kr = k + size_t(n) * d.k_stride + size_t(h) * d.D;
    float s = 0.f;
    for (int c = threadIdx.x & 31; c < d.D; c += 32) s += __bfloat162float(kr[c]) * u[size_t(h) * d.D + c];
    return warp_sum(s);
}

__global__ void disc_fwd_kernel(bf16* qo, bf16* ko, const bf16* qt, const bf16* kt, const bf16* k, const float* u,
                                const float* g, DiscChannelDims d) {
    const int r = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (r >= d.N * d.H) return;
    const int n = r / d.H, h = r % d.H, W = d.W, Wo = W + 1 + d.pad, tail = d.split + 1 + d.pad;
    const float bias = g[h] * key_dot_u(k, u, d, n, h);
    const size_t in = size_t(r) * W, out = size_t(r) * Wo;
    for (int c = lane; c < Wo; c += 32) {
        if (c >= d.split && c < tail) {   // the channel, then its zero pad
            qo[out + c] = __float2bfloat16(c == d.split ? 1.f : 0.f);
            ko[out + c] = __float2bfloat16(c == d.split ? bias / d.scale : 0.f);
            continue;
        }
        const int src = c < d.split ? c : c - 1 - d.pad;
        qo[out + c] = qt[in + src];
        ko[out + c] = kt[in + src];
    }
}

// cg [N*H]: dg_disc contributions; cu [N, H*D]: du contributions (null = skip).
__global__ void disc_bwd_kernel(bf16* dqt, bf16* dkt, bf16* dk, float* cg, float* cu, const bf16* gq, const bf16* gk,
                                const bf16* k, const float* u, const float* g, DiscChannelDims d) {
    const int r = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (r >= d.N * d.H) return;
    const int n = r / d.H, h = r % d.H, W = d.W;
    const size_t in = size_t(r) * (W + 1 + d.pad), out = size_t(r) * W;
    for (int c = lane; c < W; c += 32) {   // drop the channel and its pad
        const int src = c < d.split ? c : c + 1 + d.pad;
        if (dqt) dqt[out + c] = gq[in + src];
        if (dkt) dkt[out + c] = gk[in + src];
    }
    const float gb = __bfloat162float(gk[in + d.split]) / d.scale;   // d loss / d bias
    if (cg) {
        const float dot = key_dot_u(k, u, d, n, h);
        if (lane == 0) cg[r] = gb * dot;
    }
    const size_t ko = size_t(n) * d.k_stride + size_t(h) * d.D;
    for (int c = lane; c < d.D; c += 32) {
        if (dk) dk[ko + c] = __float2bfloat16(__bfloat162float(dk[ko + c]) + gb * g[h] * u[size_t(h) * d.D + c]);
        if (cu) cu[size_t(r) * d.D + c] = gb * g[h] * __bfloat162float(k[ko + c]);
    }
}

void check_disc(const DiscChannelDims& d, const char* op) {
    variant::check_positive(op, {d.N, d.H, d.D, d.W});
    GPT_CHECK(d.split >= 0 && d.split <= d.W && d.scale > 0.f && d.k_stride >= d.H * d.D && d.pad >= 0,
              std::string("cuda-bf16 ") + op + ": split must lie in [0, W], scale must be > 0, k_stride must "
                                               "cover the heads and pad must be >= 0");
}

}  // namespace

namespace variant {

void disc_channel_fwd(const VariantEnv& e, Ten qt_out, Ten kt_out, Ten qt, Ten kt, Ten k, Ten u, Ten g_disc,
                      const DiscChannelDims& d) {
    const char* op = "disc_channel_fwd";
    check_disc(d, op);
    const int rows = d.N * d.H;
    const size_t w1 = size_t(rows) * d.out_width(), w = size_t(rows) * d.W;
    disc_fwd_kernel<<<(rows + kWarps - 1) / kWarps, kThreads, 0, e.stream>>>(
        act(e, qt_out, w1, op, "qt_out"), act(e, kt_out, w1, op, "kt_out"), act(e, qt, w, op, "qt"),
        act(e, kt, w, op, "kt"), act(e, k, strided_extent(d.N, d.k_stride, d.H * d.D), op, "k"),
        f32(e, u, size_t(d.H) * d.D, op, "u"), f32(e, g_disc, d.H, op, "g_disc"), d);
    GPT_CUDA_LAUNCHED("disc_fwd_kernel");
}

void disc_channel_bwd(const VariantEnv& e, Ten dqt, Ten dkt, Ten dk, Ten du, Ten dg_disc, Ten dqt_out, Ten dkt_out,
                      Ten k, Ten u, Ten g_disc, const DiscChannelDims& d) {
    const char* op = "disc_channel_bwd";
    check_disc(d, op);
    const int rows = d.N * d.H;
    const size_t w1 = size_t(rows) * d.out_width(), w = size_t(rows) * d.W, HD = size_t(d.H) * d.D;
    float* dg = f32_opt(e, dg_disc, d.H, op, "dg_disc");
    float* duf = f32_opt(e, du, HD, op, "du");
    ScratchPlan sp;
    const size_t o_cg = sp.add(size_t(rows)), o_cu = sp.add(size_t(d.N) * HD),
                 o_part = sp.add(std::max(colsum_scratch(d.N, d.H), colsum_scratch(d.N, int(HD))));
    float* scratch = (dg || duf) ? sp.take(e) : nullptr;
    disc_bwd_kernel<<<(rows + kWarps - 1) / kWarps, kThreads, 0, e.stream>>>(
        act_opt(e, dqt, w, op, "dqt"), act_opt(e, dkt, w, op, "dkt"),
        act_opt(e, dk, strided_extent(d.N, d.k_stride, HD), op, "dk"), dg ? scratch + o_cg : nullptr,
        duf ? scratch + o_cu : nullptr, act(e, dqt_out, w1, op, "dqt_out"), act(e, dkt_out, w1, op, "dkt_out"),
        act(e, k, strided_extent(d.N, d.k_stride, HD), op, "k"), f32(e, u, HD, op, "u"),
        f32(e, g_disc, d.H, op, "g_disc"), d);
    GPT_CUDA_LAUNCHED("disc_bwd_kernel");
    if (dg) rows_sum_add(dg, scratch + o_cg, d.N, d.H, scratch + o_part, e.stream);
    if (duf) rows_sum_add(duf, scratch + o_cu, d.N, int(HD), scratch + o_part, e.stream);
}

}  // namespace variant
}  // namespace gpt::cuda
