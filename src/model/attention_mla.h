// Multi-head latent attention (SPEC §2.3) and its reciprocal form RA+MLA (SPEC §2.4).
//   Q = h W_q [N,E], k_lat = h W_kd [N,L], v_lat = h W_vd [N,L]; per head P_h [D,L], U_h [L,D]
//   logit_h[i,j] = (Q_i,h P_h) . k_lat_j / sqrt(L)      ctx_h = A_h (v_lat U_h)
// RA+MLA adds alpha band_W(i,j) (Q_j,h P_h) . k_lat_i inside the logit (alpha learnable per layer).
// Two exactly equivalent ways to compute it (model.mla.form; docs/variants.md):
//   latent:   q_lat_h = Q_h P_h [N,H,L]; MLA = multi-query attention (one K/V head of width L) on
//             k_lat, v_lat, U_h applied after it; RA+MLA = the fold of (q_lat, k_lat) (Dqk = 2L).
//   expanded: k_h = k_lat P_h^T and v_h = v_lat U_h [N,H,D] (one GEMM each), because
//             (Q_h P_h) . k_lat = Q_h . (k_lat P_h^T); then ordinary attention on (Q_h, k_h, v_h)
//             with Dqk = Dv = D (RA+MLA: the RA fold of (Q, k), Dqk = 2D), scale 1/sqrt(L).
// The expanded form costs H(D+D) attention MACs per token pair against H(L+L): cheaper when D < L.
// Parameters, their layout and init are the same in both forms (checkpoints are interchangeable).
// model.mla.shared_maps: one P [D,L] and one U [L,D] shared by all heads instead of one per head
// (docs/variants.md explains why the heads keep their own D-dim slice of Q); the expanded form
// then has one K/V head (multi-query) for MLA.
// model.m3: k_lat is handed to this block's MLP, and k_lat += alpha_3' (h C) of the previous one.
#pragma once
#include "model/attention_base.h"

namespace gpt {

// Whether cfg's MLA block runs in the expanded form (model.mla.form; auto: fewer FLOPs per token
// at T = block_size, the latent form on a tie).
bool mla_expanded(const ModelConfig& cfg);
// Training FLOPs per token of one MLA block's form-dependent work (the per-head maps and the
// attention op, forward + backward) at sequence length T, for either form.
double mla_form_flops_per_token(const ModelConfig& cfg, bool expanded, int T);

class MlaAttention final : public AttentionBase {
public:
    MlaAttention(const ModelConfig& cfg, int layer);   // attention = mla or ra_mla

protected:
    void declare_inputs(ParamTable& p) override;
    void plan_inputs(ActivationPlan& a, int B, int T) override;
    size_t inputs_scratch_elems(int B, int T) const override;
    int value_width() const override { return latent_output_map() ? cfg_.mla.latent : cfg_.head_dim(); }
    void inputs_fwd(const StepContext& c, Ten in) override;
    AttentionOperands operands(const StepContext& c) const override;
    AttentionOperands operand_grads(const StepContext& c, Ten scratch) const override;
    void inputs_bwd(const StepContext& c, Ten in, Ten din, Ten scratch) override;
    void plan_output(ActivationPlan& a, int B, int T) override;
    size_t output_scratch_elems(int B, int T) const override;
    void output_fwd(const StepContext& c, Ten y, Ten out) override;
    void output_bwd(const StepContext& c, Ten y, Ten dout, Ten dy, Ten scratch) override;
    std::string describe_kind() const override;

private:
    // Gradient buffers inside the backward scratch (each N rows of the activation's width).
    struct Grads {
        Ten dQ, dk_lat, dv_lat;
        Ten dq_lat;     // latent form
        Ten dkh;        // expanded form
        Ten dvh;        // per-head values (RA+MLA, expanded MLA)
        Ten dqt, dkt;   // RA+MLA fold
        size_t end = 0;
    };
    Grads grads(int B, int T, Ten scratch) const;
    int maps() const { return cfg_.mla.shared_maps ? 1 : cfg_.n_head; }
    // Width of the attention's query/key heads before the fold: L (latent) or D (expanded).
    int qk_width() const { return expanded_ ? cfg_.head_dim() : cfg_.mla.latent; }
    // K/V heads of plain MLA: one shared latent head (latent), or one per map (expanded).
    int kv_heads() const { return expanded_ ? maps() : 1; }
    // Heads of v_h = v_lat U_h: H for RA+MLA (the fold gives every query head its own keys),
    // one per map for expanded MLA; 0 where there is none (latent MLA maps after the attention).
    int value_heads() const { return reciprocal_ ? cfg_.n_head : expanded_ ? maps() : 0; }
    bool latent_output_map() const { return !reciprocal_ && !expanded_; }   // ctx = o U after attention
    HeadMapDims query_map(const StepContext& c) const;    // latent: Q -> q_lat
    HeadMapDims value_map(const StepContext& c) const;    // v_lat -> v_h
    HeadMapDims output_map(const StepContext& c) const;   // latent MLA: o -> ctx
    RaFoldDims fold_dims(const StepContext& c) const;
    AttentionOperands attention_on(Ten q, Ten k, Ten v, const StepContext& c) const;
    bool m3_input() const;   // M3: the previous block hands over alpha_3' (h C) for k_lat

    bool reciprocal_, expanded_;
    Ten w_q_, w_kd_, w_vd_, p_map_, u_map_, ra_alpha_;   // parameters
    Ten Q_, k_lat_, v_lat_;                              // [N,E], [N,L], [N,L]
    Ten q_lat_;                                          // latent: [N,H,L]
    Ten kh_;                                             // expanded: k_lat P^T [N,maps,D]
    Ten vh_;                                             // v_lat U [N,value_heads,D]
    Ten qt_, kt_;                                        // RA+MLA: [N,H,2 qk_width] x 2
    Ten ctx_;                                            // latent MLA: [N,E] = o U
};

}  // namespace gpt
