// GPT-2 tokenizer: exact agreement with js-tiktoken's golden encodings, lossless round trips,
// errors that name the broken file.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "common/error.h"
#include "data/file_util.h"
#include "test_data_util.h"

using gpt::Tokenizer;
using gpt::test::error_of;
using gpt::test::gpt2_tokenizer;

namespace {

const std::string kGoldenDir = std::string(GPT_SOURCE_DIR) + "/tests/golden";

nlohmann::json golden() {
    return nlohmann::json::parse(gpt::read_whole_file(kGoldenDir + "/tokenizer_golden.json", "golden file"));
}

void write(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

TEST_CASE("tokenizer: GPT-2 constants") {
    const Tokenizer& tok = gpt2_tokenizer();
    CHECK(tok.vocab_size() == 50257);
    CHECK(tok.eot() == 50256);
    CHECK(tok.decode_token(tok.eot()) == "<|endoftext|>");
    CHECK(tok.decode_token(0) == "!");
    CHECK(tok.decode_token(220) == " ");
    CHECK(tok.decode_token(198) == "\n");
    CHECK(tok.encode("Hello world") == std::vector<int32_t>{15496, 995});
}

TEST_CASE("tokenizer: golden multi-paragraph text matches js-tiktoken exactly") {
    const Tokenizer& tok = gpt2_tokenizer();
    const auto g = golden();
    REQUIRE(g["files"].size() >= 1);
    for (const auto& file : g["files"]) {
        const std::string text = gpt::read_whole_file(kGoldenDir + "/" + file["file"].get<std::string>(), "golden text");
        REQUIRE(text.size() == file["bytes"].get<size_t>());
        const auto want = file["tokens"].get<std::vector<int32_t>>();
        const auto got = tok.encode(text);
        REQUIRE(got.size() == want.size());
        for (size_t i = 0; i < want.size(); ++i) {
            INFO("token " << i << " (" << tok.decode_token(want[i]) << ")");
            REQUIRE(got[i] == want[i]);
        }
        CHECK(tok.decode(got) == text);
    }
}

TEST_CASE("tokenizer: golden edge strings match js-tiktoken exactly") {
    const Tokenizer& tok = gpt2_tokenizer();
    const auto g = golden();
    REQUIRE(g["cases"].size() >= 10);
    for (const auto& c : g["cases"]) {
        const std::string text = c["text"].get<std::string>();
        INFO("case '" << c["name"].get<std::string>() << "'");
        CHECK(tok.encode(text) == c["tokens"].get<std::vector<int32_t>>());
        CHECK(tok.decode(tok.encode(text)) == text);
    }
}

TEST_CASE("tokenizer: <|endoftext|> in text is ordinary text, eot only by id") {
    const Tokenizer& tok = gpt2_tokenizer();
    const auto ids = tok.encode("<|endoftext|>");
    CHECK(ids.size() > 1);
    CHECK(std::find(ids.begin(), ids.end(), tok.eot()) == ids.end());
    CHECK(tok.decode({tok.eot()}) == "<|endoftext|>");
}

TEST_CASE("tokenizer: invalid UTF-8 and arbitrary bytes round-trip without throwing") {
    const Tokenizer& tok = gpt2_tokenizer();
    const std::vector<std::string> samples = {
        std::string("\xff\xfe", 2), std::string("abc\x80" "def", 7), std::string("caf\xc3", 4),
        std::string("\xe4\xb8", 2) + " x", std::string("a\0b", 3), std::string("\xed\xa0\x80", 3),
    };
    for (const auto& s : samples) {
        std::vector<int32_t> ids;
        REQUIRE_NOTHROW(ids = tok.encode(s));
        CHECK(tok.decode(ids) == s);
    }
    std::mt19937 rng(7);
    for (int round = 0; round < 50; ++round) {
        std::string s(1 + rng() % 200, '\0');
        for (char& ch : s) ch = static_cast<char>(rng() & 0xFF);
        CHECK(tok.decode(tok.encode(s)) == s);
    }
    // An invalid byte between words becomes a word of its own; the words around it are unchanged.
    const auto left = tok.encode("Hello there"), right = tok.encode(" world");
    auto joined = left;
    joined.insert(joined.end(), right.begin(), right.end());
    const auto with_byte = tok.encode(std::string("Hello there\xff world"));
    CHECK(with_byte.size() == joined.size() + 1);
    CHECK(tok.decode(with_byte) == std::string("Hello there\xff world"));
}

TEST_CASE("tokenizer: long words and whitespace runs are fast and exact") {
    const Tokenizer& tok = gpt2_tokenizer();
    const std::string spaces(100000, ' ');
    const auto ids = tok.encode("a" + spaces + "b");
    CHECK(tok.decode(ids) == "a" + spaces + "b");
    std::string letters;
    for (int i = 0; i < 100000; ++i) letters.push_back(static_cast<char>('a' + (i * 7) % 26));
    CHECK(tok.decode(tok.encode(letters)) == letters);
}

TEST_CASE("tokenizer: concurrent encodes agree with a serial encode") {
    const Tokenizer& tok = gpt2_tokenizer();
    const std::string text = gpt::read_whole_file(kGoldenDir + "/tokenizer_text.txt", "golden text");
    const auto want = tok.encode(text);
    std::vector<std::vector<int32_t>> got(4);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int r = 0; r < 20; ++r) got[t] = tok.encode(text);
        });
    }
    for (auto& th : threads) th.join();
    for (const auto& g : got) CHECK(g == want);
}

