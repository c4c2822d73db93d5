// Standard causal multi-head attention (SPEC §1, §2.1): c_attn [E->3E], flash attention on the
// packed q|k|v rows, c_proj [E->E]; dropout on the probabilities inside the attention op.
#pragma once
#include "model/attention_base.h"

namespace gpt {

// The packed c_attn projection shared by the kinds that start from q|k|v rows (baseline, RA).
struct PackedQkv {
    Ten w, b, qkv;   // c_attn weight [3E, E] and bias, the activation [B*T, 3E]
    void declare(ParamTable& p, const ModelConfig& cfg, int layer);
    void plan(ActivationPlan& a, const ModelConfig& cfg, int layer, int B, int T);
    void forward(const StepContext& c, const ModelConfig& cfg, Ten in) const;
    // din overwritten from dqkv [B*T, 3E]; bias_grad = false when the caller has already added the
    // bias gradient (RA's fold backward takes it while it writes dq, dk).
    void backward(const StepContext& c, const ModelConfig& cfg, Ten in, Ten dqkv, Ten din, bool bias_grad = true) const;
    // Views of q, k, v (which = 0, 1, 2) inside a [B*T, 3E] buffer (qkv or its gradient).
    static Ten part(Ten packed, int which, const ModelConfig& cfg, const StepContext& c);
    // The baseline operands on such a buffer: H heads of D, strides 3E, scale 1/sqrt(D).
    static AttentionOperands operands(Ten packed, const ModelConfig& cfg, const StepContext& c, AttnDims d);
};

class BaselineAttention final : public AttentionBase {
public:
    BaselineAttention(const ModelConfig& cfg, int layer);

protected:
    void declare_inputs(ParamTable& p) override;
    void plan_inputs(ActivationPlan& a, int B, int T) override;
    size_t inputs_scratch_elems(int B, int T) const override;
    int value_width() const override { return cfg_.head_dim(); }
    void inputs_fwd(const StepContext& c, Ten in) override;
    AttentionOperands operands(const StepContext& c) const override;
    AttentionOperands operand_grads(const StepContext& c, Ten scratch) const override;
    void inputs_bwd(const StepContext& c, Ten in, Ten din, Ten scratch) override;
    std::string describe_kind() const override;

private:
    PackedQkv packed_;
};

}  // namespace gpt
