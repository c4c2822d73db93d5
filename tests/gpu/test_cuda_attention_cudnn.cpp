// cuDNN's fused SDPA (kernels/cuda/attention_cudnn.cu, model.attention_impl = cudnn /
// cudnn_nondeterministic) against the CPU fp32 reference on fresh random bf16-rounded inputs:
// out and the fp32 lse (cuDNN's softmax Stats must be our natural-log log-sum-exp of the scaled
// logits, or every later consumer of lse would be wrong), dq, dk, dv; tolerances as our kernels'
// (relative L2 <= 1e-2, lse <= 1e-3). The deterministic graph must rerun bit-identically; the
// atomic-dQ graph is only reported. Shapes cuDNN does not cover must fall back to our kernels.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "cuda/attention_cudnn.cuh"
#include "cpu/cpu_kernels.h"
#include "gpu_test_util.h"

using namespace gpt;
using gpt::gputest::Pair;
using gpt::gputest::randn;
using gpt::gputest::rel_l2;

namespace {

struct Case {
    int B, T, H, D;
    bool packed;   // q, k, v interleaved in one row per token (c_attn's output, what GPT-2 runs)
    int Dv = 0;    // value/output head width; 0: D (the exact RA fold without a band: D = 128, Dv = 64)
    int dv() const { return Dv ? Dv : D; }
};

AttnDims dims_of(const Case& c, AttentionImpl impl) {
    AttnDims d;
    d.B = c.B;
    d.T = c.T;
    d.Hq = d.Hkv = c.H;
    d.Dqk = c.D;
    d.Dv = c.dv();
    d.scale = 1.f / std::sqrt(float(c.D));
    const int w = c.H * c.D;
    d.q_stride = d.k_stride = c.packed ? 3 * w : w;
    d.v_stride = c.packed ? 3 * w : c.H * c.dv();
    d.impl = impl;
    return d;
}

// Skips (with a message) when this build has no cuDNN; otherwise the plan must build.
bool cudnn_ready(const AttnDims& d) {
    if (!cuda::cudnn_compiled_in()) {
        MESSAGE("built without cuDNN: test skipped");
        return false;
    }
    cuda::CudnnAttention a;
    const bool ok = a.prepare_fwd(d) && a.prepare_bwd(d, d.impl != AttentionImpl::cudnn_nondeterministic);
    INFO(a.last_error());
    REQUIRE(ok);
    const std::string plans = "cuDNN " + std::to_string(cuda::cudnn_runtime_version()) + " fwd: " +
                              a.describe(d, false, false) + "; bwd: " +
                              a.describe(d, true, d.impl != AttentionImpl::cudnn_nondeterministic);
    MESSAGE(plans);
    return true;
}

void check_cudnn(const Case& c, AttentionImpl impl, uint64_t seed) {
    const AttnDims d = dims_of(c, impl);
    const std::string desc = "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" +
                             std::to_string(c.H) + " D=" + std::to_string(c.D) + " Dv=" + std::to_string(c.dv()) + (c.packed ? " packed" : "") +
                             (impl == AttentionImpl::cudnn ? " cudnn" : " cudnn_nondeterministic");
    INFO(desc);
    if (!cudnn_ready(d)) return;
    const size_t rows = size_t(c.B) * c.T, w = size_t(c.H) * c.D, wv = size_t(c.H) * c.dv();
    Pair p;
    Ten q, k, v, dq, dk, dv;
    if (c.packed) {
        Ten qkv = p.reserve(Space::Act, rows * 3 * w), dqkv = p.reserve(Space::Act, rows * 3 * w);
        q = Ten{Space::Act, qkv.off, rows * 3 * w};
        k = Ten{Space::Act, qkv.off + w, rows * 3 * w - w};
        v = Ten{Space::Act, qkv.off + 2 * w, rows * 3 * w - 2 * w};
        dq = Ten{Space::Act, dqkv.off, rows * 3 * w};
        dk = Ten{Space::Act, dqkv.off + w, rows * 3 * w - w};
        dv = Ten{Space::Act, dqkv.off + 2 * w, rows * 3 * w - 2 * w};
    } else {
        q = p.reserve(Space::Act, rows * w);
        k = p.reserve(Space::Act, rows * w);
        v = p.reserve(Space::Act, rows * wv);
        dq = p.reserve(Space::Act, rows * w);
        dk = p.reserve(Space::Act, rows * w);
        dv = p.reserve(Space::Act, rows * wv);
    }
    Ten out = p.reserve(Space::Act, rows * wv), dout = p.reserve(Space::Act, rows * wv);
    Ten lse = p.reserve(Space::Stat, size_t(c.B) * c.H * c.T);
    p.allocate();
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
    CHECK(p.err(out) <= 1e-2);
    CHECK(p.err(lse) <= 1e-3);
    // It ran cuDNN, not our kernel: the two bf16 outputs differ in rounding somewhere.
    const auto out_cudnn = Pair::get(*p.gpu, out);
    AttnDims ours = d;
    ours.impl = AttentionImpl::ours;
    p.gpu->attention_fwd(out, lse, q, k, v, ours);
    CHECK(std::memcmp(out_cudnn.data(), Pair::get(*p.gpu, out).data(), out_cudnn.size() * 4) != 0);
    p.gpu->attention_fwd(out, lse, q, k, v, d);

    p.set(dout, randn(dout.n, seed + 3));
    std::vector<float> first[3];
    bool identical = true;
    for (int rep = 0; rep < 3; ++rep) {
        p.poison(dq);
        if (!c.packed) {
            p.poison(dk);
            p.poison(dv);
        }
        p.run([&](Ops& o) { o.attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, d); });
        const Ten grads[3] = {dq, dk, dv};
        for (int gi = 0; gi < 3; ++gi) {
            if (c.packed && gi > 0) continue;   // dq spans the whole packed buffer: one check
            CAPTURE(gi);
            if (rep == 0) CHECK(p.err(grads[gi]) <= 1e-2);
            const auto g = Pair::get(*p.gpu, grads[gi]);
            if (rep == 0) first[gi] = g;
            else identical = identical && std::memcmp(first[gi].data(), g.data(), g.size() * 4) == 0;
        }
    }
    if (impl == AttentionImpl::cudnn) CHECK(identical);
    else {
        const std::string note = std::string("cudnn_nondeterministic backward reruns bit-identical: ") +
                                 (identical ? "yes" : "no");
        MESSAGE(note);
    }
}

