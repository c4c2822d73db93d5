#include "data/prepare.h"

#include <glob.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "data/file_util.h"
#include "data/token_file.h"
#include "data/tokenizer.h"

namespace gpt {

namespace fs = std::filesystem;

namespace {

constexpr size_t kChunkBytes = size_t{64} << 20;  // text tokenized per parallel round

bool is_text_input(const fs::path& p) { return p.extension() == ".txt" || p.extension() == ".jsonl"; }

// Expands directories (their .txt / .jsonl files) and glob patterns, each sorted by name.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
    if (inputs.empty()) fail("prepare: no input files given (pass .txt or .jsonl files, a directory or a pattern)");
    std::vector<std::string> files;
    for (const auto& input : inputs) {
        std::vector<std::string> found;
        std::error_code ec;
        if (input.find_first_of("*?[") != std::string::npos) {
            glob_t g{};
            if (::glob(input.c_str(), 0, nullptr, &g) == 0) {
                for (size_t i = 0; i < g.gl_pathc; ++i) found.emplace_back(g.gl_pathv[i]);
            }
            ::globfree(&g);
            if (found.empty()) fail("prepare: no input file matches the pattern '" + input + "'");
        } else if (fs::is_directory(input, ec)) {
            for (const auto& entry : fs::directory_iterator(input)) {
                if (entry.is_regular_file() && is_text_input(entry.path())) found.push_back(entry.path().string());
            }
            if (found.empty()) fail("prepare: input directory '" + input + "' has no .txt or .jsonl files");
        } else if (!fs::exists(input, ec)) {
            fail("prepare: input file " + input + " does not exist");
        } else {
            found.push_back(input);
        }
        std::sort(found.begin(), found.end());
        for (const auto& f : found) {
            if (!is_text_input(f)) {
                fail("prepare: input " + f + " is neither .txt (one document) nor .jsonl (one JSON document per line)");
            }
        }
        files.insert(files.end(), found.begin(), found.end());
    }
    return files;
}

// Reads documents from the input files in order, a bounded chunk at a time.
class DocumentStream {
public:
    DocumentStream(std::vector<std::string> files, std::string text_field)
        : files_(std::move(files)), field_(std::move(text_field)) {}

    // Fills `docs` with the next documents (about max_bytes of text, at least one); false at the end.
    bool next_chunk(std::vector<std::string>& docs, size_t max_bytes) {
        docs.clear();
        size_t bytes = 0;
        std::string doc;
        while (bytes < max_bytes && next_document(doc)) {
            bytes += doc.size();
            docs.push_back(std::move(doc));
        }
        return !docs.empty();
    }

private:
    bool next_document(std::string& doc) {
        while (file_ < files_.size()) {
            const std::string& path = files_[file_];
            if (fs::path(path).extension() == ".txt") {
                doc = read_whole_file(path, "prepare: input file");
                ++file_;
                return true;
            }
            if (!jsonl_.is_open()) {
                jsonl_.open(path, std::ios::binary);
                if (!jsonl_) fail("prepare: input file " + path + " cannot be opened");
                line_no_ = 0;
            }
            std::string line;
            while (std::getline(jsonl_, line)) {
                ++line_no_;
                if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
                doc = text_of_line(line, path);
                return true;
            }
            if (jsonl_.bad()) fail("prepare: reading " + path + " failed at line " + std::to_string(line_no_ + 1));
            jsonl_.close();
            ++file_;
        }
        return false;
    }

    std::string text_of_line(const std::string& line, const std::string& path) const {
        const std::string where = "prepare: " + path + ":" + std::to_string(line_no_);
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
            fail(where + ": not valid JSON (" + e.what() + "); a .jsonl file holds one JSON object per line");
        }
        if (!j.is_object() || !j.contains(field_) || !j[field_].is_string()) {
            fail(where + ": no string field '" + field_ + "' in this JSON line (choose the field with the text field option)");
        }
        return j[field_].get<std::string>();
    }

    std::vector<std::string> files_;
    std::string field_;
    size_t file_ = 0;
    std::ifstream jsonl_;
    size_t line_no_ = 0;
};

// Accumulates tokens and writes `<name>_<split>_NNNNNN.bin` shards of shard_tokens tokens.
class ShardWriter {
public:
    ShardWriter(std::string dir, std::string name, std::string split, size_t shard_tokens)
        : dir_(std::move(dir)), name_(std::move(name)), split_(std::move(split)), shard_tokens_(shard_tokens) {}

