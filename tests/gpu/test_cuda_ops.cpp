// Every CUDA op against the CPU fp32 reference on fresh random inputs (bf16-rounded where the
// GPU stores bf16). Tolerances: relative L2 <= 1e-2 where bf16 activations are involved, <= 1e-5
// on fp32-only paths (optimizer, sums). Outputs that are overwritten are poisoned first; outputs
// that accumulate (+=) start from random non-zero values.
#include <doctest/doctest.h>

#include <utility>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "gpu_test_util.h"

using namespace gpt;
using gpt::gputest::Pair;
using gpt::gputest::randn;

namespace {
constexpr double kBf16Tol = 1e-2;
constexpr double kF32Tol = 1e-5;

std::vector<int32_t> random_tokens(size_t n, int V, uint64_t seed) {
    Rng rng(seed);
    std::vector<int32_t> t(n);
    // Few distinct ids, so many rows of the embedding gradient collide.
    for (auto& x : t) x = static_cast<int32_t>(rng.next_u64() % std::min(V, 23));
    t[0] = V - 1;
    return t;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// A LayerNorm's rows on both backends: input (offset, so the mean matters), weight, bias and the
// forward's statistics, plus the buffers a backward check needs. Seeds seed, seed + 1, seed + 2.
struct LayerNormRows {
    int N, C;
    size_t NC = size_t(N) * C;
    Pair p;
    Ten in = p.reserve(Space::Act, NC), out = p.reserve(Space::Act, NC);
    Ten din = p.reserve(Space::Act, NC), dout = p.reserve(Space::Act, NC);
    Ten branch = p.reserve(Space::Act, NC), branch2 = p.reserve(Space::Act, NC);
    Ten mean = p.reserve(Space::Stat, N), rstd = p.reserve(Space::Stat, N);
    Ten w = p.reserve(Space::Param, C), b = p.reserve(Space::Param, C), sum = p.reserve(Space::Param, C);
    Ten dw = w.as(Space::Grad), dsum = sum.as(Space::Grad);
    // A forward's residual dropout record (ResidualDropout::keep), its statistics, and one more row
    // of room for a misaligned view.
    Ten keep = p.reserve(Space::Index, (NC + 31) / 32);
    Ten mean2 = p.reserve(Space::Stat, N), rstd2 = p.reserve(Space::Stat, N);
    Ten spare = p.reserve(Space::Act, NC + 8);

    LayerNormRows(int n, int c, uint64_t seed) : N(n), C(c) {
        p.allocate();
        auto x = randn(NC, seed);
        for (auto& v : x) v = gputest::round_bf16(v * 2.f + 0.5f);
        p.set(in, x);
        p.set(w, randn(C, seed + 1, 0.5f));
        p.set(b, randn(C, seed + 2, 0.5f));
        p.run([&](Ops& o) { o.layernorm_fwd(out, mean, rstd, in, w, b, N, C); });
    }
};
}  // namespace

TEST_CASE("cuda: embedding forward and deterministic backward match the CPU") {
    GPT_REQUIRE_GPU();
    const int B = 3, T = 37, E = 72, V = 101;
    Pair p;
    Ten tokens = p.reserve(Space::Index, B * T);
    Ten wte = p.reserve(Space::Param, V * E), wpe = p.reserve(Space::Param, T * E);
    Ten out = p.reserve(Space::Act, B * T * E);
    p.allocate();
    p.set_index(tokens, random_tokens(B * T, V, 1));
    p.set(wte, randn(V * E, 2));
    p.set(wpe, randn(T * E, 3));
    p.poison(out);
    p.run([&](Ops& o) { o.embedding_fwd(out, tokens, wte, wpe, B, T, E); });
    CHECK(p.err(out) <= kBf16Tol);

    const auto dwte0 = randn(V * E, 4), dwpe0 = randn(T * E, 5);
    Ten dwte = wte.as(Space::Grad), dwpe = wpe.as(Space::Grad);
    p.set(out, randn(B * T * E, 6));
    std::vector<float> first;
    for (int rep = 0; rep < 2; ++rep) {
        p.set(dwte, dwte0);
        p.set(dwpe, dwpe0);
        p.run([&](Ops& o) { o.embedding_bwd(dwte, dwpe, out, tokens, B, T, E); });
        CHECK(p.err(dwte) <= kF32Tol * 10);
        CHECK(p.err(dwpe) <= kF32Tol * 10);
        auto g = Pair::get(*p.gpu, dwte);
        if (rep == 0) first = g;
        else CHECK(bit_equal(first, g));
    }
}

TEST_CASE("cuda: layernorm forward and deterministic backward match the CPU") {
    GPT_REQUIRE_GPU();
    // C = 200, 768, 1024: the 16-byte vector path (din and the dw/db partials in one kernel: one,
    // three and four channel groups per lane); C = 100 (not a multiple of 8): the general path.
    for (const int C : {200, 768, 1024, 100}) {
    CAPTURE(C);
    const int N = 67;
    Pair p;
    Ten in = p.reserve(Space::Act, N * C), out = p.reserve(Space::Act, N * C);
    Ten din = p.reserve(Space::Act, N * C), dout = p.reserve(Space::Act, N * C);
    Ten mean = p.reserve(Space::Stat, N), rstd = p.reserve(Space::Stat, N);
    Ten w = p.reserve(Space::Param, C), b = p.reserve(Space::Param, C);
    p.allocate();
    auto x = randn(N * C, 10);
    for (size_t i = 0; i < x.size(); ++i) x[i] = gputest::round_bf16(x[i] * 2.f + 0.5f);
    p.set(in, x);
    p.set(w, randn(C, 11, 0.5f));
    p.set(b, randn(C, 12, 0.5f));
    p.poison(out);
    p.poison(mean);
    p.poison(rstd);
    p.run([&](Ops& o) { o.layernorm_fwd(out, mean, rstd, in, w, b, N, C); });
    CHECK(p.err(out) <= kBf16Tol);
    CHECK(p.err(mean) <= 1e-5);
    CHECK(p.err(rstd) <= 1e-5);

    const auto din0 = randn(N * C, 13), dw0 = randn(C, 14), db0 = randn(C, 15);
    p.set(dout, randn(N * C, 16));
    std::vector<float> first_w, first_in;
    for (int rep = 0; rep < 2; ++rep) {
        p.set(din, din0);
        p.set(w.as(Space::Grad), dw0);
        p.set(b.as(Space::Grad), db0);
        p.run([&](Ops& o) {
            o.layernorm_bwd(din, w.as(Space::Grad), b.as(Space::Grad), dout, in, w, mean, rstd, N, C);
        });
        CHECK(p.err(din) <= kBf16Tol);
        CHECK(p.err(w.as(Space::Grad)) <= kBf16Tol);
        CHECK(p.err(b.as(Space::Grad)) <= kBf16Tol);
        auto gw = Pair::get(*p.gpu, w.as(Space::Grad)), gi = Pair::get(*p.gpu, din);
        if (rep == 0) {
            first_w = gw;
            first_in = gi;
        } else {
            CHECK(bit_equal(first_w, gw));
            CHECK(bit_equal(first_in, gi));
        }
    }
    }
}

TEST_CASE("cuda: layernorm backward, fused and two-kernel paths: CPU match, same bits without din or dw") {
    GPT_REQUIRE_GPU();
    // N = 203: four 64-row chunks, the last with 11 rows (a full 8-row tile and a 3-row one); N = 2113:
    // 34 chunks, more than the finish kernel's 32 groups. C = 200 (a partial 256-channel group), 768,
    // 1024, 1280: the fused kernel with one, three, four, five groups; C = 1536: wider than the fused
    // kernel, the din and partial kernels. Without din the partial kernel sums the same rows in the same
    // order as the fused one, and without dw the din kernel does the fused one's arithmetic: the same
    // bits. No bias gradient in one case (db absent).
    struct Case {
        int N, C;
        bool db;
    };
    for (const Case k : {Case{203, 768, true}, Case{2113, 768, true}, Case{203, 200, true}, Case{203, 1024, false},
                         Case{203, 1280, true}, Case{203, 1536, true}}) {
        CAPTURE(k.N);
        CAPTURE(k.C);
        CAPTURE(k.db);
        LayerNormRows r(k.N, k.C, 40);
        const int N = r.N, C = r.C;
        const size_t NC = r.NC;
        Pair& p = r.p;
        const Ten in = r.in, din = r.din, dout = r.dout, mean = r.mean, rstd = r.rstd, w = r.w, b = r.b;
        const Ten dw = r.dw, db = k.db ? b.as(Space::Grad) : Ten{}, dsum = r.dsum;
        CHECK(p.err(mean) <= 1e-5);
        CHECK(p.err(rstd) <= 1e-5);

        const auto din0 = randn(NC, 43), dw0 = randn(C, 44), db0 = randn(C, 45);
        p.set(dout, randn(NC, 46));
        std::vector<float> first_in, first_w, first_b;
        for (int rep = 0; rep < 2; ++rep) {
            p.set(din, din0);
            p.set(dw, dw0);
            p.set(b.as(Space::Grad), db0);
            p.run([&](Ops& o) { o.layernorm_bwd(din, dw, db, dout, in, w, mean, rstd, N, C); });
            CHECK(p.err(din) <= kBf16Tol);
            CHECK(p.err(dw) <= kBf16Tol);
            if (k.db) CHECK(p.err(db) <= kBf16Tol);
            auto gi = Pair::get(*p.gpu, din), gw = Pair::get(*p.gpu, dw), gb = Pair::get(*p.gpu, b.as(Space::Grad));
            if (rep == 0) {
                first_in = gi;
                first_w = gw;
                first_b = gb;
            } else {
                CHECK(bit_equal(first_in, gi));
                CHECK(bit_equal(first_w, gw));
                CHECK(bit_equal(first_b, gb));
            }
        }
        if (!k.db) CHECK(bit_equal(first_b, db0));   // absent: untouched

        // With dsum (a projection's bias gradient): += the column sums of din after the update, from
        // the fused kernel's third partial (C <= 768) or a column-sum pass; din, dw, db keep their bits.
        p.set(din, din0);
        p.set(dw, dw0);
        p.set(b.as(Space::Grad), db0);
        p.set(dsum, randn(C, 47));
        p.run([&](Ops& o) { o.layernorm_bwd(din, dw, db, dout, in, w, mean, rstd, N, C, dsum); });
        CHECK(p.err(dsum) <= kBf16Tol);
        CHECK(bit_equal(Pair::get(*p.gpu, din), first_in));
        CHECK(bit_equal(Pair::get(*p.gpu, dw), first_w));
        CHECK(bit_equal(Pair::get(*p.gpu, b.as(Space::Grad)), first_b));

        // The GPU alone (the CPU reference takes both): dw/db without din, din without dw.
        p.set(din, din0);
        p.set(dw, dw0);
        p.set(b.as(Space::Grad), db0);
        p.gpu->layernorm_bwd(Ten{}, dw, db, dout, in, w, mean, rstd, N, C);
        p.gpu->synchronize();
        CHECK(bit_equal(Pair::get(*p.gpu, dw), first_w));
        CHECK(bit_equal(Pair::get(*p.gpu, b.as(Space::Grad)), first_b));
        CHECK(bit_equal(Pair::get(*p.gpu, din), din0));
        p.gpu->layernorm_bwd(din, Ten{}, Ten{}, dout, in, w, mean, rstd, N, C);
        p.gpu->synchronize();
        CHECK(bit_equal(Pair::get(*p.gpu, din), first_in));
        CHECK(bit_equal(Pair::get(*p.gpu, dw), first_w));   // not touched a second time
    }
}

TEST_CASE("cuda: residual add + layernorm (fused) matches the CPU and equals add + layernorm_fwd bit for bit") {
    GPT_REQUIRE_GPU();
    // C = 768, 1024: the fused kernel (three and four channel groups per lane in registers), with
    // and without a bias; C = 100 (not a multiple of 8): the fallback to the two kernels. With the
    // branch's residual dropout (p = 0.1, as the ablation): the same against dropout + add + layernorm.
    struct Case {
        int C;
        bool bias;
        float p;
    };
    for (const Case k : {Case{768, true, 0.f}, Case{1024, true, 0.f}, Case{768, false, 0.f}, Case{100, true, 0.f},
                         Case{768, true, 0.1f}, Case{1024, true, 0.1f}, Case{100, true, 0.1f}}) {
        CAPTURE(k.C);
        CAPTURE(k.bias);
        CAPTURE(k.p);
        const ResidualDropout drop{k.p, 0x5eed1234abcdull, {}};
        const int N = 67, C = k.C;
        const size_t NC = size_t(N) * C;
        Pair p;
        Ten a = p.reserve(Space::Act, NC), b = p.reserve(Space::Act, NC);
        Ten sum = p.reserve(Space::Act, NC), out = p.reserve(Space::Act, NC);
        Ten mean = p.reserve(Space::Stat, N), rstd = p.reserve(Space::Stat, N);
        Ten sum2 = p.reserve(Space::Act, NC), out2 = p.reserve(Space::Act, NC);
        Ten mean2 = p.reserve(Space::Stat, N), rstd2 = p.reserve(Space::Stat, N);
        Ten w = p.reserve(Space::Param, C), bias = k.bias ? p.reserve(Space::Param, C) : Ten{};
        p.allocate();
        // A residual stream with an offset (so the mean matters) plus a smaller branch.
        auto x = randn(NC, 30);
        for (auto& v : x) v = gputest::round_bf16(v * 2.f + 0.5f);
        const auto b0 = randn(NC, 31, 0.5f);
        p.set(a, x);
        p.set(b, b0);
        p.set(w, randn(C, 32, 0.5f));
        if (k.bias) p.set(bias, randn(C, 33, 0.5f));
        for (Ten t : {sum, out, mean, rstd}) p.poison(t);
        p.run([&](Ops& o) { o.residual_layernorm_fwd(sum, out, mean, rstd, a, b, w, bias, N, C, drop); });
        if (drop.on()) {   // the CPU dropped b in place: about p of it is zero (a mask was applied)
            const auto dropped = Pair::get(*p.cpu, b);
            const double zeros = double(std::count(dropped.begin(), dropped.end(), 0.f)) / double(NC);
            CHECK(zeros > 0.06);
            CHECK(zeros < 0.14);
        }
        // A mask other than the CPU's would be off by ~10% of the branch: far over the tolerance.
        CHECK(p.err(sum) <= kBf16Tol);
        CHECK(p.err(out) <= kBf16Tol);
        // The CPU normalises the fp32 sum, the GPU the bf16-rounded one (as add + layernorm_fwd):
        // the statistics differ by the rounding averaged over a row, well under 2e-3.
        CHECK(p.err(mean) <= 2e-3);
        CHECK(p.err(rstd) <= 2e-3);

        // The calls it replaces, on the GPU from the same branch: the same bits in all four outputs.
        p.set(b, b0);
        if (drop.on()) p.gpu->dropout(b, NC, drop.p, drop.seed);
        p.gpu->add(sum2, a, b, NC);
        p.gpu->layernorm_fwd(out2, mean2, rstd2, sum2, w, bias, N, C);
        p.gpu->synchronize();
        CHECK(bit_equal(Pair::get(*p.gpu, sum), Pair::get(*p.gpu, sum2)));
        CHECK(bit_equal(Pair::get(*p.gpu, out), Pair::get(*p.gpu, out2)));
        CHECK(bit_equal(Pair::get(*p.gpu, mean), Pair::get(*p.gpu, mean2)));
        CHECK(bit_equal(Pair::get(*p.gpu, rstd), Pair::get(*p.gpu, rstd2)));
    }
}

TEST_CASE("cuda: residual dropout inside the LayerNorm backward matches the CPU and equals copy + dropout bit for bit") {
    GPT_REQUIRE_GPU();
    // The block's residual dropout runs in the LayerNorm backward that finishes the residual gradient:
    // the branch's gradient and its column sums (the output projection's bias gradient); its forward
    // half is in the residual add + layernorm case above. p = 0.1 as the ablation.
    const float P = 0.1f;
    const uint64_t seed = 0x5eed1234abcdull;

    // The decisions drawn again (no keep), or read from the record a forward wrote: its fused kernel
    // (aligned rows) or, for a misaligned branch, the unfused calls and the keep-bits kernel.
    enum class Keep { drawn, fused_record, unfused_record };
    SUBCASE("backward: the branch's gradient and its column sums; C = 768 fused with the sums, 1024 fused "
            "without them, 1536 the two-pass path") {
        struct Case {
            int N, C;
            Keep keep;
        };
        for (const Case k : {Case{203, 768, Keep::drawn}, Case{2113, 768, Keep::fused_record},
                             Case{203, 768, Keep::unfused_record}, Case{203, 1024, Keep::fused_record},
                             Case{203, 1024, Keep::unfused_record}, Case{203, 1536, Keep::fused_record}}) {
            CAPTURE(k.N);
            CAPTURE(k.C);
            CAPTURE(int(k.keep));
            LayerNormRows r(k.N, k.C, 70);
            Pair& p = r.p;
            const int N = r.N, C = r.C;
            const Ten dw = r.dw, db = r.b.as(Space::Grad);
            ResidualDropout drop{P, seed, {}};
            if (k.keep != Keep::drawn) {   // a forward records the decisions (its outputs are scratch here)
                drop.keep = r.keep;
                const Ten branch_out = k.keep == Keep::fused_record ? r.out : r.spare.sub(1, r.NC);
                p.gpu->residual_layernorm_fwd(r.branch2, r.branch, r.mean2, r.rstd2, r.in, branch_out, r.w, r.b, N, C,
                                              drop);
            }
            const auto din0 = randn(r.NC, 73), dw0 = randn(C, 74), db0 = randn(C, 75), dsum0 = randn(C, 76);
            p.set(r.dout, randn(r.NC, 77));
            std::vector<float> first_branch;
            for (int rep = 0; rep < 2; ++rep) {
                p.set(r.din, din0);
                p.set(dw, dw0);
                p.set(db, db0);
                p.set(r.dsum, dsum0);
                p.poison(r.branch);
                p.run([&](Ops& o) {
                    o.layernorm_bwd(r.din, dw, db, r.dout, r.in, r.w, r.mean, r.rstd, N, C, r.dsum, r.branch, drop);
                });
                CHECK(p.err(r.din) <= kBf16Tol);
                CHECK(p.err(dw) <= kBf16Tol);
                CHECK(p.err(db) <= kBf16Tol);
                CHECK(p.err(r.branch) <= kBf16Tol);
                CHECK(p.err(r.dsum) <= kBf16Tol);
                const auto gb = Pair::get(*p.gpu, r.branch);
                if (rep == 0) first_branch = gb;
                else CHECK(bit_equal(first_branch, gb));   // deterministic
            }
            const auto cpu_branch = Pair::get(*p.cpu, r.branch);
            const double zeros = double(std::count(cpu_branch.begin(), cpu_branch.end(), 0.f)) / double(r.NC);
            CHECK(zeros > 0.06);
            CHECK(zeros < 0.14);
            // dsum took the branch's columns, not din's: the difference is the dropped part's sums.
            {
                const auto gd = Pair::get(*p.gpu, r.dsum), gin = Pair::get(*p.gpu, r.din);
                double off_branch = 0, off_din = 0, norm = 0;
                for (int c = 0; c < C; ++c) {
                    double sb = dsum0[c], sd = dsum0[c];
                    for (int row = 0; row < N; ++row) {
                        sb += first_branch[size_t(row) * C + c];
                        sd += gin[size_t(row) * C + c];
                    }
                    off_branch += (gd[c] - sb) * (gd[c] - sb);
                    off_din += (gd[c] - sd) * (gd[c] - sd);
                    norm += sb * sb;
                }
                CHECK(std::sqrt(off_branch / norm) <= 1e-5);
                CHECK(std::sqrt(off_din / norm) > 1e-2);
            }
            // copy + dropout on the GPU's din: the same bits as the fused branch; din, dw, db as without.
            const auto fused_din = Pair::get(*p.gpu, r.din), fused_dw = Pair::get(*p.gpu, dw);
            p.set(r.din, din0);
            p.set(dw, dw0);
            p.set(db, db0);
            p.gpu->layernorm_bwd(r.din, dw, db, r.dout, r.in, r.w, r.mean, r.rstd, N, C);
            p.gpu->copy(r.branch2, r.din);
            p.gpu->dropout(r.branch2, r.NC, P, seed);
            p.gpu->synchronize();
            CHECK(bit_equal(fused_din, Pair::get(*p.gpu, r.din)));
            CHECK(bit_equal(fused_dw, Pair::get(*p.gpu, dw)));
            CHECK(bit_equal(first_branch, Pair::get(*p.gpu, r.branch2)));
            // p = 0: the branch is din itself.
            p.set(r.din, din0);
            p.gpu->layernorm_bwd(r.din, dw, db, r.dout, r.in, r.w, r.mean, r.rstd, N, C, Ten{}, r.branch,
                                 ResidualDropout{0.f, seed, drop.keep});
            p.gpu->synchronize();
            CHECK(bit_equal(Pair::get(*p.gpu, r.din), Pair::get(*p.gpu, r.branch)));
        }
    }
}

// Forward with/without bias and fused GELU; backward din (overwrite), dw, dbias (accumulate).
static void check_matmul(int M, int K, int N, bool bias, bool gelu) {
    CAPTURE(M);
    CAPTURE(K);
    CAPTURE(N);
    CAPTURE(bias);
    CAPTURE(gelu);
    Pair p;
    Ten in = p.reserve(Space::Act, M * K), out = p.reserve(Space::Act, M * N);
    Ten gout = gelu ? p.reserve(Space::Act, M * N) : Ten{};
    Ten dout = p.reserve(Space::Act, M * N), din = p.reserve(Space::Act, M * K);
    Ten w = p.reserve(Space::Param, N * K);
    Ten b = bias ? p.reserve(Space::Param, N) : Ten{};
    p.allocate();
    p.set(in, randn(M * K, 20));
    p.set(w, randn(N * K, 21, 0.1f));
    if (bias) p.set(b, randn(N, 22, 0.5f));
    p.poison(out);
    if (gelu) p.poison(gout);
    p.run([&](Ops& o) { o.matmul_fwd(out, in, w, b, M, K, N, gout); });
    CHECK(p.err(out) <= kBf16Tol);
    if (gelu) CHECK(p.err(gout) <= kBf16Tol);

    p.set(dout, randn(M * N, 23));
    p.set(w.as(Space::Grad), randn(N * K, 24));
    if (bias) p.set(b.as(Space::Grad), randn(N, 25));
    p.poison(din);
    p.run([&](Ops& o) {
        o.matmul_bwd(din, w.as(Space::Grad), bias ? b.as(Space::Grad) : Ten{}, dout, in, w, M, K, N);
    });
    CHECK(p.err(din) <= kBf16Tol);
    CHECK(p.err(w.as(Space::Grad)) <= kBf16Tol);
    if (bias) CHECK(p.err(b.as(Space::Grad)) <= kBf16Tol);
}

TEST_CASE("cuda: matmul forward (bias; fused GELU) and backward match the CPU") {
    GPT_REQUIRE_GPU();
    check_matmul(96, 80, 136, true, true);    // fused GELU_AUX_BIAS epilogue
    check_matmul(64, 48, 40, false, true);    // GELU_AUX without bias
    check_matmul(77, 64, 96, true, false);    // BIAS epilogue, BGRADB in backward
    check_matmul(33, 24, 50, true, true);     // N not a multiple of 8: fallback kernels
}

// matmul_bwd_add (a second path's input gradient summed by the GEMM, beta = 1): din starts from
// random values and gets dout . w added, dw and dbias accumulate, against the CPU.
TEST_CASE("cuda: matmul backward accumulating din (matmul_bwd_add) matches the CPU") {
    GPT_REQUIRE_GPU();
    for (const auto& [M, K, N] : std::vector<std::array<int, 3>>{{96, 80, 136}, {200, 768, 64}, {33, 24, 50}}) {
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(N);
        Pair p;
        Ten in = p.reserve(Space::Act, size_t(M) * K), dout = p.reserve(Space::Act, size_t(M) * N);
        Ten din = p.reserve(Space::Act, size_t(M) * K), w = p.reserve(Space::Param, size_t(N) * K);
        Ten b = p.reserve(Space::Param, N);
        p.allocate();
        p.set(in, randn(size_t(M) * K, 70));
        p.set(w, randn(size_t(N) * K, 71, 0.1f));
        p.set(dout, randn(size_t(M) * N, 72));
        p.set(din, randn(size_t(M) * K, 73));
        p.set(w.as(Space::Grad), randn(size_t(N) * K, 74));
        p.set(b.as(Space::Grad), randn(N, 75));
        p.run([&](Ops& o) { o.matmul_bwd_add(din, w.as(Space::Grad), b.as(Space::Grad), dout, in, w, M, K, N); });
        CHECK(p.err(din) <= kBf16Tol);
        CHECK(p.err(w.as(Space::Grad)) <= kBf16Tol);
        CHECK(p.err(b.as(Space::Grad)) <= kBf16Tol);
    }
}

// matmul_fwd_add (a path added onto an activation by the GEMM: beta = 1 with C = the residual):
// into a separate output (C != D, which stays untouched) and in place, against the CPU.
TEST_CASE("cuda: matmul_fwd_add (the product added onto a residual by the GEMM) matches the CPU") {
    GPT_REQUIRE_GPU();
    for (const auto& [M, K, N] : std::vector<std::array<int, 3>>{{96, 80, 136}, {300, 128, 768}, {33, 24, 50}}) {
        CAPTURE(M);
        CAPTURE(K);
        CAPTURE(N);
        Pair p;
        Ten in = p.reserve(Space::Act, size_t(M) * K), w = p.reserve(Space::Param, size_t(N) * K);
        Ten res = p.reserve(Space::Act, size_t(M) * N), out = p.reserve(Space::Act, size_t(M) * N);
        p.allocate();
        p.set(in, randn(size_t(M) * K, 80));
        p.set(w, randn(size_t(N) * K, 81, 0.1f));
        p.set(res, randn(size_t(M) * N, 82));
        p.poison(out);
        p.run([&](Ops& o) { o.matmul_fwd_add(out, in, w, res, M, K, N); });
        CHECK(p.err(out) <= kBf16Tol);
        CHECK(p.err(res) == 0.0);   // read only: both sides still hold the same bf16 values
        p.run([&](Ops& o) { o.matmul_fwd_add(res, in, w, res, M, K, N); });
        CHECK(p.err(res) <= kBf16Tol);
    }
}

// A bias gradient alone (matmul_bwd with neither din nor dw): the column-sum kernels. N <= 64 takes
// the narrow kernel (flat runs of rows per block: N = 1, 12, 64, several parts and a partial last
// one), N = 100 the wide one, N = 2304 and 776 (multiples of 8) the 16-byte one (776: a partial
// 256-column block). Twice: the same bits.
TEST_CASE("cuda: column sums (a bias gradient alone), narrow and wide, match the CPU and rerun bit-identically") {
    GPT_REQUIRE_GPU();
    for (const auto& [M, N] : std::vector<std::pair<int, int>>{{9001, 1}, {3001, 12}, {2500, 64}, {700, 100}, {5, 3}, {1000, 2304}, {300, 776}}) {
        CAPTURE(M);
        CAPTURE(N);
        Pair p;
        Ten dout = p.reserve(Space::Act, size_t(M) * N);
        Ten in = p.reserve(Space::Act, M), w = p.reserve(Space::Param, N);   // K = 1, read by neither
        Ten b = p.reserve(Space::Param, N);
        p.allocate();
        p.set(dout, randn(size_t(M) * N, 60));
        p.set(in, randn(M, 62));
        p.set(w, randn(N, 63));
        std::vector<float> first;
        for (int rep = 0; rep < 2; ++rep) {
            p.set(b.as(Space::Grad), randn(N, 61));
            p.run([&](Ops& o) { o.matmul_bwd({}, {}, b.as(Space::Grad), dout, in, w, M, 1, N); });
            CHECK(p.err(b.as(Space::Grad)) <= kBf16Tol);
            auto g = Pair::get(*p.gpu, b.as(Space::Grad));
            if (rep == 0) first = g;
            else CHECK(bit_equal(first, g));
        }
    }
}

// matmul_bwd_gelu (an MLP's c_proj backward through its GELU): the CPU default (matmul_bwd, then
// gelu_bwd) against the GPU's DGELU epilogue; din overwritten, dw and dbias accumulated.
static void check_matmul_gelu(int M, int K, int N, bool bias) {
    CAPTURE(M);
    CAPTURE(K);
    CAPTURE(N);
    CAPTURE(bias);
    Pair p;
    Ten in = p.reserve(Space::Act, M * K), pre = p.reserve(Space::Act, M * K);
    Ten dout = p.reserve(Space::Act, M * N), din = p.reserve(Space::Act, M * K);
    Ten w = p.reserve(Space::Param, N * K);
    Ten b = bias ? p.reserve(Space::Param, N) : Ten{};
    p.allocate();
    p.set(pre, randn(M * K, 40, 1.5f));   // spans GELU's curved part, both signs
    p.set(in, randn(M * K, 41));
    p.set(w, randn(N * K, 42, 0.1f));
    p.set(dout, randn(M * N, 43));
    p.set(w.as(Space::Grad), randn(N * K, 44));
    if (bias) p.set(b.as(Space::Grad), randn(N, 45));
    p.poison(din);
    p.run([&](Ops& o) {
        o.matmul_bwd_gelu(din, w.as(Space::Grad), bias ? b.as(Space::Grad) : Ten{}, dout, in, w, pre, M, K, N);
    });
    CHECK(p.err(din) <= kBf16Tol);
    CHECK(p.err(w.as(Space::Grad)) <= kBf16Tol);
    if (bias) CHECK(p.err(b.as(Space::Grad)) <= kBf16Tol);
}

TEST_CASE("cuda: matmul backward with the GELU backward fused (DGELU epilogue) matches the CPU") {
    GPT_REQUIRE_GPU();
    check_matmul_gelu(96, 136, 80, true);    // K % 8 == 0: the DGELU epilogue
    check_matmul_gelu(200, 64, 48, false);
    check_matmul_gelu(40, 50, 24, true);     // K not a multiple of 8: GEMM + gelu_bwd kernel
}

// The first call of a shape times the heuristic's candidates on the real operands: its outputs
// must be exactly those of a later call (dw accumulates with beta = 1, so the trials must leave it
// as it was), and a second backend in the same process must pick the same algorithms (same bits).
TEST_CASE("cuda: GEMM algorithm choice is deterministic (first call = later calls = other backend)") {
    GPT_REQUIRE_GPU();
    const int M = 384, K = 320, N = 448;
    std::vector<float> ref_out, ref_din, ref_dw;
    for (int backend = 0; backend < 2; ++backend) {
        CAPTURE(backend);
        Pair p;
        Ten in = p.reserve(Space::Act, M * K), out = p.reserve(Space::Act, M * N);
        Ten dout = p.reserve(Space::Act, M * N), din = p.reserve(Space::Act, M * K);
        Ten w = p.reserve(Space::Param, N * K), b = p.reserve(Space::Param, N);
        p.allocate();
        p.set(in, randn(M * K, 50));
        p.set(w, randn(N * K, 51, 0.1f));
        p.set(b, randn(N, 52));
        p.set(dout, randn(M * N, 53));
        const auto dw0 = randn(N * K, 54);
        for (int rep = 0; rep < 2; ++rep) {
            CAPTURE(rep);
            p.set(w.as(Space::Grad), dw0);
            p.poison(out);
            p.poison(din);
            p.run([&](Ops& o) {
                o.matmul_fwd(out, in, w, b, M, K, N);
                o.matmul_bwd(din, w.as(Space::Grad), Ten{}, dout, in, w, M, K, N);
            });
            CHECK(p.err(w.as(Space::Grad)) <= kBf16Tol);
            const auto o = Pair::get(*p.gpu, out), di = Pair::get(*p.gpu, din),
                       dw = Pair::get(*p.gpu, w.as(Space::Grad));
            if (backend == 0 && rep == 0) {
                ref_out = o;
                ref_din = di;
                ref_dw = dw;
            } else {
                CHECK(bit_equal(o, ref_out));
                CHECK(bit_equal(di, ref_din));
                CHECK(bit_equal(dw, ref_dw));
            }
        }
    }
}

TEST_CASE("cuda: elementwise ops match the CPU (gelu; add; dropout masks; scale; mul; copy)") {
    GPT_REQUIRE_GPU();
    const size_t n = 5003;
    Pair p;
    Ten a = p.reserve(Space::Act, n), b = p.reserve(Space::Act, n), c = p.reserve(Space::Act, n);
    Ten g = p.reserve(Space::Grad, n), mask = p.reserve(Space::Opt, n);
    p.allocate();
    p.set(a, randn(n, 30));
    p.set(b, randn(n, 31));
    p.poison(c);
    p.run([&](Ops& o) { o.gelu_fwd(c, a, n); });
    CHECK(p.err(c) <= kBf16Tol);
    p.poison(c);
    p.run([&](Ops& o) { o.gelu_bwd(c, a, b, n); });
    CHECK(p.err(c) <= kBf16Tol);
    p.run([&](Ops& o) { o.gelu_bwd(b, a, b, n); });   // din aliases dout
    CHECK(p.err(b) <= kBf16Tol);
    p.poison(c);
    p.run([&](Ops& o) { o.add(c, a, b, n); });
    CHECK(p.err(c) <= kBf16Tol);
    p.run([&](Ops& o) { o.add_inplace(c, a, n); });
    CHECK(p.err(c) <= kBf16Tol);

    // Dropout: the same elements are dropped on both sides (same counter-based RNG).
    p.set(c, randn(n, 32));
    p.run([&](Ops& o) { o.dropout(c, n, 0.25f, 777); });
    const auto gc = Pair::get(*p.gpu, c), cc = Pair::get(*p.cpu, c);
    size_t zeros = 0, mismatched = 0;
    for (size_t i = 0; i < n; ++i) {
        zeros += cc[i] == 0.f;
        mismatched += (gc[i] == 0.f) != (cc[i] == 0.f);
    }
    CHECK(mismatched == 0);
    CHECK(zeros > n / 8);
    CHECK(zeros < n / 2);
    CHECK(gputest::rel_l2(gc, cc) <= kBf16Tol);
    // The 16-byte path (bf16, n % 8 == 0): the same draws; the elements after the n8 stay as set.
    const size_t n8 = 4096;
    p.set(c, randn(n, 35));
    p.run([&](Ops& o) { o.dropout(c.sub(0, n8), n8, 0.1f, 779); });
    const auto gv = Pair::get(*p.gpu, c), cv = Pair::get(*p.cpu, c);
    size_t zeros8 = 0, mismatched8 = 0;
    for (size_t i = 0; i < n; ++i) {
        zeros8 += cv[i] == 0.f;
        mismatched8 += (gv[i] == 0.f) != (cv[i] == 0.f);
    }
    CHECK(mismatched8 == 0);
    CHECK(zeros8 > n8 / 20);
    CHECK(zeros8 < n8 / 5);
    CHECK(gputest::rel_l2(gv, cv) <= kBf16Tol);

    // fp32 spaces: scale, mul_inplace, copy across types.
    p.set(g, randn(n, 33, 1.f, false));
    auto m = randn(n, 34, 1.f, false);
    for (auto& x : m) x = x > 0 ? 1.f : 0.f;
    p.set(mask, m);
    p.run([&](Ops& o) {
        o.scale(g, 0.37f);
        o.mul_inplace(g, mask, n);
    });
    CHECK(p.err(g) <= kF32Tol);
    p.run([&](Ops& o) { o.copy(c, g); });
    CHECK(p.err(c) <= kBf16Tol);
}

TEST_CASE("cuda: fused classifier matches the CPU (loss; dlogits in place; padded columns)") {
    GPT_REQUIRE_GPU();
    // Vp % 8 == 0: the 16-byte vector path with the row in shared memory (V = 997 masks a partial
    // last vector, as GPT-2's 50257 does; GPT-2's own row of 50304); Vp = 60000: rows too long for
    // it, the kernel that reads the row twice; Vp = 1003: the general path.
    for (const auto& [V, Vp] : {std::pair{1000, 1024}, std::pair{997, 1024}, std::pair{50257, 50304},
                                std::pair{59999, 60000}, std::pair{1000, 1003}}) {
    CAPTURE(V);
    CAPTURE(Vp);
    const int N = Vp > 10000 ? 4 : 13;
    Pair p;
    Ten logits = p.reserve(Space::Act, N * Vp), losses = p.reserve(Space::Stat, N);
    Ten targets = p.reserve(Space::Index, N);
    p.allocate();
    std::vector<int32_t> tg(N);
    for (int i = 0; i < N; ++i) tg[i] = (i * 97 + 5) % V;
    p.set_index(targets, tg);
    const auto x = randn(N * Vp, 40, 2.f);
    p.set(logits, x);
    p.poison(losses);
    p.run([&](Ops& o) { o.classifier(losses, logits, targets, N, V, Vp, 0.f); });
    CHECK(p.err(losses) <= 1e-4);
    CHECK(gputest::rel_l2(Pair::get(*p.gpu, logits), x) == 0.0);   // forward only: untouched
    p.run([&](Ops& o) { o.classifier(losses, logits, targets, N, V, Vp, 1.f / N); });
    CHECK(p.err(losses) <= 1e-4);
    CHECK(p.err(logits) <= kBf16Tol);
    }
}

TEST_CASE("cuda: sum_squares and multi-tensor AdamW (AMSGrad; SPAM) match the CPU in fp32") {
    GPT_REQUIRE_GPU();
    Pair p;
    const size_t n1 = 40000, n2 = 777;   // n1 spans several optimizer chunks
    Ten w1 = p.reserve(Space::Param, n1), w2 = p.reserve(Space::Param, n2);
    Ten m1 = p.reserve(Space::Opt, n1), v1 = p.reserve(Space::Opt, n1), x1 = p.reserve(Space::Opt, n1);
    Ten m2 = p.reserve(Space::Opt, n2), v2 = p.reserve(Space::Opt, n2), x2 = p.reserve(Space::Opt, n2);
    p.allocate();
    p.set(w1, randn(n1, 50, 0.02f, false));
    p.set(w2, randn(n2, 51, 0.02f, false));
    std::vector<AdamWTensor> ts = {{w1, m1, v1, x1, true}, {w2, m2, v2, x2, false}};
    for (bool amsgrad : {false, true}) {
        for (int step = 1; step <= 3; ++step) {
            p.set(w1.as(Space::Grad), randn(n1, 60 + step, 1.f, false));
            p.set(w2.as(Space::Grad), randn(n2, 70 + step, 1.f, false));
            const double ref = p.cpu->sum_squares(w1.as(Space::Grad));
            CHECK(std::abs(p.gpu->sum_squares(w1.as(Space::Grad)) - ref) <= 1e-9 * ref);
            AdamWHyper h;
            h.lr = 1e-3f;
            h.weight_decay = 0.1f;
            h.step = step;
            h.grad_scale = 0.5f;
            h.amsgrad = amsgrad;
            h.spam_theta = step == 3 ? 0.5f : 0.f;   // small theta: the clip really triggers
            p.run([&](Ops& o) { o.adamw(ts, h); });
        }
        for (Ten t : {w1, w2, m1, v1, m2, v2}) CHECK(p.err(t) <= kF32Tol);
        if (amsgrad) CHECK(p.err(x1) <= kF32Tol);
    }
}

TEST_CASE("cuda: errors are gpt::Error with a clear message (out of memory; bad space)") {
    GPT_REQUIRE_GPU();
    auto gpu = make_cuda_ops();
    MemoryPlan huge;
    huge[Space::Act] = size_t(1) << 50;
    try {
        gpu->allocate(huge);
        FAIL("allocate of 2 PiB did not throw");
    } catch (const gpt::Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("does not fit on the GPU") != std::string::npos);   // device_fit.h: refused before allocating
        CHECK(msg.find("free") != std::string::npos);
    }
    MemoryPlan small;
    small[Space::Act] = 64;
    small[Space::Grad] = 64;
    gpu->allocate(small);
    CHECK_THROWS_AS(gpu->matmul_fwd(Ten{Space::Act, 0, 16}, Ten{Space::Grad, 0, 16},
                                    Ten{Space::Act, 16, 16}, {}, 4, 4, 4),
                    gpt::Error);
    CHECK_THROWS_AS(gpu->zero(Ten{Space::Act, 60, 16}), gpt::Error);
}
