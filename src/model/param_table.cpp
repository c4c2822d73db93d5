#include "model/param_table.h"

#include <cmath>

#include "common/error.h"
#include "common/rng.h"

namespace gpt {

size_t ParamSpec::numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
}

Ten ParamTable::add(const std::string& name, std::vector<int64_t> shape, Init init, float value,
                    bool decay, int64_t init_rows) {
    GPT_CHECK(!has(name), "parameter '" + name + "' declared twice");
    ParamSpec s{name, std::move(shape), init, value, decay, init_rows, {}};
    // Align every tensor to 64 elements so vectorised kernels may assume aligned starts.
    size_t off = (total_ + 63) / 64 * 64;
    s.t = Ten{Space::Param, off, s.numel()};
    total_ = off + s.numel();
    specs_.push_back(std::move(s));
    return specs_.back().t;
}

bool ParamTable::has(const std::string& name) const {
    for (const auto& s : specs_)
        if (s.name == name) return true;
    return false;
}

const ParamSpec& ParamTable::get(const std::string& name) const {
    for (const auto& s : specs_)
        if (s.name == name) return s;
    fail("no parameter named '" + name + "'");
}

static uint64_t hash_name(const std::string& s) {
    uint64_t h = 1469598103934665603ull;   // FNV-1a
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

std::vector<float> ParamTable::initial_values(uint64_t seed) const {
    std::vector<float> v(total_, 0.f);
    for (const auto& s : specs_) {
        float* p = v.data() + s.t.off;
        size_t n = s.numel();
        Rng rng(mix64(seed ^ hash_name(s.name)));
        switch (s.init) {
            case Init::zeros: break;
            case Init::ones:
                for (size_t i = 0; i < n; ++i) p[i] = 1.f;
                break;
            case Init::constant:
                for (size_t i = 0; i < n; ++i) p[i] = s.value;
                break;
            case Init::normal: {
                size_t lim = n;
                if (s.init_rows >= 0 && s.shape.size() == 2)
                    lim = static_cast<size_t>(s.init_rows) * static_cast<size_t>(s.shape[1]);
                for (size_t i = 0; i < lim; ++i) p[i] = s.value * rng.normal();
                break;
            }
            case Init::xavier: {   // uniform(-a, a), a = sqrt(6 / (fan_in + fan_out))
                GPT_CHECK(s.shape.size() >= 2, "xavier init needs a matrix: " + s.name);
                double fan_out = static_cast<double>(s.shape[s.shape.size() - 2]);
                double fan_in = static_cast<double>(s.shape.back());
                float a = static_cast<float>(std::sqrt(6.0 / (fan_in + fan_out)));
                for (size_t i = 0; i < n; ++i) p[i] = a * (2.f * rng.uniform() - 1.f);
                break;
            }
        }
    }
    return v;
}

}  // namespace gpt
