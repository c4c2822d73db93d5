#include "model/attention_base.h"

#include <cmath>
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
    y_ = a.add(Space::Act, rows_heads_dv(B, T), "attention", pre + "attn_y");
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
// reads one and writes the other) plus RA-CT's dgate [N,H].
size_t AttentionBase::gate_scratch_elems(int B, int T) const {
    const size_t nyd = rows_heads_dv(B, T);
    return align64(has_gates() ? 2 * nyd + size_t(B) * T * cfg_.n_head : nyd);
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
    ops.attention_fwd(y_, lse_, a.q, a.k, a.v, a.d);
    Ten cur = y_;
    // RA-CT and M2 read the attention's probabilities through q, k and the log-sum-exp, never
    // materialised (the statistics before dropout).
    if (cfg_.m2 && !c.reuse_m2_rows) ops.topk_rows(own_->m2_idx, own_->m2_wts, a.q, a.k, lse_, a.d, kM2TopK);
    if (cfg_.ract.enabled) {
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
        ops.attention_bwd(g.q, g.k, g.v, dcur, y_, lse_, a.q, a.k, a.v, a.d);
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
        s += fmt::format(" + RA-CT({}, {}{}{})", ract_stat_name(cfg_.ract.stat),
                         cfg_.ract.apply == RactApply::output ? "output" : "weights",
                         cfg_.ract.head_average ? ", head-avg" : "", cfg_.ract.detach ? ", detached" : "");
    if (cfg_.m1) s += " + M1 gate";
    return s;
}

}  // namespace gpt
