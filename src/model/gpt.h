// GPT-2 (SPEC §1): token + position embedding, Ly pre-LN blocks (attention and MLP units), final
// LayerNorm, tied LM head. The layer sequence is written once here against Ops; the CPU and CUDA
// backends run the same code.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/memory_plan.h"
#include "model/ops.h"
#include "model/param_table.h"
#include "model/units.h"

namespace gpt {

class GPT {
public:
    // Activations are planned for micro-batches up to maxB x maxT. `recompute` (train.recompute)
    // picks activations that backward recomputes instead of keeping: same gradients, less memory.
    GPT(const ModelConfig& cfg, int maxB, int maxT, Recompute recompute = Recompute::none);
    ~GPT();

    const ModelConfig& config() const { return cfg_; }
    Recompute recompute() const { return recompute_; }
    const ParamTable& params() const { return params_; }
    const ActivationPlan& activations() const { return acts_; }
    int max_batch() const { return maxB_; }
    int max_seq() const { return maxT_; }
    // Params, grads and activations; the optimizer adds its state to Space::Opt.
    MemoryPlan memory_plan() const;
    std::string describe() const;   // one line: shape, variants, parameter count

    // Upload host tokens/targets (B*T each; targets may be null for sampling).
    void set_batch(Ops& ops, const int32_t* inputs, const int32_t* targets, int B, int T);
    // Forward. With dloss != 0 the LM head's backward runs too (chunk by chunk, so the full
    // logits matrix never exists), leaving dL/d(ln_f out) for backward(). Returns the mean loss.
    double forward(const StepContext& c, float dloss);
    // The training step's device-resident path (train/train_step.cpp): forward without reading
    // the loss back, and the views that set_batch fills and the per-token losses land in.
    void forward_on_device(const StepContext& c, float dloss) {
        forward_body(c);
        run_head(c, dloss);
    }
    Ten batch_tokens(int B, int T) const { return tokens_.sub(0, size_t(B) * T); }
    Ten batch_targets(int B, int T) const { return targets_.sub(0, size_t(B) * T); }
    Ten token_losses(int B, int T) const { return losses_.sub(0, size_t(B) * T); }
    // Backward from the head's gradient into every parameter gradient (accumulated).
    void backward(const StepContext& c);
    // Logits of the last position of sequence 0 (for sampling), V entries on the host.
    std::vector<float> last_logits(const StepContext& c);

    // FLOPs of one forward+backward per token (6N + attention), for MFU.
    double flops_per_token(int T) const;

private:
    struct Layer {
        Ten ln1_w, ln1_b, ln2_w, ln2_b;
        Ten ln1_out, ln1_mean, ln1_rstd, resid_mid, ln2_out, ln2_mean, ln2_rstd, resid_out;
        Ten attn_keep, mlp_keep;   // the branches' residual dropout decisions (ResidualDropout::keep)
        std::unique_ptr<AttentionUnit> attn;
        std::unique_ptr<MlpUnit> mlp;
    };
    Ten layer_input(int l) const;
    ResidualDropout residual_dropout(const StepContext& c, int l, int site) const;
    void forward_body(const StepContext& c);   // embeddings through ln_f
    void run_head(const StepContext& c, float dloss);

    ModelConfig cfg_;
    int maxB_, maxT_;
    Recompute recompute_;
    ParamTable params_;
    ActivationPlan acts_;
    std::vector<Layer> layers_;
    std::vector<BlockLink> links_;   // links_[l]: what block l hands on (M1, M2), see units.h
    SharedScratch shared_;
    Ten wte_, wpe_, lnf_w_, lnf_b_;
    Ten tokens_, targets_, encoded_, lnf_out_, lnf_mean_, lnf_rstd_, logits_, losses_;
    Ten branch_, d_resid_, d_branch_, d_ln_, d_lnf_, scratch_;
    Ten ln_shared_;   // train.recompute = layernorm/both: every block's ln1/ln2 output, one at a time
    int head_chunk_ = 0;   // rows of logits computed at once
};

}  // namespace gpt
