// The subcommands of the gpt2 program, one function each (src/cli/cmd_*.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace gpt {

struct CommandArgs {
    std::string checkpoint;
    std::string prompt;
    int tokens = -1;
    float temperature = -1.f;
    int top_k = -1;
    int64_t seed = -1;
    std::vector<std::string> inputs;
    std::string out_dir;
    std::string name = "data";
    double val_fraction = 0.05;
    std::string tokenizer_dir;
    std::vector<int> batches;   // bench
    int warmup = -1, steps = -1;       // bench: -1 = the mode's default (steps: 3 / 10; --module: 20 / 100)
    bool module = false;               // bench: time the attention module alone (src/train/module_bench.h)
    std::vector<int> ablation_steps;   // bench: time these ablation steps' models instead
    std::vector<std::string> variants; // bench: "label: key=value key=value" arms, timed after the steps
    bool profile = false;              // bench: per-operation timing table
};

int cmd_run(const RunConfig& cfg, const CommandArgs& args);
int cmd_train(const RunConfig& cfg);
int cmd_eval(const RunConfig& cfg, const CommandArgs& args);
int cmd_sample(const RunConfig& cfg, const CommandArgs& args);
int cmd_prepare(const RunConfig& cfg, const CommandArgs& args);
int cmd_check(const RunConfig& cfg);
int cmd_info(const RunConfig& cfg);
int cmd_bench(const RunConfig& cfg, const CommandArgs& args);

}  // namespace gpt
