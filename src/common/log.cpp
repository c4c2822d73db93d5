#include "common/log.h"

#include <atomic>
#include <cstdio>
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
std::atomic<bool> g_live_line{false}, g_line_cleared{false};

// Console sink wrapper: erases a live progress line before writing a message.
class LiveLineAwareSink : public spdlog::sinks::sink {
public:
    explicit LiveLineAwareSink(std::shared_ptr<spdlog::sinks::sink> inner) : inner_(std::move(inner)) {}
    void log(const spdlog::details::log_msg& msg) override {
        if (g_live_line.load()) {
            std::fputs("\r\033[K", stderr);
            g_line_cleared = true;
        }
        inner_->log(msg);
    }
    void flush() override { inner_->flush(); }
    void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
    void set_formatter(std::unique_ptr<spdlog::formatter> f) override { inner_->set_formatter(std::move(f)); }

private:
    std::shared_ptr<spdlog::sinks::sink> inner_;
};

}  // namespace

void set_console_live_line(bool active) { g_live_line = active; }
bool take_console_line_cleared() { return g_line_cleared.exchange(false); }

void init_logging(const std::string& run_dir, bool verbose) {
    auto level = verbose ? spdlog::level::debug : spdlog::level::info;
    std::vector<spdlog::sink_ptr> sinks;
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    console->set_pattern("[%H:%M:%S] %^%l%$ %v");
    sinks.push_back(std::make_shared<LiveLineAwareSink>(console));
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
