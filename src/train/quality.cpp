#include "train/quality.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/error.h"
#include "common/fs_atomic.h"
#include "train/ablation_runner.h"
#include "train/config_io.h"
#include "train/step_processes.h"
#include "train/train_result_io.h"

namespace gpt {
namespace {

// Continued fraction of the incomplete beta function (modified Lentz), converging for
// x < (a + 1) / (a + b + 2); the caller uses the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) otherwise.
double beta_continued_fraction(double a, double b, double x) {
    const double tiny = 1e-300;
    double c = 1, d = 1 - (a + b) * x / (a + 1);
    d = 1 / (std::fabs(d) < tiny ? tiny : d);
    double h = d;
    for (int m = 1; m <= 300; ++m) {
        for (int half = 0; half < 2; ++half) {
            const double num = half == 0 ? m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
                                         : -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
            d = 1 + num * d;
            d = 1 / (std::fabs(d) < tiny ? tiny : d);
            c = 1 + num / c;
            if (std::fabs(c) < tiny) c = tiny;
            h *= d * c;
            if (half == 1 && std::fabs(d * c - 1) < 1e-15) return h;
        }
    }
    return h;
}

double regularized_incomplete_beta(double a, double b, double x) {
    if (x <= 0) return 0;
    if (x >= 1) return 1;
    const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) +
                                  b * std::log1p(-x));
    if (x < (a + 1) / (a + b + 2)) return front * beta_continued_fraction(a, b, x) / a;
    return 1 - front * beta_continued_fraction(b, a, 1 - x) / b;
}

double mean_of(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? std::nan("") : s / double(v.size());
}
double std_of(const std::vector<double>& v) {   // sample standard deviation (n - 1)
    if (v.size() < 2) return std::nan("");
    const double m = mean_of(v);
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    return std::sqrt(s / double(v.size() - 1));
}

double final_val(const TrainResult& r) { return r.val_losses.empty() ? std::nan("") : r.val_losses.back().second; }
double best_val(const TrainResult& r) {
    double b = std::numeric_limits<double>::infinity();
    for (const auto& [s, v] : r.val_losses) b = std::isfinite(v) ? std::min(b, v) : b;
    return std::isfinite(b) ? b : std::nan("");
}
bool diverged(const QualityRun& q) {
    if (!q.ok) return false;
    for (double l : q.result.train_losses)
        if (!std::isfinite(l)) return true;
    return !std::isfinite(final_val(q.result));
}

std::string arm_dir_name(size_t index, const std::string& label) {
    std::string s = std::to_string(index) + "_";
    for (char ch : label) s += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '-';
    return s;
}

std::vector<std::string> arm_specs(const RunConfig& cfg) {
    std::vector<std::string> specs;
    std::istringstream all(cfg.quality_arms);
    for (std::string spec; std::getline(all, spec, ';');)
        if (spec.find_first_not_of(" \t\n") != std::string::npos) specs.push_back(spec);
    return specs;
}

std::vector<std::string> arm_labels(const RunConfig& cfg) {
    std::vector<std::string> labels = {"baseline (the configured model)"};
    for (const auto& spec : arm_specs(cfg)) labels.push_back(parse_config_arm(spec, "quality.arms").first);
    return labels;
}

std::string fmt_loss(double x) { return std::isfinite(x) ? fmt::format("{:.4f}", x) : "n/a"; }

}  // namespace

double students_t_two_sided_p(double t, double df) {
    if (!(df >= 1) || !std::isfinite(t)) return std::nan("");
    return regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t));
}

std::pair<std::string, std::vector<std::string>> parse_config_arm(const std::string& spec, const std::string& key) {
    const auto colon = spec.find(':');
    const auto first = spec.find_first_not_of(" \t\n");
    if (colon == std::string::npos || first == std::string::npos || first >= colon)
        fail(key + ": '" + spec + "' is not \"label: key=value ...\", e.g. \"RA exact: model.attention=ra "
             "model.ra.band=0\"");
    std::string label = spec.substr(first, colon - first);
    while (!label.empty() && std::isspace(static_cast<unsigned char>(label.back()))) label.pop_back();
    std::vector<std::string> overrides;
    std::istringstream words(spec.substr(colon + 1));
    for (std::string kv; words >> kv;) overrides.push_back(kv);
    return {label, overrides};
}

