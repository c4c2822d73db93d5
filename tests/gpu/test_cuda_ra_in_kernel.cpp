// Exact RA with the fold inside our attention kernels (ops.h ra_attention_fwd/bwd: q̃ = [g_std q,
// g_rec k] and k̃ = [k, q] tiles built in shared memory from c_attn's packed rows; dq, dk, dv and the
// gates' gradients written by the kernels) against the CPU's composition (ra_fold + attention):
// per-head and per-layer, learnable and fixed gates, T a multiple of the tile and not, the
// reciprocal band narrower and wider than a tile, dropout (the CPU's mask). Inputs bf16-rounded;
// out, dq|dk|dv within relative L2 1e-2, lse 1e-3, the gates' gradients 2e-2; the backward reruns
// bit-identically.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.h"

using namespace gpt;
using gpt::gputest::Pair;
using gpt::gputest::randn;
using gpt::gputest::rel_l2;

namespace {

struct RaCase {
    int B, T, H, band;
    float dropout;
    int n_gates;      // H (per head) or 1 (per layer)
    bool learnable;   // gates as parameters (with gradients) or the fixed values
};

void check_ra_in_kernel(const RaCase& c, uint64_t seed) {
    const int D = 64, E = c.H * D;
    const size_t N = size_t(c.B) * c.T, rows3 = N * 3 * E;
    const std::string desc = "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
                             " band=" + std::to_string(c.band) + " dropout=" + std::to_string(c.dropout) +
                             " gates=" + std::to_string(c.n_gates) + (c.learnable ? " learnable" : " fixed");
    INFO(desc);
    Pair p;
    const Ten qkv = p.reserve(Space::Act, rows3), dqkv = p.reserve(Space::Act, rows3);
    const Ten out = p.reserve(Space::Act, N * E), dout = p.reserve(Space::Act, N * E);
    const Ten lse = p.reserve(Space::Stat, N * c.H);
    const Ten gs = p.reserve(Space::Param, size_t(c.n_gates)), gr = p.reserve(Space::Param, size_t(c.n_gates));
    p.allocate();
    auto part = [&](Ten t, int which) { return Ten{Space::Act, t.off + size_t(which) * E, rows3 - size_t(which) * E}; };
    const Ten q = part(qkv, 0), k = part(qkv, 1), v = part(qkv, 2);
    const Ten dq = part(dqkv, 0), dk = part(dqkv, 1), dv = part(dqkv, 2);

    RaFoldDims f;
    f.N = int(N);
    f.H = f.Hk = c.H;
    f.D = D;
    f.q_stride = f.k_stride = 3 * E;
    f.n_gates = c.n_gates;
    f.g_std_fixed = 0.6f;
    f.g_rec_fixed = 0.35f;
    AttnDims a;
    a.B = c.B;
    a.T = c.T;
    a.Hq = a.Hkv = c.H;
    a.Dqk = 2 * D;
    a.Dv = D;
    a.q_stride = a.k_stride = 3 * E;
    a.v_stride = 3 * E;
    a.scale = 1.f / std::sqrt(float(D));
    a.band = c.band;
    a.band_split = D;
    a.dropout = c.dropout;
    a.seed = seed * 7 + 1;
    a.impl = AttentionImpl::ours;

    p.set(qkv, randn(qkv.n, seed));
    std::vector<float> g1(size_t(c.n_gates)), g2(size_t(c.n_gates)), zeros(size_t(c.n_gates), 0.f);
    for (int i = 0; i < c.n_gates; ++i) g1[size_t(i)] = 0.3f + 0.2f * float(i % 4), g2[size_t(i)] = 0.7f - 0.15f * float(i % 3);
    p.set(gs, g1);
    p.set(gr, g2);
    const Ten g_std = c.learnable ? gs : Ten{}, g_rec = c.learnable ? gr : Ten{};
    const Ten dg_std = c.learnable ? gs.as(Space::Grad) : Ten{}, dg_rec = c.learnable ? gr.as(Space::Grad) : Ten{};

    p.poison(out);
    p.poison(lse);
    p.run([&](Ops& o) { o.ra_attention_fwd(out, lse, q, k, v, g_std, g_rec, f, a); });
    CHECK(p.err(out) <= 1e-2);
    CHECK(p.err(lse) <= 1e-3);

    p.set(dout, randn(dout.n, seed + 1));
    std::vector<float> first;
    for (int rep = 0; rep < 2; ++rep) {
        if (c.learnable) {
            p.set(dg_std, zeros);
            p.set(dg_rec, zeros);
        }
        p.poison(dqkv);
        p.run([&](Ops& o) { o.ra_attention_bwd(dq, dk, dv, dg_std, dg_rec, dout, out, lse, q, k, v, g_std, g_rec, f, a); });
        const auto got = Pair::get(*p.gpu, dqkv);
        if (rep == 0) {
            CHECK(p.err(dqkv) <= 1e-2);
            if (c.learnable) {
                CHECK(p.err(dg_std) <= 2e-2);
                CHECK(p.err(dg_rec) <= 2e-2);
            }
            first = got;
        } else {
            CHECK(std::memcmp(first.data(), got.data(), got.size() * 4) == 0);
        }
    }
}

}  // namespace

TEST_CASE("cuda: RA with the fold inside the attention kernel matches the CPU (gates, band, dropout)") {
    GPT_REQUIRE_GPU();
    uint64_t seed = 3100;
    for (int n_gates : {3, 1})
        for (bool learnable : {true, false}) check_ra_in_kernel({2, 256, 3, 0, 0.f, n_gates, learnable}, seed++);
    check_ra_in_kernel({1, 200, 2, 0, 0.f, 2, true}, seed++);     // T not a multiple of the tiles
    check_ra_in_kernel({2, 256, 3, 64, 0.f, 3, true}, seed++);    // the ablation's band
    check_ra_in_kernel({1, 300, 2, 5, 0.f, 1, true}, seed++);     // a band narrower than a tile
    check_ra_in_kernel({2, 192, 2, 16, 0.1f, 2, true}, seed++);   // dropout: the CPU's mask
}

TEST_CASE("cuda: RA fold inside the kernel refuses dims it does not cover, naming them") {
    GPT_REQUIRE_GPU();
    Pair p;
    const Ten t = p.reserve(Space::Act, 64 * 3 * 128), s = p.reserve(Space::Stat, 64);
    p.allocate();
    RaFoldDims f;
    f.N = 32;
    f.H = f.Hk = 2;
    f.D = 64;
    f.q_stride = f.k_stride = 3 * 128;
    AttnDims a;
    a.B = 1;
    a.T = 32;
    a.Hq = a.Hkv = 2;
    a.Dqk = 64;   // not 2 D
    a.Dv = 64;
    a.q_stride = a.k_stride = a.v_stride = 3 * 128;
    a.scale = 0.125f;
    CHECK_THROWS_WITH_AS(p.gpu->ra_attention_fwd(t, s, t, t, t, {}, {}, f, a), doctest::Contains("Dqk = 2 D"), Error);
}
