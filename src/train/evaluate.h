// Validation loss over a fixed, seed-determined set of batches (the loader is reset each time,
// so every evaluation sees the same tokens), in the same precision as training.
#pragma once
#include "data/loader.h"
#include "train/session.h"

namespace gpt {

double evaluate(Session& s, TokenLoader& val, int batches, int B, int T);

// The validation loader's seed: fixed by the run's seed, different from the training order.
inline uint64_t validation_seed(const TrainConfig& tc) { return tc.seed ^ 0x76616c6964617465ull; }

}  // namespace gpt
