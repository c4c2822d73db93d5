// Token shards for the GPU training tests (the GPU machine has no corpus): a learnable stream,
// a repeating pseudo-random sequence of 300 tokens, as <dir>/syn_train_000000.bin (200,000
// tokens) and <dir>/syn_val_000000.bin (its first 50,000).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/rng.h"
#include "data/token_file.h"

namespace gpt::test {

inline void write_motif_shards(const std::string& dir, uint64_t seed) {
    std::vector<uint16_t> tokens(200000);
    Rng r(seed);
    std::vector<uint16_t> motif(300);
    for (auto& t : motif) t = uint16_t(r.next_u64() % 50000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = motif[i % motif.size()];
    write_shard(dir + "/syn_train_000000.bin", tokens);
    write_shard(dir + "/syn_val_000000.bin", std::vector<uint16_t>(tokens.begin(), tokens.begin() + 50000));
}

}  // namespace gpt::test
