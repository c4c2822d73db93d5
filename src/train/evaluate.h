// Validation loss over a fixed, seed-determined set of batches (the loader is reset each time,
// so every evaluation sees the same tokens), in the same precision as training.
#pragma once
#include "data/loader.h"
#include "train/session.h"

namespace gpt {

double evaluate(Session& s, TokenLoader& val, int batches, int B, int T);

}  // namespace gpt
