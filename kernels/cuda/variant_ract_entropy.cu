// RA-CT's entropy in the augmented-value form (ops.h ract_entropy_fwd / _bwd; the CPU twin is
// kernels/cpu/variant_ract_entropy.cpp) and the per-head slice copy that builds its values [v, k]
// (ops.h copy_heads). All three are single passes over token rows: eight lanes per (token, head),
// 16-byte vectors where the widths and rows allow (the GPT-2 shapes), one value per lane otherwise.
// dscale, dbias: per-row contributions summed over the rows in a fixed order (rows_sum_add).
#include "cuda/cuda_kernels.cuh"
#include "cuda/variant_ops.cuh"
#include "cuda/vec8.cuh"

namespace gpt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kLanes = 8;   // lanes per (token, head) row

struct EntropyArgs {
    int rows, H, T, Dv, Dqk, q_stride;
    float attn_scale, alpha;
};

// sum_c a[c] b[c] over this lane's part of [0, n): vectors c = 8 sub, 8 sub + 64, ... (VEC), or
// single values c = sub, sub + 8, ...
template <bool VEC>
__device__ __forceinline__ float lane_dot(const bf16* a, const bf16* b, int n, int sub) {
    float s = 0.f;
    if constexpr (VEC) {
        for (int c = 8 * sub; c < n; c += 8 * kLanes) {
            const F8 x = load_bf16x8(a + c), y = load_bf16x8(b + c);
#pragma unroll
            for (int k = 0; k < 8; ++k) s += x.v[k] * y.v[k];
        }
    } else {
        for (int c = sub; c < n; c += kLanes) s += __bfloat162float(a[c]) * __bfloat162float(b[c]);
    }
    return s;
}

// dst[c] = f src[c] over this lane's part of [0, n)
template <bool VEC>
__device__ __forceinline__ void lane_scale(bf16* dst, const bf16* src, float f, int n, int sub) {
    if constexpr (VEC) {
        for (int c = 8 * sub; c < n; c += 8 * kLanes) {
            F8 x = load_bf16x8(src + c);
#pragma unroll
            for (int k = 0; k < 8; ++k) x.v[k] *= f;
            store_bf16x8(dst + c, x);
        }
    } else {
        for (int c = sub; c < n; c += kLanes) dst[c] = __float2bfloat16(f * __bfloat162float(src[c]));
    }
}

// stat = lse - scale q.(P k), gate = sigmoid(stat scale[h] + bias[h]), y = ((1-a) + a gate) (P v).
// The gate is applied as stored (bf16), as head_gate_fwd applies the flash-style form's gate.
template <bool VEC>
__global__ void ract_entropy_fwd_kernel(bf16* y, float* stat, bf16* gate, const bf16* out2, const bf16* q,
                                        const float* lse, const float* scale, const float* bias, EntropyArgs a) {
    const int row = int((size_t(blockIdx.x) * blockDim.x + threadIdx.x) / kLanes), sub = threadIdx.x % kLanes;
    const bool valid = row < a.rows;
    const int n = valid ? row / a.H : 0, h = valid ? row % a.H : 0, W = a.Dv + a.Dqk;
    const bf16* o2 = out2 + size_t(row) * W;
    float mu = valid ? lane_dot<VEC>(o2 + a.Dv, q + size_t(n) * a.q_stride + size_t(h) * a.Dqk, a.Dqk, sub) : 0.f;
    mu = lanes_sum<kLanes>(mu) * a.attn_scale;
    if (!valid) return;
    const int b = n / a.T, t = n % a.T;
    const float st = lse[(size_t(b) * a.H + h) * a.T + t] - mu;
    const bf16 g = __float2bfloat16(1.f / (1.f + __expf(-(st * scale[h] + bias[h]))));
    if (sub == 0) {
        stat[row] = st;
        gate[row] = g;
    }
    lane_scale<VEC>(y + size_t(row) * a.Dv, o2, (1.f - a.alpha) + a.alpha * __bfloat162float(g), a.Dv, sub);
}

