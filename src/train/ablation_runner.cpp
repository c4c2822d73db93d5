#include "train/ablation_runner.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "model/backend.h"
#include "train/ablation.h"
#include "train/session.h"
#include "train/step_processes.h"
#include "train/train_result_io.h"
#include "train/trainer.h"

namespace gpt {

std::vector<std::pair<AblationStep, RunConfig>> ablation_step_configs(const RunConfig& cfg) {
    const auto steps = select_ablation_steps(ratio_ablation_steps(cfg.model, cfg.train.optim), cfg.ablation_steps);
    std::vector<std::pair<AblationStep, RunConfig>> out;
    for (const auto& st : steps) {
        RunConfig c = cfg;
        c.job = "train";
        c.model = st.model;
        c.train.optim = st.optim;
        c.train.out_dir = fmt::format("{}/step_{:02d}", cfg.train.out_dir, st.id);
        out.emplace_back(st, c);
    }
    return out;
}

std::string format_ablation_report(const std::vector<AblationRow>& rows) {
    const AblationRow* base = nullptr;
    for (const auto& r : rows)
        if (r.step == 0) base = &r;
    std::string s = "| step | model | params | val loss | best | ppl | Δ val vs 0 | tokens/s | ×tok/s vs 0 | ms/step | plan GiB |\n"
                    "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : rows) {
        std::string dv = base ? fmt::format("{:+.4f}", r.final_val - base->final_val) : "n/a";
        std::string dt = base && base->tokens_per_s > 0 ? fmt::format("{:.3f}", r.tokens_per_s / base->tokens_per_s) : "n/a";
        s += fmt::format("| {} | {} | {} | {:.4f} | {:.4f} | {:.2f} | {} | {:.0f} | {} | {:.1f} | {:.2f} |\n", r.step,
                         r.description, r.parameters, r.final_val, r.best_val, std::exp(r.final_val), dv,
                         r.tokens_per_s, dt, r.ms_per_step, r.planned_gib);
    }
    return s;
}

namespace {

AblationRow make_row(const AblationStep& step, const RunConfig& c, const TrainResult& r) {
    AblationRow row;
    row.step = step.id;
    row.description = step.description;
    if (c.train.optim.prune_sparsity > 0) row.description += fmt::format(" (sparsity reached {:.1f}%)", 100 * r.sparsity);
    row.parameters = size_t(count_parameters(c.model));
    row.final_val = r.val_losses.empty() ? std::nan("") : r.val_losses.back().second;
    row.best_val = row.final_val;
    for (const auto& [s, v] : r.val_losses) row.best_val = std::min(row.best_val, v);
    row.tokens_per_s = r.tokens_per_s;
    row.ms_per_step = r.tokens_per_s > 0
                          ? 1e3 * double(c.train.batch_size) * c.train.seq_len * c.train.grad_accum / r.tokens_per_s
                          : 0;
    row.planned_gib = r.planned_gib;
    return row;
}

AblationRow failed_row(const AblationStep& step, const RunConfig& c, const std::string& why) {
    AblationRow row;
    row.step = step.id;
    row.description = step.description + " (FAILED: " + why + ")";
    row.parameters = size_t(count_parameters(c.model));
    row.final_val = row.best_val = std::nan("");
    return row;
}

// The report files, rewritten after every finished step so a killed ablation keeps what is done.
void write_reports(const std::string& out_dir, std::vector<AblationRow> rows) {
    std::sort(rows.begin(), rows.end(), [](const AblationRow& a, const AblationRow& b) { return a.step < b.step; });
    nlohmann::json js = nlohmann::json::array();
    for (const auto& row : rows)
        js.push_back({{"step", row.step}, {"description", row.description}, {"parameters", row.parameters},
                      {"final_val_loss", std::isfinite(row.final_val) ? nlohmann::json(row.final_val) : nlohmann::json()},
                      {"best_val_loss", std::isfinite(row.best_val) ? nlohmann::json(row.best_val) : nlohmann::json()},
                      {"tokens_per_s", row.tokens_per_s}, {"ms_per_step", row.ms_per_step},
                      {"planned_gib", row.planned_gib}});
    write_text_atomically(out_dir + "/ablation_report.md", format_ablation_report(rows));
    write_text_atomically(out_dir + "/ablation_report.json", js.dump(2));
}

}  // namespace

