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
#include "gpu_test_util.h"

using namespace gpt;
using gpt::gputest::Pair;
using gpt::gputest::randn;

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

}  // namespace

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
    d.dropout = 0.1f;
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
