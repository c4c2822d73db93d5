// Activation recomputation (train.recompute): the gradients are bit-for-bit those of the model that
// keeps every activation (the same ops on the same inputs in the same order on the CPU backend),
// for the baseline, every SPEC §4 ablation step (RA, MLA, RA-CT, M1, M2) and MLA with M1+M2+M3,
// and the memory plan shrinks by exactly the activations no longer kept. Also: the key, and the
// device-memory check that refuses a plan too large before anything is allocated.
#include <doctest/doctest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/rng.h"
#include "cpu/cpu_ops.h"
#include "model/device_fit.h"
#include "model/gpt.h"
#include "train/ablation.h"
#include "train/config_io.h"
#include "model_harness.h"

using namespace gpt;

namespace {

constexpr Recompute kModes[] = {Recompute::gelu, Recompute::layernorm, Recompute::both};

ModelConfig tiny(int layers = 3) {
    ModelConfig m = gpt::test::tiny_model(layers);
    m.mla.latent = 16;
    m.mla.ra_band = 4;
    m.m2_rank = 8;
    return m;
}

struct Run {
    double loss = 0;
    std::vector<float> grads;
    MemoryPlan plan;
    std::string describe;
};

// One forward + backward of a model planned for planB x T, run on B x T (B <= planB) with
// dropout on, from parameters and a batch fixed by `seed`; two micro-steps accumulate, so a
// recomputed buffer left stale by one step would show in the second.
Run run(const ModelConfig& cfg, Recompute r, int planB, int B, int T, uint64_t seed) {
    GPT model(cfg, planB, T, r);
    std::unique_ptr<Ops> ops = make_cpu_ops(1);
    ops->allocate(model.memory_plan());
    const std::vector<float> init = model.params().initial_values(seed);
    ops->upload(Ten{Space::Param, 0, init.size()}, init.data());
    Run out;
    out.plan = model.memory_plan();
    out.describe = model.describe();
    for (int micro = 0; micro < 2; ++micro) {
        Rng rng(seed + 1 + micro);
        std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
        for (size_t i = 0; i < x.size(); ++i) {
            x[i] = int32_t(rng.next_u64() % uint64_t(cfg.vocab_size));
            y[i] = int32_t(rng.next_u64() % uint64_t(cfg.vocab_size));
        }
        model.set_batch(*ops, x.data(), y.data(), B, T);
        const StepContext c{ops.get(), B, T, true, 777 + uint64_t(micro)};
        out.loss += model.forward(c, 1.f / float(B * T));
        model.backward(c);
    }
    out.grads.resize(model.params().total());
    ops->download(Ten{Space::Grad, 0, out.grads.size()}, out.grads.data());
    return out;
}

size_t round64(size_t n) { return (n + 63) / 64 * 64; }

// Act elements the mode stops keeping: Ly hidden [B*T,F] -> one shared, 2 Ly LayerNorm outputs
// [B*T,E] -> one shared (every Act entry starts 64-aligned, and the last one is not among them).
size_t expected_saving(const ModelConfig& m, Recompute r, int B, int T) {
    const size_t BT = size_t(B) * T;
    size_t s = 0;
    if (recompute_gelu(r)) s += size_t(m.n_layer - 1) * round64(BT * m.hidden());
    if (recompute_layernorm(r)) s += size_t(2 * m.n_layer - 1) * round64(BT * m.n_embd);
    return s;
}

// Bitwise, and named: the first differing parameter gradient.
void require_identical(const ModelConfig& cfg, const Run& kept, const Run& recomputed) {
    CHECK(std::memcmp(&kept.loss, &recomputed.loss, sizeof(double)) == 0);
    REQUIRE(kept.grads.size() == recomputed.grads.size());
    const bool same = std::memcmp(kept.grads.data(), recomputed.grads.data(), kept.grads.size() * sizeof(float)) == 0;
    if (!same) {
        GPT names(cfg, 1, 1);
        for (const auto& s : names.params().specs())
            for (size_t i = 0; i < s.numel(); ++i)
                if (std::memcmp(&kept.grads[s.t.off + i], &recomputed.grads[s.t.off + i], sizeof(float)) != 0) {
                    FAIL_CHECK("first different gradient: " << s.name << "[" << i << "] "
                                                            << kept.grads[s.t.off + i] << " vs "
                                                            << recomputed.grads[s.t.off + i]);
                    return;
                }
    }
    CHECK(same);
}

void check_model(const ModelConfig& cfg, int planB, int B, int T) {
    const Run kept = run(cfg, Recompute::none, planB, B, T, 99);
    bool nonzero = false;
    for (float g : kept.grads) nonzero |= g != 0.f;
    REQUIRE(nonzero);
    for (Recompute r : kModes) {
        CAPTURE(recompute_name(r));
        const Run rec = run(cfg, r, planB, B, T, 99);
        require_identical(cfg, kept, rec);
        CHECK(kept.plan[Space::Act] - rec.plan[Space::Act] == expected_saving(cfg, r, planB, T));
        for (Space s : {Space::Param, Space::Grad, Space::Stat, Space::Index}) CHECK(kept.plan[s] == rec.plan[s]);
        CHECK(rec.describe.find(std::string("recompute: ") + recompute_name(r)) != std::string::npos);
    }
}

}  // namespace

