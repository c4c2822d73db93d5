// prepare_dataset: text/JSONL -> llm.c shards, EOT before each document, deterministic split.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/token_file.h"
#include "data/token_source.h"
#include "test_data_util.h"

using namespace gpt;
using gpt::test::TempDir;

namespace {

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// A small corpus: two .txt documents, then a .jsonl with four documents and a blank line.
struct Corpus {
    TempDir dir;
    std::vector<std::string> docs;
    Corpus() {
        docs = {"The first document.\nIt has two lines.\n",
                "Second: naïve café — 42 numbers, 'quotes' and we'll see.",
                "Third document from JSONL.",
                "Fourth,\twith a tab and émoji 🙂.",
                "Fifth: \"escaped\" quotes and a backslash \\.",
                "Sixth and last."};
        std::filesystem::create_directories(dir / "in");
        write_text(dir / "in/a.txt", docs[0]);
        write_text(dir / "in/b.txt", docs[1]);
        std::string jsonl;
        for (size_t i = 2; i < docs.size(); ++i) {
            jsonl += nlohmann::json{{"id", i}, {"text", docs[i]}}.dump() + "\n";
            if (i == 3) jsonl += "\n";
        }
        write_text(dir / "in/c.jsonl", jsonl);
    }
    PrepareOptions options(double val_fraction, size_t shard_tokens) const {
        PrepareOptions o;
        o.inputs = {dir / "in/a.txt", dir / "in/b.txt", dir / "in/c.jsonl"};
        o.out_dir = dir / "out";
        o.val_fraction = val_fraction;
        o.tokenizer_dir = gpt::test::tokenizer_dir();
        o.shard_tokens = shard_tokens;
        o.name = "toy";
        return o;
    }
};

std::vector<int32_t> read_all(const std::vector<std::string>& shards) {
    std::vector<int32_t> tokens;
    for (const auto& s : shards) {
        const auto t = read_token_file(s);
        tokens.insert(tokens.end(), t.begin(), t.end());
    }
    return tokens;
}

std::string prepare_error(const PrepareOptions& o) {
    return gpt::test::error_of([&] { prepare_dataset(o); });
}

}  // namespace

TEST_CASE("data: prepare writes EOT-separated documents into val/train shards by the split rule") {
    const Tokenizer& tok = gpt::test::gpt2_tokenizer();
    Corpus corpus;
    const double f = 0.34;
    const PrepareReport r = prepare_dataset(corpus.options(f, 20));

    std::string want_val, want_train;
    size_t val_docs = 0;
    for (size_t i = 0; i < corpus.docs.size(); ++i) {
        const bool val = std::ceil((i + 1) * f) > std::ceil(i * f);
        (val ? want_val : want_train) += "<|endoftext|>" + corpus.docs[i];
        val_docs += val;
    }
    CHECK(val_docs == 3);  // ceil(6 * 0.34) = 3, documents 0, 2 and 5
    CHECK(r.documents == 6);
    CHECK(r.val_documents == 3);
    CHECK(r.train_documents == 3);
    CHECK(r.input_files.size() == 3);

    const auto val = read_all(r.val_shards), train = read_all(r.train_shards);
    CHECK(tok.decode(val) == want_val);
    CHECK(tok.decode(train) == want_train);
    CHECK(val.size() == r.val_tokens);
    CHECK(train.size() == r.train_tokens);
    CHECK(std::count(val.begin(), val.end(), tok.eot()) == 3);
    CHECK(val.front() == tok.eot());
    CHECK(train.front() == tok.eot());

    // Naming and sizes: <name>_<split>_NNNNNN.bin, full shards but the last.
    REQUIRE(r.train_shards.size() >= 2);
    CHECK(r.val_shards.front() == corpus.dir / "out/toy_val_000000.bin");
    CHECK(r.train_shards.front() == corpus.dir / "out/toy_train_000000.bin");
    CHECK(r.train_shards[1] == corpus.dir / "out/toy_train_000001.bin");
    for (size_t i = 0; i + 1 < r.train_shards.size(); ++i) CHECK(read_token_file(r.train_shards[i]).size() == 20);
    CHECK(read_token_file(r.train_shards.back()).size() <= 20);

    // The loader reads the output through the default pattern.
    TokenLoader loader(corpus.dir / "out/toy_train_*.bin", 1, 8, 1);
    CHECK(loader.num_tokens() == r.train_tokens);
}

