// Whole-model checks on the CPU reference backend: parameter counts from SPEC §1, the init rule,
// a finite-difference check of the gradient of EVERY parameter tensor (dropout on), determinism.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "cpu/cpu_ops.h"
#include "model/gpt.h"
#include "model_harness.h"

using namespace gpt;

namespace {

ModelConfig tiny_config() {
    ModelConfig m;
    m.n_layer = 2;
    m.n_embd = 16;
    m.n_head = 2;
    m.vocab_size = 61;      // padded to 64: exercises the masked padding columns
    m.padded_vocab = 64;
    m.block_size = 8;
    m.mlp_hidden = 24;      // a width other than 4E, as the ablation uses
    return m;
}

size_t count_params(const GPT& g) {
    size_t n = 0;
    for (const auto& s : g.params().specs()) n += s.numel();
    return n;
}


}  // namespace

TEST_CASE("model: parameter counts of the GPT-2 presets match SPEC §1") {
    struct P { int L, E, H; size_t params; };
    for (P p : {P{12, 768, 12, 124475904}, P{24, 1024, 16, 354871296}, P{36, 1280, 20, 774090240},
                P{48, 1600, 25, 1557686400}}) {
        ModelConfig m;
        m.n_layer = p.L;
        m.n_embd = p.E;
        m.n_head = p.H;
        m.block_size = 1024;
        GPT g(m, 1, 1);
        CHECK(count_params(g) == p.params);
    }
}

TEST_CASE("model: MLP width is applied (the prototype silently ignored it)") {
    ModelConfig m = tiny_config();
    GPT a(m, 1, 1);
    m.mlp_hidden = 40;
    GPT b(m, 1, 1);
    // Each layer's c_fc and c_proj grow by (40-24)*E weights, c_fc.bias by 16.
    CHECK(count_params(b) - count_params(a) == size_t(m.n_layer) * (2 * 16 * 16 + 16));
}

TEST_CASE("model: init follows SPEC §1 (std 0.02, scaled residual projections, LN 1/0, padding 0)") {
    ModelConfig m;
    m.n_layer = 4;
    m.n_embd = 128;
    m.n_head = 4;
    m.block_size = 64;
    GPT g(m, 1, 1);
    auto v = g.params().initial_values(7);
    auto stdev = [&](const std::string& name) {
        const auto& s = g.params().get(name);
        double sum = 0, sq = 0;
        for (size_t i = 0; i < s.numel(); ++i) {
            sum += v[s.t.off + i];
            sq += double(v[s.t.off + i]) * v[s.t.off + i];
        }
        double mean = sum / double(s.numel());
        return std::sqrt(sq / double(s.numel()) - mean * mean);
    };
    CHECK(stdev("h.0.attn.c_attn.weight") == doctest::Approx(0.02).epsilon(0.03));
    CHECK(stdev("h.1.mlp.c_fc.weight") == doctest::Approx(0.02).epsilon(0.03));
    CHECK(stdev("h.2.attn.c_proj.weight") == doctest::Approx(0.02 / std::sqrt(8.0)).epsilon(0.03));
    CHECK(stdev("h.3.mlp.c_proj.weight") == doctest::Approx(0.02 / std::sqrt(8.0)).epsilon(0.03));
    const auto& ln = g.params().get("h.0.ln_1.weight");
    for (size_t i = 0; i < ln.numel(); ++i) REQUIRE(v[ln.t.off + i] == 1.f);
    const auto& bias = g.params().get("h.0.mlp.c_fc.bias");
    for (size_t i = 0; i < bias.numel(); ++i) REQUIRE(v[bias.t.off + i] == 0.f);
    const auto& wte = g.params().get("wte.weight");
    for (size_t r = size_t(m.vocab_size); r < size_t(m.padded_vocab); ++r)
        for (int c = 0; c < m.n_embd; ++c) REQUIRE(v[wte.t.off + r * m.n_embd + c] == 0.f);
    // Same seed, same values; another seed, other values.
    CHECK(g.params().initial_values(7) == v);
    CHECK(g.params().initial_values(8) != v);
    // Decay on 2-D weights only.
    CHECK(g.params().get("h.0.attn.c_attn.weight").decay);
    CHECK_FALSE(g.params().get("h.0.attn.c_attn.bias").decay);
    CHECK_FALSE(g.params().get("wpe.weight").decay);
    CHECK_FALSE(g.params().get("ln_f.weight").decay);
}

static void check_all_gradients(const ModelConfig& cfg) {
    test::Harness h(cfg, 2, 8, 99);
    CHECK(test::check_every_gradient(h) == int(h.model.params().specs().size()));
}

TEST_CASE("model: finite-difference gradient of every parameter tensor (no dropout)") {
    check_all_gradients(tiny_config());
}

TEST_CASE("model: finite-difference gradient of every parameter tensor (dropout 0.1)") {
    ModelConfig m = tiny_config();
    m.dropout = 0.1f;
    check_all_gradients(m);
}

TEST_CASE("model: forward and backward are deterministic") {
    test::Harness a(tiny_config(), 2, 8, 3), b(tiny_config(), 2, 8, 3);
    CHECK(a.loss() == b.loss());
    CHECK(a.grads() == b.grads());
}

TEST_CASE("model: a shorter call than planned gives the same loss as a model planned for it") {
    // Sampling runs B=1 and growing T inside activations planned for the training batch.
    ModelConfig m = tiny_config();
    test::Harness small(m, 1, 5, 11);
    GPT big(m, 2, 8);
    auto ops = make_cpu_ops(1);
    ops->allocate(big.memory_plan());
    auto init = big.params().initial_values(11);
    ops->upload(Ten{Space::Param, 0, init.size()}, init.data());
    Rng rng(12);
    std::vector<int32_t> x(5), y(5);
    for (int i = 0; i < 5; ++i) {
        x[i] = int32_t(rng.next_u64() % 61);
        y[i] = int32_t(rng.next_u64() % 61);
    }
    small.model.set_batch(*small.ops, x.data(), y.data(), 1, 5);
    big.set_batch(*ops, x.data(), y.data(), 1, 5);
    StepContext c{ops.get(), 1, 5, false, 0};
    StepContext cs{small.ops.get(), 1, 5, false, 0};
    CHECK(big.forward(c, 0.f) == doctest::Approx(small.model.forward(cs, 0.f)).epsilon(1e-6));
}
