// Helpers for the GPU tests: every CUDA op runs on the same inputs as the CPU fp32 reference
// backend and the two outputs are compared by relative L2 error. Outputs on the GPU are poisoned
// (NaN) first, so an element the kernel forgot to write fails the comparison.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/rng.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_backend.h"
#include "model/ops.h"
#include "model/param_table.h"

namespace gpt::gputest {

// Skips the calling test case (with a message) on a machine without a GPU.
#define GPT_REQUIRE_GPU()                                                  \
    do {                                                                   \
        if (!::gpt::cuda_device_available()) {                             \
            MESSAGE("no CUDA device: test skipped");                       \
            return;                                                        \
        }                                                                  \
    } while (0)

// Round to the nearest bf16 (ties to even), so both backends see the same input values.
inline float round_bf16(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u += 0x7fff + ((u >> 16) & 1);
    u &= 0xffff0000u;
    std::memcpy(&x, &u, 4);
    return x;
}

inline std::vector<float> randn(size_t n, uint64_t seed, float stddev = 1.f, bool bf16 = true) {
    Rng rng(seed);
    std::vector<float> v(n);
    for (auto& x : v) {
        x = rng.normal() * stddev;
        if (bf16) x = round_bf16(x);
    }
    return v;
}

// ||a - ref|| / ||ref||; infinity when a has a NaN/Inf (unwritten or broken output).
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
    REQUIRE(a.size() == ref.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i])) return INFINITY;
        const double d = double(a[i]) - ref[i];
        num += d * d;
        den += double(ref[i]) * ref[i];
    }
    return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Both backends over one memory plan.
struct Pair {
    std::unique_ptr<Ops> cpu = make_cpu_ops(2);
    std::unique_ptr<Ops> gpu = make_cuda_ops();
    MemoryPlan plan;

    // Reserve n elements of space s (offsets kept multiples of 8: 16-byte aligned bf16 rows).
    Ten reserve(Space s, size_t n) {
        Ten t{s, plan[s], n};
        plan[s] += (n + 7) / 8 * 8;
        return t;
    }
    void allocate() {   // Grad and Opt views use Param's offsets: cover them
        plan[Space::Grad] = std::max(plan[Space::Grad], plan[Space::Param]);
        cpu->allocate(plan);
        gpu->allocate(plan);
    }
    void set(Ten t, const std::vector<float>& v) {
        REQUIRE(v.size() == t.n);
        cpu->upload(t, v.data());
        gpu->upload(t, v.data());
    }
    void set_index(Ten t, const std::vector<int32_t>& v) {
        REQUIRE(v.size() == t.n);
        cpu->upload_index(t, v.data());
        gpu->upload_index(t, v.data());
    }
    void poison(Ten t) {   // GPU only: NaN everywhere the op must write
        std::vector<float> nan(t.n, NAN);
        gpu->upload(t, nan.data());
    }
    template <class F>
    void run(F&& f) {
        f(*cpu);
        f(*gpu);
        gpu->synchronize();
    }
    static std::vector<float> get(Ops& o, Ten t) {
        std::vector<float> v(t.n);
        o.download(t, v.data());
        return v;
    }
    // Relative L2 error of the GPU's t against the CPU's.
    double err(Ten t) { return rel_l2(get(*gpu, t), get(*cpu, t)); }
};

// Every parameter gradient of a GPU model against the CPU's, relative L2 per tensor under
// tol(name), except the small tensors (n <= 64: per-layer scalars and per-head gates), which are
// compared per kind across layers (the "h.N." prefix dropped, the layers' values concatenated): one
// such scalar can be the near-zero sum of many cancelling terms, where bf16 rounding alone moves
// it by 100% (RA+MLA's ra_alpha: 8e-7 in one layer, 6e-5 in the other; the GPU was 1.4e-6 off).
template <class Tol>
void check_gradients(const std::vector<ParamSpec>& specs, const std::vector<float>& gpu,
                     const std::vector<float>& cpu, Tol tol) {
    std::map<std::string, std::pair<std::vector<float>, std::vector<float>>> small;   // kind -> (gpu, cpu)
    auto compare = [&](const std::string& name, const std::vector<float>& a, const std::vector<float>& ref) {
        auto l2 = [](const std::vector<float>& v) {
            double s = 0;
            for (float x : v) s += double(x) * x;
            return std::sqrt(s);
        };
        const double err = rel_l2(a, ref), norm_gpu = l2(a), norm_cpu = l2(ref);
        CAPTURE(name);
        CAPTURE(err);
        CAPTURE(norm_gpu);
        CAPTURE(norm_cpu);
        CHECK(err < tol(name));
    };
    for (const auto& s : specs) {
        const std::vector<float> a(gpu.begin() + long(s.t.off), gpu.begin() + long(s.t.off + s.t.n));
        const std::vector<float> ref(cpu.begin() + long(s.t.off), cpu.begin() + long(s.t.off + s.t.n));
        if (s.t.n > 64) {
            compare(s.name, a, ref);
            continue;
        }
        std::string kind = s.name;
        if (kind.rfind("h.", 0) == 0 && kind.find('.', 2) != std::string::npos) kind = "h.*" + kind.substr(kind.find('.', 2));
        auto& [ga, gc] = small[kind];
        ga.insert(ga.end(), a.begin(), a.end());
        gc.insert(gc.end(), ref.begin(), ref.end());
    }
    for (const auto& [kind, v] : small) compare(kind, v.first, v.second);
}

}  // namespace gpt::gputest
