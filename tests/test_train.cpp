// End to end on the CPU: a tiny GPT trains on real English text (the State of the Union corpus
// fetched by tools/fetch_assets.sh) and its validation loss falls; a run killed after a
// checkpoint and resumed continues with exactly the losses of the uninterrupted run.
#include <doctest/doctest.h>

#include <filesystem>

#include "scratch_dir.h"
#include "train/config_io.h"
#include "train_fixture.h"
#include "train/trainer.h"

using namespace gpt;

using test::tiny_run;

TEST_CASE("train: a tiny GPT's validation loss falls on real text") {
    test::ScratchDir out("train_falls");
    RunConfig c = tiny_run(out.str());
    c.train.max_iters = 60;
    c.train.eval_interval = 20;
    TrainOptions o;
    o.quiet = true;
    o.sample = false;
    TrainResult r = train(c, o);
    REQUIRE(r.val_losses.size() == 3);
    // From ~ln(50257) = 10.8 at init; 60 steps of 256 tokens reach well under 8.
    CHECK(r.val_losses.back().second < r.val_losses.front().second - 0.5);
    CHECK(r.val_losses.back().second < 8.0);
    CHECK(r.train_losses.front() > 10.0);
    CHECK(std::filesystem::exists(out / "metrics.h5"));
    CHECK(std::filesystem::exists(out / "metrics.jsonl"));
    CHECK(std::filesystem::exists(out / "config.yaml"));
}

TEST_CASE("train: resuming after a kill continues the exact loss sequence") {
    test::ScratchDir a("resume_a"), b("resume_b");
    TrainOptions o;
    o.quiet = true;
    o.sample = false;

    RunConfig ca = tiny_run(a.str());
    ca.train.max_iters = 12;
    ca.train.eval_interval = 6;
    ca.train.checkpoint_interval = 4;
    TrainResult whole = train(ca, o);
    REQUIRE(whole.train_losses.size() == 12);

    RunConfig cb = ca;
    cb.train.out_dir = b.str();
    TrainOptions killed = o;
    killed.stop_after = 9;   // dies after step 9: the newest checkpoint is step 8
    TrainResult first = train(cb, killed);
    REQUIRE(first.last_step == 9);
    TrainResult second = train(cb, o);
    REQUIRE(second.first_step == 9);   // steps 9..12 again, from the step-8 checkpoint
    REQUIRE(second.train_losses.size() == 4);
    for (int i = 0; i < 4; ++i) {
        CAPTURE(i);
        CHECK(second.train_losses[i] == whole.train_losses[8 + i]);   // bit-identical
    }
    CHECK(second.val_losses.back().second == whole.val_losses.back().second);
}
