// Loading trained weights into a session for eval and sample.
#pragma once
#include <string>

#include "train/session.h"

namespace gpt {

// The checkpoint to use: `explicit_path` if given, else the newest in <out_dir>/checkpoints.
// Error naming the directory when there is none.
std::string resolve_checkpoint(const RunConfig& cfg, const std::string& explicit_path);
// Returns the checkpoint's step.
int64_t load_weights(Session& s, const std::string& path);

}  // namespace gpt
