// Token files (llm.c shards, raw .bin) and data path resolution: round trips and every bad input.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <functional>

#include "common/error.h"
#include "data/file_util.h"
#include "data/token_file.h"
#include "data/token_source.h"
#include "test_data_util.h"

using namespace gpt;
using gpt::test::error_of;
using gpt::test::TempDir;

namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

std::string shard_bytes(int32_t magic, int32_t version, int32_t count, const std::vector<uint16_t>& tokens) {
    std::vector<int32_t> header(kShardHeaderInts, 0);
    header[0] = magic;
    header[1] = version;
    header[2] = count;
    std::string bytes(reinterpret_cast<const char*>(header.data()), kShardHeaderBytes);
    bytes.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
    return bytes;
}

std::vector<uint16_t> sample_tokens(size_t n) {
    std::vector<uint16_t> t(n);
    for (size_t i = 0; i < n; ++i) t[i] = static_cast<uint16_t>((i * 7919 + 13) % kGpt2VocabSize);
    t[0] = 50256;  // the largest valid GPT-2 id
    return t;
}

// The error for `path` must name the file and contain `problem`.
void check_error(const std::string& path, const std::string& problem) {
    const std::string msg = error_of([&] { read_token_file(path); });
    INFO("message: " << msg);
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find(problem) != std::string::npos);
}

}  // namespace

TEST_CASE("data: llm.c shard write/read round trip with the exact header") {
    TempDir dir;
    const auto tokens = sample_tokens(1000);
    write_shard(dir / "a_train_000000.bin", tokens);
    CHECK(read_token_file(dir / "a_train_000000.bin") == tokens);
    TokenFileView view(dir / "a_train_000000.bin");
    CHECK(view.format() == TokenFileFormat::Shard);
    CHECK(view.size() == 1000);

    const std::string bytes = read_whole_file(dir / "a_train_000000.bin", "shard");
    REQUIRE(bytes.size() == 1024 + 2 * 1000);
    CHECK(bytes == shard_bytes(20240520, 1, 1000, tokens));

    // Detection is by magic, not by name.
    write_shard(dir / "shard.tok", tokens);
    CHECK(read_token_file(dir / "shard.tok") == tokens);
}

TEST_CASE("data: raw uint16 .bin round trip") {
    TempDir dir;
    const auto tokens = sample_tokens(777);
    write_raw_bin(dir / "train.bin", tokens);
    CHECK(read_whole_file(dir / "train.bin", "raw").size() == 777 * 2);
    CHECK(read_token_file(dir / "train.bin") == tokens);
    CHECK(TokenFileView(dir / "train.bin").format() == TokenFileFormat::Raw);
}

TEST_CASE("data: atomic writes replace the file and leave no temporary behind") {
    TempDir dir;
    write_shard(dir / "x.bin", sample_tokens(10));
    write_shard(dir / "x.bin", sample_tokens(20));
    CHECK(read_token_file(dir / "x.bin").size() == 20);
    size_t entries = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path)) ++entries;
    CHECK(entries == 1);
    CHECK(error_of([&] { write_shard(dir / "empty.bin", {}); }).find("at least one token") != std::string::npos);
}

TEST_CASE("data: bad token files give errors naming the file and the problem") {
    TempDir dir;
    const auto tokens = sample_tokens(100);

    check_error(dir / "missing.bin", "does not exist");

    write_bytes(dir / "empty.bin", "");
    check_error(dir / "empty.bin", "is empty");

    write_bytes(dir / "bad_magic.shard", shard_bytes(12345, 1, 100, tokens));
    check_error(dir / "bad_magic.shard", "bad magic number 12345");

    write_bytes(dir / "v2.bin", shard_bytes(kShardMagic, 2, 100, tokens));
    check_error(dir / "v2.bin", "shard version 2");

    std::string truncated = shard_bytes(kShardMagic, 1, 100, tokens);
    truncated.resize(truncated.size() - 10);
    write_bytes(dir / "truncated.bin", truncated);
    check_error(dir / "truncated.bin", "truncated: the header says 100 tokens");

    write_bytes(dir / "long.bin", shard_bytes(kShardMagic, 1, 50, tokens));
    check_error(dir / "long.bin", "longer than its header says");

    write_bytes(dir / "short_header.bin", shard_bytes(kShardMagic, 1, 0, {}).substr(0, 100));
    check_error(dir / "short_header.bin", "less than the 1024-byte header");

    auto out_of_vocab = tokens;
    out_of_vocab[42] = 50257;
    write_shard(dir / "vocab.bin", out_of_vocab);
    check_error(dir / "vocab.bin", "token 50257 at position 42");
    write_raw_bin(dir / "raw_vocab.bin", out_of_vocab);
    check_error(dir / "raw_vocab.bin", "outside the vocabulary of 50257");
    CHECK(read_token_file(dir / "vocab.bin", 65536).size() == 100);  // fine for a larger vocabulary

    write_bytes(dir / "odd.bin", std::string(11, 'x'));
    check_error(dir / "odd.bin", "odd size");

    std::filesystem::create_directories(dir / "adir.bin");
    check_error(dir / "adir.bin", "is a directory");
}

TEST_CASE("data: token paths resolve as file, sorted glob, or directory by split") {
    TempDir dir;
    for (const char* name : {"d_train_000001.bin", "d_train_000000.bin", "d_val_000000.bin", "notes.txt"}) {
        write_shard(dir / name, sample_tokens(10));
    }
    CHECK(resolve_token_files(dir / "d_train_000000.bin") == std::vector<std::string>{dir / "d_train_000000.bin"});
    CHECK(resolve_token_files(dir / "d_train_*.bin") ==
          std::vector<std::string>{dir / "d_train_000000.bin", dir / "d_train_000001.bin"});
    CHECK(resolve_token_files(dir.path.string(), "val") == std::vector<std::string>{dir / "d_val_000000.bin"});
    CHECK(resolve_token_files(dir.path.string(), "train").size() == 2);

    std::string msg = error_of([&] { resolve_token_files(dir.path.string()); });
    CHECK(msg.find("both train and val") != std::string::npos);
    CHECK(msg.find(dir.path.string()) != std::string::npos);

    msg = error_of([&] { resolve_token_files(dir / "nothing_*.bin"); });
    CHECK(msg.find(dir / "nothing_*.bin") != std::string::npos);
    CHECK(msg.find("no token file matches") != std::string::npos);

    msg = error_of([&] { resolve_token_files(dir / "absent.bin"); });
    CHECK(msg.find(dir / "absent.bin") != std::string::npos);
    CHECK(msg.find("does not exist") != std::string::npos);

    TempDir nano;  // nanoGPT layout
    write_raw_bin(nano / "train.bin", sample_tokens(10));
    write_raw_bin(nano / "val.bin", sample_tokens(10));
    CHECK(resolve_token_files(nano.path.string(), "train") == std::vector<std::string>{nano / "train.bin"});
    msg = error_of([&] { resolve_token_files(nano.path.string(), "test"); });
    CHECK(msg.find("no test *.bin") != std::string::npos);
}
