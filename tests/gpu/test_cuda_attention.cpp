// Flash attention (forward and backward) against the CPU fp32 reference: head dims (64, 64),
// (128, 128), the RA fold (128, 64), RA-CT entropy's values (64, 128), the folds with the padded
// discoverability channel (144, 64) and (80, 64), grouped and multi-query heads, T not a multiple
// of the 64-row tile, strided rows inside a packed qkv buffer, dropout on, and the reciprocal band.
// Inputs are bf16-rounded so both sides see the same values; tolerance: relative L2 <= 1e-2.
// Backward is checked to be bit-for-bit deterministic. Every kernel variant (GPT_ATTN_FWD_VARIANT:
// tile shapes; GPT_ATTN_BWD_VARIANT: register budget) is checked on sequences of many key tiles,
// with the band narrower than a tile (the diagonal-adjacent key pairs skip the banded dims).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/attention_band_split.cuh"
#include "gpu_test_util.h"

using namespace gpt;
using gpt::gputest::Pair;
using gpt::gputest::randn;

namespace {

struct Case {
    int B, T, Hq, Hkv, Dqk, Dv;
    bool packed;        // q, k, v interleaved in one row per token (like c_attn's output)
    float dropout;
    int band, band_split;
    AttentionImpl impl = AttentionImpl::ours;   // cudnn: the banded split (cuDNN off the band)
};

std::string describe(const Case& c) {
    return "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " Hq=" + std::to_string(c.Hq) +
           " Hkv=" + std::to_string(c.Hkv) + " Dqk=" + std::to_string(c.Dqk) +
           " Dv=" + std::to_string(c.Dv) + (c.packed ? " packed" : "") +
           " dropout=" + std::to_string(c.dropout) + " band=" + std::to_string(c.band) +
           (c.impl == AttentionImpl::ours ? "" : " impl=cudnn");
}

// With c.impl = cudnn and dropout: cuDNN's part draws its own mask, so the CPU (ours) cannot be
// the reference; then only finiteness and bit-identical reruns are checked.
void check_attention(const Case& c, uint64_t seed) {
    const std::string desc = describe(c);
    INFO(desc);
    AttnDims d;
    d.B = c.B;
    d.T = c.T;
    d.Hq = c.Hq;
    d.Hkv = c.Hkv;
    d.Dqk = c.Dqk;
    d.Dv = c.Dv;
    d.scale = 1.f / std::sqrt(float(c.Dv));
    d.dropout = c.dropout;
    d.seed = seed * 31 + 7;
    d.band = c.band;
    d.band_split = c.band_split;
    d.impl = c.impl;   // our kernels here (cuDNN's own path: test_cuda_attention_cudnn.cpp)
    const bool vs_cpu = c.impl == AttentionImpl::ours || c.dropout == 0.f;
    const size_t rows = size_t(c.B) * c.T;
    const size_t qw = size_t(c.Hq) * c.Dqk, kw = size_t(c.Hkv) * c.Dqk, vw = size_t(c.Hkv) * c.Dv;

    Pair p;
    Ten q, k, v, dq, dk, dv;
    if (c.packed) {   // one [rows, qw + kw + vw] buffer per tensor and gradient
        const int stride = int(qw + kw + vw);
        d.q_stride = d.k_stride = d.v_stride = stride;
        Ten qkv = p.reserve(Space::Act, rows * stride), dqkv = p.reserve(Space::Act, rows * stride);
        q = Ten{Space::Act, qkv.off, rows * stride};
        k = Ten{Space::Act, qkv.off + qw, rows * stride - qw};
        v = Ten{Space::Act, qkv.off + qw + kw, rows * stride - qw - kw};
        dq = Ten{Space::Act, dqkv.off, rows * stride};
        dk = Ten{Space::Act, dqkv.off + qw, rows * stride - qw};
        dv = Ten{Space::Act, dqkv.off + qw + kw, rows * stride - qw - kw};
    } else {
        d.q_stride = int(qw);
        d.k_stride = int(kw);
        d.v_stride = int(vw);
        q = p.reserve(Space::Act, rows * qw);
        k = p.reserve(Space::Act, rows * kw);
        v = p.reserve(Space::Act, rows * vw);
        dq = p.reserve(Space::Act, rows * qw);
        dk = p.reserve(Space::Act, rows * kw);
        dv = p.reserve(Space::Act, rows * vw);
    }
    Ten out = p.reserve(Space::Act, rows * c.Hq * c.Dv), dout = p.reserve(Space::Act, rows * c.Hq * c.Dv);
    Ten lse = p.reserve(Space::Stat, size_t(c.B) * c.Hq * c.T);
    p.allocate();
    // For the packed layout q, k, v views overlap their neighbours: fill the whole buffer once.
    if (c.packed) {
        p.set(q, randn(q.n, seed));
    } else {
        p.set(q, randn(q.n, seed));
        p.set(k, randn(k.n, seed + 1));
        p.set(v, randn(v.n, seed + 2));
    }
    p.poison(out);
    p.poison(lse);
    p.run([&](Ops& o) { o.attention_fwd(out, lse, q, k, v, d); });
    if (vs_cpu) {
        CHECK(p.err(out) <= 1e-2);
        CHECK(p.err(lse) <= 1e-3);
    } else {
        for (Ten t : {out, lse})
            for (float x : Pair::get(*p.gpu, t)) REQUIRE(std::isfinite(x));
    }

    p.set(dout, randn(dout.n, seed + 3));
    std::vector<float> first[3];
    for (int rep = 0; rep < 2; ++rep) {
        if (c.packed) p.poison(dq);
        else {
            p.poison(dq);
            p.poison(dk);
            p.poison(dv);
        }
        p.run([&](Ops& o) { o.attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, d); });
        const Ten grads[3] = {dq, dk, dv};
        for (int gi = 0; gi < 3; ++gi) {
            if (c.packed && gi > 0) continue;   // dq spans the whole packed buffer: one check
            CAPTURE(gi);
            const auto g = Pair::get(*p.gpu, grads[gi]);
            if (vs_cpu) CHECK(p.err(grads[gi]) <= 1e-2);
            else
                for (float x : g) REQUIRE(std::isfinite(x));
            if (rep == 0) first[gi] = g;
            else CHECK(std::memcmp(first[gi].data(), g.data(), g.size() * 4) == 0);
        }
    }
}

}  // namespace

