// Training on the GPU end to end: same config and seed give bit-identical losses, and a run killed
// after a checkpoint and resumed continues the exact loss sequence of the uninterrupted run.
// Data: synthetic token shards written here (the GPU machine has no corpus).
#include <doctest/doctest.h>

#include "../scratch_dir.h"
#include "common/rng.h"
#include "data/token_file.h"
#include "gpu_test_util.h"
#include "train/config_io.h"
#include "train/trainer.h"

using namespace gpt;

namespace {

RunConfig gpu_run(const test::ScratchDir& dir, const std::string& out) {
    // A learnable stream: a repeating pseudo-random sequence of 300 tokens.
    std::vector<uint16_t> tokens(200000);
    Rng r(3);
    std::vector<uint16_t> motif(300);
    for (auto& t : motif) t = uint16_t(r.next_u64() % 50000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = motif[i % motif.size()];
    write_shard(dir / "syn_train_000000.bin", tokens);
    write_shard(dir / "syn_val_000000.bin", std::vector<uint16_t>(tokens.begin(), tokens.begin() + 50000));
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
