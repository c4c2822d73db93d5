// Learning-rate schedule (SPEC §3): linear warmup from 0, cosine to min_lr at lr_decay_iters,
// constant min_lr after.
#pragma once
#include "model/config.h"

namespace gpt {

// step is 1-based (the optimizer step about to be taken).
float learning_rate(const OptimConfig& o, int step, int max_iters);

}  // namespace gpt
