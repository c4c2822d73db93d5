#include "model/mlp_m3_latent.h"

#include <fmt/format.h>

#include "common/error.h"

namespace gpt {

void M3LatentReciprocity::declare(ParamTable& p) {
    const std::string pre = fmt::format("h.{}.mlp.m3.", layer_);
    c_ = p.add(pre + "c", {cfg_.hidden(), cfg_.mla.latent}, Init::normal, 0.02f, true);
    alpha_ = p.add(pre + "alpha", {1}, Init::constant, 0.2f, false);
    if (producer()) alpha_next_ = p.add(pre + "alpha_next", {1}, Init::constant, 0.2f, false);
}

void M3LatentReciprocity::plan(ActivationPlan& a, BlockLink& link, int B, int T) {
    const size_t N = size_t(B) * T, L = cfg_.mla.latent;
    const std::string pre = fmt::format("h.{}.m3_", layer_);
    link_ = &link;
    path_.x = a.add(Space::Act, N * L, "mlp", pre + "k_lat_scaled");
    path_.u = c_;
    plan_low_rank_path(a, path_, cfg_.n_embd, int(L), pre);
    link.d_k_lat = a.add(Space::Act, N * L, "activation grads", pre + "d_k_lat");
    if (producer()) {
        link.m3_latent = a.add(Space::Act, N * L, "mlp", pre + "to_next_latent");
        link.d_m3_latent = a.add(Space::Act, N * L, "activation grads", pre + "d_to_next_latent");
        link.m3_alpha_next = alpha_next_;
    }
}

void M3LatentReciprocity::forward(const StepContext& c, Ten h) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), L = cfg_.mla.latent;
    GPT_CHECK(link_->k_lat.present(), "m3: the attention of this block did not hand over its k_lat (MLA only)");
    ops.add_scaled_fwd(path_.x, {}, link_->k_lat, alpha_, size_t(N) * L);
    // h C: the din path of matmul_bwd is the plain product dout . w ("in" is read only for dw).
    if (producer()) ops.matmul_bwd(link_->m3_latent, {}, {}, h, link_->m3_latent, c_, N, L, F);
}

void M3LatentReciprocity::backward(const StepContext& c, Ten dx) {
    const int N = c.B * c.T, L = cfg_.mla.latent;
    c.ops->add_scaled_bwd(link_->d_k_lat, alpha_.as(Space::Grad), dx, link_->k_lat, alpha_, size_t(N) * L);
}

void M3LatentReciprocity::backward_handover(const StepContext& c, Ten h, Ten dh) {
    if (!producer()) return;
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), L = cfg_.mla.latent;
    // m3_latent = h C: dh += d_m3_latent C^T, dC += h^T d_m3_latent.
    ops.matmul_fwd_add(dh, link_->d_m3_latent, c_, dh, N, L, F);
    ops.matmul_bwd({}, c_.as(Space::Grad), {}, h, link_->d_m3_latent, c_, N, L, F);
}

}  // namespace gpt
