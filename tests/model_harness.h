// A model on the CPU reference backend with a random batch loaded, and the directional
// finite-difference check of every parameter tensor's gradient (tests/test_model*.cpp).
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "common/rng.h"
#include "cpu/cpu_ops.h"
#include "model/gpt.h"

namespace gpt::test {

// The tiny GPT the CPU model tests start from: n_layer layers of width 32 (2 heads of D = 16), a
// 61-token vocabulary padded to 64, blocks of 16; each test sets its variant on top.
inline ModelConfig tiny_model(int n_layer = 2) {
    ModelConfig m;
    m.n_layer = n_layer;
    m.n_embd = 32;
    m.n_head = 2;
    m.vocab_size = 61;
    m.padded_vocab = 64;
    m.block_size = 16;
    return m;
}

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
            x[i] = int32_t(rng.next_u64() % uint64_t(model.config().vocab_size));
            y[i] = int32_t(rng.next_u64() % uint64_t(model.config().vocab_size));
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

// Directional finite differences per parameter tensor: for a random direction d inside one
// tensor, the derivative of L(p + e d) at e = 0 must equal g . d. Central differences in fp32,
// D(e) = (L(p + e d) - L(p - e d)) / 2e, at e = 1e-3 (the residual stream is O(0.02) at init, so
// LayerNorm makes larger steps leave the linear regime) and 2e, extrapolated (Richardson:
// (4 D(e) - D(2e)) / 3 cancels the e^2 term, which on sharpened attention with dropout reached 20%
// of a small directional derivative, e.g. wte of RA + M1 + M2: D(1e-3) = -0.00547, D(3e-4) =
// -0.00458, g . d = -0.00443; a smaller e instead would amplify the fp32 rounding of the loss) on
// an O(1) loss: tolerance 2% relative + 1e-2 absolute. Returns the number of tensors checked.
inline int check_every_gradient(Harness& h) {
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
        auto central = [&](float e) {
            auto loss_at = [&](float step) {
                std::vector<float> q = p;
                for (size_t i = 0; i < d.size(); ++i) q[spec.t.off + i] += step * d[i];
                h.set_params(q);
                return h.loss();
            };
            return (loss_at(e) - loss_at(-e)) / (2.0 * e);
        };
        const float e = 1e-3f;
        const double fd = (4.0 * central(e) - central(2 * e)) / 3.0;
        h.set_params(p);
        CHECK(gd == doctest::Approx(fd).epsilon(2e-2).scale(1e-2));
        ++checked;
    }
    return checked;
}

inline double rel_l2(const float* a, const float* b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        num += double(a[i] - b[i]) * double(a[i] - b[i]);
        den += double(b[i]) * double(b[i]);
    }
    return std::sqrt(num / std::max(den, 1e-30));
}

// Two computational forms of one model (tests/test_*_forms.cpp): the same parameter tensors
// (names, shapes) with the same initial values.
inline void check_same_parameters(Harness& a, Harness& b) {
    const auto& sa = a.model.params().specs();
    const auto& sb = b.model.params().specs();
    REQUIRE(sa.size() == sb.size());
    for (size_t i = 0; i < sa.size(); ++i) {
        CHECK(sa[i].name == sb[i].name);
        CHECK(sa[i].shape == sb[i].shape);
    }
    CHECK(a.params() == b.params());
}

// ... and the same loss (1e-5 relative) and every gradient tensor within `tol` relative L2 of a's.
inline void check_same_loss_and_grads(Harness& a, Harness& b, double tol = 1e-5) {
    const std::vector<float> ga = a.grads(), gb = b.grads();
    CHECK(b.loss() == doctest::Approx(a.loss()).epsilon(1e-5));
    for (const auto& s : a.model.params().specs()) {
        CAPTURE(s.name);
        const double err = rel_l2(gb.data() + s.t.off, ga.data() + s.t.off, s.numel());
        CAPTURE(err);
        CHECK(err < tol);
    }
}

}  // namespace gpt::test
