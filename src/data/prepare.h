// Text -> token shards (`gpt2 prepare`, SPEC §5).
//
// Inputs: .txt files (one document each, used verbatim), .jsonl files (one JSON object per line,
// the document is the string field `text_field`; blank lines skipped), or a directory or glob
// pattern expanding to such files (sorted by name). Documents are numbered in input order.
//
// Every document is written as <|endoftext|> followed by its tokens (EOT first, like llm.c), so
// documents are separated by EOT. Document i goes to val when
// ceil((i+1) * val_fraction) > ceil(i * val_fraction): exactly ceil(N * val_fraction) documents,
// evenly spread, the first document always included when val_fraction > 0.
//
// Output, in out_dir: llm.c shards `<name>_val_000000.bin`, ... and `<name>_train_000000.bin`, ...,
// each of at most shard_tokens tokens (documents may straddle two shards). Shards of the same name
// left from an earlier run with more shards are deleted, so `<name>_train_*.bin` is exactly this
// run's data. Documents are tokenized in parallel with OpenMP; memory stays bounded (text is
// processed in chunks of about 64 MB).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace gpt {

struct PrepareOptions {
    std::vector<std::string> inputs;
    std::string out_dir;
    double val_fraction = 0.05;
    std::string tokenizer_dir = "assets/gpt2";
    size_t shard_tokens = 100'000'000;
    std::string name = "data";
    std::string text_field = "text";
};

struct PrepareReport {
    size_t documents = 0;          // non-empty documents tokenized
    size_t empty_documents = 0;    // skipped: no text
    size_t train_documents = 0, val_documents = 0;
    size_t train_tokens = 0, val_tokens = 0;   // including one EOT per document
    size_t text_bytes = 0;
    std::vector<std::string> input_files;      // after expanding directories and patterns
    std::vector<std::string> val_shards, train_shards;
    double seconds = 0;
};

PrepareReport prepare_dataset(const PrepareOptions& options);

// One line per fact, for the CLI to print.
std::string describe(const PrepareReport& report);

}  // namespace gpt
