// The parallel ablation runner (ablation.jobs > 1): steps train as concurrent `gpt2 train` child
// processes, each with its own log and result.json; the report matches a one-at-a-time run bit for
// bit; a restarted ablation reports finished steps without retraining them; a failing step is
// named with its log while the others still finish.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "scratch_dir.h"
#include "train/ablation_runner.h"
#include "train/train_result_io.h"
#include "train_fixture.h"

using namespace gpt;
namespace fs = std::filesystem;

namespace {

RunConfig tiny_ablation(const std::string& out_dir, int jobs) {
    RunConfig c = test::tiny_run(out_dir);
    c.job = "ablation";
    c.ablation_steps = {0, 5};   // baseline and banded RA: two different models
    c.ablation_jobs = jobs;
    c.train.max_iters = 4;
    c.train.eval_interval = 4;
    c.train.eval_batches = 2;
    c.train.sample_tokens = 0;
    c.train.checkpoint_interval = 2;
    return c;
}

void use_built_gpt2() { ::setenv("GPT2_EXE", GPT2_EXE_PATH, 1); }

}  // namespace

TEST_CASE("ablation: train results round-trip through result.json, NaN included") {
    test::ScratchDir dir("result_json");
    TrainResult r;
    r.first_step = 3;
    r.last_step = 7;
    r.train_losses = {5.5, std::numeric_limits<double>::quiet_NaN(), 4.25};
    r.val_losses = {{5, 4.5}, {7, std::numeric_limits<double>::quiet_NaN()}};
    r.tokens_per_s = 1234.5;
    r.planned_gib = 0.75;
    r.sparsity = 0.5;
    r.sample = "the \"quick\"\nfox";
    write_train_result(dir / "result.json", r);
    const TrainResult back = read_train_result(dir / "result.json");
    CHECK(back.first_step == 3);
    CHECK(back.last_step == 7);
    REQUIRE(back.train_losses.size() == 3);
    CHECK(back.train_losses[0] == 5.5);
    CHECK(std::isnan(back.train_losses[1]));
    REQUIRE(back.val_losses.size() == 2);
    CHECK(back.val_losses[0] == std::pair<int64_t, double>{5, 4.5});
    CHECK(std::isnan(back.val_losses[1].second));
    CHECK(back.sample == r.sample);
    write_text_atomically(dir / "bad.json", "{\"first_step\": 1}");
    CHECK_THROWS_WITH_AS(read_train_result(dir / "bad.json"), doctest::Contains("bad.json: not a training result"), Error);
}

TEST_CASE("ablation: steps as concurrent processes match the one-at-a-time run exactly") {
    use_built_gpt2();
    test::ScratchDir seq_dir("ablation_seq"), par_dir("ablation_par");
    const auto seq = run_ablation(tiny_ablation(seq_dir.str(), 1));
    const auto par = run_ablation(tiny_ablation(par_dir.str(), 2));
    REQUIRE(seq.size() == 2);
    REQUIRE(par.size() == 2);
    for (size_t i = 0; i < 2; ++i) {
        CAPTURE(i);
        CHECK(par[i].step == seq[i].step);
        CHECK(std::isfinite(par[i].final_val));
        CHECK(par[i].final_val == seq[i].final_val);   // same data order, seed and threads: bitwise
        CHECK(par[i].parameters == seq[i].parameters);
        const std::string step_dir = par_dir / (i == 0 ? "step_00" : "step_05");
        CHECK(fs::exists(step_dir + "/train.log"));
        CHECK(fs::exists(step_dir + "/run.yaml"));
        CHECK(read_train_result(step_dir + "/result.json").last_step == 4);
    }
    CHECK(par[0].final_val != par[1].final_val);   // two different models
    CHECK(fs::exists(par_dir / "ablation_report.md"));

    // Started again: both steps are reported from their result.json, nothing is retrained.
    const auto log_size = fs::file_size(par_dir / "step_05/train.log");
    const auto again = run_ablation(tiny_ablation(par_dir.str(), 2));
    REQUIRE(again.size() == 2);
    CHECK(again[1].final_val == par[1].final_val);
    CHECK(fs::file_size(par_dir / "step_05/train.log") == log_size);
}

TEST_CASE("ablation: a failing step is named with its log and the other steps still finish") {
    use_built_gpt2();
    test::ScratchDir dir("ablation_fail");
    RunConfig c = tiny_ablation(dir.str(), 2);
    // In step 5's directory a plain file sits where its checkpoints go: its child process fails.
    fs::create_directories(dir / "step_05");
    write_text_atomically(dir / "step_05/checkpoints", "in the way");
    CHECK_THROWS_WITH_AS(run_ablation(c), doctest::Contains("1 of 2 ablation steps failed: step 5"), Error);
    CHECK(fs::exists(dir / "step_00/result.json"));
    CHECK(fs::exists(dir / "ablation_report.md"));
}