TEST_CASE("tokenizer: decode rejects ids outside the vocabulary") {
    const Tokenizer& tok = gpt2_tokenizer();
    CHECK(error_of([&] { tok.decode_token(50257); }).find("50257") != std::string::npos);
    CHECK(error_of([&] { tok.decode({1, -3}); }).find("-3") != std::string::npos);
}

TEST_CASE("tokenizer: missing or corrupt files give errors naming the file and the fix") {
    gpt::test::TempDir dir;
    std::string msg = error_of([&] { Tokenizer::load(dir.path.string()); });
    CHECK(msg.find("encoder.json") != std::string::npos);
    CHECK(msg.find("cannot be opened") != std::string::npos);
    CHECK(msg.find("fetch_assets.sh") != std::string::npos);

    const std::string real_encoder =
        gpt::read_whole_file(gpt::test::tokenizer_dir() + "/encoder.json", "encoder");
    const std::string real_vocab = gpt::read_whole_file(gpt::test::tokenizer_dir() + "/vocab.bpe", "vocab");

    write(dir / "encoder.json", real_encoder.substr(0, 1000));  // truncated
    write(dir / "vocab.bpe", real_vocab);
    msg = error_of([&] { Tokenizer::load(dir.path.string()); });
    CHECK(msg.find(dir / "encoder.json") != std::string::npos);
    CHECK(msg.find("not valid JSON") != std::string::npos);

    write(dir / "encoder.json", R"({"a": 0, "b": 0})");
    msg = error_of([&] { Tokenizer::load(dir.path.string()); });
    CHECK(msg.find("used twice") != std::string::npos);

    write(dir / "encoder.json", real_encoder);
    write(dir / "vocab.bpe", "#version: 0.2\nĠ t\nĠt\n");
    msg = error_of([&] { Tokenizer::load(dir.path.string()); });
    CHECK(msg.find(dir / "vocab.bpe" + ":3") != std::string::npos);
    CHECK(msg.find("two tokens") != std::string::npos);

    write(dir / "vocab.bpe", "#version: 0.2\nĠ t\nq zzzzzzzzzz\n");
    msg = error_of([&] { Tokenizer::load(dir.path.string()); });
    CHECK(msg.find(dir / "vocab.bpe" + ":3") != std::string::npos);
    CHECK(msg.find("do not belong together") != std::string::npos);

    std::remove((dir / "vocab.bpe").c_str());
    msg = error_of([&] { Tokenizer::load(dir.path.string()); });
    CHECK(msg.find(dir / "vocab.bpe") != std::string::npos);
}
