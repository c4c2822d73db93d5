// Per-head output gating (see variant_head_gate.h).
#include "cpu/variant_head_gate.h"

#include <cstddef>

namespace gpt::ref {

template <class S>
void head_gate_fwd(S* out, const S* ctx, const S* gate, S alpha, int N, int H, int Dv) {
    for (size_t r = 0; r < size_t(N) * H; ++r) {
        const S f = (S(1) - alpha) + alpha * gate[r];
        for (int c = 0; c < Dv; ++c) out[r * Dv + c] = f * ctx[r * Dv + c];
    }
}

template <class S>
void head_gate_bwd(S* dctx, S* dgate, S* dalpha, const S* dout, const S* ctx, const S* gate, S alpha,
                   int N, int H, int Dv) {
    for (size_t r = 0; r < size_t(N) * H; ++r) {
        const S f = (S(1) - alpha) + alpha * gate[r];
        S df = 0;  // d loss / d factor
        for (int c = 0; c < Dv; ++c) {
            df += dout[r * Dv + c] * ctx[r * Dv + c];
            if (dctx) dctx[r * Dv + c] += f * dout[r * Dv + c];
        }
        if (dgate) dgate[r] += alpha * df;
        if (dalpha) *dalpha += (gate[r] - S(1)) * df;
    }
}

template void head_gate_fwd<float>(float*, const float*, const float*, float, int, int, int);
template void head_gate_fwd<double>(double*, const double*, const double*, double, int, int, int);
template void head_gate_bwd<float>(float*, float*, float*, const float*, const float*, const float*, float,
                                   int, int, int);
template void head_gate_bwd<double>(double*, double*, double*, const double*, const double*, const double*,
                                    double, int, int, int);

}  // namespace gpt::ref
