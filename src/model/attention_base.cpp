#include "model/attention_base.h"

#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "common/error.h"
#include "model/variant_names.h"

namespace gpt {

namespace {
constexpr int kM2TopK = 8;   // M2 keeps the 8 largest entries of each head-mean row (SPEC §2.6)

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

RactDims ract_dims(const ModelConfig& cfg, int B, int T) {
    RactDims d;
    d.B = B;
    d.T = T;
    d.H = cfg.n_head;
    d.stat = cfg.ract.stat;
    d.topk = cfg.ract.topk;
    d.head_average = cfg.ract.head_average;
    return d;
}
// A selection statistic (topk, max) whose gradient flows: its dense part rides on the attention
// backward's D term and only the selected entries need a pass of their own (ops.h ract_gate_coef).
bool ract_split_gradient(const ModelConfig& cfg) {
    return cfg.ract.enabled && !cfg.ract.detach && (cfg.ract.stat == RactStat::topk || cfg.ract.stat == RactStat::max);
}

// RA-CT apply mode "output" scales by g, "weights" by (1 - alpha) + alpha g (SPEC §2.5).
float ract_alpha(const ModelConfig& cfg) { return cfg.ract.apply == RactApply::output ? 1.f : cfg.ract.alpha; }
}  // namespace

AttentionBase::AttentionBase(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {}

void AttentionBase::connect(BlockLink* from_prev, BlockLink* own, const SharedScratch* shared) {
    (void)shared;   // no attention buffer is shared between layers
    GPT_CHECK(!m1_consumer() || from_prev, "attention: M1's consumer needs the previous block's link");
    prev_ = from_prev;
    own_ = own;
}

void AttentionBase::declare(ParamTable& p) {
    const int64_t E = cfg_.n_embd, H = cfg_.n_head;
    const std::string pre = fmt::format("h.{}.attn.", layer_);
    const float resid_std = 0.02f / std::sqrt(2.0f * float(cfg_.n_layer));
    declare_inputs(p);
    w_proj_ = p.add(pre + "c_proj.weight", {E, E}, Init::normal, resid_std, true);
    b_proj_ = p.add(pre + "c_proj.bias", {E}, Init::zeros, 0.f, false);
    declare_extras(p);
    if (cfg_.ract.enabled) {
        ract_scale_ = p.add(pre + "ract.scale", {H}, Init::constant, 1.0f, false);
        ract_bias_ = p.add(pre + "ract.bias", {H}, Init::constant, 2.0f, false);
    }
    if (m1_consumer()) m1_alpha_ = p.add(pre + "m1_alpha", {1}, Init::constant, 0.1f, false);
}

void AttentionBase::plan(ActivationPlan& a, int B, int T) {
    const size_t N = size_t(B) * T, H = cfg_.n_head;
    const std::string pre = fmt::format("h.{}.", layer_);
    plan_inputs(a, B, T);
    ract_aug_ = entropy_augmented_possible();
    if (ract_aug_) {   // y_ holds [o | P k] per head; the values [v | k] are kept for the backward
        const AttnDims d2 = augmented_dims(operands(StepContext{nullptr, B, T, false, 0}).d);
        y_ = a.add(Space::Act, N * H * d2.Dv, "attention", pre + "attn_y_aug");
        vk_ = a.add(Space::Act, N * H * d2.Dv, "attention", pre + "ract_vk");
    } else {
        y_ = a.add(Space::Act, rows_heads_dv(B, T), "attention", pre + "attn_y");
    }
    lse_ = a.add(Space::Stat, N * H, "attention", pre + "attn_lse");
    if (cfg_.ract.enabled) {
        ract_stat_ = a.add(Space::Stat, N * H, "attention", pre + "ract_stat");
        ract_gate_ = a.add(Space::Act, N * H, "attention", pre + "ract_gate");
        const size_t slots = ract_sel_slots(ract_dims(cfg_, B, T)), heads = cfg_.ract.head_average ? 1 : H;
        if (slots > 0) ract_sel_ = a.add(Space::Index, N * heads * slots, "attention", pre + "ract_sel");
        y_ract_ = a.add(Space::Act, rows_heads_dv(B, T), "attention", pre + "ract_y");
        if (ract_split_gradient(cfg_)) {
            ract_alpha_ = a.add(Space::Stat, N * H, "attention", pre + "ract_alpha");
            ract_beta_ = a.add(Space::Stat, N * H, "attention", pre + "ract_beta");
        }
    }
    if (m1_consumer()) y_m1_ = a.add(Space::Act, rows_heads_dv(B, T), "attention", pre + "m1_y");
    if (cfg_.m2) {
        GPT_CHECK(own_, "attention: M2 needs this block's link; call connect() before plan()");
        own_->m2_idx = a.add(Space::Index, N * kM2TopK, "mlp", pre + "m2_idx");
        own_->m2_wts = a.add(Space::Stat, N * kM2TopK, "mlp", pre + "m2_wts");
    }
    plan_output(a, B, T);
}

double AttentionBase::attention_flops_per_token(int T) const {
    // Per token, forward: Hq Dqk T/2 multiply-adds for q.k and Hq Dv T/2 for p.v (causal half),
    // 2 FLOPs each; backward twice that. The band's skipped reciprocal tiles are not subtracted.
    const AttnDims d = operands(StepContext{nullptr, 1, T, false, 0}).d;
    return 3.0 * double(d.Hq) * double(d.Dqk + d.Dv) * double(T);
}

// The gradient of the attention output and, with gates, a second buffer of that size (gate backward
// reads one and writes the other) plus RA-CT's dgate [N,H]; in the augmented-value entropy form
// also dout' and dv' of the widened values.
size_t AttentionBase::gate_scratch_elems(int B, int T) const {
    const size_t nyd = rows_heads_dv(B, T);
    const size_t gates = align64(has_gates() ? 2 * nyd + size_t(B) * T * cfg_.n_head : nyd);
    if (!ract_aug_) return gates;
    const AttnDims d2 = augmented_dims(operands(StepContext{nullptr, B, T, false, 0}).d);
    const size_t aug = size_t(B) * T * cfg_.n_head * size_t(d2.Dv);
    return gates + 2 * align64(aug);
}

// RA-CT's entropy from the attention's own output: the attention runs on the values v' = [v, k], so
// its output holds P k beside P v and the statistic is lse - scale q.(P k) (ops.h ract_entropy_fwd);
// the backward needs no pass over the logits either. Only for the probabilities the statistic is
// defined on (no dropout: o' would hold the dropped ones), one key head per query head, no band
// (the logits must be q.k), and Dqk + Dv within the attention kernels' value widths (<= 128).
// GPT_RACT_ENTROPY=recompute keeps the flash-style pass (ract_gate_fwd / _bwd) for A/B runs.
bool AttentionBase::entropy_augmented_possible() const {
    if (!cfg_.ract.enabled || cfg_.ract.stat != RactStat::entropy || cfg_.ract.head_average) return false;
    if (cfg_.dropout > 0.f) return false;
    if (const char* e = std::getenv("GPT_RACT_ENTROPY"); e && std::string(e) == "recompute") return false;
    const AttnDims d = operands(StepContext{nullptr, 1, 1, false, 0}).d;
    return d.Hq == d.Hkv && d.band == 0 && d.Dqk + d.Dv <= 128;
}

AttnDims AttentionBase::augmented_dims(const AttnDims& d) const {
    AttnDims d2 = d;
    d2.Dv = d.Dv + d.Dqk;
    d2.v_stride = d.Hq * d2.Dv;
    return d2;
}

// vk_ [N, H, Dv + Dqk] = [v, k] per head.
void AttentionBase::pack_value_key(const StepContext& c, const AttentionOperands& a) const {
    const int W = a.d.Dv + a.d.Dqk;
    HeadCopyDims h;
    h.N = c.B * c.T;
    h.H = a.d.Hq;
    h.dst_stride = h.H * W;
    h.dst_head_stride = W;
    h.width = a.d.Dv;
    h.src_stride = a.d.v_stride;
    h.src_head_stride = a.d.Dv;
    c.ops->copy_heads(vk_, a.v, h);
    h.width = a.d.Dqk;
    h.src_stride = a.d.k_stride;
    h.src_head_stride = a.d.Dqk;
    c.ops->copy_heads(vk_.sub(size_t(a.d.Dv), vk_.n - size_t(a.d.Dv)), a.k, h);
}

size_t AttentionBase::grad_scratch_elems(int B, int T) const {
    return gate_scratch_elems(B, T) + std::max(inputs_scratch_elems(B, T), output_scratch_elems(B, T));
}

AttnDims AttentionBase::base_dims(const StepContext& c) const {
    AttnDims d;
    d.B = c.B;
    d.T = c.T;
    d.dropout = c.training ? cfg_.dropout : 0.f;
    d.impl = cfg_.attention_impl;
    d.seed = c.site_seed(layer_, 0);
    return d;
}


void AttentionBase::output_fwd(const StepContext& c, Ten y, Ten out) {
    const int E = cfg_.n_embd;
    c.ops->matmul_fwd(out, y, w_proj_, b_proj_, c.B * c.T, E, E);
}

void AttentionBase::output_bwd(const StepContext& c, Ten y, Ten dout, Ten dy, Ten scratch) {
    (void)scratch;
    const int E = cfg_.n_embd;
    c.ops->matmul_bwd(dy, w_proj_.as(Space::Grad), output_bias_grad(b_proj_), dout, y, w_proj_, c.B * c.T, E, E);
}

void AttentionBase::forward(const StepContext& c, Ten in, Ten out) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, H = cfg_.n_head, Dv = value_width();
    inputs_fwd(c, in);
    const AttentionOperands a = operands(c);
    if (ract_aug_) {
        pack_value_key(c, a);
        ops.attention_fwd(y_, lse_, a.q, a.k, vk_, augmented_dims(a.d));
    } else {
        attend_fwd(c, y_, lse_, a);
    }
    Ten cur = y_;
    // RA-CT and M2 read the attention's probabilities through q, k and the log-sum-exp, never
    // materialised (the statistics before dropout).
    if (cfg_.m2 && !c.reuse_m2_rows) ops.topk_rows(own_->m2_idx, own_->m2_wts, a.q, a.k, lse_, a.d, kM2TopK);
    if (ract_aug_) {
        ops.ract_entropy_fwd(y_ract_, ract_stat_, ract_gate_, y_, a.q, lse_, ract_scale_, ract_bias_, ract_alpha(cfg_),
                             a.d);
        cur = y_ract_;
    } else if (cfg_.ract.enabled) {
        ops.ract_gate_fwd(ract_stat_, ract_gate_, ract_sel_, a.q, a.k, lse_, ract_scale_, ract_bias_, a.d,
                          ract_dims(cfg_, c.B, c.T));
        ops.head_gate_fwd(y_ract_, cur, ract_gate_, {}, ract_alpha(cfg_), N, H, Dv);
        cur = y_ract_;
    }
    if (m1_consumer()) {
        ops.head_gate_fwd(y_m1_, cur, prev_->m1_gate, m1_alpha_, 0.f, N, H, Dv);
        cur = y_m1_;
    }
    output_fwd(c, cur, out);
}

void AttentionBase::backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, H = cfg_.n_head, Dv = value_width();
    const size_t nyd = rows_heads_dv(c.B, c.T), gates_end = gate_scratch_elems(c.B, c.T);
    Ten dcur = scratch.sub(0, nyd), dother, dgate;
    if (has_gates()) {
        dother = scratch.sub(nyd, nyd);
        dgate = scratch.sub(2 * nyd, size_t(N) * H);
    }
    Ten rest = scratch.sub(gates_end, scratch.n - gates_end);

