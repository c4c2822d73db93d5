// The CPU fp32 backend through the Ops interface: every forward against a naive formula written
// differently (double precision), the accumulate/overwrite contract of each backward, the float
// backward against the double kernels (whose gradients test_cpu_ops_grad.cpp checks by finite
// differences), dropout, AdamW against hand-computed steps, and the errors on bad views.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "common/error.h"
#include "common/rng.h"
#include "cpu/cpu_kernels.h"
#include "test_cpu_ops_util.h"

namespace gpt {
namespace {

using test::check_close;
using test::convert;
using test::CpuBench;
using test::random_tokens;
using test::random_vector;
using Vec = std::vector<double>;

TEST_CASE("cpu: embedding forward is token row plus position row") {
    const int B = 2, T = 5, E = 6, V = 11;
    CpuBench c;
    Ten out = c.reserve(Space::Act, B * T * E), tok = c.reserve(Space::Index, B * T),
        wte = c.reserve(Space::Param, V * E), wpe = c.reserve(Space::Param, T * E);
    c.allocate();
    const auto tokens = random_tokens(B * T, V, 1);
    const auto te = random_vector(V * E, 2), pe = random_vector(T * E, 3);
    c.ops.upload_index(tok, tokens.data());
    c.put(wte, te), c.put(wpe, pe);
    c.ops.embedding_fwd(out, tok, wte, wpe, B, T, E);
    std::vector<float> expect(B * T * E);
    for (int b = 0; b < B; ++b)
        for (int t = 0; t < T; ++t)
            for (int e = 0; e < E; ++e)
                expect[(b * T + t) * E + e] = te[tokens[b * T + t] * E + e] + pe[t * E + e];
    CHECK(c.get(out) == expect);
}

TEST_CASE("cpu: layernorm forward against two-pass double formula") {
    const int N = 9, C = 37;
    CpuBench c;
    Ten out = c.reserve(Space::Act, N * C), in = c.reserve(Space::Act, N * C),
        mean = c.reserve(Space::Stat, N), rstd = c.reserve(Space::Stat, N),
        w = c.reserve(Space::Param, C), b = c.reserve(Space::Param, C);
    c.allocate();
    const auto x = random_vector(N * C, 4, -3, 5), wv = random_vector(C, 5),
               bv = random_vector(C, 6);
    c.put(in, x), c.put(w, wv), c.put(b, bv);
    c.ops.layernorm_fwd(out, mean, rstd, in, w, b, N, C);
    Vec expect(N * C), expect_mean(N), expect_rstd(N);
    for (int i = 0; i < N; ++i) {
        double m = 0, var = 0;
        for (int j = 0; j < C; ++j) m += x[i * C + j];
        m /= C;
        for (int j = 0; j < C; ++j) var += (x[i * C + j] - m) * (x[i * C + j] - m);
        var /= C;
        expect_mean[i] = m;
        expect_rstd[i] = 1.0 / std::sqrt(var + 1e-5);
        for (int j = 0; j < C; ++j)
            expect[i * C + j] = (x[i * C + j] - m) / std::sqrt(var + 1e-5) * wv[j] + bv[j];
    }
    check_close(c.get(out), expect, 1e-5, 1e-5, "out");
    check_close(c.get(mean), expect_mean, 1e-5, 1e-6, "mean");
    check_close(c.get(rstd), expect_rstd, 1e-5, 1e-6, "rstd");
}

// 0.5 x (1 + tanh(u)) written as x * sigmoid(2u).
double gelu_as_sigmoid(double x) {
    const double u = std::sqrt(2.0 / std::numbers::pi) * (x + 0.044715 * x * x * x);
    return x / (1.0 + std::exp(-2.0 * u));
}

TEST_CASE("cpu: matmul forward (bias, fused GELU) against a triple loop") {
    const int M = 7, K = 33, N = 13;
    CpuBench c;
    Ten out = c.reserve(Space::Act, M * N), act = c.reserve(Space::Act, M * N),
        plain = c.reserve(Space::Act, M * N), in = c.reserve(Space::Act, M * K),
        w = c.reserve(Space::Param, N * K), bias = c.reserve(Space::Param, N);
    c.allocate();
    const auto x = random_vector(M * K, 7), wv = random_vector(N * K, 8), bv = random_vector(N, 9);
    c.put(in, x), c.put(w, wv), c.put(bias, bv);
    c.ops.matmul_fwd(out, in, w, bias, M, K, N, act);
    c.ops.matmul_fwd(plain, in, w, Ten{}, M, K, N);
    Vec expect(M * N), expect_plain(M * N), expect_act(M * N);
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            double s = 0;
            for (int k = 0; k < K; ++k) s += double(x[i * K + k]) * wv[j * K + k];
            expect_plain[i * N + j] = s;
            expect[i * N + j] = s + bv[j];
            expect_act[i * N + j] = gelu_as_sigmoid(s + bv[j]);
        }
    check_close(c.get(out), expect, 1e-5, 1e-5, "out");
    check_close(c.get(plain), expect_plain, 1e-5, 1e-5, "out without bias");
    check_close(c.get(act), expect_act, 1e-5, 1e-5, "gelu_out");
}

TEST_CASE("cpu: gelu forward is the GPT-2 tanh approximation") {
    const size_t n = 1000;
    CpuBench c;
    Ten out = c.reserve(Space::Act, n), in = c.reserve(Space::Act, n);
    c.allocate();
    const auto x = random_vector(n, 10, -6, 6);
    c.put(in, x);
    c.ops.gelu_fwd(out, in, n);
    Vec expect(n);
    for (size_t i = 0; i < n; ++i) expect[i] = gelu_as_sigmoid(x[i]);
    check_close(c.get(out), expect, 1e-5, 1e-6, "gelu");
    // Two anchors that do not depend on any formula: gelu(0) = 0 and gelu(x) -> x for large x.
    CHECK(cpu::gelu(0.0f) == 0.0f);
    CHECK(cpu::gelu(10.0) == doctest::Approx(10.0).epsilon(1e-12));
}

TEST_CASE("cpu: vectorisable softmax exp is accurate and exact at the edges") {
    double worst = 0;
    for (int i = 0; i <= 400000; ++i) {
        const float x = -87.f + 175.f * float(i) / 400000.f;
        worst = std::max(worst, std::abs(cpu::exp_softmax(x) / std::exp(double(x)) - 1.0));
    }
    CHECK(worst < 2e-7);
    CHECK(cpu::exp_softmax(0.f) == 1.f);
    CHECK(cpu::exp_softmax(-std::numeric_limits<float>::infinity()) == 0.f);   // masked logit
    CHECK(cpu::exp_softmax(-1000.f) == 0.f);
    CHECK(std::isnan(cpu::exp_softmax(std::numeric_limits<float>::quiet_NaN())));
    CHECK(std::isfinite(cpu::exp_softmax(1000.f)));   // saturates at e^88
}

// Naive attention: the whole T x T matrix per (b, h) — logits with -inf above the diagonal, the
// reciprocal tail removed outside the band, softmax, dropout mask from the documented counter.
struct NaiveAttention {
    Vec out, lse;
};
NaiveAttention naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                               const std::vector<float>& v, const AttnDims& d) {
    const int T = d.T;
    NaiveAttention r{Vec(size_t(d.B) * T * d.Hq * d.Dv, 0.0), Vec(size_t(d.B) * d.Hq * T)};
    for (int b = 0; b < d.B; ++b)
        for (int h = 0; h < d.Hq; ++h) {
            const int hk = h / (d.Hq / d.Hkv);
            std::vector<Vec> logit(T, Vec(T, -std::numeric_limits<double>::infinity()));
            for (int i = 0; i < T; ++i)
                for (int j = 0; j <= i; ++j) {
                    double full = 0, tail = 0;
                    for (int c = 0; c < d.Dqk; ++c) {
                        const double prod = double(q[(b * T + i) * d.q_stride + h * d.Dqk + c]) *
                                            k[(b * T + j) * d.k_stride + hk * d.Dqk + c];
                        full += prod;
                        if (c >= d.band_split) tail += prod;
                    }
                    const bool outside_band = d.band > 0 && i - j > d.band;
                    logit[i][j] = d.scale * (outside_band ? full - tail : full);
                }
            for (int i = 0; i < T; ++i) {
                const double mx = *std::max_element(logit[i].begin(), logit[i].end());
                double sum = 0;
                for (int j = 0; j < T; ++j) sum += std::exp(logit[i][j] - mx);
                r.lse[(b * d.Hq + h) * T + i] = mx + std::log(sum);
                for (int j = 0; j < T; ++j) {
                    double p = std::exp(logit[i][j] - mx) / sum;
                    if (d.dropout > 0)
                        p = attention_dropout_keep(d.seed, uint64_t(b) * d.Hq + h, i, j, T, d.dropout)
                                ? p / (1.0 - d.dropout)
                                : 0.0;
                    for (int c = 0; c < d.Dv; ++c)
                        r.out[((b * T + i) * d.Hq + h) * d.Dv + c] +=
                            p * v[(b * T + j) * d.v_stride + hk * d.Dv + c];
                }
            }
        }
    return r;
}