TEST_CASE("cuda: attention 64x64 matches the CPU, T a multiple of the tile and not") {
    GPT_REQUIRE_GPU();
    check_attention({2, 128, 4, 4, 64, 64, false, 0.f, 0, 0}, 100);
    check_attention({1, 77, 3, 3, 64, 64, false, 0.f, 0, 0}, 101);
}

TEST_CASE("cuda: attention 128x128 multi-query (Hkv = 1: the MLA shape) matches the CPU") {
    GPT_REQUIRE_GPU();
    check_attention({2, 100, 4, 1, 128, 128, false, 0.f, 0, 0}, 200);
}

TEST_CASE("cuda: attention 128x64 RA fold with grouped heads matches the CPU") {
    GPT_REQUIRE_GPU();
    check_attention({2, 150, 6, 2, 128, 64, false, 0.f, 0, 0}, 300);
}

TEST_CASE("cuda: attention 64x128 (RA-CT entropy's values [v, k]) matches the CPU") {
    GPT_REQUIRE_GPU();
    check_attention({2, 150, 3, 3, 64, 128, false, 0.f, 0, 0}, 310);
    check_attention({1, 70, 2, 2, 64, 128, false, 0.1f, 0, 0}, 311);
}

TEST_CASE("cuda: attention 144x64 and 80x64 (RA folds with the padded discoverability channel) match the CPU") {
    GPT_REQUIRE_GPU();
    check_attention({2, 150, 2, 2, 144, 64, false, 0.f, 16, 80}, 320);   // band split after the channel's pad
    check_attention({1, 130, 2, 2, 144, 64, false, 0.1f, 0, 0}, 321);
    check_attention({2, 100, 2, 2, 80, 64, false, 0.f, 0, 0}, 322);
}

TEST_CASE("cuda: attention on packed qkv rows (strided views) matches the CPU") {
    GPT_REQUIRE_GPU();
    check_attention({2, 96, 3, 3, 64, 64, true, 0.f, 0, 0}, 400);
}

TEST_CASE("cuda: attention with dropout draws the CPU's mask") {
    GPT_REQUIRE_GPU();
    check_attention({2, 90, 2, 2, 64, 64, false, 0.1f, 0, 0}, 500);
    check_attention({1, 70, 4, 2, 128, 64, false, 0.2f, 0, 0}, 501);
}

TEST_CASE("cuda: attention with the reciprocal band (RA W=16 and W=70) matches the CPU") {
    GPT_REQUIRE_GPU();
    check_attention({2, 200, 2, 2, 128, 64, false, 0.f, 16, 64}, 600);
    check_attention({1, 130, 2, 1, 128, 128, false, 0.f, 70, 64}, 601);
}

