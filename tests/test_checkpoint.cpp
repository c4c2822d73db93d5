#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <thread>

#include "common/error.h"
#include "common/hdf5_file.h"
#include "train/checkpoint.h"
#include "scratch_dir.h"

using namespace gpt;
using gpt::test::ScratchDir;
namespace fs = std::filesystem;

namespace {

CheckpointData sample_checkpoint(int64_t step, size_t n_params) {
    CheckpointData d;
    d.step = step;
    d.config_yaml = "model:\n  n_layer: 2\n  n_embd: 64   # ünïcödé comment\n";
    std::vector<float> params(n_params);
    for (size_t i = 0; i < n_params; ++i) params[i] = std::sin(static_cast<float>(i) * 0.001f) + static_cast<float>(step);
    d.set_array("params", params);
    d.set_array("adam_m", std::vector<float>(n_params, -0.5f));
    d.set_array("empty", {});
    d.set_u64("rng", {0, 1, std::numeric_limits<uint64_t>::max(), 0x9E3779B97F4A7C15ull});
    d.set_u64("loader", {7, static_cast<uint64_t>(step)});
    d.set_f64("spam_norms", {1.5, -2.25e300, std::numeric_limits<double>::infinity()});
    d.set_string("note", "line one\nline two");
    d.set_string("git", "");
    d.param_index = {{"wte", 0, {16, 8}}, {"ln_f.bias", 128, {8}}, {"scalar_gate", 136, {}}};
    return d;
}

void check_same(const CheckpointData& a, const CheckpointData& b) {
    CHECK(a.step == b.step);
    CHECK(a.config_yaml == b.config_yaml);
    REQUIRE(a.arrays.size() == b.arrays.size());
    for (size_t i = 0; i < a.arrays.size(); ++i) {
        CHECK(a.arrays[i].first == b.arrays[i].first);  // order is kept, not alphabetical
        CHECK(a.arrays[i].second == b.arrays[i].second);
    }
    CHECK(a.u64 == b.u64);
    CHECK(a.f64 == b.f64);
    CHECK(a.strings == b.strings);
    REQUIRE(a.param_index.size() == b.param_index.size());
    for (size_t i = 0; i < a.param_index.size(); ++i) {
        CHECK(a.param_index[i].name == b.param_index[i].name);
        CHECK(a.param_index[i].offset == b.param_index[i].offset);
        CHECK(a.param_index[i].shape == b.param_index[i].shape);
    }
}

std::string error_of(const std::function<void()>& fn) { return gpt::test::error_message_of<Error>(fn); }

// A hand-made HDF5 file that carries the checkpoint markers (and /step, /config_yaml unless
// told otherwise), for the validation tests.
h5::File checkpoint_shell(const std::string& path, bool with_step = true) {
    h5::File f = h5::File::create(path);
    f.set_attr("/", "format", std::string("gpt2ra-checkpoint"));
    f.set_attr("/", "format_version", int64_t{1});
    if (with_step) f.write_scalar<int64_t>("/step", 1);
    f.write_string("/config_yaml", "a: 1");
    return f;
}

}  // namespace

TEST_CASE("checkpoint: round trip keeps every field kind, 1M floats included") {
    ScratchDir dir("ckpt_roundtrip");
    CheckpointData saved = sample_checkpoint(1234, 1 << 20);
    save_checkpoint(dir / "a.h5", saved);
    CheckpointData loaded = load_checkpoint(dir / "a.h5");
    check_same(saved, loaded);
    CHECK(loaded.source == dir / "a.h5");
    CHECK(loaded.get_array("params").size() == (1u << 20));
    CHECK(loaded.get_u64("rng")[2] == std::numeric_limits<uint64_t>::max());
    CHECK(loaded.find_array("adam_v") == nullptr);
    CHECK_FALSE(fs::exists(dir / "a.h5.tmp-" + std::to_string(getpid())));
}