// dout2 = [((1-a) + a gate) dy, -c scale q] with c = dL/dstat (0 when detached); per-row
// contributions dz stat and dz (dz = dL/d(stat scale + bias)) to dscale, dbias.
template <bool VEC>
__global__ void ract_entropy_bwd_kernel(bf16* dout2, float* cscale, float* cbias, const bf16* dy, const bf16* out2,
                                        const bf16* q, const float* stat, const bf16* gate, const float* scale,
                                        bool detach, EntropyArgs a) {
    const int row = int((size_t(blockIdx.x) * blockDim.x + threadIdx.x) / kLanes), sub = threadIdx.x % kLanes;
    const bool valid = row < a.rows;
    const int n = valid ? row / a.H : 0, h = valid ? row % a.H : 0, W = a.Dv + a.Dqk;
    const bf16* dyr = dy + size_t(row) * a.Dv;
    float dot = valid ? lane_dot<VEC>(dyr, out2 + size_t(row) * W, a.Dv, sub) : 0.f;
    dot = lanes_sum<kLanes>(dot);
    if (!valid) return;
    const float g = __bfloat162float(gate[row]);
    const float dz = a.alpha * dot * g * (1.f - g);
    if (sub == 0) {
        cscale[row] = dz * stat[row];
        cbias[row] = dz;
    }
    bf16* d2 = dout2 + size_t(row) * W;
    lane_scale<VEC>(d2, dyr, (1.f - a.alpha) + a.alpha * g, a.Dv, sub);
    const float c = detach ? 0.f : dz * scale[h];
    lane_scale<VEC>(d2 + a.Dv, q + size_t(n) * a.q_stride + size_t(h) * a.Dqk, -c * a.attn_scale, a.Dqk, sub);
}

// One thread per (token, head, 8-wide piece) (VEC) or per element.
template <bool VEC>
__global__ void copy_heads_kernel(bf16* dst, const bf16* src, HeadCopyDims d, size_t total) {
    const int per = VEC ? d.width / 8 : d.width;
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
        const int c = int(i % per) * (VEC ? 8 : 1);
        const size_t nh = i / per;
        const int h = int(nh % d.H);
        const size_t n = nh / d.H;
        const bf16* s = src + n * d.src_stride + size_t(h) * d.src_head_stride + c;
        bf16* o = dst + n * d.dst_stride + size_t(h) * d.dst_head_stride + c;
        if constexpr (VEC) *reinterpret_cast<uint4*>(o) = load_raw16(s);
        else *o = *s;
    }
}

EntropyArgs entropy_args(const AttnDims& a, float alpha, const char* op) {
    variant::check_positive(op, {a.B, a.T, a.Hq, a.Dqk, a.Dv});
    GPT_CHECK(a.Hq == a.Hkv && a.band == 0,
              std::string("cuda-bf16 ") + op + ": the augmented-value entropy needs one key head per query head and "
                  "no band");
    return EntropyArgs{a.B * a.T * a.Hq, a.Hq, a.T, a.Dv, a.Dqk, a.q_stride, a.scale, alpha};
}

// 16-byte pieces: widths and row starts multiples of 8 elements, aligned bases.
bool entropy_vec(const EntropyArgs& a, std::initializer_list<const void*> ptrs) {
    return a.Dv % 8 == 0 && a.Dqk % 8 == 0 && a.q_stride % 8 == 0 && all_aligned16(ptrs);
}

unsigned row_blocks(int rows) { return unsigned((size_t(rows) * kLanes + kThreads - 1) / kThreads); }

}  // namespace

