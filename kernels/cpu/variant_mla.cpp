// Per-head small matmuls of MLA (see variant_mla.h).
#include "cpu/variant_mla.h"

#include <cstddef>

#include "common/error.h"

namespace gpt::ref {
namespace {
void check_head_map(const HeadMapDims& d) {
    GPT_CHECK(d.N > 0 && d.H > 0 && d.Din > 0 && d.Dout > 0, "head_map: N, H, Din, Dout must be > 0");
    GPT_CHECK(d.Hin == d.H || d.Hin == 1, "head_map: Hin must be H or 1 (shared input head)");
    GPT_CHECK(d.Hm == d.H || d.Hm == 1, "head_map: Hm must be H (per-head maps) or 1 (mla.shared_maps)");
    GPT_CHECK(d.in_stride >= d.Hin * d.Din, "head_map: in_stride must cover all input heads");
}
}  // namespace

template <class S>
void head_map_fwd(S* out, const S* in, const S* M, const HeadMapDims& d) {
    check_head_map(d);
    for (int n = 0; n < d.N; ++n)
        for (int h = 0; h < d.H; ++h) {
            const S* x = in + size_t(n) * d.in_stride + size_t(d.Hin == 1 ? 0 : h) * d.Din;
            const S* m = M + size_t(d.Hm == 1 ? 0 : h) * d.Din * d.Dout;
            S* y = out + (size_t(n) * d.H + h) * d.Dout;
            for (int o = 0; o < d.Dout; ++o) y[o] = 0;
            for (int c = 0; c < d.Din; ++c)
                for (int o = 0; o < d.Dout; ++o) y[o] += x[c] * m[size_t(c) * d.Dout + o];
        }
}

template <class S>
void head_map_bwd(S* din, S* dM, const S* dout, const S* in, const S* M, const HeadMapDims& d) {
    check_head_map(d);
    for (int n = 0; n < d.N; ++n)
        for (int h = 0; h < d.H; ++h) {
            const size_t xo = size_t(n) * d.in_stride + size_t(d.Hin == 1 ? 0 : h) * d.Din;
            const size_t mo = size_t(d.Hm == 1 ? 0 : h) * d.Din * d.Dout;
            const S* gy = dout + (size_t(n) * d.H + h) * d.Dout;
            for (int c = 0; c < d.Din; ++c)
                for (int o = 0; o < d.Dout; ++o) {
                    if (din) din[xo + c] += gy[o] * M[mo + size_t(c) * d.Dout + o];
                    if (dM) dM[mo + size_t(c) * d.Dout + o] += in[xo + c] * gy[o];
                }
        }
}

template void head_map_fwd<float>(float*, const float*, const float*, const HeadMapDims&);
template void head_map_fwd<double>(double*, const double*, const double*, const HeadMapDims&);
template void head_map_bwd<float>(float*, float*, const float*, const float*, const float*, const HeadMapDims&);
template void head_map_bwd<double>(double*, double*, const double*, const double*, const double*,
                                   const HeadMapDims&);

}  // namespace gpt::ref
