// Reference math of the attention variants (kernels/cpu/variant_attention.h): finite-difference
// gradient checks in double for every input and learned parameter, and the folds against RA exact.
// Head widths of 4 make 1/sqrt(D) exact in float, so AttnDims::scale loses nothing in double.
#include <cmath>

#include "common/error.h"
#include "cpu/variant_attention.h"
#include "test_variants_util.h"

using namespace gpt;
using namespace gpt::test;

namespace {

AttnDims plain_dims(int B, int T, int Hq, int Hkv, int Dqk, int Dv) {
    AttnDims d;
    d.B = B, d.T = T, d.Hq = Hq, d.Hkv = Hkv, d.Dqk = Dqk, d.Dv = Dv;
    d.q_stride = Hq * Dqk, d.k_stride = Hkv * Dqk, d.v_stride = Hkv * Dv;
    d.scale = 1.f / std::sqrt(static_cast<float>(Dqk));
    return d;
}

// Runs the reference attention forward and returns sum(w_out * out) + sum(w_p * probs).
struct AttnProbe {
    AttnDims d;
    Vec w_out, w_p;
    Vec out, lse, probs;
    AttnProbe(const AttnDims& dims, Rng& rng) : d(dims) {
        out.resize(size_t(d.B) * d.T * d.Hq * d.Dv);
        lse.resize(size_t(d.B) * d.Hq * d.T);
        probs.resize(size_t(d.B) * d.Hq * d.T * d.T);
        w_out = random_vec(out.size(), rng);
        w_p = random_vec(probs.size(), rng);
    }
    double fwd(const Vec& q, const Vec& k, const Vec& v, const Vec* kb = nullptr, bool use_p = false) {
        ref::attention_ref_fwd(out.data(), lse.data(), probs.data(), q.data(), k.data(), v.data(), d,
                               kb ? kb->data() : nullptr);
        return dot(w_out, out) + (use_p ? dot(w_p, probs) : 0.0);
    }
};

}  // namespace

TEST_CASE("variants: reference attention gradients with band, grouped heads, key bias, dprobs") {
    Rng rng(11);
    AttnDims d = plain_dims(2, 6, 4, 2, 4, 3);
    d.band = 2;
    d.band_split = 1;
    AttnProbe p(d, rng);
    Vec q = random_vec(size_t(d.B) * d.T * d.Hq * d.Dqk, rng);
    Vec k = random_vec(size_t(d.B) * d.T * d.Hkv * d.Dqk, rng);
    Vec v = random_vec(size_t(d.B) * d.T * d.Hkv * d.Dv, rng);
    Vec kb = random_vec(size_t(d.B) * d.T * d.Hq, rng);
    p.fwd(q, k, v, &kb, true);
    Vec dq(q.size()), dk(k.size()), dv(v.size()), dkb(kb.size(), 0.0);
    ref::attention_ref_bwd(dq.data(), dk.data(), dv.data(), dkb.data(), p.w_out.data(), p.lse.data(),
                           q.data(), k.data(), v.data(), d, kb.data(), p.w_p.data());
    check_gradients([&] { return p.fwd(q, k, v, &kb, true); },
                    {{"q", &q, &dq}, {"k", &k, &dk}, {"v", &v, &dv}, {"key_bias", &kb, &dkb}});
}

TEST_CASE("variants: band covering the whole sequence equals no band, band 1 differs") {
    Rng rng(12);
    AttnDims d = plain_dims(1, 5, 2, 2, 4, 4);
    AttnProbe p(d, rng);
    Vec q = random_vec(size_t(d.B) * d.T * d.Hq * d.Dqk, rng), k = random_vec(q.size(), rng),
        v = random_vec(q.size(), rng);
    p.fwd(q, k, v);
    const Vec full = p.out;
    p.d.band = d.T, p.d.band_split = 2;
    p.fwd(q, k, v);
    CHECK(max_abs_diff(full, p.out) < 1e-14);
    p.d.band = 1;
    p.fwd(q, k, v);
    CHECK(max_abs_diff(full, p.out) > 1e-3);
}

