// Per-step and evaluation metrics, written twice: metrics.jsonl (one JSON object per line, flushed
// every line, so `tail -f` shows the run live) and metrics.h5 (extendible 1-D columns, appended at
// flush(); the file is closed between flushes, so a killed run keeps what was flushed and readers
// can open it at any time). Schemas: docs/file-formats.md.
#pragma once
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace gpt {

constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();

struct StepMetrics {
    int64_t step = 0;
    double loss = kNoValue;
    double lr = kNoValue;
    double grad_norm = kNoValue;
    double ms = kNoValue;             // wall time of the step, milliseconds
    double tokens_per_s = kNoValue;
    double mfu = kNoValue;            // model FLOPs utilisation in [0,1]; NaN when unknown (CPU)
    double mem_gib = kNoValue;        // device memory in use, GiB
};

struct EvalMetrics {
    int64_t step = 0;
    double val_loss = kNoValue;
    double val_ppl = kNoValue;        // exp(val_loss)
};

struct MetricsHistory {
    std::vector<StepMetrics> train;
    std::vector<EvalMetrics> eval;
    void drop_after(int64_t step);    // removes every row with row.step > step
};

// Readers (used on resume, by tests and by report tools). read_metrics_jsonl skips lines that do
// not parse (a run killed mid-line leaves a torn last line) and NaN/Inf, stored as null, read as NaN.
MetricsHistory read_metrics_h5(const std::string& path);
MetricsHistory read_metrics_jsonl(const std::string& path);
// Writes a complete metrics.h5 / metrics.jsonl atomically (used to truncate on resume).
void write_metrics_h5(const std::string& path, const MetricsHistory& history);
void write_metrics_jsonl(const std::string& path, const MetricsHistory& history);

class MetricsLog {
public:
    // resume = false: start both files afresh (replacing old ones). resume = true: keep the rows
    // with step <= resumed_step and drop later ones (logged by a killed run after its last
    // checkpoint), then append; without resumed_step every existing row is kept.
    MetricsLog(const std::string& run_dir, bool resume,
               int64_t resumed_step = std::numeric_limits<int64_t>::max());
    MetricsLog(const MetricsLog&) = delete;
    MetricsLog& operator=(const MetricsLog&) = delete;
    ~MetricsLog();                    // flushes

    void log_step(const StepMetrics& m);
    void log_eval(int64_t step, double val_loss);   // val_ppl = exp(val_loss)
    // Appends the buffered rows to metrics.h5 (opens, appends, closes: about a millisecond). If the
    // file cannot be opened (e.g. locked by a reader), warns and keeps the rows for the next flush.
    void flush();

    const std::string& h5_path() const { return h5_path_; }
    const std::string& jsonl_path() const { return jsonl_path_; }

private:
    void write_line(const std::string& line);

    std::string h5_path_, jsonl_path_;
    std::FILE* jsonl_ = nullptr;
    MetricsHistory pending_;          // rows not yet in metrics.h5
    int failed_flushes_ = 0;
};

}  // namespace gpt
