// MLP mechanisms M1, M2, M3 (kernels/cpu/variant_mlp.h): finite-difference gradients of every
// input and parameter, causality of the M1 gate, and the sparsified attention of M2.
#include <cmath>

#include "cpu/variant_attention.h"
#include "cpu/variant_head_gate.h"
#include "cpu/variant_mlp.h"
#include "test_variants_util.h"

using namespace gpt;
using namespace gpt::test;

TEST_CASE("variants: GELU derivative matches finite differences") {
    for (double x : {-3.0, -0.7, 0.0, 0.4, 2.5}) {
        const double h = 1e-5, fd = (ref::gelu(x + h) - ref::gelu(x - h)) / (2 * h);
        CHECK(ref::gelu_grad(x) == doctest::Approx(fd).epsilon(1e-8));
    }
}

TEST_CASE("variants: M1 gate and its consumer, gradients of h_fc, W1, W2, b2, ctx, alpha_1") {
    Rng rng(200);
    const int N = 4, F = 6, Hid = 5, H = 3, Dv = 2;
    Vec h_fc = random_vec(size_t(N) * F, rng), W1 = random_vec(size_t(Hid) * F, rng),
        W2 = random_vec(size_t(H) * Hid, rng), b2(H, 2.0), ctx = random_vec(size_t(N) * H * Dv, rng),
        alpha{0.1}, w = random_vec(size_t(N) * H * Dv, rng);
    Vec gate(size_t(N) * H), pre(size_t(N) * Hid), y(ctx.size());
    auto loss = [&] {
        ref::m1_gate_fwd(gate.data(), pre.data(), h_fc.data(), W1.data(), W2.data(), b2.data(), N, F, Hid, H);
        ref::head_gate_fwd(y.data(), ctx.data(), gate.data(), alpha[0], N, H, Dv);
        return dot(w, y);
    };
    loss();
    Vec dgate(gate.size(), 0.0), dctx(ctx.size(), 0.0), dalpha(1, 0.0), dh(h_fc.size(), 0.0),
        dW1(W1.size(), 0.0), dW2(W2.size(), 0.0), db2(H, 0.0);
    ref::head_gate_bwd(dctx.data(), dgate.data(), dalpha.data(), w.data(), ctx.data(), gate.data(), alpha[0], N,
                       H, Dv);
    ref::m1_gate_bwd(dh.data(), dW1.data(), dW2.data(), db2.data(), dgate.data(), gate.data(), pre.data(),
                     h_fc.data(), W1.data(), W2.data(), N, F, Hid, H);
    check_gradients(loss, {{"h_fc", &h_fc, &dh}, {"W1", &W1, &dW1}, {"W2", &W2, &dW2}, {"b2", &b2, &db2},
                           {"ctx", &ctx, &dctx}, {"alpha_1", &alpha, &dalpha}});

    // per token: changing a later token's h_fc leaves earlier gates untouched (the prototype
    // averaged over all positions and leaked the future)
    const Vec before = gate;
    for (int f = 0; f < F; ++f) h_fc[size_t(N - 1) * F + f] += 1.0;
    loss();
    for (size_t e = 0; e < size_t(N - 1) * H; ++e) CHECK(gate[e] == before[e]);
    CHECK(max_abs_diff(gate, before) > 0);
}

TEST_CASE("variants: M2 sparsified head-mean attention is causal, top-k, renormalised") {
    Rng rng(210);
    const int B = 2, H = 2, T = 12, k = 8;
    AttnDims d;
    d.B = B, d.T = T, d.Hq = d.Hkv = H, d.Dqk = d.Dv = 4;
    d.q_stride = d.k_stride = d.v_stride = H * 4;
    d.scale = 0.5f;
    const size_t n = size_t(B) * T * H * 4;
    Vec q = random_vec(n, rng, 2.0), kk = random_vec(n, rng, 2.0), v = random_vec(n, rng), out(n),
        lse(size_t(B) * H * T), probs(size_t(B) * H * T * T), wts(size_t(B) * T * k);
    ref::attention_ref_fwd(out.data(), lse.data(), probs.data(), q.data(), kk.data(), v.data(), d);
    std::vector<int> idx(wts.size());
    ref::m2_sparse_rows(idx.data(), wts.data(), probs.data(), B, H, T, k);
    for (int b = 0; b < B; ++b)
        for (int i = 0; i < T; ++i) {
            const size_t o = (size_t(b) * T + i) * k;
            double sum = 0, kept_min = 1;
            int used = 0;
            for (int t = 0; t < k; ++t) {
                if (idx[o + t] < 0) continue;
                ++used;
                sum += wts[o + t];
                const int j = idx[o + t] - b * T;
                CHECK((j >= 0 && j <= i));
                double mean = 0;
                for (int h = 0; h < H; ++h) mean += probs[((size_t(b) * H + h) * T + i) * T + j] / H;
                kept_min = std::min(kept_min, mean);
            }
            CHECK(used == std::min(k, i + 1));
            CHECK(sum == doctest::Approx(1.0));
            // every dropped entry is no larger than every kept one
            for (int j = 0; j <= i; ++j) {
                bool kept = false;
                for (int t = 0; t < k; ++t) kept |= idx[o + t] == b * T + j;
                double mean = 0;
                for (int h = 0; h < H; ++h) mean += probs[((size_t(b) * H + h) * T + i) * T + j] / H;
                if (!kept) CHECK(mean <= kept_min);
            }
        }
}