    void add(const std::vector<int32_t>& tokens) {
        for (int32_t t : tokens) buffer_.push_back(static_cast<uint16_t>(t));
        while (buffer_.size() >= shard_tokens_) {
            std::vector<uint16_t> rest(buffer_.begin() + static_cast<std::ptrdiff_t>(shard_tokens_), buffer_.end());
            buffer_.resize(shard_tokens_);
            flush();
            buffer_ = std::move(rest);
        }
    }
    void finish() {
        if (!buffer_.empty()) flush();
        remove_stale_shards();
    }
    const std::vector<std::string>& written() const { return written_; }

private:
    std::string shard_name(size_t index) const {
        char number[16];
        std::snprintf(number, sizeof(number), "%06zu", index);
        return name_ + "_" + split_ + "_" + number + ".bin";
    }
    void flush() {
        const std::string path = (fs::path(dir_) / shard_name(written_.size())).string();
        write_shard(path, buffer_);
        written_.push_back(path);
        buffer_.clear();
    }
    // Shards with a higher number than this run wrote are from an earlier, larger run.
    void remove_stale_shards() const {
        for (size_t index = written_.size();; ++index) {
            std::error_code ec;
            if (!fs::remove(fs::path(dir_) / shard_name(index), ec)) break;
        }
    }

    std::string dir_, name_, split_;
    size_t shard_tokens_;
    std::vector<uint16_t> buffer_;
    std::vector<std::string> written_;
};

void check_options(const PrepareOptions& o) {
    GPT_CHECK(!o.out_dir.empty(), "prepare: no output directory given");
    GPT_CHECK(!o.name.empty() && o.name.find('/') == std::string::npos,
              "prepare: the dataset name '" + o.name + "' must be non-empty and contain no '/'");
    GPT_CHECK(o.val_fraction >= 0.0 && o.val_fraction < 1.0,
              "prepare: val_fraction " + std::to_string(o.val_fraction) + " must be in [0, 1)");
    GPT_CHECK(o.shard_tokens > 0 && o.shard_tokens <= static_cast<size_t>(INT32_MAX),
              "prepare: shard_tokens " + std::to_string(o.shard_tokens) + " must be in [1, 2^31)");
    GPT_CHECK(!o.text_field.empty(), "prepare: the JSONL text field name is empty");
}

}  // namespace

PrepareReport prepare_dataset(const PrepareOptions& options) {
    const auto start = std::chrono::steady_clock::now();
    check_options(options);
    PrepareReport report;
    report.input_files = expand_inputs(options.inputs);
    const Tokenizer tokenizer = Tokenizer::load(options.tokenizer_dir);
    GPT_CHECK(tokenizer.vocab_size() <= 65536, "prepare: the tokenizer's " + std::to_string(tokenizer.vocab_size()) +
                                                   " ids do not fit the shards' uint16 tokens");
    std::error_code ec;
    fs::create_directories(options.out_dir, ec);
    if (ec) fail("prepare: cannot create the output directory " + options.out_dir + ": " + ec.message());

    ShardWriter val(options.out_dir, options.name, "val", options.shard_tokens);
    ShardWriter train(options.out_dir, options.name, "train", options.shard_tokens);
    DocumentStream stream(report.input_files, options.text_field);
    const double f = options.val_fraction;
    std::vector<std::string> docs;
    std::vector<std::vector<int32_t>> tokens;
    while (stream.next_chunk(docs, kChunkBytes)) {
        tokens.assign(docs.size(), {});
        std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t i = 0; i < docs.size(); ++i) {
            try {
                tokens[i].reserve(docs[i].size() / 3 + 2);
                tokens[i].push_back(tokenizer.eot());
                tokenizer.encode_append(docs[i], tokens[i]);
            } catch (...) {
#pragma omp critical(prepare_error)
                if (!error) error = std::current_exception();
            }
        }
        if (error) std::rethrow_exception(error);
        for (size_t i = 0; i < docs.size(); ++i) {
            report.text_bytes += docs[i].size();
            if (docs[i].empty()) {
                ++report.empty_documents;
                continue;
            }
            const auto n = static_cast<double>(report.documents++);
            const bool to_val = std::ceil((n + 1) * f) > std::ceil(n * f);
            (to_val ? val : train).add(tokens[i]);
            (to_val ? report.val_documents : report.train_documents)++;
            (to_val ? report.val_tokens : report.train_tokens) += tokens[i].size();
        }
    }
    if (report.documents == 0) fail("prepare: the inputs hold no non-empty documents");
    if (report.train_documents == 0) {
        fail("prepare: all " + std::to_string(report.documents) + " documents went to validation (val_fraction " +
             std::to_string(f) + "); give more documents or a smaller val_fraction");
    }
    val.finish();
    train.finish();
    report.val_shards = val.written();
    report.train_shards = train.written();
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
}

std::string describe(const PrepareReport& r) {
    std::ostringstream s;
    s << "input files: " << r.input_files.size() << " (" << r.text_bytes << " bytes of text)\n"
      << "documents: " << r.documents << " (train " << r.train_documents << ", val " << r.val_documents << ")";
    if (r.empty_documents > 0) s << ", " << r.empty_documents << " empty skipped";
    s << "\ntokens: train " << r.train_tokens << ", val " << r.val_tokens << " (one <|endoftext|> before each document)\n";
    for (const auto* shards : {&r.val_shards, &r.train_shards}) {
        if (shards->empty()) continue;
        s << "wrote " << shards->size() << " shard(s): " << shards->front();
        if (shards->size() > 1) s << " ... " << shards->back();
        s << "\n";
    }
    s << "time: " << r.seconds << " s";
    return s.str();
}

}  // namespace gpt
