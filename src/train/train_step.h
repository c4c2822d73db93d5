// One optimizer step, shared by the trainer, the dry run and the benchmark: grad_accum
// micro-batches of forward + backward into the zeroed gradient buffer, then the optimizer.
//
// Data-parallel (train.gpus > 1): each rank runs train.grad_accum / N micro-batches, then sums
// the gradients and loss sums over the ranks before the optimizer (Ops::allreduce_sum).
//
// StepRunner runs steps without waiting for the device (docs/performance.md, "Step as a CUDA
// graph"): a step's batches are staged in pinned memory and copied on a copy stream while the
// previous step still computes; the losses and the grad norm stay on the device (clipping is
// decided there) and are read back once per step; on CUDA the whole step (micro-steps,
// optimizer, bf16 refresh) is captured and replayed as one graph, updated in place from each
// step's capture, so per-step values (dropout seeds, learning rate, AdamW's step) are simply
// captured again. Graph and eager execution run the same calls and give bit-identical results.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "train/optimizer.h"
#include "train/session.h"

namespace gpt {

struct StepOutcome {
    int64_t step = 0;
    double loss = 0;            // mean over the micro-batches
    OptimizerStepInfo info;
    bool graph = false;         // ran as a CUDA graph replay
};

// next_batch(inputs, targets) fills B*T tokens each. The dropout stream of each micro-batch is
// keyed by (seed, step, micro), so a resumed run draws the same masks.
using BatchSource = std::function<void(int32_t* inputs, int32_t* targets)>;

class StepRunner {
public:
    explicit StepRunner(Session& s);

    // Queues step `step`: pulls its grad_accum batches from next_batch (the same calls in the
    // same order as a synchronous loop), stages them, and runs the step as a graph replay or
    // eagerly. Returns without waiting for the device, except for steps that decide on the host
    // (SPAM, pruning: Optimizer::host_decisions). At most two steps may be in flight.
    void launch(int64_t step, const BatchSource& next_batch);
    // Waits for the oldest launched step and returns its loss and grad norm (one read-back).
    StepOutcome finish();
    int in_flight() const { return int(pending_.size()); }

    bool graph_wanted() const { return graph_wanted_; }      // still capturing (or about to)
    const std::string& eager_reason() const { return eager_reason_; }
    double last_launch_ms() const { return last_launch_ms_; }  // host time of the last launch()

private:
    struct Pending {
        int64_t step = 0;
        int slot = 0;
        OptimizerStepInfo info;
        bool graph = false;
    };
    void run_body(int64_t step, int slot, OptimizerStepInfo& info);   // the step's calls
    void go_eager(const std::string& why);

    Session& s_;
    int B_, T_, accum_;              // accum_: this rank's micro-batches per step
    int world_, rank_;               // data-parallel ranks (train/data_parallel.h); 1 and 0 alone
    int per_slot_;                   // scalars per step (norm^2, one loss sum per micro)
    std::deque<Pending> pending_;
    int64_t launches_ = 0;
    bool graph_wanted_ = false;
    std::string eager_reason_;
    double last_launch_ms_ = 0;
};

// launch + finish on the session's runner: one step, its results on return.
StepOutcome train_step(Session& s, int64_t step, const BatchSource& next_batch);

}  // namespace gpt
