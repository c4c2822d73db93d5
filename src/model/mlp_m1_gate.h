// M1, the MLP -> attention gate (SPEC §2.6), producer side: block l's MLP hidden h (after GELU,
// before any in-block addition) gives gate[i,h] = sigmoid(W_2 GELU(W_1 h_i) + b_2), written into
// the block link for block l+1's attention (AttentionBase applies it, scaled by its m1_alpha).
// Only blocks 0..Ly-2 produce; the gate is per token, so it stays causal.
#pragma once
#include "model/units.h"

namespace gpt {

class M1GateProducer {
public:
    static constexpr int kHidden = 64;   // W_1: F -> 64
    M1GateProducer(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {}
    void declare(ParamTable& p);
    void plan(ActivationPlan& a, BlockLink& link, int B, int T);
    size_t grad_scratch_elems(int B, int T) const;
    void forward(const StepContext& c, Ten h);
    // The gradient through the gate (the link's d_m1_gate, written by block l+1's backward) back to
    // W_1 h: returns d(W_1 h) [N,64] (in scratch) after W_1's, W_2's and b_2's gradients; the MLP
    // adds its part of dh, d(W_1 h) W_1, with the other paths of h.
    Ten backward_to_input(const StepContext& c, Ten h, Ten scratch);
    Ten input_weight() const { return w1_; }   // W_1 [64,F]

private:
    ModelConfig cfg_;
    int layer_;
    BlockLink* link_ = nullptr;
    Ten w1_, w2_, b2_;
    Ten pre_, act_;   // W_1 h and its GELU, [N, 64]
};

}  // namespace gpt
