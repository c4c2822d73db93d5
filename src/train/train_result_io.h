// A finished training run's summary as JSON (<out_dir>/result.json, written by `gpt2 train`), so a
// parent process (the parallel ablation runner) or a script can read what the run reached.
#pragma once
#include <string>

#include "train/trainer.h"

namespace gpt {

// Written atomically: a reader sees the old file or the whole new one.
void write_train_result(const std::string& path, const TrainResult& result);

// Throws gpt::Error naming the file when it is missing or not a result file.
TrainResult read_train_result(const std::string& path);

}  // namespace gpt
