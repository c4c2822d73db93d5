// train.recompute on the CUDA backend, against the same model on the same backend keeping every
// activation: the LayerNorm recomputation is the forward's own deterministic kernel on the same
// input, so the loss and every gradient must be bit-identical; the GELU recomputation takes GELU
// of the bf16 pre-activation where the forward's cuBLASLt epilogue rounded GELU of the fp32
// accumulator, so h may differ by one bf16 rounding: each gradient tensor within 1% relative L2.
// Also: a plan larger than the GPU is refused before allocating, with the numbers and the fix.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "gpu_test_util.h"
#include "model/gpt.h"

using namespace gpt;
using namespace gpt::gputest;

namespace {

ModelConfig gpu_model(bool mechanisms) {
    ModelConfig m;
    m.n_layer = 3;
    m.n_embd = 128;
    m.n_head = 2;
    m.vocab_size = 1000;
    m.padded_vocab = 1024;
    m.block_size = 128;
    m.mlp_hidden = 512;
    m.dropout = 0.1f;
    if (mechanisms) {   // M1 and M2 read the MLP hidden (M3 needs MLA: covered on the CPU)
        m.m1 = m.m2 = true;
        m.m2_rank = 32;
    }
    return m;
}

struct Result {
    double loss = 0;
    std::vector<float> grads;
};

Result run(const ModelConfig& m, Recompute r, int B, int T) {
    GPT model(m, B, T, r);
    std::unique_ptr<Ops> ops = make_cuda_ops();
    ops->allocate(model.memory_plan());
    const std::vector<float> init = model.params().initial_values(2024);
    ops->upload(Ten{Space::Param, 0, init.size()}, init.data());
    ops->params_changed();
    std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
    Rng rng(7);
    for (size_t i = 0; i < x.size(); ++i) {
        x[i] = int32_t(rng.next_u64() % uint64_t(m.vocab_size));
        y[i] = int32_t(rng.next_u64() % uint64_t(m.vocab_size));
    }
    model.set_batch(*ops, x.data(), y.data(), B, T);
    const StepContext c{ops.get(), B, T, true, 99};
    Result out;
    out.loss = model.forward(c, 1.f / float(B * T));
    model.backward(c);
    out.grads.resize(model.params().total());
    ops->download(Ten{Space::Grad, 0, out.grads.size()}, out.grads.data());
    return out;
}

}  // namespace

TEST_CASE("gpu recompute: layernorm is bit-identical, gelu and both match within bf16 rounding") {
    GPT_REQUIRE_GPU();
    for (bool mechanisms : {false, true}) {
        CAPTURE(mechanisms);
        const ModelConfig m = gpu_model(mechanisms);
        const int B = 4, T = 128;
        const Result kept = run(m, Recompute::none, B, T);
        const Result ln = run(m, Recompute::layernorm, B, T);
        CHECK(std::memcmp(&kept.loss, &ln.loss, sizeof(double)) == 0);
        CHECK(std::memcmp(kept.grads.data(), ln.grads.data(), kept.grads.size() * sizeof(float)) == 0);
        for (Recompute r : {Recompute::gelu, Recompute::both}) {
            CAPTURE(recompute_name(r));
            const Result rec = run(m, r, B, T);
            CHECK(std::memcmp(&kept.loss, &rec.loss, sizeof(double)) == 0);   // the forward is unchanged
            GPT names(m, 1, 1);
            for (const auto& s : names.params().specs()) {
                CAPTURE(s.name);
                const std::vector<float> a(kept.grads.begin() + s.t.off, kept.grads.begin() + s.t.off + s.numel());
                const std::vector<float> b(rec.grads.begin() + s.t.off, rec.grads.begin() + s.t.off + s.numel());
                CHECK(rel_l2(b, a) < 1e-2);
            }
        }
    }
}

TEST_CASE("gpu recompute: a plan larger than the GPU is refused before allocating, naming the fix") {
    GPT_REQUIRE_GPU();
    std::unique_ptr<Ops> ops = make_cuda_ops();
    MemoryPlan plan;
    plan[Space::Param] = 1 << 20;
    plan[Space::Grad] = 1 << 20;
    plan[Space::Act] = size_t(1) << 40;   // 2 TiB of bf16
    plan[Space::Index] = 1 << 16;
    const size_t before = ops->memory_in_use();
    try {
        ops->allocate(plan);
        FAIL("a 2 TiB plan was allocated");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CAPTURE(msg);
        CHECK(msg.find("does not fit on the GPU") != std::string::npos);
        CHECK(msg.find("Act 2048.00") != std::string::npos);
        CHECK(msg.find("GiB free of") != std::string::npos);
        CHECK(msg.find("train.grad_accum") != std::string::npos);
        CHECK(msg.find("train.recompute") != std::string::npos);
    }
    CHECK(ops->memory_in_use() == before);   // nothing was allocated
}
