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
    const size_t N = size_t(B) * T, F = cfg_.hidden(), L = cfg_.mla.latent;
    const std::string pre = fmt::format("h.{}.m3_", layer_);
    link_ = &link;
    k_lat_scaled_ = a.add(Space::Act, N * L, "mlp", pre + "k_lat_scaled");
    h_out_ = a.add(Space::Act, N * F, "mlp", pre + "h_out");
    link.d_k_lat = a.add(Space::Act, N * L, "activation grads", pre + "d_k_lat");
    if (producer()) {
        link.m3_latent = a.add(Space::Act, N * L, "mlp", pre + "to_next_latent");
        link.d_m3_latent = a.add(Space::Act, N * L, "activation grads", pre + "d_to_next_latent");
        link.m3_alpha_next = alpha_next_;
    }
}

size_t M3LatentReciprocity::grad_scratch_elems(int B, int T) const {
    return size_t(B) * T * cfg_.mla.latent;   // d(alpha_3 k_lat)
}

Ten M3LatentReciprocity::forward(const StepContext& c, Ten h_in, Ten h) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), L = cfg_.mla.latent;
    GPT_CHECK(link_->k_lat.present(), "m3: the attention of this block did not hand over its k_lat (MLA only)");
    ops.add_scaled_fwd(k_lat_scaled_, {}, link_->k_lat, alpha_, size_t(N) * L);
    ops.matmul_fwd_add(h_out_, k_lat_scaled_, c_, h_in, N, L, F);   // C [F,L] as the [out, in] weight
    // h C: the din path of matmul_bwd is the plain product dout . w ("in" is read only for dw).
    if (producer()) ops.matmul_bwd(link_->m3_latent, {}, {}, h, link_->m3_latent, c_, N, L, F);
    return h_out_;
}

void M3LatentReciprocity::backward(const StepContext& c, Ten dh_out, Ten scratch) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), L = cfg_.mla.latent;
    const size_t nl = size_t(N) * L;
    const Ten dscaled = scratch.sub(0, nl);
    ops.matmul_bwd(dscaled, c_.as(Space::Grad), {}, dh_out, k_lat_scaled_, c_, N, L, F);
    ops.add_scaled_bwd(link_->d_k_lat, alpha_.as(Space::Grad), dscaled, link_->k_lat, alpha_, nl);
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
