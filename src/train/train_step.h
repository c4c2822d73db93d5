// One optimizer step, shared by the trainer, the dry run and the benchmark: grad_accum
// micro-batches of forward + backward into the zeroed gradient buffer, then the optimizer.
#pragma once
#include <cstdint>
#include <functional>

#include "train/optimizer.h"
#include "train/session.h"

namespace gpt {

struct StepOutcome {
    double loss = 0;            // mean over the micro-batches
    OptimizerStepInfo info;
};

// next_batch(inputs, targets) fills B*T tokens each. The dropout stream of each micro-batch is
// keyed by (seed, step, micro), so a resumed run draws the same masks.
using BatchSource = std::function<void(int32_t* inputs, int32_t* targets)>;
StepOutcome train_step(Session& s, int64_t step, const BatchSource& next_batch);

}  // namespace gpt
