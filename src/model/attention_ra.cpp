#include "model/attention_ra.h"

#include <cmath>

#include <fmt/format.h>

#include "common/error.h"

namespace gpt {

bool ra_lowrank_weights_form(const ModelConfig& cfg) {
    if (cfg.attention != AttentionKind::ra_lowrank) return false;
    switch (cfg.ra.lowrank_form) {
        case RaLowRankForm::rows: return false;
        case RaLowRankForm::weights: return true;
        case RaLowRankForm::auto_select: break;
    }
    return !cfg.ra.discoverability;
}

const char* ra_fold_in_kernel_blocker(const ModelConfig& cfg) {
    if (cfg.attention != AttentionKind::ra) return "model.attention is not ra (the exact fold)";
    if (cfg.ra.discoverability) return "model.ra.discoverability adds a channel to q~, k~";
    if (cfg.ract.enabled) return "RA-CT reads the attention's probabilities from q~, k~";
    if (cfg.m2) return "M2 reads the attention's probabilities from q~, k~";
    if (cfg.attention_impl != AttentionImpl::ours && cfg.attention_impl != AttentionImpl::auto_select)
        return "cuDNN (model.attention_impl) needs q~, k~ in memory";
    return nullptr;
}

bool ra_fold_in_kernel(const ModelConfig& cfg) {
    if (cfg.attention != AttentionKind::ra) return false;
    switch (cfg.ra.fold) {
        case RaFold::materialized: return false;
        case RaFold::kernel: return true;   // validated with the config (config_io.cpp)
        case RaFold::auto_select: break;
    }
    return cfg.attention_impl == AttentionImpl::ours && !ra_fold_in_kernel_blocker(cfg);
}

RaAttention::RaAttention(const ModelConfig& cfg, int layer)
    : AttentionBase(cfg, layer),
      lowrank_(cfg.attention == AttentionKind::ra_lowrank),
      disc_(cfg.ra.discoverability),
      weights_form_(ra_lowrank_weights_form(cfg)),
      in_kernel_(ra_fold_in_kernel(cfg)) {
    GPT_CHECK(!(weights_form_ && disc_), "model.ra.lowrank_form: the weights form cannot add the discoverability "
                                         "bias; set model.ra.lowrank_form to rows or auto");
}

void RaAttention::declare_inputs(ParamTable& p) { packed_.declare(p, cfg_, layer_); }

void RaAttention::declare_extras(ParamTable& p) {
    const std::string pre = fmt::format("h.{}.attn.ra.", layer_);
    if (cfg_.ra.learnable) {
        g_std_ = p.add(pre + "g_std", {n_gates()}, Init::constant, cfg_.ra.g_std, false);
        g_rec_ = p.add(pre + "g_rec", {n_gates()}, Init::constant, cfg_.ra.g_rec, false);
    }
    if (lowrank_)
        w_lowrank_ = p.add(pre + "w_lowrank", {cfg_.head_dim(), cfg_.ra.rank}, Init::normal, 0.02f, true);
    if (disc_) {
        disc_u_ = p.add(pre + "disc_u", {cfg_.n_head, cfg_.head_dim()}, Init::normal, 0.02f, false);
        g_disc_ = p.add(pre + "g_disc", {cfg_.n_head}, Init::constant, 0.2f, false);
    }
}

void RaAttention::plan_inputs(ActivationPlan& a, int B, int T) {
    packed_.plan(a, cfg_, layer_, B, T);
    if (in_kernel_) return;   // the kernel builds q̃, k̃ tiles from the packed q, k
    if (weights_form_) {
        const size_t E3 = size_t(3) * cfg_.n_embd, nw = E3 * cfg_.n_embd;
        w_eff_ = a.add(Space::Act, nw, "attention", fmt::format("h.{}.ra_w_eff", layer_));
        b_eff_ = a.add(Space::Act, E3, "attention", fmt::format("h.{}.ra_b_eff", layer_));
        dw_eff_ = a.add(Space::Stat, nw, "attention", fmt::format("h.{}.ra_dw_eff", layer_));
        db_eff_ = a.add(Space::Stat, E3, "attention", fmt::format("h.{}.ra_db_eff", layer_));
        return;
    }
    const size_t n = size_t(B) * T * cfg_.n_head * folded_width();
    qt_ = a.add(Space::Act, n, "attention", fmt::format("h.{}.ra_qt", layer_));
    kt_ = a.add(Space::Act, n, "attention", fmt::format("h.{}.ra_kt", layer_));
    if (disc_) {
        const size_t nd = size_t(B) * T * cfg_.n_head * operand_width();
        qd_ = a.add(Space::Act, nd, "attention", fmt::format("h.{}.ra_qt_disc", layer_));
        kd_ = a.add(Space::Act, nd, "attention", fmt::format("h.{}.ra_kt_disc", layer_));
    }
}

size_t RaAttention::inputs_scratch_elems(int B, int T) const {
    const size_t N = size_t(B) * T;
    if (weights_form_ || in_kernel_) return N * 3 * cfg_.n_embd;   // dqkv (weights form: d[q̃ | k̃ | v])
    const size_t disc = disc_ ? 2 * N * cfg_.n_head * operand_width() : 0;
    return N * 3 * cfg_.n_embd + 2 * N * cfg_.n_head * folded_width() + disc;   // dqkv, dq̃, dk̃ (+ disc)
}

DiscChannelDims RaAttention::disc_dims(const StepContext& c) const {
    DiscChannelDims d;
    d.N = c.B * c.T;
    d.H = cfg_.n_head;
    d.D = cfg_.head_dim();
    d.k_stride = 3 * cfg_.n_embd;
    d.W = folded_width();
    d.split = split();
    d.scale = 1.0f / std::sqrt(float(cfg_.head_dim()));
    d.pad = disc_pad();
    return d;
}

RaFoldDims RaAttention::fold_dims(const StepContext& c) const {
    RaFoldDims f;
    f.N = c.B * c.T;
    f.H = f.Hk = cfg_.n_head;
    f.D = cfg_.head_dim();
    f.q_stride = f.k_stride = 3 * cfg_.n_embd;
    f.n_gates = n_gates();
    f.g_std_fixed = cfg_.ra.g_std;
    f.g_rec_fixed = cfg_.ra.g_rec;
    return f;
}

RaLowRankDims RaAttention::lowrank_dims(const StepContext& c) const {
    RaLowRankDims f;
    f.N = c.B * c.T;
    f.H = cfg_.n_head;
    f.D = cfg_.head_dim();
    f.R = cfg_.ra.rank;
    f.q_stride = f.k_stride = 3 * cfg_.n_embd;
    f.n_gates = n_gates();
    f.g_std_fixed = cfg_.ra.g_std;
    f.g_rec_fixed = cfg_.ra.g_rec;
    return f;
}

RaLowRankDims RaAttention::weights_dims() const {
    RaLowRankDims f;
    f.N = cfg_.n_embd;   // c_attn's input columns
    f.H = cfg_.n_head;
    f.D = cfg_.head_dim();
    f.R = cfg_.ra.rank;
    f.n_gates = n_gates();
    f.g_std_fixed = cfg_.ra.g_std;
    f.g_rec_fixed = cfg_.ra.g_rec;
    return f;
}

void RaAttention::inputs_fwd(const StepContext& c, Ten in) {
    if (weights_form_) {   // c_attn with the folded weights writes [q̃ | k̃ | v]
        const int E = cfg_.n_embd;
        c.ops->ra_lowrank_weights_fwd(w_eff_, b_eff_, packed_.w, packed_.b, w_lowrank_, g_std_, g_rec_,
                                      weights_dims());
        c.ops->matmul_fwd(packed_.qkv, in, w_eff_, b_eff_, c.B * c.T, E, 3 * E);
        return;
    }
    packed_.forward(c, cfg_, in);
    if (in_kernel_) return;
    const Ten q = PackedQkv::part(packed_.qkv, 0, cfg_, c), k = PackedQkv::part(packed_.qkv, 1, cfg_, c);
    if (lowrank_)
        c.ops->ra_lowrank_fwd(qt_, kt_, q, k, w_lowrank_, g_std_, g_rec_, lowrank_dims(c));
    else
        c.ops->ra_fold_fwd(qt_, kt_, q, k, g_std_, g_rec_, fold_dims(c));
    if (disc_) c.ops->disc_channel_fwd(qd_, kd_, qt_, kt_, k, disc_u_, g_disc_, disc_dims(c));
}

// Attention on the folded operands: scale 1/sqrt(D) (not 1/sqrt(Dqk)); with a band only the
// reciprocal channels (the tail from band_split on) are limited to i - j <= W.
AttentionOperands RaAttention::folded(Ten qt, Ten kt, Ten v, const StepContext& c) const {
    AttnDims d = base_dims(c);
    const int D = cfg_.head_dim();
    d.Hq = d.Hkv = cfg_.n_head;
    d.Dqk = operand_width();
    d.Dv = D;
    d.q_stride = d.k_stride = cfg_.n_head * d.Dqk;
    d.v_stride = 3 * cfg_.n_embd;
    d.scale = 1.0f / std::sqrt(float(D));
    d.band = cfg_.ra.band;
    d.band_split = split() + (disc_ ? 1 + disc_pad() : 0);   // the bias channel (and its pad) is never banded
    return {qt, kt, v, d};
}

// With the fold inside the kernel the operands are the packed q, k (rows 3E apart) under the folded
// attention's dims (Dqk = 2D): ra_attention_fwd/bwd take them with fold_dims().
AttentionOperands RaAttention::operands(const StepContext& c) const {
    if (weights_form_) return PackedQkv::operands(packed_.qkv, cfg_, c, base_dims(c));   // q̃ | k̃ | v, width D
    if (in_kernel_) return in_kernel_operands(packed_.qkv, c);
    return folded(disc_ ? qd_ : qt_, disc_ ? kd_ : kt_, PackedQkv::part(packed_.qkv, 2, cfg_, c), c);
}

// Scratch: dqkv [N,3E], dq̃, dk̃ [N,H,folded width], then (disc) the gradients of the widened operands.
RaAttention::FoldGrads RaAttention::fold_grads(const StepContext& c, Ten scratch) const {
    const size_t N = size_t(c.B) * c.T, n3 = N * 3 * cfg_.n_embd, nt = N * cfg_.n_head * folded_width();
    const size_t nd = N * cfg_.n_head * operand_width();
    FoldGrads g{scratch.sub(n3, nt), scratch.sub(n3 + nt, nt), {}, {}};
    if (disc_) {
        g.dqd = scratch.sub(n3 + 2 * nt, nd);
        g.dkd = scratch.sub(n3 + 2 * nt + nd, nd);
    }
    return g;
}

AttentionOperands RaAttention::in_kernel_operands(Ten packed, const StepContext& c) const {
    AttentionOperands a = folded(PackedQkv::part(packed, 0, cfg_, c), PackedQkv::part(packed, 1, cfg_, c),
                                 PackedQkv::part(packed, 2, cfg_, c), c);
    a.d.q_stride = a.d.k_stride = 3 * cfg_.n_embd;
    return a;
}

AttentionOperands RaAttention::operand_grads(const StepContext& c, Ten scratch) const {
    if (weights_form_) return PackedQkv::operands(scratch, cfg_, c, base_dims(c));
    if (in_kernel_) return in_kernel_operands(scratch, c);
    const FoldGrads g = fold_grads(c, scratch);
    return folded(disc_ ? g.dqd : g.dqt, disc_ ? g.dkd : g.dkt, PackedQkv::part(scratch, 2, cfg_, c), c);
}

void RaAttention::inputs_bwd(const StepContext& c, Ten in, Ten din, Ten scratch) {
    const Ten dg_std = g_std_.present() ? g_std_.as(Space::Grad) : Ten{};
    const Ten dg_rec = g_rec_.present() ? g_rec_.as(Space::Grad) : Ten{};
    if (weights_form_) {   // the GEMM's weight gradient, then back through the fold
        const int E = cfg_.n_embd;
        const Ten dqkv = scratch.sub(0, size_t(c.B) * c.T * 3 * E);
        c.ops->zero(dw_eff_);
        c.ops->zero(db_eff_);
        c.ops->matmul_bwd(din, dw_eff_, db_eff_, dqkv, in, w_eff_, c.B * c.T, E, 3 * E);
        c.ops->ra_lowrank_weights_bwd(packed_.w.as(Space::Grad), packed_.b.as(Space::Grad), w_lowrank_.as(Space::Grad),
                                      dg_std, dg_rec, dw_eff_, db_eff_, packed_.w, packed_.b, w_lowrank_, g_std_,
                                      g_rec_, weights_dims());
        return;
    }
    if (in_kernel_) {   // ra_attention_bwd wrote dq, dk, dv and the gates' gradients
        packed_.backward(c, cfg_, in, scratch.sub(0, size_t(c.B) * c.T * 3 * cfg_.n_embd), din);
        return;
    }
    const FoldGrads g = fold_grads(c, scratch);
    const Ten q = PackedQkv::part(packed_.qkv, 0, cfg_, c), k = PackedQkv::part(packed_.qkv, 1, cfg_, c);
    const Ten dq = PackedQkv::part(scratch, 0, cfg_, c), dk = PackedQkv::part(scratch, 1, cfg_, c);
    if (disc_)   // drop the bias channel from the operand gradients; u, g_disc get theirs
        c.ops->disc_channel_bwd(g.dqt, g.dkt, {}, disc_u_.as(Space::Grad), g_disc_.as(Space::Grad), g.dqd, g.dkd, k,
                                disc_u_, g_disc_, disc_dims(c));
    // Without the discoverability bias (which adds to dk afterwards), the fold's pass also takes
    // c_attn's bias gradient from the dq, dk it writes and the dv beside them: no column-sum pass.
    const bool fold_bias = !lowrank_ && !disc_;
    if (lowrank_)
        c.ops->ra_lowrank_bwd(dq, dk, w_lowrank_.as(Space::Grad), dg_std, dg_rec, g.dqt, g.dkt, q, k, w_lowrank_,
                              g_std_, g_rec_, lowrank_dims(c));
    else
        c.ops->ra_fold_bwd(dq, dk, dg_std, dg_rec, g.dqt, g.dkt, q, k, g_std_, g_rec_, fold_dims(c),
                           fold_bias ? packed_.b.as(Space::Grad) : Ten{},
                           fold_bias ? PackedQkv::part(scratch, 2, cfg_, c) : Ten{});
    if (disc_)   // the bias's path into k, after the fold's backward has overwritten dk
        c.ops->disc_channel_bwd({}, {}, dk, {}, {}, g.dqd, g.dkd, k, disc_u_, g_disc_, disc_dims(c));
    packed_.backward(c, cfg_, in, scratch.sub(0, size_t(c.B) * c.T * 3 * cfg_.n_embd), din, !fold_bias);
}

void RaAttention::attend_fwd(const StepContext& c, Ten out, Ten lse, const AttentionOperands& a) {
    if (!in_kernel_) return AttentionBase::attend_fwd(c, out, lse, a);
    c.ops->ra_attention_fwd(out, lse, a.q, a.k, a.v, g_std_, g_rec_, fold_dims(c), a.d);
}

void RaAttention::attend_bwd(const StepContext& c, const AttentionOperands& g, Ten dout, Ten out, Ten lse,
                             const AttentionOperands& a) {
    if (!in_kernel_) return AttentionBase::attend_bwd(c, g, dout, out, lse, a);
    const Ten dg_std = g_std_.present() ? g_std_.as(Space::Grad) : Ten{};
    const Ten dg_rec = g_rec_.present() ? g_rec_.as(Space::Grad) : Ten{};
    c.ops->ra_attention_bwd(g.q, g.k, g.v, dg_std, dg_rec, dout, out, lse, a.q, a.k, a.v, g_std_, g_rec_,
                            fold_dims(c), a.d);
}

std::string RaAttention::describe_kind() const {
    const std::string gates = fmt::format("{} {} gates g_std={} g_rec={}", cfg_.ra.learnable ? "learnable" : "fixed",
                                          cfg_.ra.gates == GateScope::per_head ? "per-head" : "per-layer",
                                          cfg_.ra.g_std, cfg_.ra.g_rec);
    const std::string band = fmt::format("{}{}", cfg_.ra.band > 0 ? fmt::format("band W={}", cfg_.ra.band) : "full transpose",
                                         disc_ ? ", discoverability bias" : "");
    if (lowrank_)
        return fmt::format("same-FLOP low-rank RA (H={}, D={}, R={}, {}, {}, {} form)", cfg_.n_head, cfg_.head_dim(),
                           cfg_.ra.rank, band, gates, weights_form_ ? "weights" : "rows");
    return fmt::format("exact RA via the fold{} (H={}, D={}, Dqk={}, {}, {})", in_kernel_ ? " inside the kernel" : "",
                       cfg_.n_head, cfg_.head_dim(), 2 * cfg_.head_dim(), band, gates);
}

}  // namespace gpt
