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

std::vector<const LowRankPath*> StandardMlp::low_rank_paths() const {
    std::vector<const LowRankPath*> v;
    if (m2_) v.push_back(&m2_->path());
    if (m3_) v.push_back(&m3_->path());
    return v;
}

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
    const size_t N = size_t(B) * T, dh = (N * cfg_.hidden() + 63) / 64 * 64;
    size_t dx = 0;   // one gradient of x per low-rank path
    for (const LowRankPath* p : low_rank_paths()) dx += (N * p->r + 63) / 64 * 64;
    return dh + dx + std::max(m1_ ? m1_->grad_scratch_elems(B, T) : 0, m2_ ? m2_->grad_scratch_elems(B, T) : 0);
}

void StandardMlp::forward(const StepContext& c, Ten in, Ten out) {
    const int BT = c.B * c.T, E = cfg_.n_embd, F = cfg_.hidden();
    c.ops->matmul_fwd(pre_, in, w_fc_, b_fc_, BT, E, F, act_);
    if (m1_) m1_->forward(c, act_);   // every mechanism reads h from before the additions
    if (m2_) m2_->forward(c, act_);
    if (m3_) m3_->forward(c, act_);
    c.ops->matmul_fwd(out, act_, w_proj_, b_proj_, BT, F, E);
    for (const LowRankPath* p : low_rank_paths()) low_rank_path_fwd(c, out, *p, w_proj_, E, F);
}

void StandardMlp::backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) {
    Ops& ops = *c.ops;
    const int BT = c.B * c.T, E = cfg_.n_embd, F = cfg_.hidden();
    const size_t nf = size_t(BT) * F;
    size_t used = (nf + 63) / 64 * 64;
    const Ten dact = scratch.sub(0, nf);
    auto take = [&](int r) {   // the gradient of a path's x, laid out as grad_scratch_elems counts it
        const size_t n = size_t(BT) * r;
        const Ten t = scratch.sub(used, n);
        used += (n + 63) / 64 * 64;
        return t;
    };
    const Ten dx_m2 = m2_ ? take(m2_->path().r) : Ten{}, dx_m3 = m3_ ? take(m3_->path().r) : Ten{};
    const Ten more = scratch.sub(used, scratch.n - used);
    // train.recompute: h = GELU(pre) again, the same op on the same input as the forward's
    // epilogue, for c_proj's weight gradient and M1/M2/M3's backward below.
    if (recompute_) ops.gelu_fwd(act_, pre_, nf);
    // dact = the gradient of h + the additions (c_proj's input gradient), which is also h's through
    // the identity; then the paths of what h fed (M2's z, M1's gate, M3's hand-over) are added.
    // Nothing between c_proj and the GELU (no M1/M2/M3): one op, fused on the GPU (DGELU epilogue).
    const bool fused_gelu = !m1_ && !m2_ && !m3_;
    if (fused_gelu)
        ops.matmul_bwd_gelu(dact, w_proj_.as(Space::Grad), output_bias_grad(b_proj_), dout, act_, w_proj_, pre_, BT,
                            F, E);
    else
        ops.matmul_bwd(dact, w_proj_.as(Space::Grad), output_bias_grad(b_proj_), dout, act_, w_proj_, BT, F, E);
    if (m2_) low_rank_path_bwd(c, dx_m2, dout, m2_->path(), w_proj_, E, F);
    if (m3_) low_rank_path_bwd(c, dx_m3, dout, m3_->path(), w_proj_, E, F);
    if (m3_) m3_->backward(c, dx_m3);
    if (m2_) m2_->backward(c, act_, dact, dx_m2, more);
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