struct AttentionCase {
    AttnDims d;
    std::vector<float> q, k, v, dout;
};
AttentionCase attention_case(int B, int T, int Hq, int Hkv, int Dqk, int Dv, uint32_t seed) {
    AttentionCase a;
    a.d.B = B, a.d.T = T, a.d.Hq = Hq, a.d.Hkv = Hkv, a.d.Dqk = Dqk, a.d.Dv = Dv;
    a.d.q_stride = Hq * Dqk, a.d.k_stride = Hkv * Dqk, a.d.v_stride = Hkv * Dv;
    a.d.scale = 1.f / std::sqrt(float(Dqk));
    const size_t rows = size_t(B) * T;
    a.q = random_vector(rows * Hq * Dqk, seed, -2, 2);
    a.k = random_vector(rows * Hkv * Dqk, seed + 1, -2, 2);
    a.v = random_vector(rows * Hkv * Dv, seed + 2);
    a.dout = random_vector(rows * Hq * Dv, seed + 3);
    return a;
}

// Runs attention forward (checked against the naive formula) and backward (checked against the
// double kernel, and for overwrite semantics) through CpuOps.
void check_attention(const AttentionCase& a) {
    const AttnDims& d = a.d;
    const size_t rows = size_t(d.B) * d.T;
    CpuBench c;
    Ten out = c.reserve(Space::Act, rows * d.Hq * d.Dv), lse = c.reserve(Space::Stat, rows * d.Hq),
        q = c.reserve(Space::Act, a.q.size()), k = c.reserve(Space::Act, a.k.size()),
        v = c.reserve(Space::Act, a.v.size()), dout = c.reserve(Space::Act, a.dout.size()),
        dq = c.reserve(Space::Act, a.q.size()), dk = c.reserve(Space::Act, a.k.size()),
        dv = c.reserve(Space::Act, a.v.size());
    c.allocate();
    c.put(q, a.q), c.put(k, a.k), c.put(v, a.v), c.put(dout, a.dout);
    c.ops.attention_fwd(out, lse, q, k, v, d);
    const NaiveAttention ref = naive_attention(a.q, a.k, a.v, d);
    check_close(c.get(out), ref.out, 1e-4, 1e-5, "attention out");
    check_close(c.get(lse), ref.lse, 1e-5, 1e-5, "attention lse");

    c.put(dq, std::vector<float>(a.q.size(), 5.f));   // garbage: backward overwrites
    c.ops.attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, d);
    const auto dq1 = c.get(dq), dk1 = c.get(dk), dv1 = c.get(dv);
    c.ops.attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, d);
    CHECK(c.get(dq) == dq1);   // a second call gives the same, not twice
    CHECK(c.get(dk) == dk1);
    CHECK(c.get(dv) == dv1);

    Vec dqd(a.q.size()), dkd(a.k.size()), dvd(a.v.size());
    const Vec qd = convert<double>(a.q), kd = convert<double>(a.k), vd = convert<double>(a.v),
              doutd = convert<double>(a.dout);
    cpu::attention_bwd(dqd.data(), dkd.data(), dvd.data(), doutd.data(), ref.lse.data(), qd.data(),
                       kd.data(), vd.data(), d);
    check_close(dq1, dqd, 1e-3, 1e-4, "dq fp32 vs fp64");
    check_close(dk1, dkd, 1e-3, 1e-4, "dk fp32 vs fp64");
    check_close(dv1, dvd, 1e-3, 1e-4, "dv fp32 vs fp64");
}

