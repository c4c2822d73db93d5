// MLA and RA+MLA reference (kernels/cpu/variant_mla.h + the generic attention): the efficient
// multi-query form equals the spec's formula, and finite-difference gradients of every input.
#include <cmath>

#include "cpu/variant_attention.h"
#include "cpu/variant_mla.h"
#include "test_variants_util.h"

using namespace gpt;
using namespace gpt::test;

namespace {

// MLA core on the outputs of the W_q, W_kd, W_vd GEMMs: Q [N,H,D], k_lat, v_lat [N,L].
struct MlaCore {
    int B, T, H, D, L;
    bool shared;  // one P, U for all heads
    Vec q_lat, o, ctx, lse;
    int N() const { return B * T; }
    int Hm() const { return shared ? 1 : H; }
    ref::HeadMapDims pmap() const { return {N(), H, H, Hm(), D, L, H * D}; }
    ref::HeadMapDims umap() const { return {N(), H, H, Hm(), L, D, H * L}; }
    AttnDims attn() const {
        AttnDims d;
        d.B = B, d.T = T, d.Hq = H, d.Hkv = 1, d.Dqk = L, d.Dv = L;
        d.q_stride = H * L, d.k_stride = L, d.v_stride = L;
        d.scale = 1.f / std::sqrt(static_cast<float>(L));
        return d;
    }
    void fwd(const Vec& Q, const Vec& kl, const Vec& vl, const Vec& P, const Vec& U) {
        q_lat.resize(size_t(N()) * H * L), o.resize(q_lat.size()), ctx.resize(size_t(N()) * H * D);
        lse.resize(size_t(B) * H * T);
        ref::head_map_fwd(q_lat.data(), Q.data(), P.data(), pmap());
        ref::attention_ref_fwd(o.data(), lse.data(), (double*)nullptr, q_lat.data(), kl.data(), vl.data(), attn());
        ref::head_map_fwd(ctx.data(), o.data(), U.data(), umap());
    }
    void bwd(Vec& dQ, Vec& dkl, Vec& dvl, Vec& dP, Vec& dU, const Vec& dctx, const Vec& Q, const Vec& kl,
             const Vec& vl, const Vec& P, const Vec& U) {
        Vec d_o(o.size(), 0.0), dql(q_lat.size(), 0.0);
        ref::head_map_bwd(d_o.data(), dU.data(), dctx.data(), o.data(), U.data(), umap());
        ref::attention_ref_bwd(dql.data(), dkl.data(), dvl.data(), (double*)nullptr, d_o.data(), lse.data(),
                               q_lat.data(), kl.data(), vl.data(), attn());
        ref::head_map_bwd(dQ.data(), dP.data(), dql.data(), Q.data(), P.data(), pmap());
    }
};

}  // namespace

TEST_CASE("variants: MLA efficient form (U after attention) equals A_h (v_lat U_h)") {
    Rng rng(80);
    MlaCore m{2, 5, 3, 3, 4, false, {}, {}, {}, {}};
    const int N = m.N();
    Vec Q = random_vec(size_t(N) * m.H * m.D, rng), kl = random_vec(size_t(N) * m.L, rng),
        vl = random_vec(size_t(N) * m.L, rng), P = random_vec(size_t(m.H) * m.D * m.L, rng),
        U = random_vec(size_t(m.H) * m.L * m.D, rng);
    m.fwd(Q, kl, vl, P, U);
    // spec form: v_h = v_lat U_h per head, keys broadcast to every head
    Vec vh(size_t(N) * m.H * m.D), kb(size_t(N) * m.H * m.L), ctx(vh.size()), lse(m.lse.size());
    ref::head_map_fwd(vh.data(), vl.data(), U.data(), ref::HeadMapDims{N, m.H, 1, m.H, m.L, m.D, m.L});
    for (int n = 0; n < N; ++n)
        for (int h = 0; h < m.H; ++h)
            for (int c = 0; c < m.L; ++c) kb[(size_t(n) * m.H + h) * m.L + c] = kl[size_t(n) * m.L + c];
    AttnDims d = m.attn();
    d.Hkv = m.H, d.k_stride = m.H * m.L, d.Dv = m.D, d.v_stride = m.H * m.D;
    ref::attention_ref_fwd(ctx.data(), lse.data(), (double*)nullptr, m.q_lat.data(), kb.data(), vh.data(), d);
    CHECK(max_abs_diff(ctx, m.ctx) < 1e-12);
}

