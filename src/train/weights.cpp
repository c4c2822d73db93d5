#include "train/weights.h"

#include <fmt/format.h>

#include "common/error.h"
#include "train/checkpoint.h"

namespace gpt {

std::string resolve_checkpoint(const RunConfig& cfg, const std::string& explicit_path) {
    if (!explicit_path.empty()) return explicit_path;
    const std::string dir = cfg.train.out_dir + "/checkpoints";
    CheckpointDir ckpts(dir, cfg.train.keep_checkpoints);
    if (auto p = ckpts.latest()) return *p;
    fail("no checkpoint in " + dir + ": train first (gpt2 train), or pass --checkpoint FILE");
}

int64_t load_weights(Session& s, const std::string& path) {
    CheckpointData d = load_checkpoint(path);
    const std::vector<float>* params = d.find_array("params");
    if (!params) fail("checkpoint " + path + " has no 'params' array");
    if (params->size() != s.param_elems())
        fail(fmt::format("checkpoint {} holds {} parameter values but the configured model has {}: "
                         "pass the config the checkpoint was trained with", path, params->size(),
                         s.param_elems()));
    s.upload(Space::Param, *params);
    return d.step;
}

}  // namespace gpt
