// Training several run configurations at once, each as its own `gpt2 train` child process: the
// parallel half of the ablation runner. A child gets one GPU (CUDA_VISIBLE_DEVICES) or a share of
// the CPU cores, writes its output to <out_dir>/train.log and its summary to <out_dir>/result.json.
// Processes, not threads: a step that crashes or runs out of memory takes nothing else down, and
// each step's checkpoints make a killed ablation resumable step by step.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/trainer.h"

namespace gpt {

struct ProcessPlan {
    int jobs = 1;               // children alive at once
    std::vector<int> devices;   // slot k runs on devices_per_job of them from k * devices_per_job,
                                // cycling; empty: no GPU pinning (CPU)
    int devices_per_job = 1;    // a data-parallel step's train.gpus
    int threads_per_job = 0;    // CPU threads given to a child whose train.threads is 0
    std::string executable;     // the gpt2 program
};

struct ChildOutcome {
    bool ok = false;
    std::string log_path;
    std::string error;          // why it failed (exit status / signal), empty when ok
    TrainResult result;         // read from <out_dir>/result.json when ok
};

// The gpt2 executable to spawn: $GPT2_EXE when set (tests), else this process's own binary.
std::string gpt2_executable();

// Runs every config (job "train"; each with its own train.out_dir) with at most plan.jobs children
// alive; on_done(i, outcome) is called as each finishes (in completion order). Returns the outcomes
// in input order. A failing child never stops the others.
std::vector<ChildOutcome> train_in_processes(const std::vector<RunConfig>& runs, const ProcessPlan& plan,
                                             const std::function<void(size_t, const ChildOutcome&)>& on_done);

}  // namespace gpt
