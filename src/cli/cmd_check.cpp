// `gpt2 check` (make check): validate the config; for every model the job would build (each
// selected ablation step, or the one configured model) build it, print its description and
// parameter count, train it 3 optimizer steps with gradient accumulation 2 on tiny shapes and
// check the loss is finite and every parameter got a gradient; then the plan of the real run.
#include <chrono>
#include <cmath>
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cli/commands.h"
#include "common/error.h"
#include "model/backend.h"
#include "model/gpt.h"
#include "train/ablation_runner.h"
#include "train/config_io.h"
#include "train/dry_run.h"
#include "train/optimizer.h"
#include "train/quality.h"
#include "train/session.h"
#include "train/train_step.h"

namespace gpt {

namespace {

// Seconds per token of the real model on this machine, measured on one short micro-batch
// (B <= 4, T <= 128): an estimate, stated as such.
double measure_seconds_per_token(const RunConfig& cfg) {
    RunConfig c = cfg;
    c.train.batch_size = std::min(cfg.train.batch_size, 4);
    c.train.seq_len = std::min(cfg.train.seq_len, 128);
    c.train.grad_accum = 1;
    const int n = c.train.batch_size * c.train.seq_len;
    Session s(c, c.train.batch_size, c.train.seq_len, true);
    auto batch = [&](int32_t* in, int32_t* tg) {
        for (int i = 0; i < n; ++i) in[i] = tg[i] = (i * 7919) % cfg.model.vocab_size;
    };
    train_step(s, 1, batch);   // warm-up
    s.ops().synchronize();
    auto t0 = std::chrono::steady_clock::now();
    train_step(s, 2, batch);
    s.ops().synchronize();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / n;
}

}  // namespace

int cmd_check(const RunConfig& cfg) {
    std::cout << "config: valid (job " << cfg.job << ")\n";
    int passed = 0, failed = 0;
    try {
        check_data_files(cfg);
        std::cout << "data: present\n";
    } catch (const Error& e) {
        std::cout << "FAIL data: " << e.what() << "\n";
        ++failed;
    }
    std::vector<std::pair<std::string, RunConfig>> models;
    if (cfg.job == "ablation") {
        for (const auto& [st, c] : ablation_step_configs(cfg))
            models.emplace_back(fmt::format("step {:>2} ({})", st.id, st.description), c);
    } else if (cfg.job == "quality") {
        // One model per arm (the seeds only change the initialisation and the data order).
        for (const auto& [run, c] : quality_run_configs(cfg))
            if (run.seed == cfg.quality_seeds.front())
                models.emplace_back(run.arm == 0 ? std::string("baseline") : fmt::format("arm {}", run.arm), c);
    } else {
        models.emplace_back("model", cfg);
    }
    for (const auto& [label, c] : models) {
        const DryRunResult r = dry_run(c);
        std::cout << fmt::format("{} {}: {}\n", r.pass ? "PASS" : "FAIL", label, r.description);
        if (!r.losses.empty())
            std::cout << fmt::format("         3 steps x 2 micro-batches of 2x16: loss {:.4f} -> {:.4f}\n", r.losses.front(),
                                     r.losses.back());
        for (const auto& p : r.problems) std::cout << "         problem: " << p << "\n";
        (r.pass ? passed : failed)++;
        std::cout.flush();
    }

    // The plan of the real run.
    const Backend be = make_backend(cfg.train.device, cfg.train.threads);
    const double tokens_per_step = double(cfg.train.batch_size) * cfg.train.seq_len * cfg.train.grad_accum;
    const double tokens = tokens_per_step * cfg.train.max_iters;
    std::cout << fmt::format("plan: {} model(s) x {} steps x {:.0f} tokens = {:.3g} tokens per model, on {}\n",
                             models.size(), cfg.train.max_iters, tokens_per_step, tokens, be.description);
    try {
        const RunConfig& first = models.front().second;
        GPT model(first.model, first.train.batch_size, first.train.seq_len, first.train.recompute);
        MemoryPlan plan = model.memory_plan();
        plan[Space::Opt] = Optimizer(first.train.optim, model.params()).state_elems();
        double bytes = 0;
        for (int s = 0; s < kNumSpaces; ++s) bytes += double(plan.elems[s]) * double(be.bytes.bytes[s]);
        // Data-parallel runs (train.gpus) share each step's tokens over their GPUs; the gradient
        // all-reduce is left out of this rough estimate.
        const double spt = measure_seconds_per_token(first) / std::max(1, cfg.train.gpus);
        // The quality test trains every arm once per seed.
        const size_t runs = models.size() * (cfg.job == "quality" ? cfg.quality_seeds.size() : 1);
        std::cout << fmt::format("  memory per model (first): {:.2f} GiB planned{}\n", bytes / (1 << 30),
                                 cfg.train.gpus > 1 ? fmt::format(" on each of its {} GPUs", cfg.train.gpus) : "");
        std::cout << fmt::format("  time: about {:.1f} h per run, {:.1f} h in all (from one {}-token step "
                                 "measured here; a rough, usually pessimistic estimate)\n",
                                 spt * tokens / 3600, spt * tokens * double(runs) / 3600,
                                 std::min(first.train.batch_size, 4) * std::min(first.train.seq_len, 128));
        if (cfg.job == "ablation" || cfg.job == "quality") {
            if (cfg.job == "quality")
                std::cout << fmt::format("  quality: {} arm(s) x {} seed(s) = {} runs\n", models.size(),
                                         cfg.quality_seeds.size(), runs);
            const ProcessPlan pp = ablation_process_plan(cfg, runs);
            const double rounds = std::ceil(double(runs) / pp.jobs);
            std::cout << fmt::format("  ablation.jobs: {} run(s) at a time{}: about {:.1f} h wall\n", pp.jobs,
                                     pp.devices.empty() ? "" : fmt::format(" on GPUs {}", fmt::join(pp.devices, " ")),
                                     spt * tokens * rounds / 3600);
        }
    } catch (const Error& e) {
        std::cout << "  plan: cannot estimate on this machine: " << e.what() << "\n";
    }
    std::cout << fmt::format("{} passed, {} failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

}  // namespace gpt
