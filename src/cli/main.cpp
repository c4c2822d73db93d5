// The gpt2 program. One YAML run file (written by `make` from Kconfig's .config, or by hand) plus
// `--set key=value` overrides configures every subcommand; without --config the embedded small
// default is used.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "common/error.h"
#include "common/log.h"
#include "train/config_io.h"
#include "train/data_parallel.h"

using namespace gpt;

int main(int argc, char** argv) {
    CLI::App app{"gpt2: a GPT-2 trainer for attention research (CPU reference + CUDA)"};
    app.require_subcommand(1);
    std::string config_path;
    std::vector<std::string> overrides;
    bool verbose = false;
    app.add_option("-c,--config", config_path, "YAML run file (default: the embedded small default)");
    app.add_option("-s,--set", overrides, "override a key, e.g. --set train.optim.lr=3e-4")->take_all();
    app.add_flag("-v,--verbose", verbose, "debug logging");

    CommandArgs args;
    auto* run = app.add_subcommand("run", "run the job named by the config's `job` key");
    auto* train = app.add_subcommand("train", "train (resumes from the newest checkpoint in train.out_dir)");
    auto* eval = app.add_subcommand("eval", "validation loss and perplexity of a checkpoint");
    eval->add_option("--checkpoint", args.checkpoint, "checkpoint file (default: newest in train.out_dir)");
    auto* sample = app.add_subcommand("sample", "generate text from a checkpoint");
    sample->add_option("--checkpoint", args.checkpoint, "checkpoint file (default: newest in train.out_dir)");
    sample->add_option("--prompt", args.prompt, "prompt text");
    sample->add_option("--tokens", args.tokens, "tokens to generate");
    sample->add_option("--temperature", args.temperature, "softmax temperature (0 = greedy)");
    sample->add_option("--top-k", args.top_k, "sample among the k most likely tokens (0 = all)");
    sample->add_option("--seed", args.seed, "sampling seed");
    auto* prepare = app.add_subcommand("prepare", "tokenize text/JSONL files into train/val token shards");
    prepare->add_option("-i,--input", args.inputs, "input .txt or .jsonl files")->required();
    prepare->add_option("-o,--out", args.out_dir, "output directory")->required();
    prepare->add_option("--name", args.name, "shard name prefix");
    prepare->add_option("--val-fraction", args.val_fraction, "fraction of documents for validation");
    prepare->add_option("--tokenizer", args.tokenizer_dir, "directory with encoder.json and vocab.bpe");
    auto* check = app.add_subcommand("check", "dry run: validate the config, build and briefly train every step");
    auto* bench = app.add_subcommand("bench", "time the training step (or, with --module, the attention module) of the configured model");
    bench->add_option("-b,--batch", args.batches, "micro-batch sizes to time (default: train.batch_size)");
    bench->add_option("--warmup", args.warmup, "untimed steps first (default 3; --module: 20 calls)");
    bench->add_option("--steps", args.steps, "timed steps, the median is reported (default 10; --module: 100 calls)");
    bench->add_flag("--module", args.module,
                    "time one attention unit (input projections, attention, gates, c_proj) forward and forward+backward "
                    "at B = train.batch_size, T = train.seq_len, for the configured model and each --ablation-step / "
                    "--variant arm, as ratios to the configured model");
    bench->add_flag("--profile", args.profile, "also time every operation (synchronised) and print where the step goes");
    bench->add_option("--ablation-step", args.ablation_steps,
                      "time the model of these SPEC §4 ablation steps (ratios to the first listed)");
    bench->add_option("--variant", args.variants,
                      "also time the configured model with overrides, \"label: key=value key=value\" "
                      "(repeatable; ratios to the first step or variant)");
    auto* info = app.add_subcommand("info", "print the model, its parameters and the memory plan");

    // Global options (--config, --set) may also follow the subcommand.
    for (auto* sub : app.get_subcommands({})) sub->fallthrough();
    CLI11_PARSE(app, argc, argv);
    try {
        RunConfig cfg = config_path.empty() ? default_run_config() : load_run_config(config_path, overrides);
        if (config_path.empty())
            for (const auto& o : overrides) {
                auto eq = o.find('=');
                if (eq == std::string::npos) fail("--set " + o + ": expected key=value");
                apply_override(cfg, o.substr(0, eq), o.substr(eq + 1));
            }
        const bool needs_run_dir = run->parsed() || train->parsed();
        // A data-parallel rank other than 0 (train/data_parallel.h) logs only to its rank<r>.log.
        const bool rank_writes = ranks_from_environment().writes_files();
        init_logging(needs_run_dir && rank_writes ? cfg.train.out_dir : "", verbose);
        if (prepare->parsed()) return cmd_prepare(cfg, args);
        validate(cfg);
        if (info->parsed()) return cmd_info(cfg);
        // Jobs that read data say up front which file is missing and how to prepare it.
        const std::string job = run->parsed() ? cfg.job : train->parsed() ? "train" : eval->parsed() ? "eval" : "";
        if (job == "train" || job == "ablation" || job == "quality" || job == "eval") check_data_files(cfg);
        if (check->parsed()) return cmd_check(cfg);
        if (bench->parsed()) return cmd_bench(cfg, args);
        if (eval->parsed()) return cmd_eval(cfg, args);
        if (sample->parsed()) return cmd_sample(cfg, args);
        if (train->parsed()) return cmd_train(cfg);
        return cmd_run(cfg, args);
    } catch (const Error& e) {
        spdlog::error("{}", e.what());
        return 2;
    } catch (const std::exception& e) {
        spdlog::error("internal error: {}", e.what());
        return 3;
    }
}