TEST_CASE("variants: RA exact gradients (per head / per layer gates, full / banded)") {
    for (int n_gates : {3, 1})
        for (int band : {0, 2}) {
            CAPTURE(n_gates);
            CAPTURE(band);
            Rng rng(20 + n_gates + band);
            const ref::RaDims d{2, 5, 3, 4, band, n_gates};
            const size_t n = size_t(d.B) * d.T * d.H * d.D;
            Vec q = random_vec(n, rng), k = random_vec(n, rng), v = random_vec(n, rng);
            Vec gs = random_vec(size_t(n_gates), rng), gr = random_vec(size_t(n_gates), rng);
            Vec w = random_vec(n, rng), out(n), lse(size_t(d.B) * d.H * d.T);
            auto loss = [&] {
                ref::ra_exact_fwd(out.data(), lse.data(), q.data(), k.data(), v.data(), gs.data(),
                                  gr.data(), d);
                return dot(w, out);
            };
            loss();
            Vec dq(n, 0.0), dk(n, 0.0), dv(n, 0.0), dgs(gs.size(), 0.0), dgr(gr.size(), 0.0);
            ref::ra_exact_bwd(dq.data(), dk.data(), dv.data(), dgs.data(), dgr.data(), w.data(),
                              lse.data(), q.data(), k.data(), v.data(), gs.data(), gr.data(), d);
            check_gradients(loss, {{"q", &q, &dq}, {"k", &k, &dk}, {"v", &v, &dv},
                                   {"g_std", &gs, &dgs}, {"g_rec", &gr, &dgr}});
        }
}

namespace {

// RA through the fold, on a packed qkv buffer [N, 3*H*D] like c_attn's output.
struct FoldedRa {
    int B, T, H, D, band, n_gates;
    Vec qt, kt, out, lse;
    ref::FoldDims fold() const { return {B * T, H, H, D, 3 * H * D, 3 * H * D, n_gates}; }
    AttnDims attn() const { return ref::ra_fold_attn_dims(B, T, H, D, D, band, 3 * H * D); }
    size_t n() const { return size_t(B) * T * H * D; }
    void fwd(const Vec& qkv, const Vec& gs, const Vec& gr) {
        qt.resize(2 * n()), kt.resize(2 * n()), out.resize(n()), lse.resize(size_t(B) * H * T);
        const size_t E = size_t(H) * D;
        ref::ra_fold_fwd(qt.data(), kt.data(), qkv.data(), qkv.data() + E, gs.data(), gr.data(), fold());
        ref::attention_ref_fwd(out.data(), lse.data(), (double*)nullptr, qt.data(), kt.data(),
                               qkv.data() + 2 * E, attn());
    }
    // dqkv, dgs, dgr accumulate
    void bwd(Vec& dqkv, Vec& dgs, Vec& dgr, const Vec& dout, const Vec& qkv, const Vec& gs, const Vec& gr) {
        const size_t E = size_t(H) * D;
        Vec dqt(qt.size()), dkt(kt.size()), dvf(qkv.size(), 0.0);
        ref::attention_ref_bwd(dqt.data(), dkt.data(), dvf.data() + 2 * E, (double*)nullptr, dout.data(),
                               lse.data(), qt.data(), kt.data(), qkv.data() + 2 * E, attn());
        for (size_t r = 0; r < size_t(B) * T; ++r)
            for (size_t c = 0; c < E; ++c) dqkv[r * 3 * E + 2 * E + c] += dvf[r * 3 * E + 2 * E + c];
        ref::ra_fold_bwd(dqkv.data(), dqkv.data() + E, dgs.data(), dgr.data(), dqt.data(), dkt.data(),
                         qkv.data(), qkv.data() + E, gs.data(), gr.data(), fold());
    }
};

}  // namespace

