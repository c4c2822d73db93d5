#include "cpu/variant_ract_entropy.h"

#include <cmath>
#include <cstddef>

#include "cpu/ref_dot.h"

namespace gpt::ref {

template <class S>
void ract_entropy_fwd(S* y, S* stat, S* gate, const S* out2, const S* q, const S* lse, const S* scale,
                      const S* bias, const EntropyDims& d) {
    const int W = d.Dv + d.Dqk;
    for (int b = 0; b < d.B; ++b)
        for (int t = 0; t < d.T; ++t)
            for (int h = 0; h < d.H; ++h) {
                const size_t n = size_t(b) * d.T + t, o = n * d.H + h;
                const S* o2 = out2 + o * W;
                const S mu = S(d.attn_scale) * dot(q + n * d.q_stride + size_t(h) * d.Dqk, o2 + d.Dv, d.Dqk);
                stat[o] = lse[(size_t(b) * d.H + h) * d.T + t] - mu;
                gate[o] = S(1) / (S(1) + std::exp(-(stat[o] * scale[h] + bias[h])));
                const S f = (S(1) - S(d.alpha)) + S(d.alpha) * gate[o];
                for (int c = 0; c < d.Dv; ++c) y[o * d.Dv + c] = f * o2[c];
            }
}

template <class S>
void ract_entropy_bwd(S* dout2, S* dscale, S* dbias, const S* dy, const S* out2, const S* q, const S* stat,
                      const S* gate, const S* scale, bool detach, const EntropyDims& d) {
    const int W = d.Dv + d.Dqk;
    for (int b = 0; b < d.B; ++b)
        for (int t = 0; t < d.T; ++t)
            for (int h = 0; h < d.H; ++h) {
                const size_t n = size_t(b) * d.T + t, o = n * d.H + h;
                const S* dyr = dy + o * d.Dv;
                const S g = gate[o], f = (S(1) - S(d.alpha)) + S(d.alpha) * g;
                const S dgate = S(d.alpha) * dot(dyr, out2 + o * W, d.Dv);
                const S dz = dgate * g * (S(1) - g);   // through the sigmoid
                if (dscale) dscale[h] += dz * stat[o];
                if (dbias) dbias[h] += dz;
                const S c = detach ? S(0) : dz * scale[h];   // dL/dstat
                S* d2 = dout2 + o * W;
                for (int e = 0; e < d.Dv; ++e) d2[e] = f * dyr[e];
                const S* qr = q + n * d.q_stride + size_t(h) * d.Dqk;
                for (int e = 0; e < d.Dqk; ++e) d2[d.Dv + e] = -c * S(d.attn_scale) * qr[e];
            }
}

#define GPT_INSTANTIATE(S)                                                                                    \
    template void ract_entropy_fwd<S>(S*, S*, S*, const S*, const S*, const S*, const S*, const S*,         \
                                      const EntropyDims&);                                                  \
    template void ract_entropy_bwd<S>(S*, S*, S*, const S*, const S*, const S*, const S*, const S*, const S*, \
                                      bool, const EntropyDims&);
GPT_INSTANTIATE(float)
GPT_INSTANTIATE(double)
#undef GPT_INSTANTIATE

}  // namespace gpt::ref