    // The gated chain y -> y_ract -> y_m1, walked backwards.
    const Ten after_ract = cfg_.ract.enabled ? y_ract_ : y_;
    output_bwd(c, m1_consumer() ? y_m1_ : after_ract, dout, dcur, rest);
    if (m1_consumer()) {
        ops.head_gate_bwd(dother, prev_->d_m1_gate, m1_alpha_.as(Space::Grad), dcur, after_ract, prev_->m1_gate,
                          m1_alpha_, 0.f, N, H, Dv);
        std::swap(dcur, dother);
    }
    const AttentionOperands a = operands(c);
    if (ract_aug_) {
        // dout' = [dy gated, -c scale q]: the attention backward on the widened values then carries
        // the statistic's gradient; the second half of dv' is not a gradient and is dropped.
        const AttnDims d2 = augmented_dims(a.d);
        const size_t aug = size_t(N) * H * d2.Dv;
        const Ten dout2 = scratch.sub(gates_end - 2 * align64(aug), aug);
        const Ten dv2 = scratch.sub(gates_end - align64(aug), aug);
        ops.ract_entropy_bwd(dout2, ract_scale_.as(Space::Grad), ract_bias_.as(Space::Grad), dcur, y_, a.q, ract_stat_,
                             ract_gate_, ract_scale_, ract_alpha(cfg_), cfg_.ract.detach, a.d);
        const AttentionOperands g = operand_grads(c, rest);
        ops.attention_bwd(g.q, g.k, dv2, dout2, y_, lse_, a.q, a.k, vk_, d2);
        HeadCopyDims h;
        h.N = N;
        h.H = H;
        h.width = a.d.Dv;
        h.dst_stride = a.d.v_stride;
        h.dst_head_stride = a.d.Dv;
        h.src_stride = H * d2.Dv;
        h.src_head_stride = d2.Dv;
        ops.copy_heads(g.v, dv2, h);
        inputs_bwd(c, in, din, rest);
        return;
    }
    if (cfg_.ract.enabled) {
        ops.head_gate_bwd(dother, dgate, {}, dcur, y_, ract_gate_, {}, ract_alpha(cfg_), N, H, Dv);
        std::swap(dcur, dother);
    }
    const AttentionOperands g = operand_grads(c, rest);
    if (ract_split_gradient(cfg_)) {
        // The statistic's gradient through the logits, P (alpha [selected] - beta): beta's dense part
        // shifts the attention backward's D term, the selected entries come after it.
        const RactDims rd = ract_dims(cfg_, c.B, c.T);
        ops.ract_gate_coef(ract_alpha_, ract_beta_, ract_scale_.as(Space::Grad), ract_bias_.as(Space::Grad), dgate,
                           a.q, a.k, lse_, ract_stat_, ract_sel_, ract_gate_, ract_scale_, a.d, rd);
        ops.attention_bwd(g.q, g.k, g.v, dcur, y_, lse_, a.q, a.k, a.v, a.d, ract_beta_);
        ops.ract_select_bwd(g.q, g.k, ract_alpha_, ract_sel_, a.q, a.k, lse_, a.d, rd);
    } else {
        attend_bwd(c, g, dcur, y_, lse_, a);
    }
    if (cfg_.ract.enabled && !ract_split_gradient(cfg_)) {   // after attention_bwd: adds to dq, dk
        const bool through = !cfg_.ract.detach;
        ops.ract_gate_bwd(through ? g.q : Ten{}, through ? g.k : Ten{}, ract_scale_.as(Space::Grad),
                          ract_bias_.as(Space::Grad), dgate, a.q, a.k, lse_, ract_stat_, ract_sel_, ract_gate_,
                          ract_scale_, a.d, ract_dims(cfg_, c.B, c.T));
    }
    inputs_bwd(c, in, din, rest);
}

std::string AttentionBase::describe() const {
    std::string s = describe_kind();
    if (cfg_.ract.enabled)
        s += fmt::format(" + RA-CT({}, {}{}{}{})", ract_stat_name(cfg_.ract.stat),
                         cfg_.ract.apply == RactApply::output ? "output" : "weights",
                         cfg_.ract.head_average ? ", head-avg" : "", cfg_.ract.detach ? ", detached" : "",
                         ract_aug_ ? ", from the attention on [v, k]" : "");
    if (cfg_.m1) s += " + M1 gate";
    return s;
}

}  // namespace gpt