TEST_CASE("variants: RA fold equals RA exact, forward and backward, full and banded") {
    for (int band : {0, 1, 3}) {
        CAPTURE(band);
        Rng rng(30 + band);
        FoldedRa f{2, 6, 3, 4, band, 3, {}, {}, {}, {}};
        const size_t n = f.n(), E = size_t(f.H) * f.D, N = size_t(f.B) * f.T;
        Vec qkv = random_vec(3 * n, rng);
        Vec gs{0.5, 0.9, 1.3}, gr{0.3, 0.02, 1.1};
        f.fwd(qkv, gs, gr);
        // the same tensors unpacked for RA exact
        Vec q(n), k(n), v(n);
        for (size_t r = 0; r < N; ++r)
            for (size_t c = 0; c < E; ++c) {
                q[r * E + c] = qkv[r * 3 * E + c];
                k[r * E + c] = qkv[r * 3 * E + E + c];
                v[r * E + c] = qkv[r * 3 * E + 2 * E + c];
            }
        const ref::RaDims rd{f.B, f.T, f.H, f.D, band, 3};
        Vec out(n), lse(size_t(f.B) * f.H * f.T);
        ref::ra_exact_fwd(out.data(), lse.data(), q.data(), k.data(), v.data(), gs.data(), gr.data(), rd);
        CHECK(max_abs_diff(out, f.out) < 1e-12);
        CHECK(max_abs_diff(lse, f.lse) < 1e-12);

        Vec w = random_vec(n, rng);
        Vec dqkv(3 * n, 0.0), dgs(3, 0.0), dgr(3, 0.0);
        f.bwd(dqkv, dgs, dgr, w, qkv, gs, gr);
        Vec dq(n, 0.0), dk(n, 0.0), dv(n, 0.0), egs(3, 0.0), egr(3, 0.0);
        ref::ra_exact_bwd(dq.data(), dk.data(), dv.data(), egs.data(), egr.data(), w.data(), lse.data(),
                          q.data(), k.data(), v.data(), gs.data(), gr.data(), rd);
        double worst = 0;
        for (size_t r = 0; r < N; ++r)
            for (size_t c = 0; c < E; ++c) {
                worst = std::max(worst, std::abs(dq[r * E + c] - dqkv[r * 3 * E + c]));
                worst = std::max(worst, std::abs(dk[r * E + c] - dqkv[r * 3 * E + E + c]));
                worst = std::max(worst, std::abs(dv[r * E + c] - dqkv[r * 3 * E + 2 * E + c]));
            }
        CHECK(worst < 1e-12);
        CHECK(max_abs_diff(dgs, egs) < 1e-12);
        CHECK(max_abs_diff(dgr, egr) < 1e-12);
    }
}

TEST_CASE("variants: RA fold gradients by finite differences (per layer gates, packed qkv)") {
    Rng rng(40);
    FoldedRa f{1, 5, 2, 4, 2, 1, {}, {}, {}, {}};
    Vec qkv = random_vec(3 * f.n(), rng), gs{0.7}, gr{0.4}, w = random_vec(f.n(), rng);
    auto loss = [&] {
        f.fwd(qkv, gs, gr);
        return dot(w, f.out);
    };
    loss();
    Vec dqkv(qkv.size(), 0.0), dgs(1, 0.0), dgr(1, 0.0);
    f.bwd(dqkv, dgs, dgr, w, qkv, gs, gr);
    check_gradients(loss, {{"qkv", &qkv, &dqkv}, {"g_std", &gs, &dgs}, {"g_rec", &gr, &dgr}});
}

