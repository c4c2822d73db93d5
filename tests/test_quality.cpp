// The quick quality test (job quality, SPEC §6): Student's t p-values against tabulated values;
// the summary's statistics on hand-made results (paired differences, divergence, tokens to reach
// the baseline); and a real run on the State of the Union text: two arms x two seeds of a tiny
// model, with the report files and a verdict per arm.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "common/error.h"
#include "scratch_dir.h"
#include "train/config_io.h"
#include "train/quality.h"
#include "train_fixture.h"

using namespace gpt;

namespace {

QualityRun run(size_t arm, int seed, std::vector<std::pair<int64_t, double>> val) {
    QualityRun q;
    q.arm = arm;
    q.seed = seed;
    q.ok = true;
    q.result.val_losses = std::move(val);
    q.result.train_losses = {5.0};
    return q;
}

}  // namespace

TEST_CASE("quality: Student's t two-sided p-values match the tables") {
    CHECK(students_t_two_sided_p(0.0, 5) == doctest::Approx(1.0));
    CHECK(students_t_two_sided_p(2.776445, 4) == doctest::Approx(0.05).epsilon(1e-4));    // t_{0.975, 4}
    CHECK(students_t_two_sided_p(-2.776445, 4) == doctest::Approx(0.05).epsilon(1e-4));
    CHECK(students_t_two_sided_p(12.7062, 1) == doctest::Approx(0.05).epsilon(1e-4));     // t_{0.975, 1}
    CHECK(students_t_two_sided_p(3.169273, 10) == doctest::Approx(0.01).epsilon(1e-4));   // t_{0.995, 10}
    CHECK(students_t_two_sided_p(1.0, 2) == doctest::Approx(0.4226497).epsilon(1e-6));   // 1 - 1/sqrt(3)
    CHECK(std::isnan(students_t_two_sided_p(1.0, 0)));
}

TEST_CASE("quality: arms parse as \"label: key=value ...\" and bad ones name the key") {
    const auto [label, kv] = parse_config_arm("  RA exact : model.attention=ra model.ra.band=0 ", "quality.arms");
    CHECK(label == "RA exact");
    REQUIRE(kv.size() == 2);
    CHECK(kv[1] == "model.ra.band=0");
    CHECK_THROWS_WITH_AS(parse_config_arm("no colon here", "quality.arms"), doctest::Contains("quality.arms"), Error);
    RunConfig c = default_run_config();
    c.quality_arms = "ok: model.attention=ra; bad: model.no_such_key=1";
    CHECK_THROWS_WITH_AS(validate(c), doctest::Contains("no_such_key"), Error);
}

TEST_CASE("quality: the summary pairs seeds, counts divergence and tokens to the baseline's loss") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::vector<QualityRun> runs = {
        run(0, 1, {{10, 5.0}, {20, 4.0}}),   // baseline mean final = 4.1
        run(0, 2, {{10, 5.1}, {20, 4.2}}),
        run(0, 3, {{10, 5.2}, {20, 4.1}}),
        run(1, 1, {{10, 4.0}, {20, 3.9}}),   // better on every seed, reaches 4.1 at step 10
        run(1, 2, {{10, 4.3}, {20, 4.0}}),   // reaches at step 20
        run(1, 3, {{10, 4.2}, {20, 3.95}}),
        run(2, 1, {{10, 5.0}, {20, 4.05}}),
        run(2, 2, {{10, 5.0}, {20, nan}}),   // diverged
        run(2, 3, {{10, 5.0}, {20, 4.2}}),
    };
    const auto rows = summarize_quality({"base", "better", "unstable"}, runs, 1000);
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].final_mean == doctest::Approx(4.1));
    CHECK(rows[0].final_std == doctest::Approx(0.1));
    CHECK(rows[1].paired == 3);
    CHECK(rows[1].diff_mean == doctest::Approx((-0.1 - 0.2 - 0.15) / 3));
    CHECK(rows[1].p < 0.05);
    CHECK(rows[1].verdict.find("better than the baseline") == 0);
    CHECK(rows[1].reached == 3);
    CHECK(rows[1].tokens_to_reach == doctest::Approx((10 + 20 + 20) * 1000.0 / 3));
    CHECK(rows[2].diverged == 1);
    CHECK(rows[2].paired == 2);
    CHECK(rows[2].verdict.find("diverged in 1 of 3 runs") != std::string::npos);
    CHECK(rows[2].best_mean == doctest::Approx((4.05 + 5.0 + 4.2) / 3));
}

TEST_CASE("quality: two arms x two seeds train on real text and write the report") {
    test::ScratchDir out("quality");
    RunConfig c = test::tiny_run(out.str());
    c.job = "quality";
    c.train.max_iters = 6;
    c.train.eval_interval = 3;
    c.train.eval_batches = 2;
    c.train.sample_tokens = 0;
    c.quality_arms = "RA exact: model.attention=ra model.ra.band=0";
    c.quality_seeds = {1, 2};
    c.ablation_jobs = 1;
    validate(c);
    const auto rows = run_quality(c);
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].runs == 2);
    CHECK(rows[1].runs == 2);
    CHECK(std::isfinite(rows[0].final_mean));
    CHECK(std::isfinite(rows[1].final_mean));
    CHECK(rows[1].paired == 2);
    CHECK(rows[0].final_mean != rows[1].final_mean);   // two different models
    CHECK(!rows[1].verdict.empty());
    CHECK(std::filesystem::exists(out / "quality_report.md"));
    CHECK(std::filesystem::exists(out / "quality_report.json"));
    CHECK(std::filesystem::exists(out / "quality/1_RA-exact/seed_2/result.json"));
    // Started again: every run is reported from its result.json, with the same numbers.
    const auto again = run_quality(c);
    CHECK(again[1].final_mean == rows[1].final_mean);
}
