// The attention module benchmark (gpt2 bench --module, src/train/module_bench.h) on the CPU
// reference at tiny shapes: every arm gets a finite, positive, labelled row with its unit's
// description, and bad input fails with a message that names the problem.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "scratch_dir.h"
#include "train/config_io.h"
#include "train/module_bench.h"

using namespace gpt;

namespace {

RunConfig tiny_module_run() {
    RunConfig c = default_run_config();
    c.model.n_embd = 64;
    c.model.n_head = 4;
    c.train.batch_size = 2;
    c.train.seq_len = 32;
    c.train.device = "cpu";
    c.train.threads = 1;
    return c;
}

std::string error_of(const std::function<void()>& f) { return test::error_message_of<Error>(f); }

}  // namespace

TEST_CASE("module bench: baseline and RA arms give finite, positive, labelled rows (cpu)") {
    const RunConfig cfg = tiny_module_run();
    std::vector<BenchArm> arms = {{"base", cfg}};
    for (auto& a : bench_arms(cfg, {}, {"RA exact: model.attention=ra model.ra.band=0",
                                        "RA same-FLOP R=8: model.attention=ra_lowrank model.ra.rank=8"}))
        arms.push_back(a);
    REQUIRE(arms.size() == 3);
    const auto rows = bench_attention_module(arms, 1, 2);
    REQUIRE(rows.size() == 3);
    for (size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        CAPTURE(r.label);
        CHECK(r.error.empty());
        CHECK(r.label == arms[i].label);
        CHECK(r.batch == 2);
        CHECK(r.seq == 32);
        CHECK(r.params > 0);
        CHECK(r.backend.find("cpu") != std::string::npos);
        for (double ms : {r.fwd_ms, r.fwd_min_ms, r.fwdbwd_ms, r.fwdbwd_min_ms, r.fwd_queued_ms, r.fwdbwd_queued_ms}) {
            CHECK(std::isfinite(ms));
            CHECK(ms > 0);
        }
        CHECK(r.fwd_min_ms <= r.fwd_ms);
    }
    CHECK(rows[0].module.find("baseline") != std::string::npos);
    CHECK(rows[1].module.find("exact RA") != std::string::npos);
    CHECK(rows[2].module.find("R=8") != std::string::npos);
    CHECK(rows[2].params > rows[0].params);   // the low-rank map W [D, R]
    const std::string table = format_module_table(rows, 1, 2);
    CHECK(table.find("RA same-FLOP R=8") != std::string::npos);
    CHECK(table.find("ratios to \"base\"") != std::string::npos);
    CHECK(table.find("failed") == std::string::npos);
}

TEST_CASE("module bench: bad input fails clearly") {
    const RunConfig cfg = tiny_module_run();
    CHECK(error_of([&] { bench_arms(cfg, {}, {"X: model.no_such_key=1"}); }).find("unknown key 'model.no_such_key'") !=
          std::string::npos);
    CHECK(error_of([&] { bench_arms(cfg, {}, {"no label"}); }).find("--variant") != std::string::npos);
    CHECK(error_of([&] { bench_arms(cfg, {}, {"R: model.attention=ra_lowrank model.ra.rank=16"}); })
              .find("model.ra.rank") != std::string::npos);
    CHECK(error_of([&] { bench_arms(cfg, {99}, {}); }).find("--ablation-step") != std::string::npos);
    CHECK(error_of([&] { bench_attention_module({{"base", cfg}}, 1, 0); }).find("--steps") != std::string::npos);
    // An arm that cannot run on its own fails in its row; the others still run.
    RunConfig m3 = cfg;
    apply_override(m3, "model.attention=mla");
    apply_override(m3, "model.m3=true");
    const auto rows = bench_attention_module({{"base", cfg}, {"M3", m3}}, 0, 1);
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].error.empty());
    CHECK(rows[1].error.find("model.m3") != std::string::npos);
    CHECK(format_module_table(rows, 0, 1).find("failed: model.m3") != std::string::npos);
}
