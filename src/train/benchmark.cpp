#include "train/benchmark.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "common/error.h"
#include "common/rng.h"
#include "train/ablation.h"
#include "train/config_io.h"
#include "train/profiling_ops.h"
#include "train/quality.h"
#include "train/session.h"
#include "train/train_step.h"

namespace gpt {

std::vector<BenchArm> bench_arms(const RunConfig& cfg, const std::vector<int>& ablation_steps,
                                 const std::vector<std::string>& variants) {
    std::vector<BenchArm> arms;
    const auto table = ratio_ablation_steps(cfg.model, cfg.train.optim);
    check_ablation_step_ids(ablation_steps, int(table.size()), "--ablation-step");
    for (int id : ablation_steps) {
        BenchArm arm{fmt::format("step {}: {}", id, table[size_t(id)].description), cfg};
        arm.cfg.model = table[size_t(id)].model;
        arm.cfg.train.optim = table[size_t(id)].optim;
        arms.push_back(arm);
    }
    for (const auto& spec : variants) {   // "label: key=value key=value" -> cfg with those overrides
        const auto [label, overrides] = parse_config_arm(spec, "--variant");
        BenchArm arm{label, cfg};
        for (const auto& kv : overrides) apply_override(arm.cfg, kv);
        validate(arm.cfg);
        arms.push_back(arm);
    }
    return arms;
}

std::vector<StepBenchResult> bench_training_step(const RunConfig& base, const std::vector<int>& batches,
                                                 int warmup, int steps, bool profile) {
    std::vector<StepBenchResult> out;
    for (int B : batches) {
        StepBenchResult r;
        r.batch = B;
        r.seq = base.train.seq_len;
        RunConfig cfg = base;
        cfg.train.batch_size = B;
        cfg.train.grad_accum = 1;
        try {
            Session s(cfg, B, cfg.train.seq_len, true, profile);
            // This row's peak: earlier rows' sessions are gone, their buffers freed.
            s.ops().reset_memory_peak();
            Rng rng(1);
            const size_t n = size_t(B) * cfg.train.seq_len;
            // Random tokens (never zeros: they can run faster than real data).
            std::vector<int32_t> xs(n * 2);
            for (auto& t : xs) t = int32_t(rng.next_u64() % uint64_t(cfg.model.vocab_size));
            auto batch = [&](int32_t* in, int32_t* tg) {
                std::copy(xs.begin(), xs.begin() + long(n), in);
                std::copy(xs.begin() + long(n), xs.end(), tg);
            };
            std::vector<double> ms, host;
            StepRunner& runner = s.runner();
            const int total = warmup + steps;
            s.ops().synchronize();
            auto t0 = std::chrono::steady_clock::now();
            runner.launch(1, batch);
            for (int i = 0; i < total; ++i) {
                double queue_ms = runner.last_launch_ms();
                if (i + 1 < total) {   // queue step i+2 while step i+1 computes, as the trainer does
                    runner.launch(i + 2, batch);
                    queue_ms = runner.last_launch_ms();
                }
                const StepOutcome o = runner.finish();
                const auto t1 = std::chrono::steady_clock::now();
                const double dt = std::chrono::duration<double, std::milli>(t1 - t0).count();
                t0 = t1;
                if (i >= warmup) {
                    ms.push_back(dt);
                    host.push_back(queue_ms);
                    r.graph = o.graph;
                }
            }
            r.eager_reason = runner.eager_reason();
            std::sort(ms.begin(), ms.end());
            std::sort(host.begin(), host.end());
            r.ms_median = ms[ms.size() / 2];
            r.ms_min = ms.front();
            r.host_ms = host[host.size() / 2];
            r.tokens_per_s = double(n) / (r.ms_median / 1e3);
            r.mfu = s.model().flops_per_token(cfg.train.seq_len) * r.tokens_per_s / s.backend().peak_flops;
            r.planned_gib = s.planned_gib();
            r.peak_gib = double(s.ops().memory_peak()) / (1024.0 * 1024.0 * 1024.0);
            if (auto* p = dynamic_cast<ProfilingOps*>(&s.ops())) {
                p->enable(true);
                for (int i = 0; i < steps; ++i) train_step(s, warmup + steps + i + 1, batch);
                p->enable(false);
                r.profile = p->report(steps);
            }
        } catch (const Error& e) {
            r.error = e.what();
        }
        out.push_back(r);
    }
    return out;
}

std::string format_bench_table(const std::string& title, const std::vector<StepBenchResult>& rows) {
    std::string s = title + "\n";
    s += fmt::format("  {:>5} {:>6} {:>10} {:>10} {:>12} {:>7} {:>10} {:>10} {:>8} {:>6}\n", "B", "T", "ms/step",
                     "min ms", "tokens/s", "MFU", "plan GiB", "peak GiB", "host ms", "graph");
    for (const auto& r : rows) {
        if (!r.error.empty()) {
            s += fmt::format("  {:>5} {:>6}  failed: {}\n", r.batch, r.seq, r.error);
            continue;
        }
        s += fmt::format("  {:>5} {:>6} {:>10.2f} {:>10.2f} {:>12.0f} {:>6.1f}% {:>10.2f} {:>10.2f} {:>8.2f} {:>6}\n",
                         r.batch, r.seq, r.ms_median, r.ms_min, r.tokens_per_s, 100.0 * r.mfu, r.planned_gib,
                         r.peak_gib, r.host_ms, r.graph ? "yes" : "no");
        if (!r.graph && !r.eager_reason.empty()) s += fmt::format("  (eager: {})\n", r.eager_reason);
        if (!r.profile.empty()) s += fmt::format("  per operation at B={} (synchronised after each call):\n{}", r.batch, r.profile);
    }
    return s;
}

}  // namespace gpt
