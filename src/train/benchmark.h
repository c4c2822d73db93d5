// The training-step benchmark (SPEC §7, issue targets): the real training step of the configured
// model on synthetic tokens, timed after warm-up, for one or more micro-batch sizes. Steps run
// through the trainer's StepRunner, pipelined as in training (the next step queued before the
// current one's results are read), so ms/step is the time between consecutive results and
// train.cuda_graph switches the CUDA graph on or off.
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
    double host_ms = 0;        // median host time to queue one step (StepRunner::launch)
    bool graph = false;        // the timed steps ran as CUDA graph replays
    std::string eager_reason;  // why not, when they did not
    std::string error;         // e.g. out of memory: the row is then empty
    std::string profile;       // per-operation table when profiling was asked for
};

// What `gpt2 bench` compares in one run: a label and the configuration it times.
struct BenchArm {
    std::string label;
    RunConfig cfg;
};

// The arms of --ablation-step ids (SPEC §4 models, "step N: description") then --variant specs
// ("label: key=value key=value", overrides of cfg, validated); Error on a bad id, spec or key.
std::vector<BenchArm> bench_arms(const RunConfig& cfg, const std::vector<int>& ablation_steps,
                                 const std::vector<std::string>& variants);

// profile: after the timed steps, run `steps` more with every operation synchronised and timed.
std::vector<StepBenchResult> bench_training_step(const RunConfig& cfg, const std::vector<int>& batches,
                                                 int warmup, int steps, bool profile = false);
std::string format_bench_table(const std::string& title, const std::vector<StepBenchResult>& rows);

}  // namespace gpt
