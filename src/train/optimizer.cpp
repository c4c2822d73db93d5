#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

namespace gpt {

Optimizer::Optimizer(const OptimConfig& cfg, const ParamTable& params) : cfg_(cfg), P_(params.total()) {
    const bool ams = cfg.amsgrad;
    state_elems_ = P_ * (ams ? 3 : 2);
    if (cfg.prune_sparsity > 0.f) {
        mask_off_ = state_elems_;
        state_elems_ += P_;
        // The linear weights of attention and MLP: 2-D ".weight" tensors inside the blocks.
        for (const auto& s : params.specs()) {
            const bool in_block = s.name.rfind("h.", 0) == 0 &&
                                  (s.name.find(".attn.") != std::string::npos || s.name.find(".mlp.") != std::string::npos);
            const bool weight = s.shape.size() == 2 && s.name.size() > 7 && s.name.compare(s.name.size() - 7, 7, ".weight") == 0;
            if (in_block && weight) prunable_.push_back(s.t);
        }
    }
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

double Optimizer::target_sparsity(int step, int max_iters) const {
    if (!pruning() || max_iters <= 0) return 0.0;
    const double t = std::min(1.0, double(step) / double(max_iters));
    return double(cfg_.prune_sparsity) * (1.0 - std::pow(1.0 - t, 3.0));
}

// Global magnitude threshold over all prunable weights: the k smallest |w| are masked (0), the
// rest kept (1). Masks are only ever recomputed from the current (already masked) weights, so a
// pruned weight stays pruned as the target grows.
void Optimizer::update_masks(Ops& ops, double sparsity) {
    size_t total = 0;
    for (const Ten& t : prunable_) total += t.n;
    std::vector<float> w(total), mags;
    size_t at = 0;
    for (const Ten& t : prunable_) {
        ops.download(t, w.data() + at);
        at += t.n;
    }
    mags.resize(total);
    for (size_t i = 0; i < total; ++i) mags[i] = std::fabs(w[i]);
    const size_t k = std::min(total, size_t(sparsity * double(total)));
    float thr = -1.f;
    if (k > 0) {
        std::nth_element(mags.begin(), mags.begin() + long(k - 1), mags.end());
        thr = mags[k - 1];
    }
    std::vector<float> mask(total);
    for (size_t i = 0; i < total; ++i) mask[i] = std::fabs(w[i]) > thr ? 1.f : 0.f;
    at = 0;
    for (const Ten& t : prunable_) {
        ops.upload(Ten{Space::Opt, mask_off_ + t.off, t.n}, mask.data() + at);
        at += t.n;
    }
}

double Optimizer::measured_sparsity(Ops& ops) const {
    size_t zeros = 0, total = 0;
    std::vector<float> w;
    for (const Ten& t : prunable_) {
        w.resize(t.n);
        ops.download(t, w.data());
        for (float x : w) zeros += x == 0.f;
        total += t.n;
    }
    return total ? double(zeros) / double(total) : 0.0;
}

void Optimizer::restore(const std::vector<double>& history, int64_t last_reset) {
    history_.assign(history.begin(), history.end());
    last_reset_ = last_reset;
}

OptimizerStepInfo Optimizer::step(Ops& ops, int step, float scheduled_lr, int max_iters, int norm_slot) {
    OptimizerStepInfo info;
    const Ten grads{Space::Grad, 0, P_};
    const bool on_device = norm_slot >= 0;
    if (on_device) {
        ops.scalar_sum_squares(norm_slot, grads);
        info.grad_norm = host_decisions() ? std::sqrt(ops.scalar_read(norm_slot)) : std::nan("");
    } else {
        info.grad_norm = std::sqrt(ops.sum_squares(grads));
    }
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
    if (on_device) {   // the same clipping rule, applied where the norm is (Ops::adamw_clipped)
        ops.adamw_clipped(tensors_, h, norm_slot, cfg_.grad_clip);
    } else {
        if (cfg_.grad_clip > 0 && info.grad_norm > cfg_.grad_clip)
            h.grad_scale = float(cfg_.grad_clip / (info.grad_norm + 1e-6));
        if (std::isfinite(info.grad_norm)) ops.adamw(tensors_, h);
    }
    info.lr = lr;

    if (pruning()) {
        // The masks follow the cubic ramp, recomputed 100 times over the run (and at step 1, so
        // the mask exists); between recomputations the same masks are re-applied every step.
        const int every = std::max(1, max_iters / 100);
        if (step == 1 || step % every == 0) {
            update_masks(ops, target_sparsity(step, max_iters));
            info.pruned = true;
        }
        for (const Ten& t : prunable_) ops.mul_inplace(t, Ten{Space::Opt, mask_off_ + t.off, t.n}, t.n);
    }
    return info;
}

}  // namespace gpt