// cuDNN's attention dropout draws its own Philox mask (not ops.h's mask), so the CPU
// reference gets that mask explicitly. Extraction: with q = k = 0 every causal probability is
// P_ij = 1/(i+1), and values v_j = e_(j - c Dv) (one-hot, block c of Dv keys at a time) copy
// out_i[m] = keep_ij / ((i+1)(1-p)) for j = c Dv + m. Then on fresh random inputs with the same
// seed: out, lse, dq, dk, dv against cpu::attention_fwd/_bwd with that mask (relative L2 <= 1e-2,
// lse <= 1e-3); the kept fraction within 0.01 of 1 - p; reruns bit-identical; another seed
// draws another mask.
void check_cudnn_dropout(const Case& c, float dropout, uint64_t seed) {
    AttnDims d = dims_of(c, AttentionImpl::cudnn);
    d.dropout = dropout;
    d.seed = 0x9e3779b97f4a7c15ull * seed;
    const std::string desc = "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
                             " Dqk=" + std::to_string(c.D) + " Dv=" + std::to_string(c.dv()) +
                             " dropout=" + std::to_string(dropout);
    INFO(desc);
    REQUIRE_FALSE(c.packed);
    if (!cudnn_ready(d)) return;
    const int B = c.B, T = c.T, H = c.H, Dv = c.dv();
    REQUIRE(T % Dv == 0);
    const size_t rows = size_t(B) * T, nq = rows * H * c.D, nv = rows * H * Dv, nl = size_t(B) * H * T;
    Pair p;
    Ten q = p.reserve(Space::Act, nq), k = p.reserve(Space::Act, nq), v = p.reserve(Space::Act, nv);
    Ten dq = p.reserve(Space::Act, nq), dk = p.reserve(Space::Act, nq), dv = p.reserve(Space::Act, nv);
    Ten out = p.reserve(Space::Act, nv), dout = p.reserve(Space::Act, nv), lse = p.reserve(Space::Stat, nl);
    p.allocate();

    // 1. The mask, a block of Dv keys per forward call.
    std::vector<uint8_t> keep(size_t(B) * H * T * T, 0);
    p.set(q, std::vector<float>(nq, 0.f));
    p.set(k, std::vector<float>(nq, 0.f));
    const float keep_scale = 1.f / (1.f - dropout);
    size_t kept = 0, causal = 0, off_value = 0, differs_from_ours = 0;
    for (int blk = 0; blk < T / Dv; ++blk) {
        std::vector<float> onehot(nv, 0.f);
        for (int b = 0; b < B; ++b)
            for (int t = blk * Dv; t < (blk + 1) * Dv; ++t)
                for (int h = 0; h < H; ++h) onehot[((size_t(b) * T + t) * H + h) * Dv + (t - blk * Dv)] = 1.f;
        p.set(v, onehot);
        p.poison(out);
        p.gpu->attention_fwd(out, lse, q, k, v, d);
        const auto o = Pair::get(*p.gpu, out);
        for (int b = 0; b < B; ++b)
            for (int h = 0; h < H; ++h)
                for (int i = 0; i < T; ++i)
                    for (int m = 0; m < Dv; ++m) {
                        const int j = blk * Dv + m;
                        const float x = o[((size_t(b) * T + i) * H + h) * Dv + m];
                        if (j > i) {   // causally masked: nothing may leak
                            off_value += x != 0.f;
                            continue;
                        }
                        const size_t counter = ((size_t(b) * H + h) * T + i) * T + j;
                        const bool kept_ij = x != 0.f;
                        keep[counter] = kept_ij;
                        ++causal;
                        kept += kept_ij;
                        const float expect = keep_scale / float(i + 1);
                        if (kept_ij && std::fabs(x - expect) > 1e-2f * expect) ++off_value;
                        differs_from_ours +=
                            kept_ij != attention_dropout_keep(d.seed, size_t(b) * H + h, i, j, T, dropout);
                    }
    }
    const double frac = double(kept) / double(causal);
    MESSAGE(desc << ": kept " << frac << " of " << causal << " causal probabilities; "
                 << differs_from_ours << " differ from ops.h's mask");
    CHECK(off_value == 0);                               // kept ones scaled by 1/(1-p), masked ones 0
    CHECK(std::fabs(frac - (1.0 - dropout)) < 0.01);
    CHECK(differs_from_ours > causal / 20);           // cuDNN's mask, not ops.h's

    // 2. Fresh random inputs, same seed: the CPU reference with the extracted mask.
    const auto hq = randn(nq, seed + 1), hk = randn(nq, seed + 2), hv = randn(nv, seed + 3),
               hdo = randn(nv, seed + 4);
    p.set(q, hq);
    p.set(k, hk);
    p.set(v, hv);
    p.set(dout, hdo);
    std::vector<float> ro(nv), rl(nl), rdq(nq), rdk(nq), rdv(nv);
    cpu::attention_fwd<float>(ro.data(), rl.data(), hq.data(), hk.data(), hv.data(), d, keep.data());
    cpu::attention_bwd<float>(rdq.data(), rdk.data(), rdv.data(), hdo.data(), rl.data(), hq.data(), hk.data(),
                              hv.data(), d, nullptr, keep.data());
    std::vector<float> first[5];
    for (int rep = 0; rep < 2; ++rep) {
        p.poison(out);
        p.poison(lse);
        p.poison(dq);
        p.poison(dk);
        p.poison(dv);
        p.gpu->attention_fwd(out, lse, q, k, v, d);
        p.gpu->attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, d);
        const Ten got[5] = {out, lse, dq, dk, dv};
        const std::vector<float>* ref[5] = {&ro, &rl, &rdq, &rdk, &rdv};
        for (int i = 0; i < 5; ++i) {
            const auto g = Pair::get(*p.gpu, got[i]);
            if (rep == 0) {
                const double err = rel_l2(g, *ref[i]);
                CAPTURE(i);   // out, lse, dq, dk, dv
                CAPTURE(err);
                CHECK(err <= (i == 1 ? 1e-3 : 1e-2));
                first[i] = g;
            } else {
                CHECK(std::memcmp(first[i].data(), g.data(), g.size() * 4) == 0);   // same seed, same bits
            }
        }
    }
    // 3. Another seed, another mask (the output changes).
    AttnDims other = d;
    other.seed = d.seed + 1;
    p.gpu->attention_fwd(out, lse, q, k, v, other);
    CHECK(rel_l2(Pair::get(*p.gpu, out), first[0]) > 1e-2);
}

}  // namespace

