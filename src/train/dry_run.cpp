#include "train/dry_run.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/error.h"
#include "common/rng.h"
#include "train/session.h"
#include "train/train_step.h"

namespace gpt {

DryRunResult dry_run(const RunConfig& base, int steps, int grad_accum, int B, int T) {
    DryRunResult r;
    RunConfig cfg = base;
    T = std::min(T, cfg.model.block_size);
    cfg.train.batch_size = B;
    cfg.train.seq_len = T;
    cfg.train.grad_accum = grad_accum;
    try {
        Session s(cfg, B, T, true);
        r.description = s.model().describe();
        for (const auto& p : s.model().params().specs()) r.parameters += p.numel();
        Rng rng(cfg.train.seed);
        const size_t n = size_t(B) * T;
        std::vector<bool> touched(s.model().params().specs().size(), false);
        for (int step = 1; step <= steps; ++step) {
            const StepOutcome o = train_step(s, step, [&](int32_t* in, int32_t* tg) {
                for (size_t i = 0; i < n; ++i) {
                    in[i] = int32_t(rng.next_u64() % uint64_t(cfg.model.vocab_size));
                    tg[i] = int32_t(rng.next_u64() % uint64_t(cfg.model.vocab_size));
                }
            });
            r.losses.push_back(o.loss);
            if (!std::isfinite(o.loss)) r.problems.push_back(fmt::format("loss is {} at step {}", o.loss, step));
            // The optimizer leaves the accumulated gradients in place: inspect them.
            const auto grads = s.download(Space::Grad, s.param_elems());
            const auto& specs = s.model().params().specs();
            for (size_t i = 0; i < specs.size(); ++i) {
                const float* g = grads.data() + specs[i].t.off;
                bool finite = true, nonzero = false;
                for (size_t j = 0; j < specs[i].t.n; ++j) {
                    finite &= std::isfinite(g[j]);
                    nonzero |= g[j] != 0.f;
                }
                if (!finite) r.problems.push_back("non-finite gradient in " + specs[i].name);
                if (nonzero) touched[i] = true;
            }
        }
        const auto& specs = s.model().params().specs();
        for (size_t i = 0; i < specs.size(); ++i)
            if (!touched[i]) r.problems.push_back("parameter " + specs[i].name + " never received a gradient");
    } catch (const Error& e) {
        r.problems.push_back(e.what());
    }
    r.pass = r.problems.empty();
    return r;
}

}  // namespace gpt
