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
#include "train/session.h"
#include "train/train_step.h"
#include "model_harness.h"

using namespace gpt;
using gpt::test::Harness;
using gpt::test::check_every_gradient;

namespace {

// The tiny base every step is derived from (widths scale with n_embd as in ablation.cpp:
// 3072 -> 128, 2560 -> 107, ...). L = 16 and W = 4 < T so that the RA+MLA band cuts rows.
ModelConfig tiny_base() {
    ModelConfig m = gpt::test::tiny_model();
    m.mla.latent = 16;
    m.mla.ra_band = 4;
    m.m2_rank = 8;
    return m;
}

std::vector<AblationStep> tiny_steps() { return ratio_ablation_steps(tiny_base(), OptimConfig{}); }


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

namespace {

// Set every parameter whose name ends with `suffix` to `value`.
void set_param(Harness& h, const std::string& suffix, float value) {
    std::vector<float> p = h.params();
    for (const auto& s : h.model.params().specs())
        if (s.name.size() >= suffix.size() && s.name.compare(s.name.size() - suffix.size(), suffix.size(), suffix) == 0)
            for (size_t i = 0; i < s.numel(); ++i) p[s.t.off + i] = value;
    h.set_params(p);
}

void scale_param(Harness& h, const std::string& name, float factor) {
    std::vector<float> p = h.params();
    const auto& s = h.model.params().get(name);
    for (size_t i = 0; i < s.numel(); ++i) p[s.t.off + i] *= factor;
    h.set_params(p);
}

// One FD check of a tiny model (the ablation base with overrides), optionally sharpened.
void check_variant(const ModelConfig& m, float sharpen = 1.f) {
    Harness h(m, 2, 16, 7);
    if (sharpen != 1.f) sharpen_attention(h, sharpen);
    CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
}

// Sum of |gradient| over the tensors of the attention input projections.
double qk_grad_mass(Harness& h) {
    const std::vector<float> g = h.grads();
    double s = 0;
    for (const auto& spec : h.model.params().specs())
        if (spec.name.find("attn.c_attn.weight") != std::string::npos || spec.name.find("attn.w_q.") != std::string::npos)
            for (size_t i = 0; i < spec.numel(); ++i) s += std::fabs(g[spec.t.off + i]);
    return s;
}

}  // namespace

TEST_CASE("model variants: RA options outside the ablation (per-head, fixed gates, full transpose, low rank)") {
    ModelConfig m = tiny_base();
    m.attention = AttentionKind::ra;
    SUBCASE("per-head learnable gates, band 3") {
        m.ra.band = 3;
        check_variant(m);
    }
    SUBCASE("fixed gates, full transpose: no gate parameters") {
        m.ra.learnable = false;
        GPT g(m, 1, 4);
        CHECK_FALSE(g.params().has("h.0.attn.ra.g_std"));
        check_variant(m);
    }
    SUBCASE("same-FLOP low rank R = 4, full and banded") {
        m.attention = AttentionKind::ra_lowrank;
        m.ra.rank = 4;
        check_variant(m);
        m.ra.band = 3;
        m.ra.gates = GateScope::per_layer;
        check_variant(m);
    }
}

TEST_CASE("model variants: MLA and RA+MLA with shared maps") {
    ModelConfig m = tiny_base();
    m.mla.shared_maps = true;
    for (AttentionKind k : {AttentionKind::mla, AttentionKind::ra_mla}) {
        m.attention = k;
        GPT g(m, 1, 4);
        CHECK(g.params().get("h.0.attn.q_map").shape == std::vector<int64_t>{1, 16, 16});
        check_variant(m);
    }
}

TEST_CASE("model variants: RA-CT statistics, apply modes, head averaging and detach") {
    // At init (scale 1, bias 2, near-uniform rows) the gate hardly moves with the statistic, so a
    // missing statistic gradient would go unnoticed. For the smooth statistics the test sharpens
    // the attention and makes the gate steep, checks that the statistic then carries a visible
    // share of the q/k gradient (detach = true removes it), and checks FD on every tensor.
    // Selection statistics (topk, max) have kinks: they are checked mildly sharpened, at init.
    ModelConfig m = tiny_base();
    m.ract.enabled = true;
    m.ra.rank = 4;
    struct Case {
        AttentionKind kind;
        RactStat stat;
        RactApply apply;
        bool head_average;
    };
    for (Case c : {Case{AttentionKind::baseline, RactStat::entropy, RactApply::output, false},
                   Case{AttentionKind::ra, RactStat::entropy, RactApply::weights, true},
                   Case{AttentionKind::mla, RactStat::rms, RactApply::weights, true},
                   Case{AttentionKind::ra_mla, RactStat::entropy, RactApply::output, false},
                   Case{AttentionKind::ra_lowrank, RactStat::entropy, RactApply::output, false},
                   Case{AttentionKind::baseline, RactStat::max, RactApply::output, false},
                   Case{AttentionKind::ra_mla, RactStat::topk, RactApply::weights, true}}) {
        m.attention = c.kind;
        m.ract.stat = c.stat;
        m.ract.apply = c.apply;
        m.ract.head_average = c.head_average;
        m.ract.detach = false;
        CAPTURE(int(c.kind));
        CAPTURE(int(c.stat));
        if (c.stat == RactStat::topk || c.stat == RactStat::max) {
            check_variant(m, 4.f);
            continue;
        }
        Harness h(m, 2, 16, 7);
        sharpen_attention(h, 8.f);
        set_param(h, "ract.scale", 8.f);
        set_param(h, "ract.bias", -3.f);
        CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
        const double attached = qk_grad_mass(h);
        ModelConfig md = m;
        md.ract.detach = true;
        Harness hd(md, 2, 16, 7);
        hd.set_params(h.params());
        CHECK(std::fabs(qk_grad_mass(hd) - attached) > 1e-4 * attached);
        // Detached, the analytic gradient leaves out a real dependence, so FD is checked where
        // that dependence is negligible (at init).
        check_variant(md);
    }
}

TEST_CASE("model variants: RA-CT entropy from the attention's own output equals the flash-style pass") {
    // Without dropout the entropy comes from an attention on the values [v, k] (ops.h
    // ract_entropy_fwd); GPT_RACT_ENTROPY=recompute keeps the pass over the logits. Same math, so in
    // fp32 the loss and every gradient agree to rounding, for both apply modes, detached or not,
    // and on every kind where the form applies (same-FLOP RA folds inside the head: Dqk = D).
    ModelConfig m = tiny_base();
    m.ract.enabled = true;
    m.ract.stat = RactStat::entropy;
    m.ra.rank = 4;
    for (AttentionKind kind : {AttentionKind::baseline, AttentionKind::ra_lowrank})
        for (RactApply apply : {RactApply::output, RactApply::weights})
            for (bool detach : {false, true}) {
                m.attention = kind;
                m.ract.apply = apply;
                m.ract.detach = detach;
                CAPTURE(int(kind));
                CAPTURE(int(apply));
                CAPTURE(detach);
                Harness fast(m, 2, 16, 7);
                ::setenv("GPT_RACT_ENTROPY", "recompute", 1);
                Harness slow(m, 2, 16, 7);
                ::unsetenv("GPT_RACT_ENTROPY");
                REQUIRE(fast.model.activations().size(Space::Act) != slow.model.activations().size(Space::Act));   // two forms
                sharpen_attention(fast, 8.f);
                set_param(fast, "ract.scale", 8.f);
                set_param(fast, "ract.bias", -3.f);
                slow.set_params(fast.params());
                CHECK(fast.loss() == doctest::Approx(slow.loss()).epsilon(1e-6));
                const std::vector<float> gf = fast.grads(), gs = slow.grads();
                double num = 0, den = 0, worst = 0;
                for (size_t i = 0; i < gf.size(); ++i) {
                    num += double(gf[i] - gs[i]) * (gf[i] - gs[i]);
                    den += double(gs[i]) * gs[i];
                    worst = std::max(worst, double(std::fabs(gf[i] - gs[i])));
                }
                CHECK(std::sqrt(num / den) < 1e-5);
                CHECK(worst < 1e-5);
            }
}

TEST_CASE("model variants: finite differences with dropout 0.1 (RA + M1 + M2, RA+MLA + RA-CT + M1 + M2)") {
    for (int id : {7, 16}) {
        ModelConfig m = tiny_steps()[size_t(id)].model;
        m.dropout = 0.1f;
        CAPTURE(id);
        check_variant(m, 4.f);
    }
}

TEST_CASE("model variants: nothing is carried from one batch to the next (M1, M2, RA-CT)") {
    // The prototype read M1's gate from the previous batch; here each pass is self-contained.
    Harness h(tiny_steps()[16].model, 2, 16, 3);
    const double a = h.model.forward(h.ctx(), 0.f);
    const auto ga = h.grads();
    h.load_batch(1234);
    const double b = h.model.forward(h.ctx(), 0.f);
    h.grads();
    h.load_batch(4);   // Harness(seed 3) loaded the batch of seed 4
    CHECK(h.model.forward(h.ctx(), 0.f) == a);
    CHECK(h.grads() == ga);
    CHECK(a != b);
}

TEST_CASE("model variants: options that are not wired are refused with the option's name") {
    ModelConfig m = tiny_base();
    m.m3 = true;   // M3 needs MLA
    CHECK_THROWS_WITH_AS(GPT(m, 1, 4), doctest::Contains("model.m3"), Error);
    m = tiny_base();
    m.ra.discoverability = true;   // an RA option on baseline attention
    CHECK_THROWS_WITH_AS(GPT(m, 1, 4), doctest::Contains("model.ra.discoverability"), Error);
    m.attention = AttentionKind::ra;
    m.ra.discoverability = false;
    m.ra.route_threshold = 0.1f;
    CHECK_THROWS_WITH_AS(GPT(m, 1, 4), doctest::Contains("model.ra.route_threshold"), Error);
    m = tiny_base();
    m.attention = AttentionKind::ra_lowrank;
    m.ra.rank = 16;   // = head dim
    CHECK_THROWS_WITH_AS(GPT(m, 1, 4), doctest::Contains("model.ra.rank"), Error);
}

TEST_CASE("model variants: M3 latent reciprocity (MLA, RA+MLA with every other mechanism)") {
    ModelConfig m = tiny_base();
    m.m3 = true;
    for (AttentionKind k : {AttentionKind::mla, AttentionKind::ra_mla}) {
        m.attention = k;
        if (k == AttentionKind::ra_mla) {
            m.m1 = m.m2 = true;
            m.ract.enabled = true;
            m.ract.stat = RactStat::entropy;
        }
        CAPTURE(int(k));
        GPT g(m, 1, 4);
        const ParamTable want = spec_parameters(m);
        REQUIRE(g.params().specs().size() == want.specs().size());
        for (size_t i = 0; i < want.specs().size(); ++i) {
            CHECK(g.params().specs()[i].name == want.specs()[i].name);
            CHECK(g.params().specs()[i].shape == want.specs()[i].shape);
        }
        CHECK_FALSE(g.params().has("h.1.mlp.m3.alpha_next"));   // the last block hands nothing on
        // At init (C ~ 0.02, alphas 0.2) the M3 paths are too weak for FD to see them in the
        // gradients of the other tensors; make C and the alphas large.
        Harness h(m, 2, 16, 7);
        scale_param(h, "h.0.mlp.m3.c", 25.f);
        set_param(h, "m3.alpha", 1.f);
        set_param(h, "m3.alpha_next", 1.f);
        CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
    }
}

TEST_CASE("model variants: M1 and M2 hand-over paths with strong mechanisms") {
    // At init the gate (alpha_1 = 0.1, W ~ 0.02) barely depends on block 0's hidden: with large
    // weights and alpha_1 = 1 the path back from block 1's attention into block 0's MLP is a
    // visible part of the gradients, so FD checks it.
    for (int id : {4, 12}) {
        CAPTURE(id);
        Harness h(tiny_steps()[size_t(id)].model, 2, 16, 7);
        scale_param(h, "h.0.mlp.m1.w1", 25.f);
        scale_param(h, "h.0.mlp.m1.w2", 25.f);
        set_param(h, "m1_alpha", 1.f);
        set_param(h, "m2.alpha", 1.f);
        CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
    }
}

TEST_CASE("model variants: RA discoverability bias (exact and low rank, banded)") {
    ModelConfig m = tiny_base();
    m.ra.discoverability = true;
    m.ra.band = 3;
    m.ra.rank = 4;
    for (AttentionKind k : {AttentionKind::ra, AttentionKind::ra_lowrank}) {
        m.attention = k;
        CAPTURE(int(k));
        GPT g(m, 1, 4);
        CHECK(g.params().get("h.1.attn.ra.disc_u").shape == std::vector<int64_t>{2, 16});
        CHECK(g.describe().find("discoverability") != std::string::npos);
        // u ~ 0.02 makes the bias tiny at init: strengthen it so FD sees its path into k.
        Harness h(m, 2, 16, 7);
        scale_param(h, "h.0.attn.ra.disc_u", 50.f);
        scale_param(h, "h.1.attn.ra.disc_u", 50.f);
        set_param(h, "ra.g_disc", 2.f);
        CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
    }
}

TEST_CASE("model variants: attention FLOPs follow the operands' widths") {
    ModelConfig m = tiny_base();
    const int T = 16;
    auto attention_flops = [&](const ModelConfig& c) {
        GPT g(c, 1, T);
        size_t n = 0;
        for (const auto& s : g.params().specs()) n += s.numel();
        n -= g.params().get("wpe.weight").numel();
        return g.flops_per_token(T) - 6.0 * double(n);
    };
    const double base = attention_flops(m);
    CHECK(base == doctest::Approx(6.0 * m.n_layer * m.n_embd * T));   // the GPT-2 rule
    m.attention = AttentionKind::ra;                                  // Dqk = 2D, Dv = D
    CHECK(attention_flops(m) == doctest::Approx(1.5 * base));
    m.attention = AttentionKind::mla;                                 // Dqk = Dv = L = 16 = D here
    CHECK(attention_flops(m) == doctest::Approx(base));
    m.attention = AttentionKind::ra_mla;                              // Dqk = 2L, Dv = D
    CHECK(attention_flops(m) == doctest::Approx(1.5 * base));
}

TEST_CASE("model variants: every ablation step learns a fixed batch (loss falls by half in 40 steps)") {
    // Memorising one batch of a repeating pattern: a model whose gradients were wrong or whose
    // mechanisms broke the forward would not get there.
    for (const AblationStep& s : tiny_steps()) {
        CAPTURE(s.name);
        RunConfig cfg;
        cfg.model = s.model;
        cfg.train.optim = s.optim;
        cfg.train.optim.lr = 3e-3f;
        cfg.train.optim.warmup_iters = 5;
        cfg.train.optim.prune_sparsity = 0.f;   // pruning is the optimizer's, tested elsewhere
        cfg.train.max_iters = 40;
        cfg.train.device = "cpu";
        cfg.train.threads = 1;
        cfg.train.batch_size = 2;
        cfg.train.seq_len = 16;
        cfg.train.grad_accum = 1;
        Session session(cfg, 2, 16, true);
        auto batch = [](int32_t* in, int32_t* tg) {
            for (int i = 0; i < 32; ++i) {
                in[i] = (i * 7) % 13;
                tg[i] = (i * 7 + 7) % 13;
            }
        };
        const double first = train_step(session, 1, batch).loss;
        double last = first;
        for (int step = 2; step <= 40; ++step) last = train_step(session, step, batch).loss;
        CHECK(std::isfinite(last));
        CHECK(last < 0.5 * first);
    }
}

TEST_CASE("model variants: a call shorter than planned (sampling) equals a model planned for it") {
    // The shared probabilities, M1/M2 links and gate buffers are laid out by the call's B x T.
    for (int id : {7, 16}) {
        CAPTURE(id);
        const ModelConfig m = tiny_steps()[size_t(id)].model;
        Harness small(m, 1, 5, 11), big(m, 2, 16, 11);
        std::vector<int32_t> x = {3, 1, 4, 1, 5}, y = {9, 2, 6, 5, 3};
        small.model.set_batch(*small.ops, x.data(), y.data(), 1, 5);
        big.model.set_batch(*big.ops, x.data(), y.data(), 1, 5);
        const StepContext cs{small.ops.get(), 1, 5, false, 0}, cb{big.ops.get(), 1, 5, false, 0};
        CHECK(big.model.forward(cb, 0.f) == doctest::Approx(small.model.forward(cs, 0.f)).epsilon(1e-6));
        const auto lb = big.model.last_logits(cb), ls = small.model.last_logits(cs);
        REQUIRE(lb.size() == ls.size());
        for (size_t i = 0; i < lb.size(); ++i) CHECK(lb[i] == doctest::Approx(ls[i]).epsilon(1e-5).scale(1e-3));
    }
}
