#include "train/presets.h"

#include <array>

#include "common/error.h"

namespace gpt {
namespace {

struct PresetShape {
    const char* name;
    int n_layer, n_embd, n_head, block_size;
};

// gpt2-tiny and custom match the ModelConfig defaults; gpt2-mini is the small model of the
// sotu ablation (head dim 32, wide enough for ra_lowrank R <= 16).
constexpr std::array<PresetShape, 7> kPresets{{
    {"gpt2-tiny", 4, 128, 4, 256},
    {"gpt2-mini", 6, 256, 8, 256},
    {"gpt2", 12, 768, 12, 1024},
    {"gpt2-medium", 24, 1024, 16, 1024},
    {"gpt2-large", 36, 1280, 20, 1024},
    {"gpt2-xl", 48, 1600, 25, 1024},
    {"custom", 4, 128, 4, 256},
}};

}  // namespace

std::vector<std::string> model_preset_names() {
    std::vector<std::string> names;
    for (const auto& p : kPresets) names.emplace_back(p.name);
    return names;
}

void apply_model_preset(ModelConfig& model, const std::string& name) {
    for (const auto& p : kPresets) {
        if (name != p.name) continue;
        model.preset = p.name;
        model.n_layer = p.n_layer;
        model.n_embd = p.n_embd;
        model.n_head = p.n_head;
        model.block_size = p.block_size;
        return;
    }
    std::string allowed;
    for (const auto& p : kPresets) allowed += std::string(allowed.empty() ? "" : ", ") + p.name;
    fail("model.preset: unknown preset '" + name + "'; allowed: " + allowed);
}

ModelConfig model_preset(const std::string& name) {
    ModelConfig model;
    apply_model_preset(model, name);
    return model;
}

}  // namespace gpt
