// RA-CT reference (kernels/cpu/variant_ract.h, variant_head_gate.h): statistic values, and
// finite-difference gradients through attention -> statistic -> gate -> gated output, every mode.
#include <cmath>

#include "cpu/variant_attention.h"
#include "cpu/variant_head_gate.h"
#include "cpu/variant_ract.h"
#include "test_variants_util.h"

using namespace gpt;
using namespace gpt::test;

TEST_CASE("variants: RA-CT row statistics on a known row") {
    const double r[3] = {0.2, 0.5, 0.3};
    double g[3];
    CHECK(ref::row_statistic(r, 3, RactStat::topk, 2, g) == doctest::Approx(0.8));
    CHECK((g[0] == 0 && g[1] == 1 && g[2] == 1));
    CHECK(ref::row_statistic(r, 3, RactStat::topk, 8, g) == doctest::Approx(1.0));  // short row: all
    CHECK(ref::row_statistic(r, 3, RactStat::max, 8, g) == doctest::Approx(0.5));
    CHECK((g[0] == 0 && g[1] == 1 && g[2] == 0));
    const double ent = -(0.2 * std::log(0.2) + 0.5 * std::log(0.5) + 0.3 * std::log(0.3));
    CHECK(ref::row_statistic(r, 3, RactStat::entropy, 8, g) == doctest::Approx(ent));
    CHECK(g[1] == doctest::Approx(-(std::log(0.5) + 1)));
    CHECK(ref::row_statistic(r, 3, RactStat::rms, 8, g) == doctest::Approx(std::sqrt(0.38 / 3)));
}

namespace {

struct RactCase {
    RactStat stat;
    RactApply apply;
    bool head_average;
};

// attention (q, k, v) -> probs -> RA-CT gate -> gated output; returns sum(w * out).
struct RactProbe {
    AttnDims ad;
    ref::RactDims rd;
    double alpha;
    Vec out, lse, probs, stat, gate, y, w;
    RactProbe(int B, int T, int H, int D, const RactCase& c, Rng& rng) {
        ad.B = B, ad.T = T, ad.Hq = ad.Hkv = H, ad.Dqk = ad.Dv = D;
        ad.q_stride = ad.k_stride = ad.v_stride = H * D;
        ad.scale = 0.5f;
        rd = ref::RactDims{B, T, H, c.stat, 2, c.head_average};
        alpha = c.apply == RactApply::output ? 1.0 : 0.2;
        out.resize(size_t(B) * T * H * D), y.resize(out.size()), lse.resize(size_t(B) * H * T);
        probs.resize(size_t(B) * H * T * T), stat.resize(size_t(B) * T * H), gate.resize(stat.size());
        w = random_vec(out.size(), rng);
    }
    int N() const { return ad.B * ad.T; }
    double fwd(const Vec& q, const Vec& k, const Vec& v, const Vec& scale, const Vec& bias) {
        ref::attention_ref_fwd(out.data(), lse.data(), probs.data(), q.data(), k.data(), v.data(), ad);
        ref::ract_gate_fwd(stat.data(), gate.data(), probs.data(), scale.data(), bias.data(), rd);
        ref::head_gate_fwd(y.data(), out.data(), gate.data(), alpha, N(), ad.Hq, ad.Dv);
        return dot(w, y);
    }
    void bwd(Vec& dq, Vec& dk, Vec& dv, Vec& dscale, Vec& dbias, const Vec& q, const Vec& k, const Vec& v,
             const Vec& scale, bool detach) {
        Vec dout(out.size(), 0.0), dgate(gate.size(), 0.0), dprobs(probs.size(), 0.0);
        ref::head_gate_bwd(dout.data(), dgate.data(), (double*)nullptr, w.data(), out.data(), gate.data(),
                           alpha, N(), ad.Hq, ad.Dv);
        ref::ract_gate_bwd(detach ? nullptr : dprobs.data(), dscale.data(), dbias.data(), dgate.data(),
                           probs.data(), stat.data(), gate.data(), scale.data(), rd);
        ref::attention_ref_bwd(dq.data(), dk.data(), dv.data(), (double*)nullptr, dout.data(), lse.data(),
                               q.data(), k.data(), v.data(), ad, (const double*)nullptr, dprobs.data());
    }
};

}  // namespace

TEST_CASE("variants: RA-CT gradients through the statistic, scale and bias, every mode") {
    for (RactStat stat : {RactStat::topk, RactStat::max, RactStat::entropy, RactStat::rms})
        for (RactApply apply : {RactApply::output, RactApply::weights})
            for (bool avg : {false, true}) {
                CAPTURE(int(stat));
                CAPTURE(int(apply));
                CAPTURE(avg);
                Rng rng(100 + int(stat) * 4 + int(apply) * 2 + avg);
                RactProbe p(1, 5, 2, 4, RactCase{stat, apply, avg}, rng);
                const size_t n = p.out.size();
                // logits of spread 2..8 keep the top-k and max selections well separated
                Vec q = random_vec(n, rng, 2.0), k = random_vec(n, rng, 2.0), v = random_vec(n, rng);
                Vec scale{1.0, -0.7}, bias{2.0, 0.5};
                auto loss = [&] { return p.fwd(q, k, v, scale, bias); };
                loss();
                Vec dq(n), dk(n), dv(n), dscale(2, 0.0), dbias(2, 0.0);
                p.bwd(dq, dk, dv, dscale, dbias, q, k, v, scale, false);
                check_gradients(loss, {{"q", &q, &dq}, {"k", &k, &dk}, {"v", &v, &dv},
                                       {"scale", &scale, &dscale}, {"bias", &bias, &dbias}});
            }
}

TEST_CASE("variants: RA-CT detach keeps the scale/bias gradients and drops the statistic's") {
    Rng rng(120);
    RactProbe p(1, 5, 2, 4, RactCase{RactStat::entropy, RactApply::output, false}, rng);
    const size_t n = p.out.size();
    Vec q = random_vec(n, rng, 2.0), k = random_vec(n, rng, 2.0), v = random_vec(n, rng);
    Vec scale{1.0, 1.0}, bias{2.0, 2.0};
    p.fwd(q, k, v, scale, bias);
    Vec dq(n), dk(n), dv(n), ds(2, 0.0), db(2, 0.0), dq2(n), dk2(n), dv2(n), ds2(2, 0.0), db2(2, 0.0);
    p.bwd(dq, dk, dv, ds, db, q, k, v, scale, false);
    p.bwd(dq2, dk2, dv2, ds2, db2, q, k, v, scale, true);
    CHECK(max_abs_diff(ds, ds2) == 0.0);
    CHECK(max_abs_diff(db, db2) == 0.0);
    CHECK(max_abs_diff(dv, dv2) == 0.0);   // v does not enter the statistic
    CHECK(max_abs_diff(dq, dq2) > 1e-6);  // q does, through the probabilities
}
