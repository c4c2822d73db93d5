#include "train/dry_run.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/error.h"
#include "common/rng.h"
#include "train/schedule.h"
#include "train/session.h"

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
        std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
        std::vector<bool> touched(s.model().params().specs().size(), false);
        for (int step = 1; step <= steps; ++step) {
            s.ops().zero(Ten{Space::Grad, 0, s.param_elems()});
            double loss = 0;
            for (int m = 0; m < grad_accum; ++m) {
                for (size_t i = 0; i < x.size(); ++i) {
                    x[i] = int32_t(rng.next_u64() % uint64_t(cfg.model.vocab_size));
                    y[i] = int32_t(rng.next_u64() % uint64_t(cfg.model.vocab_size));
                }
                s.model().set_batch(s.ops(), x.data(), y.data(), B, T);
                StepContext c{&s.ops(), B, T, true, mix64(uint64_t(step) * 16 + m)};
                loss += s.model().forward(c, 1.f / float(B * T * grad_accum));
                s.model().backward(c);
            }
            r.losses.push_back(loss / grad_accum);
            if (!std::isfinite(r.losses.back()))
                r.problems.push_back(fmt::format("loss is {} at step {}", r.losses.back(), step));
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
            s.optimizer().step(s.ops(), step, learning_rate(cfg.train.optim, step, cfg.train.max_iters));
            s.ops().params_changed();
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
