#include "model/attention_baseline.h"

#include <cmath>

#include <fmt/format.h>

namespace gpt {

BaselineAttention::BaselineAttention(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {}

void BaselineAttention::declare(ParamTable& p) {
    const int64_t E = cfg_.n_embd;
    const std::string pre = fmt::format("h.{}.attn.", layer_);
    const float resid_std = 0.02f / std::sqrt(2.0f * float(cfg_.n_layer));
    w_attn_ = p.add(pre + "c_attn.weight", {3 * E, E}, Init::normal, 0.02f, true);
    b_attn_ = p.add(pre + "c_attn.bias", {3 * E}, Init::zeros, 0.f, false);
    w_proj_ = p.add(pre + "c_proj.weight", {E, E}, Init::normal, resid_std, true);
    b_proj_ = p.add(pre + "c_proj.bias", {E}, Init::zeros, 0.f, false);
}

void BaselineAttention::plan(ActivationPlan& a, int B, int T) {
    const size_t BT = size_t(B) * T, E = cfg_.n_embd;
    const std::string pre = fmt::format("h.{}.", layer_);
    qkv_ = a.add(Space::Act, BT * 3 * E, "attention", pre + "qkv");
    y_ = a.add(Space::Act, BT * E, "attention", pre + "attn_y");
    lse_ = a.add(Space::Stat, size_t(B) * cfg_.n_head * T, "attention", pre + "attn_lse");
}

size_t BaselineAttention::grad_scratch_elems(int B, int T) const {
    return size_t(B) * T * 4 * cfg_.n_embd;   // dqkv + dy
}

AttnDims BaselineAttention::dims(const StepContext& c) const {
    AttnDims d;
    d.B = c.B;
    d.T = c.T;
    d.Hq = d.Hkv = cfg_.n_head;
    d.Dqk = d.Dv = cfg_.head_dim();
    d.q_stride = d.k_stride = d.v_stride = 3 * cfg_.n_embd;
    d.scale = 1.0f / std::sqrt(float(d.Dqk));
    d.dropout = c.training ? cfg_.dropout : 0.f;
    d.seed = c.site_seed(layer_, 0);
    return d;
}

void BaselineAttention::forward(const StepContext& c, Ten in, Ten out) {
    Ops& ops = *c.ops;
    const int BT = c.B * c.T, E = cfg_.n_embd;
    const size_t n = size_t(BT) * E;
    ops.matmul_fwd(qkv_, in, w_attn_, b_attn_, BT, E, 3 * E);
    ops.attention_fwd(y_.sub(0, n), lse_, qkv_.sub(0, 3 * n), qkv_.sub(E, 3 * n - E),
                      qkv_.sub(2 * E, 3 * n - 2 * E), dims(c));
    ops.matmul_fwd(out, y_, w_proj_, b_proj_, BT, E, E);
}

void BaselineAttention::backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) {
    Ops& ops = *c.ops;
    const int BT = c.B * c.T, E = cfg_.n_embd;
    const size_t n = size_t(BT) * E;
    Ten dqkv = scratch.sub(0, 3 * n), dy = scratch.sub(3 * n, n);
    ops.matmul_bwd(dy, w_proj_.as(Space::Grad), b_proj_.as(Space::Grad), dout, y_, w_proj_, BT, E, E);
    ops.attention_bwd(dqkv.sub(0, 3 * n), dqkv.sub(E, 3 * n - E), dqkv.sub(2 * E, 3 * n - 2 * E), dy,
                      y_.sub(0, n), lse_, qkv_.sub(0, 3 * n), qkv_.sub(E, 3 * n - E),
                      qkv_.sub(2 * E, 3 * n - 2 * E), dims(c));
    ops.matmul_bwd(din, w_attn_.as(Space::Grad), b_attn_.as(Space::Grad), dqkv, in, w_attn_, BT, E,
                   3 * E);
}

std::string BaselineAttention::describe() const {
    return fmt::format("baseline causal MHA (H={}, D={})", cfg_.n_head, cfg_.head_dim());
}

}  // namespace gpt