TEST_CASE("variants: RA fold clamps gates at 1e-8 and gives them no gradient below") {
    Vec q{1, 2}, k{3, -1}, gs{-0.5}, gr{0.25}, qt(4), kt(4);
    const ref::FoldDims f{1, 1, 1, 2, 2, 2, 1};
    ref::ra_fold_fwd(qt.data(), kt.data(), q.data(), k.data(), gs.data(), gr.data(), f);
    CHECK(qt[0] == doctest::Approx(1e-8));  // max(-0.5, 1e-8) * 1
    CHECK(qt[2] == 3.0);                    // k as it is
    CHECK(kt[1] == -1.0);
    CHECK(kt[3] == doctest::Approx(0.5));   // 0.25 * 2
    Vec dq(2, 0.0), dk(2, 0.0), dgs(1, 0.0), dgr(1, 0.0), dqt{1, 1, 1, 1}, dkt{1, 1, 1, 1};
    ref::ra_fold_bwd(dq.data(), dk.data(), dgs.data(), dgr.data(), dqt.data(), dkt.data(), q.data(),
                     k.data(), gs.data(), gr.data(), f);
    CHECK(dgs[0] == 0.0);
    CHECK(dgr[0] == doctest::Approx(1 + 2));  // sum of dk̃[D:].q
    CHECK(dq[0] == doctest::Approx(1e-8 + 0.25));   // g_std dq̃[:D] + g_rec dk̃[D:]
    CHECK(dk[0] == doctest::Approx(2.0));           // dk̃[:D] + dq̃[D:]
}

TEST_CASE("variants: same-FLOP low-rank RA layout, forward formula and gradients") {
    Rng rng(50);
    const int B = 1, T = 5, H = 2, D = 4, R = 2;
    const ref::LowRankDims ld{B * T, H, D, R, H * D, H * D, H};
    const size_t n = size_t(B) * T * H * D;
    Vec q = random_vec(n, rng), k = random_vec(n, rng), v = random_vec(n, rng);
    Vec W = random_vec(size_t(D) * R, rng), gs{0.6, 1.2}, gr{0.3, 0.8};
    Vec qt(n), kt(n);
    ref::ra_lowrank_fwd(qt.data(), kt.data(), q.data(), k.data(), W.data(), gs.data(), gr.data(), ld);
    // q~_i . k~_j = g_std q_i[:D-R].k_j[:D-R] + g_rec (k_i W).(q_j W)
    auto proj = [&](const Vec& x, size_t row, int r) {
        double s = 0;
        for (int c = 0; c < D; ++c) s += x[row + c] * W[size_t(c) * R + r];
        return s;
    };
    for (int h = 0; h < H; ++h) {
        const size_t i = (size_t(3) * H + h) * D, j = (size_t(1) * H + h) * D;
        double want = 0, got = 0;
        for (int c = 0; c < D - R; ++c) want += gs[h] * q[i + c] * k[j + c];
        for (int r = 0; r < R; ++r) want += gr[h] * proj(k, i, r) * proj(q, j, r);
        for (int c = 0; c < D; ++c) got += qt[i + c] * kt[j + c];
        CHECK(got == doctest::Approx(want).epsilon(1e-12));
    }

    AttnDims ad = plain_dims(B, T, H, H, D, D);
    ad.band = 2, ad.band_split = D - R;
    AttnProbe p(ad, rng);
    auto loss = [&] {
        ref::ra_lowrank_fwd(qt.data(), kt.data(), q.data(), k.data(), W.data(), gs.data(), gr.data(), ld);
        return p.fwd(qt, kt, v);
    };
    loss();
    Vec dqt(n), dkt(n), dv(n), dq(n, 0.0), dk(n, 0.0), dW(W.size(), 0.0), dgs(2, 0.0), dgr(2, 0.0);
    ref::attention_ref_bwd(dqt.data(), dkt.data(), dv.data(), (double*)nullptr, p.w_out.data(),
                           p.lse.data(), qt.data(), kt.data(), v.data(), ad);
    ref::ra_lowrank_bwd(dq.data(), dk.data(), dW.data(), dgs.data(), dgr.data(), dqt.data(), dkt.data(),
                        q.data(), k.data(), W.data(), gs.data(), gr.data(), ld);
    check_gradients(loss, {{"q", &q, &dq}, {"k", &k, &dk}, {"v", &v, &dv}, {"W", &W, &dW},
                           {"g_std", &gs, &dgs}, {"g_rec", &gr, &dgr}});
    CHECK_THROWS_WITH_AS(ref::ra_lowrank_fwd(qt.data(), kt.data(), q.data(), k.data(), W.data(),
                                             gs.data(), gr.data(), ref::LowRankDims{B * T, H, D, D, H * D, H * D, H}),
                         doctest::Contains("ra.rank"), gpt::Error);
}

