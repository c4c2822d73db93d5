// Serves (inputs, targets) batches from token files, reproducibly from a seed.
//
// Order rule (docs/data.md): every file is cut into non-overlapping windows of T+1 tokens at
// stride T (window k of a file covers tokens [k*T, k*T + T]; windows never cross files; a file's
// last < T+1 tokens are unused). The windows of all files, in file order, are numbered 0..W-1.
// Each epoch visits them in a permutation drawn from (seed, epoch) (Fisher-Yates over gpt::mix64,
// the same on every platform). Position p of the permutation belongs to rank p % world, so ranks
// never share a window within an epoch; each rank gets floor(W / world) windows per epoch, of
// which it serves floor(that / B) full batches (the remainder is skipped for that epoch).
// Sample b of batch c on a rank is position (c * B + b) * world + rank.
// inputs[b*T + t] = window[t], targets[b*T + t] = window[t + 1].
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/token_file.h"

namespace gpt {

class TokenLoader {
public:
    // `path_or_pattern`: a file, a glob pattern or a directory, see data/token_source.h.
    TokenLoader(const std::string& path_or_pattern, int B, int T, uint64_t seed, int rank = 0, int world = 1,
                int vocab_size = kGpt2VocabSize);
    // The files themselves (e.g. from resolve_token_files(path, "train")).
    TokenLoader(const std::vector<std::string>& files, int B, int T, uint64_t seed, int rank = 0, int world = 1,
                int vocab_size = kGpt2VocabSize);

    // Writes B*T inputs and B*T targets (targets = inputs shifted by one); moves to the next
    // epoch (a new permutation) after the last full batch of an epoch.
    void next_batch(int32_t* inputs, int32_t* targets);

    // Where the loader is: `cursor` batches of epoch `epoch` have been served.
    struct State {
        uint64_t epoch = 0, cursor = 0;
    };
    State state() const { return {epoch_, cursor_}; }
    void restore(const State& state);  // continue exactly where state() was taken
    void reset();                      // back to epoch 0, cursor 0 (the same batches again)

    size_t num_tokens() const { return num_tokens_; }
    size_t num_windows() const { return total_windows_; }
    size_t batches_per_epoch() const { return batches_per_epoch_; }
    const std::vector<std::string>& files() const { return paths_; }

private:
    void shuffle_for_epoch(uint64_t epoch);
    const uint16_t* window(uint64_t index) const;

    std::vector<TokenFileView> files_;
    std::vector<std::string> paths_;
    std::vector<uint64_t> window_start_;  // first global window index of each file (prefix sums)
    int B_, T_, rank_, world_;
    uint64_t seed_;
    size_t num_tokens_ = 0;
    uint64_t total_windows_ = 0;
    size_t batches_per_epoch_ = 0;
    std::vector<uint32_t> order_;  // the permutation of window indices for epoch `order_epoch_`
    uint64_t order_epoch_ = UINT64_MAX;
    uint64_t epoch_ = 0, cursor_ = 0;
};

}  // namespace gpt
