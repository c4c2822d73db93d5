// Standard causal multi-head attention (SPEC §1, §2.1): c_attn [E->3E], flash attention on the
// packed q|k|v rows, c_proj [E->E]; dropout on the probabilities inside the attention op.
#pragma once
#include "model/units.h"

namespace gpt {

class BaselineAttention final : public AttentionUnit {
public:
    BaselineAttention(const ModelConfig& cfg, int layer);
    void declare(ParamTable& params) override;
    void plan(ActivationPlan& acts, int B, int T) override;
    size_t grad_scratch_elems(int B, int T) const override;
    void forward(const StepContext& c, Ten in, Ten out) override;
    void backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) override;
    std::string describe() const override;

private:
    AttnDims dims(const StepContext& c) const;
    ModelConfig cfg_;
    int layer_;
    Ten w_attn_, b_attn_, w_proj_, b_proj_;   // parameters
    Ten qkv_, y_, lse_;                       // saved activations
};

}  // namespace gpt
