#include "common/log.h"

#include <filesystem>
#include <memory>
#include <vector>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "common/error.h"

namespace gpt {
namespace {
std::string g_log_file;
}

void init_logging(const std::string& run_dir, bool verbose) {
    auto level = verbose ? spdlog::level::debug : spdlog::level::info;
    std::vector<spdlog::sink_ptr> sinks;
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    console->set_pattern("[%H:%M:%S] %^%l%$ %v");
    sinks.push_back(console);
    std::string file;
    if (!run_dir.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(run_dir, ec);
        if (ec) fail("cannot create run directory '" + run_dir + "' for train.log: " + ec.message());
        file = (std::filesystem::path(run_dir) / "train.log").string();
        try {
            auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, /*truncate=*/false);
            file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
            sinks.push_back(file_sink);
        } catch (const spdlog::spdlog_ex& e) {
            fail("cannot open log file '" + file + "': " + e.what() + " (is the run directory writable?)");
        }
    }
    auto logger = std::make_shared<spdlog::logger>("gpt", sinks.begin(), sinks.end());
    logger->set_level(level);
    logger->flush_on(spdlog::level::info);  // train.log is complete even if the run is killed
    spdlog::set_default_logger(logger);
    g_log_file = file;
}

const std::string& log_file_path() { return g_log_file; }

}  // namespace gpt