namespace variant {

void ract_entropy_fwd(const VariantEnv& e, Ten y, Ten stat, Ten gate, Ten out2, Ten q, Ten lse, Ten scale, Ten bias,
                      float alpha, const AttnDims& ad) {
    const char* op = "ract_entropy_fwd";
    const EntropyArgs a = entropy_args(ad, alpha, op);
    const size_t rows = size_t(a.rows), N = size_t(ad.B) * ad.T;
    bf16* yp = act(e, y, rows * a.Dv, op, "y");
    float* st = f32(e, stat, rows, op, "stat");
    bf16* gt = act(e, gate, rows, op, "gate");
    const bf16* o2 = act(e, out2, rows * (a.Dv + a.Dqk), op, "out2");
    const bf16* qp = act(e, q, strided_extent(N, a.q_stride, a.H * a.Dqk), op, "q");
    const float* ls = f32(e, lse, rows, op, "lse");
    const float* sc = f32(e, scale, a.H, op, "scale");
    const float* bi = f32(e, bias, a.H, op, "bias");
    const unsigned blocks = row_blocks(a.rows);
    if (entropy_vec(a, {yp, o2, qp}))
        ract_entropy_fwd_kernel<true><<<blocks, kThreads, 0, e.stream>>>(yp, st, gt, o2, qp, ls, sc, bi, a);
    else
        ract_entropy_fwd_kernel<false><<<blocks, kThreads, 0, e.stream>>>(yp, st, gt, o2, qp, ls, sc, bi, a);
    GPT_CUDA_LAUNCHED("ract_entropy_fwd_kernel");
}

void ract_entropy_bwd(const VariantEnv& e, Ten dout2, Ten dscale, Ten dbias, Ten dy, Ten out2, Ten q, Ten stat,
                      Ten gate, Ten scale, float alpha, bool detach, const AttnDims& ad) {
    const char* op = "ract_entropy_bwd";
    const EntropyArgs a = entropy_args(ad, alpha, op);
    const size_t rows = size_t(a.rows), N = size_t(ad.B) * ad.T;
    float* ds = f32_opt(e, dscale, a.H, op, "dscale");
    float* db = f32_opt(e, dbias, a.H, op, "dbias");
    ScratchPlan sp;
    const size_t o_s = sp.add(rows), o_b = sp.add(rows), o_part = sp.add(colsum_scratch(int(N), a.H));
    float* scratch = sp.take(e);
    bf16* d2 = act(e, dout2, rows * (a.Dv + a.Dqk), op, "dout2");
    const bf16* dyp = act(e, dy, rows * a.Dv, op, "dy");
    const bf16* o2 = act(e, out2, rows * (a.Dv + a.Dqk), op, "out2");
    const bf16* qp = act(e, q, strided_extent(N, a.q_stride, a.H * a.Dqk), op, "q");
    const float* st = f32(e, stat, rows, op, "stat");
    const bf16* gt = act(e, gate, rows, op, "gate");
    const float* sc = f32(e, scale, a.H, op, "scale");
    if (entropy_vec(a, {d2, dyp, o2, qp})) {
        ract_entropy_bwd_kernel<true><<<row_blocks(a.rows), kThreads, 0, e.stream>>>(
            d2, scratch + o_s, scratch + o_b, dyp, o2, qp, st, gt, sc, detach, a);
        GPT_CUDA_LAUNCHED("ract_entropy_bwd_kernel");
    } else {
        ract_entropy_bwd_kernel<false><<<row_blocks(a.rows), kThreads, 0, e.stream>>>(
            d2, scratch + o_s, scratch + o_b, dyp, o2, qp, st, gt, sc, detach, a);
        GPT_CUDA_LAUNCHED("ract_entropy_bwd_kernel");
    }
    if (ds) rows_sum_add(ds, scratch + o_s, int(N), a.H, scratch + o_part, e.stream);
    if (db) rows_sum_add(db, scratch + o_b, int(N), a.H, scratch + o_part, e.stream);
}

void copy_heads(const VariantEnv& e, Ten dst, Ten src, const HeadCopyDims& d) {
    const char* op = "copy_heads";
    check_positive(op, {d.N, d.H, d.width});
    const size_t dst_row = (d.H - 1) * size_t(d.dst_head_stride) + d.width;
    const size_t src_row = (d.H - 1) * size_t(d.src_head_stride) + d.width;
    bf16* o = act(e, dst, strided_extent(d.N, d.dst_stride, dst_row), op, "dst");
    const bf16* s = act(e, src, strided_extent(d.N, d.src_stride, src_row), op, "src");
    const bool vec = d.width % 8 == 0 && d.dst_stride % 8 == 0 && d.dst_head_stride % 8 == 0 &&
                     d.src_stride % 8 == 0 && d.src_head_stride % 8 == 0 && all_aligned16({o, s});
    const size_t total = size_t(d.N) * d.H * (vec ? d.width / 8 : d.width);
    if (vec) {
        copy_heads_kernel<true><<<elementwise_blocks(total, kThreads), kThreads, 0, e.stream>>>(o, s, d, total);
    } else {
        copy_heads_kernel<false><<<elementwise_blocks(total, kThreads), kThreads, 0, e.stream>>>(o, s, d, total);
    }
    GPT_CUDA_LAUNCHED("copy_heads_kernel");
}

}  // namespace variant
}  // namespace gpt::cuda
