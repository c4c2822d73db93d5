#include "data/loader.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"
#include "common/rng.h"
#include "data/token_source.h"

namespace gpt {

namespace {

// Uniform in [0, n) from 64 random bits (multiply-high: no modulo, identical on every platform).
uint64_t bounded(uint64_t bits, uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
}

std::string describe(const std::vector<std::string>& files) {
    if (files.size() == 1) return files[0];
    return std::to_string(files.size()) + " files (" + files.front() + " ... " + files.back() + ")";
}

}  // namespace

TokenLoader::TokenLoader(const std::string& path_or_pattern, int B, int T, uint64_t seed, int rank, int world,
                         int vocab_size)
    : TokenLoader(resolve_token_files(path_or_pattern), B, T, seed, rank, world, vocab_size) {}

TokenLoader::TokenLoader(const std::vector<std::string>& files, int B, int T, uint64_t seed, int rank, int world,
                         int vocab_size)
    : paths_(files), B_(B), T_(T), rank_(rank), world_(world), seed_(seed) {
    GPT_CHECK(B > 0 && T > 0, "data loader: batch size B and sequence length T must be positive (got B=" +
                                  std::to_string(B) + ", T=" + std::to_string(T) + ")");
    GPT_CHECK(world > 0 && rank >= 0 && rank < world,
              "data loader: rank " + std::to_string(rank) + " is not in [0, world=" + std::to_string(world) + ")");
    GPT_CHECK(!files.empty(), "data loader: no token files given");
    files_.reserve(files.size());
    window_start_.reserve(files.size());
    for (const auto& path : files) {
        files_.emplace_back(path, vocab_size);
        const size_t n = files_.back().size();
        num_tokens_ += n;
        window_start_.push_back(total_windows_);
        total_windows_ += n > static_cast<size_t>(T) ? (n - 1) / static_cast<size_t>(T) : 0;
    }
    GPT_CHECK(total_windows_ < (uint64_t{1} << 32),
              "data loader: " + describe(files) + " has more than 2^32 windows of T+1 tokens; use a longer T");
    const uint64_t per_rank = total_windows_ / static_cast<uint64_t>(world);
    batches_per_epoch_ = static_cast<size_t>(per_rank / static_cast<uint64_t>(B));
    if (batches_per_epoch_ == 0) {
        fail("data " + describe(files) + " is too small: " + std::to_string(num_tokens_) + " tokens make " +
             std::to_string(total_windows_) + " windows of T+1=" + std::to_string(T + 1) +
             " tokens, but one batch needs B=" + std::to_string(B) + " windows on each of " +
             std::to_string(world) + " rank(s), " + std::to_string(static_cast<uint64_t>(B) * world) +
             " in all; use more data or a smaller batch_size / seq_len");
    }
    shuffle_for_epoch(0);
}

void TokenLoader::shuffle_for_epoch(uint64_t epoch) {
    if (order_epoch_ == epoch) return;
    order_.resize(total_windows_);
    std::iota(order_.begin(), order_.end(), 0u);
    Rng rng(mix64(seed_) ^ mix64(epoch ^ 0x6C6F61646572ull));  // "loader": keeps this stream apart
    for (uint64_t i = total_windows_; i > 1; --i) std::swap(order_[i - 1], order_[bounded(rng.next_u64(), i)]);
    order_epoch_ = epoch;
}

const uint16_t* TokenLoader::window(uint64_t index) const {
    // The file holding window `index`: the last file whose first window is <= index.
    const auto it = std::upper_bound(window_start_.begin(), window_start_.end(), index) - 1;
    const size_t file = static_cast<size_t>(it - window_start_.begin());
    return files_[file].tokens() + (index - *it) * static_cast<uint64_t>(T_);
}

void TokenLoader::next_batch(int32_t* inputs, int32_t* targets) {
    if (cursor_ >= batches_per_epoch_) {
        ++epoch_;
        cursor_ = 0;
    }
    shuffle_for_epoch(epoch_);
    const size_t T = static_cast<size_t>(T_);
    for (size_t b = 0; b < static_cast<size_t>(B_); ++b) {
        const uint64_t position = (cursor_ * B_ + b) * world_ + rank_;
        const uint16_t* tokens = window(order_[position]);
        for (size_t t = 0; t < T; ++t) {
            inputs[b * T + t] = tokens[t];
            targets[b * T + t] = tokens[t + 1];
        }
    }
    ++cursor_;
}

void TokenLoader::restore(const State& state) {
    GPT_CHECK(state.cursor <= batches_per_epoch_,
              "data loader: the saved position (epoch " + std::to_string(state.epoch) + ", batch " +
                  std::to_string(state.cursor) + ") is past the " + std::to_string(batches_per_epoch_) +
                  " batches per epoch of " + describe(paths_) +
                  "; the data or batch shape changed since the checkpoint was written");
    epoch_ = state.epoch;
    cursor_ = state.cursor;
    shuffle_for_epoch(epoch_);
}

void TokenLoader::reset() { restore(State{0, 0}); }

}  // namespace gpt
