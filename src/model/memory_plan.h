// Activations and scratch laid out up front: each request gets an aligned offset in its space,
// named, so the plan can be printed (bytes per category) before anything runs.
#pragma once
#include <string>
#include <vector>

#include "model/ops.h"

namespace gpt {

class ActivationPlan {
public:
    struct Entry {
        std::string category;   // "residual", "attention", "mlp", "head", "grad-scratch", ...
        std::string name;
        Ten t;
    };
    Ten add(Space s, size_t n, const std::string& category, const std::string& name);
    size_t size(Space s) const { return size_[static_cast<int>(s)]; }
    // What to allocate for these activations and `param_elems` parameters (Param and Grad; the
    // optimizer adds its state to Space::Opt).
    MemoryPlan memory_plan(size_t param_elems) const;
    const std::vector<Entry>& entries() const { return entries_; }

private:
    size_t size_[kNumSpaces] = {0, 0, 0, 0, 0, 0};
    std::vector<Entry> entries_;
};

// Bytes per element of each space for a backend (fp32 everywhere on the CPU; bf16 activations
// on CUDA): used to report the plan and to refuse to start when it cannot fit.
struct SpaceBytes {
    size_t bytes[kNumSpaces] = {4, 4, 4, 4, 4, 4};
    size_t operator[](Space s) const { return bytes[static_cast<int>(s)]; }
};

// A human-readable table of the memory plan, one line per category, with the total.
std::string describe_memory(const MemoryPlan& plan, const ActivationPlan& acts,
                            const SpaceBytes& bytes, size_t param_count);

}  // namespace gpt
