#include "model/mlp_standard.h"

#include <cmath>

#include <fmt/format.h>

namespace gpt {

StandardMlp::StandardMlp(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {}

void StandardMlp::declare(ParamTable& p) {
    const int64_t E = cfg_.n_embd, F = cfg_.hidden();
    const std::string pre = fmt::format("h.{}.mlp.", layer_);
    const float resid_std = 0.02f / std::sqrt(2.0f * float(cfg_.n_layer));
    w_fc_ = p.add(pre + "c_fc.weight", {F, E}, Init::normal, 0.02f, true);
    b_fc_ = p.add(pre + "c_fc.bias", {F}, Init::zeros, 0.f, false);
    w_proj_ = p.add(pre + "c_proj.weight", {E, F}, Init::normal, resid_std, true);
    b_proj_ = p.add(pre + "c_proj.bias", {E}, Init::zeros, 0.f, false);
}

void StandardMlp::plan(ActivationPlan& a, int B, int T) {
    const size_t BTF = size_t(B) * T * cfg_.hidden();
    const std::string pre = fmt::format("h.{}.", layer_);
    pre_ = a.add(Space::Act, BTF, "mlp", pre + "fc_pre");
    act_ = a.add(Space::Act, BTF, "mlp", pre + "fc_gelu");
}

size_t StandardMlp::grad_scratch_elems(int B, int T) const {
    return size_t(B) * T * cfg_.hidden();
}

void StandardMlp::forward(const StepContext& c, Ten in, Ten out) {
    const int BT = c.B * c.T, E = cfg_.n_embd, F = cfg_.hidden();
    c.ops->matmul_fwd(pre_, in, w_fc_, b_fc_, BT, E, F, act_);
    c.ops->matmul_fwd(out, act_, w_proj_, b_proj_, BT, F, E);
}

void StandardMlp::backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) {
    Ops& ops = *c.ops;
    const int BT = c.B * c.T, E = cfg_.n_embd, F = cfg_.hidden();
    Ten dact = scratch.sub(0, size_t(BT) * F);
    ops.matmul_bwd(dact, w_proj_.as(Space::Grad), b_proj_.as(Space::Grad), dout, act_, w_proj_, BT, F, E);
    ops.gelu_bwd(dact, pre_, dact, size_t(BT) * F);
    ops.matmul_bwd(din, w_fc_.as(Space::Grad), b_fc_.as(Space::Grad), dact, in, w_fc_, BT, E, F);
}

std::string StandardMlp::describe() const {
    return fmt::format("GELU MLP (F={})", cfg_.hidden());
}

}  // namespace gpt
