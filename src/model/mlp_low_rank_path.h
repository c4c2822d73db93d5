// A rank-r addition onto the MLP hidden, h' = h + x U^T (x [N,r], U [F,r]: M2's alpha_2 agg and
// W_up, M3's alpha_3 k_lat and C), applied through c_proj instead of to h itself:
//   c_proj(h') = h W_proj^T + b + x (W_proj U)^T,
// so h' [N,F] is never formed. The forward adds x P^T onto c_proj's output with P = W_proj U [E,r]
// (formed by every forward from the weights: E x F x r, small); the backward, with
// G = dout^T x [E,r], gives
//   dx = dout P                       ([N,E] . [E,r], instead of dh' U over F),
//   dW_proj += G U^T                  (the part of dout^T h' that h does not give),
//   dU += W_proj^T G                  (= dh'^T x with dh' = dout W_proj, without a pass over [N,F]).
// Every product over the N tokens reads [N,E] or [N,r] rows only. P and G are bf16 GEMM operands
// (one rounding each).
#pragma once
#include "model/units.h"

namespace gpt {

struct LowRankPath {
    Ten x;        // [N,r] Act: what multiplies U^T
    Ten u;        // [F,r] Param
    Ten proj_u;   // [E,r] Act: W_proj U, formed by the forward, read by the backward
    Ten g;        // [E,r] Act: dout^T x, backward scratch
    int r = 0;
};

// Plans proj_u and g ("mlp" activations named pre + "proj_u" / "dout_x").
void plan_low_rank_path(ActivationPlan& a, LowRankPath& p, int E, int r, const std::string& pre);

// out [N,E] (c_proj's output of h) += x (W_proj U)^T.
void low_rank_path_fwd(const StepContext& c, Ten out, const LowRankPath& p, Ten w_proj, int E, int F);

// dx = dout P (overwritten); W_proj's and U's gradients accumulated as above.
void low_rank_path_bwd(const StepContext& c, Ten dx, Ten dout, const LowRankPath& p, Ten w_proj, int E, int F);

}  // namespace gpt