TEST_CASE("cpu: attention against the explicit softmax matrix, backward fp32 vs fp64") {
    SUBCASE("multi-head") { check_attention(attention_case(2, 9, 3, 3, 8, 8, 20)); }
    SUBCASE("grouped heads, Dqk = 2 Dv") { check_attention(attention_case(2, 8, 4, 2, 8, 4, 21)); }
    SUBCASE("multi-query, dropout 0.25") {
        AttentionCase a = attention_case(2, 11, 4, 1, 4, 4, 22);
        a.d.dropout = 0.25f;
        a.d.seed = 777;
        check_attention(a);
    }
    SUBCASE("banded reciprocal tail (band 3, split 4), dropout 0.1") {
        AttentionCase a = attention_case(1, 12, 2, 2, 8, 4, 23);
        a.d.band = 3;
        a.d.band_split = 4;
        a.d.dropout = 0.1f;
        a.d.seed = 5;
        check_attention(a);
    }
}

TEST_CASE("cpu: attention with dropout differs from without, and depends on the seed") {
    AttentionCase a = attention_case(1, 16, 2, 2, 4, 4, 30);
    auto run = [&](float p, uint64_t seed) {
        a.d.dropout = p;
        a.d.seed = seed;
        CpuBench c;
        Ten out = c.reserve(Space::Act, a.dout.size()), lse = c.reserve(Space::Stat, 32),
            q = c.reserve(Space::Act, a.q.size()), k = c.reserve(Space::Act, a.k.size()),
            v = c.reserve(Space::Act, a.v.size());
        c.allocate();
        c.put(q, a.q), c.put(k, a.k), c.put(v, a.v);
        c.ops.attention_fwd(out, lse, q, k, v, a.d);
        return c.get(out);
    };
    const auto base = run(0.f, 1), d1 = run(0.5f, 1), d1again = run(0.5f, 1), d2 = run(0.5f, 2);
    CHECK(d1 == d1again);
    CHECK(d1 != base);
    CHECK(d1 != d2);
}

