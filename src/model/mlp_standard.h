// The GPT-2 MLP (SPEC §1, §2.6 width): c_fc [E->F] with the GELU fused into the GEMM epilogue,
// c_proj [F->E]. F is model.mlp_hidden (4E when 0). Optional mechanisms of SPEC §2.6 on the
// hidden h = GELU(c_fc x): M2 adds alpha_2 (agg W_up) (model.m2), M3 adds alpha_3 (k_lat C^T) and
// hands h C to the next block's k_lat (model.m3), and M1's producer (model.m1, blocks 0..Ly-2)
// turns h into the next block's attention gate. c_proj reads h + the additions: M2's and M3's are
// rank-r paths applied through c_proj (mlp_low_rank_path.h), so c_proj's GEMM reads h itself.
#pragma once
#include <memory>
#include <vector>

#include "model/mlp_m1_gate.h"
#include "model/mlp_m2_mix.h"
#include "model/mlp_m3_latent.h"
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
    void connect(BlockLink* own, const SharedScratch* shared) override { link_ = own, shared_ = shared; }
    Ten output_bias() const override { return b_proj_; }

private:
    ModelConfig cfg_;
    int layer_;
    BlockLink* link_ = nullptr;
    const SharedScratch* shared_ = nullptr;
    bool recompute_ = false;               // act_ is SharedScratch::mlp_hidden (train.recompute)
    std::unique_ptr<M1GateProducer> m1_;   // present in blocks 0..Ly-2 when model.m1
    std::unique_ptr<M2CrossTokenMix> m2_;  // present when model.m2
    std::unique_ptr<M3LatentReciprocity> m3_;   // present when model.m3 (MLA only)
    std::vector<const LowRankPath*> low_rank_paths() const;   // M2's, then M3's
    bool stacks_hidden_grad() const;   // the hidden gradient as one stacked GEMM (backward)
    int stacked_width() const;         // its inner width: E + M2's r + M1's 64
    Ten w_fc_, b_fc_, w_proj_, b_proj_;
    Ten pre_, act_;   // pre-activation and GELU output, both [B*T, F] (act_ shared when recomputed)
};

}  // namespace gpt
