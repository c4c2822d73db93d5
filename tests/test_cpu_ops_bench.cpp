// Timings of the CPU backend at the default job's shapes (skipped in normal runs; run with
//   gpt_tests -tc="cpu: bench*" --no-skip
// ). They print medians of a few repetitions: wall time, and process CPU time, which on a machine
// shared with other work is the steadier figure (1 thread: CPU time ~ uncontended wall time).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>

#include "test_cpu_ops_util.h"

namespace gpt {
namespace {

using test::CpuBench;
using test::random_vector;

struct Timing {
    double wall_ms, cpu_ms;
};

Timing median_ms(const std::function<void()>& body, int reps = 5) {
    body();   // warm-up: page faults, thread pools
    std::vector<double> wall, cpu;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        const std::clock_t c0 = std::clock();
        body();
        cpu.push_back(1e3 * double(std::clock() - c0) / CLOCKS_PER_SEC);
        wall.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
    }
    std::sort(wall.begin(), wall.end());
    std::sort(cpu.begin(), cpu.end());
    return {wall[reps / 2], cpu[reps / 2]};
}

void print(const char* what, int threads, Timing t) {
    std::printf("  %-44s %d thread%s: wall %8.2f ms, cpu %8.2f ms\n", what, threads,
                threads > 1 ? "s" : " ", t.wall_ms, t.cpu_ms);
}

TEST_CASE("cpu: bench matmul and classifier at the vocabulary projection" * doctest::skip()) {
    const int M = 1024, K = 128, N = 50304, V = 50257;
    std::printf("vocabulary projection M=%d K=%d N=%d (%.1f GFLOP per matmul)\n", M, K, N,
                2.0 * M * K * N * 1e-9);
    for (int threads : {1, 2}) {
        CpuBench c(threads);
        Ten in = c.reserve(Space::Act, size_t(M) * K), w = c.reserve(Space::Param, size_t(N) * K),
            out = c.reserve(Space::Act, size_t(M) * N), din = c.reserve(Space::Act, size_t(M) * K),
            dw = c.reserve(Space::Grad, size_t(N) * K), losses = c.reserve(Space::Stat, M),
            tgt = c.reserve(Space::Index, M);
        c.allocate();
        c.put(in, random_vector(in.n, 1)), c.put(w, random_vector(w.n, 2, -0.02, 0.02));
        const auto targets = test::random_tokens(M, V, 3);
        c.ops.upload_index(tgt, targets.data());
        const Timing fwd = median_ms([&] { c.ops.matmul_fwd(out, in, w, Ten{}, M, K, N); });
        const Timing bwd =
            median_ms([&] { c.ops.matmul_bwd(din, dw, Ten{}, out, in, w, M, K, N); });
        const Timing cls = median_ms([&] { c.ops.classifier(losses, out, tgt, M, V, N, 1e-3f); });
        print("matmul_fwd", threads, fwd);
        print("matmul_bwd (din + dw)", threads, bwd);
        print("matmul_fwd + matmul_bwd", threads,
              {fwd.wall_ms + bwd.wall_ms, fwd.cpu_ms + bwd.cpu_ms});
        print("classifier (loss + gradient)", threads, cls);
        CHECK(fwd.wall_ms > 0);
    }
}

TEST_CASE("cpu: bench attention forward and backward" * doctest::skip()) {
    AttnDims d;
    d.B = 8, d.T = 128, d.Hq = d.Hkv = 4, d.Dqk = d.Dv = 32;
    d.q_stride = d.k_stride = d.v_stride = 3 * d.Hq * d.Dqk;   // q, k, v packed like c_attn's out
    d.scale = 1.f / std::sqrt(32.f);
    const size_t rows = size_t(d.B) * d.T, E = size_t(d.Hq) * d.Dqk;
    std::printf("attention B=%d T=%d H=%d D=%d\n", d.B, d.T, d.Hq, d.Dqk);
    for (int threads : {1, 2}) {
        CpuBench c(threads);
        Ten qkv = c.reserve(Space::Act, rows * 3 * E), dqkv = c.reserve(Space::Act, rows * 3 * E),
            out = c.reserve(Space::Act, rows * E), dout = c.reserve(Space::Act, rows * E),
            lse = c.reserve(Space::Stat, rows * d.Hq);
        c.allocate();
        c.put(qkv, random_vector(qkv.n, 4)), c.put(dout, random_vector(dout.n, 5));
        Ten q = qkv.sub(0, qkv.n), k = qkv.sub(E, qkv.n - E), v = qkv.sub(2 * E, qkv.n - 2 * E);
        Ten dq = dqkv.sub(0, qkv.n), dk = dqkv.sub(E, qkv.n - E),
            dv = dqkv.sub(2 * E, qkv.n - 2 * E);
        for (float p : {0.f, 0.1f}) {
            d.dropout = p;
            const Timing fwd = median_ms([&] { c.ops.attention_fwd(out, lse, q, k, v, d); });
            const Timing bwd =
                median_ms([&] { c.ops.attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, d); });
            char what[64];
            std::snprintf(what, sizeof what, "attention fwd + bwd, dropout %.1f", p);
            print(what, threads, {fwd.wall_ms + bwd.wall_ms, fwd.cpu_ms + bwd.cpu_ms});
            CHECK(fwd.wall_ms > 0);
        }
    }
}

