#include <doctest/doctest.h>
#include <spdlog/spdlog.h>

#include "common/log.h"
#include "scratch_dir.h"

TEST_CASE("log: messages reach train.log in the run directory, appended across runs") {
    gpt::test::ScratchDir dir("log");
    const std::string run = dir / "run";
    gpt::init_logging(run, false);
    CHECK(gpt::log_file_path() == run + "/train.log");
    spdlog::info("first run says {}", 42);
    spdlog::debug("hidden at info level");
    gpt::init_logging(run, true);  // a resumed run: same file, verbose
    spdlog::debug("second run debug");
    gpt::init_logging("", false);  // back to console only, so later tests do not write here
    CHECK(gpt::log_file_path().empty());
    std::string text = gpt::test::read_bytes(run + "/train.log");
    CHECK(text.find("[info] first run says 42") != std::string::npos);
    CHECK(text.find("hidden") == std::string::npos);
    CHECK(text.find("[debug] second run debug") != std::string::npos);
}
