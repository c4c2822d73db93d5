// Helpers shared by the data tests: the GPT-2 tokenizer from assets/, temporary folders.
#pragma once
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <random>
#include <string>

#include "common/error.h"
#include "data/tokenizer.h"

namespace gpt::test {

inline std::string tokenizer_dir() { return std::string(GPT_SOURCE_DIR) + "/assets/gpt2"; }

// Loaded once per test run. The assets are not in git: a missing folder is a failure with the fix,
// never a silent skip.
inline const Tokenizer& gpt2_tokenizer() {
    static const Tokenizer tokenizer = [] {
        const std::string dir = tokenizer_dir();
        if (!std::filesystem::exists(dir + "/encoder.json") || !std::filesystem::exists(dir + "/vocab.bpe")) {
            FAIL("GPT-2 tokenizer files missing in " << dir << ": run tools/fetch_assets.sh");
        }
        return Tokenizer::load(dir);
    }();
    return tokenizer;
}

// The message of the gpt::Error that `f` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

// A fresh directory under the system temp folder, removed with everything in it at scope exit.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::random_device rd;
        path = std::filesystem::temp_directory_path() / ("gpt_data_test_" + std::to_string(rd()) + std::to_string(rd()));
        std::filesystem::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string operator/(const std::string& name) const { return (path / name).string(); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

}  // namespace gpt::test
