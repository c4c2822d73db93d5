// `gpt2 bench`: the training-step benchmark of the configured model (make bench runs it for
// GPT-2 124M at T = 1024, B = 32 and 64), or of several ablation steps' models with their
// tokens/s as ratios to the first step listed, and/or of --variant overrides of the configured
// model (RA full, RA low-rank, ...), all in the same process so the ratios are from one run.
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "train/ablation.h"
#include "train/benchmark.h"
#include "train/config_io.h"
#include "train/quality.h"
#include "common/error.h"

namespace gpt {

namespace {

struct Arm {
    std::string label;
    RunConfig cfg;
};

// "label: key=value key=value" -> the configured model with those overrides.
Arm variant_arm(const RunConfig& base, const std::string& spec) {
    const auto [label, overrides] = parse_config_arm(spec, "--variant");
    Arm arm{label, base};
    for (const auto& kv : overrides) apply_override(arm.cfg, kv);
    validate(arm.cfg);
    return arm;
}

}  // namespace

int cmd_bench(const RunConfig& cfg, const CommandArgs& args) {
    const std::vector<int> batches = args.batches.empty() ? std::vector<int>{cfg.train.batch_size} : args.batches;
    bool failed = false;
    if (args.ablation_steps.empty() && args.variants.empty()) {
        const auto rows = bench_training_step(cfg, batches, args.warmup, args.steps, args.profile);
        std::cout << format_bench_table("training step: " + cfg.model.preset, rows);
        for (const auto& r : rows) failed |= !r.error.empty();
        return failed ? 1 : 0;
    }
    // Arms: the listed ablation steps, then the variants; ratios are to the first arm (same run).
    std::vector<Arm> arms;
    const auto table = ratio_ablation_steps(cfg.model, cfg.train.optim);
    check_ablation_step_ids(args.ablation_steps, int(table.size()), "--ablation-step");
    for (int id : args.ablation_steps) {
        Arm arm{fmt::format("step {}: {}", id, table[size_t(id)].description), cfg};
        arm.cfg.model = table[size_t(id)].model;
        arm.cfg.train.optim = table[size_t(id)].optim;
        arms.push_back(arm);
    }
    for (const auto& spec : args.variants) arms.push_back(variant_arm(cfg, spec));
    std::vector<std::vector<StepBenchResult>> all;
    for (const auto& arm : arms) {
        all.push_back(bench_training_step(arm.cfg, batches, args.warmup, args.steps, args.profile));
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
