// Named model shapes (SPEC §1) for model.preset.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace gpt {

// The model shape by name: gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl (SPEC §1), the small
// gpt2-tiny and gpt2-mini for tests and CPU runs, and "custom" (the gpt2-tiny shape, meant to be
// changed key by key). Sets preset, n_layer, n_embd, n_head and block_size; every other field
// keeps its default. Throws gpt::Error listing the names for an unknown one.
ModelConfig model_preset(const std::string& name);

// Copies the preset's shape (n_layer, n_embd, n_head, block_size, preset) into an existing model
// config, leaving every other field alone.
void apply_model_preset(ModelConfig& model, const std::string& name);

std::vector<std::string> model_preset_names();

}  // namespace gpt
