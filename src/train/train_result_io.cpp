#include "train/train_result_io.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "data/file_util.h"

namespace gpt {
namespace {

// JSON has no NaN (a diverged run's loss): write null, read null back as NaN.
nlohmann::json number(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }
double number(const nlohmann::json& j) { return j.is_null() ? std::nan("") : j.get<double>(); }

}  // namespace

void write_train_result(const std::string& path, const TrainResult& r) {
    nlohmann::json val = nlohmann::json::array();
    for (const auto& [step, loss] : r.val_losses) val.push_back({step, number(loss)});
    nlohmann::json train = nlohmann::json::array();
    for (double loss : r.train_losses) train.push_back(number(loss));
    const nlohmann::json js = {{"first_step", r.first_step},   {"last_step", r.last_step},
                               {"train_losses", train}, {"val_losses", val},
                               {"seconds", r.seconds},           {"tokens_per_s", r.tokens_per_s},
                               {"planned_gib", r.planned_gib},   {"sparsity", r.sparsity},
                               {"sample", r.sample}};
    write_text_atomically(path, js.dump(1) + "\n");
}

TrainResult read_train_result(const std::string& path) {
    const std::string text = read_whole_file(path, "training result");
    TrainResult r;
    try {
        const auto js = nlohmann::json::parse(text);
        r.first_step = js.at("first_step").get<int64_t>();
        r.last_step = js.at("last_step").get<int64_t>();
        for (const auto& v : js.at("train_losses")) r.train_losses.push_back(number(v));
        for (const auto& v : js.at("val_losses")) r.val_losses.emplace_back(v.at(0).get<int64_t>(), number(v.at(1)));
        r.seconds = js.at("seconds").get<double>();
        r.tokens_per_s = js.at("tokens_per_s").get<double>();
        r.planned_gib = js.at("planned_gib").get<double>();
        r.sparsity = js.at("sparsity").get<double>();
        r.sample = js.at("sample").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
        fail(path + ": not a training result file (" + e.what() + ")");
    }
    return r;
}

bool read_finished_result(const RunConfig& c, TrainResult* out) {
    const std::string path = c.train.out_dir + "/result.json";
    if (!std::filesystem::exists(path)) return false;
    try {
        TrainResult r = read_train_result(path);
        if (r.last_step < c.train.max_iters || r.val_losses.empty()) return false;
        *out = std::move(r);
        return true;
    } catch (const Error&) {
        return false;   // unreadable: train (resume) again, which rewrites it
    }
}

}  // namespace gpt
