// The quick quality test (SPEC §6): does a variant train a better model than the baseline? Every
// arm (the configured model = the baseline, plus quality.arms, each "label: key=value ...") trains
// on the same real-text tokens with the same schedule, for each seed of quality.seeds (the seed also
// fixes the data order, so arm and baseline see the same batches). The report gives, per arm, the
// final and best validation loss as mean ± std over seeds, the paired difference with the baseline
// and its two-sided Student-t p-value, divergences (non-finite losses), the tokens needed to reach
// the baseline's mean final loss, and a one-line verdict.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"
#include "train/trainer.h"

namespace gpt {

struct QualityRun {
    size_t arm = 0;   // 0 = the baseline (the configured model)
    int seed = 0;
    bool ok = false;  // trained to the end (a diverged run is ok but has non-finite losses)
    TrainResult result;
};

struct QualitySummary {
    std::string label;
    int runs = 0, diverged = 0;
    double final_mean = 0, final_std = 0, best_mean = 0, best_std = 0;
    int paired = 0;                    // seeds with a finite final loss in this arm and the baseline
    double diff_mean = 0, diff_std = 0, t = 0, p = 1;   // final(arm) - final(baseline), paired by seed
    int reached = 0;                   // runs whose val loss reached the baseline's mean final loss
    double tokens_to_reach = 0;        // mean over those runs
    std::string verdict;
};

// Two-sided p-value of Student's t with df degrees of freedom (the regularized incomplete beta
// function I_{df/(df+t²)}(df/2, 1/2)); NaN for df < 1.
double students_t_two_sided_p(double t, double df);

// "label: key=value key=value" -> {label, {"key=value", ...}}; throws naming `key` when malformed.
std::pair<std::string, std::vector<std::string>> parse_config_arm(const std::string& spec, const std::string& key);

// The run configuration of every (arm, seed), out_dir <out_dir>/quality/<arm index>_<label>/seed_<s>.
std::vector<std::pair<QualityRun, RunConfig>> quality_run_configs(const RunConfig& cfg);

std::vector<QualitySummary> summarize_quality(const std::vector<std::string>& labels,
                                              const std::vector<QualityRun>& runs, double tokens_per_step);
std::string format_quality_report(const std::vector<QualitySummary>& rows, const RunConfig& cfg);

// Trains every run (concurrently per ablation.jobs / ablation.devices; finished runs are reused),
// writes <out_dir>/quality_report.md and .json and returns the summaries.
std::vector<QualitySummary> run_quality(const RunConfig& cfg);

}  // namespace gpt
