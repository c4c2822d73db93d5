// The parameter list of a model: every tensor's name, shape, init and weight-decay flag, laid out
// by offset in one flat buffer (Space::Param; gradients and optimizer state share the offsets).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/ops.h"

namespace gpt {

enum class Init { normal, zeros, ones, constant, xavier };

struct ParamSpec {
    std::string name;
    std::vector<int64_t> shape;
    Init init = Init::zeros;
    float value = 0.f;        // std for normal, the constant for constant
    bool decay = false;       // decoupled weight decay applies (2-D weight matrices)
    int64_t init_rows = -1;   // normal init only for the first rows (padded vocab rows stay 0)
    Ten t;                    // Space::Param view
    size_t numel() const;
};

class ParamTable {
public:
    Ten add(const std::string& name, std::vector<int64_t> shape, Init init, float value,
            bool decay, int64_t init_rows = -1);
    const std::vector<ParamSpec>& specs() const { return specs_; }
    const ParamSpec& get(const std::string& name) const;   // Error naming the parameter
    bool has(const std::string& name) const;
    size_t total() const { return total_; }
    // Fill host values: each tensor draws from its own stream keyed by (seed, name), so adding
    // a parameter never changes another's initial values.
    std::vector<float> initial_values(uint64_t seed) const;

private:
    std::vector<ParamSpec> specs_;
    size_t total_ = 0;
};

}  // namespace gpt
