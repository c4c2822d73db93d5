#include "model/mlp_m2_mix.h"

#include <fmt/format.h>

#include "common/error.h"

namespace gpt {

void M2CrossTokenMix::declare(ParamTable& p) {
    const std::string pre = fmt::format("h.{}.mlp.m2.", layer_);
    const int64_t F = cfg_.hidden(), r = cfg_.m2_rank;
    w_down_ = p.add(pre + "w_down", {r, F}, Init::normal, 0.02f, true);
    w_up_ = p.add(pre + "w_up", {F, r}, Init::normal, 0.02f, true);
    alpha_ = p.add(pre + "alpha", {1}, Init::constant, 0.3f, false);
}

void M2CrossTokenMix::plan(ActivationPlan& a, BlockLink& link, int B, int T) {
    const size_t N = size_t(B) * T, r = cfg_.m2_rank;
    const std::string pre = fmt::format("h.{}.m2_", layer_);
    link_ = &link;
    z_ = a.add(Space::Act, N * r, "mlp", pre + "z");
    agg_ = a.add(Space::Act, N * r, "mlp", pre + "agg");
    path_.x = a.add(Space::Act, N * r, "mlp", pre + "agg_scaled");
    path_.u = w_up_;
    plan_low_rank_path(a, path_, cfg_.n_embd, int(r), pre);
}

size_t M2CrossTokenMix::grad_scratch_elems(int B, int T) const {
    const size_t nr = (size_t(B) * T * cfg_.m2_rank + 63) / 64 * 64;
    return 2 * nr;   // dagg, dz
}

void M2CrossTokenMix::forward(const StepContext& c, Ten h) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), r = cfg_.m2_rank;
    GPT_CHECK(link_->m2_idx.present(), "m2: the attention of this block did not plan M2's sparse rows");
    ops.matmul_fwd(z_, h, w_down_, {}, N, F, r);
    ops.sparse_mix_fwd(agg_, z_, link_->m2_idx, link_->m2_wts, N, r, kTopK);
    ops.add_scaled_fwd(path_.x, {}, agg_, alpha_, size_t(N) * r);
}

Ten M2CrossTokenMix::backward_to_input(const StepContext& c, Ten h, Ten dx, Ten scratch) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), r = cfg_.m2_rank;
    const size_t nr = size_t(N) * r, stride = (nr + 63) / 64 * 64;
    const Ten dagg = scratch.sub(0, nr), dz = scratch.sub(stride, nr);
    ops.add_scaled_bwd(dagg, alpha_.as(Space::Grad), dx, agg_, alpha_, nr);   // dagg = alpha_2 dx
    ops.sparse_mix_bwd(dz, dagg, link_->m2_idx, link_->m2_wts, N, r, kTopK);
    ops.matmul_bwd({}, w_down_.as(Space::Grad), {}, dz, h, w_down_, N, F, r);
    return dz;
}

}  // namespace gpt
