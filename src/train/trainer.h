// The training loop: micro-batches with gradient accumulation, the optimizer, evaluation, metrics,
// samples and checkpoints; resumes from the newest checkpoint in the run directory and continues
// the exact same sequence.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace gpt {

struct TrainResult {
    int64_t first_step = 0;            // 1 for a fresh run, k+1 when resumed after step k
    int64_t last_step = 0;
    std::vector<double> train_losses;  // one per optimizer step taken in this call
    std::vector<std::pair<int64_t, double>> val_losses;
    double seconds = 0;
    double tokens_per_s = 0;
    double planned_gib = 0;            // the memory plan of this run
    double sparsity = 0;               // of the prunable weights at the end (magnitude pruning)
    std::string sample;                // the last generated sample, if any
};

struct TrainOptions {
    int64_t stop_after = 0;   // stop (as if killed) after this step; 0 = run to max_iters
    bool quiet = false;       // no progress display (tests)
    bool sample = true;       // generate text at sample_interval / the end
};

TrainResult train(const RunConfig& cfg, const TrainOptions& opt = {});

}  // namespace gpt
