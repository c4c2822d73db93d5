#include "train/module_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>

#include <fmt/format.h>

#include "common/error.h"
#include "common/rng.h"
#include "model/units.h"
#include "train/session.h"

namespace gpt {

namespace {

struct Timing {
    double median = 0, min = 0, queued = 0;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// warmup calls, then reps calls each between two synchronisations (median, min), then reps
// calls queued back to back between two synchronisations (mean).
Timing time_calls(Ops& ops, int warmup, int reps, const std::function<void()>& call) {
    for (int i = 0; i < warmup; ++i) call();
    std::vector<double> ms;
    for (int i = 0; i < reps; ++i) {
        ops.synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        call();
        ops.synchronize();
        ms.push_back(ms_since(t0));
    }
    ops.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) call();
    ops.synchronize();
    Timing t;
    t.queued = ms_since(t0) / reps;
    std::sort(ms.begin(), ms.end());
    t.median = ms[ms.size() / 2];
    t.min = ms.front();
    return t;
}

void upload_normal(Ops& ops, Ten t, Rng& rng) {
    std::vector<float> v(t.n);
    for (auto& x : v) x = rng.normal();
    ops.upload(t, v.data());
}

// The first non-finite value's description among these tensors, or "".
std::string non_finite(Ops& ops, const std::vector<std::pair<const char*, Ten>>& tensors) {
    for (const auto& [name, t] : tensors) {
        std::vector<float> v(t.n);
        ops.download(t, v.data());
        const auto bad = std::find_if(v.begin(), v.end(), [](float x) { return !std::isfinite(x); });
        if (bad != v.end()) return fmt::format("{}[{}] = {}", name, bad - v.begin(), *bad);
    }
    return "";
}

void bench_arm(const BenchArm& arm, int warmup, int reps, ModuleBenchResult& r) {
    const RunConfig& cfg = arm.cfg;
    if (cfg.model.m3)
        fail("model.m3: latent reciprocity hands tensors between the attention and the MLP of a block, so the "
             "attention module cannot run on its own; time it with the training-step benchmark (bench without --module)");
    const int B = r.batch, T = r.seq, E = cfg.model.n_embd;
    Backend backend = make_train_backend(cfg.train);
    Ops& ops = *backend.ops;
    r.backend = backend.description;

    // Layer 0's unit, declared, connected and planned as GPT does it (no previous block).
    ParamTable params;
    BlockLink link;
    SharedScratch shared;
    auto unit = make_attention_unit(cfg.model, 0);
    unit->connect(nullptr, &link, &shared);
    unit->declare(params);
    ActivationPlan acts;
    const size_t n = size_t(B) * T * E;
    const Ten in = acts.add(Space::Act, n, "module", "in");   // the block's ln_1 output
    unit->plan(acts, B, T);
    const Ten out = acts.add(Space::Act, n, "module", "out");
    const Ten dout = acts.add(Space::Act, n, "module", "dout");
    const Ten din = acts.add(Space::Act, n, "module", "din");
    const Ten scratch = acts.add(Space::Act, unit->grad_scratch_elems(B, T), "activation grads", "unit_scratch");
    ops.allocate(acts.memory_plan(params.total()));
    const std::vector<float> init = params.initial_values(cfg.train.seed);
    ops.upload(Ten{Space::Param, 0, init.size()}, init.data());
    ops.params_changed();
    Rng rng(cfg.train.seed + 1);
    upload_normal(ops, in, rng);     // random rows, never zeros (they can run faster)
    upload_normal(ops, dout, rng);
    for (const auto& s : params.specs()) r.params += s.numel();
    r.module = unit->describe();

    const StepContext c{&ops, B, T, /*training=*/true, mix64(cfg.train.seed)};
    const Timing f = time_calls(ops, warmup, reps, [&] { unit->forward(c, in, out); });
    const Timing fb = time_calls(ops, warmup, reps, [&] {
        unit->forward(c, in, out);
        unit->backward(c, in, dout, din, scratch);   // parameter gradients accumulate, as in training
    });
    const std::string bad = non_finite(ops, {{"out", out}, {"din", din}, {"param grads", Ten{Space::Grad, 0, params.total()}}});
    if (!bad.empty()) fail("non-finite result after the timed calls: " + bad);
    r.fwd_ms = f.median, r.fwd_min_ms = f.min, r.fwd_queued_ms = f.queued;
    r.fwdbwd_ms = fb.median, r.fwdbwd_min_ms = fb.min, r.fwdbwd_queued_ms = fb.queued;
}

}  // namespace

std::vector<ModuleBenchResult> bench_attention_module(const std::vector<BenchArm>& arms, int warmup, int reps) {
    GPT_CHECK(reps >= 1 && warmup >= 0,
              fmt::format("bench --module: --steps {} must be >= 1 and --warmup {} >= 0", reps, warmup));
    std::vector<ModuleBenchResult> rows;
    for (const auto& arm : arms) {
        ModuleBenchResult r;
        r.label = arm.label;
        r.batch = arm.cfg.train.batch_size;
        r.seq = arm.cfg.train.seq_len;
        try {
            bench_arm(arm, warmup, reps, r);   // its backend and buffers are freed before the next arm
        } catch (const Error& e) {
            r.error = e.what();
        }
        rows.push_back(r);
    }
    return rows;
}

std::string format_module_table(const std::vector<ModuleBenchResult>& rows, int warmup, int reps) {
    if (rows.empty()) return "";
    std::string backend;
    for (const auto& r : rows)
        if (backend.empty()) backend = r.backend;
    std::string s = fmt::format(
        "attention module (one layer-0 attention unit: input projections, attention, gates, c_proj), {}\n"
        "median of {} calls after {} warm-up, each synchronised; queued = mean of {} calls back to back; "
        "ratios to \"{}\"\n",
        backend.empty() ? "no backend" : backend, reps, warmup, reps, rows[0].label);
    size_t w = 3;
    for (const auto& r : rows) w = std::max(w, r.label.size());
    s += fmt::format("  {:<{}} {:>4} {:>5} {:>9} {:>11} {:>7} {:>9} {:>17} {:>9}  {}\n", "arm", w, "B", "T", "fwd ms",
                     "fwd+bwd ms", "fwd x", "f+b x", "queued fwd/f+b", "params", "module");
    const ModuleBenchResult& base = rows[0];
    const bool ratios = base.error.empty() && base.fwd_ms > 0 && base.fwdbwd_ms > 0;
    for (const auto& r : rows) {
        if (!r.error.empty()) {
            s += fmt::format("  {:<{}} {:>4} {:>5}  failed: {}\n", r.label, w, r.batch, r.seq, r.error);
            continue;
        }
        const std::string fx = ratios ? fmt::format("{:.3f}", r.fwd_ms / base.fwd_ms) : "-";
        const std::string fbx = ratios ? fmt::format("{:.3f}", r.fwdbwd_ms / base.fwdbwd_ms) : "-";
        s += fmt::format("  {:<{}} {:>4} {:>5} {:>9.3f} {:>11.3f} {:>7} {:>9} {:>8.3f}/{:<8.3f} {:>9}  {}\n", r.label, w,
                         r.batch, r.seq, r.fwd_ms, r.fwdbwd_ms, fx, fbx, r.fwd_queued_ms, r.fwdbwd_queued_ms, r.params,
                         r.module);
    }
    return s;
}

}  // namespace gpt
