// `gpt2 check` (make check): the dry run of the configured model, then the plan of the real run.
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "model/gpt.h"
#include "train/dry_run.h"

namespace gpt {

int cmd_check(const RunConfig& cfg) {
    std::cout << "config: valid\n";
    const DryRunResult r = dry_run(cfg);
    std::cout << fmt::format("{} {}\n", r.pass ? "PASS" : "FAIL", r.description);
    for (const auto& p : r.problems) std::cout << "  problem: " << p << "\n";
    if (!r.losses.empty())
        std::cout << fmt::format("  losses over 3 steps (accumulation 2): {:.4f} {:.4f} {:.4f}\n", r.losses[0],
                                 r.losses.size() > 1 ? r.losses[1] : 0.0, r.losses.size() > 2 ? r.losses[2] : 0.0);
    // The real run's plan.
    GPT model(cfg.model, cfg.train.batch_size, cfg.train.seq_len);
    const double tokens = double(cfg.train.max_iters) * cfg.train.batch_size * cfg.train.seq_len *
                          cfg.train.grad_accum;
    std::cout << fmt::format("plan: {} steps x {} tokens = {:.3g} tokens; {:.3g} PFLOP of training\n",
                             cfg.train.max_iters,
                             cfg.train.batch_size * cfg.train.seq_len * cfg.train.grad_accum, tokens,
                             tokens * model.flops_per_token(cfg.train.seq_len) / 1e15);
    std::cout << (r.pass ? "1 passed, 0 failed\n" : "0 passed, 1 failed\n");
    return r.pass ? 0 : 1;
}

}  // namespace gpt
