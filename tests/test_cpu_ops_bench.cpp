// Timings of the CPU backend at the default job's shapes (skipped in normal runs; run with
//   gpt_tests -tc="cpu: bench*" --no-skip
// ). They print the median of a few repetitions; the checks only guard against nonsense.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>

#include "test_cpu_ops_util.h"

namespace gpt {
namespace {

using test::CpuBench;
using test::random_vector;

double median_ms(const std::function<void()>& body, int reps = 5) {
    body();   // warm-up: page faults, thread pools
    std::vector<double> ms;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        body();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                         .count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

TEST_CASE("cpu: bench matmul and classifier at the vocabulary projection" * doctest::skip()) {
    const int M = 1024, K = 128, N = 50304, V = 50257;
    CpuBench c;
    Ten in = c.reserve(Space::Act, size_t(M) * K), w = c.reserve(Space::Param, size_t(N) * K),
        out = c.reserve(Space::Act, size_t(M) * N), din = c.reserve(Space::Act, size_t(M) * K),
        dw = c.reserve(Space::Grad, size_t(N) * K), losses = c.reserve(Space::Stat, M),
        tgt = c.reserve(Space::Index, M);
    c.allocate();
    c.put(in, random_vector(in.n, 1)), c.put(w, random_vector(w.n, 2, -0.02, 0.02));
    const auto targets = test::random_tokens(M, V, 3);
    c.ops.upload_index(tgt, targets.data());
    const double fwd = median_ms([&] { c.ops.matmul_fwd(out, in, w, Ten{}, M, K, N); });
    const double bwd = median_ms([&] { c.ops.matmul_bwd(din, dw, Ten{}, out, in, w, M, K, N); });
    const double cls = median_ms([&] { c.ops.classifier(losses, out, tgt, M, V, N, 1e-3f); });
    const double gflop = 2.0 * M * K * N * 1e-9;
    std::printf("matmul M=%d K=%d N=%d: fwd %.1f ms (%.0f GFLOP/s), bwd %.1f ms (%.0f GFLOP/s), "
                "fwd+bwd %.1f ms\nclassifier N=%d Vp=%d (fwd+grad): %.1f ms\n",
                M, K, N, fwd, gflop / fwd * 1e3, bwd, 2 * gflop / bwd * 1e3, fwd + bwd, M, N, cls);
    CHECK(fwd > 0);
}

TEST_CASE("cpu: bench attention forward and backward" * doctest::skip()) {
    AttnDims d;
    d.B = 8, d.T = 128, d.Hq = d.Hkv = 4, d.Dqk = d.Dv = 32;
    d.q_stride = d.k_stride = d.v_stride = 3 * d.Hq * d.Dqk;   // q, k, v packed like c_attn's out
    d.scale = 1.f / std::sqrt(32.f);
    const size_t rows = size_t(d.B) * d.T, E = size_t(d.Hq) * d.Dqk;
    CpuBench c;
    Ten qkv = c.reserve(Space::Act, rows * 3 * E), dqkv = c.reserve(Space::Act, rows * 3 * E),
        out = c.reserve(Space::Act, rows * E), dout = c.reserve(Space::Act, rows * E),
        lse = c.reserve(Space::Stat, rows * d.Hq);
    c.allocate();
    c.put(qkv, random_vector(qkv.n, 4)), c.put(dout, random_vector(dout.n, 5));
    Ten q = qkv.sub(0, qkv.n), k = qkv.sub(E, qkv.n - E), v = qkv.sub(2 * E, qkv.n - 2 * E);
    Ten dq = dqkv.sub(0, qkv.n), dk = dqkv.sub(E, qkv.n - E), dv = dqkv.sub(2 * E, qkv.n - 2 * E);
    for (float p : {0.f, 0.1f}) {
        d.dropout = p;
        const double fwd = median_ms([&] { c.ops.attention_fwd(out, lse, q, k, v, d); });
        const double bwd =
            median_ms([&] { c.ops.attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, d); });
        std::printf("attention B=%d T=%d H=%d D=%d dropout %.1f: fwd %.2f ms, bwd %.2f ms, "
                    "fwd+bwd %.2f ms\n", d.B, d.T, d.Hq, d.Dqk, p, fwd, bwd, fwd + bwd);
        CHECK(fwd > 0);
    }
}

}  // namespace
}  // namespace gpt