TEST_CASE("checkpoint: get_* names the missing entry, the file and what is there") {
    ScratchDir dir("ckpt_get");
    save_checkpoint(dir / "a.h5", sample_checkpoint(3, 200));
    CheckpointData d = load_checkpoint(dir / "a.h5");
    std::string msg = error_of([&] { d.get_array("adam_v"); });
    CHECK(msg.find("adam_v") != std::string::npos);
    CHECK(msg.find(dir / "a.h5") != std::string::npos);
    CHECK(msg.find("params, adam_m, empty") != std::string::npos);
    d.set_array("params", {1.f});  // replaces, does not duplicate
    CHECK(d.arrays.size() == 3);
    CHECK(d.get_array("params") == std::vector<float>{1.f});
}

TEST_CASE("checkpoint: invalid contents are refused and nothing is written") {
    ScratchDir dir("ckpt_invalid");
    CheckpointData d = sample_checkpoint(1, 200);
    d.arrays.emplace_back("params", std::vector<float>{1.f});
    CHECK(error_of([&] { save_checkpoint(dir / "dup.h5", d); }).find("appears twice") != std::string::npos);
    d = sample_checkpoint(1, 200);
    d.set_u64("a/b", {1});
    CHECK(error_of([&] { save_checkpoint(dir / "slash.h5", d); }).find("'a/b' is invalid") != std::string::npos);
    d = sample_checkpoint(1, 200);
    d.param_index.push_back({"too_far", 190, {4, 4}});
    CHECK(error_of([&] { save_checkpoint(dir / "index.h5", d); }).find("too_far") != std::string::npos);
    CHECK(fs::is_empty(dir.str()));
}

TEST_CASE("checkpoint: bad files give an error naming the file and the problem") {
    ScratchDir dir("ckpt_bad");
    auto load_error = [](const std::string& p) { return error_of([&] { load_checkpoint(p); }); };

    std::string missing = dir / "missing.h5";
    CHECK(load_error(missing).find(missing + "' does not exist") != std::string::npos);

    std::string garbage = dir / "garbage.h5";
    gpt::test::write_bytes(garbage, std::string(4096, '\x5a'));
    CHECK(load_error(garbage).find(garbage + "' is not a readable HDF5 file") != std::string::npos);

    // A real checkpoint cut in half, as a crash without the atomic rename would leave it.
    std::string good = dir / "good.h5", truncated = dir / "truncated.h5";
    save_checkpoint(good, sample_checkpoint(5, 50000));
    std::string bytes = gpt::test::read_bytes(good);
    gpt::test::write_bytes(truncated, bytes.substr(0, bytes.size() / 2));
    std::string msg = load_error(truncated);
    CHECK(msg.find(truncated) != std::string::npos);
    CHECK(msg.find("cannot load checkpoint") != std::string::npos);

    std::string foreign = dir / "foreign.h5";
    h5::File::create(foreign).write<float>("/x", {1.f});
    CHECK(load_error(foreign).find("not a gpt2ra checkpoint") != std::string::npos);

    std::string no_step = dir / "no_step.h5";
    checkpoint_shell(no_step, false);
    msg = load_error(no_step);
    CHECK(msg.find(no_step) != std::string::npos);
    CHECK(msg.find("'/step' is missing") != std::string::npos);

    std::string bad_rank = dir / "bad_rank.h5";
    checkpoint_shell(bad_rank).write_2d("/arrays/params", {1, 2, 3, 4}, 2, 2);
    msg = load_error(bad_rank);
    CHECK(msg.find(bad_rank) != std::string::npos);
    CHECK(msg.find("'/arrays/params' has rank 2, expected 1") != std::string::npos);

    std::string bad_type = dir / "bad_type.h5";
    checkpoint_shell(bad_type).write_strings("/u64/rng", {"not", "numbers"});
    CHECK(load_error(bad_type).find("'/u64/rng' holds string values, expected integer") != std::string::npos);
}