TEST_CASE("cpu: classifier losses and gradient against naive softmax, padding never wins") {
    const int N = 5, V = 23, Vp = 32;
    const float dloss = 0.125f;
    CpuBench c;
    Ten losses = c.reserve(Space::Stat, N), logits = c.reserve(Space::Act, N * Vp),
        targets = c.reserve(Space::Index, N);
    c.allocate();
    auto x = random_vector(N * Vp, 40, -5, 5);
    for (int i = 0; i < N; ++i)
        for (int j = V; j < Vp; ++j) x[i * Vp + j] = 1e4f;   // huge: must be ignored
    x[2 * Vp + 4] = 80.f;   // one dominant real logit: exp would overflow without max-subtraction
    const auto tgt = random_tokens(N, V, 41);
    c.put(logits, x);
    c.ops.upload_index(targets, tgt.data());
    c.ops.classifier(losses, logits, targets, N, V, Vp, 0.f);
    CHECK(c.get(logits) == x);   // dloss = 0: forward only, logits untouched
    c.ops.classifier(losses, logits, targets, N, V, Vp, dloss);
    Vec expect_loss(N), expect_grad(N * Vp, 0.0);
    for (int i = 0; i < N; ++i) {
        double mx = -1e300, sum = 0;
        for (int j = 0; j < V; ++j) mx = std::max(mx, double(x[i * Vp + j]));
        for (int j = 0; j < V; ++j) sum += std::exp(x[i * Vp + j] - mx);
        expect_loss[i] = std::log(sum) + mx - x[i * Vp + tgt[i]];
        for (int j = 0; j < V; ++j)
            expect_grad[i * Vp + j] =
                dloss * (std::exp(x[i * Vp + j] - mx) / sum - (j == tgt[i] ? 1.0 : 0.0));
    }
    const auto loss_out = c.get(losses);
    check_close(loss_out, expect_loss, 1e-5, 1e-5, "losses");
    check_close(c.get(logits), expect_grad, 1e-5, 1e-7, "dlogits");
    for (float l : loss_out) CHECK(std::isfinite(l));
}

// matmul_fwd_add: out = residual + in . w^T, into a separate output and in place, against matmul_fwd
// plus the sum done here.
TEST_CASE("cpu: matmul_fwd_add adds the product onto the residual (separate output and in place)") {
    const int M = 7, K = 5, N = 6;
    CpuBench c;
    Ten in = c.reserve(Space::Act, M * K), w = c.reserve(Space::Param, N * K), res = c.reserve(Space::Act, M * N),
        out = c.reserve(Space::Act, M * N), prod = c.reserve(Space::Act, M * N), big = c.reserve(Space::Act, 2 * M * N);
    c.allocate();
    c.put(in, random_vector(M * K, 60)), c.put(w, random_vector(N * K, 61));
    const std::vector<float> r0 = random_vector(M * N, 62);
    c.put(res, r0), c.put(out, random_vector(M * N, 63));
    c.ops.matmul_fwd(prod, in, w, {}, M, K, N);
    std::vector<float> expect = c.get(prod);
    for (size_t i = 0; i < expect.size(); ++i) expect[i] += r0[i];
    c.ops.matmul_fwd_add(out, in, w, res, M, K, N);
    check_close(c.get(out), expect, 1e-6, 1e-6, "matmul_fwd_add");
    CHECK(c.get(res) == r0);   // the residual is only read
    c.ops.matmul_fwd_add(res, in, w, res, M, K, N);
    check_close(c.get(res), expect, 1e-6, 1e-6, "matmul_fwd_add in place");
    CHECK_THROWS_WITH_AS(c.ops.matmul_fwd_add(big.sub(1, M * N), in, w, big.sub(0, M * N), M, K, N),
                         doctest::Contains("not overlap"), gpt::Error);
}