TEST_CASE("recompute: baseline gradients are bit-for-bit those of the full model, with a smaller plan") {
    ModelConfig m = tiny();
    m.dropout = 0.1f;
    check_model(m, 2, 2, 16);
    SUBCASE("a call shorter than planned") { check_model(m, 3, 2, 12); }
}

TEST_CASE("recompute: every ablation step (RA, MLA, RA-CT, M1, M2) gives identical gradients") {
    ModelConfig base = tiny(2);
    base.dropout = 0.1f;
    for (const AblationStep& s : ratio_ablation_steps(base, OptimConfig{})) {
        CAPTURE(s.name);
        check_model(s.model, 2, 2, 16);
    }
}

TEST_CASE("recompute: MLA and RA+MLA with M1 + M2 + M3 (they read the MLP hidden) give identical gradients") {
    for (AttentionKind a : {AttentionKind::mla, AttentionKind::ra_mla}) {
        ModelConfig m = tiny();
        m.attention = a;
        m.m1 = m.m2 = m.m3 = true;
        m.ract.enabled = true;
        m.dropout = 0.1f;
        CAPTURE(int(a));
        check_model(m, 2, 2, 16);
    }
}

TEST_CASE("recompute: the printed plan shows the shared buffers and the smaller total") {
    const ModelConfig m = tiny(4);
    const SpaceBytes cuda{{4, 4, 4, 2, 4, 4}};
    GPT kept(m, 4, 16), rec(m, 4, 16, Recompute::both);
    const std::string a = describe_memory(kept.memory_plan(), kept.activations(), cuda, 0);
    const std::string b = describe_memory(rec.memory_plan(), rec.activations(), cuda, 0);
    CHECK(a.find("recompute") == std::string::npos);
    CHECK(b.find("recompute") != std::string::npos);
    CHECK(rec.memory_plan()[Space::Act] < kept.memory_plan()[Space::Act]);
}

TEST_CASE("recompute: train.recompute takes none | gelu | layernorm | both and names them when wrong") {
    RunConfig c = default_run_config();
    CHECK(c.train.recompute == Recompute::none);
    apply_override(c, "train.recompute", "both");
    CHECK(c.train.recompute == Recompute::both);
    apply_override(c, "train.recompute=gelu");
    CHECK(c.train.recompute == Recompute::gelu);
    CHECK(to_yaml(c).find("recompute: gelu") != std::string::npos);
    CHECK_THROWS_WITH_AS(apply_override(c, "train.recompute", "all"),
                         doctest::Contains("train.recompute: 'all' is not allowed; allowed: none, gelu, layernorm, both"),
                         Error);
}

TEST_CASE("device fit: a plan that fits passes; one that does not names the spaces, the memory and the fix") {
    constexpr size_t GiB = size_t(1) << 30;
    DeviceFit f;
    f.space_bytes[int(Space::Param)] = GiB / 2;
    f.space_bytes[int(Space::Grad)] = GiB / 2;
    f.space_bytes[int(Space::Opt)] = GiB;
    f.space_bytes[int(Space::Act)] = 60 * GiB;
    f.space_bytes[int(Space::Stat)] = GiB;
    f.copy_bytes = GiB / 4;
    f.workspace_bytes = GiB / 4;
    f.total_bytes = 80 * GiB;
    f.free_bytes = 79 * GiB;
    CHECK(f.needed() == 63 * GiB + GiB / 2);
    CHECK(device_fit_error(f).empty());

    f.space_bytes[int(Space::Act)] = 120 * GiB;   // activations 121 GiB, the rest 2.5 GiB
    const std::string e = device_fit_error(f);
    CAPTURE(e);
    for (const char* part : {"needs 123.50 GiB", "Param 0.50", "Opt 1.00", "Act 120.00", "Stat 1.00",
                             "Param bf16 copy 0.25", "workspace/scratch estimate 0.25", "79.00 GiB free of 80.00 GiB",
                             "must shrink 1.58x", "divide train.batch_size by 2", "multiply train.grad_accum by 2",
                             "train.recompute", "train.seq_len"})
        CHECK(e.find(part) != std::string::npos);
    CHECK(e.find("already in use") == std::string::npos);

    f.free_bytes = 2 * GiB;   // the parameters alone do not fit, and someone else holds the GPU
    const std::string e2 = device_fit_error(f);
    CAPTURE(e2);
    CHECK(e2.find("78.00 GiB of it is already in use") != std::string::npos);
    CHECK(e2.find("alone need 2.50 GiB") != std::string::npos);
    CHECK(e2.find("smaller model") != std::string::npos);
    CHECK(e2.find("train.batch_size") == std::string::npos);
}