TEST_CASE("variants: M2 gradients of h_fc, W_down, W_up, alpha_2 (fixed sparse attention)") {
    Rng rng(220);
    const int B = 2, T = 4, N = B * T, F = 5, r = 3, k = 2;
    // a fixed sparse causal mixing: row i keeps itself and its predecessor
    std::vector<int> idx(size_t(N) * k);
    Vec wts(idx.size());
    for (int b = 0; b < B; ++b)
        for (int i = 0; i < T; ++i) {
            const size_t o = (size_t(b) * T + i) * k;
            idx[o] = b * T + i, wts[o] = i > 0 ? 0.7 : 1.0;
            idx[o + 1] = i > 0 ? b * T + i - 1 : -1, wts[o + 1] = i > 0 ? 0.3 : 0.0;
        }
    Vec h_fc = random_vec(size_t(N) * F, rng), Wd = random_vec(size_t(r) * F, rng),
        Wu = random_vec(size_t(F) * r, rng), alpha{0.3}, w = random_vec(size_t(N) * F, rng);
    Vec out(h_fc.size()), z(size_t(N) * r), agg(z.size());
    auto loss = [&] {
        ref::m2_fwd(out.data(), z.data(), agg.data(), h_fc.data(), Wd.data(), Wu.data(), alpha[0], idx.data(),
                    wts.data(), N, F, r, k);
        return dot(w, out);
    };
    loss();
    Vec dh(h_fc.size(), 0.0), dWd(Wd.size(), 0.0), dWu(Wu.size(), 0.0), da(1, 0.0);
    ref::m2_bwd(dh.data(), dWd.data(), dWu.data(), da.data(), w.data(), h_fc.data(), agg.data(), Wd.data(),
                Wu.data(), alpha[0], idx.data(), wts.data(), N, F, r, k);
    check_gradients(loss, {{"h_fc", &h_fc, &dh}, {"W_down", &Wd, &dWd}, {"W_up", &Wu, &dWu}, {"alpha_2", &alpha, &da}});
}

TEST_CASE("variants: M3 tied C both ways, gradients of h_fc, k_lat, C, alpha_3, alpha_3'") {
    Rng rng(230);
    const int N = 3, F = 5, L = 4;
    Vec h_fc = random_vec(size_t(N) * F, rng), k_lat = random_vec(size_t(N) * L, rng),
        k_next = random_vec(size_t(N) * L, rng), C = random_vec(size_t(F) * L, rng), a3{0.2}, a3n{0.2};
    Vec w1 = random_vec(h_fc.size(), rng), w2 = random_vec(k_next.size(), rng);
    Vec hp, kp;
    auto loss = [&] {
        hp = h_fc, kp = k_next;
        ref::m3_add_fwd(hp.data(), k_lat.data(), C.data(), a3[0], N, F, L, ref::M3Direction::latent_to_hidden);
        ref::m3_add_fwd(kp.data(), h_fc.data(), C.data(), a3n[0], N, F, L, ref::M3Direction::hidden_to_latent);
        return dot(w1, hp) + dot(w2, kp);
    };
    loss();
    Vec dh = w1, dk(k_lat.size(), 0.0), dkn = w2, dC(C.size(), 0.0), da3(1, 0.0), da3n(1, 0.0);
    ref::m3_add_bwd(dk.data(), dC.data(), da3.data(), w1.data(), k_lat.data(), C.data(), a3[0], N, F, L,
                    ref::M3Direction::latent_to_hidden);
    ref::m3_add_bwd(dh.data(), dC.data(), da3n.data(), w2.data(), h_fc.data(), C.data(), a3n[0], N, F, L,
                    ref::M3Direction::hidden_to_latent);
    check_gradients(loss, {{"h_fc", &h_fc, &dh}, {"k_lat", &k_lat, &dk}, {"k_lat_next", &k_next, &dkn},
                           {"C", &C, &dC}, {"alpha_3", &a3, &da3}, {"alpha_3'", &a3n, &da3n}});
}
