// Defaults of the variant operations of Ops (ops.h): a backend that has not implemented one fails
// with a message naming the method and the backend, instead of computing something else.
#include <fmt/format.h>

#include "common/error.h"
#include "model/ops.h"

namespace gpt {

namespace {
[[noreturn]] void missing(const Ops& ops, const char* method) {
    fail(fmt::format("{}: not implemented by the {} backend; run this model variant on a backend "
                     "that has it (the cpu backend implements every variant)",
                     method, ops.name()));
}
}  // namespace

void Ops::ra_fold_fwd(Ten, Ten, Ten, Ten, Ten, Ten, const RaFoldDims&) { missing(*this, "ra_fold_fwd"); }
void Ops::ra_attention_fwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, const RaFoldDims&, const AttnDims&) {
    missing(*this, "ra_attention_fwd");
}
void Ops::ra_attention_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, const RaFoldDims&,
                           const AttnDims&) {
    missing(*this, "ra_attention_bwd");
}
void Ops::ra_fold_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, const RaFoldDims&, Ten, Ten) {
    missing(*this, "ra_fold_bwd");
}
void Ops::ra_lowrank_fwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, const RaLowRankDims&) {
    missing(*this, "ra_lowrank_fwd");
}
void Ops::ra_lowrank_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, const RaLowRankDims&) {
    missing(*this, "ra_lowrank_bwd");
}
void Ops::ra_lowrank_weights_fwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, const RaLowRankDims&) {
    missing(*this, "ra_lowrank_weights_fwd");
}
void Ops::ra_lowrank_weights_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, const RaLowRankDims&) {
    missing(*this, "ra_lowrank_weights_bwd");
}
void Ops::head_map_fwd(Ten, Ten, Ten, const HeadMapDims&) { missing(*this, "head_map_fwd"); }
void Ops::head_map_bwd(Ten, Ten, Ten, Ten, Ten, const HeadMapDims&) { missing(*this, "head_map_bwd"); }
void Ops::ract_gate_fwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, const AttnDims&, const RactDims&) {
    missing(*this, "ract_gate_fwd");
}
void Ops::ract_gate_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, const AttnDims&,
                        const RactDims&) {
    missing(*this, "ract_gate_bwd");
}
void Ops::ract_gate_coef(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, const AttnDims&,
                         const RactDims&) {
    missing(*this, "ract_gate_coef");
}
void Ops::ract_select_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, const AttnDims&, const RactDims&) {
    missing(*this, "ract_select_bwd");
}
void Ops::ract_entropy_fwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, float, const AttnDims&) {
    missing(*this, "ract_entropy_fwd");
}
void Ops::ract_entropy_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, float, bool, const AttnDims&) {
    missing(*this, "ract_entropy_bwd");
}
void Ops::copy_heads(Ten, Ten, const HeadCopyDims&) { missing(*this, "copy_heads"); }
void Ops::head_gate_fwd(Ten, Ten, Ten, Ten, float, int, int, int) { missing(*this, "head_gate_fwd"); }
void Ops::head_gate_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, float, int, int, int) {
    missing(*this, "head_gate_bwd");
}
void Ops::sigmoid_fwd(Ten, Ten, size_t) { missing(*this, "sigmoid_fwd"); }
void Ops::sigmoid_bwd(Ten, Ten, Ten, size_t) { missing(*this, "sigmoid_bwd"); }
void Ops::topk_rows(Ten, Ten, Ten, Ten, Ten, const AttnDims&, int) { missing(*this, "topk_rows"); }
void Ops::sparse_mix_fwd(Ten, Ten, Ten, Ten, int, int, int) { missing(*this, "sparse_mix_fwd"); }
void Ops::sparse_mix_bwd(Ten, Ten, Ten, Ten, int, int, int) { missing(*this, "sparse_mix_bwd"); }
void Ops::add_scaled_fwd(Ten, Ten, Ten, Ten, size_t) { missing(*this, "add_scaled_fwd"); }
void Ops::add_scaled_bwd(Ten, Ten, Ten, Ten, Ten, size_t) { missing(*this, "add_scaled_bwd"); }
void Ops::disc_channel_fwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, const DiscChannelDims&) {
    missing(*this, "disc_channel_fwd");
}
void Ops::disc_channel_bwd(Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, Ten, const DiscChannelDims&) {
    missing(*this, "disc_channel_bwd");
}

}  // namespace gpt