TEST_CASE("cpu: parameter gradients accumulate, din of matmul is overwritten (accumulated by matmul_bwd_add)") {
    const int M = 6, K = 5, N = 4;
    CpuBench c;
    Ten in = c.reserve(Space::Act, M * K), w = c.reserve(Space::Param, N * K),
        dout = c.reserve(Space::Act, M * N), din = c.reserve(Space::Act, M * K),
        dw = c.reserve(Space::Grad, N * K), db = c.reserve(Space::Grad, N);   // accumulate
    Ten ln_out = c.reserve(Space::Act, M * K), mean = c.reserve(Space::Stat, M),
        rstd = c.reserve(Space::Stat, M), lw = c.reserve(Space::Param, K),
        lb = c.reserve(Space::Param, K), ldin = c.reserve(Space::Act, M * K),
        ldw = c.reserve(Space::Act, K), ldb = c.reserve(Space::Act, K),
        tok = c.reserve(Space::Index, M), dwte = c.reserve(Space::Act, 3 * K),
        dwpe = c.reserve(Space::Act, M * K);
    c.allocate();
    c.put(in, random_vector(M * K, 50)), c.put(w, random_vector(N * K, 51));
    c.put(dout, random_vector(M * N, 52)), c.put(lw, random_vector(K, 53));
    c.put(lb, random_vector(K, 54)), c.put(ln_out, random_vector(M * K, 55));
    const std::vector<int32_t> tokens = {0, 2, 2, 1, 0, 2};
    c.ops.upload_index(tok, tokens.data());

    c.ops.matmul_bwd(din, dw, db, dout, in, w, M, K, N);
    const auto din1 = c.get(din), dw1 = c.get(dw), db1 = c.get(db);
    c.ops.matmul_bwd(din, dw, db, dout, in, w, M, K, N);
    CHECK(c.get(din) == din1);
    auto doubled = [](std::vector<float> v) {
        for (auto& x : v) x *= 2;
        return v;
    };
    check_close(c.get(dw), doubled(dw1), 1e-6, 1e-7, "matmul dw twice");
    check_close(c.get(db), doubled(db1), 1e-6, 1e-7, "matmul dbias twice");
    // matmul_bwd_add accumulates din (on top of a random start) and the parameter gradients alike.
    const std::vector<float> din0 = random_vector(M * K, 56);
    c.put(din, din0);
    c.ops.matmul_bwd_add(din, dw, db, dout, in, w, M, K, N);
    std::vector<float> expect_din = din0;
    for (size_t i = 0; i < expect_din.size(); ++i) expect_din[i] += din1[i];
    check_close(c.get(din), expect_din, 1e-6, 1e-6, "matmul_bwd_add din");
    std::vector<float> tripled_dw = dw1, tripled_db = db1;
    for (auto& x : tripled_dw) x *= 3;
    for (auto& x : tripled_db) x *= 3;
    check_close(c.get(dw), tripled_dw, 1e-6, 1e-6, "matmul_bwd_add dw");
    check_close(c.get(db), tripled_db, 1e-6, 1e-6, "matmul_bwd_add dbias");

    c.ops.layernorm_fwd(ln_out, mean, rstd, in, lw, lb, M, K);
    c.ops.layernorm_bwd(ldin, ldw, ldb, ln_out, in, lw, mean, rstd, M, K);
    const auto l1 = c.get(ldin), lw1 = c.get(ldw), lb1 = c.get(ldb);
    c.ops.layernorm_bwd(ldin, ldw, ldb, ln_out, in, lw, mean, rstd, M, K);
    check_close(c.get(ldin), doubled(l1), 1e-6, 1e-7, "layernorm din twice");
    check_close(c.get(ldw), doubled(lw1), 1e-6, 1e-7, "layernorm dw twice");
    check_close(c.get(ldb), doubled(lb1), 1e-6, 1e-7, "layernorm db twice");

    c.ops.embedding_bwd(dwte, dwpe, ln_out, tok, 1, M, K);
    const auto e1 = c.get(dwte), p1 = c.get(dwpe);
    c.ops.embedding_bwd(dwte, dwpe, ln_out, tok, 1, M, K);
    check_close(c.get(dwte), doubled(e1), 1e-6, 1e-7, "dwte twice");
    check_close(c.get(dwpe), doubled(p1), 1e-6, 1e-7, "dwpe twice");
}

