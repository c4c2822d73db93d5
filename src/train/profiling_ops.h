// An Ops decorator that times every operation: when enabled, each call is bracketed by
// synchronisations and its wall time is added to its method's total. `gpt2 bench --profile` prints
// where a training step's time goes, per operation, on any backend. The forwarding methods are
// generated from ops.h at build time (tools/gen_profiling_ops.py), so they never fall behind it.
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "model/ops.h"
#include "train/profiling_ops_gen_methods.h"   // generated into the build tree

namespace gpt {

class ProfilingOps final : public Ops {
public:
    explicit ProfilingOps(std::unique_ptr<Ops> inner) : inner_(std::move(inner)) {}
    std::string name() const override { return inner_->name(); }
    size_t memory_in_use() const override { return inner_->memory_in_use(); }
    size_t memory_peak() const override { return inner_->memory_peak(); }
    GPT_PROFILING_OPS_METHODS

    void enable(bool on) { on_ = on; }
    void reset() { totals_.clear(); }
    // A table: operation, calls, ms per step, share of the total; steps divides the totals.
    std::string report(int steps) const;

private:
    struct Total {
        double seconds = 0;
        long calls = 0;
    };
    struct Scope {
        ProfilingOps& p;
        const char* op;
        std::chrono::steady_clock::time_point t0;
        Scope(ProfilingOps& p_, const char* op_) : p(p_), op(op_) {
            if (p.on_ && p.depth_++ == 0) {
                p.inner_->synchronize();
                t0 = std::chrono::steady_clock::now();
            }
        }
        ~Scope() {
            if (p.on_ && --p.depth_ == 0) {
                p.inner_->synchronize();
                Total& t = p.totals_[op];
                t.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                ++t.calls;
            }
        }
    };
    std::unique_ptr<Ops> inner_;
    bool on_ = false;
    int depth_ = 0;
    std::map<std::string, Total> totals_;
};

}  // namespace gpt
