#include "data/token_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace gpt {

static_assert(std::endian::native == std::endian::little,
              "token files are little-endian and read in place: a big-endian host needs byte swapping");

namespace {

int32_t header_int(const uint8_t* data, size_t index) {
    int32_t v;
    std::memcpy(&v, data + index * sizeof(int32_t), sizeof(v));
    return v;
}

bool has_bin_extension(const std::string& path) { return std::filesystem::path(path).extension() == ".bin"; }

// The first token >= vocab_size, or `count` when all are in range. The common case (all valid) is
// one parallel max-reduction over the mapped file.
size_t first_out_of_vocab(const uint16_t* tokens, size_t count, int vocab_size) {
    uint16_t max_token = 0;
#pragma omp parallel for reduction(max : max_token) schedule(static) if (count > (1u << 22))
    for (size_t i = 0; i < count; ++i) max_token = std::max(max_token, tokens[i]);
    if (static_cast<int>(max_token) < vocab_size) return count;
    return static_cast<size_t>(
        std::find_if(tokens, tokens + count, [&](uint16_t t) { return static_cast<int>(t) >= vocab_size; }) - tokens);
}

}  // namespace

TokenFileView::TokenFileView(const std::string& path, int vocab_size) : map_([&] {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail("token file " + path + " does not exist (check data.train_path / data.val_path, or run `gpt2 prepare`)");
    if (std::filesystem::is_directory(path, ec)) fail("token file " + path + " is a directory, expected a .bin file");
    return MappedFile(path);
}()) {
    const std::string where = "token file " + path;
    const uint8_t* data = map_.data();
    const size_t bytes = map_.size();
    if (bytes == 0) fail(where + " is empty (0 bytes); re-create it with `gpt2 prepare`");

    if (bytes >= sizeof(int32_t) && header_int(data, 0) == kShardMagic) {
        format_ = TokenFileFormat::Shard;
        if (bytes < kShardHeaderBytes) {
            fail(where + " is truncated: it starts with the llm.c shard magic but has " + std::to_string(bytes) +
                 " bytes, less than the 1024-byte header");
        }
        const int32_t version = header_int(data, 1);
        if (version != kShardVersion) {
            fail(where + " has shard version " + std::to_string(version) + ", only version " +
                 std::to_string(kShardVersion) + " (uint16 GPT-2 tokens) is supported");
        }
        const int32_t header_count = header_int(data, 2);
        if (header_count < 0) fail(where + " has a negative token count " + std::to_string(header_count) + " in its header");
        count_ = static_cast<size_t>(header_count);
        const size_t expected = kShardHeaderBytes + count_ * sizeof(uint16_t);
        if (bytes != expected) {
            fail(where + " is " + (bytes < expected ? "truncated" : "longer than its header says") + ": the header says " +
                 std::to_string(count_) + " tokens (" + std::to_string(expected) + " bytes) but the file has " +
                 std::to_string(bytes) + " bytes; re-create or re-download it");
        }
        if (count_ == 0) fail(where + " is an llm.c shard that holds no tokens");
        tokens_ = reinterpret_cast<const uint16_t*>(data + kShardHeaderBytes);
    } else if (has_bin_extension(path)) {
        format_ = TokenFileFormat::Raw;
        if (bytes % sizeof(uint16_t) != 0) {
            fail(where + " has an odd size (" + std::to_string(bytes) +
                 " bytes): a raw .bin file holds whole uint16 tokens, so it is truncated or not a token file");
        }
        count_ = bytes / sizeof(uint16_t);
        tokens_ = reinterpret_cast<const uint16_t*>(data);
    } else {
        int32_t first = 0;
        if (bytes >= sizeof(int32_t)) first = header_int(data, 0);
        fail(where + " has a bad magic number " + std::to_string(first) + " (an llm.c shard starts with " +
             std::to_string(kShardMagic) + "), and only files named *.bin are read as raw uint16 tokens");
    }

    const size_t bad = first_out_of_vocab(tokens_, count_, vocab_size);
    if (bad != count_) {
        fail(where + " holds token " + std::to_string(tokens_[bad]) + " at position " + std::to_string(bad) +
             ", outside the vocabulary of " + std::to_string(vocab_size) +
             " (made with another tokenizer, or not a token file)");
    }
}

std::vector<uint16_t> read_token_file(const std::string& path, int vocab_size) {
    TokenFileView view(path, vocab_size);
    return std::vector<uint16_t>(view.tokens(), view.tokens() + view.size());
}

void write_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
    if (tokens.empty()) fail("refusing to write " + path + ": a shard needs at least one token");
    if (tokens.size() > static_cast<size_t>(INT32_MAX)) {
        fail("cannot write " + path + ": " + std::to_string(tokens.size()) +
             " tokens do not fit a shard header's int32 count; use smaller shards");
    }
    int32_t header[kShardHeaderInts] = {};
    header[0] = kShardMagic;
    header[1] = kShardVersion;
    header[2] = static_cast<int32_t>(tokens.size());
    write_file_atomically(path, {std::string_view(reinterpret_cast<const char*>(header), sizeof(header)),
                                 std::string_view(reinterpret_cast<const char*>(tokens.data()),
                                                  tokens.size() * sizeof(uint16_t))});
}

void write_raw_bin(const std::string& path, const std::vector<uint16_t>& tokens) {
    if (tokens.empty()) fail("refusing to write " + path + ": a token file needs at least one token");
    write_file_atomically(path, {std::string_view(reinterpret_cast<const char*>(tokens.data()),
                                                  tokens.size() * sizeof(uint16_t))});
}

}  // namespace gpt