TEST_CASE("variants: MLA gradients of Q, k_lat, v_lat, P, U (per head and shared maps)") {
    for (bool shared : {false, true}) {
        CAPTURE(shared);
        Rng rng(81 + shared);
        MlaCore m{1, 5, 2, 3, 4, shared, {}, {}, {}, {}};
        const int N = m.N();
        Vec Q = random_vec(size_t(N) * m.H * m.D, rng), kl = random_vec(size_t(N) * m.L, rng),
            vl = random_vec(size_t(N) * m.L, rng), P = random_vec(size_t(m.Hm()) * m.D * m.L, rng),
            U = random_vec(size_t(m.Hm()) * m.L * m.D, rng);
        Vec w = random_vec(size_t(N) * m.H * m.D, rng);
        auto loss = [&] {
            m.fwd(Q, kl, vl, P, U);
            return dot(w, m.ctx);
        };
        loss();
        Vec dQ(Q.size(), 0.0), dkl(kl.size()), dvl(vl.size()), dP(P.size(), 0.0), dU(U.size(), 0.0);
        m.bwd(dQ, dkl, dvl, dP, dU, w, Q, kl, vl, P, U);
        check_gradients(loss, {{"Q", &Q, &dQ}, {"k_lat", &kl, &dkl}, {"v_lat", &vl, &dvl}, {"P", &P, &dP},
                               {"U", &U, &dU}});
    }
}

namespace {

// RA+MLA through the fold: q~ = [q_lat_h, k_lat], k~ = [k_lat, a q_lat_h] (Hkv = H),
// values v_h = v_lat U_h, so the attention output is ctx directly.
struct RaMla {
    int B, T, H, D, L, band;
    Vec q_lat, qt, kt, vh, ctx, lse;
    const Vec one{1.0};
    int N() const { return B * T; }
    ref::HeadMapDims pmap() const { return {N(), H, H, H, D, L, H * D}; }
    ref::HeadMapDims umap() const { return {N(), H, 1, H, L, D, L}; }
    ref::FoldDims fold() const { return {N(), H, 1, L, H * L, L, 1}; }
    AttnDims attn() const { return ref::ra_fold_attn_dims(B, T, H, L, D, band, H * D); }
    void fwd(const Vec& Q, const Vec& kl, const Vec& vl, const Vec& P, const Vec& U, const Vec& alpha) {
        q_lat.resize(size_t(N()) * H * L), qt.resize(2 * q_lat.size()), kt.resize(qt.size());
        vh.resize(size_t(N()) * H * D), ctx.resize(vh.size()), lse.resize(size_t(B) * H * T);
        ref::head_map_fwd(q_lat.data(), Q.data(), P.data(), pmap());
        ref::ra_fold_fwd(qt.data(), kt.data(), q_lat.data(), kl.data(), one.data(), alpha.data(), fold());
        ref::head_map_fwd(vh.data(), vl.data(), U.data(), umap());
        ref::attention_ref_fwd(ctx.data(), lse.data(), (double*)nullptr, qt.data(), kt.data(), vh.data(), attn());
    }
    void bwd(Vec& dQ, Vec& dkl, Vec& dvl, Vec& dP, Vec& dU, Vec& dalpha, const Vec& dctx, const Vec& Q,
             const Vec& kl, const Vec& vl, const Vec& P, const Vec& U, const Vec& alpha) {
        Vec dqt(qt.size()), dkt(kt.size()), dvh(vh.size()), dql(q_lat.size(), 0.0);
        ref::attention_ref_bwd(dqt.data(), dkt.data(), dvh.data(), (double*)nullptr, dctx.data(), lse.data(),
                               qt.data(), kt.data(), vh.data(), attn());
        ref::head_map_bwd(dvl.data(), dU.data(), dvh.data(), vl.data(), U.data(), umap());
        ref::ra_fold_bwd(dql.data(), dkl.data(), (double*)nullptr, dalpha.data(), dqt.data(), dkt.data(),
                         q_lat.data(), kl.data(), one.data(), alpha.data(), fold());
        ref::head_map_bwd(dQ.data(), dP.data(), dql.data(), Q.data(), P.data(), pmap());
    }
};

}  // namespace

