// The variant operations of Ops as the CPU backend implements them, against the gpt::ref
// reference (FD-checked in tests/test_variants_*.cpp): the materialised probabilities and their
// backward, and the write modes ops.h promises (overwrite only the owned columns, accumulate).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/rng.h"
#include "cpu/cpu_ops.h"
#include "cpu/variant_attention.h"
#include "cpu/variant_mla.h"
#include "cpu/variant_mlp.h"
#include "cpu/variant_ract.h"

using namespace gpt;

namespace {

std::vector<float> random_vec(size_t n, uint64_t seed, float scale = 1.f) {
    Rng rng(seed);
    std::vector<float> v(n);
    for (float& x : v) x = scale * rng.normal();
    return v;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    float m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

// Attention layouts the variants use: the RA fold (Dqk = 2D, banded tail) and MLA's multi-query.
AttnDims fold_layout() {
    AttnDims d;
    d.B = 2, d.T = 9, d.Hq = d.Hkv = 2, d.Dqk = 8, d.Dv = 4;
    d.q_stride = d.k_stride = 16, d.v_stride = 8;
    d.scale = 0.5f, d.band = 3, d.band_split = 4;
    return d;
}
AttnDims mqa_layout() {
    AttnDims d;
    d.B = 2, d.T = 7, d.Hq = 3, d.Hkv = 1, d.Dqk = d.Dv = 5;
    d.q_stride = 15, d.k_stride = d.v_stride = 5;
    d.scale = 0.45f;
    return d;
}

}  // namespace

// RA-CT's gate and M2's sparse rows read the probabilities through q, k, lse (ops.h): the CPU
// backend against the reference composition attention_ref_fwd -> probs -> ref::ract_gate_fwd /
// m2_sparse_rows, and for the backward attention_ref_bwd with the statistic's dprobs.
TEST_CASE("model variants ops: ract_gate_fwd/bwd and topk_rows from q, k, lse equal the reference") {
    for (const AttnDims d : {fold_layout(), mqa_layout()})
        for (RactStat stat : {RactStat::topk, RactStat::max, RactStat::entropy, RactStat::rms})
            for (bool avg : {false, true}) {
                CAPTURE(d.Hkv);
                CAPTURE(int(stat));
                CAPTURE(avg);
                const RactDims rd{d.B, d.T, d.Hq, stat, 3, avg};
                const int slots = ract_sel_slots(rd), sel_heads = avg ? 1 : d.Hq, k2 = 4;
                const size_t N = size_t(d.B) * d.T, nq = N * d.q_stride, nk = N * d.k_stride, nv = N * d.v_stride;
                const size_t no = N * d.Hq * d.Dv, nl = N * d.Hq, np = size_t(d.B) * d.Hq * d.T * d.T;
                const size_t nsel = std::max<size_t>(1, N * sel_heads * slots), nm2 = N * k2;
                const auto q = random_vec(nq, 1, 1.5f), k = random_vec(nk, 2, 1.5f), v = random_vec(nv, 3);
                const auto dout = random_vec(no, 4), dgate = random_vec(nl, 5);
                const std::vector<float> scale = {1.f, -0.7f, 0.4f}, bias = {2.f, 0.5f, -1.f};
                // Act: q k v out dout dq dk dv gate dgate; Stat: lse stat wts; Index: sel idx;
                // Param: scale bias; Grad: dscale dbias
                MemoryPlan plan;
                plan[Space::Act] = nq + nk + nv + 2 * no + nq + nk + nv + 2 * nl + nq + nk + nv;
                plan[Space::Stat] = 2 * nl + nm2 + 2 * nl;
                plan[Space::Index] = nsel + nm2;
                plan[Space::Param] = plan[Space::Grad] = 12;
                CpuOps ops(1);
                ops.allocate(plan);
                size_t off = 0;
                auto act = [&](size_t n) { Ten t{Space::Act, off, n}; off += n; return t; };
                const Ten tq = act(nq), tk = act(nk), tv = act(nv), tout = act(no), tdout = act(no), tdq = act(nq),
                          tdk = act(nk), tdv = act(nv), tgate = act(nl), tdgate = act(nl);
                const Ten tlse{Space::Stat, 0, nl}, tstat{Space::Stat, nl, nl}, twts{Space::Stat, 2 * nl, nm2};
                const Ten tsel = slots > 0 ? Ten{Space::Index, 0, nsel} : Ten{}, tidx{Space::Index, nsel, nm2};
                const Ten tscale{Space::Param, 0, 3}, tbias{Space::Param, 3, 3};
                ops.upload(tq, q.data());
                ops.upload(tk, k.data());
                ops.upload(tv, v.data());
                ops.upload(tdout, dout.data());
                ops.upload(tdgate, dgate.data());
                ops.upload(tscale, scale.data());
                ops.upload(tbias, bias.data());
                ops.attention_fwd(tout, tlse, tq, tk, tv, d);
                ops.ract_gate_fwd(tstat, tgate, tsel, tq, tk, tlse, tscale, tbias, d, rd);
                ops.topk_rows(tidx, twts, tq, tk, tlse, d, k2);

                std::vector<float> out_ref(no), lse_ref(nl), probs(np), stat_ref(nl), gate_ref(nl), wts_ref(nm2);
                std::vector<int> sel_ref(nsel, -1), idx_ref(nm2);
                ref::attention_ref_fwd(out_ref.data(), lse_ref.data(), probs.data(), q.data(), k.data(), v.data(), d);
                const ref::RactDims rr{d.B, d.T, d.Hq, stat, 3, avg};
                ref::ract_gate_fwd(stat_ref.data(), gate_ref.data(), probs.data(), scale.data(), bias.data(), rr);
                ref::ract_selection(sel_ref.data(), probs.data(), rr);
                ref::m2_sparse_rows(idx_ref.data(), wts_ref.data(), probs.data(), d.B, d.Hq, d.T, k2);
                std::vector<float> st(nl), gt(nl), wts(nm2);
                std::vector<float> sel(nsel, -1.f), idx(nm2);   // Index downloads as float
                ops.download(tstat, st.data());
                ops.download(tgate, gt.data());
                ops.download(twts, wts.data());
                CHECK(max_abs_diff(st, stat_ref) < 1e-5f);
                CHECK(max_abs_diff(gt, gate_ref) < 1e-5f);
                CHECK(max_abs_diff(wts, wts_ref) < 1e-5f);
                ops.download(tidx, idx.data());
                for (size_t e = 0; e < nm2; ++e) REQUIRE(int(idx[e]) == idx_ref[e]);
                if (slots > 0) {
                    ops.download(tsel, sel.data());
                    for (size_t e = 0; e < nsel; ++e) REQUIRE(int(sel[e]) == sel_ref[e]);
                }

                // attention_bwd, then ract_gate_bwd adds the statistic's gradient to dq, dk.
                ops.attention_bwd(tdq, tdk, tdv, tdout, tout, tlse, tq, tk, tv, d);
                ops.ract_gate_bwd(tdq, tdk, tscale.as(Space::Grad), tbias.as(Space::Grad), tdgate, tq, tk, tlse, tstat,
                                  tsel, tgate, tscale, d, rd);
                std::vector<float> dprobs(np, 0.f), dscale_ref(3, 0.f), dbias_ref(3, 0.f);
                ref::ract_gate_bwd(dprobs.data(), dscale_ref.data(), dbias_ref.data(), dgate.data(), probs.data(),
                                   stat_ref.data(), gate_ref.data(), scale.data(), rr);
                std::vector<float> dq_ref(nq, 0.f), dk_ref(nk, 0.f), dv_ref(nv, 0.f);
                ref::attention_ref_bwd(dq_ref.data(), dk_ref.data(), dv_ref.data(), (float*)nullptr, dout.data(),
                                       lse_ref.data(), q.data(), k.data(), v.data(), d, (const float*)nullptr,
                                       dprobs.data());
                std::vector<float> dq(nq), dk(nk), ds(3), db(3);
                ops.download(tdq, dq.data());
                ops.download(tdk, dk.data());
                ops.download(tscale.as(Space::Grad), ds.data());
                ops.download(tbias.as(Space::Grad), db.data());
                CHECK(max_abs_diff(ds, dscale_ref) < 1e-4f);
                CHECK(max_abs_diff(db, dbias_ref) < 1e-4f);
                // Only the heads' columns of each row are defined (the strides may leave a gap).
                auto check_dq_dk = [&](const std::vector<float>& dqv, const std::vector<float>& dkv) {
                    for (size_t n = 0; n < N; ++n) {
                        for (int c = 0; c < d.Hq * d.Dqk; ++c)
                            REQUIRE(dqv[n * d.q_stride + c] ==
                                    doctest::Approx(dq_ref[n * d.q_stride + c]).epsilon(1e-4).scale(1e-1));
                        for (int c = 0; c < d.Hkv * d.Dqk; ++c)
                            REQUIRE(dkv[n * d.k_stride + c] ==
                                    doctest::Approx(dk_ref[n * d.k_stride + c]).epsilon(1e-4).scale(1e-1));
                    }
                };
                check_dq_dk(dq, dk);
                if (slots == 0) continue;

                // The split form of the selection statistics (ops.h ract_gate_coef): the same
                // gradients from the coefficients, attention_bwd's D shift and the selected entries.
                const Ten tdq2 = act(nq), tdk2 = act(nk), tdv2 = act(nv);
                const Ten talpha{Space::Stat, 2 * nl + nm2, nl}, tbeta{Space::Stat, 3 * nl + nm2, nl};
                const Ten tds2{Space::Grad, 6, 3}, tdb2{Space::Grad, 9, 3};
                ops.ract_gate_coef(talpha, tbeta, tds2, tdb2, tdgate, tq, tk, tlse, tstat, tsel, tgate, tscale, d, rd);
                ops.attention_bwd(tdq2, tdk2, tdv2, tdout, tout, tlse, tq, tk, tv, d, tbeta);
                ops.ract_select_bwd(tdq2, tdk2, talpha, tsel, tq, tk, tlse, d, rd);
                std::vector<float> dq2(nq), dk2(nk), dv2(nv), dv1(nv), ds2(3), db2(3);
                ops.download(tdq2, dq2.data());
                ops.download(tdk2, dk2.data());
                ops.download(tdv2, dv2.data());
                ops.download(tdv, dv1.data());
                ops.download(tds2, ds2.data());
                ops.download(tdb2, db2.data());
                CHECK(max_abs_diff(ds2, dscale_ref) < 1e-4f);
                CHECK(max_abs_diff(db2, dbias_ref) < 1e-4f);
                CHECK(max_abs_diff(dv2, dv1) == 0.f);   // the shift leaves dv alone
                check_dq_dk(dq2, dk2);
            }
}

// q, k, v packed as c_attn's [N, 3E] rows on the CPU backend, with the fold's gradients dq̃, dk̃
// and (optionally) c_attn's bias gradient.
struct PackedFold {
    int N, H, D, E;
    RaFoldDims f;
    size_t packed, nt;
    CpuOps ops{1};
    Ten qkv, dqkv, dqt, dkt, db;
    std::vector<float> x, g;
    PackedFold(int n, int h, int d, float gs, float gr, uint64_t seed) : N(n), H(h), D(d), E(h * d) {
        f.N = N, f.H = f.Hk = H, f.D = D, f.q_stride = f.k_stride = 3 * E, f.n_gates = 1;
        f.g_std_fixed = gs, f.g_rec_fixed = gr;
        packed = size_t(N) * 3 * E, nt = size_t(N) * H * 2 * D;
        MemoryPlan plan;
        plan[Space::Act] = 2 * packed + 2 * nt;
        plan[Space::Param] = plan[Space::Grad] = size_t(3) * E;
        ops.allocate(plan);
        qkv = {Space::Act, 0, packed}, dqkv = {Space::Act, packed, packed};
        dqt = {Space::Act, 2 * packed, nt}, dkt = {Space::Act, 2 * packed + nt, nt};
        db = {Space::Grad, 0, size_t(3 * E)};
        x = random_vec(packed, seed), g = random_vec(2 * nt, seed + 1);
        ops.upload(qkv, x.data());
        ops.upload(dqt, g.data());
        ops.upload(dkt, g.data() + nt);
    }
    void bwd(Ten dbias = {}, Ten dv = {}) {
        ops.ra_fold_bwd(dqkv.sub(0, packed), dqkv.sub(E, packed - E), {}, {}, dqt, dkt, qkv.sub(0, packed),
                        qkv.sub(E, packed - E), {}, {}, f, dbias, dv);
    }
    Ten dv() const { return dqkv.sub(2 * size_t(E), packed - 2 * size_t(E)); }
};

TEST_CASE("model variants ops: ra_fold_bwd overwrites only the q and k columns of packed rows") {
    // q and k live inside packed [N, 3E] rows; v's columns must survive the overwrite.
    PackedFold p(3, 2, 4, 0.7f, 0.2f, 7);
    const int N = p.N, H = p.H, D = p.D, E = p.E;
    std::vector<float> marker(p.packed, 42.f);
    p.ops.upload(p.dqkv, marker.data());
    p.bwd();
    std::vector<float> out(p.packed);
    p.ops.download(p.dqkv, out.data());
    std::vector<float> dq_ref(p.packed, 0.f), dk_ref(p.packed, 0.f);
    const float gs = 0.7f, gr = 0.2f;
    ref::FoldDims rf{N, H, H, D, 3 * E, 3 * E, 1};
    ref::ra_fold_bwd(dq_ref.data(), dk_ref.data() + E, (float*)nullptr, (float*)nullptr, p.g.data(),
                     p.g.data() + p.nt, p.x.data(), p.x.data() + E, &gs, &gr, rf);
    for (int n = 0; n < N; ++n)
        for (int c = 0; c < 3 * E; ++c) {
            const size_t i = size_t(n) * 3 * E + c;
            const float want = c < E ? dq_ref[i] : c < 2 * E ? dk_ref[i] : 42.f;
            REQUIRE(out[i] == doctest::Approx(want).epsilon(1e-5));
        }
}

TEST_CASE("model variants ops: ra_fold_bwd adds c_attn's bias gradient (dq, dk it writes, and dv)") {
    PackedFold p(5, 2, 4, 0.6f, 0.4f, 17);
    const int N = p.N, E = p.E;
    const auto dx = random_vec(p.packed, 19);
    const auto db0 = random_vec(3 * E, 20);   // accumulated onto
    p.ops.upload(p.dqkv, dx.data());   // v's columns hold dv
    p.ops.upload(p.db, db0.data());
    p.bwd(p.db, p.dv());
    std::vector<float> out(p.packed), got(3 * E);
    p.ops.download(p.dqkv, out.data());
    p.ops.download(p.db, got.data());
    for (int c = 0; c < 3 * E; ++c) {
        double want = db0[size_t(c)];
        for (int n = 0; n < N; ++n) want += out[size_t(n) * 3 * E + c];
        CHECK(got[size_t(c)] == doctest::Approx(want).epsilon(1e-5));
    }
    // Without dv only the q and k columns are added; dv without dbias is an error.
    p.ops.upload(p.db, db0.data());
    p.bwd(p.db.sub(0, 2 * E));
    p.ops.download(p.db, got.data());
    CHECK(got[size_t(2 * E)] == db0[size_t(2 * E)]);
    CHECK(got[0] != db0[0]);
    CHECK_THROWS_AS(p.bwd({}, p.dv()), gpt::Error);
}

TEST_CASE("model variants ops: head_gate_bwd overwrites dctx and dgate, accumulates dalpha") {
    const int N = 2, H = 2, Dv = 3;
    const size_t n = size_t(N) * H * Dv, nh = size_t(N) * H;
    MemoryPlan plan;
    plan[Space::Act] = 4 * n + 2 * nh;
    plan[Space::Param] = 1;
    plan[Space::Grad] = 1;
    CpuOps ops(1);
    ops.allocate(plan);
    const Ten ctx{Space::Act, 0, n}, out{Space::Act, n, n}, dout{Space::Act, 2 * n, n}, dctx{Space::Act, 3 * n, n};
    const Ten gate{Space::Act, 4 * n, nh}, dgate{Space::Act, 4 * n + nh, nh};
    const Ten alpha{Space::Param, 0, 1};
    const auto c = random_vec(n, 1), go = random_vec(n, 2), gt = random_vec(nh, 3);
    const float a = 0.25f, da0 = 0.5f;
    ops.upload(ctx, c.data());
    ops.upload(dout, go.data());
    ops.upload(gate, gt.data());
    ops.upload(alpha, &a);
    ops.upload(alpha.as(Space::Grad), &da0);
    std::vector<float> junk(n, 9.f);
    ops.upload(dctx, junk.data());
    ops.upload(dgate, junk.data());
    ops.head_gate_fwd(out, ctx, gate, alpha, 0.f, N, H, Dv);
    ops.head_gate_bwd(dctx, dgate, alpha.as(Space::Grad), dout, ctx, gate, alpha, 0.f, N, H, Dv);
    std::vector<float> o(n), dc(n), dg(nh);
    float da = 0;
    ops.download(out, o.data());
    ops.download(dctx, dc.data());
    ops.download(dgate, dg.data());
    ops.download(alpha.as(Space::Grad), &da);
    double da_want = da0;
    for (size_t r = 0; r < nh; ++r) {
        const float f = (1 - a) + a * gt[r];
        double dot = 0;
        for (int e = 0; e < Dv; ++e) {
            CHECK(o[r * Dv + e] == doctest::Approx(f * c[r * Dv + e]));
            CHECK(dc[r * Dv + e] == doctest::Approx(f * go[r * Dv + e]));
            dot += double(go[r * Dv + e]) * c[r * Dv + e];
        }
        CHECK(dg[r] == doctest::Approx(a * dot));
        da_want += (gt[r] - 1.0) * dot;
    }
    CHECK(da == doctest::Approx(da_want));
}

TEST_CASE("model variants ops: head_map (BLAS per head) equals the reference for every head layout") {
    const int N = 5, H = 3, Din = 4, Dout = 6;
    for (int Hin : {H, 1})
        for (int Hm : {H, 1}) {
            CAPTURE(Hin);
            CAPTURE(Hm);
            const int stride = Hin * Din + 2;   // a gap after the heads, as in packed rows
            const size_t nin = size_t(N) * stride, nout = size_t(N) * H * Dout, nm = size_t(Hm) * Din * Dout;
            const auto x = random_vec(nin, 11), m = random_vec(nm, 12), gy = random_vec(nout, 13);
            const auto dm0 = random_vec(nm, 14);
            MemoryPlan plan;
            plan[Space::Act] = 2 * nin + 2 * nout;
            plan[Space::Param] = nm;
            plan[Space::Grad] = nm;
            CpuOps ops(1);
            ops.allocate(plan);
            const Ten in{Space::Act, 0, nin}, din{Space::Act, nin, nin}, out{Space::Act, 2 * nin, nout},
                dout{Space::Act, 2 * nin + nout, nout}, M{Space::Param, 0, nm};
            ops.upload(in, x.data());
            ops.upload(dout, gy.data());
            ops.upload(M, m.data());
            ops.upload(M.as(Space::Grad), dm0.data());
            const std::vector<float> marker(nin, 5.f);
            ops.upload(din, marker.data());
            HeadMapDims d;
            d.N = N, d.H = H, d.Hin = Hin, d.Hm = Hm, d.Din = Din, d.Dout = Dout, d.in_stride = stride;
            ops.head_map_fwd(out, in, M, d);
            ops.head_map_bwd(din, M.as(Space::Grad), dout, in, M, d);
            ref::HeadMapDims r{N, H, Hin, Hm, Din, Dout, stride};
            std::vector<float> out_ref(nout), din_ref(nin, 0.f), dm_ref = dm0;
            ref::head_map_fwd(out_ref.data(), x.data(), m.data(), r);
            ref::head_map_bwd(din_ref.data(), dm_ref.data(), gy.data(), x.data(), m.data(), r);
            std::vector<float> o(nout), dx(nin), dm(nm);
            ops.download(out, o.data());
            ops.download(din, dx.data());
            ops.download(M.as(Space::Grad), dm.data());
            CHECK(max_abs_diff(o, out_ref) < 1e-5f);
            CHECK(max_abs_diff(dm, dm_ref) < 1e-5f);
            for (int n = 0; n < N; ++n)
                for (int c = 0; c < stride; ++c) {   // the gap columns keep their values
                    const size_t i = size_t(n) * stride + c;
                    CHECK(dx[i] == doctest::Approx(c < Hin * Din ? din_ref[i] : 5.f).epsilon(1e-5));
                }
        }
}
