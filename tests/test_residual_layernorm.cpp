// residual_layernorm_fwd (the residual add fused with the LayerNorm after it) on the CPU backend:
// bit-identical to add + layernorm_fwd, which the model's forward used to call, both through the
// CPU override and through Ops' default (the two calls), with and without a bias, on row widths
// that are and are not multiples of 8.
#include <doctest/doctest.h>

#include <vector>

#include "common/error.h"
#include "test_cpu_ops_util.h"

namespace gpt {
namespace {

using test::CpuBench;
using test::random_vector;

struct Shape {
    int N, C;
};

TEST_CASE("cpu: residual_layernorm_fwd equals add + layernorm_fwd bit for bit (override and default)") {
    for (const Shape s : {Shape{1, 8}, Shape{7, 37}, Shape{33, 64}, Shape{5, 100}, Shape{3, 768}}) {
        for (const bool with_bias : {true, false}) {
            CAPTURE(s.N);
            CAPTURE(s.C);
            CAPTURE(with_bias);
            const size_t nc = size_t(s.N) * s.C;
            CpuBench c;
            const Ten a = c.reserve(Space::Act, nc), b = c.reserve(Space::Act, nc);
            const Ten w = c.reserve(Space::Param, s.C), bias = with_bias ? c.reserve(Space::Param, s.C) : Ten{};
            // Outputs of the reference (add + layernorm_fwd), the override and the default.
            struct Outputs {
                Ten sum, out, mean, rstd;
            };
            auto reserve_outputs = [&] {
                return Outputs{c.reserve(Space::Act, nc), c.reserve(Space::Act, nc), c.reserve(Space::Stat, s.N),
                               c.reserve(Space::Stat, s.N)};
            };
            const Outputs ref = reserve_outputs(), fused = reserve_outputs(), base = reserve_outputs();
            c.allocate();
            // Residual stream of a few units plus a smaller branch, with an offset so the mean matters.
            c.put(a, random_vector(nc, 101, -2.0, 3.0));
            c.put(b, random_vector(nc, 102, -0.5, 0.5));
            c.put(w, random_vector(s.C, 103, 0.5, 1.5));
            if (with_bias) c.put(bias, random_vector(s.C, 104));

            c.ops.add(ref.sum, a, b, nc);
            c.ops.layernorm_fwd(ref.out, ref.mean, ref.rstd, ref.sum, w, bias, s.N, s.C);
            c.ops.residual_layernorm_fwd(fused.sum, fused.out, fused.mean, fused.rstd, a, b, w, bias, s.N, s.C);
            // Ops' own body, not CpuOps' override: what a backend without a fused kernel runs.
            c.ops.Ops::residual_layernorm_fwd(base.sum, base.out, base.mean, base.rstd, a, b, w, bias, s.N, s.C);

            for (const Outputs& o : {fused, base}) {
                CHECK(c.get(o.sum) == c.get(ref.sum));
                CHECK(c.get(o.out) == c.get(ref.out));
                CHECK(c.get(o.mean) == c.get(ref.mean));
                CHECK(c.get(o.rstd) == c.get(ref.rstd));
            }
            // Non-trivial inputs: the sum really is a + b, and the output is normalised.
            const auto sum = c.get(ref.sum), av = c.get(a), bv = c.get(b);
            CHECK(sum[nc - 1] == av[nc - 1] + bv[nc - 1]);
            CHECK(c.get(ref.rstd)[0] > 0.f);
        }
    }
}

TEST_CASE("cpu: residual_layernorm_fwd checks its views like the other calls") {
    const int N = 4, C = 16;
    CpuBench c;
    const Ten a = c.reserve(Space::Act, N * C), b = c.reserve(Space::Act, N * C), sum = c.reserve(Space::Act, N * C);
    const Ten out = c.reserve(Space::Act, N * C), mean = c.reserve(Space::Stat, N), rstd = c.reserve(Space::Stat, N);
    const Ten w = c.reserve(Space::Param, C);
    c.allocate();
    CHECK_THROWS_WITH_AS(c.ops.residual_layernorm_fwd(sum, out, mean, rstd, a, b, w, {}, N + 1, C),
                         doctest::Contains("residual_layernorm_fwd"), Error);
    CHECK_THROWS_WITH_AS(c.ops.residual_layernorm_fwd(sum, out, mean, rstd, a, b, w, {}, 0, C),
                         doctest::Contains("residual_layernorm_fwd"), Error);
}

}  // namespace
}  // namespace gpt
