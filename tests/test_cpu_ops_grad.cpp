// Finite-difference checks of every backward of the CPU reference kernels. The kernels are
// templates; here they run in double, so central differences (eps 1e-5) agree with the analytic
// gradients to 1e-6 relative (absolute below 1) — far tighter than fp32 would allow.
#include <doctest/doctest.h>

#include <algorithm>

#include "cpu/cpu_kernels.h"
#include "test_cpu_ops_util.h"

namespace gpt {
namespace {

using test::check_gradient;
using test::random_vector;
using test::weighted_sum;
using Vec = std::vector<double>;

// analytic gradient of an accumulating backward: what it added to its starting value.
Vec added(const Vec& after, const Vec& before) {
    Vec d(after.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
    return d;
}

TEST_CASE("cpu: embedding backward matches finite differences (repeated tokens)") {
    const int B = 2, T = 3, E = 4, V = 5;
    std::vector<int32_t> tokens = {1, 3, 1, 4, 1, 0};   // token 1 three times: rows collide
    Vec wte = random_vector<double>(V * E, 1), wpe = random_vector<double>(T * E, 2);
    const Vec r = random_vector<double>(B * T * E, 3);
    auto loss = [&] {
        Vec out(B * T * E);
        cpu::embedding_fwd(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, E);
        return weighted_sum(out, r);
    };
    const Vec dwte0 = random_vector<double>(V * E, 4), dwpe0 = random_vector<double>(T * E, 5);
    Vec dwte = dwte0, dwpe = dwpe0;   // non-zero start: the backward must accumulate
    cpu::embedding_bwd(dwte.data(), dwpe.data(), r.data(), tokens.data(), B, T, E);
    check_gradient(wte, added(dwte, dwte0), loss, "dwte");
    check_gradient(wpe, added(dwpe, dwpe0), loss, "dwpe");
}

TEST_CASE("cpu: layernorm backward matches finite differences (din, dw, db)") {
    const int N = 3, C = 8;
    Vec in = random_vector<double>(N * C, 10, -2, 2), w = random_vector<double>(C, 11, 0.5, 1.5),
        b = random_vector<double>(C, 12);
    const Vec r = random_vector<double>(N * C, 13);
    Vec mean(N), rstd(N);
    auto loss = [&] {
        Vec out(N * C);
        cpu::layernorm_fwd(out.data(), mean.data(), rstd.data(), in.data(), w.data(), b.data(), N,
                           C);
        return weighted_sum(out, r);
    };
    loss();   // fills mean, rstd at the unperturbed point
    const Vec din0 = random_vector<double>(N * C, 14), dw0 = random_vector<double>(C, 15),
              db0 = random_vector<double>(C, 16);
    Vec din = din0, dw = dw0, db = db0;
    cpu::layernorm_bwd(din.data(), dw.data(), db.data(), r.data(), in.data(), w.data(), mean.data(),
                       rstd.data(), N, C);
    check_gradient(in, added(din, din0), loss, "din");
    check_gradient(w, added(dw, dw0), loss, "dw");
    check_gradient(b, added(db, db0), loss, "db");
}

TEST_CASE("cpu: matmul backward matches finite differences (din, dw, dbias)") {
    const int M = 3, K = 4, N = 5;
    Vec in = random_vector<double>(M * K, 20), w = random_vector<double>(N * K, 21),
        bias = random_vector<double>(N, 22);
    const Vec r = random_vector<double>(M * N, 23);
    auto loss = [&] {
        Vec out(M * N);
        cpu::matmul_fwd(out.data(), in.data(), w.data(), bias.data(), M, K, N,
                        static_cast<double*>(nullptr));
        return weighted_sum(out, r);
    };
    Vec din(M * K, 99.0);   // overwritten, whatever it held
    const Vec dw0 = random_vector<double>(N * K, 24), db0 = random_vector<double>(N, 25);
    Vec dw = dw0, db = db0;
    cpu::matmul_bwd(din.data(), dw.data(), db.data(), r.data(), in.data(), w.data(), M, K, N);
    check_gradient(in, din, loss, "din");
    check_gradient(w, added(dw, dw0), loss, "dw");
    check_gradient(bias, added(db, db0), loss, "dbias");
}

TEST_CASE("cpu: matmul with fused GELU, backward through gelu_bwd in place, matches FD") {
    const int M = 4, K = 3, N = 6;
    Vec in = random_vector<double>(M * K, 30, -2, 2), w = random_vector<double>(N * K, 31, -2, 2),
        bias = random_vector<double>(N, 32);
    const Vec r = random_vector<double>(M * N, 33);
    Vec pre(M * N), act(M * N);
    auto loss = [&] {
        cpu::matmul_fwd(pre.data(), in.data(), w.data(), bias.data(), M, K, N, act.data());
        return weighted_sum(act, r);
    };
    loss();
    Vec dpre = r;   // the layer sequence runs gelu_bwd in place on the gradient buffer
    cpu::gelu_bwd(dpre.data(), pre.data(), dpre.data(), dpre.size());
    Vec din(M * K), dw(N * K, 0.0), db(N, 0.0);
    cpu::matmul_bwd(din.data(), dw.data(), db.data(), dpre.data(), in.data(), w.data(), M, K, N);
    check_gradient(in, din, loss, "din");
    check_gradient(w, dw, loss, "dw");
    check_gradient(bias, db, loss, "dbias");
}

TEST_CASE("cpu: gelu backward matches finite differences") {
    const size_t n = 64;
    Vec x = random_vector<double>(n, 40, -4, 4);
    const Vec r = random_vector<double>(n, 41);
    auto loss = [&] {
        Vec y(n);
        cpu::gelu_fwd(y.data(), x.data(), n);
        return weighted_sum(y, r);
    };
    Vec dx(n);
    cpu::gelu_bwd(dx.data(), x.data(), r.data(), n);
    check_gradient(x, dx, loss, "dx");
}

// q, k, v packed per token in one buffer [q heads | k heads | v heads | 1 pad] so the strides are
// exercised; the gradients land in the same layout. The pad column must stay untouched.
void check_attention_gradients(AttnDims d, uint32_t seed) {
    const int qw = d.Hq * d.Dqk, kw = d.Hkv * d.Dqk, vw = d.Hkv * d.Dv, W = qw + kw + vw + 1;
    d.q_stride = d.k_stride = d.v_stride = W;
    const size_t rows = size_t(d.B) * d.T;
    Vec qkv = random_vector<double>(rows * W, seed, -1.5, 1.5);
    const Vec r = random_vector<double>(rows * d.Hq * d.Dv, seed + 1);
    Vec lse(rows * d.Hq);
    auto loss = [&] {
        Vec out(rows * d.Hq * d.Dv);
        cpu::attention_fwd(out.data(), lse.data(), qkv.data(), qkv.data() + qw,
                           qkv.data() + qw + kw, d);
        return weighted_sum(out, r);
    };
    loss();
    const double garbage = 7.0;
    Vec dqkv(rows * W, garbage);   // attention_bwd overwrites its slices, whatever they held
    cpu::attention_bwd(dqkv.data(), dqkv.data() + qw, dqkv.data() + qw + kw, r.data(), lse.data(),
                       qkv.data(), qkv.data() + qw, qkv.data() + qw + kw, d);
    for (size_t t = 0; t < rows; ++t) {
        CHECK(dqkv[t * W + W - 1] == garbage);   // pad column: not ours, not written
        dqkv[t * W + W - 1] = 0;                 // the loss does not depend on it either
    }
    check_gradient(qkv, dqkv, loss, "dqkv");
}

AttnDims attn_dims(int B, int T, int Hq, int Hkv, int Dqk, int Dv) {
    AttnDims d;
    d.B = B, d.T = T, d.Hq = Hq, d.Hkv = Hkv, d.Dqk = Dqk, d.Dv = Dv;
    d.scale = 1.f / std::sqrt(static_cast<float>(Dv));
    return d;
}

TEST_CASE("cpu: attention backward matches finite differences") {
    SUBCASE("plain multi-head") { check_attention_gradients(attn_dims(2, 5, 2, 2, 4, 4), 50); }
    SUBCASE("grouped heads Hkv < Hq, Dqk = 2 Dv") {
        check_attention_gradients(attn_dims(2, 5, 4, 2, 6, 3), 51);
    }
    SUBCASE("multi-query with dropout on the probabilities") {
        AttnDims d = attn_dims(2, 6, 3, 1, 4, 4);
        d.dropout = 0.3f;
        d.seed = 1234;
        check_attention_gradients(d, 52);
    }
    SUBCASE("banded reciprocal half (band 2, split 4) with dropout") {
        AttnDims d = attn_dims(1, 7, 2, 1, 8, 4);
        d.band = 2;
        d.band_split = 4;
        d.dropout = 0.2f;
        d.seed = 99;
        check_attention_gradients(d, 53);
    }
}

TEST_CASE("cpu: classifier gradient matches finite differences, padding gets none") {
    const int N = 3, V = 7, Vp = 10;
    Vec logits = random_vector<double>(N * Vp, 60, -2, 2);
    for (int i = 0; i < N; ++i)
        for (int j = V; j < Vp; ++j) logits[i * Vp + j] = 50.0;   // would win if it counted
    const std::vector<int32_t> targets = {0, 6, 3};
    const double dloss = 0.37;
    auto loss = [&] {   // dloss * sum of the per-row losses (dloss = 0: logits left alone)
        Vec losses(N);
        cpu::classifier(losses.data(), logits.data(), targets.data(), N, V, Vp, 0.0);
        double s = 0;
        for (double l : losses) s += dloss * l;
        return s;
    };
    Vec grad = logits, losses(N);
    cpu::classifier(losses.data(), grad.data(), targets.data(), N, V, Vp, dloss);
    for (int i = 0; i < N; ++i)
        for (int j = V; j < Vp; ++j) CHECK(grad[i * Vp + j] == 0.0);
    check_gradient(logits, grad, loss, "dlogits");
}

}  // namespace
}  // namespace gpt
