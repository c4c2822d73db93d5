// A variant is a unit: it declares its parameters and activations and implements forward and
// backward against the operation interface. The block graph (gpt.cpp) only sees these classes,
// so adding an attention or MLP variant touches one file plus its tests.
#pragma once
#include <memory>
#include <string>

#include "common/rng.h"
#include "model/config.h"
#include "model/memory_plan.h"
#include "model/ops.h"
#include "model/param_table.h"

namespace gpt {

// What one forward/backward call needs to know beyond its tensors.
struct StepContext {
    Ops* ops = nullptr;
    int B = 0, T = 0;          // this call's shapes (<= the planned ones)
    bool training = false;     // dropout on
    uint64_t seed = 0;         // this micro-step's dropout stream
    // A distinct dropout stream for each (layer, site) of the step.
    uint64_t site_seed(int layer, int site) const {
        return mix64(seed ^ (uint64_t(layer) * 64 + uint64_t(site) + 1));
    }
};

class AttentionUnit {
public:
    virtual ~AttentionUnit() = default;
    virtual void declare(ParamTable& params) = 0;
    virtual void plan(ActivationPlan& acts, int B, int T) = 0;
    virtual size_t grad_scratch_elems(int B, int T) const = 0;    // Act elements for backward
    // in: [B*T, E] (the LayerNorm output); out: [B*T, E] after the output projection.
    virtual void forward(const StepContext& c, Ten in, Ten out) = 0;
    // din is overwritten; scratch is shared by all layers (grad_scratch_elems long).
    virtual void backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) = 0;
    virtual std::string describe() const = 0;
};

class MlpUnit {
public:
    virtual ~MlpUnit() = default;
    virtual void declare(ParamTable& params) = 0;
    virtual void plan(ActivationPlan& acts, int B, int T) = 0;
    virtual size_t grad_scratch_elems(int B, int T) const = 0;
    virtual void forward(const StepContext& c, Ten in, Ten out) = 0;
    virtual void backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) = 0;
    virtual std::string describe() const = 0;
};

// Factories: pick the unit for a layer from the model configuration (Error for unknown kinds).
std::unique_ptr<AttentionUnit> make_attention_unit(const ModelConfig& cfg, int layer);
std::unique_ptr<MlpUnit> make_mlp_unit(const ModelConfig& cfg, int layer);

}  // namespace gpt