// The banded split (kernels/cuda/attention_band_split.cuh): cuDNN takes the pairs i - j >= s (s = the
// band rounded up past W to 128) on shifted windows, our kernel the rest, merged by log-sum-exp.
// Against the CPU (no dropout), for s = 128 (W = 5, 64, 127) and s = 256 (W = 128), with packed rows;
// and the split must really run: its output is close to ours-only but not bit-identical.
TEST_CASE("cuda: RA band split (cuDNN off the band, our kernel in it) matches the CPU") {
    GPT_REQUIRE_GPU();
    if (!cuda::cudnn_compiled_in()) {
        MESSAGE("built without cuDNN: test skipped");
        return;
    }
    const AttentionImpl cudnn = AttentionImpl::cudnn;
    check_attention({2, 256, 3, 3, 128, 64, false, 0.f, 64, 64, cudnn}, 800);
    check_attention({1, 384, 2, 2, 128, 64, true, 0.f, 5, 64, cudnn}, 801);
    check_attention({1, 384, 2, 2, 128, 64, false, 0.f, 127, 64, cudnn}, 802);
    check_attention({1, 512, 2, 2, 128, 64, false, 0.f, 128, 64, cudnn}, 803);
    check_attention({2, 256, 2, 2, 128, 64, false, 0.1f, 64, 64, cudnn}, 804);   // finite, reruns identical

    AttnDims d;
    d.B = 1;
    d.T = 256;
    d.Hq = d.Hkv = 2;
    d.Dqk = 128;
    d.Dv = 64;
    d.q_stride = d.k_stride = 2 * 128;
    d.v_stride = 2 * 64;
    d.scale = 0.125f;
    d.band = 64;
    d.band_split = 64;
    d.impl = cudnn;
    std::string why;
    CHECK(cuda::band_split_of(d, &why).s == 128);
    Pair p;
    const size_t rows = d.T;
    Ten q = p.reserve(Space::Act, rows * 256), k = p.reserve(Space::Act, rows * 256),
        v = p.reserve(Space::Act, rows * 128), out = p.reserve(Space::Act, rows * 128),
        lse = p.reserve(Space::Stat, 2 * rows);
    p.allocate();
    p.set(q, randn(q.n, 810));
    p.set(k, randn(k.n, 811));
    p.set(v, randn(v.n, 812));
    p.gpu->attention_fwd(out, lse, q, k, v, d);
    const auto split = Pair::get(*p.gpu, out);
    d.impl = AttentionImpl::ours;
    p.gpu->attention_fwd(out, lse, q, k, v, d);
    const auto ours = Pair::get(*p.gpu, out);
    CHECK(gpt::gputest::rel_l2(split, ours) <= 1e-2);
    CHECK(std::memcmp(split.data(), ours.data(), split.size() * 4) != 0);
    // Shapes the split does not take (then our kernels do the whole call).
    CHECK(cuda::band_split_of(d, &why).s == 0);   // impl = ours
    CHECK(why.find("ours") != std::string::npos);
    d.impl = cudnn;
    d.T = 200;
    CHECK(cuda::band_split_of(d, &why).s == 0);   // T - 128 < 128
    d.T = 256;
    d.band = 0;
    CHECK(cuda::band_split_of(d, &why).s == 0);
}

TEST_CASE("cuda: attention rejects unsupported shapes with a gpt::Error naming the shape") {
    GPT_REQUIRE_GPU();
    auto gpu = make_cuda_ops();
    MemoryPlan plan;
    plan[Space::Act] = 1 << 20;
    plan[Space::Stat] = 1 << 12;
    gpu->allocate(plan);
    AttnDims d;
    d.B = 1;
    d.T = 16;
    d.Hq = d.Hkv = 1;
    d.Dqk = d.Dv = 96;
    d.q_stride = d.k_stride = d.v_stride = 96;
    d.scale = 0.1f;
    const Ten t{Space::Act, 0, 16 * 96}, l{Space::Stat, 0, 16};
    try {
        gpu->attention_fwd(Ten{Space::Act, 8192, 16 * 96}, l, t, t, t, d);
        FAIL("Dqk = 96 was accepted");
    } catch (const gpt::Error& e) {
        CHECK(std::string(e.what()).find("Dqk=96") != std::string::npos);
    }
}

TEST_CASE("cuda: attention kernel variants on long sequences (many key tiles)") {
    GPT_REQUIRE_GPU();
    for (int variant = 0; variant <= 2; ++variant) {   // backward has 0..1 (2 = its default)
        CAPTURE(variant);
        const std::string v = std::to_string(variant);
        setenv("GPT_ATTN_FWD_VARIANT", v.c_str(), 1);
        setenv("GPT_ATTN_BWD_VARIANT", v.c_str(), 1);
        check_attention({2, 520, 2, 2, 64, 64, false, 0.f, 0, 0}, 700 + variant);
        check_attention({1, 333, 6, 2, 128, 64, false, 0.1f, 0, 0}, 710 + variant);
        check_attention({1, 300, 2, 2, 128, 64, false, 0.f, 40, 64}, 720 + variant);
        check_attention({1, 270, 2, 1, 128, 128, false, 0.f, 0, 0}, 730 + variant);
    }
    unsetenv("GPT_ATTN_FWD_VARIANT");
    unsetenv("GPT_ATTN_BWD_VARIANT");
}
