#include "model/mlp_m1_gate.h"

#include <fmt/format.h>

namespace gpt {

void M1GateProducer::declare(ParamTable& p) {
    const std::string pre = fmt::format("h.{}.mlp.m1.", layer_);
    w1_ = p.add(pre + "w1", {kHidden, cfg_.hidden()}, Init::normal, 0.02f, true);
    w2_ = p.add(pre + "w2", {cfg_.n_head, kHidden}, Init::normal, 0.02f, true);
    b2_ = p.add(pre + "b2", {cfg_.n_head}, Init::constant, 2.0f, false);
}

void M1GateProducer::plan(ActivationPlan& a, BlockLink& link, int B, int T) {
    const size_t N = size_t(B) * T;
    const std::string pre = fmt::format("h.{}.m1_", layer_);
    link_ = &link;
    pre_ = a.add(Space::Act, N * kHidden, "mlp", pre + "pre");
    act_ = a.add(Space::Act, N * kHidden, "mlp", pre + "gelu");
    link.m1_gate = a.add(Space::Act, N * cfg_.n_head, "mlp", pre + "gate");
    link.d_m1_gate = a.add(Space::Act, N * cfg_.n_head, "activation grads", pre + "d_gate");
}

size_t M1GateProducer::grad_scratch_elems(int B, int T) const {
    const size_t N = size_t(B) * T;
    return N * cfg_.n_head + N * kHidden + 128;   // dz, dact (+ alignment)
}

void M1GateProducer::forward(const StepContext& c, Ten h) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, H = cfg_.n_head;
    ops.matmul_fwd(pre_, h, w1_, {}, N, cfg_.hidden(), kHidden, act_);
    ops.matmul_fwd(link_->m1_gate, act_, w2_, b2_, N, kHidden, H);
    ops.sigmoid_fwd(link_->m1_gate, link_->m1_gate, size_t(N) * H);
}

Ten M1GateProducer::backward_to_input(const StepContext& c, Ten h, Ten scratch) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, H = cfg_.n_head, F = cfg_.hidden();
    const size_t nz = size_t(N) * H, nact = size_t(N) * kHidden;
    const size_t o1 = (nz + 63) / 64 * 64;
    const Ten dz = scratch.sub(0, nz), dact = scratch.sub(o1, nact);
    ops.sigmoid_bwd(dz, link_->m1_gate, link_->d_m1_gate, nz);
    ops.matmul_bwd(dact, w2_.as(Space::Grad), b2_.as(Space::Grad), dz, act_, w2_, N, kHidden, H);
    ops.gelu_bwd(dact, pre_, dact, nact);
    ops.matmul_bwd({}, w1_.as(Space::Grad), {}, dact, h, w1_, N, F, kHidden);
    return dact;
}

}  // namespace gpt
