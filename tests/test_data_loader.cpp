// TokenLoader: the order rule of docs/data.md, reproducibility, ranks, checkpoint state.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "common/error.h"
#include "data/loader.h"
#include "data/token_file.h"
#include "test_data_util.h"

using namespace gpt;
using gpt::test::TempDir;

namespace {

constexpr int kB = 2, kT = 8;

// Three shards whose token at position i of file f is f*10000 + i: every token says where it is.
struct ToyData {
    TempDir dir;
    std::vector<size_t> sizes{101, 57, 200};
    ToyData() {
        for (size_t f = 0; f < sizes.size(); ++f) {
            std::vector<uint16_t> tokens(sizes[f]);
            for (size_t i = 0; i < sizes[f]; ++i) tokens[i] = static_cast<uint16_t>(f * 10000 + i);
            write_shard(dir / ("toy_train_00000" + std::to_string(f) + ".bin"), tokens);
        }
    }
    std::string pattern() const { return dir / "toy_train_*.bin"; }
    size_t windows() const {
        size_t w = 0;
        for (size_t n : sizes) w += (n - 1) / kT;
        return w;
    }
};

using Batch = std::pair<std::vector<int32_t>, std::vector<int32_t>>;

Batch next(TokenLoader& loader, int B = kB) {
    Batch b{std::vector<int32_t>(B * kT), std::vector<int32_t>(B * kT)};
    loader.next_batch(b.first.data(), b.second.data());
    return b;
}

std::vector<Batch> take(TokenLoader& loader, int n) {
    std::vector<Batch> batches;
    for (int i = 0; i < n; ++i) batches.push_back(next(loader));
    return batches;
}

// The first token of each sample of a batch: (file, position) encoded as in ToyData.
std::vector<int32_t> window_ids(const Batch& b, int B = kB) {
    std::vector<int32_t> ids;
    for (int s = 0; s < B; ++s) ids.push_back(b.first[s * kT]);
    return ids;
}

}  // namespace

TEST_CASE("data: loader windows are T+1 tokens at stride T, targets shifted by one") {
    ToyData data;
    TokenLoader loader(data.pattern(), kB, kT, 1234);
    CHECK(loader.num_tokens() == 101 + 57 + 200);
    CHECK(loader.num_windows() == data.windows());
    CHECK(loader.batches_per_epoch() == data.windows() / kB);
    for (int i = 0; i < 30; ++i) {
        const Batch b = next(loader);
        for (int s = 0; s < kB; ++s) {
            const int32_t first = b.first[s * kT];
            const int32_t file = first / 10000, pos = first % 10000;
            CHECK(pos % kT == 0);                                             // stride T
            CHECK(static_cast<size_t>(pos + kT) < data.sizes[file]);          // the target fits in the file
            for (int t = 0; t < kT; ++t) {
                CHECK(b.first[s * kT + t] == first + t);                      // contiguous, no file crossing
                CHECK(b.second[s * kT + t] == first + t + 1);                 // targets = inputs shifted
            }
        }
    }
}

TEST_CASE("data: loader visits every window once per epoch, in a seed-dependent order") {
    ToyData data;
    TokenLoader loader(data.pattern(), kB, kT, 99);
    std::vector<int32_t> epoch0, epoch1;
    for (size_t i = 0; i < loader.batches_per_epoch(); ++i) {
        for (int32_t id : window_ids(next(loader))) epoch0.push_back(id);
    }
    CHECK(loader.state().epoch == 0);
    for (size_t i = 0; i < loader.batches_per_epoch(); ++i) {
        for (int32_t id : window_ids(next(loader))) epoch1.push_back(id);
    }
    CHECK(loader.state().epoch == 1);
    CHECK(std::set<int32_t>(epoch0.begin(), epoch0.end()).size() == epoch0.size());  // no repeats
    CHECK(epoch0.size() == loader.batches_per_epoch() * kB);
    CHECK(epoch0 != epoch1);  // reshuffled each epoch
    std::vector<int32_t> in_order(epoch0.begin(), epoch0.end());
    std::sort(in_order.begin(), in_order.end());
    CHECK(epoch0 != in_order);  // shuffled, not file order
}

