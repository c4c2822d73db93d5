#include "train/ablation_runner.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/fs_atomic.h"
#include "train/ablation.h"
#include "train/session.h"
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

std::vector<AblationRow> run_ablation(const RunConfig& cfg) {
    std::vector<AblationRow> rows;
    nlohmann::json js = nlohmann::json::array();
    for (const auto& [step, c] : ablation_step_configs(cfg)) {
        spdlog::info("=== ablation step {}: {}", step.id, step.description);
        TrainResult r = train(c);
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
        rows.push_back(row);
        js.push_back({{"step", row.step}, {"description", row.description}, {"parameters", row.parameters},
                      {"final_val_loss", row.final_val}, {"best_val_loss", row.best_val},
                      {"tokens_per_s", row.tokens_per_s}, {"ms_per_step", row.ms_per_step},
                      {"planned_gib", row.planned_gib}});
        // Rewritten after every step, so a killed ablation keeps the report of the steps done.
        const std::string report = format_ablation_report(rows);
        write_text_atomically(cfg.train.out_dir + "/ablation_report.md", report);
        write_text_atomically(cfg.train.out_dir + "/ablation_report.json", js.dump(2));
    }
    spdlog::info("ablation report ({}/ablation_report.md):\n{}", cfg.train.out_dir, format_ablation_report(rows));
    return rows;
}

}  // namespace gpt
