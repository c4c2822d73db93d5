// A progress display for long loops (training, data preparation, evaluation). On a terminal: one
// line redrawn in place (carriage return), at most ~10 times a second. Otherwise (CI logs, `tee`):
// a plain line each time another `plain_every_percent` of the work is done.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace gpt {

class Progress {
public:
    // total <= 0: unknown; then no percentage or ETA, and plain lines come every 10 seconds.
    Progress(std::string label, int64_t total);                      // to stderr; live if it is a TTY
    Progress(std::string label, int64_t total, std::FILE* out, bool live, int plain_every_percent = 10);
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;
    ~Progress();                                                     // finish() if not done yet

    // `done` counts completed units; `suffix` is shown after the ETA (e.g. "loss 3.21").
    void update(int64_t done, const std::string& suffix = "");
    void finish();                                                   // final line and newline

    // "42s", "3:07", "1:02:03"
    static std::string format_duration(double seconds);

private:
    using Clock = std::chrono::steady_clock;
    std::string render(int64_t done, const std::string& suffix, bool final) const;
    void emit(const std::string& line);

    std::string label_;
    int64_t total_;
    std::FILE* out_;
    bool live_;
    int every_percent_;
    Clock::time_point start_, last_draw_, first_time_;
    int64_t first_done_ = -1;         // `done` at the first update: the rate counts from there
    int64_t done_ = 0;
    std::string suffix_;
    int64_t next_plain_percent_;
    bool drawn_ = false, finished_ = false;
    size_t last_width_ = 0;
};

}  // namespace gpt