TEST_CASE("data: loader is reproducible from the seed and different seeds differ") {
    ToyData data;
    TokenLoader a(data.pattern(), kB, kT, 7), b(data.pattern(), kB, kT, 7), c(data.pattern(), kB, kT, 8);
    const auto from_a = take(a, 50), from_b = take(b, 50), from_c = take(c, 50);  // > 2 epochs
    CHECK(from_a == from_b);
    CHECK(from_a != from_c);
}

TEST_CASE("data: loader ranks never share a window within an epoch") {
    ToyData data;
    const int world = 3;
    std::set<int32_t> seen;
    size_t total = 0;
    for (int rank = 0; rank < world; ++rank) {
        TokenLoader loader(data.pattern(), kB, kT, 5, rank, world);
        CHECK(loader.batches_per_epoch() == data.windows() / world / kB);
        for (size_t i = 0; i < loader.batches_per_epoch(); ++i) {
            for (int32_t id : window_ids(next(loader))) {
                seen.insert(id);
                ++total;
            }
        }
    }
    CHECK(total == world * (data.windows() / world / kB) * kB);
    CHECK(seen.size() == total);  // disjoint across ranks
}

TEST_CASE("data: loader state/restore continues identically, across epoch ends too") {
    ToyData data;
    TokenLoader original(data.pattern(), kB, kT, 11);
    const size_t per_epoch = original.batches_per_epoch();
    for (size_t skip : {size_t{0}, size_t{3}, per_epoch - 1, per_epoch, 2 * per_epoch + 1}) {
        original.reset();
        take(original, static_cast<int>(skip));
        const TokenLoader::State saved = original.state();
        const auto expected = take(original, static_cast<int>(per_epoch) + 2);

        TokenLoader resumed(data.pattern(), kB, kT, 11);
        resumed.restore(saved);
        CHECK(take(resumed, static_cast<int>(per_epoch) + 2) == expected);
    }
    TokenLoader other(data.pattern(), kB, kT, 11);
    CHECK(gpt::test::error_of([&] { other.restore({0, per_epoch + 1}); }).find("checkpoint") != std::string::npos);
}

TEST_CASE("data: loader reset serves the same batches again") {
    ToyData data;
    TokenLoader loader(data.pattern(), kB, kT, 3);
    const auto first = take(loader, 4);
    take(loader, 40);
    loader.reset();
    CHECK(loader.state().epoch == 0);
    CHECK(loader.state().cursor == 0);
    CHECK(take(loader, 4) == first);
}

TEST_CASE("data: loader reads raw nanoGPT .bin files too") {
    TempDir dir;
    std::vector<uint16_t> tokens(65);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint16_t>(i);
    write_raw_bin(dir / "train.bin", tokens);
    TokenLoader loader(dir / "train.bin", 1, kT, 1);
    CHECK(loader.batches_per_epoch() == 8);
    const Batch b = next(loader, 1);
    CHECK(b.first[0] % kT == 0);
    CHECK(b.second[kT - 1] == b.first[0] + kT);
}

TEST_CASE("data: loader rejects data smaller than one batch and bad shapes") {
    ToyData data;
    std::string msg = gpt::test::error_of([&] { TokenLoader(data.pattern(), 64, 64, 1); });
    CHECK(msg.find("too small") != std::string::npos);
    CHECK(msg.find("toy_train_000000.bin") != std::string::npos);
    CHECK(msg.find("B=64") != std::string::npos);
    msg = gpt::test::error_of([&] { TokenLoader(data.pattern(), kB, kT, 1, 3, 3); });
    CHECK(msg.find("rank 3") != std::string::npos);
    msg = gpt::test::error_of([&] { TokenLoader(data.dir / "nope_*.bin", kB, kT, 1); });
    CHECK(msg.find("nope_*.bin") != std::string::npos);
}
