// Reciprocal attention (SPEC §2.2), exact and same-FLOP low-rank, through the fold: the packed
// c_attn rows give q, k, v; ra_fold_fwd (or ra_lowrank_fwd) writes q̃, k̃ so that ordinary causal
// attention on them computes (g_std S + g_rec band_W R) / sqrt(D); the backward folds the
// gradients back onto q, k and the gates. Gates per head or per layer (model.ra.gates), learnable
// parameters or fixed constants (model.ra.learnable). model.ra.discoverability adds the per-key
// bias g_disc[h] (k_j.u_h) as one more channel of q̃, k̃ (disc_channel_fwd), before the band split.
// Same-FLOP RA in the weights form (model.ra.lowrank_form) folds c_attn's weights instead of the
// q, k rows (ra_lowrank_weights_fwd): c_attn then writes [q̃ | k̃ | v] and the attention reads them
// in place, as the baseline's does.
#pragma once
#include "model/attention_baseline.h"

namespace gpt {

// Whether cfg's same-FLOP RA runs in the weights form (model.ra.lowrank_form; auto: yes unless the
// discoverability bias needs the real keys).
bool ra_lowrank_weights_form(const ModelConfig& cfg);
// Why cfg cannot fold inside the attention kernel (nullptr: it can): not exact RA, something else
// reads q̃, k̃ (RA-CT, M2, the discoverability channel), or cuDNN runs the attention.
const char* ra_fold_in_kernel_blocker(const ModelConfig& cfg);
// Whether cfg's exact RA folds inside the attention kernel (model.ra.fold; auto: when nothing blocks
// it and our kernels run the attention, model.attention_impl = ours).
bool ra_fold_in_kernel(const ModelConfig& cfg);

class RaAttention final : public AttentionBase {
public:
    RaAttention(const ModelConfig& cfg, int layer);   // attention = ra or ra_lowrank

protected:
    void declare_inputs(ParamTable& p) override;
    void declare_extras(ParamTable& p) override;
    void plan_inputs(ActivationPlan& a, int B, int T) override;
    size_t inputs_scratch_elems(int B, int T) const override;
    int value_width() const override { return cfg_.head_dim(); }
    void inputs_fwd(const StepContext& c, Ten in) override;
    AttentionOperands operands(const StepContext& c) const override;
    AttentionOperands operand_grads(const StepContext& c, Ten scratch) const override;
    void inputs_bwd(const StepContext& c, Ten in, Ten din, Ten scratch) override;
    void attend_fwd(const StepContext& c, Ten out, Ten lse, const AttentionOperands& a) override;
    void attend_bwd(const StepContext& c, const AttentionOperands& g, Ten dout, Ten out, Ten lse,
                    const AttentionOperands& a) override;
    std::string describe_kind() const override;

private:
    RaLowRankDims weights_dims() const;   // the weights form's fold over c_attn's n_embd columns
    int folded_width() const { return lowrank_ ? cfg_.head_dim() : 2 * cfg_.head_dim(); }   // before disc
    int split() const { return lowrank_ ? cfg_.head_dim() - cfg_.ra.rank : cfg_.head_dim(); }   // band_split
    // The bias channel is followed by zeros up to a multiple of 16 (the GPU kernels' widths).
    int disc_pad() const { return disc_ ? (16 - (folded_width() + 1) % 16) % 16 : 0; }
    int operand_width() const { return folded_width() + (disc_ ? 1 + disc_pad() : 0); }       // Dqk
    DiscChannelDims disc_dims(const StepContext& c) const;
    int n_gates() const { return cfg_.ra.gates == GateScope::per_head ? cfg_.n_head : 1; }
    RaFoldDims fold_dims(const StepContext& c) const;
    RaLowRankDims lowrank_dims(const StepContext& c) const;
    AttentionOperands folded(Ten qt, Ten kt, Ten v, const StepContext& c) const;
    AttentionOperands in_kernel_operands(Ten packed, const StepContext& c) const;   // q, k, v of packed rows
    struct FoldGrads {
        Ten dqt, dkt, dqd, dkd;   // gradients of q̃, k̃ and (disc) of the widened operands
    };
    FoldGrads fold_grads(const StepContext& c, Ten scratch) const;

    bool lowrank_, disc_;
    bool weights_form_;               // same-FLOP RA folded on c_attn's weights (no q̃, k̃ buffers)
    bool in_kernel_;                  // exact RA folded inside the attention kernel (no q̃, k̃ buffers)
    PackedQkv packed_;
    Ten g_std_, g_rec_, w_lowrank_;   // parameters (gates absent when fixed)
    Ten disc_u_, g_disc_;             // discoverability bias (model.ra.discoverability)
    Ten qt_, kt_;                     // folded q̃, k̃ [B*T, H, folded width]
    Ten qd_, kd_;                     // with the discoverability channel [B*T, H, operand_width()]
    Ten w_eff_, b_eff_;               // weights form: c_attn's folded weight [3E, E], bias [3E] (Act)
    Ten dw_eff_, db_eff_;             // and their gradients (Stat, fp32)
};

}  // namespace gpt