std::vector<std::pair<QualityRun, RunConfig>> quality_run_configs(const RunConfig& cfg) {
    std::vector<RunConfig> arms = {cfg};
    for (const auto& spec : arm_specs(cfg)) {
        RunConfig c = cfg;
        for (const auto& kv : parse_config_arm(spec, "quality.arms").second) apply_override(c, kv);
        validate(c);
        arms.push_back(c);
    }
    const auto labels = arm_labels(cfg);
    std::vector<std::pair<QualityRun, RunConfig>> out;
    for (size_t a = 0; a < arms.size(); ++a)
        for (int seed : cfg.quality_seeds) {
            RunConfig c = arms[a];
            c.job = "train";
            c.train.seed = uint64_t(seed);
            c.train.out_dir = fmt::format("{}/quality/{}/seed_{}", cfg.train.out_dir, arm_dir_name(a, labels[a]), seed);
            out.push_back({QualityRun{a, seed, false, {}}, c});
        }
    return out;
}

std::vector<QualitySummary> summarize_quality(const std::vector<std::string>& labels,
                                              const std::vector<QualityRun>& runs, double tokens_per_step) {
    std::vector<std::vector<const QualityRun*>> by_arm(labels.size());
    for (const auto& r : runs) by_arm.at(r.arm).push_back(&r);
    std::vector<double> base_finals;
    for (const auto* r : by_arm[0])
        if (std::isfinite(final_val(r->result))) base_finals.push_back(final_val(r->result));
    const double target = mean_of(base_finals);
    std::vector<QualitySummary> out;
    for (size_t a = 0; a < labels.size(); ++a) {
        QualitySummary s;
        s.label = labels[a];
        std::vector<double> finals, bests, diffs, tokens;
        for (const auto* r : by_arm[a]) {
            ++s.runs;
            if (diverged(*r)) ++s.diverged;
            const double f = final_val(r->result), b = best_val(r->result);
            if (std::isfinite(f)) finals.push_back(f);
            if (std::isfinite(b)) bests.push_back(b);
            for (const auto* base : by_arm[0])
                if (base->seed == r->seed && std::isfinite(f) && std::isfinite(final_val(base->result)))
                    diffs.push_back(f - final_val(base->result));
            for (const auto& [step, v] : r->result.val_losses)
                if (std::isfinite(target) && std::isfinite(v) && v <= target) {
                    tokens.push_back(double(step) * tokens_per_step);
                    break;
                }
        }
        s.final_mean = mean_of(finals);
        s.final_std = std_of(finals);
        s.best_mean = mean_of(bests);
        s.best_std = std_of(bests);
        s.reached = int(tokens.size());
        s.tokens_to_reach = mean_of(tokens);
        s.paired = int(diffs.size());
        s.diff_mean = mean_of(diffs);
        s.diff_std = std_of(diffs);
        if (a == 0) {
            s.verdict = "the reference";
        } else if (s.paired < 2) {
            s.verdict = "too few paired seeds for a test (need 2 or more)";
        } else {
            s.t = s.diff_std > 0 ? s.diff_mean / (s.diff_std / std::sqrt(double(s.paired)))
                                 : (s.diff_mean == 0 ? 0 : std::copysign(INFINITY, s.diff_mean));
            s.p = std::isfinite(s.t) ? students_t_two_sided_p(s.t, s.paired - 1) : 0.0;
            const bool significant = s.p < 0.05;
            s.verdict = !significant ? fmt::format("no significant difference (p = {:.3f})", s.p)
                        : s.diff_mean < 0 ? fmt::format("better than the baseline by {:.4f} (p = {:.3f})", -s.diff_mean, s.p)
                                          : fmt::format("worse than the baseline by {:.4f} (p = {:.3f})", s.diff_mean, s.p);
        }
        if (s.diverged > 0) s.verdict += fmt::format("; diverged in {} of {} runs", s.diverged, s.runs);
        out.push_back(s);
    }
    return out;
}

