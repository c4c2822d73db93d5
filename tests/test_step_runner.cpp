// The step runner (train/train_step.h) on the CPU reference: the pipelined runner (next step
// queued before the current one's results are read, batches staged, losses and grad norm kept as
// step scalars, clipping decided inside adamw_clipped) gives bit for bit what the plain
// synchronous loop gives (set_batch, forward returning the loss, host grad norm, host clipping).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/rng.h"
#include "data/loader.h"
#include "data/token_file.h"
#include "scratch_dir.h"
#include "train/config_io.h"
#include "train/schedule.h"
#include "train/session.h"
#include "train/train_step.h"

using namespace gpt;

namespace {

RunConfig tiny_run(const test::ScratchDir& dir) {
    std::vector<uint16_t> tokens(4000);
    Rng r(5);
    for (auto& t : tokens) t = uint16_t(r.next_u64() % 60);
    write_shard(dir / "tiny_train_000000.bin", tokens);
    RunConfig c = default_run_config();
    c.model.n_layer = 1;
    c.model.n_embd = 32;
    c.model.n_head = 2;
    c.model.block_size = 16;
    c.model.vocab_size = 64;
    c.model.padded_vocab = 64;
    c.model.dropout = 0.1f;
    c.train.device = "cpu";
    c.train.threads = 1;
    c.train.batch_size = 2;
    c.train.seq_len = 16;
    c.train.grad_accum = 2;
    c.train.max_iters = 10;
    c.train.optim.lr = 1e-2f;
    c.train.optim.warmup_iters = 2;
    c.train.optim.grad_clip = 0.05f;   // small enough that clipping acts on every step
    c.data.train_path = dir / "tiny_train_*.bin";
    return c;
}

struct Trace {
    std::vector<double> losses, norms;
    std::vector<float> params, opt;
};

TokenLoader loader(const RunConfig& c) {
    return TokenLoader(c.data.train_path, c.train.batch_size, c.train.seq_len, c.train.seed, 0, 1, c.model.vocab_size);
}

// The synchronous loop the runner replaced, written out.
Trace reference(const RunConfig& c, int steps) {
    Session s(c, c.train.batch_size, c.train.seq_len, true);
    TokenLoader data = loader(c);
    const TrainConfig& tc = c.train;
    const int B = tc.batch_size, T = tc.seq_len, accum = tc.grad_accum;
    const float dloss = 1.0f / float(size_t(B) * T * accum);
    std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
    Trace t;
    for (int step = 1; step <= steps; ++step) {
        double loss = 0;
        s.ops().zero(Ten{Space::Grad, 0, s.param_elems()});
        for (int micro = 0; micro < accum; ++micro) {
            data.next_batch(x.data(), y.data());
            s.model().set_batch(s.ops(), x.data(), y.data(), B, T);
            StepContext ctx{&s.ops(), B, T, true, mix64(tc.seed ^ mix64(uint64_t(step) * 1024 + uint64_t(micro)))};
            loss += s.model().forward(ctx, dloss);
            s.model().backward(ctx);
        }
        const OptimizerStepInfo info =
            s.optimizer().step(s.ops(), step, learning_rate(tc.optim, step, tc.max_iters), tc.max_iters);
        s.ops().params_changed();
        t.losses.push_back(loss / accum);
        t.norms.push_back(info.grad_norm);
    }
    t.params = s.download(Space::Param, s.param_elems());
    t.opt = s.download(Space::Opt, s.opt_elems());
    return t;
}

Trace runner(const RunConfig& c, int steps, bool pipelined) {
    Session s(c, c.train.batch_size, c.train.seq_len, true);
    TokenLoader data = loader(c);
    const BatchSource next = [&](int32_t* in, int32_t* tg) { data.next_batch(in, tg); };
    StepRunner& r = s.runner();
    Trace t;
    for (int step = 1; step <= steps; ++step) {
        if (r.in_flight() == 0) r.launch(step, next);
        if (pipelined && step < steps) r.launch(step + 1, next);
        const StepOutcome o = r.finish();
        REQUIRE(o.step == step);
        CHECK_FALSE(o.graph);   // the CPU never captures
        t.losses.push_back(o.loss);
        t.norms.push_back(o.info.grad_norm);
    }
    t.params = s.download(Space::Param, s.param_elems());
    t.opt = s.download(Space::Opt, s.opt_elems());
    return t;
}

void check_same(const Trace& a, const Trace& b) {
    CHECK(a.losses == b.losses);
    CHECK(a.norms == b.norms);
    REQUIRE(a.params.size() == b.params.size());
    CHECK(std::memcmp(a.params.data(), b.params.data(), a.params.size() * 4) == 0);
    REQUIRE(a.opt.size() == b.opt.size());
    CHECK(std::memcmp(a.opt.data(), b.opt.data(), a.opt.size() * 4) == 0);
}

}  // namespace

TEST_CASE("step runner: pipelined steps equal the synchronous loop bit for bit (cpu)") {
    test::ScratchDir dir("step_runner");
    const RunConfig c = tiny_run(dir);
    const int steps = 4;
    const Trace ref = reference(c, steps);
    for (double n : ref.norms) CHECK(n > c.train.optim.grad_clip);   // clipping was in play
    check_same(runner(c, steps, false), ref);
    check_same(runner(c, steps, true), ref);
    // train_step (launch + finish) is the same step.
    Session s(c, c.train.batch_size, c.train.seq_len, true);
    TokenLoader data = loader(c);
    const double first = train_step(s, 1, [&](int32_t* in, int32_t* tg) { data.next_batch(in, tg); }).loss;
    CHECK(first == ref.losses[0]);
}

TEST_CASE("step runner: at most two steps in flight, finish needs one") {
    test::ScratchDir dir("step_runner_limits");
    const RunConfig c = tiny_run(dir);
    Session s(c, c.train.batch_size, c.train.seq_len, true);
    TokenLoader data = loader(c);
    const BatchSource next = [&](int32_t* in, int32_t* tg) { data.next_batch(in, tg); };
    StepRunner& r = s.runner();
    CHECK_THROWS_AS(r.finish(), Error);
    r.launch(1, next);
    r.launch(2, next);
    CHECK_THROWS_AS(r.launch(3, next), Error);
    CHECK(r.finish().step == 1);
    CHECK(r.finish().step == 2);
}
