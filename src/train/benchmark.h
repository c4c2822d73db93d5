// The training-step benchmark (SPEC §7, issue targets): the real training step of the configured
// model on synthetic tokens, timed after warm-up, for one or more micro-batch sizes.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace gpt {

struct StepBenchResult {
    int batch = 0, seq = 0;
    double ms_median = 0, ms_min = 0;
    double tokens_per_s = 0;
    double mfu = 0;            // NaN where the device's peak is unknown
    double planned_gib = 0;    // our memory plan
    double peak_gib = 0;       // what the backend measured (0: not tracked)
    std::string error;         // e.g. out of memory: the row is then empty
    std::string profile;       // per-operation table when profiling was asked for
};

// profile: after the timed steps, run `steps` more with every operation synchronised and timed.
std::vector<StepBenchResult> bench_training_step(const RunConfig& cfg, const std::vector<int>& batches,
                                                 int warmup, int steps, bool profile = false);
std::string format_bench_table(const std::string& title, const std::vector<StepBenchResult>& rows);

}  // namespace gpt
