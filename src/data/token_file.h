// Token files on disk (SPEC §5), two formats, told apart by content:
//
// - llm.c shard: 256 little-endian int32 header ([0] = 20240520 magic, [1] = 1 version,
//   [2] = token count, rest 0), then `count` little-endian uint16 tokens. llm.c names these
//   `*.bin` (fineweb_train_000001.bin) and so do we (`<name>_train_000000.bin`).
// - raw: headerless little-endian uint16 tokens (nanoGPT's train.bin / val.bin); only read from
//   files whose name ends in ".bin".
//
// A file whose first int32 is the magic is a shard, whatever its name. A raw file is misread as a
// shard only if it starts with tokens 39896, 309 (the magic's two halves) *and* then passes the
// version and size checks, which does not happen by accident; a raw file that starts with those
// two tokens is reported as a corrupt shard rather than silently misread.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/file_util.h"

namespace gpt {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr size_t kShardHeaderInts = 256;
constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);
constexpr int kGpt2VocabSize = 50257;

enum class TokenFileFormat { Shard, Raw };

// A validated, memory-mapped token file: the tokens are read in place, never copied.
class TokenFileView {
public:
    // Opens and validates `path` (format, header, size, every token < vocab_size); gpt::Error naming
    // the file and the problem otherwise.
    explicit TokenFileView(const std::string& path, int vocab_size = kGpt2VocabSize);

    const uint16_t* tokens() const { return tokens_; }
    size_t size() const { return count_; }
    TokenFileFormat format() const { return format_; }
    const std::string& path() const { return map_.path(); }

private:
    MappedFile map_;
    const uint16_t* tokens_ = nullptr;
    size_t count_ = 0;
    TokenFileFormat format_ = TokenFileFormat::Shard;
};

// The tokens of a shard or raw .bin file (see above), validated the same way.
std::vector<uint16_t> read_token_file(const std::string& path, int vocab_size = kGpt2VocabSize);

// Atomic writes (temporary file in the same folder, fsync, rename).
void write_shard(const std::string& path, const std::vector<uint16_t>& tokens);
void write_raw_bin(const std::string& path, const std::vector<uint16_t>& tokens);

}  // namespace gpt