TEST_CASE("cpu: float backward kernels agree with the finite-difference-checked double ones") {
    const int M = 8, K = 12, N = 10;
    CpuBench c;
    Ten in = c.reserve(Space::Act, M * K), w = c.reserve(Space::Param, N * K),
        bias = c.reserve(Space::Param, N), dout = c.reserve(Space::Act, M * N),
        din = c.reserve(Space::Act, M * K), dw = c.reserve(Space::Act, N * K),
        db = c.reserve(Space::Act, N), mean = c.reserve(Space::Stat, M),
        rstd = c.reserve(Space::Stat, M), lw = c.reserve(Space::Param, K),
        ldin = c.reserve(Space::Act, M * K), ldw = c.reserve(Space::Act, K),
        pre = c.reserve(Space::Act, M * N), act = c.reserve(Space::Act, M * N);
    c.allocate();
    const auto x = random_vector(M * K, 60, -2, 2), wv = random_vector(N * K, 61),
               bv = random_vector(N, 62), g = random_vector(M * N, 63), lwv = random_vector(K, 64),
               lgrad = random_vector(M * K, 65);
    c.put(in, x), c.put(w, wv), c.put(bias, bv), c.put(dout, g), c.put(lw, lwv);

    // matmul with fused GELU, then gelu_bwd in place on the gradient, then matmul_bwd.
    c.ops.matmul_fwd(pre, in, w, bias, M, K, N, act);
    c.ops.gelu_bwd(dout, pre, dout, size_t(M) * N);
    c.ops.matmul_bwd(din, dw, db, dout, in, w, M, K, N);
    const Vec xd = convert<double>(x), wd = convert<double>(wv), bd = convert<double>(bv);
    Vec pred(M * N), actd(M * N), gd = convert<double>(g), dind(M * K), dwd(N * K, 0.0),
                                  dbd(N, 0.0);
    cpu::matmul_fwd(pred.data(), xd.data(), wd.data(), bd.data(), M, K, N, actd.data());
    cpu::gelu_bwd(gd.data(), pred.data(), gd.data(), gd.size());
    cpu::matmul_bwd(dind.data(), dwd.data(), dbd.data(), gd.data(), xd.data(), wd.data(), M, K, N);
    check_close(c.get(din), dind, 1e-4, 1e-5, "matmul din");
    check_close(c.get(dw), dwd, 1e-4, 1e-5, "matmul dw");
    check_close(c.get(db), dbd, 1e-4, 1e-5, "matmul dbias");

    // layernorm without bias (b and db absent), on the same input.
    c.put(din, lgrad);
    c.ops.layernorm_fwd(pre.sub(0, M * K), mean, rstd, in, lw, Ten{}, M, K);
    c.ops.layernorm_bwd(ldin, ldw, Ten{}, din, in, lw, mean, rstd, M, K);
    Vec meand(M), rstdd(M), outd(M * K), ldind(M * K, 0.0), ldwd(K, 0.0);
    const Vec lwd = convert<double>(lwv), lgd = convert<double>(lgrad);
    cpu::layernorm_fwd(outd.data(), meand.data(), rstdd.data(), xd.data(), lwd.data(),
                       static_cast<const double*>(nullptr), M, K);
    cpu::layernorm_bwd(ldind.data(), ldwd.data(), static_cast<double*>(nullptr), lgd.data(),
                       xd.data(), lwd.data(), meand.data(), rstdd.data(), M, K);
    check_close(c.get(pre.sub(0, M * K)), outd, 1e-5, 1e-5, "layernorm out, no bias");
    check_close(c.get(ldin), ldind, 1e-4, 1e-5, "layernorm din");
    check_close(c.get(ldw), ldwd, 1e-4, 1e-5, "layernorm dw");
}

TEST_CASE("cpu: dropout keeps about 1-p, scales by 1/(1-p), same mask for the same seed") {
    const size_t n = 200000;
    const float p = 0.25f;
    CpuBench c;
    Ten x = c.reserve(Space::Act, n), y = c.reserve(Space::Act, n), g = c.reserve(Space::Act, n);
    c.allocate();
    const auto ones = std::vector<float>(n, 1.f), grad = random_vector(n, 70);
    c.put(x, ones), c.put(y, ones), c.put(g, grad);
    c.ops.dropout(x, n, p, 42);
    c.ops.dropout(y, n, p, 43);
    c.ops.dropout(g, n, p, 42);   // the backward: same call on the gradient, same seed
    const auto xs = c.get(x), ys = c.get(y), gs = c.get(g);
    size_t kept = 0, same_as_other_seed = 0, wrong = 0;
    for (size_t i = 0; i < n; ++i) {
        const bool keep = dropout_keep(42, i, p);
        wrong += xs[i] != (keep ? 1.f / (1.f - p) : 0.f);
        wrong += gs[i] != (keep ? grad[i] * (1.f / (1.f - p)) : 0.f);
        kept += keep;
        same_as_other_seed += (xs[i] != 0) == (ys[i] != 0);
    }
    CHECK(wrong == 0);   // value and gradient both follow dropout_keep(seed, i, p)
    CHECK(double(kept) / n == doctest::Approx(1 - p).epsilon(0.01));
    CHECK(same_as_other_seed < n * 0.7);   // independent masks agree on ~ p^2 + (1-p)^2 = 62.5%
    c.put(x, ones);
    c.ops.dropout(x, n, 0.f, 42);
    CHECK(c.get(x) == ones);
}

