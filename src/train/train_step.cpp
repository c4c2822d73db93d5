#include "train/train_step.h"

#include <chrono>
#include <cmath>
#include <exception>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/rng.h"
#include "train/schedule.h"

namespace gpt {

StepRunner::StepRunner(Session& s)
    : s_(s), B_(s.config().train.batch_size), T_(s.config().train.seq_len),
      accum_(rank_grad_accum(s.config().train, s.ranks().world)), world_(s.ranks().world), rank_(s.ranks().rank) {
    GPT_CHECK(B_ <= s.model().max_batch() && T_ <= s.model().max_seq(),
              "train_step: the micro-batch exceeds the session's planned shape");
    per_slot_ = 1 + accum_;
    s.ops().scalars_reserve(2 * per_slot_);
    const TrainConfig& tc = s.config().train;
    // Graphs: only CUDA captures them; steps that decide on the host and the per-operation
    // profiler (it synchronises around every call) run eagerly.
    graph_wanted_ = tc.cuda_graph && s.backend().is_cuda;
    if (graph_wanted_ && s.profiling()) go_eager("the per-operation profiler synchronises around every call");
    if (graph_wanted_ && s.optimizer().host_decisions())
        go_eager("the optimizer decides on the host each step (SPAM spike detection or pruning masks)");
    if (!tc.cuda_graph) eager_reason_ = "train.cuda_graph is off";
}

void StepRunner::go_eager(const std::string& why) {
    if (graph_wanted_) spdlog::info("training step runs eagerly, not as a CUDA graph: {}", why);
    graph_wanted_ = false;
    eager_reason_ = why;
}

// Everything a step queues on the device. Run eagerly, or between graph_begin and graph_end:
// the same calls either way, so both give the same bits.
void StepRunner::run_body(int64_t step, int slot, OptimizerStepInfo& info) {
    Ops& ops = s_.ops();
    GPT& model = s_.model();
    const TrainConfig& tc = s_.config().train;
    const size_t BT = size_t(B_) * T_;
    const int base = slot * per_slot_;
    // The mean over the global batch: every rank's accum_ micro-batches, summed over the ranks below.
    const float dloss = 1.0f / float(BT * size_t(accum_) * size_t(world_));
    ops.scalars_zero(base, per_slot_);
    ops.zero(Ten{Space::Grad, 0, s_.param_elems()});
    for (int micro = 0; micro < accum_; ++micro) {
        ops.stage_take(model.batch_tokens(B_, T_), slot, size_t(micro) * 2 * BT);
        ops.stage_take(model.batch_targets(B_, T_), slot, size_t(micro) * 2 * BT + BT);
        // Dropout keyed by the micro-batch's place in the global batch: ranks draw different masks.
        const uint64_t global_micro = uint64_t(rank_) * uint64_t(accum_) + uint64_t(micro);
        StepContext c{&ops, B_, T_, true, mix64(tc.seed ^ mix64(uint64_t(step) * 1024 + global_micro))};
        model.forward_on_device(c, dloss);
        ops.scalar_add_sum(base + 1 + micro, model.token_losses(B_, T_));
        model.backward(c);
    }
    // Data-parallel: the gradients and loss sums of all ranks (no-ops in a single process).
    ops.allreduce_sum(Ten{Space::Grad, 0, s_.param_elems()});
    ops.scalars_allreduce(base + 1, accum_);
    const float lr = learning_rate(tc.optim, int(step), tc.max_iters);
    // No params_changed() here: the optimizer's writes refresh the bf16 copy of what they touch
    // (the AdamW kernel, and param_touched for the pruning masks), so a full conversion of every
    // parameter each step (~0.4 ms at GPT-2 124M on an H100) would only repeat them.
    info = s_.optimizer().step(ops, int(step), lr, tc.max_iters, base);
    ops.scalars_publish(base, per_slot_);
}

void StepRunner::launch(int64_t step, const BatchSource& next_batch) {
    GPT_CHECK(pending_.size() < 2, "StepRunner: at most two steps in flight; finish() one first");
    const auto t0 = std::chrono::steady_clock::now();
    Ops& ops = s_.ops();
    const int slot = int(launches_ & 1);   // the two in-flight steps use different slots
    const size_t BT = size_t(B_) * T_;
    int32_t* buf = ops.stage_host(slot, size_t(accum_) * 2 * BT);
    for (int micro = 0; micro < accum_; ++micro) next_batch(buf + size_t(micro) * 2 * BT, buf + size_t(micro) * 2 * BT + BT);
    ops.stage_commit(slot);

    Pending p;
    p.step = step;
    p.slot = slot;
    // The first step runs eagerly: it sizes the scratch buffers, picks the GEMM algorithms and
    // uploads the optimizer's tensor list, none of which may happen inside a capture.
    if (graph_wanted_ && launches_ > 0) {
        std::string why;
        bool captured = false;
        if (ops.graph_begin()) {
            try {
                run_body(step, slot, p.info);
                captured = ops.graph_end(&why);
            } catch (const std::exception& e) {
                ops.graph_abort();
                why = e.what();
            }
        } else {
            why = ops.name() + " could not start a capture";
        }
        if (captured) {
            ops.graph_launch();
            p.graph = true;
        } else {
            go_eager(why);   // nothing of the captured work ran: run the step now
        }
    }
    if (!p.graph) run_body(step, slot, p.info);
    ops.stage_release(slot);
    ops.step_end(slot);
    pending_.push_back(p);
    ++launches_;
    last_launch_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

StepOutcome StepRunner::finish() {
    GPT_CHECK(!pending_.empty(), "StepRunner::finish: no step in flight");
    const Pending p = pending_.front();
    pending_.pop_front();
    std::vector<double> v(static_cast<size_t>(per_slot_));
    s_.ops().scalars_fetch(p.slot, p.slot * per_slot_, per_slot_, v.data());
    StepOutcome o;
    o.step = p.step;
    o.info = p.info;
    o.info.grad_norm = std::sqrt(v[0]);
    o.graph = p.graph;
    const double BT = double(size_t(B_) * T_);
    for (int micro = 0; micro < accum_; ++micro) o.loss += v[size_t(1 + micro)] / BT;
    o.loss /= double(accum_) * world_;   // the loss sums are over every rank's micro-batches
    return o;
}

StepOutcome train_step(Session& s, int64_t step, const BatchSource& next_batch) {
    StepRunner& r = s.runner();
    GPT_CHECK(r.in_flight() == 0, "train_step: the session's runner has a step in flight");
    r.launch(step, next_batch);
    return r.finish();
}

}  // namespace gpt
