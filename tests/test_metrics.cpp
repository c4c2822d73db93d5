#include <doctest/doctest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "train/metrics.h"
#include "scratch_dir.h"

using namespace gpt;
using gpt::test::ScratchDir;

namespace {

StepMetrics step_row(int64_t step) {
    StepMetrics m;
    m.step = step;
    m.loss = 10.0 - 0.1 * static_cast<double>(step);
    m.lr = 6e-4;
    m.grad_norm = 1.25;
    m.ms = 12.5;
    m.tokens_per_s = 81920.0;
    m.mfu = kNoValue;  // unknown on CPU
    m.mem_gib = 0.5;
    return m;
}

// Reads a 1-D dataset with the plain HDF5 C API, as an outside tool would.
std::vector<double> raw_read_doubles(const std::string& file, const char* dataset) {
    hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    REQUIRE(f >= 0);
    hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
    REQUIRE(d >= 0);
    hid_t space = H5Dget_space(d);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space, &n, nullptr);
    std::vector<double> v(n);
    if (n) CHECK(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) >= 0);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
    return v;
}

std::vector<nlohmann::json> jsonl_records(const std::string& path) {
    std::ifstream in(path);
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
}

std::vector<int64_t> train_steps(const MetricsHistory& h) {
    std::vector<int64_t> s;
    for (const auto& r : h.train) s.push_back(r.step);
    return s;
}

std::vector<int64_t> eval_steps(const MetricsHistory& h) {
    std::vector<int64_t> s;
    for (const auto& r : h.eval) s.push_back(r.step);
    return s;
}

// A run that logged steps 1..10 and evals at 5 and 10, then ended normally.
void log_ten_steps(const std::string& run) {
    MetricsLog log(run, false);
    for (int64_t s = 1; s <= 10; ++s) {
        log.log_step(step_row(s));
        if (s % 5 == 0) log.log_eval(s, 3.0);
    }
}

}  // namespace

