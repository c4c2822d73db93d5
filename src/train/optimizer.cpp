#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace gpt {

Optimizer::Optimizer(const OptimConfig& cfg, const ParamTable& params) : cfg_(cfg), P_(params.total()) {
    const bool ams = cfg.amsgrad;
    state_elems_ = P_ * (ams ? 3 : 2);
    for (const auto& s : params.specs()) {
        AdamWTensor t;
        t.param = s.t;
        t.m = Ten{Space::Opt, s.t.off, s.t.n};
        t.v = Ten{Space::Opt, P_ + s.t.off, s.t.n};
        if (ams) t.vmax = Ten{Space::Opt, 2 * P_ + s.t.off, s.t.n};
        t.decay = s.decay && (cfg.decay_embeddings || s.name != "wte.weight");
        tensors_.push_back(t);
    }
}

void Optimizer::restore(const std::vector<double>& history, int64_t last_reset) {
    history_.assign(history.begin(), history.end());
    last_reset_ = last_reset;
}

OptimizerStepInfo Optimizer::step(Ops& ops, int step, float scheduled_lr) {
    OptimizerStepInfo info;
    info.grad_norm = std::sqrt(ops.sum_squares(Ten{Space::Grad, 0, P_}));
    float lr = scheduled_lr;
    const bool spam = cfg_.kind == OptimizerKind::adamw_spam;

    if (spam) {
        // (c) periodic reset: zero the moments, then re-warm the lr over spam_warmup steps.
        if (cfg_.spam_interval > 0 && step > 1 && (step - 1) % cfg_.spam_interval == 0) {
            ops.zero(Ten{Space::Opt, 0, state_elems_});
            last_reset_ = step - 1;
            info.reset = true;
        }
        const int since = step - int(last_reset_);
        if (last_reset_ > 0 && cfg_.spam_warmup > 0 && since <= cfg_.spam_warmup) {
            float f = 0.5f * (1.f - std::cos(float(M_PI) * float(since) / float(cfg_.spam_warmup)));
            lr *= std::max(1e-3f, f);
        }
        // (b) spike on the global grad norm: z-score over the recent window.
        if (history_.size() >= 2) {
            double mean = 0, var = 0;
            for (double h : history_) mean += h;
            mean /= double(history_.size());
            for (double h : history_) var += (h - mean) * (h - mean);
            const double sd = std::sqrt(var / double(history_.size()));
            if (sd > 0 && (info.grad_norm - mean) / sd > cfg_.spam_spike_z) {
                ops.scale(Ten{Space::Opt, 0, P_}, 0.5f);        // m <- 0.5 m
                ops.scale(Ten{Space::Opt, P_, P_}, 0.9f);       // v <- 0.9 v
                info.spike = true;
            }
        }
        history_.push_back(info.grad_norm);
        while (int(history_.size()) > std::max(1, cfg_.spam_window)) history_.pop_front();
    }

    AdamWHyper h;
    h.lr = lr;
    h.beta1 = cfg_.beta1;
    h.beta2 = cfg_.beta2;
    h.eps = cfg_.eps;
    h.weight_decay = cfg_.weight_decay;
    h.step = step - int(last_reset_);   // bias correction restarts with the moments
    h.amsgrad = cfg_.amsgrad;
    h.spam_theta = spam ? cfg_.spam_theta : 0.f;
    h.grad_scale = 1.f;
    if (cfg_.grad_clip > 0 && info.grad_norm > cfg_.grad_clip)
        h.grad_scale = float(cfg_.grad_clip / (info.grad_norm + 1e-6));
    if (std::isfinite(info.grad_norm)) ops.adamw(tensors_, h);
    info.lr = lr;
    return info;
}

}  // namespace gpt
