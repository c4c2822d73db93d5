// Multi-head latent attention (SPEC §2.3) and its reciprocal form RA+MLA (SPEC §2.4).
//   Q = h W_q [N,E], k_lat = h W_kd [N,L], v_lat = h W_vd [N,L], q_lat_h = Q_h P_h [N,H,L]
// MLA: multi-query attention (one K/V head of width L, scale 1/sqrt(L)) of q_lat on k_lat, v_lat;
//      the per-head value map U_h (L -> D) is applied after it: A_h (v_lat U_h) = (A_h v_lat) U_h.
// RA+MLA: logit = (q_lat_i.k_lat_j + alpha band_W(i,j) q_lat_j.k_lat_i) / sqrt(L) through the fold
//      (Hk = 1, g_std = 1 fixed, g_rec = the learnable per-layer alpha), values v_h = v_lat U_h.
// model.mla.shared_maps: one P [D,L] and one U [L,D] shared by all heads instead of one per head
// (docs/variants.md explains why the heads keep their own D-dim slice of Q).
// model.m3: k_lat is handed to this block's MLP, and k_lat += alpha_3' (h C) of the previous one.
#pragma once
#include "model/attention_base.h"

namespace gpt {

class MlaAttention final : public AttentionBase {
public:
    MlaAttention(const ModelConfig& cfg, int layer);   // attention = mla or ra_mla

protected:
    void declare_inputs(ParamTable& p) override;
    void plan_inputs(ActivationPlan& a, int B, int T) override;
    size_t inputs_scratch_elems(int B, int T) const override;
    int value_width() const override { return reciprocal_ ? cfg_.head_dim() : cfg_.mla.latent; }
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
        Ten dQ, dtmp, dq_lat, dk_lat, dv_lat, dqt, dkt, dvh;
    };
    Grads grads(int B, int T, Ten scratch) const;
    HeadMapDims query_map(const StepContext& c) const;   // Q -> q_lat
    HeadMapDims value_map(const StepContext& c) const;   // v_lat -> v_h (RA+MLA) or o -> ctx (MLA)
    RaFoldDims fold_dims(const StepContext& c) const;
    AttentionOperands attention_on(Ten q, Ten k, Ten v, const StepContext& c) const;
    int maps() const { return cfg_.mla.shared_maps ? 1 : cfg_.n_head; }
    bool m3_input() const;   // M3: the previous block hands over alpha_3' (h C) for k_lat

    bool reciprocal_;
    Ten w_q_, w_kd_, w_vd_, p_map_, u_map_, ra_alpha_;   // parameters
    Ten Q_, k_lat_, v_lat_, q_lat_;                      // [N,E], [N,L], [N,L], [N,H,L]
    Ten qt_, kt_, vh_;                                   // RA+MLA: [N,H,2L] x 2, [N,H,D]
    Ten ctx_;                                            // MLA: [N,E] = o U
};

}  // namespace gpt
