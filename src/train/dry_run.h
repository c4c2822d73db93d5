// The dry run behind `make check`: build a model on tiny shapes, train it for a few optimizer
// steps with gradient accumulation, and verify that the loss is finite and that every parameter
// tensor received a non-zero gradient (a parameter nothing uses is a configuration bug).
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace gpt {

struct DryRunResult {
    bool pass = false;
    std::string description;             // the model's one-line description
    size_t parameters = 0;
    std::vector<double> losses;          // one per optimizer step
    std::vector<std::string> problems;   // empty when pass
};

// steps optimizer steps with grad_accum micro-batches of B x T random tokens.
DryRunResult dry_run(const RunConfig& cfg, int steps = 3, int grad_accum = 2, int B = 2, int T = 16);

}  // namespace gpt