ProcessPlan ablation_process_plan(const RunConfig& cfg, size_t steps) {
    ProcessPlan plan;
    const bool cuda = backend_uses_cuda(cfg.train.device);
    if (cuda) {
        plan.devices = cfg.ablation_devices;
        if (plan.devices.empty())
            for (int d = 0; d < cuda_devices_visible(); ++d) plan.devices.push_back(d);
        // A data-parallel step (train.gpus > 1) takes that many GPUs of the list.
        plan.devices_per_job = cfg.train.gpus;
        if (!plan.devices.empty() && plan.devices_per_job > int(plan.devices.size()))
            fail(fmt::format("train.gpus: each ablation step asks for {} GPUs, but {} {} available{}; lower "
                             "train.gpus", cfg.train.gpus, plan.devices.size(),
                             plan.devices.size() == 1 ? "is" : "are",
                             cfg.ablation_devices.empty() ? "" : " (ablation.devices)"));
    }
    plan.jobs = cfg.ablation_jobs > 0 ? cfg.ablation_jobs
                : cuda ? std::max<int>(1, int(plan.devices.size()) / plan.devices_per_job) : 1;
    plan.jobs = std::max(1, std::min<int>(plan.jobs, int(steps)));
    if (!cuda) plan.threads_per_job = std::max(1, int(std::thread::hardware_concurrency()) / plan.jobs);
    return plan;
}

std::vector<AblationRow> run_ablation(const RunConfig& cfg) {
    const auto steps = ablation_step_configs(cfg);
    const ProcessPlan plan = ablation_process_plan(cfg, steps.size());
    std::vector<AblationRow> rows;
    std::vector<std::string> failures;
    // Steps finished by an earlier (killed or completed) run of this ablation are reported as they are.
    std::vector<size_t> todo;
    for (size_t i = 0; i < steps.size(); ++i) {
        TrainResult r;
        if (read_finished_result(steps[i].second, &r)) {
            spdlog::info("=== ablation step {} already finished ({}/result.json)", steps[i].first.id,
                         steps[i].second.train.out_dir);
            rows.push_back(make_row(steps[i].first, steps[i].second, r));
        } else {
            todo.push_back(i);
        }
    }
    if (plan.jobs == 1) {
        for (size_t i : todo) {
            const auto& [step, c] = steps[i];
            spdlog::info("=== ablation step {}: {}", step.id, step.description);
            rows.push_back(make_row(step, c, train(c)));
            write_reports(cfg.train.out_dir, rows);
        }
    } else {
        std::vector<RunConfig> runs;
        for (size_t i : todo) runs.push_back(steps[i].second);
        std::string where = plan.devices.empty() ? fmt::format("{} CPU threads each", plan.threads_per_job)
                                                 : fmt::format("GPUs {}", fmt::join(plan.devices, " "));
        spdlog::info("=== ablation: {} steps, {} at a time ({}); each step logs to <out_dir>/step_NN/train.log",
                     runs.size(), plan.jobs, where);
        ProcessPlan p = plan;
        p.executable = gpt2_executable();
        for (size_t k = 0; k < runs.size() && k < size_t(p.jobs); ++k)
            spdlog::info("    step {} starts ({})", steps[todo[k]].first.id, steps[todo[k]].first.description);
        size_t started = std::min(runs.size(), size_t(p.jobs));
        train_in_processes(runs, p, [&](size_t k, const ChildOutcome& o) {
            const auto& [step, c] = steps[todo[k]];
            if (o.ok) {
                const AblationRow row = make_row(step, c, o.result);
                spdlog::info("    step {} finished: val loss {:.4f}, {:.0f} tokens/s", step.id, row.final_val,
                             row.tokens_per_s);
                rows.push_back(row);
            } else {
                spdlog::error("    step {} FAILED ({}); see {}", step.id, o.error, o.log_path);
                failures.push_back(fmt::format("step {} ({}; log {})", step.id, o.error, o.log_path));
                rows.push_back(failed_row(step, c, o.error));
            }
            write_reports(cfg.train.out_dir, rows);
            if (started < runs.size()) {
                spdlog::info("    step {} starts ({})", steps[todo[started]].first.id, steps[todo[started]].first.description);
                ++started;
            }
        });
    }
    write_reports(cfg.train.out_dir, rows);
    std::sort(rows.begin(), rows.end(), [](const AblationRow& a, const AblationRow& b) { return a.step < b.step; });
    spdlog::info("ablation report ({}/ablation_report.md):\n{}", cfg.train.out_dir, format_ablation_report(rows));
    if (!failures.empty())
        fail(fmt::format("{} of {} ablation steps failed: {}", failures.size(), steps.size(), fmt::join(failures, "; ")));
    return rows;
}

}  // namespace gpt
