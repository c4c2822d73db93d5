#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "common/error.h"
#include "train/ablation_runner.h"
#include "train/quality.h"
#include "train/trainer.h"

namespace gpt {

int cmd_train(const RunConfig& cfg) {
    train(cfg);   // writes <out_dir>/result.json
    return 0;
}

int cmd_run(const RunConfig& cfg, const CommandArgs& args) {
    if (cfg.job == "train") return cmd_train(cfg);
    if (cfg.job == "ablation") {
        run_ablation(cfg);
        return 0;
    }
    if (cfg.job == "quality") {
        run_quality(cfg);
        return 0;
    }
    if (cfg.job == "eval") return cmd_eval(cfg, args);
    if (cfg.job == "sample") return cmd_sample(cfg, args);
    if (cfg.job == "check") return cmd_check(cfg);
    if (cfg.job == "bench") return cmd_bench(cfg, args);
    fail("job: '" + cfg.job + "' cannot run yet; allowed: train, ablation, quality, eval, sample, check, bench");
}

}  // namespace gpt
