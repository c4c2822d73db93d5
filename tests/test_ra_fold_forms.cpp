// Exact RA's two places for the fold (model.ra.fold, src/model/attention_ra.h): q̃, k̃ written to
// memory by ra_fold_fwd before the attention (materialized), or built inside the attention kernel
// from the packed q, k (kernel: ops.h ra_attention_fwd/bwd, whose CPU twin is that composition).
// They are the same model: the same parameters, loss and gradients, for per-head and per-layer,
// learnable and fixed gates, with a band and with dropout; the in-kernel form has no q̃, k̃ buffers
// and passes the finite-difference check on its own. The CUDA kernel is checked against this CPU
// form in tests/gpu/test_cuda_attention.cpp.
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

ModelConfig tiny_ra(RaFold fold) {
    ModelConfig m = gpt::test::tiny_model();   // D = 16
    m.attention = AttentionKind::ra;
    m.ra.fold = fold;
    return m;
}

// Gates away from their shared init, so that each gate's own path matters.
void perturb_gates(Harness& h) {
    std::vector<float> p = h.params();
    for (const auto& s : h.model.params().specs()) {
        if (s.name.find("ra.g_") == std::string::npos) continue;
        for (size_t i = 0; i < s.numel(); ++i) p[s.t.off + i] = 0.2f + 0.15f * float(i % 5);
    }
    h.set_params(p);
}

void compare_folds(const ModelConfig& m) {
    ModelConfig a = m, b = m;
    a.ra.fold = RaFold::materialized;
    b.ra.fold = RaFold::kernel;
    Harness mat(a, 2, 16, 13), ker(b, 2, 16, 13);
    REQUIRE(ker.model.describe().find("inside the kernel") != std::string::npos);
    REQUIRE(mat.model.describe().find("inside the kernel") == std::string::npos);
    check_same_parameters(mat, ker);
    perturb_gates(mat);
    perturb_gates(ker);
    check_same_loss_and_grads(mat, ker);
}

}  // namespace

TEST_CASE("ra fold forms: auto folds inside the kernel only where our kernels run and nothing reads q~, k~") {
    ModelConfig m = tiny_ra(RaFold::auto_select);
    CHECK_FALSE(ra_fold_in_kernel(m));   // attention_impl auto: cuDNN takes the materialised fold
    m.attention_impl = AttentionImpl::ours;
    CHECK(ra_fold_in_kernel(m));
    ModelConfig with_ract = m;
    with_ract.ract.enabled = true;
    CHECK_FALSE(ra_fold_in_kernel(with_ract));
    ModelConfig with_m2 = m;
    with_m2.m2 = true;
    CHECK_FALSE(ra_fold_in_kernel(with_m2));
    ModelConfig with_disc = m;
    with_disc.ra.discoverability = true;
    CHECK_FALSE(ra_fold_in_kernel(with_disc));
    ModelConfig lowrank = m;
    lowrank.attention = AttentionKind::ra_lowrank;
    CHECK_FALSE(ra_fold_in_kernel(lowrank));
    CHECK(ra_fold_in_kernel(tiny_ra(RaFold::kernel)));
    ModelConfig mat = m;
    mat.ra.fold = RaFold::materialized;
    CHECK_FALSE(ra_fold_in_kernel(mat));
}

TEST_CASE("ra fold forms: materialized and in-kernel give the same loss and gradients") {
    for (GateScope scope : {GateScope::per_head, GateScope::per_layer})
        for (bool learnable : {true, false})
            for (int band : {0, 3}) {
                CAPTURE(int(scope));
                CAPTURE(learnable);
                CAPTURE(band);
                ModelConfig m = tiny_ra(RaFold::auto_select);
                m.ra.gates = scope;
                m.ra.learnable = learnable;
                m.ra.band = band;
                compare_folds(m);
            }
    ModelConfig m = tiny_ra(RaFold::auto_select);
    m.dropout = 0.1f;   // attention dropout is indexed by (b, h, i, j): the same in both forms
    m.ra.band = 5;
    compare_folds(m);
}

TEST_CASE("ra fold forms: the in-kernel form plans no q~, k~ and passes the finite-difference check") {
    Harness mat(tiny_ra(RaFold::materialized), 2, 16, 5), ker(tiny_ra(RaFold::kernel), 2, 16, 5);
    CHECK(ker.model.memory_plan()[Space::Act] < mat.model.memory_plan()[Space::Act]);
    for (GateScope scope : {GateScope::per_head, GateScope::per_layer}) {
        CAPTURE(int(scope));
        ModelConfig m = tiny_ra(RaFold::kernel);
        m.ra.gates = scope;
        m.ra.band = 4;
        Harness h(m, 2, 16, 7);
        perturb_gates(h);
        CHECK(check_every_gradient(h) == int(h.model.params().specs().size()));
    }
}

TEST_CASE("ra fold forms: the in-kernel fold where something needs q~, k~ is refused, naming the key") {
    auto refused = [](auto change, const char* expect) {
        RunConfig c = default_run_config();
        c.model = tiny_ra(RaFold::kernel);
        c.train.seq_len = 16;
        change(c.model);
        try {
            validate(c);
            FAIL("validate accepted model.ra.fold = kernel");
        } catch (const Error& e) {
            const std::string msg = e.what();
            CAPTURE(msg);
            CHECK(msg.find("model.ra.fold") != std::string::npos);
            CHECK(msg.find(expect) != std::string::npos);
            CHECK(msg.find("materialized") != std::string::npos);
        }
    };
    refused([](ModelConfig& m) { m.ract.enabled = true; }, "RA-CT");
    refused([](ModelConfig& m) { m.m2 = true; }, "M2");
    refused([](ModelConfig& m) { m.ra.discoverability = true; }, "discoverability");
    refused([](ModelConfig& m) { m.attention_impl = AttentionImpl::cudnn; }, "cuDNN");
    refused([](ModelConfig& m) { m.attention = AttentionKind::baseline; }, "not ra");
}
