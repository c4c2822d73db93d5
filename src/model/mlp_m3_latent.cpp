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
    e_ = a.add(Space::Act, N * F, "mlp", pre + "from_latent");
    h_out_ = a.add(Space::Act, N * F, "mlp", pre + "h_out");
    link.d_k_lat = a.add(Space::Act, N * L, "activation grads", pre + "d_k_lat");
    if (producer()) {
        link.m3_latent = a.add(Space::Act, N * L, "mlp", pre + "to_next_latent");
        link.d_m3_latent = a.add(Space::Act, N * L, "activation grads", pre + "d_to_next_latent");
        link.m3_alpha_next = alpha_next_;
    }
}

size_t M3LatentReciprocity::grad_scratch_elems(int B, int T) const {
    return size_t(B) * T * cfg_.hidden();   // de, then the producer's dh
}

Ten M3LatentReciprocity::forward(const StepContext& c, Ten h_in, Ten h) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), L = cfg_.mla.latent;
    GPT_CHECK(link_->k_lat.present(), "m3: the attention of this block did not hand over its k_lat (MLA only)");
    ops.matmul_fwd(e_, link_->k_lat, c_, {}, N, L, F);   // k_lat C^T, C [F,L] as the [out, in] weight
    ops.add_scaled_fwd(h_out_, h_in, e_, alpha_, size_t(N) * F);
    // h C: the din path of matmul_bwd is the plain product dout . w ("in" is read only for dw).
    if (producer()) ops.matmul_bwd(link_->m3_latent, {}, {}, h, link_->m3_latent, c_, N, L, F);
    return h_out_;
}

void M3LatentReciprocity::backward(const StepContext& c, Ten dh_out, Ten scratch) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), L = cfg_.mla.latent;
    const size_t nf = size_t(N) * F;
    const Ten de = scratch.sub(0, nf);
    ops.add_scaled_bwd(de, alpha_.as(Space::Grad), dh_out, e_, alpha_, nf);
    ops.matmul_bwd(link_->d_k_lat, c_.as(Space::Grad), {}, de, link_->k_lat, c_, N, L, F);
}

void M3LatentReciprocity::backward_handover(const StepContext& c, Ten h, Ten dh, Ten scratch) {
    if (!producer()) return;
    Ops& ops = *c.ops;
    const int N = c.B * c.T, F = cfg_.hidden(), L = cfg_.mla.latent;
    const size_t nf = size_t(N) * F;
    const Ten dh_extra = scratch.sub(0, nf);
    // m3_latent = h C: dh += d_m3_latent C^T, dC += h^T d_m3_latent.
    ops.matmul_fwd(dh_extra, link_->d_m3_latent, c_, {}, N, L, F);
    ops.add_inplace(dh, dh_extra, nf);
    ops.matmul_bwd({}, c_.as(Space::Grad), {}, h, link_->d_m3_latent, c_, N, L, F);
}

}  // namespace gpt
