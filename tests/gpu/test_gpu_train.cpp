// Training on the GPU end to end: same config and seed give bit-identical losses, and a run killed
// after a checkpoint and resumed continues the exact loss sequence of the uninterrupted run; the
// step as a CUDA graph gives the same bits as eager execution (losses, grad norms, parameters,
// optimizer state), with dropout on and gradient accumulation 2.
// Data: synthetic token shards written here (the GPU machine has no corpus).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "../scratch_dir.h"
#include "common/rng.h"
#include "data/loader.h"
#include "data/token_file.h"
#include "gpu_test_util.h"
#include "gpu_train_data.h"
#include "train/config_io.h"
#include "train/session.h"
#include "train/train_step.h"
#include "train/trainer.h"

using namespace gpt;

namespace {

RunConfig gpu_run(const test::ScratchDir& dir, const std::string& out) {
    test::write_motif_shards(dir.str(), 3);
    RunConfig c = default_run_config();
    c.model.n_layer = 2;
    c.model.n_embd = 128;
    c.model.n_head = 2;
    c.model.block_size = 128;
    c.model.dropout = 0.1f;
    c.train.device = "cuda";
    c.train.batch_size = 8;
    c.train.seq_len = 128;
    c.train.grad_accum = 2;
    c.train.max_iters = 12;
    c.train.eval_interval = 6;
    c.train.eval_batches = 2;
    c.train.checkpoint_interval = 4;
    c.train.optim.lr = 3e-3f;
    c.train.optim.warmup_iters = 3;
    c.train.out_dir = dir / out;
    c.data.train_path = dir / "syn_train_*.bin";
    c.data.val_path = dir / "syn_val_*.bin";
    return c;
}

}  // namespace

TEST_CASE("gpu train: deterministic, and resume continues the exact loss sequence") {
    GPT_REQUIRE_GPU();
    test::ScratchDir dir("gpu_train");
    TrainOptions o;
    o.quiet = true;
    o.sample = false;
    TrainResult whole = train(gpu_run(dir, "a"), o);
    TrainResult again = train(gpu_run(dir, "b"), o);
    REQUIRE(whole.train_losses.size() == 12);
    CHECK(whole.train_losses == again.train_losses);   // bit-identical
    CHECK(whole.train_losses.back() < whole.train_losses.front() - 1.0);

    RunConfig c = gpu_run(dir, "c");
    TrainOptions killed = o;
    killed.stop_after = 9;
    train(c, killed);
    TrainResult resumed = train(c, o);
    REQUIRE(resumed.first_step == 9);
    for (int i = 0; i < 4; ++i) {
        CAPTURE(i);
        CHECK(resumed.train_losses[i] == whole.train_losses[8 + i]);
    }
}

namespace {

struct RunTrace {
    std::vector<double> losses, norms;
    std::vector<bool> graph;
    std::vector<float> params, opt;
};

// `steps` steps straight through a StepRunner; pipelined: the next step is queued before the
// current one's results are read (as the trainer and the benchmark do).
RunTrace run_steps(const RunConfig& cfg, int steps, bool pipelined) {
    Session s(cfg, cfg.train.batch_size, cfg.train.seq_len, true);
    TokenLoader data(cfg.data.train_path, cfg.train.batch_size, cfg.train.seq_len, cfg.train.seed, 0, 1,
                     cfg.model.vocab_size);
    const BatchSource next = [&](int32_t* in, int32_t* tg) { data.next_batch(in, tg); };
    StepRunner& r = s.runner();
    RunTrace t;
    for (int step = 1; step <= steps; ++step) {
        if (r.in_flight() == 0) r.launch(step, next);
        if (pipelined && step < steps) r.launch(step + 1, next);
        const StepOutcome o = r.finish();
        REQUIRE(o.step == step);
        t.losses.push_back(o.loss);
        t.norms.push_back(o.info.grad_norm);
        t.graph.push_back(o.graph);
    }
    t.params = s.download(Space::Param, s.param_elems());
    t.opt = s.download(Space::Opt, s.opt_elems());
    return t;
}

}  // namespace

TEST_CASE("gpu train: the step as a CUDA graph is bit-identical to eager execution") {
    GPT_REQUIRE_GPU();
    test::ScratchDir dir("gpu_train_graph");
    RunConfig c = gpu_run(dir, "g");   // dropout 0.1, grad_accum 2
    REQUIRE(c.model.dropout > 0.f);
    REQUIRE(c.train.grad_accum == 2);
    const int steps = 6;
    c.train.cuda_graph = true;
    const RunTrace graph = run_steps(c, steps, true);
    c.train.cuda_graph = false;
    const RunTrace eager = run_steps(c, steps, false);
    const RunTrace eager_piped = run_steps(c, steps, true);

    // The first step always runs eagerly (warm-up); every later one must have been a replay, or
    // this test compares eager with eager.
    CHECK_FALSE(graph.graph[0]);
    for (int i = 1; i < steps; ++i) CHECK(graph.graph[size_t(i)]);
    for (bool g : eager.graph) CHECK_FALSE(g);
    CHECK(graph.losses == eager.losses);
    CHECK(graph.norms == eager.norms);
    CHECK(eager_piped.losses == eager.losses);
    for (int i = 0; i < steps; ++i) {
        CAPTURE(i);
        CHECK(std::isfinite(graph.losses[size_t(i)]));
        CHECK(std::isfinite(graph.norms[size_t(i)]));
    }
    REQUIRE(graph.params.size() == eager.params.size());
    CHECK(std::memcmp(graph.params.data(), eager.params.data(), graph.params.size() * 4) == 0);
    REQUIRE(graph.opt.size() == eager.opt.size());
    CHECK(std::memcmp(graph.opt.data(), eager.opt.data(), graph.opt.size() * 4) == 0);
    CHECK(graph.losses.back() < graph.losses.front());

    // Through the trainer (pipelined, checkpoints, evaluation in between): graph on and off give
    // the same loss sequence, and a run resumed with the graph on continues it exactly.
    TrainOptions o;
    o.quiet = true;
    o.sample = false;
    RunConfig on = gpu_run(dir, "t_on"), off = gpu_run(dir, "t_off");
    on.train.cuda_graph = true;
    off.train.cuda_graph = false;
    const TrainResult a = train(on, o), b = train(off, o);
    REQUIRE(a.train_losses.size() == 12);
    CHECK(a.train_losses == b.train_losses);
    RunConfig k = gpu_run(dir, "t_resume");
    TrainOptions killed = o;
    killed.stop_after = 5;
    train(k, killed);
    const TrainResult resumed = train(k, o);
    REQUIRE(resumed.first_step == 5);
    for (size_t i = 0; i < resumed.train_losses.size(); ++i) {
        CAPTURE(i);
        CHECK(resumed.train_losses[i] == a.train_losses[4 + i]);
    }
}