TEST_CASE("cuda: cuDNN SDPA with attention dropout matches the CPU given cuDNN's mask") {
    GPT_REQUIRE_GPU();
    check_cudnn_dropout({2, 128, 3, 64, false}, 0.1f, 1400);
    check_cudnn_dropout({1, 256, 2, 128, false, 64}, 0.2f, 1401);   // the exact RA fold (ablation steps 3, 7)
    check_cudnn_dropout({1, 128, 2, 128, false}, 0.1f, 1402);
}

TEST_CASE("cuda: cuDNN SDPA (deterministic backward) matches the CPU, D = 64 and 128, packed rows") {
    GPT_REQUIRE_GPU();
    check_cudnn({2, 256, 4, 64, false}, AttentionImpl::cudnn, 1100);
    check_cudnn({1, 128, 3, 64, true}, AttentionImpl::cudnn, 1101);
    check_cudnn({1, 256, 2, 128, false}, AttentionImpl::cudnn, 1102);
}

TEST_CASE("cuda: cuDNN SDPA runs the exact RA fold without a band (Dqk = 128, Dv = 64)") {
    GPT_REQUIRE_GPU();
    check_cudnn({2, 256, 3, 128, false, 64}, AttentionImpl::cudnn, 1110);
}

TEST_CASE("cuda: cuDNN SDPA on values wider than q, k (Dqk = 64, Dv = 128: RA-CT entropy's [v, k])") {
    GPT_REQUIRE_GPU();
    check_cudnn({2, 256, 3, 64, false, 128}, AttentionImpl::cudnn, 1115);
}

