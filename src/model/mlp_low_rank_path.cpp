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

void low_rank_path_bwd(const StepContext& c, Ten dx, Ten dout, const LowRankPath& p, Ten w_proj, int E, int F) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T;
    // dx = dout P: matmul_bwd's input gradient with w = P (no weight gradient asked for).
    ops.matmul_bwd(dx, {}, {}, dout, p.x, p.proj_u, N, p.r, E);
    // G = dout^T x: a weight-gradient product (accumulating) into zeroed g.
    ops.zero(p.g);
    ops.matmul_bwd({}, p.g, {}, dout, p.x, p.proj_u, N, p.r, E);
    // dW_proj += G U^T, added onto the gradient by the GEMM; dU += W_proj^T G, a weight-gradient
    // product over the E rows of W_proj.
    ops.matmul_fwd_add(w_proj.as(Space::Grad), p.g, p.u, w_proj.as(Space::Grad), E, p.r, F);
    ops.matmul_bwd({}, p.u.as(Space::Grad), {}, w_proj, p.g, p.u, E, p.r, F);
}

}  // namespace gpt
