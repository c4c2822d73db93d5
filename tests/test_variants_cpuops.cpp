// The variants' integration path through the real backend: CpuOps::attention_fwd/bwd on folded
// RA (Dqk = 2D, band, band_split) and on MLA's multi-query layout (Hkv = 1) agree with the
// double-precision reference of kernels/cpu/variant_attention.h.
#include <cmath>

#include "cpu/variant_attention.h"
#include "test_cpu_ops_util.h"
#include "test_variants_util.h"

using namespace gpt;
using namespace gpt::test;

namespace {

// Runs forward and backward of one AttnDims on CpuOps (float) and on the reference (double) and
// returns the largest difference over out, dq, dk, dv.
double backend_vs_reference(const AttnDims& d, uint64_t seed) {
    Rng rng(seed);
    const size_t nq = size_t(d.B) * d.T * d.q_stride, nk = size_t(d.B) * d.T * d.k_stride,
                 nv = size_t(d.B) * d.T * d.v_stride, no = size_t(d.B) * d.T * d.Hq * d.Dv;
    Vec q = random_vec(nq, rng), k = random_vec(nk, rng), v = random_vec(nv, rng), dout = random_vec(no, rng);
    Vec out(no), lse(size_t(d.B) * d.Hq * d.T), dq(nq), dk(nk), dv(nv);
    ref::attention_ref_fwd(out.data(), lse.data(), (double*)nullptr, q.data(), k.data(), v.data(), d);
    ref::attention_ref_bwd(dq.data(), dk.data(), dv.data(), (double*)nullptr, dout.data(), lse.data(), q.data(),
                           k.data(), v.data(), d);

    CpuBench b;
    Ten tq = b.reserve(Space::Act, nq), tk = b.reserve(Space::Act, nk), tv = b.reserve(Space::Act, nv),
        to = b.reserve(Space::Act, no), tdo = b.reserve(Space::Act, no), tdq = b.reserve(Space::Act, nq),
        tdk = b.reserve(Space::Act, nk), tdv = b.reserve(Space::Act, nv), tl = b.reserve(Space::Stat, lse.size());
    b.allocate();
    b.put(tq, convert<float>(q)), b.put(tk, convert<float>(k)), b.put(tv, convert<float>(v));
    b.put(tdo, convert<float>(dout));
    b.ops.attention_fwd(to, tl, tq, tk, tv, d);
    b.ops.attention_bwd(tdq, tdk, tdv, tdo, to, tl, tq, tk, tv, d);
    double worst = max_abs_diff(out, convert<double>(b.get(to)));
    // only the elements the layout addresses are compared (strides may leave gaps)
    auto cmp = [&](const Vec& want, Ten t) {
        const Vec got = convert<double>(b.get(t));
        return max_abs_diff(want, got);
    };
    worst = std::max({worst, cmp(dq, tdq), cmp(dk, tdk), cmp(dv, tdv)});
    return worst;
}

}  // namespace

TEST_CASE("variants: CpuOps attention honours the RA fold layout and band like the reference") {
    for (int band : {0, 1, 3}) {
        CAPTURE(band);
        const AttnDims d = ref::ra_fold_attn_dims(2, 7, 2, 4, 4, band, 2 * 4);
        CHECK(backend_vs_reference(d, 300 + band) < 2e-5);
    }
}

TEST_CASE("variants: CpuOps attention on MLA's multi-query latent layout matches the reference") {
    AttnDims d;
    d.B = 2, d.T = 6, d.Hq = 3, d.Hkv = 1, d.Dqk = 8, d.Dv = 8;
    d.q_stride = 3 * 8, d.k_stride = 8, d.v_stride = 8;
    d.scale = 1.f / std::sqrt(8.f);
    CHECK(backend_vs_reference(d, 310) < 2e-5);
}