std::string format_quality_report(const std::vector<QualitySummary>& rows, const RunConfig& cfg) {
    std::string seeds;
    for (int s : cfg.quality_seeds) seeds += (seeds.empty() ? "" : " ") + std::to_string(s);
    std::string out = fmt::format(
        "Quality test (SPEC §6): data {}, {} steps x {} tokens per arm and seed, seeds {}; val loss over {} "
        "batches. Δ final = arm − baseline, paired by seed; p = two-sided paired t-test.\n\n"
        "| arm | runs | final val (mean ± std) | best val (mean ± std) | Δ final vs baseline | p | tokens to baseline's final | verdict |\n"
        "|---|---|---|---|---|---|---|---|\n",
        cfg.data.dataset, cfg.train.max_iters, size_t(cfg.train.batch_size) * cfg.train.seq_len * cfg.train.grad_accum,
        seeds, cfg.train.eval_batches);
    for (const auto& r : rows)
        out += fmt::format("| {} | {} | {} ± {} | {} ± {} | {} | {} | {} | {} |\n", r.label, r.runs, fmt_loss(r.final_mean),
                           fmt_loss(r.final_std), fmt_loss(r.best_mean), fmt_loss(r.best_std),
                           &r == &rows[0] ? "—" : fmt::format("{:+.4f} ± {}", r.diff_mean, fmt_loss(r.diff_std)),
                           &r == &rows[0] || r.paired < 2 ? "—" : fmt::format("{:.3g}", r.p),
                           r.reached > 0 ? fmt::format("{:.3g} ({} of {} runs)", r.tokens_to_reach, r.reached, r.runs)
                                         : "not reached",
                           r.verdict);
    return out;
}

std::vector<QualitySummary> run_quality(const RunConfig& cfg) {
    const auto planned = quality_run_configs(cfg);
    const auto labels = arm_labels(cfg);
    std::vector<QualityRun> runs;
    std::vector<size_t> todo;
    for (size_t i = 0; i < planned.size(); ++i) {
        QualityRun q = planned[i].first;
        if (read_finished_result(planned[i].second, &q.result)) {
            q.ok = true;
            spdlog::info("=== quality: {} seed {} already finished", labels[q.arm], q.seed);
        } else {
            todo.push_back(i);
        }
        runs.push_back(q);
    }
    const double tokens_per_step = double(cfg.train.batch_size) * cfg.train.seq_len * cfg.train.grad_accum;
    auto write_reports = [&] {
        const auto rows = summarize_quality(labels, runs, tokens_per_step);
        nlohmann::json js = nlohmann::json::array();
        auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
        for (const auto& r : rows)
            js.push_back({{"arm", r.label}, {"runs", r.runs}, {"diverged", r.diverged}, {"final_mean", num(r.final_mean)},
                          {"final_std", num(r.final_std)}, {"best_mean", num(r.best_mean)}, {"best_std", num(r.best_std)},
                          {"paired", r.paired}, {"diff_mean", num(r.diff_mean)}, {"diff_std", num(r.diff_std)},
                          {"t", num(r.t)}, {"p", num(r.p)}, {"reached", r.reached},
                          {"tokens_to_reach", num(r.tokens_to_reach)}, {"verdict", r.verdict}});
        write_text_atomically(cfg.train.out_dir + "/quality_report.md", format_quality_report(rows, cfg));
        write_text_atomically(cfg.train.out_dir + "/quality_report.json", js.dump(2));
        return rows;
    };
    const ProcessPlan plan = ablation_process_plan(cfg, std::max<size_t>(todo.size(), 1));
    std::vector<std::string> failures;
    if (plan.jobs == 1) {
        for (size_t i : todo) {
            spdlog::info("=== quality: {} seed {}", labels[runs[i].arm], runs[i].seed);
            runs[i].result = train(planned[i].second);
            runs[i].ok = true;
            write_reports();
        }
    } else {
        std::vector<RunConfig> cfgs;
        for (size_t i : todo) cfgs.push_back(planned[i].second);
        ProcessPlan p = plan;
        p.executable = gpt2_executable();
        spdlog::info("=== quality: {} runs, {} at a time", cfgs.size(), p.jobs);
        train_in_processes(cfgs, p, [&](size_t k, const ChildOutcome& o) {
            QualityRun& q = runs[todo[k]];
            q.ok = o.ok;
            q.result = o.result;
            if (!o.ok) failures.push_back(fmt::format("{} seed {} ({}; log {})", labels[q.arm], q.seed, o.error, o.log_path));
            spdlog::info("    {} seed {}: {}", labels[q.arm], q.seed, o.ok ? "finished" : "FAILED: " + o.error);
            write_reports();
        });
    }
    const auto rows = write_reports();
    spdlog::info("quality report ({}/quality_report.md):\n{}", cfg.train.out_dir, format_quality_report(rows, cfg));
    if (!failures.empty()) fail(fmt::format("{} quality runs failed: {}", failures.size(), fmt::join(failures, "; ")));
    return rows;
}

}  // namespace gpt