TEST_CASE("checkpoint: an interrupted write leaves the previous file; latest() ignores leftovers") {
    ScratchDir dir("ckpt_atomic");
    CheckpointDir ckpts(dir.str(), 3);
    CheckpointData v10 = sample_checkpoint(10, 4096);
    ckpts.save(v10);
    CHECK(ckpts.path_for_step(10) == dir / "ckpt_00000010.h5");

    // A writer that died mid-way through step 20 (pid 999999999 exceeds any pid_max), and another
    // that died while rewriting step 10 in place: a half-written copy of a real checkpoint.
    std::string full = dir / "full.h5";
    save_checkpoint(full, sample_checkpoint(20, 4096));
    std::string bytes = gpt::test::read_bytes(full);
    fs::remove(full);
    std::string dead20 = ckpts.path_for_step(20) + ".tmp-999999999";
    std::string dead10 = ckpts.path_for_step(10) + ".tmp-999999998";
    gpt::test::write_bytes(dead20, bytes.substr(0, bytes.size() / 2));
    gpt::test::write_bytes(dead10, "garbage");
    // A temporary of this very process is a write in progress and must survive.
    std::string ours = ckpts.path_for_step(30) + ".tmp-" + std::to_string(getpid());
    gpt::test::write_bytes(ours, "in progress");

    auto latest = ckpts.latest();
    REQUIRE(latest.has_value());
    CHECK(*latest == ckpts.path_for_step(10));
    check_same(load_checkpoint(ckpts.path_for_step(10)), v10);
    CHECK_FALSE(fs::exists(dead20));
    CHECK_FALSE(fs::exists(dead10));
    CHECK(fs::exists(ours));

    // A damaged file under a final name (disk trouble, a hand copy) is skipped, not returned.
    gpt::test::write_bytes(ckpts.path_for_step(40), bytes.substr(0, 100));
    CHECK(ckpts.latest() == ckpts.path_for_step(10));
    CHECK(CheckpointDir(dir / "empty", 1).latest() == std::nullopt);
}

TEST_CASE("checkpoint: a writer killed at random moments leaves a complete file") {
    ScratchDir dir("ckpt_kill");
    const std::string path = dir / "ckpt.h5";
    const size_t n = 1 << 20;
    save_checkpoint(path, sample_checkpoint(0, n));
    for (int delay_ms : {15, 40, 90}) {
        pid_t child = fork();
        REQUIRE(child >= 0);
        if (child == 0) {  // rewrite the same checkpoint forever, with the step in every value
            CheckpointData d = sample_checkpoint(0, n);
            for (int64_t s = 1;; ++s) {
                d.step = s;
                d.set_array("adam_m", std::vector<float>(n, static_cast<float>(s)));
                try {
                    save_checkpoint(path, d);
                } catch (...) {
                    _exit(3);
                }
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        kill(child, SIGKILL);
        int status = 0;
        waitpid(child, &status, 0);
        CHECK(WIFSIGNALED(status));
        CheckpointData got = load_checkpoint(path);  // must be one whole checkpoint
        const auto& m = got.get_array("adam_m");
        float expect = got.step == 0 ? -0.5f : static_cast<float>(got.step);
        CHECK(m.size() == n);
        CHECK(std::all_of(m.begin(), m.end(), [&](float v) { return v == expect; }));
    }
}

TEST_CASE("checkpoint: keep_last deletes the oldest, keep 0 keeps all") {
    ScratchDir dir("ckpt_keep");
    CheckpointDir ckpts(dir / "run", 2);
    for (int64_t s : {100, 200, 300, 400, 500}) ckpts.save(sample_checkpoint(s, 200));
    auto kept = ckpts.list();
    REQUIRE(kept.size() == 2);
    CHECK(kept[0].first == 400);
    CHECK(kept[1].first == 500);
    CHECK(ckpts.latest() == ckpts.path_for_step(500));

    // Resuming from 400 and saving 450 keeps the newer 500 (another run's), deletes below 400.
    CheckpointDir again(dir / "run", 2);
    again.save(sample_checkpoint(450, 200));
    kept = again.list();
    REQUIRE(kept.size() == 3);
    CHECK(kept[0].first == 400);
    CHECK(kept[1].first == 450);
    CHECK(kept[2].first == 500);

    CheckpointDir all(dir / "all", 0);
    for (int64_t s = 1; s <= 4; ++s) all.save(sample_checkpoint(s, 200));
    CHECK(all.list().size() == 4);
    CHECK_THROWS_AS(CheckpointDir(dir / "neg", -1), Error);
}