TEST_CASE("cpu: elementwise helpers, copy, zero, sum_squares, memory accounting") {
    const size_t n = 1001;
    CpuBench c;
    Ten a = c.reserve(Space::Act, n), b = c.reserve(Space::Act, n), o = c.reserve(Space::Act, n),
        m = c.reserve(Space::Opt, n);
    c.allocate();
    const auto av = random_vector(n, 80), bv = random_vector(n, 81);
    std::vector<float> mask(n);
    for (size_t i = 0; i < n; ++i) mask[i] = i % 3 ? 1.f : 0.f;
    c.put(a, av), c.put(b, bv), c.put(m, mask);
    c.ops.add(o, a, b, n);
    std::vector<float> sum(n), twice(n), masked(n);
    double squares = 0;
    for (size_t i = 0; i < n; ++i) {
        sum[i] = av[i] + bv[i];
        twice[i] = sum[i] + bv[i];
        masked[i] = twice[i] * -0.5f * mask[i];
        squares += double(av[i]) * av[i];
    }
    CHECK(c.get(o) == sum);
    c.ops.add_inplace(o, b, n);
    CHECK(c.get(o) == twice);
    c.ops.scale(o, -0.5f);
    c.ops.mul_inplace(o, m, n);
    CHECK(c.get(o) == masked);
    CHECK(c.ops.sum_squares(a) == doctest::Approx(squares).epsilon(1e-12));
    c.ops.copy(o, a);
    CHECK(c.get(o) == av);
    c.ops.zero(o.sub(10, 20));
    CHECK(c.get(o.sub(10, 20)) == std::vector<float>(20, 0.f));
    CHECK(c.get(o.sub(30, 1))[0] == av[30]);
    CHECK(c.ops.memory_in_use() == 4 * n * sizeof(float));   // three Act views and one Opt
    CHECK(c.ops.memory_peak() == c.ops.memory_in_use());
    c.ops.allocate(MemoryPlan{});
    CHECK(c.ops.memory_in_use() == 0);
    CHECK(c.ops.memory_peak() == 4 * n * sizeof(float));
}

// --- AdamW: two steps by hand -------------------------------------------------------------------
// lr 0.1, beta (0.9, 0.99), eps 1e-8, weight decay 0.5, grad_scale 0.5, parameters start at +1
// and -1 (the second element mirrors the first: every term is odd in (p, g)). Raw gradients
// (2, -2) then (g2, -g2), i.e. scaled 1 then g2/2. Step 1 for every variant:
//   m = 0.1, v = 0.01, m^ = 1, v^ = 1, update = 1/(1 + 1e-8)
//   decay: p = 1 - 0.1 (0.5 + 1) = 0.85;   no decay: p = 1 - 0.1 = 0.9
// Step 2 with g2 = -1 (scaled -0.5):
//   m = 0.09 - 0.05 = 0.04, v = 0.0099 + 0.0025 = 0.0124, m^ = 0.04/0.19, v^ = 0.0124/0.0199
//   update = 0.2105263 / (0.7893766 + 1e-8) = 0.2666994
//   decay: p = 0.85 - 0.1 (0.425 + 0.2666994) = 0.7808301;   no decay: 0.9 - 0.02666994 = 0.8733301
// AMSGrad, g2 = 0.04 (scaled 0.02): v = 0.0099 + 0.000004 = 0.009904 < vmax = 0.01, m = 0.092
//   update = (0.092/0.19) / (sqrt(0.01/0.0199) + 1e-8) = 0.6830630; p = 0.9 - 0.0683063 = 0.8316937
//   (without AMSGrad the denominator uses v: p = 0.8313635)
// SPAM theta 4, g2 = -1 (scaled -0.5): bound = sqrt(4 * 0.01) = 0.2, so g = -0.2;
//   m = 0.07, v = 0.0103, p = 0.8487903. Step 1 (v_prev = 0) is not clipped.
struct AdamResult {
    std::vector<float> p, m, v, vmax;
};
AdamResult run_adamw(AdamWHyper h, float g2, bool decay) {
    CpuBench c;
    Ten p = c.reserve(Space::Param, 2), other = c.reserve(Space::Param, 3);
    c.plan[Space::Grad] = c.plan[Space::Param];
    AdamWTensor t{p, c.reserve(Space::Opt, 2), c.reserve(Space::Opt, 2), c.reserve(Space::Opt, 2),
                  decay};
    c.allocate();
    c.put(p, {1.f, -1.f});
    c.put(other, {3.f, 4.f, 5.f});   // not in this call's list: must not move
    h.lr = 0.1f, h.beta1 = 0.9f, h.beta2 = 0.99f, h.eps = 1e-8f, h.weight_decay = 0.5f;
    h.grad_scale = 0.5f;
    c.put(p.as(Space::Grad), {2.f, -2.f});
    h.step = 1;
    c.ops.adamw({t}, h);
    c.put(p.as(Space::Grad), {g2, -g2});
    h.step = 2;
    c.ops.adamw({t}, h);
    CHECK(c.get(other) == std::vector<float>{3.f, 4.f, 5.f});
    CHECK(c.get(p.as(Space::Grad)) == std::vector<float>{g2, -g2});   // gradients are not modified
    return {c.get(p), c.get(t.m), c.get(t.v), c.get(t.vmax)};
}

