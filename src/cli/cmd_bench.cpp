// `gpt2 bench`: the training-step benchmark of the configured model (make bench runs it for
// GPT-2 124M at T = 1024, B = 32 and 64), or of several ablation steps' models with their
// tokens/s as ratios to the first step listed.
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "train/ablation.h"
#include "train/benchmark.h"

namespace gpt {

int cmd_bench(const RunConfig& cfg, const CommandArgs& args) {
    const std::vector<int> batches = args.batches.empty() ? std::vector<int>{cfg.train.batch_size} : args.batches;
    bool failed = false;
    if (args.ablation_steps.empty()) {
        const auto rows = bench_training_step(cfg, batches, args.warmup, args.steps, args.profile);
        std::cout << format_bench_table("training step: " + cfg.model.preset, rows);
        for (const auto& r : rows) failed |= !r.error.empty();
        return failed ? 1 : 0;
    }
    const auto table = ratio_ablation_steps(cfg.model, cfg.train.optim);
    check_ablation_step_ids(args.ablation_steps, int(table.size()), "--ablation-step");
    std::vector<std::vector<StepBenchResult>> all;
    for (int id : args.ablation_steps) {
        RunConfig c = cfg;
        c.model = table[size_t(id)].model;
        c.train.optim = table[size_t(id)].optim;
        all.push_back(bench_training_step(c, batches, args.warmup, args.steps, args.profile));
        std::cout << format_bench_table(fmt::format("step {}: {}", id, table[size_t(id)].description), all.back());
        std::cout.flush();
    }
    std::cout << fmt::format("\ntokens/s relative to step {} (same run):\n", args.ablation_steps[0]);
    for (size_t b = 0; b < batches.size(); ++b) {
        const auto& base = all[0][b];
        for (size_t i = 0; i < all.size(); ++i) {
            const auto& r = all[i][b];
            failed |= !r.error.empty();
            if (!r.error.empty() || !base.error.empty() || base.tokens_per_s <= 0) continue;
            std::cout << fmt::format("  B={:<3} step {:>2}: {:.3f}  ({:.0f} tok/s, {:.2f} GiB planned)  {}\n", r.batch,
                                     args.ablation_steps[i], r.tokens_per_s / base.tokens_per_s, r.tokens_per_s,
                                     r.planned_gib, table[size_t(args.ablation_steps[i])].description);
        }
    }
    return failed ? 1 : 0;
}

}  // namespace gpt
