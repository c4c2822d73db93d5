#include "train/metrics.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "common/hdf5_file.h"

namespace gpt {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

constexpr const char* kFormat = "gpt2ra-metrics";
constexpr int64_t kFormatVersion = 1;
constexpr size_t kChunkRows = 1024;
constexpr size_t kAutoFlushRows = 1000;   // bound the rows held in memory between flushes

// A metrics row type's double-valued columns, in file order; "step" is always the first column.
template <class Row> struct Column {
    const char* name;
    double Row::*field;
};
constexpr Column<StepMetrics> kTrainColumns[] = {
    {"loss", &StepMetrics::loss},   {"lr", &StepMetrics::lr},
    {"grad_norm", &StepMetrics::grad_norm}, {"ms", &StepMetrics::ms},
    {"tokens_per_s", &StepMetrics::tokens_per_s}, {"mfu", &StepMetrics::mfu},
    {"mem_gib", &StepMetrics::mem_gib}};
constexpr Column<EvalMetrics> kEvalColumns[] = {{"val_loss", &EvalMetrics::val_loss},
                                                {"val_ppl", &EvalMetrics::val_ppl}};

// The (group/type name, columns) of each row type.
template <class Row> struct Table;
template <> struct Table<StepMetrics> {
    static constexpr const char* name = "train";
    static constexpr const auto& columns = kTrainColumns;
};
template <> struct Table<EvalMetrics> {
    static constexpr const char* name = "eval";
    static constexpr const auto& columns = kEvalColumns;
};

template <class Row> std::string to_json_line(const Row& row) {
    ojson j;
    j["type"] = Table<Row>::name;
    j["step"] = row.step;
    for (const auto& c : Table<Row>::columns) j[c.name] = row.*(c.field);  // NaN/Inf dump as null
    return j.dump();
}

template <class Row> Row from_json(const ojson& j) {
    Row row;
    row.step = j.at("step").get<int64_t>();
    for (const auto& c : Table<Row>::columns) {
        auto it = j.find(c.name);
        row.*(c.field) = (it == j.end() || !it->is_number()) ? kNoValue : it->template get<double>();
    }
    return row;
}

template <class Row> void create_table(h5::File& f) {
    const std::string group = std::string("/") + Table<Row>::name;
    f.create_group(group);
    f.create_extendible<int64_t>(group + "/step", kChunkRows);
    for (const auto& c : Table<Row>::columns) f.create_extendible<double>(group + "/" + c.name, kChunkRows);
}

template <class Row> void append_table(h5::File& f, const std::vector<Row>& rows) {
    const std::string group = std::string("/") + Table<Row>::name;
    std::vector<int64_t> steps;
    for (const auto& r : rows) steps.push_back(r.step);
    f.append(group + "/step", steps);
    for (const auto& c : Table<Row>::columns) {
        std::vector<double> col;
        for (const auto& r : rows) col.push_back(r.*(c.field));
        f.append(group + "/" + c.name, col);
    }
}

template <class Row> std::vector<Row> read_table(const h5::File& f) {
    const std::string group = std::string("/") + Table<Row>::name;
    auto steps = f.read<int64_t>(group + "/step");
    std::vector<Row> rows(steps.size());
    for (size_t i = 0; i < steps.size(); ++i) rows[i].step = steps[i];
    for (const auto& c : Table<Row>::columns) {
        auto col = f.read<double>(group + "/" + c.name);
        if (col.size() != rows.size())
            f.fail_at(group + "/" + c.name, "has " + std::to_string(col.size()) + " rows but " + group +
                                                "/step has " + std::to_string(rows.size()));
        for (size_t i = 0; i < rows.size(); ++i) rows[i].*(c.field) = col[i];
    }
    return rows;
}

h5::File open_metrics_for_append(const std::string& path) {
    h5::File f = h5::File::open(path, true, /*use_locking=*/false);  // the run is the only writer
    if (f.attr_string("/", "format").value_or("") != kFormat)
        fail("'" + path + "' is not a gpt2ra metrics file (root attribute 'format' is not '" + kFormat + "')");
    return f;
}

}  // namespace

void MetricsHistory::drop_after(int64_t step) {
    std::erase_if(train, [&](const StepMetrics& r) { return r.step > step; });
    std::erase_if(eval, [&](const EvalMetrics& r) { return r.step > step; });
}

MetricsHistory read_metrics_h5(const std::string& path) {
    h5::File f = h5::File::open(path, false);
    if (f.attr_string("/", "format").value_or("") != kFormat)
        fail("'" + path + "' is not a gpt2ra metrics file (root attribute 'format' is not '" + kFormat + "')");
    return MetricsHistory{read_table<StepMetrics>(f), read_table<EvalMetrics>(f)};
}

