// A finished training run's summary as JSON (<out_dir>/result.json, written by `gpt2 train`), so a
// parent process (the parallel ablation runner) or a script can read what the run reached.
#pragma once
#include <string>

#include "model/config.h"
#include "train/trainer.h"

namespace gpt {

// Written atomically: a reader sees the old file or the whole new one.
void write_train_result(const std::string& path, const TrainResult& result);

// Throws gpt::Error naming the file when it is missing or not a result file.
TrainResult read_train_result(const std::string& path);

// True (filling *out) when <train.out_dir>/result.json shows the run reached train.max_iters with
// a validation loss: a restarted ablation or quality test reports it instead of training it again.
bool read_finished_result(const RunConfig& c, TrainResult* out);

}  // namespace gpt