TEST_CASE("variants: discoverability bias on RA, gradients of k, u, g_disc") {
    Rng rng(60);
    const int B = 1, T = 5, H = 2, D = 4, N = B * T;
    const size_t n = size_t(N) * H * D;
    Vec q = random_vec(n, rng), k = random_vec(n, rng), v = random_vec(n, rng);
    Vec u = random_vec(size_t(H) * D, rng), gd{0.2, -0.4}, gs{0.5, 0.5}, gr{0.3, 0.3};
    Vec qt(2 * n), kt(2 * n), bias(size_t(N) * H);
    const ref::FoldDims fd{N, H, H, D, H * D, H * D, H};
    AttnProbe p(ref::ra_fold_attn_dims(B, T, H, D, D, 0, H * D), rng);
    auto loss = [&] {
        ref::ra_fold_fwd(qt.data(), kt.data(), q.data(), k.data(), gs.data(), gr.data(), fd);
        ref::disc_bias_fwd(bias.data(), k.data(), u.data(), gd.data(), N, H, D, H * D);
        return p.fwd(qt, kt, v, &bias);
    };
    loss();
    Vec dqt(2 * n), dkt(2 * n), dv(n), dbias(bias.size(), 0.0);
    ref::attention_ref_bwd(dqt.data(), dkt.data(), dv.data(), dbias.data(), p.w_out.data(), p.lse.data(),
                           qt.data(), kt.data(), v.data(), p.d, bias.data());
    Vec dq(n, 0.0), dk(n, 0.0), du(u.size(), 0.0), dgd(2, 0.0), dgs(2, 0.0), dgr(2, 0.0);
    ref::ra_fold_bwd(dq.data(), dk.data(), dgs.data(), dgr.data(), dqt.data(), dkt.data(), q.data(),
                     k.data(), gs.data(), gr.data(), fd);
    ref::disc_bias_bwd(dk.data(), du.data(), dgd.data(), dbias.data(), k.data(), u.data(), gd.data(),
                       N, H, D, H * D);
    check_gradients(loss, {{"q", &q, &dq}, {"k", &k, &dk}, {"v", &v, &dv}, {"u", &u, &du},
                           {"g_disc", &gd, &dgd}, {"g_std", &gs, &dgs}, {"g_rec", &gr, &dgr}});
}

TEST_CASE("variants: float instantiation of RA exact matches double") {
    Rng rng(70);
    const ref::RaDims d{1, 6, 2, 8, 3, 2};
    const size_t n = size_t(d.B) * d.T * d.H * d.D;
    Vec q = random_vec(n, rng), k = random_vec(n, rng), v = random_vec(n, rng), gs{0.5, 1.0}, gr{0.3, 0.7};
    Vec out(n), lse(size_t(d.H) * d.T);
    ref::ra_exact_fwd(out.data(), lse.data(), q.data(), k.data(), v.data(), gs.data(), gr.data(), d);
    auto f = [](const Vec& x) { return std::vector<float>(x.begin(), x.end()); };
    std::vector<float> qf = f(q), kf = f(k), vf = f(v), gsf = f(gs), grf = f(gr), of(n), lf(lse.size());
    ref::ra_exact_fwd(of.data(), lf.data(), qf.data(), kf.data(), vf.data(), gsf.data(), grf.data(), d);
    CHECK(max_abs_diff(out, Vec(of.begin(), of.end())) < 1e-5);
}
