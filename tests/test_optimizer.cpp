// The optimizer around the AdamW kernel: the lr schedule, weight decay only where declared,
// AdamWSPAM's moment reset with lr re-warm and its grad-norm spike damping, and magnitude pruning
// on the cubic ramp (SPEC §3).
#include <doctest/doctest.h>

#include <cmath>

#include "cpu/cpu_ops.h"
#include "train/optimizer.h"
#include "train/schedule.h"

using namespace gpt;

TEST_CASE("optimizer: warmup from 0, cosine to min_lr, constant after") {
    OptimConfig o;
    o.lr = 1.0f;
    o.min_lr = 0.1f;
    o.warmup_iters = 10;
    CHECK(learning_rate(o, 1, 110) == doctest::Approx(0.1));
    CHECK(learning_rate(o, 10, 110) == doctest::Approx(1.0));
    CHECK(learning_rate(o, 60, 110) == doctest::Approx(0.55));   // halfway down the cosine
    CHECK(learning_rate(o, 110, 110) == doctest::Approx(0.1));
    CHECK(learning_rate(o, 500, 110) == doctest::Approx(0.1));
    o.lr_decay_iters = 60;
    CHECK(learning_rate(o, 35, 110) == doctest::Approx(0.55));
}

namespace {

// Two tensors: a decayed 2-D weight and an undecayed bias, with constant gradients.
struct Tiny {
    ParamTable table;
    std::unique_ptr<Ops> ops = make_cpu_ops(1);
    Ten w, b;
    explicit Tiny(const OptimConfig& oc, std::unique_ptr<Optimizer>& opt) {
        w = table.add("h.0.mlp.c_fc.weight", {4, 8}, Init::constant, 1.f, true);
        b = table.add("h.0.mlp.c_fc.bias", {4}, Init::constant, 1.f, false);
        opt = std::make_unique<Optimizer>(oc, table);
        MemoryPlan p;
        p[Space::Param] = p[Space::Grad] = table.total();
        p[Space::Opt] = opt->state_elems();
        ops->allocate(p);
        auto init = table.initial_values(1);
        // Distinct magnitudes so pruning has a well-defined order.
        for (size_t i = 0; i < w.n; ++i) init[w.off + i] = 0.1f * float(i + 1);
        ops->upload(Ten{Space::Param, 0, init.size()}, init.data());
    }
    void set_grad(float g) {   // on the tensors (the alignment gaps between them stay 0)
        for (Ten p : {w, b}) {
            std::vector<float> v(p.n, g);
            ops->upload(p.as(Space::Grad), v.data());
        }
    }
    std::vector<float> get(Ten t) {
        std::vector<float> v(t.n);
        ops->download(t, v.data());
        return v;
    }
};

}  // namespace

TEST_CASE("optimizer: decoupled weight decay reaches 2-D weights only") {
    OptimConfig oc;
    oc.weight_decay = 0.5f;
    oc.grad_clip = 0;
    std::unique_ptr<Optimizer> opt;
    Tiny t(oc, opt);
    t.set_grad(0.f);   // no gradient: only the decay moves anything
    opt->step(*t.ops, 1, 0.1f);
    CHECK(t.get(t.w)[0] == doctest::Approx(0.1 * (1 - 0.1 * 0.5)));
    CHECK(t.get(t.b)[0] == 1.f);
}

TEST_CASE("optimizer: the global gradient norm covers every tensor") {
    OptimConfig oc;
    oc.weight_decay = 0;
    oc.grad_clip = 1.0f;
    std::unique_ptr<Optimizer> opt;
    Tiny t(oc, opt);
    t.set_grad(3.f);
    auto info = opt->step(*t.ops, 1, 0.1f);
    CHECK(info.grad_norm == doctest::Approx(3.0 * std::sqrt(36.0)));   // 32 + 4 elements of 3
}

TEST_CASE("optimizer: SPAM resets the moments every interval and re-warms the lr") {
    OptimConfig oc;
    oc.kind = OptimizerKind::adamw_spam;
    oc.spam_interval = 5;
    oc.spam_warmup = 4;
    oc.weight_decay = 0;
    std::unique_ptr<Optimizer> opt;
    Tiny t(oc, opt);
    for (int step = 1; step <= 8; ++step) {
        t.set_grad(0.01f);   // steady norm: no spike
        auto info = opt->step(*t.ops, step, 1.0f);
        CAPTURE(step);
        CHECK_FALSE(info.spike);
        CHECK(info.reset == (step == 6));
        if (step <= 5) CHECK(info.lr == 1.0f);
        if (step >= 6) {
            const int since = step - 5;
            const double f = std::max(1e-3, 0.5 * (1 - std::cos(M_PI * since / 4.0)));
            CHECK(info.lr == doctest::Approx(std::min(1.0, f)));
        }
    }
}

TEST_CASE("optimizer: SPAM damps the moments on a grad-norm spike") {
    OptimConfig oc;
    oc.kind = OptimizerKind::adamw_spam;
    oc.spam_interval = 1000;
    oc.grad_clip = 0;
    oc.weight_decay = 0;
    std::unique_ptr<Optimizer> opt;
    Tiny t(oc, opt);
    for (int step = 1; step <= 10; ++step) {
        t.set_grad(step % 2 ? 0.010f : 0.011f);
        CHECK_FALSE(opt->step(*t.ops, step, 1e-3f).spike);
    }
    const auto m_before = t.get(Ten{Space::Opt, 0, 1})[0];
    t.set_grad(1.0f);   // a hundred times the usual norm
    auto info = opt->step(*t.ops, 11, 1e-3f);
    CHECK(info.spike);
    // m was halved before the update: m = 0.9 * 0.5 * m_before + 0.1 * g_clipped (g clipped by
    // SPAM's per-element rule to sqrt(theta * v)); it must be below the undamped 0.9 m + 0.1 g.
    CHECK(t.get(Ten{Space::Opt, 0, 1})[0] < 0.9f * m_before + 0.1f * 1.0f);
}

TEST_CASE("optimizer: magnitude pruning follows the cubic ramp to the target sparsity") {
    OptimConfig oc;
    oc.prune_sparsity = 0.5f;
    oc.weight_decay = 0;
    oc.lr = 0;
    std::unique_ptr<Optimizer> opt;
    Tiny t(oc, opt);
    REQUIRE(opt->pruning());
    CHECK(opt->target_sparsity(0, 100) == 0.0);
    CHECK(opt->target_sparsity(50, 100) == doctest::Approx(0.5 * (1 - 0.125)));
    CHECK(opt->target_sparsity(100, 100) == doctest::Approx(0.5));
    for (int step = 1; step <= 100; ++step) {
        t.set_grad(0.f);
        opt->step(*t.ops, step, 0.f, 100);
    }
    CHECK(opt->measured_sparsity(*t.ops) == doctest::Approx(0.5));
    const auto w = t.get(t.w);
    for (size_t i = 0; i < w.size(); ++i) CHECK((w[i] == 0.f) == (i < 16));   // the 16 smallest
    CHECK(t.get(t.b)[0] == 1.f);   // biases are never pruned
}