TEST_CASE("cuda: cuDNN SDPA with the atomic-dQ backward matches the CPU") {
    GPT_REQUIRE_GPU();
    check_cudnn({2, 256, 4, 64, false}, AttentionImpl::cudnn_nondeterministic, 1200);
}

TEST_CASE("cuda: shapes cuDNN does not cover run our kernels under attention_impl = cudnn") {
    AttnDims d = dims_of({1, 100, 2, 64, false}, AttentionImpl::cudnn);
    std::string why;
    CHECK_FALSE(cuda::cudnn_attention_supports(d, &why));   // T % 128 != 0
    CHECK(why.find("128") != std::string::npos);
    d.T = 128;
    d.dropout = 0.1f;   // cuDNN draws its own dropout mask (see the dropout case above)
    CHECK(cuda::cudnn_attention_wanted(d) == cuda::cudnn_compiled_in());
    d.dropout = 1.f;
    CHECK_FALSE(cuda::cudnn_attention_wanted(d));
    d.dropout = 0.f;
    d.Hkv = 1;
    CHECK_FALSE(cuda::cudnn_attention_wanted(d));
    d.Hkv = d.Hq;
    d.Dv = 96;     // a value width cuDNN is not asked for
    CHECK_FALSE(cuda::cudnn_attention_wanted(d));
    d.Dv = 128;    // values [v, k] of RA-CT's entropy: cuDNN
    CHECK(cuda::cudnn_attention_wanted(d) == cuda::cudnn_compiled_in());
    d.Dv = 64;
    d.band = 64;   // the banded RA fold: ours only
    d.Dqk = 128;
    CHECK_FALSE(cuda::cudnn_attention_wanted(d));
    d.band = 0;    // the full RA fold (Dqk = 128, Dv = 64): cuDNN
    CHECK(cuda::cudnn_attention_wanted(d) == cuda::cudnn_compiled_in());
    d.Dqk = 64;
    d.impl = AttentionImpl::ours;
    CHECK_FALSE(cuda::cudnn_attention_wanted(d));
    d.impl = AttentionImpl::cudnn;
    CHECK(cuda::cudnn_attention_wanted(d) == cuda::cudnn_compiled_in());
    d.impl = AttentionImpl::auto_select;   // auto: cuDNN where it covers the shape (measured faster)
    CHECK(cuda::cudnn_attention_wanted(d) == cuda::cudnn_compiled_in());
    // A fallback shape through the Ops interface: the CPU's answer, from our kernels.
    GPT_REQUIRE_GPU();
    AttnDims f = dims_of({1, 100, 2, 64, false}, AttentionImpl::cudnn);
    Pair p;
    const size_t n = size_t(f.T) * f.Hq * f.Dqk;
    Ten q = p.reserve(Space::Act, n), k = p.reserve(Space::Act, n), v = p.reserve(Space::Act, n);
    Ten out = p.reserve(Space::Act, n), lse = p.reserve(Space::Stat, size_t(f.Hq) * f.T);
    p.allocate();
    p.set(q, randn(n, 1300));
    p.set(k, randn(n, 1301));
    p.set(v, randn(n, 1302));
    p.poison(out);
    p.run([&](Ops& o) { o.attention_fwd(out, lse, q, k, v, f); });
    CHECK(p.err(out) <= 1e-2);
}
