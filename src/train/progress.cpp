#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "common/log.h"

namespace gpt {
namespace {

constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
constexpr double kUnknownTotalPlainSeconds = 10.0;

// 1234 -> "1.23k", 5600000 -> "5.60M"
std::string si(double v) {
    const char* units[] = {"", "k", "M", "G", "T"};
    int u = 0;
    while (std::fabs(v) >= 1000.0 && u < 4) {
        v /= 1000.0;
        ++u;
    }
    return u == 0 ? fmt::format("{:.1f}", v) : fmt::format("{:.2f}{}", v, units[u]);
}

}  // namespace

Progress::Progress(std::string label, int64_t total)
    : Progress(std::move(label), total, stderr, ::isatty(::fileno(stderr)) != 0) {}

Progress::Progress(std::string label, int64_t total, std::FILE* out, bool live, int plain_every_percent)
    : label_(std::move(label)),
      total_(total),
      out_(out),
      live_(live),
      every_percent_(std::clamp(plain_every_percent, 1, 100)),
      start_(Clock::now()),
      last_draw_(start_),
      next_plain_percent_(every_percent_) {}

Progress::~Progress() {
    if (!finished_) finish();
}

std::string Progress::format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    auto s = static_cast<int64_t>(std::llround(seconds));
    if (s < 60) return fmt::format("{}s", s);
    if (s < 3600) return fmt::format("{}:{:02}", s / 60, s % 60);
    return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
}

std::string Progress::render(int64_t done, const std::string& suffix, bool final) const {
    auto now = Clock::now();
    double elapsed = std::chrono::duration<double>(now - start_).count();
    // The rate counts from the first update, not from zero: a resumed run starts part-way.
    double since_first = std::chrono::duration<double>(now - first_time_).count();
    double rate = (first_done_ >= 0 && done > first_done_ && since_first > 0)
                      ? static_cast<double>(done - first_done_) / since_first
                      : std::numeric_limits<double>::quiet_NaN();
    std::string line = label_;
    if (total_ > 0)
        line += fmt::format(" {:5.1f}% {}/{}", 100.0 * static_cast<double>(done) / static_cast<double>(total_), done,
                            total_);
    else
        line += fmt::format(" {}", done);
    line += " | " + (std::isfinite(rate) ? si(rate) : std::string("?")) + "/s";
    if (final)
        line += " | took " + format_duration(elapsed);
    else if (total_ > 0)
        line += " | ETA " + (rate > 0 ? format_duration(static_cast<double>(total_ - done) / rate) : std::string("?"));
    if (!suffix.empty()) line += " | " + suffix;
    return line;
}

void Progress::emit(const std::string& line) {
    if (live_) {
        set_console_live_line(out_ == stderr);
        // Pad with spaces to wipe a longer previous line (no terminal escape codes needed).
        std::string padded = line;
        if (padded.size() < last_width_) padded.append(last_width_ - padded.size(), ' ');
        last_width_ = line.size();
        std::fprintf(out_, "\r%s", padded.c_str());
    } else {
        std::fprintf(out_, "%s\n", line.c_str());
    }
    std::fflush(out_);
    drawn_ = true;
}

void Progress::update(int64_t done, const std::string& suffix) {
    if (finished_) return;
    done_ = done;
    suffix_ = suffix;
    auto now = Clock::now();
    if (first_done_ < 0) {
        first_done_ = done;
        first_time_ = now;
    }
    if (live_) {
        if (take_console_line_cleared()) last_width_ = 0;  // a log message erased the line: redraw now
        else if (drawn_ && now - last_draw_ < kRedrawInterval) return;
        last_draw_ = now;
        emit(render(done, suffix, false));
        return;
    }
    if (total_ > 0) {
        int64_t percent = done * 100 / total_;
        if (percent < next_plain_percent_ || done >= total_) return;  // 100% is printed by finish()
        while (next_plain_percent_ <= percent) next_plain_percent_ += every_percent_;
    } else {
        if (std::chrono::duration<double>(now - last_draw_).count() < kUnknownTotalPlainSeconds) return;
    }
    last_draw_ = now;
    emit(render(done, suffix, false));
}

void Progress::finish() {
    if (finished_) return;
    finished_ = true;
    emit(render(done_, suffix_, true));
    if (live_) {
        set_console_live_line(false);
        std::fputc('\n', out_);
        std::fflush(out_);
    }
}

}  // namespace gpt
