// Same-FLOP RA's two computational forms (model.ra.lowrank_form, src/model/attention_ra.h): the
// rows form folds each token's q, k after c_attn; the weights form folds c_attn's weights once per
// step, so c_attn writes q̃, k̃ directly. They are the same model: same parameters (names, shapes,
// init), the same loss and the same gradients up to fp32 rounding, for per-head and per-layer,
// learnable and fixed gates, several ranks, with dropout. The weights form also passes the
// finite-difference check on its own.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/attention_ra.h"
#include "model/gpt.h"
#include "train/config_io.h"
#include "model_harness.h"

using namespace gpt;
using gpt::test::Harness;
using gpt::test::check_every_gradient;
using gpt::test::check_same_loss_and_grads;
using gpt::test::check_same_parameters;

namespace {

ModelConfig tiny_lowrank(int rank) {
    ModelConfig m = gpt::test::tiny_model();   // D = 16
    m.attention = AttentionKind::ra_lowrank;
    m.ra.rank = rank;
    return m;
}

ModelConfig with_form(ModelConfig m, RaLowRankForm f) {
    m.ra.lowrank_form = f;
    return m;
}

// Gates away from their shared init, and a non-zero c_attn bias, so that every path matters.
void perturb(Harness& h) {
    std::vector<float> p = h.params();
    for (const auto& s : h.model.params().specs()) {
        const bool gate = s.name.find("ra.g_") != std::string::npos, bias = s.name.find("c_attn.bias") != std::string::npos;
        if (!gate && !bias) continue;
        for (size_t i = 0; i < s.numel(); ++i)
            p[s.t.off + i] = gate ? 0.2f + 0.15f * float(i % 5) : 0.05f * std::sin(0.7f * float(i));
    }
    h.set_params(p);
}

void compare_forms(const ModelConfig& m) {
    Harness rows(with_form(m, RaLowRankForm::rows), 2, 16, 11), wts(with_form(m, RaLowRankForm::weights), 2, 16, 11);
    REQUIRE(rows.model.describe().find("rows form") != std::string::npos);
    REQUIRE(wts.model.describe().find("weights form") != std::string::npos);
    check_same_parameters(rows, wts);
    perturb(rows);
    perturb(wts);
    check_same_loss_and_grads(rows, wts);
}

}  // namespace

TEST_CASE("ra lowrank forms: auto picks the weights form unless the discoverability bias needs the keys") {
    ModelConfig m = tiny_lowrank(4);
    CHECK(ra_lowrank_weights_form(m));
    m.ra.discoverability = true;
    CHECK_FALSE(ra_lowrank_weights_form(m));
    CHECK_FALSE(ra_lowrank_weights_form(with_form(tiny_lowrank(4), RaLowRankForm::rows)));
    ModelConfig exact = tiny_lowrank(4);
    exact.attention = AttentionKind::ra;   // only same-FLOP RA has the form
    CHECK_FALSE(ra_lowrank_weights_form(exact));
}

TEST_CASE("ra lowrank forms: rows and weights give the same loss and gradients") {
    for (int rank : {1, 4, 15})
        for (GateScope scope : {GateScope::per_head, GateScope::per_layer})
            for (bool learnable : {true, false}) {
                CAPTURE(rank);
                CAPTURE(int(scope));
                CAPTURE(learnable);
                ModelConfig m = tiny_lowrank(rank);
                m.ra.gates = scope;
                m.ra.learnable = learnable;
                compare_forms(m);
            }
    ModelConfig m = tiny_lowrank(8);
    m.dropout = 0.1f;   // attention dropout is indexed by (b, h, i, j): the same in both forms
    compare_forms(m);
}

TEST_CASE("ra lowrank forms: finite-difference gradients of the weights form") {
    for (GateScope scope : {GateScope::per_head, GateScope::per_layer}) {
        CAPTURE(int(scope));
        ModelConfig m = with_form(tiny_lowrank(4), RaLowRankForm::weights);
        m.ra.gates = scope;
        Harness h(m, 2, 16, 7);
        perturb(h);
        CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
    }
}

TEST_CASE("ra lowrank forms: the weights form with the discoverability bias is refused, naming the key") {
    RunConfig c = default_run_config();
    c.model = tiny_lowrank(4);
    c.train.seq_len = 16;
    c.model.ra.discoverability = true;
    c.model.ra.lowrank_form = RaLowRankForm::weights;
    try {
        validate(c);
        FAIL("validate accepted lowrank_form = weights with discoverability");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("model.ra.lowrank_form") != std::string::npos);
        CHECK(msg.find("rows") != std::string::npos);
    }
    c.model.ra.lowrank_form = RaLowRankForm::auto_select;
    CHECK_NOTHROW(validate(c));
}
