// Which unit implements which configured variant. Variants not yet implemented are refused here
// with a message naming the option, rather than silently falling back to the baseline (the
// prototype's ablation steps collapsed onto the same model that way).
#include <fmt/format.h>

#include "common/error.h"
#include "model/attention_baseline.h"
#include "model/mlp_standard.h"
#include "model/units.h"

namespace gpt {

static const char* attention_name(AttentionKind k) {
    switch (k) {
        case AttentionKind::baseline: return "baseline";
        case AttentionKind::ra: return "ra";
        case AttentionKind::ra_lowrank: return "ra_lowrank";
        case AttentionKind::mla: return "mla";
        case AttentionKind::ra_mla: return "ra_mla";
    }
    return "?";
}

std::unique_ptr<AttentionUnit> make_attention_unit(const ModelConfig& cfg, int layer) {
    if (cfg.ract.enabled)
        fail("model.ract.enabled: RA-CT gating is not implemented in the model yet "
             "(its CPU reference is in kernels/cpu/variant_*); set it to false");
    switch (cfg.attention) {
        case AttentionKind::baseline: return std::make_unique<BaselineAttention>(cfg, layer);
        default:
            fail(fmt::format("model.attention: '{}' is not wired into the model yet; allowed now: "
                             "baseline", attention_name(cfg.attention)));
    }
}

std::unique_ptr<MlpUnit> make_mlp_unit(const ModelConfig& cfg, int layer) {
    if (cfg.m1 || cfg.m2 || cfg.m3)
        fail("model.m1/m2/m3: the MLP mechanisms are not wired into the model yet; set them to false");
    return std::make_unique<StandardMlp>(cfg, layer);
}

}  // namespace gpt
