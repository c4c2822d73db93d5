#include "model/mlp_standard.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/error.h"

namespace gpt {

StandardMlp::StandardMlp(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {
    if (cfg.m1 && layer + 1 < cfg.n_layer) m1_ = std::make_unique<M1GateProducer>(cfg, layer);
    if (cfg.m2) m2_ = std::make_unique<M2CrossTokenMix>(cfg, layer);
    if (cfg.m3) m3_ = std::make_unique<M3LatentReciprocity>(cfg, layer);
}

Ten StandardMlp::proj_input() const { return m3_ ? m3_->output() : m2_ ? m2_->output() : act_; }

void StandardMlp::declare(ParamTable& p) {
    const int64_t E = cfg_.n_embd, F = cfg_.hidden();
    const std::string pre = fmt::format("h.{}.mlp.", layer_);
    const float resid_std = 0.02f / std::sqrt(2.0f * float(cfg_.n_layer));
    w_fc_ = p.add(pre + "c_fc.weight", {F, E}, Init::normal, 0.02f, true);
    b_fc_ = p.add(pre + "c_fc.bias", {F}, Init::zeros, 0.f, false);
    w_proj_ = p.add(pre + "c_proj.weight", {E, F}, Init::normal, resid_std, true);
    b_proj_ = p.add(pre + "c_proj.bias", {E}, Init::zeros, 0.f, false);
    if (m1_) m1_->declare(p);
    if (m2_) m2_->declare(p);
    if (m3_) m3_->declare(p);
}

void StandardMlp::plan(ActivationPlan& a, int B, int T) {
    const size_t BTF = size_t(B) * T * cfg_.hidden();
    const std::string pre = fmt::format("h.{}.", layer_);
    pre_ = a.add(Space::Act, BTF, "mlp", pre + "fc_pre");
    recompute_ = shared_ && shared_->mlp_hidden.present();
    if (recompute_) {
        GPT_CHECK(shared_->mlp_hidden.n >= BTF, "mlp: the shared recompute buffer is smaller than the hidden");
        act_ = shared_->mlp_hidden.sub(0, BTF);
    } else {
        act_ = a.add(Space::Act, BTF, "mlp", pre + "fc_gelu");
    }
    GPT_CHECK(link_ || (!m1_ && !m2_ && !m3_), "mlp: M1/M2/M3 need the block link; call connect() before plan()");
    if (m1_) m1_->plan(a, *link_, B, T);
    if (m2_) m2_->plan(a, *link_, B, T);
    if (m3_) m3_->plan(a, *link_, B, T);
}

size_t StandardMlp::grad_scratch_elems(int B, int T) const {
    const size_t dh = (size_t(B) * T * cfg_.hidden() + 63) / 64 * 64;
    return dh + std::max({m1_ ? m1_->grad_scratch_elems(B, T) : 0, m2_ ? m2_->grad_scratch_elems(B, T) : 0,
                          m3_ ? m3_->grad_scratch_elems(B, T) : 0});
}

void StandardMlp::forward(const StepContext& c, Ten in, Ten out) {
    const int BT = c.B * c.T, E = cfg_.n_embd, F = cfg_.hidden();
    c.ops->matmul_fwd(pre_, in, w_fc_, b_fc_, BT, E, F, act_);
    if (m1_) m1_->forward(c, act_);   // hands over h from before the in-block additions
    Ten h = m2_ ? m2_->forward(c, act_) : act_;
    if (m3_) h = m3_->forward(c, h, act_);
    c.ops->matmul_fwd(out, h, w_proj_, b_proj_, BT, F, E);
}

void StandardMlp::backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) {
    Ops& ops = *c.ops;
    const int BT = c.B * c.T, E = cfg_.n_embd, F = cfg_.hidden();
    const size_t nf = size_t(BT) * F, rest = (nf + 63) / 64 * 64;
    const Ten dact = scratch.sub(0, nf), more = scratch.sub(rest, scratch.n - rest);
    // train.recompute: h = GELU(pre) again, the same op on the same input as the forward's
    // epilogue, for c_proj's weight gradient and M1/M2/M3's backward below.
    if (recompute_) ops.gelu_fwd(act_, pre_, nf);
    // Walk back through the additions (M3, then M2) to the gradient of h itself, then add the
    // paths of what h handed to the next block (M1's gate, M3's latent).
    // Nothing between c_proj and the GELU (no M1/M2/M3): one op, fused on the GPU (DGELU epilogue).
    const bool fused_gelu = !m1_ && !m2_ && !m3_;
    if (fused_gelu)
        ops.matmul_bwd_gelu(dact, w_proj_.as(Space::Grad), output_bias_grad(b_proj_), dout, proj_input(), w_proj_, pre_,
                            BT, F, E);
    else
        ops.matmul_bwd(dact, w_proj_.as(Space::Grad), output_bias_grad(b_proj_), dout, proj_input(), w_proj_, BT, F,
                       E);
    if (m3_) m3_->backward(c, dact, more);
    if (m2_) m2_->backward(c, act_, dact, more);
    if (m1_) m1_->backward(c, act_, dact, more);
    if (m3_) m3_->backward_handover(c, act_, dact);
    if (!fused_gelu) ops.gelu_bwd(dact, pre_, dact, nf);
    ops.matmul_bwd(din, w_fc_.as(Space::Grad), b_fc_.as(Space::Grad), dact, in, w_fc_, BT, E, F);
}

std::string StandardMlp::describe() const {
    std::string s = fmt::format("GELU MLP (F={})", cfg_.hidden());
    if (cfg_.m1) s += " + M1 producer";
    if (cfg_.m2) s += fmt::format(" + M2 (r={}, top-{})", cfg_.m2_rank, M2CrossTokenMix::kTopK);
    if (cfg_.m3) s += " + M3 latent reciprocity";
    return s;
}

}  // namespace gpt