TEST_CASE("variants: RA+MLA fold equals the latent transpose formula (not a rank-1 product)") {
    Rng rng(90);
    RaMla m{1, 6, 2, 4, 4, 2, {}, {}, {}, {}, {}, {}};
    const int N = m.N();
    Vec Q = random_vec(size_t(N) * m.H * m.D, rng), kl = random_vec(size_t(N) * m.L, rng),
        vl = random_vec(size_t(N) * m.L, rng), P = random_vec(size_t(m.H) * m.D * m.L, rng),
        U = random_vec(size_t(m.H) * m.L * m.D, rng), alpha{0.3};
    m.fwd(Q, kl, vl, P, U, alpha);
    // logit = (q_lat_i.k_lat_j + a band(i,j) q_lat_j.k_lat_i) / sqrt(L): RA exact with g_std = 1,
    // g_rec = a on (q_lat, k_lat broadcast to every head, v_h); here L == D so the widths agree.
    Vec kb(m.q_lat.size()), ctx(m.ctx.size()), lse(m.lse.size());
    for (int n = 0; n < N; ++n)
        for (int h = 0; h < m.H; ++h)
            for (int c = 0; c < m.L; ++c) kb[(size_t(n) * m.H + h) * m.L + c] = kl[size_t(n) * m.L + c];
    Vec gs{1.0};
    ref::ra_exact_fwd(ctx.data(), lse.data(), m.q_lat.data(), kb.data(), m.vh.data(), gs.data(), alpha.data(),
                      ref::RaDims{m.B, m.T, m.H, m.L, m.band, 1});
    CHECK(max_abs_diff(ctx, m.ctx) < 1e-12);
}

TEST_CASE("variants: RA+MLA gradients of Q, k_lat, v_lat, P, U and alpha") {
    Rng rng(91);
    RaMla m{1, 6, 2, 3, 4, 2, {}, {}, {}, {}, {}, {}};
    const int N = m.N();
    Vec Q = random_vec(size_t(N) * m.H * m.D, rng), kl = random_vec(size_t(N) * m.L, rng),
        vl = random_vec(size_t(N) * m.L, rng), P = random_vec(size_t(m.H) * m.D * m.L, rng),
        U = random_vec(size_t(m.H) * m.L * m.D, rng), alpha{0.3};
    Vec w = random_vec(size_t(N) * m.H * m.D, rng);
    auto loss = [&] {
        m.fwd(Q, kl, vl, P, U, alpha);
        return dot(w, m.ctx);
    };
    loss();
    Vec dQ(Q.size(), 0.0), dkl(kl.size(), 0.0), dvl(vl.size(), 0.0), dP(P.size(), 0.0), dU(U.size(), 0.0),
        da(1, 0.0);
    m.bwd(dQ, dkl, dvl, dP, dU, da, w, Q, kl, vl, P, U, alpha);
    check_gradients(loss, {{"Q", &Q, &dQ}, {"k_lat", &kl, &dkl}, {"v_lat", &vl, &dvl}, {"P", &P, &dP},
                           {"U", &U, &dU}, {"alpha", &alpha, &da}});
}
