// The GPT-2 MLP (SPEC §1, §2.6 width): c_fc [E->F] with the GELU fused into the GEMM epilogue,
// c_proj [F->E]. F is model.mlp_hidden (4E when 0). Optional mechanisms of SPEC §2.6 on the
// hidden h = GELU(c_fc x): M2 replaces it by h + alpha_2 (agg W_up) before c_proj (model.m2), and
// M1's producer (model.m1, blocks 0..Ly-2) turns h into the next block's attention gate.
#pragma once
#include <memory>

#include "model/mlp_m1_gate.h"
#include "model/mlp_m2_mix.h"
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
    void connect(BlockLink* own) override { link_ = own; }

private:
    ModelConfig cfg_;
    int layer_;
    BlockLink* link_ = nullptr;
    std::unique_ptr<M1GateProducer> m1_;   // present in blocks 0..Ly-2 when model.m1
    std::unique_ptr<M2CrossTokenMix> m2_;  // present when model.m2
    Ten w_fc_, b_fc_, w_proj_, b_proj_;
    Ten pre_, act_;   // pre-activation and GELU output, both [B*T, F]
};

}  // namespace gpt
