// M2, the cross-token MLP (SPEC §2.6): z = h W_down (F -> r), agg_i = sum_j Â[i,j] z_j with Â the
// head-mean attention of the same block, sparsified to its top-8 entries per row and renormalised
// (the attention unit hands Â over as (idx, wts) in the block link; no gradient through Â), then
// h' = h + alpha_2 (agg W_up) (r -> F), alpha_2 learnable (init 0.3). The addition is the rank-r
// path x = alpha_2 agg, U = W_up, which the MLP applies through c_proj (mlp_low_rank_path.h): h'
// is never formed.
#pragma once
#include "model/mlp_low_rank_path.h"
#include "model/units.h"

namespace gpt {

class M2CrossTokenMix {
public:
    static constexpr int kTopK = 8;
    M2CrossTokenMix(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {}
    void declare(ParamTable& p);
    void plan(ActivationPlan& a, BlockLink& link, int B, int T);
    size_t grad_scratch_elems(int B, int T) const;
    // From h, the path's x = alpha_2 agg (path().x).
    void forward(const StepContext& c, Ten h);
    const LowRankPath& path() const { return path_; }
    // dx: the gradient of x (low_rank_path_bwd's), back to z: returns dz [N,r] (in scratch) after
    // W_down's and alpha_2's gradients; the MLP adds its part of dh, dz W_down, with the other paths.
    Ten backward_to_input(const StepContext& c, Ten h, Ten dx, Ten scratch);
    Ten input_weight() const { return w_down_; }   // W_down [r,F]

private:
    ModelConfig cfg_;
    int layer_;
    BlockLink* link_ = nullptr;
    Ten w_down_, w_up_, alpha_;
    Ten z_, agg_;   // [N,r] each
    LowRankPath path_;   // x = alpha_2 agg [N,r], u = W_up
};

}  // namespace gpt
