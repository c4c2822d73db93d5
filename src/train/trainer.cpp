#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/error.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "train/checkpoint.h"
#include "train/config_io.h"
#include "train/data_parallel.h"
#include "train/evaluate.h"
#include "train/metrics.h"
#include "train/progress.h"
#include "train/sampler.h"
#include "train/session.h"
#include "train/train_result_io.h"
#include "train/train_step.h"

namespace gpt {

namespace fs = std::filesystem;

namespace {

// The checkpoint entry or an Error naming the file and the entry (pointers, not references: g++ 13
// warns about references bound to results of calls that take temporaries).
template <class T>
const T* need(const T* entry, const std::string& path, const std::string& name) {
    if (!entry) fail("checkpoint " + path + " has no entry '" + name + "': it was not written by this trainer");
    return entry;
}

CheckpointData snapshot(Session& s, const RunConfig& cfg, int64_t step, const TokenLoader& loader) {
    CheckpointData d;
    d.config_yaml = to_yaml(cfg);
    d.step = step;
    d.arrays.emplace_back("params", s.download(Space::Param, s.param_elems()));
    d.arrays.emplace_back("optimizer_state", s.download(Space::Opt, s.opt_elems()));
    const auto st = loader.state();
    d.u64.emplace_back("loader_state", std::vector<uint64_t>{st.epoch, st.cursor});
    d.u64.emplace_back("optimizer_last_reset", std::vector<uint64_t>{uint64_t(s.optimizer().last_reset())});
    d.f64.emplace_back("optimizer_norm_history", s.optimizer().norm_history());
    // Names, offsets and shapes of the flat parameter array, for h5py users (docs/file-formats.md).
    for (const auto& p : s.model().params().specs())
        d.param_index.push_back(ParamIndexEntry{p.name, int64_t(p.t.off), p.shape});
    // The loader position means "batches per rank": it continues the same sequence only with as many ranks.
    d.u64.emplace_back("data_parallel_ranks", std::vector<uint64_t>{uint64_t(s.ranks().world)});
    return d;
}

void restore(Session& s, const CheckpointData& d, TokenLoader& loader, const std::string& path) {
    const auto* params = need(d.find_array("params"), path, "params");
    if (params->size() != s.param_elems())
        fail(fmt::format("checkpoint {} holds {} parameter values but this model has {}: it was made "
                         "for a different model. Use another train.out_dir or set train.resume=false",
                         path, params->size(), s.param_elems()));
    const auto* opt = need(d.find_array("optimizer_state"), path, "optimizer_state");
    if (opt->size() != s.opt_elems())
        fail(fmt::format("checkpoint {} has optimizer state of {} values, expected {} (was AMSGrad or "
                         "pruning toggled?). Use another train.out_dir or set train.resume=false",
                         path, opt->size(), s.opt_elems()));
    s.upload(Space::Param, *params);
    s.upload(Space::Opt, *opt);
    const auto* ranks = d.find_u64("data_parallel_ranks");   // absent in older checkpoints: one process
    const int saved_world = ranks && ranks->size() == 1 ? int((*ranks)[0]) : 1;
    if (saved_world != s.ranks().world)
        fail(fmt::format("checkpoint {} was written by a run on {} GPU(s) (train.gpus = {}), but this run has "
                         "train.gpus = {}; the data order depends on it. Resume with train.gpus = {}, or use another "
                         "train.out_dir or train.resume=false",
                         path, saved_world, saved_world, s.ranks().world, saved_world));
    const auto* ls = need(d.find_u64("loader_state"), path, "loader_state");
    GPT_CHECK(ls->size() == 2, "checkpoint " + path + ": loader_state must hold 2 values");
    loader.restore(TokenLoader::State{(*ls)[0], (*ls)[1]});
    const auto* reset = need(d.find_u64("optimizer_last_reset"), path, "optimizer_last_reset");
    GPT_CHECK(reset->size() == 1, "checkpoint " + path + ": optimizer_last_reset must hold 1 value");
    s.optimizer().restore(*need(d.find_f64("optimizer_norm_history"), path, "optimizer_norm_history"),
                          int64_t((*reset)[0]));
}

}  // namespace

TrainResult train(const RunConfig& cfg, const TrainOptions& opt) {
    const Ranks ranks = ranks_from_environment();
    if (cfg.train.gpus > 1 && !ranks.distributed()) return train_data_parallel(cfg);   // the launcher
    if (ranks.world != cfg.train.gpus)
        fail(fmt::format("train.gpus: {}, but this rank was started as one of {} (GPT_WORLD); ranks are started "
                         "by the launcher from one configuration", cfg.train.gpus, ranks.world));
    const bool writer = ranks.writes_files();   // rank 0 writes the run's files; the others compute
    const TrainConfig& tc = cfg.train;
    const int B = tc.batch_size, T = tc.seq_len, accum = tc.grad_accum;   // accum: the global batch
    fs::create_directories(tc.out_dir);
    if (writer) {
        std::ofstream f(tc.out_dir + "/config.yaml");
        f << to_yaml(cfg);
    }

    Session s(cfg, B, T, true, false, ranks);
    spdlog::info("model: {}", s.model().describe());
    spdlog::info("backend: {}", s.backend().description);
    spdlog::info("{}", s.memory_report());

    TokenLoader train_data(cfg.data.train_path, B, T, tc.seed, ranks.rank, ranks.world, cfg.model.vocab_size);
    TokenLoader val_data(cfg.data.val_path, B, T, validation_seed(tc), ranks.rank, ranks.world, cfg.model.vocab_size);
    spdlog::info("data: {} training tokens, {} validation tokens; {} tokens per step",
                 train_data.num_tokens(), val_data.num_tokens(), size_t(B) * T * accum);

    CheckpointDir checkpoints(tc.out_dir + "/checkpoints", tc.keep_checkpoints);
    int64_t start = 0;
    if (tc.resume) {
        if (auto path = checkpoints.latest()) {
            CheckpointData d = load_checkpoint(*path);
            restore(s, d, train_data, *path);
            start = d.step;
            spdlog::info("resumed from {} (step {})", *path, start);
        }
    }
    std::optional<MetricsLog> metrics;
    if (writer) metrics.emplace(tc.out_dir, start > 0, start);   // drops rows a killed run logged past its checkpoint

    std::optional<Tokenizer> tokenizer;
    auto sample_text = [&](int64_t step) -> std::string {
        if (!opt.sample || !writer) return {};
        if (!tokenizer) {
            try {
                tokenizer = Tokenizer::load(cfg.data.tokenizer_dir);
            } catch (const Error& e) {
                spdlog::warn("no samples: {}", e.what());
                return {};
            }
        }
        const auto& sc = cfg.sample;
        std::string text = generate(s, *tokenizer, sc.prompt, tc.sample_tokens, sc.temperature, sc.top_k,
                                    sc.seed + uint64_t(step));
        spdlog::info("sample at step {}:\n{}{}\n", step, sc.prompt, text);
        return sc.prompt + text;
    };

    TrainResult result;
    result.first_step = start + 1;
    result.planned_gib = s.planned_gib();
    const double tokens_per_step = double(B) * T * accum;
    const double flops_per_token = s.model().flops_per_token(T);
    std::optional<Progress> progress;
    if (!opt.quiet && writer) progress.emplace("train", tc.max_iters);
    auto t_start = std::chrono::steady_clock::now();
    double timed_tokens = 0, timed_seconds = 0;

    StepRunner& runner = s.runner();
    const BatchSource next_batch = [&](int32_t* in, int32_t* tg) { train_data.next_batch(in, tg); };
    // A step after which the loop reads the parameters or the loader's position (evaluation,
    // samples, checkpoints, the end): the next step must not be queued before it is done.
    auto boundary = [&](int64_t step) {
        auto every = [&](int interval) { return interval > 0 && step % interval == 0; };
        return step == tc.max_iters || (opt.stop_after > 0 && step >= opt.stop_after) ||
               every(tc.eval_interval) || every(tc.sample_interval) || every(tc.checkpoint_interval);
    };
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t step = start + 1; step <= tc.max_iters; ++step) {
        if (runner.in_flight() == 0) runner.launch(step, next_batch);
        // Queue the next step before reading this one's results: its batch is loaded, copied and
        // captured while this one computes, and the GPU never waits for the host in between.
        if (!boundary(step)) runner.launch(step + 1, next_batch);
        const StepOutcome o = runner.finish();
        GPT_CHECK(o.step == step, "trainer: the step runner returned another step's results");
        const double loss = o.loss;
        const OptimizerStepInfo& info = o.info;
        if (!std::isfinite(loss))
            fail(fmt::format("training diverged at step {}: the loss is {}. Lower train.optim.lr or "
                             "raise warmup; the last checkpoint in {}/checkpoints is intact",
                             step, loss, tc.out_dir));
        // Time between consecutive results: the step's share of the pipelined run.
        const auto t1 = std::chrono::steady_clock::now();
        const double dt = std::chrono::duration<double>(t1 - t0).count();
        t0 = t1;
        if (step > start + 1) {   // the first step carries one-time warm-up costs
            timed_tokens += tokens_per_step;
            timed_seconds += dt;
        }

        StepMetrics m;
        m.step = step;
        m.loss = loss;
        m.lr = info.lr;
        m.grad_norm = info.grad_norm;
        m.ms = dt * 1e3;
        m.tokens_per_s = tokens_per_step / dt;
        m.mfu = flops_per_token * m.tokens_per_s / (s.backend().peak_flops * ranks.world);   // per GPU
        m.mem_gib = s.planned_gib();
        if (metrics) metrics->log_step(m);
        result.train_losses.push_back(loss);
        if (progress)
            progress->update(step, fmt::format("loss {:.4f} | lr {:.2e} | {:.0f} ms | {:.0f} tok/s", loss,
                                          info.lr, m.ms, m.tokens_per_s));
        if (tc.log_interval > 0 && step % tc.log_interval == 0)
            spdlog::debug("step {} loss {:.6f} lr {:.3e} norm {:.4f} {:.1f} ms", step, loss, info.lr,
                          info.grad_norm, m.ms);
        if (info.spike) spdlog::info("step {}: grad-norm spike, moments damped (SPAM)", step);
        if (info.reset) spdlog::info("step {}: moments reset, lr re-warming (SPAM)", step);

        const bool last = step == tc.max_iters;
        if ((tc.eval_interval > 0 && step % tc.eval_interval == 0) || last) {
            const double val = evaluate(s, val_data, tc.eval_batches, B, T);   // every rank: a collective
            if (metrics) metrics->log_eval(step, val);
            result.val_losses.emplace_back(step, val);
            spdlog::info("step {}: train loss {:.4f}, val loss {:.4f} (perplexity {:.2f})", step, loss, val,
                         std::exp(val));
            if (s.optimizer().pruning())
                spdlog::info("step {}: sparsity of the attention/MLP weights {:.2f}% (target now {:.2f}%)", step,
                             100 * s.optimizer().measured_sparsity(s.ops()),
                             100 * s.optimizer().target_sparsity(int(step), tc.max_iters));
        }
        if ((tc.sample_interval > 0 && step % tc.sample_interval == 0) || last)
            result.sample = sample_text(step);
        if (writer && ((tc.checkpoint_interval > 0 && step % tc.checkpoint_interval == 0) || last)) {
            metrics->flush();
            checkpoints.save(snapshot(s, cfg, step, train_data));
        }
        result.last_step = step;
        if (opt.stop_after > 0 && step >= opt.stop_after) break;
        if (boundary(step)) t0 = std::chrono::steady_clock::now();   // evaluation etc. is not step time
    }
    if (progress) progress->finish();
    if (s.optimizer().pruning()) result.sparsity = s.optimizer().measured_sparsity(s.ops());
    if (metrics) metrics->flush();
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    result.tokens_per_s = timed_seconds > 0 ? timed_tokens / timed_seconds : 0;
    spdlog::info("done: steps {}..{} in {:.1f} s ({:.0f} tokens/s)", result.first_step, result.last_step,
                 result.seconds, result.tokens_per_s);
    // What the run reached, for scripts and the ablation / quality runners (a restart reuses it).
    if (writer) write_train_result(tc.out_dir + "/result.json", result);
    return result;
}

}  // namespace gpt
