// M2, the cross-token MLP (SPEC §2.6): z = h W_down (F -> r), agg_i = sum_j Â[i,j] z_j with Â the
// head-mean attention of the same block, sparsified to its top-8 entries per row and renormalised
// (the attention unit hands Â over as (idx, wts) in the block link; no gradient through Â), then
// h' = h + alpha_2 (agg W_up) (r -> F), alpha_2 learnable (init 0.3). Computed as
// h' = h + (alpha_2 agg) W_up by one GEMM that reads h as its beta term: the [N,F] product is never
// stored, and the backward needs no pass over [N,F] of its own (alpha_2's gradient is a dot over
// [N,r]).
#pragma once
#include "model/units.h"

namespace gpt {

class M2CrossTokenMix {
public:
    static constexpr int kTopK = 8;
    M2CrossTokenMix(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {}
    void declare(ParamTable& p);
    void plan(ActivationPlan& a, BlockLink& link, int B, int T);
    size_t grad_scratch_elems(int B, int T) const;
    // Returns h' (the planned activation output()).
    Ten forward(const StepContext& c, Ten h);
    Ten output() const { return h2_; }
    // dh' in, overwritten in place with dh (the identity path plus the path through z).
    void backward(const StepContext& c, Ten h, Ten dh, Ten scratch);

private:
    ModelConfig cfg_;
    int layer_;
    BlockLink* link_ = nullptr;
    Ten w_down_, w_up_, alpha_;
    Ten z_, agg_, agg_scaled_, h2_;   // [N,r], [N,r], alpha_2 agg [N,r], h' [N,F]
};

}  // namespace gpt
