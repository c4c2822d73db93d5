#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "train/progress.h"

using gpt::Progress;

namespace {

// Everything written to a temporary FILE*.
std::string contents(std::FILE* f) {
    std::fflush(f);
    std::rewind(f);
    std::string s;
    for (int c; (c = std::fgetc(f)) != EOF;) s += static_cast<char>(c);
    return s;
}

size_t count(const std::string& s, char c) { return static_cast<size_t>(std::count(s.begin(), s.end(), c)); }

}  // namespace

TEST_CASE("progress: without a terminal, one plain line per 10% and a final summary") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
        Progress p("tokenize", 1000, f, /*live=*/false);
        for (int64_t i = 1; i <= 1000; ++i) p.update(i, "shard 1");
        p.finish();
        p.finish();  // idempotent
    }
    std::string out = contents(f);
    std::fclose(f);
    CHECK(count(out, '\r') == 0);
    CHECK(count(out, '\n') == 10);  // 10%..90% and the final line
    CHECK(out.find("tokenize  10.0% 100/1000") != std::string::npos);
    CHECK(out.find("ETA") != std::string::npos);
    CHECK(out.find("| shard 1") != std::string::npos);
    CHECK(out.find("100.0% 1000/1000") != std::string::npos);
    CHECK(out.find("took") != std::string::npos);
}

TEST_CASE("progress: on a terminal, redraws one line at most ~10 times a second") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
        Progress p("train", 100, f, /*live=*/true);
        for (int64_t i = 1; i <= 100; ++i) p.update(i, "loss 3.2");  // fast: throttled to one draw
        std::this_thread::sleep_for(std::chrono::milliseconds(120));
        p.update(100, "loss 3.1");
    }  // the destructor finishes the line
    std::string out = contents(f);
    std::fclose(f);
    CHECK(count(out, '\r') == 3);  // first update, the one after the pause, the final one
    CHECK(count(out, '\n') == 1);
    CHECK(out.find("loss 3.1") != std::string::npos);
}

TEST_CASE("progress: a resumed loop's rate counts from its first update") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
        Progress p("train", 1000, f, false, 100);  // plain lines only at 100%: just the final one
        p.update(900);                             // resumed at 90%
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        p.update(1000);
    }
    std::string out = contents(f);
    std::fclose(f);
    // 100 units in ~0.2 s is ~500/s; counting from zero would claim ~5000/s.
    auto bar = out.find("| ");
    REQUIRE(bar != std::string::npos);
    double rate = std::stod(out.substr(bar + 2));
    CHECK(rate > 150);
    CHECK(rate < 700);
}

TEST_CASE("progress: unknown totals and durations are formatted sensibly") {
    CHECK(Progress::format_duration(42.2) == "42s");
    CHECK(Progress::format_duration(187) == "3:07");
    CHECK(Progress::format_duration(3723) == "1:02:03");
    CHECK(Progress::format_duration(-1) == "?");
    std::FILE* f = std::tmpfile();
    REQUIRE(f);
    {
        Progress p("scan", 0, f, false);
        p.update(12345);
    }
    std::string out = contents(f);
    std::fclose(f);
    CHECK(out.find("scan 12345 |") != std::string::npos);
    CHECK(out.find('%') == std::string::npos);
}