TEST_CASE("data: prepare is deterministic and removes stale shards of an earlier run") {
    Corpus corpus;
    const PrepareReport many = prepare_dataset(corpus.options(0.2, 10));
    REQUIRE(many.train_shards.size() > 2);
    const auto tokens = read_all(many.train_shards);
    const PrepareReport one = prepare_dataset(corpus.options(0.2, 100000));
    CHECK(one.train_shards.size() == 1);
    CHECK(read_all(one.train_shards) == tokens);
    CHECK(resolve_token_files(corpus.dir / "out/toy_train_*.bin").size() == 1);

    const PrepareReport no_val = prepare_dataset(corpus.options(0.0, 100000));
    CHECK(no_val.val_documents == 0);
    CHECK(no_val.val_shards.empty());
    CHECK_FALSE(std::filesystem::exists(corpus.dir / "out/toy_val_000000.bin"));
}

TEST_CASE("data: prepare takes directories, patterns and another JSONL field") {
    Corpus corpus;
    PrepareOptions o = corpus.options(0.0, 1000000);
    o.inputs = {corpus.dir / "in"};
    const PrepareReport from_dir = prepare_dataset(o);
    CHECK(from_dir.input_files.size() == 3);
    CHECK(from_dir.documents == 6);
    o.inputs = {corpus.dir / "in/*.txt"};
    CHECK(prepare_dataset(o).documents == 2);

    write_text(corpus.dir / "content.jsonl", R"({"content": "alpha"})" "\n" R"({"content": "beta"})" "\n");
    o.inputs = {corpus.dir / "content.jsonl"};
    o.text_field = "content";
    const PrepareReport r = prepare_dataset(o);
    CHECK(r.documents == 2);
    CHECK(gpt::test::gpt2_tokenizer().decode(read_all(r.train_shards)) == "<|endoftext|>alpha<|endoftext|>beta");
}

TEST_CASE("data: prepare errors name the file, the line and the problem") {
    Corpus corpus;
    PrepareOptions o = corpus.options(0.1, 1000);

    o.inputs = {corpus.dir / "in/missing.txt"};
    std::string msg = prepare_error(o);
    CHECK(msg.find(corpus.dir / "in/missing.txt") != std::string::npos);
    CHECK(msg.find("does not exist") != std::string::npos);

    write_text(corpus.dir / "bad.jsonl", R"({"text": "fine"})" "\n" R"({"text": "broken)" "\n");
    o.inputs = {corpus.dir / "bad.jsonl"};
    msg = prepare_error(o);
    CHECK(msg.find(corpus.dir / "bad.jsonl:2") != std::string::npos);
    CHECK(msg.find("not valid JSON") != std::string::npos);

    write_text(corpus.dir / "nofield.jsonl", R"({"text": "fine"})" "\n" "\n" R"({"body": "x"})" "\n");
    o.inputs = {corpus.dir / "nofield.jsonl"};
    msg = prepare_error(o);
    CHECK(msg.find(corpus.dir / "nofield.jsonl:3") != std::string::npos);
    CHECK(msg.find("no string field 'text'") != std::string::npos);

    write_text(corpus.dir / "data.csv", "a,b\n");
    o.inputs = {corpus.dir / "data.csv"};
    msg = prepare_error(o);
    CHECK(msg.find(corpus.dir / "data.csv") != std::string::npos);
    CHECK(msg.find(".jsonl") != std::string::npos);

    o = corpus.options(1.5, 1000);
    CHECK(prepare_error(o).find("val_fraction") != std::string::npos);
    o = corpus.options(0.1, 1000);
    o.tokenizer_dir = corpus.dir / "no_tokenizer";
    CHECK(prepare_error(o).find("fetch_assets.sh") != std::string::npos);
}
