// MLA's two computational forms (model.mla.form, src/model/attention_mla.h): the latent form
// (attention of width L on the shared latent) and the expanded form (per-head keys k_lat P_h^T and
// values v_lat U_h, attention of width D). They are the same model: same parameters (names,
// shapes, init), the same loss and the same gradients up to fp32 rounding, for MLA and RA+MLA,
// per-head and shared maps, with M3 and with the ablation's other mechanisms. The expanded form
// also passes the finite-difference check on its own.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/attention_mla.h"
#include "model/gpt.h"
#include "train/ablation.h"
#include "model_harness.h"

using namespace gpt;
using gpt::test::Harness;
using gpt::test::check_every_gradient;
using gpt::test::check_same_loss_and_grads;
using gpt::test::check_same_parameters;

namespace {

// D = 16 < L = 24 (auto picks the expanded form), W = 4 < T so the RA+MLA band cuts rows.
ModelConfig tiny_mla(AttentionKind kind) {
    ModelConfig m = gpt::test::tiny_model();
    m.attention = kind;
    m.mla.latent = 24;
    m.mla.ra_band = 4;
    m.m2_rank = 8;
    return m;
}

ModelConfig with_form(ModelConfig m, MlaForm f) {
    m.mla.form = f;
    return m;
}

// Makes M3's paths (C, the alphas) strong so that they matter in the comparison.
void strengthen_m3(Harness& h) {
    std::vector<float> p = h.params();
    for (const auto& s : h.model.params().specs()) {
        if (s.name == "h.0.mlp.m3.c")   // as test_model_variants.cpp: block 0's C (block 1's stays)
            for (size_t i = 0; i < s.numel(); ++i) p[s.t.off + i] *= 25.f;
        if (s.name.find("m3.alpha") != std::string::npos)   // m3.alpha and m3.alpha_next
            for (size_t i = 0; i < s.numel(); ++i) p[s.t.off + i] = 1.f;
    }
    h.set_params(p);
}

// The same model in both forms, the same weights and batch: loss and every gradient tensor agree.
void compare_forms(const ModelConfig& m, bool strong_m3 = false) {
    Harness lat(with_form(m, MlaForm::latent), 2, 16, 11), exp(with_form(m, MlaForm::expanded), 2, 16, 11);
    REQUIRE(lat.model.describe().find("latent form") != std::string::npos);
    REQUIRE(exp.model.describe().find("expanded form") != std::string::npos);
    check_same_parameters(lat, exp);
    if (strong_m3) {
        strengthen_m3(lat);
        strengthen_m3(exp);
    }
    check_same_loss_and_grads(lat, exp);
}

}  // namespace

TEST_CASE("mla forms: auto picks the form with fewer FLOPs; an explicit form is kept") {
    ModelConfig m = tiny_mla(AttentionKind::mla);
    m.n_embd = 768, m.n_head = 12, m.mla.latent = 128, m.block_size = 1024;   // GPT-2: D = 64 < L
    for (AttentionKind k : {AttentionKind::mla, AttentionKind::ra_mla}) {
        m.attention = k;
        CHECK(mla_expanded(m));
        CHECK(mla_form_flops_per_token(m, true, 1024) < mla_form_flops_per_token(m, false, 1024));
        m.mla.latent = 64;   // D = L: a tie keeps the latent form (one K/V head for MLA)
        CHECK_FALSE(mla_expanded(m));
        m.mla.latent = 32;   // D > L: latent is cheaper
        CHECK_FALSE(mla_expanded(m));
        CHECK(mla_expanded(with_form(m, MlaForm::expanded)));
        m.mla.latent = 128;
        CHECK_FALSE(mla_expanded(with_form(m, MlaForm::latent)));
    }
}

TEST_CASE("mla forms: expanded attention FLOPs are the baseline's (MLA) and RA's (RA+MLA) at D < L") {
    ModelConfig m = tiny_mla(AttentionKind::baseline);
    const int T = 16;
    auto attention_flops = [&](const ModelConfig& c) {
        GPT g(c, 1, T);
        size_t n = 0;
        for (const auto& s : g.params().specs()) n += s.numel();
        n -= g.params().get("wpe.weight").numel();
        return g.flops_per_token(T) - 6.0 * double(n);
    };
    const double base = attention_flops(m);
    m.attention = AttentionKind::mla;
    CHECK(attention_flops(with_form(m, MlaForm::expanded)) == doctest::Approx(base));
    CHECK(attention_flops(with_form(m, MlaForm::latent)) == doctest::Approx(base * 24 / 16));   // L / D
    m.attention = AttentionKind::ra_mla;
    CHECK(attention_flops(with_form(m, MlaForm::expanded)) == doctest::Approx(1.5 * base));
}

TEST_CASE("mla forms: latent and expanded give the same loss and gradients (MLA, RA+MLA; maps; M3)") {
    for (AttentionKind k : {AttentionKind::mla, AttentionKind::ra_mla})
        for (bool shared : {false, true})
            for (bool m3 : {false, true}) {
                CAPTURE(int(k));
                CAPTURE(shared);
                CAPTURE(m3);
                ModelConfig m = tiny_mla(k);
                m.mla.shared_maps = shared;
                m.m3 = m3;
                compare_forms(m, m3);
            }
}

TEST_CASE("mla forms: the same with dropout 0.1, a full-transpose RA+MLA, and a model planned longer") {
    ModelConfig m = tiny_mla(AttentionKind::ra_mla);
    m.dropout = 0.1f;   // the dropout masks are indexed by (b, h, i, j): the same in both forms
    compare_forms(m);
    m.mla.ra_band = 0;
    m.dropout = 0.f;
    compare_forms(m);
    m.attention = AttentionKind::mla;
    m.dropout = 0.1f;
    compare_forms(m);
}

TEST_CASE("mla forms: every MLA ablation step (RA-CT, M1, M2 on top) agrees between the forms") {
    ModelConfig base = tiny_mla(AttentionKind::baseline);
    for (const AblationStep& s : ratio_ablation_steps(base, OptimConfig{})) {
        if (s.model.attention != AttentionKind::mla && s.model.attention != AttentionKind::ra_mla) continue;
        CAPTURE(s.name);
        compare_forms(s.model);
    }
}

TEST_CASE("mla forms: finite-difference gradients of the expanded form") {
    for (AttentionKind k : {AttentionKind::mla, AttentionKind::ra_mla})
        for (bool shared : {false, true}) {
            CAPTURE(int(k));
            CAPTURE(shared);
            ModelConfig m = with_form(tiny_mla(k), MlaForm::expanded);
            m.mla.shared_maps = shared;
            m.m3 = shared;   // M3 once per kind, on the shared-map model
            Harness h(m, 2, 16, 7);
            REQUIRE(h.model.describe().find("expanded form") != std::string::npos);
            if (m.m3) strengthen_m3(h);
            CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
        }
}
