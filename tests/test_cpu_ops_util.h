// Shared helpers of the CPU-backend tests: seeded random vectors, a small bump allocator over a
// CpuOps instance, and the finite-difference gradient check.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"

namespace gpt::test {

// Uniform in [lo, hi), reproducible from the seed.
template <class S = float>
std::vector<S> random_vector(size_t n, uint32_t seed, double lo = -1.0, double hi = 1.0) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> dist(lo, hi);
    std::vector<S> v(n);
    for (auto& x : v) x = static_cast<S>(dist(gen));
    return v;
}

inline std::vector<int32_t> random_tokens(size_t n, int vocab, uint32_t seed) {
    std::mt19937 gen(seed);
    std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
    std::vector<int32_t> v(n);
    for (auto& x : v) x = dist(gen);
    return v;
}

template <class To, class From>
std::vector<To> convert(const std::vector<From>& v) {
    return std::vector<To>(v.begin(), v.end());
}

// A CpuOps with views reserved one after another in each space: reserve everything, allocate(),
// then put/get. Two threads, like the CI machine, so the OpenMP paths run in parallel.
struct CpuBench {
    explicit CpuBench(int threads = 2) : ops(threads) {}
    CpuOps ops;
    MemoryPlan plan;
    Ten reserve(Space s, size_t n) {
        Ten t{s, plan[s], n};
        plan[s] += n;
        return t;
    }
    void allocate() { ops.allocate(plan); }
    Ten put(Ten t, const std::vector<float>& v) {
        REQUIRE(v.size() == t.n);
        ops.upload(t, v.data());
        return t;
    }
    std::vector<float> get(Ten t) {
        std::vector<float> v(t.n);
        ops.download(t, v.data());
        return v;
    }
};

// Central differences of a scalar loss over every element of x, compared with `analytic`:
// |numeric - analytic| <= tol * max(1, |analytic|). x is restored afterwards.
inline void check_gradient(std::vector<double>& x, const std::vector<double>& analytic,
                           const std::function<double()>& loss, const char* what, double eps = 1e-5,
                           double tol = 1e-6) {
    REQUIRE(x.size() == analytic.size());
    int bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const double saved = x[i];
        x[i] = saved + eps;
        const double up = loss();
        x[i] = saved - eps;
        const double down = loss();
        x[i] = saved;
        const double numeric = (up - down) / (2 * eps);
        if (std::abs(numeric - analytic[i]) > tol * std::max(1.0, std::abs(analytic[i])) &&
            bad++ < 5)
            FAIL_CHECK(std::string(what)
                       << "[" << i << "]: numeric " << numeric << " vs analytic " << analytic[i]);
    }
    CHECK_MESSAGE(bad == 0, std::string(what)
                                << ": " << bad << " of " << x.size() << " elements differ");
}

// sum(out * r): the scalar loss whose gradient with respect to out is r.
inline double weighted_sum(const std::vector<double>& out, const std::vector<double>& r) {
    double s = 0;
    for (size_t i = 0; i < out.size(); ++i) s += out[i] * r[i];
    return s;
}

// Largest |a - b| / (atol + |b|) style check, element by element, with a message on failure.
template <class A, class B>
void check_close(const std::vector<A>& a, const std::vector<B>& b, double rtol, double atol,
                 const char* what) {
    REQUIRE(a.size() == b.size());
    int bad = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        const double x = a[i], y = b[i];
        if (!(std::abs(x - y) <= atol + rtol * std::abs(y)) && bad++ < 5)
            FAIL_CHECK(std::string(what) << "[" << i << "]: " << x << " vs " << y);
    }
    CHECK_MESSAGE(bad == 0, std::string(what)
                                << ": " << bad << " of " << a.size() << " elements differ");
}

}  // namespace gpt::test
