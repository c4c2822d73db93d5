// AdamW and AdamWSPAM over the model's parameters (SPEC §3): global-norm clipping, decoupled
// weight decay on 2-D weights only, optional AMSGrad; SPAM adds the per-element spike clip,
// momentum damping on grad-norm spikes, and periodic moment resets with a re-warmed lr.
// The state lives in Space::Opt: m at [0, P), v at [P, 2P), vmax next with AMSGrad, then the
// pruning mask (same offsets as the parameters) when magnitude pruning is on.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "model/config.h"
#include "model/ops.h"
#include "model/param_table.h"

namespace gpt {

struct OptimizerStepInfo {
    double grad_norm = 0;   // before clipping (NaN until read back when it stayed on the device)
    float lr = 0;           // the rate actually applied (after SPAM's re-warm)
    bool spike = false;     // SPAM detected a grad-norm spike this step
    bool reset = false;     // SPAM reset the moments this step
    bool pruned = false;    // the pruning masks were recomputed this step
};

class Optimizer {
public:
    Optimizer(const OptimConfig& cfg, const ParamTable& params);
    size_t state_elems() const { return state_elems_; }   // Space::Opt elements needed

    // One optimizer step from the accumulated gradients (Space::Grad). step is 1-based;
    // max_iters sets the pruning ramp. norm_slot >= 0: the squared global grad norm goes to that
    // step scalar (Ops::scalars_reserve) and clipping is decided on the device, so the step does
    // not wait for the GPU unless host_decisions(); grad_norm is then left NaN for the caller to
    // read back. norm_slot < 0: the norm is read on the host (synchronous).
    OptimizerStepInfo step(Ops& ops, int step, float scheduled_lr, int max_iters = 0, int norm_slot = -1);
    // Whether a step decides something on the host from device values: SPAM's spike detection
    // (the grad-norm history) and pruning (masks from the weights). Such steps synchronise, so
    // they cannot be captured as a graph.
    bool host_decisions() const { return cfg_.kind == OptimizerKind::adamw_spam || pruning(); }

    // Magnitude pruning (SPEC §3): the target sparsity at a step, s * (1 - (1 - t/T)^3), and the
    // fraction of the prunable weights that are zero now (downloads them).
    bool pruning() const { return cfg_.prune_sparsity > 0.f; }
    double target_sparsity(int step, int max_iters) const;
    double measured_sparsity(Ops& ops) const;

    // Host-side state for checkpoints: norm history and the step of the last moment reset.
    std::vector<double> norm_history() const { return {history_.begin(), history_.end()}; }
    int64_t last_reset() const { return last_reset_; }
    void restore(const std::vector<double>& history, int64_t last_reset);

private:
    OptimConfig cfg_;
    size_t P_ = 0, state_elems_ = 0;
    std::vector<AdamWTensor> tensors_;
    std::vector<Ten> prunable_;    // attention and MLP linear weights (Space::Param)
    size_t mask_off_ = 0;          // start of the pruning mask in Space::Opt
    void update_masks(Ops& ops, double sparsity);
    std::deque<double> history_;   // recent global grad norms (SPAM spike detection)
    int64_t last_reset_ = 0;       // moments were last zeroed before this step (bias correction restarts)
};

}  // namespace gpt