// A stand-in for one training step of the default model (gpt2-tiny: 4 layers, E = 128, H = 4,
// B = 8, T = 128, tied vocabulary 50304): the same op sequence and shapes, forward and backward,
// then AdamW over all parameters. It shows how the BLAS and OpenMP pools share two cores.
TEST_CASE("cpu: bench a tiny-GPT-shaped training step" * doctest::skip()) {
    const int L = 4, E = 128, H = 4, B = 8, T = 128, V = 50257, Vp = 50304, M = B * T;
    for (int threads : {1, 2}) {
        CpuBench c(threads);
        auto act = [&](size_t n) { return c.reserve(Space::Act, n); };
        Ten wte = c.reserve(Space::Param, size_t(Vp) * E);
        Ten w_qkv = c.reserve(Space::Param, 3 * E * E), w_o = c.reserve(Space::Param, E * E),
            w_fc = c.reserve(Space::Param, 4 * E * E), w_pr = c.reserve(Space::Param, 4 * E * E),
            ln_w = c.reserve(Space::Param, E), ln_b = c.reserve(Space::Param, E);
        const size_t n_params = c.plan[Space::Param];
        c.plan[Space::Grad] = n_params;
        Ten m = c.reserve(Space::Opt, n_params), v = c.reserve(Space::Opt, n_params);
        Ten x = act(size_t(M) * E), ln = act(size_t(M) * E), qkv = act(size_t(M) * 3 * E),
            att = act(size_t(M) * E), fc = act(size_t(M) * 4 * E), fc_g = act(size_t(M) * 4 * E),
            logits = act(size_t(M) * Vp), dx = act(size_t(M) * E), dln = act(size_t(M) * E),
            dqkv = act(size_t(M) * 3 * E), datt = act(size_t(M) * E),
            dfc = act(size_t(M) * 4 * E), mean = c.reserve(Space::Stat, M),
            rstd = c.reserve(Space::Stat, M), lse = c.reserve(Space::Stat, size_t(M) * H),
            losses = c.reserve(Space::Stat, M), tgt = c.reserve(Space::Index, M);
        c.allocate();
        c.put(Ten{Space::Param, 0, n_params}, random_vector(n_params, 7, -0.02, 0.02));
        c.put(x, random_vector(x.n, 8));
        const auto targets = test::random_tokens(M, V, 9);
        c.ops.upload_index(tgt, targets.data());
        AttnDims d;
        d.B = B, d.T = T, d.Hq = d.Hkv = H, d.Dqk = d.Dv = E / H;
        d.q_stride = d.k_stride = d.v_stride = 3 * E;
        d.scale = 1.f / std::sqrt(float(E / H));
        Ten q = qkv, k = qkv.sub(E, qkv.n - E), vv = qkv.sub(2 * E, qkv.n - 2 * E);
        Ten dq = dqkv, dk = dqkv.sub(E, dqkv.n - E), dv = dqkv.sub(2 * E, dqkv.n - 2 * E);
        auto g = [](Ten t) { return t.as(Space::Grad); };
        const std::vector<AdamWTensor> all{{Ten{Space::Param, 0, n_params}, m, v, {}, true}};
        AdamWHyper hyper;
        hyper.lr = 1e-4f;
        auto step = [&] {
            for (int l = 0; l < L; ++l) {   // weights shared across layers: same shapes, less memory
                c.ops.layernorm_fwd(ln, mean, rstd, x, ln_w, ln_b, M, E);
                c.ops.matmul_fwd(qkv, ln, w_qkv, Ten{}, M, E, 3 * E);
                c.ops.attention_fwd(att, lse, q, k, vv, d);
                c.ops.matmul_fwd(ln, att, w_o, Ten{}, M, E, E);
                c.ops.add_inplace(x, ln, x.n);
                c.ops.matmul_fwd(fc, x, w_fc, Ten{}, M, E, 4 * E, fc_g);
                c.ops.matmul_fwd(ln, fc_g, w_pr, Ten{}, M, 4 * E, E);
                c.ops.add_inplace(x, ln, x.n);
            }
            c.ops.matmul_fwd(logits, x, wte, Ten{}, M, E, Vp);
            c.ops.classifier(losses, logits, tgt, M, V, Vp, 1.f / M);
            c.ops.matmul_bwd(dx, g(wte), Ten{}, logits, x, wte, M, E, Vp);
            for (int l = 0; l < L; ++l) {
                c.ops.matmul_bwd(dfc, g(w_pr), Ten{}, dx, fc_g, w_pr, M, 4 * E, E);
                c.ops.gelu_bwd(dfc, fc, dfc, dfc.n);
                c.ops.matmul_bwd(dln, g(w_fc), Ten{}, dfc, x, w_fc, M, E, 4 * E);
                c.ops.add_inplace(dx, dln, dx.n);
                c.ops.matmul_bwd(datt, g(w_o), Ten{}, dx, att, w_o, M, E, E);
                c.ops.attention_bwd(dq, dk, dv, datt, att, lse, q, k, vv, d);
                c.ops.matmul_bwd(dln, g(w_qkv), Ten{}, dqkv, ln, w_qkv, M, E, 3 * E);
                c.ops.layernorm_bwd(dx, g(ln_w), g(ln_b), dln, x, ln_w, mean, rstd, M, E);
            }
            const double norm = std::sqrt(c.ops.sum_squares(Ten{Space::Grad, 0, n_params}));
            hyper.grad_scale = norm > 1.0 ? float(1.0 / norm) : 1.f;
            c.ops.adamw(all, hyper);
            c.ops.zero(Ten{Space::Grad, 0, n_params});
            c.ops.copy(x, dx);   // keep values bounded from step to step
            c.ops.scale(x, 1e-3f);
        };
        print("tiny-GPT-shaped step (fwd + bwd + AdamW)", threads, median_ms(step, 3));
        CHECK(std::isfinite(c.get(losses)[0]));
    }
}

}  // namespace
}  // namespace gpt
