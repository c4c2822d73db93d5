#include "model/attention_baseline.h"

#include <cmath>

#include <fmt/format.h>

namespace gpt {

// ---- PackedQkv ---------------------------------------------------------------------------------

void PackedQkv::declare(ParamTable& p, const ModelConfig& cfg, int layer) {
    const int64_t E = cfg.n_embd;
    const std::string pre = fmt::format("h.{}.attn.", layer);
    w = p.add(pre + "c_attn.weight", {3 * E, E}, Init::normal, 0.02f, true);
    b = p.add(pre + "c_attn.bias", {3 * E}, Init::zeros, 0.f, false);
}

void PackedQkv::plan(ActivationPlan& a, const ModelConfig& cfg, int layer, int B, int T) {
    qkv = a.add(Space::Act, size_t(B) * T * 3 * cfg.n_embd, "attention", fmt::format("h.{}.qkv", layer));
}

void PackedQkv::forward(const StepContext& c, const ModelConfig& cfg, Ten in) const {
    const int E = cfg.n_embd;
    c.ops->matmul_fwd(qkv, in, w, b, c.B * c.T, E, 3 * E);
}

void PackedQkv::backward(const StepContext& c, const ModelConfig& cfg, Ten in, Ten dqkv, Ten din, bool bias_grad) const {
    const int E = cfg.n_embd;
    c.ops->matmul_bwd(din, w.as(Space::Grad), bias_grad ? b.as(Space::Grad) : Ten{}, dqkv, in, w, c.B * c.T, E, 3 * E);
}

Ten PackedQkv::part(Ten packed, int which, const ModelConfig& cfg, const StepContext& c) {
    const size_t n3 = size_t(c.B) * c.T * 3 * cfg.n_embd, off = size_t(which) * cfg.n_embd;
    return packed.sub(off, n3 - off);
}

// ---- BaselineAttention -------------------------------------------------------------------------

BaselineAttention::BaselineAttention(const ModelConfig& cfg, int layer) : AttentionBase(cfg, layer) {}

void BaselineAttention::declare_inputs(ParamTable& p) { packed_.declare(p, cfg_, layer_); }

void BaselineAttention::plan_inputs(ActivationPlan& a, int B, int T) { packed_.plan(a, cfg_, layer_, B, T); }

size_t BaselineAttention::inputs_scratch_elems(int B, int T) const {
    return size_t(B) * T * 3 * cfg_.n_embd;   // dqkv
}

void BaselineAttention::inputs_fwd(const StepContext& c, Ten in) { packed_.forward(c, cfg_, in); }

AttentionOperands PackedQkv::operands(Ten packed, const ModelConfig& cfg, const StepContext& c, AttnDims d) {
    d.Hq = d.Hkv = cfg.n_head;
    d.Dqk = d.Dv = cfg.head_dim();
    d.q_stride = d.k_stride = d.v_stride = 3 * cfg.n_embd;
    d.scale = 1.0f / std::sqrt(float(d.Dqk));
    return {PackedQkv::part(packed, 0, cfg, c), PackedQkv::part(packed, 1, cfg, c),
            PackedQkv::part(packed, 2, cfg, c), d};
}

AttentionOperands BaselineAttention::operands(const StepContext& c) const {
    return PackedQkv::operands(packed_.qkv, cfg_, c, base_dims(c));
}

AttentionOperands BaselineAttention::operand_grads(const StepContext& c, Ten scratch) const {
    return PackedQkv::operands(scratch, cfg_, c, base_dims(c));
}

void BaselineAttention::inputs_bwd(const StepContext& c, Ten in, Ten din, Ten scratch) {
    const Ten dqkv = scratch.sub(0, size_t(c.B) * c.T * 3 * cfg_.n_embd);
    packed_.backward(c, cfg_, in, dqkv, din);
}

std::string BaselineAttention::describe_kind() const {
    return fmt::format("baseline causal MHA (H={}, D={})", cfg_.n_head, cfg_.head_dim());
}

}  // namespace gpt
