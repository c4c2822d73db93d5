// Running an ablation: every selected step of the SPEC §4 table trained with the same data,
// schedule and seed into <out_dir>/step_NN, then one report comparing each step with step 0.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"
#include "train/step_processes.h"

namespace gpt {

// The run configuration of each selected step (model + optimizer from the table, out_dir per step).
std::vector<std::pair<AblationStep, RunConfig>> ablation_step_configs(const RunConfig& cfg);

struct AblationRow {
    int step = 0;
    std::string description;
    size_t parameters = 0;
    double final_val = 0, best_val = 0;
    double tokens_per_s = 0, ms_per_step = 0, planned_gib = 0;
};

// How many steps train at once and where (ablation.jobs / ablation.devices; see Kconfig).
ProcessPlan ablation_process_plan(const RunConfig& cfg, size_t steps);

// Trains every step (resuming each from its own checkpoints; steps whose result.json shows they
// finished are reported, not retrained), one at a time in this process or, with more than one job,
// as concurrent `gpt2 train` processes (one per GPU); writes
// <out_dir>/ablation_report.md and .json, and returns the rows. Throws after writing the report
// when any step failed, naming each failed step and its log.
std::vector<AblationRow> run_ablation(const RunConfig& cfg);
std::string format_ablation_report(const std::vector<AblationRow>& rows);

}  // namespace gpt
