// Per-head output gating shared by RA-CT (SPEC §2.5) and M1 (SPEC §2.6):
//   out[n,h,:] = ((1 - alpha) + alpha * gate[n,h]) * ctx[n,h,:]
// alpha = 1 is RA-CT's "output" mode (ctx <- g ctx), alpha = 0.2 its "weights" mode, alpha = alpha_1
// (learnable) is M1's consumer. ctx, out [N,H,Dv] (the attention output, before c_proj); gate [N,H].
// Gradients accumulate (+=); nullptr skips (dalpha for a fixed alpha).
#pragma once

namespace gpt::ref {

template <class S>
void head_gate_fwd(S* out, const S* ctx, const S* gate, S alpha, int N, int H, int Dv);
template <class S>
void head_gate_bwd(S* dctx, S* dgate, S* dalpha, const S* dout, const S* ctx, const S* gate, S alpha,
                   int N, int H, int Dv);

}  // namespace gpt::ref
