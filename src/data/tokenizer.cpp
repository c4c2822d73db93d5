#include "data/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "data/file_util.h"

namespace gpt {

namespace {

// GPT-2's pre-tokenisation pattern (openai/gpt-2 encoder.py), case-sensitive like the original.
constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2 writes each byte as a printable code point in its files: bytes that are printable Latin-1
// stand for themselves, the rest are shifted to 256 and up in byte order.
std::array<uint32_t, 256> byte_to_codepoint() {
    std::array<uint32_t, 256> table{};
    uint32_t shifted = 256;
    for (uint32_t b = 0; b < 256; ++b) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        table[b] = printable ? b : shifted++;
    }
    return table;
}

// Decodes a token as written in encoder.json / vocab.bpe back to its raw bytes; false when the
// string holds a code point that is not part of the byte mapping (a corrupt file).
bool file_string_to_bytes(std::string_view s, const std::array<int, 324>& byte_of, std::string& out) {
    out.clear();
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        uint32_t cp;
        size_t len;
        if (c < 0x80) { cp = c; len = 1; }
        else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; len = 2; }
        else return false;  // the mapping only uses code points below 0x800
        if (i + len > s.size()) return false;
        for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
        if (cp >= byte_of.size() || byte_of[cp] < 0) return false;
        out.push_back(static_cast<char>(byte_of[cp]));
        i += len;
    }
    return true;
}

struct TransparentHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using WordMap = std::unordered_map<std::string, std::vector<int32_t>, TransparentHash, std::equal_to<>>;

uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Merge {
    int32_t rank;
    int32_t merged;
};

struct PatternDeleter {
    void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
    void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

}  // namespace

struct Tokenizer::Impl {
    std::vector<std::string> token_bytes;          // id -> raw bytes
    std::array<int32_t, 256> byte_token{};         // byte -> id of the one-byte token
    std::unordered_map<uint64_t, Merge> merges;    // (left id, right id) -> rank, merged id
    int32_t eot = -1;
    std::unique_ptr<pcre2_code, PatternDeleter> pattern;

    // Words already encoded; sharded so OpenMP threads rarely wait on each other. Bounded: a shard
    // that grows past kShardCapacity is cleared (plain text has far fewer distinct words).
    static constexpr size_t kShards = 64;
    static constexpr size_t kShardCapacity = 1 << 15;
    struct CacheShard {
        std::mutex mutex;
        WordMap words;
    };
    mutable std::array<CacheShard, kShards> cache;

    void bpe(std::string_view word, std::vector<int32_t>& out) const;
    void encode_word(std::string_view word, std::vector<int32_t>& out) const;
};

