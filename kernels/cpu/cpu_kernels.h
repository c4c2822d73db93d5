// The CPU reference kernels as free functions on raw pointers, templated on the scalar type.
// CpuOps runs them in float; the tests also run them in double, which makes the finite-difference
// gradient checks tight (1e-6) instead of fp32-noisy. Each function is instantiated for float and
// double in its own .cpp file. Absent optional tensors are passed as nullptr.
#pragma once
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "model/ops.h"

namespace gpt::cpu {

constexpr double kLayerNormEps = 1e-5;   // SPEC §1: LayerNorm eps 1e-5 (ops.h passes no eps)

// Inside a parallel region: this thread's contiguous share [begin, end) of n columns. Used where
// rows would collide (parameter-gradient column sums): each thread owns its columns and walks
// every row in order, so the sum is race-free and deterministic.
struct ColumnShare {
    int begin, end;
};
inline ColumnShare this_thread_columns(int n) {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    return {static_cast<int>(n * id / nt), static_cast<int>(n * (id + 1) / nt)};
}

// GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class S>
inline S gelu(S x) {
    const S c = static_cast<S>(0.7978845608028654);   // sqrt(2/pi)
    const S u = c * (x + static_cast<S>(0.044715) * x * x * x);
    return static_cast<S>(0.5) * x * (static_cast<S>(1) + std::tanh(u));
}

// d gelu(x) / dx.
template <class S>
inline S gelu_grad(S x) {
    const S c = static_cast<S>(0.7978845608028654);
    const S a = static_cast<S>(0.044715);
    const S u = c * (x + a * x * x * x);
    const S th = std::tanh(u);
    const S sech2 = static_cast<S>(1) - th * th;
    const S du_dx = c * (static_cast<S>(1) + static_cast<S>(3) * a * x * x);
    return static_cast<S>(0.5) * (static_cast<S>(1) + th) + static_cast<S>(0.5) * x * sech2 * du_dx;
}

// exp() for softmax rows, written so that `#pragma omp simd` loops vectorise it: a call to expf
// stays scalar without -ffast-math, and so does any float comparison or branch (they "could trap"
// under the default -ftrapping-math), hence the integer blends. Cephes' expf: x = n ln2 + r with
// |r| <= ln2/2 (two-part ln2), a degree-6 polynomial for e^r, 2^n from the exponent bits.
// Relative error < 1e-7 on [-87, 88] (tested against std::exp); x <= -88 and -inf give exactly 0,
// so masked logits vanish; x >= 88 saturates at e^88; NaN stays NaN.
inline int32_t blend_bits(int32_t mask, int32_t a, int32_t b) { return (a & mask) | (b & ~mask); }
inline float exp_softmax(float x) {
    const int32_t xi = std::bit_cast<int32_t>(x), mag = xi & 0x7fffffff;
    const int32_t nan = -static_cast<int32_t>(mag > 0x7f800000);
    const int32_t big = -static_cast<int32_t>(mag > std::bit_cast<int32_t>(88.f));
    const int32_t sign = xi & static_cast<int32_t>(0x80000000u);
    const int32_t clamped = blend_bits(big, sign | std::bit_cast<int32_t>(88.f), xi);   // +-88
    const float xc = std::bit_cast<float>(blend_bits(nan, 0, clamped));
    // Adding 1.5 * 2^23 rounds x log2(e) to the integer n, which lands in t's low mantissa bits.
    const float shifter = 12582912.f;
    const float t = xc * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.f;
    // 2^n from the exponent field; n = -127 (x near -88) gives the bit pattern 0, i.e. 0.
    const int32_t n_int = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(shifter);
    const float y = p * std::bit_cast<float>((n_int + 127) << 23);
    return std::bit_cast<float>(blend_bits(nan, xi, std::bit_cast<int32_t>(y)));
}
inline double exp_softmax(double x) { return std::exp(x); }   // the double path stays exact

// elementwise.cpp
template <class S>
void embedding_fwd(S* out, const int32_t* tokens, const S* wte, const S* wpe, int B, int T, int E);
template <class S>
void embedding_bwd(S* dwte, S* dwpe, const S* dout, const int32_t* tokens, int B, int T, int E);
template <class S>
void gelu_fwd(S* out, const S* in, size_t n);
template <class S>
void gelu_bwd(S* din, const S* in, const S* dout, size_t n);   // din may == dout
template <class S>
void add(S* out, const S* a, const S* b, size_t n);
template <class S>
void add_inplace(S* acc, const S* x, size_t n);
template <class S>
void scale(S* x, S s, size_t n);
template <class S>
void mul_inplace(S* x, const S* mask, size_t n);
template <class S>
void dropout(S* x, size_t n, float p, uint64_t seed);

// layernorm.cpp; b/db may be nullptr (no bias); dw/db accumulate, din accumulates.
template <class S>
void layernorm_fwd(S* out, S* mean, S* rstd, const S* in, const S* w, const S* b, int N, int C);
// out_sum = a + b_in, then layernorm_fwd of out_sum: bit-identical to the two calls.
template <class S>
void residual_layernorm_fwd(S* out_sum, S* out, S* mean, S* rstd, const S* a, const S* b_in, const S* w,
                            const S* bias, int N, int C);
template <class S>
void layernorm_bwd(S* din, S* dw, S* db, const S* dout, const S* in, const S* w, const S* mean,
                   const S* rstd, int N, int C, S* dsum = nullptr);   // dsum += colsum(din after the add)

// matmul.cpp; w is [N, K] (out features, in features). bias, gelu_out, din, dw, dbias optional.
template <class S>
void matmul_fwd(S* out, const S* in, const S* w, const S* bias, int M, int K, int N, S* gelu_out);
template <class S>   // out[M,N] += in . w^T (out holds the residual on entry)
void matmul_fwd_add(S* out, const S* in, const S* w, int M, int K, int N);
template <class S>
void matmul_bwd(S* din, S* dw, S* dbias, const S* dout, const S* in, const S* w, int M, int K,
                int N, bool din_add = false);   // din_add: din += dout . w instead of =

// attention.cpp; pointers are the views' starts (q.off etc.), strides in AttnDims. keep_mask, when
// given, replaces the counter-RNG dropout mask: one byte per [B, Hq, T, T] entry, non-zero = kept
// (the GPU test hands it cuDNN's Philox mask, which no counter reproduces).
template <class S>
void attention_fwd(S* out, S* lse, const S* q, const S* k, const S* v, const AttnDims& d,
                   const uint8_t* keep_mask = nullptr);
template <class S>
void attention_bwd(S* dq, S* dk, S* dv, const S* dout, const S* lse, const S* q, const S* k,
                   const S* v, const AttnDims& d, const S* delta_shift = nullptr,   // [B,Hq,T] or null
                   const uint8_t* keep_mask = nullptr);

// classifier.cpp; targets must lie in [0, V) (checked by the caller).
template <class S>
void classifier(S* losses, S* logits, const int32_t* targets, int N, int V, int Vp, S dloss);

// adamw.cpp; one tensor of n elements. vmax is used only with h.amsgrad.
template <class S>
void adamw_update(S* param, const S* grad, S* m, S* v, S* vmax, size_t n, bool decay,
                  const AdamWHyper& h);
template <class S>
double sum_squares(const S* x, size_t n);

}  // namespace gpt::cpu
