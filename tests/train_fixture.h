// Shared by the end-to-end training tests: real-text shards of the State of the Union corpus
// (fetched by tools/fetch_assets.sh), prepared once per test binary run, and a tiny CPU run config.
#pragma once
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "data/prepare.h"
#include "scratch_dir.h"
#include "train/config_io.h"

namespace gpt::test {


inline std::string corpus_path() {
    const std::string p = std::string(GPT_SOURCE_DIR) + "/assets/corpus/sotu.jsonl";
    REQUIRE_MESSAGE(std::filesystem::exists(p), "missing " << p << ": run tools/fetch_assets.sh");
    return p;
}

// Real text shards once per test binary run (about a second).
inline std::string prepared_dir() {
    static ScratchDir dir("train_data");
    static bool done = false;
    if (!done) {
        PrepareOptions o;
        o.inputs = {corpus_path()};
        o.out_dir = dir.str();
        o.name = "sotu";
        o.tokenizer_dir = std::string(GPT_SOURCE_DIR) + "/assets/gpt2";
        prepare_dataset(o);
        done = true;
    }
    return dir.str();
}

inline RunConfig tiny_run(const std::string& out_dir) {
    RunConfig c = default_run_config();
    c.model.n_layer = 2;
    c.model.n_embd = 32;
    c.model.n_head = 2;
    c.model.block_size = 32;
    c.model.dropout = 0.1f;   // exercises the seeded dropout streams across a resume
    c.train.batch_size = 4;
    c.train.seq_len = 32;
    c.train.grad_accum = 2;
    c.train.threads = 2;
    c.train.device = "cpu";
    c.train.eval_batches = 4;
    c.train.optim.lr = 3e-3f;
    c.train.optim.warmup_iters = 5;
    c.train.optim.min_lr = 3e-4f;
    c.train.out_dir = out_dir;
    c.data.train_path = prepared_dir() + "/sotu_train_*.bin";
    c.data.val_path = prepared_dir() + "/sotu_val_*.bin";
    c.data.tokenizer_dir = std::string(GPT_SOURCE_DIR) + "/assets/gpt2";
    return c;
}

}  // namespace gpt::test
