// Data-parallel training over two GPUs (train.gpus = 2, train/data_parallel.h), through the real
// launcher and `gpt2 train` rank processes: the two-GPU run sees the same windows per step as one
// GPU with the same global batch and tracks its losses; reruns are bit-identical; the step still
// runs as a CUDA graph with the NCCL sum inside it, bit-identical to eager; a resumed run continues
// the exact sequence; a checkpoint refuses to resume with another GPU count. Needs 2 GPUs (the
// nvidia-h200-x2 machine); with fewer that case is skipped with a message. On any GPU: one rank
// launched through NCCL gives the bits of the plain run.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "../scratch_dir.h"
#include "common/error.h"
#include "cuda/cuda_backend.h"
#include "gpu_test_util.h"
#include "gpu_train_data.h"
#include "train/checkpoint.h"
#include "train/config_io.h"
#include "train/data_parallel.h"
#include "train/trainer.h"

using namespace gpt;
namespace fs = std::filesystem;

namespace {

RunConfig dp_run(const test::ScratchDir& dir, const std::string& out, int gpus) {
    if (!fs::exists(dir / "syn_train_000000.bin")) test::write_motif_shards(dir.str(), 7);
    RunConfig c = default_run_config();
    c.model.n_layer = 2;
    c.model.n_embd = 128;
    c.model.n_head = 2;
    c.model.block_size = 128;
    c.model.dropout = 0.f;   // the one- and two-GPU runs draw different masks; compare without
    c.train.device = "cuda";
    c.train.gpus = gpus;
    c.train.batch_size = 8;
    c.train.seq_len = 128;
    c.train.grad_accum = 4;
    c.train.max_iters = 12;
    c.train.eval_interval = 6;
    c.train.eval_batches = 4;
    c.train.checkpoint_interval = 6;
    c.train.sample_tokens = 0;
    c.train.optim.lr = 1e-3f;
    c.train.optim.warmup_iters = 3;
    c.train.out_dir = dir / out;
    c.data.train_path = dir / "syn_train_*.bin";
    c.data.val_path = dir / "syn_val_*.bin";
    return c;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

TEST_CASE("gpu data-parallel: one rank through the launcher and NCCL gives the plain run's bits") {
    GPT_REQUIRE_GPU();
    REQUIRE_MESSAGE(nccl_available(), "this build has no NCCL");
    ::setenv("GPT2_EXE", GPT2_EXE_PATH, 1);
    test::ScratchDir dir("gpu_data_parallel_one");
    TrainOptions quiet;
    quiet.quiet = true;
    quiet.sample = false;
    RunConfig plain_cfg = dp_run(dir, "plain", 1);
    plain_cfg.model.dropout = 0.1f;   // rank 0's micro-batches draw the plain run's masks
    RunConfig rank_cfg = plain_cfg;
    rank_cfg.train.out_dir = dir / "rank";
    const TrainResult plain = train(plain_cfg, quiet);
    const TrainResult ranked = train_data_parallel(rank_cfg);   // a `gpt2 train` rank process, NCCL inside
    REQUIRE(plain.train_losses.size() == 12);
    CHECK(ranked.train_losses == plain.train_losses);   // a sum over one rank changes no bit
    CHECK(ranked.val_losses == plain.val_losses);
    CHECK(fs::exists(dir / "rank/ranks.yaml"));
    // The rank's steps were CUDA graphs with the NCCL calls captured (it logs when they are not).
    const std::string log = read_text(dir / "rank/train.log");
    CHECK(log.find("done: steps 1..12") != std::string::npos);
    CHECK(log.find("runs eagerly") == std::string::npos);

    // Resume through the launcher continues the exact sequence.
    CheckpointDir ck(rank_cfg.train.out_dir + "/checkpoints", 0);
    REQUIRE(ck.list().size() == 2);
    fs::remove(ck.path_for_step(12));
    const TrainResult resumed = train_data_parallel(rank_cfg);
    REQUIRE(resumed.first_step == 7);
    REQUIRE(resumed.train_losses.size() == 6);
    for (size_t i = 0; i < 6; ++i) CHECK(resumed.train_losses[i] == plain.train_losses[6 + i]);

    // A rank that fails is named, with how it ended (here it finds no training data).
    RunConfig broken = rank_cfg;
    broken.train.out_dir = dir / "broken";
    broken.data.train_path = dir / "missing_train_*.bin";
    CHECK_THROWS_WITH_AS(train_data_parallel(broken), doctest::Contains("rank 0 of 1 ended with exit status"), Error);
}

TEST_CASE("gpu data-parallel: 2 GPUs track 1 GPU, bit-identical reruns, graph == eager, exact resume") {
    GPT_REQUIRE_GPU();
    if (cuda_device_count() < 2) {
        MESSAGE("data-parallel test skipped: it needs 2 GPUs, " << cuda_device_count() << " visible");
        return;
    }
    REQUIRE_MESSAGE(nccl_available(), "this build has no NCCL");
    ::setenv("GPT2_EXE", GPT2_EXE_PATH, 1);   // the launcher starts the ranks from this program
    test::ScratchDir dir("gpu_data_parallel");
    TrainOptions quiet;
    quiet.quiet = true;
    quiet.sample = false;

    const TrainResult one = train(dp_run(dir, "one", 1), quiet);
    const TrainResult two = train(dp_run(dir, "two", 2), quiet);
    const TrainResult again = train(dp_run(dir, "again", 2), quiet);
    RunConfig eager_cfg = dp_run(dir, "eager", 2);
    eager_cfg.train.cuda_graph = false;
    const TrainResult eager = train(eager_cfg, quiet);

    REQUIRE(one.train_losses.size() == 12);
    REQUIRE(two.train_losses.size() == 12);
    // Rank 0 wrote the run's files; rank 1 its own log only.
    CHECK(fs::exists(dir / "two/result.json"));
    CHECK(fs::exists(dir / "two/rank1.log"));
    CHECK_FALSE(fs::exists(dir / "one/rank1.log"));
    // The steps ran as CUDA graphs with the NCCL sum inside (the log says so when they do not).
    CHECK(read_text(dir / "two/train.log").find("runs eagerly") == std::string::npos);

    // Same windows per step (docs/data.md's rank rule), the gradients summed in another order:
    // the losses agree to bf16 rounding, which grows a little over the steps.
    for (size_t i = 0; i < 12; ++i) {
        CAPTURE(i);
        CHECK(std::isfinite(two.train_losses[i]));
        CHECK(std::fabs(two.train_losses[i] - one.train_losses[i]) < 2e-3 * std::fabs(one.train_losses[i]) + 1e-3);
    }
    REQUIRE(two.val_losses.size() == one.val_losses.size());
    for (size_t i = 0; i < one.val_losses.size(); ++i)
        CHECK(std::fabs(two.val_losses[i].second - one.val_losses[i].second) < 5e-3 * one.val_losses[i].second);
    CHECK(two.train_losses.back() < two.train_losses.front() - 1.0);   // it learns

    CHECK(again.train_losses == two.train_losses);   // bit-identical reruns
    CHECK(again.val_losses == two.val_losses);
    CHECK(eager.train_losses == two.train_losses);   // graph replay == eager, NCCL inside
    MESSAGE("1 GPU vs 2 GPUs, last loss " << one.train_losses.back() << " / " << two.train_losses.back()
                                          << "; tokens/s " << one.tokens_per_s << " / " << two.tokens_per_s);

    // Resume: drop the final checkpoint and result of the rerun; it continues from step 6.
    RunConfig resume_cfg = dp_run(dir, "again", 2);
    const std::string ckdir = resume_cfg.train.out_dir + "/checkpoints";
    CheckpointDir ck(ckdir, 0);
    REQUIRE(ck.list().size() == 2);
    fs::remove(ck.path_for_step(12));
    const TrainResult resumed = train(resume_cfg, quiet);
    REQUIRE(resumed.first_step == 7);
    REQUIRE(resumed.train_losses.size() == 6);
    for (size_t i = 0; i < 6; ++i) {
        CAPTURE(i);
        CHECK(resumed.train_losses[i] == two.train_losses[6 + i]);
    }

    // The data order depends on the GPU count: a checkpoint of 2 GPUs does not resume on 1.
    fs::remove(ck.path_for_step(12));
    RunConfig wrong = dp_run(dir, "again", 1);
    CHECK_THROWS_WITH_AS(train(wrong, quiet), doctest::Contains("Resume with train.gpus = 2"), Error);
}
