// The GPT-2 MLP (SPEC §1, §2.6 width): c_fc [E->F] with the GELU fused into the GEMM epilogue,
// c_proj [F->E]. F is model.mlp_hidden (4E when 0).
#pragma once
#include "model/units.h"

namespace gpt {

class StandardMlp final : public MlpUnit {
public:
    StandardMlp(const ModelConfig& cfg, int layer);
    void declare(ParamTable& params) override;
    void plan(ActivationPlan& acts, int B, int T) override;
    size_t grad_scratch_elems(int B, int T) const override;
    void forward(const StepContext& c, Ten in, Ten out) override;
    void backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) override;
    std::string describe() const override;

private:
    ModelConfig cfg_;
    int layer_;
    Ten w_fc_, b_fc_, w_proj_, b_proj_;
    Ten pre_, act_;   // pre-activation and GELU output, both [B*T, F]
};

}  // namespace gpt
