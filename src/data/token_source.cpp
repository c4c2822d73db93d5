#include "data/token_source.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>

#include "common/error.h"

namespace gpt {

namespace fs = std::filesystem;

namespace {

const char* const kHowToMake =
    " (make shards with `gpt2 prepare`, or point data.train_path / data.val_path at existing llm.c shards)";

std::vector<std::string> glob_files(const std::string& pattern) {
    glob_t g{};
    const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    std::vector<std::string> files;
    if (rc == 0) {
        for (size_t i = 0; i < g.gl_pathc; ++i) {
            std::error_code ec;
            if (fs::is_regular_file(g.gl_pathv[i], ec)) files.emplace_back(g.gl_pathv[i]);
        }
    }
    ::globfree(&g);
    if (rc != 0 && rc != GLOB_NOMATCH) fail("cannot expand the data pattern '" + pattern + "' (read error)");
    if (files.empty()) fail("no token file matches the pattern '" + pattern + "'" + kHowToMake);
    std::sort(files.begin(), files.end());
    return files;
}

// True when `word` is one of the parts of the file's stem split at _ . or -.
bool name_has_part(const fs::path& file, const std::string& word) {
    const std::string stem = file.stem().string();
    size_t start = 0;
    while (start <= stem.size()) {
        size_t end = stem.find_first_of("_.-", start);
        if (end == std::string::npos) end = stem.size();
        if (stem.compare(start, end - start, word) == 0 && end - start == word.size()) return true;
        start = end + 1;
    }
    return false;
}

std::vector<std::string> directory_files(const std::string& dir, const std::string& split) {
    std::vector<fs::path> bins;
    for (const auto& entry : fs::directory_iterator(dir)) {
        if (entry.is_regular_file() && entry.path().extension() == ".bin") bins.push_back(entry.path());
    }
    std::vector<std::string> files;
    bool has_train = false, has_val = false;
    for (const auto& p : bins) {
        has_train |= name_has_part(p, "train");
        has_val |= name_has_part(p, "val");
        if (split.empty() || name_has_part(p, split)) files.push_back(p.string());
    }
    if (split.empty() && has_train && has_val) {
        fail("data directory '" + dir + "' holds both train and val token files; give a pattern instead, e.g. '" +
             (fs::path(dir) / "*_train_*.bin").string() + "'");
    }
    if (files.empty()) {
        fail("data directory '" + dir + "' has no " + (split.empty() ? "" : split + " ") + "*.bin token files" +
             kHowToMake);
    }
    std::sort(files.begin(), files.end());
    return files;
}

}  // namespace

std::vector<std::string> resolve_token_files(const std::string& path_or_pattern, const std::string& split) {
    if (path_or_pattern.empty()) fail("no data path given (set data.train_path and data.val_path)");
    if (path_or_pattern.find_first_of("*?[") != std::string::npos) return glob_files(path_or_pattern);
    std::error_code ec;
    if (fs::is_directory(path_or_pattern, ec)) return directory_files(path_or_pattern, split);
    if (!fs::exists(path_or_pattern, ec)) fail("token file " + path_or_pattern + " does not exist" + kHowToMake);
    return {path_or_pattern};
}

}  // namespace gpt