TEST_CASE("metrics: rows reach metrics.h5 (read with the HDF5 C API) and metrics.jsonl") {
    ScratchDir dir("metrics_basic");
    MetricsLog log(dir.str(), false);
    for (int64_t s = 1; s <= 5; ++s) log.log_step(step_row(s));
    log.log_eval(5, 2.0);
    // Each jsonl line is on disk at once (tail -f), before any flush.
    auto records = jsonl_records(log.jsonl_path());
    REQUIRE(records.size() == 6);
    CHECK(records[0]["type"] == "train");
    CHECK(records[0]["step"] == 1);
    CHECK(records[0]["loss"].get<double>() == doctest::Approx(9.9));
    CHECK(records[0]["mfu"].is_null());  // NaN is written as null
    CHECK(records[5]["type"] == "eval");
    CHECK(records[5]["val_ppl"].get<double>() == doctest::Approx(std::exp(2.0)));
    CHECK(raw_read_doubles(log.h5_path(), "/train/loss").empty());  // not flushed yet

    log.flush();  // the file is closed again afterwards, so it can be read while the run goes on
    auto loss = raw_read_doubles(log.h5_path(), "/train/loss");
    REQUIRE(loss.size() == 5);
    CHECK(loss[4] == doctest::Approx(9.5));
    CHECK(std::isnan(raw_read_doubles(log.h5_path(), "/train/mfu")[0]));
    CHECK(raw_read_doubles(log.h5_path(), "/eval/val_loss") == std::vector<double>{2.0});
    CHECK(raw_read_doubles(log.h5_path(), "/eval/val_ppl")[0] == doctest::Approx(std::exp(2.0)));

    log.log_step(step_row(6));
    log.flush();
    MetricsHistory h = read_metrics_h5(log.h5_path());
    CHECK(train_steps(h) == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
    CHECK(h.train[5].tokens_per_s == 81920.0);
    CHECK(h.train[5].mem_gib == 0.5);
    CHECK(eval_steps(h) == std::vector<int64_t>{5});
}

TEST_CASE("metrics: a killed run keeps every jsonl line and the flushed h5 rows") {
    ScratchDir dir("metrics_killed");
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {  // log, flush, log more, then die without any destructor running
        MetricsLog* log = new MetricsLog(dir.str(), false);
        for (int64_t s = 1; s <= 8; ++s) log->log_step(step_row(s));
        log->flush();
        for (int64_t s = 9; s <= 12; ++s) log->log_step(step_row(s));
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    REQUIRE(WIFEXITED(status));
    CHECK(train_steps(read_metrics_h5(dir / "metrics.h5")).size() == 8);
    CHECK(jsonl_records(dir / "metrics.jsonl").size() == 12);
    // Resuming rebuilds metrics.h5 from the complete jsonl.
    MetricsLog resumed(dir.str(), true, 10);
    CHECK(train_steps(read_metrics_h5(dir / "metrics.h5")).size() == 10);
}

TEST_CASE("metrics: resume drops steps after the resumed step in both files, then appends") {
    ScratchDir dir("metrics_resume");
    log_ten_steps(dir.str());
    std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"type\":\"train\",\"st";  // torn last line
    {
        MetricsLog log(dir.str(), true, 6);  // the last checkpoint was at step 6
        for (const auto& file : {read_metrics_h5(dir / "metrics.h5"), read_metrics_jsonl(dir / "metrics.jsonl")}) {
            CHECK(train_steps(file) == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
            CHECK(eval_steps(file) == std::vector<int64_t>{5});
        }
        CHECK(jsonl_records(dir / "metrics.jsonl").size() == 7);
        log.log_step(step_row(7));
        log.log_eval(7, 2.5);
    }
    for (const auto& file : {read_metrics_h5(dir / "metrics.h5"), read_metrics_jsonl(dir / "metrics.jsonl")}) {
        CHECK(train_steps(file) == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7});
        CHECK(eval_steps(file) == std::vector<int64_t>{5, 7});
        CHECK(file.train[6].loss == doctest::Approx(9.3));
    }
    // Resume without a step keeps everything; a fresh start replaces both files.
    { MetricsLog keep_all(dir.str(), true); }
    CHECK(train_steps(read_metrics_h5(dir / "metrics.h5")).size() == 7);
    { MetricsLog fresh(dir.str(), false); }
    CHECK(read_metrics_h5(dir / "metrics.h5").train.empty());
    CHECK(jsonl_records(dir / "metrics.jsonl").empty());
}

TEST_CASE("metrics: resume survives a damaged metrics.h5") {
    ScratchDir dir("metrics_damaged");
    log_ten_steps(dir.str());
    gpt::test::write_bytes(dir / "metrics.h5", "not hdf5 at all");
    std::string msg = gpt::test::error_message_of<Error>([&] { read_metrics_h5(dir / "metrics.h5"); });
    CHECK(msg.find(dir / "metrics.h5") != std::string::npos);
    { MetricsLog log(dir.str(), true, 8); }  // rebuilt from metrics.jsonl
    CHECK(train_steps(read_metrics_h5(dir / "metrics.h5")).size() == 8);

    // Without metrics.jsonl the damaged h5 is moved aside and the metrics restart.
    std::remove((dir / "metrics.jsonl").c_str());
    gpt::test::write_bytes(dir / "metrics.h5", "still not hdf5");
    { MetricsLog log(dir.str(), true, 8); }
    CHECK(read_metrics_h5(dir / "metrics.h5").train.empty());
    CHECK(gpt::test::read_bytes(dir / "metrics.h5.damaged") == "still not hdf5");
}

TEST_CASE("metrics: a reader holding metrics.h5 open (with HDF5 locking) does not block flush") {
    ScratchDir dir("metrics_reader");
    MetricsLog log(dir.str(), false);
    log.log_step(step_row(1));
    log.flush();
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {  // a plot script: opens read-only (taking the shared lock) and lingers
        hid_t f = H5Fopen(log.h5_path().c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
        char byte = f >= 0 ? 'y' : 'n';
        if (write(ready[1], &byte, 1) != 1) _exit(2);
        usleep(10 * 1000 * 1000);  // killed by the parent long before this ends
        _exit(0);
    }
    char byte = 0;
    REQUIRE(read(ready[0], &byte, 1) == 1);
    CHECK(byte == 'y');
    log.log_step(step_row(2));
    log.flush();
    CHECK(raw_read_doubles(log.h5_path(), "/train/loss").size() == 2);  // written while the reader held it
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    close(ready[0]);
    close(ready[1]);
}
