// GPT-2 byte-level BPE tokenizer (encoder.json + vocab.bpe), SPEC §5.
//
// Behaviour worth knowing:
// - encode() treats "<|endoftext|>" in the text as ordinary text (like tiktoken's encode_ordinary);
//   insert eot() by id where a document boundary is meant.
// - Invalid UTF-8 never throws: the pre-tokeniser skips over bytes that are not valid UTF-8 and
//   each such run is BPE-encoded on its own from its raw bytes, so decode(encode(x)) == x holds for
//   every byte string.
// - decode() returns the raw bytes of the tokens, which may be partial UTF-8 sequences for a
//   token list that ends (or starts) in the middle of a character.
// - Thread-safe: encode() may be called from many threads at once (the word cache is locked).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace gpt {

class Tokenizer {
public:
    // Reads <dir>/encoder.json and <dir>/vocab.bpe; gpt::Error naming the file when one is
    // missing or malformed.
    static Tokenizer load(const std::string& dir);

    std::vector<int32_t> encode(std::string_view text) const;
    // Appends to `out` (avoids a copy when many documents go into one buffer).
    void encode_append(std::string_view text, std::vector<int32_t>& out) const;
    std::string decode(const std::vector<int32_t>& ids) const;
    std::string decode_token(int32_t id) const;

    int32_t eot() const;       // id of <|endoftext|> (50256 for GPT-2)
    int vocab_size() const;    // number of ids (50257 for GPT-2)

    struct Impl;

private:
    explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
    std::shared_ptr<const Impl> impl_;
};

}  // namespace gpt