void check_pair(const std::vector<float>& x, double expect, const char* what) {
    INFO(what);
    CHECK(x[0] == doctest::Approx(expect).epsilon(1e-6));
    CHECK(x[1] == doctest::Approx(-expect).epsilon(1e-6));
}

TEST_CASE("cpu: adamw two steps by hand: decay only where asked, AMSGrad, SPAM clip") {
    AdamWHyper plain;
    SUBCASE("decoupled weight decay") {
        const AdamResult r = run_adamw(plain, -1.f, true);
        check_pair(r.p, 0.7808301, "p");
        check_pair(r.m, 0.04, "m");
        CHECK(r.v[0] == doctest::Approx(0.0124).epsilon(1e-6));
    }
    SUBCASE("no decay on a decay=false tensor") {
        check_pair(run_adamw(plain, -1.f, false).p, 0.8733301, "p");
    }
    SUBCASE("AMSGrad uses the running max of v") {
        AdamWHyper h;
        h.amsgrad = true;
        const AdamResult r = run_adamw(h, 0.04f, false);
        check_pair(r.p, 0.8316937, "p");
        CHECK(r.v[0] == doctest::Approx(0.009904).epsilon(1e-6));
        CHECK(r.vmax[0] == doctest::Approx(0.01).epsilon(1e-6));
        check_pair(run_adamw(plain, 0.04f, false).p, 0.8313635, "p without AMSGrad");
    }
    SUBCASE("SPAM clips to sqrt(theta v_prev), not on the first step") {
        AdamWHyper h;
        h.spam_theta = 4.f;
        const AdamResult r = run_adamw(h, -1.f, false);
        check_pair(r.p, 0.8487903, "p");
        check_pair(r.m, 0.07, "m");
        CHECK(r.v[0] == doctest::Approx(0.0103).epsilon(1e-6));
    }
}

TEST_CASE("cpu: bad views and inputs raise gpt::Error naming the call") {
    CpuBench c;
    Ten a = c.reserve(Space::Act, 8), tok = c.reserve(Space::Index, 2),
        wte = c.reserve(Space::Param, 3 * 4), wpe = c.reserve(Space::Param, 2 * 4);
    c.allocate();
    const std::vector<int32_t> bad_tokens = {1, 3};   // table has 3 rows
    c.ops.upload_index(tok, bad_tokens.data());
    CHECK_THROWS_WITH_AS(c.ops.embedding_fwd(a, tok, wte, wpe, 1, 2, 4),
                         doctest::Contains("embedding_fwd: token 3"), Error);
    CHECK_THROWS_WITH_AS(c.ops.gelu_fwd(a, Ten{Space::Act, 4, 8}, 8),
                         doctest::Contains("gelu_fwd in"), Error);   // reaches past the space
    CHECK_THROWS_WITH_AS(c.ops.gelu_fwd(a, a, 9), doctest::Contains("too small"), Error);
    CHECK_THROWS_AS(c.ops.gelu_fwd(a, tok, 2), Error);   // Index view as float
    CHECK_THROWS_AS(c.ops.dropout(a, 8, 1.f, 0), Error);
    CHECK_THROWS_WITH_AS(c.ops.classifier(a.sub(0, 2), a, tok, 2, 3, 4, 1.f),
                         doctest::Contains("target 3"), Error);
    AttnDims d;
    d.B = 1, d.T = 2, d.Hq = 3, d.Hkv = 2, d.Dqk = d.Dv = 1, d.q_stride = 3, d.k_stride = 2,
    d.v_stride = 2;
    CHECK_THROWS_WITH_AS(c.ops.attention_fwd(a, a, a, a, a, d), doctest::Contains("Hkv"), Error);
    CHECK_THROWS_AS(CpuOps(-1), Error);
}

}  // namespace
}  // namespace gpt
