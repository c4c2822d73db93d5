#include "model/mlp_low_rank_path.h"

namespace gpt {

void plan_low_rank_path(ActivationPlan& a, LowRankPath& p, int E, int r, const std::string& pre) {
    p.r = r;
    p.proj_u = a.add(Space::Act, size_t(E) * r, "mlp", pre + "proj_u");
    p.g = a.add(Space::Act, size_t(E) * r, "mlp", pre + "dout_x");
}

void low_rank_path_fwd(const StepContext& c, Ten out, const LowRankPath& p, Ten w_proj, int E, int F) {
    Ops& ops = *c.ops;
    // P = W_proj U: matmul_bwd's input-gradient product (dout . w, with W_proj [E,F] as dout and U
    // [F,r] as w); its "in" is read only for a weight gradient, which is not asked for.
    ops.matmul_bwd(p.proj_u, {}, {}, w_proj, p.proj_u, p.u, E, p.r, F);
    ops.matmul_fwd_add(out, p.x, p.proj_u, out, c.B * c.T, p.r, E);
}

void low_rank_path_bwd(const StepContext& c, Ten dx, Ten dout, Ten dh, const LowRankPath& p, Ten w_proj, int E,
                       int F) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T;
    // dx = dout P; dU += dh^T x (one matmul_bwd: din with w = P, and the weight gradient of U needs
    // dh, not dout, so it is the second call).
    ops.matmul_bwd(dx, {}, {}, dout, p.x, p.proj_u, N, p.r, E);
    ops.matmul_bwd({}, p.u.as(Space::Grad), {}, dh, p.x, p.u, N, p.r, F);
    // dW_proj += (dout^T x) U^T: g = dout^T x as a weight-gradient product into zeroed g, then g U^T
    // added onto the gradient by the GEMM.
    ops.zero(p.g);
    ops.matmul_bwd({}, p.g, {}, dout, p.x, p.proj_u, N, p.r, E);
    ops.matmul_fwd_add(w_proj.as(Space::Grad), p.g, p.u, w_proj.as(Space::Grad), E, p.r, F);
}

}  // namespace gpt
