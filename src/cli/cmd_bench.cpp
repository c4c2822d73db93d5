// `gpt2 bench`: the training-step benchmark of the configured model (make bench runs it for
// GPT-2 124M at T = 1024, B = 32 and 64), or of several ablation steps' models with their
// tokens/s as ratios to the first step listed, and/or of --variant overrides of the configured
// model (RA full, RA low-rank, ...), all in the same process so the ratios are from one run.
// With --module: the attention module alone (src/train/module_bench.h) of the configured model,
// then of each arm, forward and forward + backward as ratios to the configured model.
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "common/error.h"
#include "model/variant_names.h"
#include "train/benchmark.h"
#include "train/module_bench.h"

namespace gpt {

namespace {

int bench_module(const RunConfig& cfg, const CommandArgs& args) {
    if (!args.batches.empty())
        fail(fmt::format("bench --module: the module runs at B = train.batch_size ({}); set it with --set "
                         "train.batch_size=N instead of -b", cfg.train.batch_size));
    if (args.profile) fail("bench --module: --profile belongs to the training-step benchmark; drop one of them");
    const int warmup = args.warmup >= 0 ? args.warmup : 20, reps = args.steps >= 0 ? args.steps : 100;
    std::vector<BenchArm> arms = {{fmt::format("configured ({})", attention_kind_str(cfg.model.attention)), cfg}};
    for (auto& arm : bench_arms(cfg, args.ablation_steps, args.variants)) arms.push_back(std::move(arm));
    const auto rows = bench_attention_module(arms, warmup, reps);
    std::cout << format_module_table(rows, warmup, reps);
    for (const auto& r : rows)
        if (!r.error.empty()) return 1;
    return 0;
}

}  // namespace

int cmd_bench(const RunConfig& cfg, const CommandArgs& args) {
    if (args.module) return bench_module(cfg, args);
    const std::vector<int> batches = args.batches.empty() ? std::vector<int>{cfg.train.batch_size} : args.batches;
    const int warmup = args.warmup >= 0 ? args.warmup : 3, steps = args.steps >= 0 ? args.steps : 10;
    bool failed = false;
    if (args.ablation_steps.empty() && args.variants.empty()) {
        const auto rows = bench_training_step(cfg, batches, warmup, steps, args.profile);
        std::cout << format_bench_table("training step: " + cfg.model.preset, rows);
        for (const auto& r : rows) failed |= !r.error.empty();
        return failed ? 1 : 0;
    }
    // Arms: the listed ablation steps, then the variants; ratios are to the first arm (same run).
    const std::vector<BenchArm> arms = bench_arms(cfg, args.ablation_steps, args.variants);
    std::vector<std::vector<StepBenchResult>> all;
    for (const auto& arm : arms) {
        all.push_back(bench_training_step(arm.cfg, batches, warmup, steps, args.profile));
        std::cout << format_bench_table(arm.label, all.back());
        std::cout.flush();
    }
    std::cout << fmt::format("\ntokens/s relative to \"{}\" (same run):\n", arms[0].label);
    for (size_t b = 0; b < batches.size(); ++b) {
        const auto& base = all[0][b];
        for (size_t i = 0; i < all.size(); ++i) {
            const auto& r = all[i][b];
            failed |= !r.error.empty();
            if (!r.error.empty() || !base.error.empty() || base.tokens_per_s <= 0) continue;
            std::cout << fmt::format("  B={:<3} {:.3f}  ({:.0f} tok/s, {:.2f} GiB planned)  {}\n", r.batch,
                                     r.tokens_per_s / base.tokens_per_s, r.tokens_per_s, r.planned_gib, arms[i].label);
        }
    }
    return failed ? 1 : 0;
}

}  // namespace gpt
