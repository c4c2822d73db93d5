// What every attention variant shares (SPEC §2): the causal attention op on the variant's q, k, v,
// then the per-head gates that can be layered on any kind, then the output projection c_proj.
//   y = attention(q, k, v)                [N, H, Dv]
//   y <- RA-CT gate(y)                    (model.ract, SPEC §2.5; statistic of the same attention)
//   y <- M1 gate from block l-1's MLP     (model.m1, consumer side, blocks 1..Ly-1)
//   M2's sparse rows of this attention are handed to this block's MLP (model.m2)
//   out = output(y)                       (c_proj; MLA maps the latent heads first)
// A variant implements how q, k, v are made from the block input, and their backward.
#pragma once
#include <optional>

#include "model/units.h"

namespace gpt {

// The operands of the attention op: views of q, k, v and their shapes.
struct AttentionOperands {
    Ten q, k, v;
    AttnDims d;
};

class AttentionBase : public AttentionUnit {
public:
    AttentionBase(const ModelConfig& cfg, int layer);
    void declare(ParamTable& params) final;
    void plan(ActivationPlan& acts, int B, int T) final;
    size_t grad_scratch_elems(int B, int T) const final;
    void forward(const StepContext& c, Ten in, Ten out) final;
    void backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) final;
    std::string describe() const final;
    double attention_flops_per_token(int T) const final;
    void connect(BlockLink* from_prev, BlockLink* own, const SharedScratch* shared) final;
    Ten output_bias() const final { return b_proj_; }

protected:
    // Parameters declared before c_proj (the input projections) and after it (e.g. RA gates):
    // the order of spec_parameters() (src/train/ablation.cpp).
    virtual void declare_inputs(ParamTable& p) = 0;
    virtual void declare_extras(ParamTable& p) { (void)p; }
    virtual void plan_inputs(ActivationPlan& a, int B, int T) = 0;
    virtual size_t inputs_scratch_elems(int B, int T) const = 0;
    virtual int value_width() const = 0;   // Dv of the attention output heads
    // Compute q, k, v from the block input; then operands() views them.
    virtual void inputs_fwd(const StepContext& c, Ten in) = 0;
    virtual AttentionOperands operands(const StepContext& c) const = 0;
    // Where the gradients of q, k, v go (views of scratch, in the layouts of q, k, v).
    virtual AttentionOperands operand_grads(const StepContext& c, Ten scratch) const = 0;
    // From the gradients in operand_grads(scratch) to din (overwritten) and the parameters.
    virtual void inputs_bwd(const StepContext& c, Ten in, Ten din, Ten scratch) = 0;
    // The attention op on the operands (RA's fold inside the kernel runs its own op instead).
    virtual void attend_fwd(const StepContext& c, Ten out, Ten lse, const AttentionOperands& a) {
        c.ops->attention_fwd(out, lse, a.q, a.k, a.v, a.d);
    }
    // g: where operand_grads() puts the gradients.
    virtual void attend_bwd(const StepContext& c, const AttentionOperands& g, Ten dout, Ten out, Ten lse,
                            const AttentionOperands& a) {
        c.ops->attention_bwd(g.q, g.k, g.v, dout, out, lse, a.q, a.k, a.v, a.d);
    }
    // The output projection: c_proj on y [N, H*Dv] (H*Dv must be E) unless a variant maps first.
    virtual void plan_output(ActivationPlan& a, int B, int T) { (void)a, (void)B, (void)T; }
    virtual size_t output_scratch_elems(int B, int T) const { (void)B, (void)T; return 0; }
    virtual void output_fwd(const StepContext& c, Ten y, Ten out);
    // dy overwritten.
    virtual void output_bwd(const StepContext& c, Ten y, Ten dout, Ten dy, Ten scratch);
    virtual std::string describe_kind() const = 0;

    // The attention op's shapes common to all variants (dropout, seed); variants fill the rest.
    AttnDims base_dims(const StepContext& c) const;

    ModelConfig cfg_;
    int layer_;
    Ten w_proj_, b_proj_;
    BlockLink* prev_ = nullptr;   // the previous block's link (nullptr in block 0)
    BlockLink* own_ = nullptr;    // this block's link

private:
    bool m1_consumer() const { return cfg_.m1 && layer_ >= 1; }
    bool has_gates() const { return cfg_.ract.enabled || m1_consumer(); }
    size_t gate_scratch_elems(int B, int T) const;
    size_t rows_heads_dv(int B, int T) const { return size_t(B) * T * cfg_.n_head * value_width(); }
    // RA-CT entropy from the attention's own output (ops.h ract_entropy_fwd): decided in plan().
    bool entropy_augmented_possible() const;
    AttnDims augmented_dims(const AttnDims& d) const;   // values v' = [v, k]
    void pack_value_key(const StepContext& c, const AttentionOperands& a) const;

    Ten y_, lse_;                              // attention output ([o | P k] when ract_aug_) and log-sum-exp
    bool ract_aug_ = false;                    // RA-CT entropy in the augmented-value form
    Ten vk_;                                   // its values [N, H, Dv + Dqk]
    Ten ract_scale_, ract_bias_, ract_stat_, ract_gate_, ract_sel_, y_ract_;   // RA-CT
    Ten ract_alpha_, ract_beta_;   // RA-CT selection statistics: the split gradient's row coefficients
    Ten m1_alpha_, y_m1_;                      // M1 consumer
};

}  // namespace gpt
