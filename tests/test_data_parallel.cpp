// Data-parallel training's host side (train/data_parallel.h): the configuration rules, the rank
// environment, the launcher's refusals, the ablation's GPU groups, and the loader rule that makes
// N ranks see the same windows per step as one process. The training itself needs two GPUs:
// tests/gpu/test_data_parallel.cpp.
#include <doctest/doctest.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/loader.h"
#include "data/token_file.h"
#include "scratch_dir.h"
#include "train/ablation_runner.h"
#include "train/config_io.h"
#include "train/data_parallel.h"
#include "test_data_util.h"

using namespace gpt;
using gpt::test::error_of;   // "(no error)" when nothing is thrown: every check below then fails

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Sets the launcher's variables for one case and removes them afterwards.
struct RankEnv {
    RankEnv(const char* rank, const char* world, const char* device, const char* id) {
        set("GPT_RANK", rank), set("GPT_WORLD", world), set("GPT_RANK_DEVICE", device), set("GPT_NCCL_ID", id);
    }
    ~RankEnv() {
        for (const char* n : {"GPT_RANK", "GPT_WORLD", "GPT_RANK_DEVICE", "GPT_NCCL_ID"}) ::unsetenv(n);
    }
    static void set(const char* name, const char* value) {
        if (value) ::setenv(name, value, 1);
        else ::unsetenv(name);
    }
};

}  // namespace

TEST_CASE("data-parallel: train.gpus is checked against the device and the accumulation") {
    RunConfig c = default_run_config();
    CHECK(c.train.gpus == 1);
    c.train.gpus = 2;
    c.train.device = "cpu";
    c.train.grad_accum = 2;
    const std::string cpu = error_of([&] { validate(c); });
    CHECK(contains(cpu, "train.gpus: 2 GPUs asked for, but train.device is cpu"));
    c.train.device = "cuda";
    c.train.grad_accum = 3;
    const std::string uneven = error_of([&] { validate(c); });
    CHECK(contains(uneven, "train.grad_accum: 3 micro-batches per step cannot be split evenly over train.gpus = 2"));
    c.train.grad_accum = 4;
    CHECK_NOTHROW(validate(c));
    CHECK(rank_grad_accum(c.train, 2) == 2);
    RunConfig parsed = default_run_config();
    CHECK(contains(error_of([&] {
                       apply_override(parsed, "train.gpus", "0");
                       validate(parsed);
                   }),
                   "train.gpus"));
    apply_override(parsed, "train.gpus", "4");
    CHECK(parsed.train.gpus == 4);
    CHECK(contains(to_yaml(parsed), "gpus: 4"));
}

TEST_CASE("data-parallel: a rank's place comes from the launcher's environment, checked") {
    {
        RankEnv none(nullptr, nullptr, nullptr, nullptr);
        const Ranks r = ranks_from_environment();
        CHECK(r.rank == 0);
        CHECK(r.world == 1);
        CHECK_FALSE(r.distributed());
        CHECK(r.writes_files());
    }
    {
        RankEnv one("1", "2", "1", "00ff");
        const Ranks r = ranks_from_environment();
        CHECK(r.rank == 1);
        CHECK(r.world == 2);
        CHECK(r.device == 1);
        CHECK(r.id == "00ff");
        CHECK(r.distributed());
        CHECK_FALSE(r.writes_files());
    }
    {
        RankEnv past("2", "2", "0", "00ff");
        CHECK(contains(error_of([] { ranks_from_environment(); }), "GPT_RANK: '2' is not an integer in 0 .. 1"));
    }
    {
        RankEnv no_world("0", nullptr, "0", "00ff");
        CHECK(contains(error_of([] { ranks_from_environment(); }), "GPT_WORLD is not set, but GPT_RANK is"));
    }
    {
        RankEnv no_id("0", "2", "0", nullptr);
        CHECK(contains(error_of([] { ranks_from_environment(); }), "GPT_NCCL_ID is not set"));
    }
}

TEST_CASE("data-parallel: the launcher refuses what it cannot run, before starting anything") {
    test::ScratchDir dir("dp_launcher");
    RunConfig c = default_run_config();
    c.train.out_dir = dir / "run";
    c.train.grad_accum = 1024;
    c.train.gpus = 1024;   // more GPUs than any machine here has
    c.train.device = "cpu";
    CHECK(contains(error_of([&] { train_data_parallel(c); }), "data-parallel training needs CUDA GPUs"));
    c.train.device = "cuda";
    CHECK(contains(error_of([&] { train_data_parallel(c); }), "train.gpus: 1024 GPUs asked for, but"));
    CHECK_FALSE(std::filesystem::exists(dir / "run/ranks.yaml"));
}

TEST_CASE("data-parallel: an ablation gives each concurrent step train.gpus GPUs of its list") {
    RunConfig c = default_run_config();
    c.train.device = "cuda";
    c.train.gpus = 2;
    c.train.grad_accum = 2;
    c.ablation_devices = {0, 1, 2, 3};
    const ProcessPlan p = ablation_process_plan(c, 19);
    CHECK(p.devices_per_job == 2);
    CHECK(p.jobs == 2);   // four GPUs, two per step
    c.ablation_devices = {5};
    CHECK(contains(error_of([&] { ablation_process_plan(c, 19); }),
                   "train.gpus: each ablation step asks for 2 GPUs, but 1 is available (ablation.devices)"));
}

TEST_CASE("data-parallel: N ranks read the same windows per step as one process (same global batch)") {
    test::ScratchDir dir("dp_loader");
    std::vector<uint16_t> tokens(4001);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint16_t(i % 60000);
    write_shard(dir / "toy_train_000000.bin", tokens);
    const int B = 2, T = 8, accum = 4, steps = 6;
    auto step_windows = [&](int world) {
        std::vector<std::multiset<int32_t>> per_step(steps);
        for (int rank = 0; rank < world; ++rank) {
            TokenLoader loader(dir / "toy_train_*.bin", B, T, 11, rank, world);
            std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
            for (int s = 0; s < steps; ++s)
                for (int m = 0; m < accum / world; ++m) {
                    loader.next_batch(x.data(), y.data());
                    for (int b = 0; b < B; ++b) per_step[size_t(s)].insert(x[size_t(b) * T]);   // a window's first token
                }
        }
        return per_step;
    };
    const auto one = step_windows(1);
    CHECK(step_windows(2) == one);
    CHECK(step_windows(4) == one);
    CHECK(one[0] != one[1]);
}
