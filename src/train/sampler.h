// Text generation from the model: temperature, top-k, seeded (SPEC: `sample` subcommand and the
// samples printed during training).
#pragma once
#include <string>

#include "data/tokenizer.h"
#include "model/config.h"
#include "train/session.h"

namespace gpt {

std::string generate(Session& s, const Tokenizer& tok, const std::string& prompt, int max_new_tokens,
                     float temperature, int top_k, uint64_t seed);

}  // namespace gpt
