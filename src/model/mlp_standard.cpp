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

namespace {
size_t aligned64(size_t n) { return (n + 63) / 64 * 64; }
}  // namespace

// The stacked form of the hidden gradient (see backward) needs M3 absent: M3's hand-over adds
// d(hC) C^T, whose weight is C^T, not a stored [k,F] matrix.
bool StandardMlp::stacks_hidden_grad() const { return !m3_ && (m1_ || m2_); }

int StandardMlp::stacked_width() const {
    return cfg_.n_embd + (m2_ ? cfg_.m2_rank : 0) + (m1_ ? M1GateProducer::kHidden : 0);
}

size_t StandardMlp::grad_scratch_elems(int B, int T) const {
    const size_t N = size_t(B) * T, F = cfg_.hidden();
    size_t n = aligned64(N * F);   // dact
    for (const LowRankPath* p : low_rank_paths()) n += aligned64(N * p->r);   // each path's dx
    if (stacks_hidden_grad()) n += aligned64(N * stacked_width()) + aligned64(size_t(stacked_width()) * F);
    // M2's and M1's scratch side by side: M2's dz must outlive M1's backward.
    return n + (m2_ ? aligned64(m2_->grad_scratch_elems(B, T)) : 0) + (m1_ ? m1_->grad_scratch_elems(B, T) : 0);
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
    size_t used = 0;
    auto take = [&](size_t n) {   // laid out as grad_scratch_elems counts it
        const Ten t = scratch.sub(used, n);
        used += aligned64(n);
        return t;
    };
    const Ten dact = take(nf);
    const Ten dx_m2 = m2_ ? take(size_t(BT) * m2_->path().r) : Ten{};
    const Ten dx_m3 = m3_ ? take(size_t(BT) * m3_->path().r) : Ten{};
    const int K = stacked_width();
    const Ten d_stack = stacks_hidden_grad() ? take(size_t(BT) * K) : Ten{};
    const Ten w_stack = stacks_hidden_grad() ? take(size_t(K) * F) : Ten{};
    const Ten m2_scratch = m2_ ? take(m2_->grad_scratch_elems(c.B, c.T)) : Ten{};
    const Ten m1_scratch = scratch.sub(used, scratch.n - used);
    // train.recompute: h = GELU(pre) again, the same op on the same input as the forward's
    // epilogue, for c_proj's weight gradient and M1/M2/M3's backward below.
    if (recompute_) ops.gelu_fwd(act_, pre_, nf);
    if (!m1_ && !m2_ && !m3_) {   // c_proj straight onto the GELU: one op, fused on the GPU (DGELU epilogue)
        ops.matmul_bwd_gelu(dact, w_proj_.as(Space::Grad), output_bias_grad(b_proj_), dout, act_, w_proj_, pre_, BT,
                            F, E);
        ops.matmul_bwd(din, w_fc_.as(Space::Grad), b_fc_.as(Space::Grad), dact, in, w_fc_, BT, E, F);
        return;
    }
    ops.matmul_bwd({}, w_proj_.as(Space::Grad), output_bias_grad(b_proj_), dout, act_, w_proj_, BT, F, E);
    if (m2_) low_rank_path_bwd(c, dx_m2, dout, m2_->path(), w_proj_, E, F);
    if (m3_) low_rank_path_bwd(c, dx_m3, dout, m3_->path(), w_proj_, E, F);
    if (m3_) m3_->backward(c, dx_m3);
    // h's gradient is a sum of products d_i W_i of what h fed through a linear map: c_proj (dout,
    // W_proj), M2's z (dz, W_down), M1's gate (d(W_1 h), W_1), then through the GELU.
    struct HiddenInput {
        Ten d, w;   // d [N,k] and w [k,F]: dh += d w
        int k;
    };
    std::vector<HiddenInput> inputs{{dout, w_proj_, E}};
    if (m2_) inputs.push_back({m2_->backward_to_input(c, act_, dx_m2, m2_scratch), m2_->input_weight(), cfg_.m2_rank});
    if (m1_) inputs.push_back({m1_->backward_to_input(c, act_, m1_scratch), m1_->input_weight(), M1GateProducer::kHidden});
    if (stacks_hidden_grad()) {
        // As one GEMM with GELU' in its epilogue: [d_1 | d_2 | ..] [N,K] . [W_1; W_2; ..] [K,F]. The
        // d_i are copied side by side and the weights stacked (bf16, a few MB) for it.
        int col = 0;
        for (const HiddenInput& h : inputs) {
            HeadCopyDims cd;
            cd.N = BT;
            cd.H = 1;
            cd.width = h.k;
            cd.dst_stride = K;
            cd.dst_head_stride = h.k;
            cd.src_stride = h.k;
            cd.src_head_stride = h.k;
            ops.copy_heads(d_stack.sub(size_t(col), d_stack.n - size_t(col)), h.d, cd);
            ops.copy(w_stack.sub(size_t(col) * F, size_t(h.k) * F), h.w);
            col += h.k;
        }
        ops.matmul_bwd_gelu(dact, {}, {}, d_stack, act_, w_stack, pre_, BT, F, K);
    } else {
        ops.matmul_bwd(dact, {}, {}, dout, act_, w_proj_, BT, F, E);
        for (size_t i = 1; i < inputs.size(); ++i)
            ops.matmul_bwd_add(dact, {}, {}, inputs[i].d, act_, inputs[i].w, BT, F, inputs[i].k);
        if (m3_) m3_->backward_handover(c, act_, dact);
        ops.gelu_bwd(dact, pre_, dact, nf);
    }
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