// Byte-pair merging with the lowest-rank adjacent pair first, leftmost on ties (what tiktoken and
// GPT-2's encoder.py compute), in O(n log n) over a linked list so that long words stay cheap.
void Tokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& out) const {
    const int n = static_cast<int>(word.size());
    std::vector<int32_t> id(n);
    std::vector<int> next(n), prev(n);
    std::vector<bool> alive(n, true);
    for (int i = 0; i < n; ++i) {
        id[i] = byte_token[static_cast<unsigned char>(word[i])];
        next[i] = i + 1 < n ? i + 1 : -1;
        prev[i] = i - 1;
    }
    struct Candidate {
        int32_t rank;
        int pos;
        int32_t left, right;
        bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    auto push_pair = [&](int pos) {
        if (pos < 0 || next[pos] < 0) return;
        auto it = merges.find(pair_key(id[pos], id[next[pos]]));
        if (it != merges.end()) heap.push({it->second.rank, pos, id[pos], id[next[pos]]});
    };
    for (int i = 0; i + 1 < n; ++i) push_pair(i);
    while (!heap.empty()) {
        const Candidate c = heap.top();
        heap.pop();
        // Stale entries: a token only ever grows, so unchanged ids mean the pair is still there.
        if (!alive[c.pos] || id[c.pos] != c.left || next[c.pos] < 0 || id[next[c.pos]] != c.right) continue;
        const int right = next[c.pos];
        id[c.pos] = merges.at(pair_key(c.left, c.right)).merged;
        alive[right] = false;
        next[c.pos] = next[right];
        if (next[right] >= 0) prev[next[right]] = c.pos;
        push_pair(prev[c.pos]);
        push_pair(c.pos);
    }
    for (int i = 0; i >= 0 && i < n; i = next[i]) out.push_back(id[i]);
}

void Tokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (word.size() == 1) {
        out.push_back(byte_token[static_cast<unsigned char>(word[0])]);
        return;
    }
    const size_t hash = TransparentHash{}(word);
    CacheShard& shard = cache[hash % kShards];
    {
        std::lock_guard lock(shard.mutex);
        auto it = shard.words.find(word);
        if (it != shard.words.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    std::vector<int32_t> ids;
    bpe(word, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard lock(shard.mutex);
    if (shard.words.size() >= kShardCapacity) shard.words.clear();
    shard.words.emplace(std::string(word), std::move(ids));
}

Tokenizer Tokenizer::load(const std::string& dir) {
    const std::string encoder_path = dir + "/encoder.json";
    const std::string vocab_path = dir + "/vocab.bpe";
    const std::string fix = " (run tools/fetch_assets.sh, or set data.tokenizer_dir to a folder with "
                            "GPT-2's encoder.json and vocab.bpe)";
    auto impl = std::make_shared<Impl>();

    const auto to_cp = byte_to_codepoint();
    std::array<int, 324> byte_of;
    byte_of.fill(-1);
    for (int b = 0; b < 256; ++b) byte_of[to_cp[b]] = b;

    // encoder.json: {"token as mapped string": id, ...}
    nlohmann::json encoder;
    try {
        encoder = nlohmann::json::parse(read_whole_file(encoder_path, "tokenizer file"));
    } catch (const nlohmann::json::exception& e) {
        fail("tokenizer file " + encoder_path + " is not valid JSON: " + e.what() + fix);
    } catch (const Error& e) {
        fail(e.what() + fix);
    }
    if (!encoder.is_object() || encoder.empty()) {
        fail("tokenizer file " + encoder_path + " must be a JSON object mapping tokens to ids" + fix);
    }
    impl->token_bytes.assign(encoder.size(), std::string());
    std::vector<bool> seen(encoder.size(), false);
    std::unordered_map<std::string, int32_t> id_of_bytes;
    std::string bytes;
    for (const auto& [key, value] : encoder.items()) {
        if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
            value.get<int64_t>() >= static_cast<int64_t>(encoder.size())) {
            fail("tokenizer file " + encoder_path + ": token '" + key + "' has id " + value.dump() +
                 ", expected an integer in [0, " + std::to_string(encoder.size()) + ")" + fix);
        }
        const auto id = value.get<int32_t>();
        if (seen[id]) fail("tokenizer file " + encoder_path + ": id " + std::to_string(id) + " is used twice" + fix);
        seen[id] = true;
        if (key == "<|endoftext|>") {
            impl->eot = id;
            impl->token_bytes[id] = key;
            continue;
        }
        if (!file_string_to_bytes(key, byte_of, bytes)) {
            fail("tokenizer file " + encoder_path + ": token '" + key +
                 "' is not in GPT-2's byte-to-unicode alphabet" + fix);
        }
        impl->token_bytes[id] = bytes;
        id_of_bytes.emplace(bytes, id);
    }
    if (impl->eot < 0) fail("tokenizer file " + encoder_path + " has no <|endoftext|> token" + fix);
    for (int b = 0; b < 256; ++b) {
        auto it = id_of_bytes.find(std::string(1, static_cast<char>(b)));
        if (it == id_of_bytes.end()) {
            fail("tokenizer file " + encoder_path + " lacks the one-byte token for byte " + std::to_string(b) + fix);
        }
        impl->byte_token[b] = it->second;
    }

    // vocab.bpe: a "#version" line, then one merge per line, "left right", in rank order.
    const std::string vocab = read_whole_file(vocab_path, "tokenizer file");
    size_t pos = 0;
    int line_no = 0;
    int32_t rank = 0;
    std::string left_bytes, right_bytes;
    while (pos < vocab.size()) {
        size_t end = vocab.find('\n', pos);
        if (end == std::string::npos) end = vocab.size();
        std::string_view line(vocab.data() + pos, end - pos);
        pos = end + 1;
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
        const std::string where = "tokenizer file " + vocab_path + ":" + std::to_string(line_no);
        const size_t space = line.find(' ');
        if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
            line.find(' ', space + 1) != std::string_view::npos) {
            fail(where + ": expected two tokens separated by one space, got '" + std::string(line) + "'" + fix);
        }
        if (!file_string_to_bytes(line.substr(0, space), byte_of, left_bytes) ||
            !file_string_to_bytes(line.substr(space + 1), byte_of, right_bytes)) {
            fail(where + ": '" + std::string(line) + "' is not in GPT-2's byte-to-unicode alphabet" + fix);
        }
        auto left = id_of_bytes.find(left_bytes), right = id_of_bytes.find(right_bytes);
        auto merged = id_of_bytes.find(left_bytes + right_bytes);
        if (left == id_of_bytes.end() || right == id_of_bytes.end() || merged == id_of_bytes.end()) {
            fail(where + ": merge '" + std::string(line) + "' uses or makes a token missing from " +
                 encoder_path + " (the two files do not belong together)" + fix);
        }
        impl->merges.emplace(pair_key(left->second, right->second), Merge{rank++, merged->second});
    }
    if (impl->merges.empty()) fail("tokenizer file " + vocab_path + " holds no merges" + fix);

    int err = 0;
    PCRE2_SIZE err_offset = 0;
    impl->pattern.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_offset,
                                      nullptr));
    if (!impl->pattern) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(err, message, sizeof(message));
        fail(std::string("tokenizer: PCRE2 cannot compile GPT-2's pattern: ") + reinterpret_cast<char*>(message));
    }
    pcre2_jit_compile(impl->pattern.get(), PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
    return Tokenizer(std::move(impl));
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
    const Impl& im = *impl_;
    std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(
        pcre2_match_data_create_from_pattern(im.pattern.get(), nullptr));
    if (!match) fail("tokenizer: out of memory for PCRE2 match data");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t offset = 0;
    while (offset < text.size()) {
        const int rc = pcre2_match(im.pattern.get(), subject, text.size(), offset, 0, match.get(), nullptr);
        size_t start = text.size(), end = text.size();
        if (rc >= 0) {
            const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
            start = ovector[0];
            end = ovector[1];
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(rc, message, sizeof(message));
            fail(std::string("tokenizer: PCRE2 match failed: ") + reinterpret_cast<char*>(message));
        }
        // Bytes the pattern stepped over are invalid UTF-8: encode them as a word of their own.
        if (start > offset) im.encode_word(text.substr(offset, start - offset), out);
        if (end == start && start < text.size()) end = start + 1;  // no empty matches; never loop
        if (end > start) im.encode_word(text.substr(start, end - start), out);
        offset = end;
    }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 1);
    encode_append(text, ids);
    return ids;
}

std::string Tokenizer::decode_token(int32_t id) const {
    if (id < 0 || id >= vocab_size()) {
        fail("tokenizer: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
             std::to_string(vocab_size()) + ")");
    }
    return impl_->token_bytes[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
    std::string text;
    for (int32_t id : ids) {
        if (id < 0 || id >= vocab_size()) decode_token(id);  // throws with the message
        text += impl_->token_bytes[id];
    }
    return text;
}

int32_t Tokenizer::eot() const { return impl_->eot; }
int Tokenizer::vocab_size() const { return static_cast<int>(impl_->token_bytes.size()); }

}  // namespace gpt