MetricsHistory read_metrics_jsonl(const std::string& path) {
    std::ifstream in(path);
    if (!in) fail("cannot open metrics log '" + path + "': " + std::strerror(errno));
    MetricsHistory h;
    std::string line;
    size_t line_no = 0, skipped = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.empty()) continue;
        try {
            ojson j = ojson::parse(line);
            std::string type = j.at("type").get<std::string>();
            if (type == Table<StepMetrics>::name)
                h.train.push_back(from_json<StepMetrics>(j));
            else if (type == Table<EvalMetrics>::name)
                h.eval.push_back(from_json<EvalMetrics>(j));
            else
                ++skipped;
        } catch (const nlohmann::json::exception&) {
            ++skipped;
            spdlog::warn("{}:{}: skipping a line that is not a metrics record (torn write?)", path, line_no);
        }
    }
    return h;
}

void write_metrics_h5(const std::string& path, const MetricsHistory& history) {
    write_file_atomically(path, [&](const std::string& tmp) {
        h5::File f = h5::File::create(tmp);
        f.set_attr("/", "format", kFormat);
        f.set_attr("/", "format_version", kFormatVersion);
        create_table<StepMetrics>(f);
        create_table<EvalMetrics>(f);
        append_table(f, history.train);
        append_table(f, history.eval);
        f.close();
    });
}

void write_metrics_jsonl(const std::string& path, const MetricsHistory& history) {
    std::string text;
    for (const auto& r : history.train) text += to_json_line(r) + "\n";
    for (const auto& r : history.eval) text += to_json_line(r) + "\n";
    write_text_atomically(path, text);
}

MetricsLog::MetricsLog(const std::string& run_dir, bool resume, int64_t resumed_step)
    : h5_path_((fs::path(run_dir) / "metrics.h5").string()),
      jsonl_path_((fs::path(run_dir) / "metrics.jsonl").string()) {
    std::error_code ec;
    fs::create_directories(run_dir, ec);
    if (ec) fail("cannot create run directory '" + run_dir + "': " + ec.message());
    if (resume) {
        // metrics.jsonl is written line by line, so it is the most complete record; metrics.h5
        // may lag (rows not flushed) or be damaged (killed mid-flush). Rebuild both from it.
        MetricsHistory h;
        if (fs::exists(jsonl_path_)) {
            h = read_metrics_jsonl(jsonl_path_);
        } else if (fs::exists(h5_path_)) {
            try {
                h = read_metrics_h5(h5_path_);
            } catch (const Error& e) {
                spdlog::warn("{}; moving it to {}.damaged and starting the metrics afresh", e.what(), h5_path_);
                fs::rename(h5_path_, h5_path_ + ".damaged", ec);
            }
        }
        h.drop_after(resumed_step);
        write_metrics_jsonl(jsonl_path_, h);
        write_metrics_h5(h5_path_, h);
    } else {
        fs::remove(h5_path_, ec);
        write_metrics_h5(h5_path_, MetricsHistory{});
    }
    jsonl_ = std::fopen(jsonl_path_.c_str(), resume ? "a" : "w");
    if (!jsonl_) fail("cannot open metrics log '" + jsonl_path_ + "' for writing: " + std::strerror(errno));
}

MetricsLog::~MetricsLog() {
    try {
        flush();
    } catch (const std::exception& e) {
        spdlog::warn("final metrics flush failed: {}", e.what());
    }
    if (size_t lost = pending_.train.size() + pending_.eval.size())
        spdlog::warn("{} metrics rows could not be written to {}; they are in {}, and resuming the run "
                     "rebuilds {} from it",
                     lost, h5_path_, jsonl_path_, h5_path_);
    if (jsonl_) std::fclose(jsonl_);
}

void MetricsLog::write_line(const std::string& line) {
    if (std::fputs(line.c_str(), jsonl_) < 0 || std::fputc('\n', jsonl_) == EOF || std::fflush(jsonl_) != 0)
        fail("cannot write to metrics log '" + jsonl_path_ + "': " + std::strerror(errno) + " (is the disk full?)");
}

void MetricsLog::log_step(const StepMetrics& m) {
    write_line(to_json_line(m));
    pending_.train.push_back(m);
    if (pending_.train.size() + pending_.eval.size() >= kAutoFlushRows) flush();
}

void MetricsLog::log_eval(int64_t step, double val_loss) {
    EvalMetrics e{step, val_loss, std::exp(val_loss)};
    write_line(to_json_line(e));
    pending_.eval.push_back(e);
    if (pending_.train.size() + pending_.eval.size() >= kAutoFlushRows) flush();
}

void MetricsLog::flush() {
    if (pending_.train.empty() && pending_.eval.empty()) return;
    try {
        h5::File f = open_metrics_for_append(h5_path_);
        append_table(f, pending_.train);
        append_table(f, pending_.eval);
        f.close();
        pending_ = MetricsHistory{};
        failed_flushes_ = 0;
    } catch (const Error& e) {
        // Never stop training over the HDF5 copy: metrics.jsonl already holds every row.
        if (failed_flushes_++ % 100 == 0)
            spdlog::warn("{}; keeping {} rows in memory for the next flush (metrics.jsonl is complete)", e.what(),
                         pending_.train.size() + pending_.eval.size());
    }
}

}  // namespace gpt
