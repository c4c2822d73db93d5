// `gpt2 bench`: the training-step benchmark of the configured model (make bench runs it for
// GPT-2 124M at T = 1024, B = 32 and 64).
#include <iostream>

#include "cli/commands.h"
#include "train/benchmark.h"

namespace gpt {

int cmd_bench(const RunConfig& cfg, const CommandArgs& args) {
    const std::vector<int> batches = args.batches.empty() ? std::vector<int>{cfg.train.batch_size} : args.batches;
    const auto rows = bench_training_step(cfg, batches, args.warmup, args.steps);
    std::cout << format_bench_table("training step: " + cfg.model.preset, rows);
    for (const auto& r : rows)
        if (!r.error.empty()) return 1;
    return 0;
}

}  // namespace gpt
