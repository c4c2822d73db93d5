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
    // Finite-difference tests only: keep the M2 sparse rows of the previous forward instead of
    // selecting them again. M2 stops the gradient through its rows (SPEC §2.6), so the analytic
    // gradient is the derivative with the rows held fixed; training never sets this.
    bool reuse_m2_rows = false;
    // A distinct dropout stream for each (layer, site) of the step.
    uint64_t site_seed(int layer, int site) const {
        return mix64(seed ^ (uint64_t(layer) * 64 + uint64_t(site) + 1));
    }
};

// Tensors handed from one unit to another inside one forward/backward pass (SPEC §2.6). Nothing
// is kept between batches. The producer plans them in its plan(); the consumer reads them while it
// runs. A d_* tensor is written by the consumer's backward and read by the producer's backward,
// which runs later: blocks run backward from the last to the first, and in a block the MLP runs
// backward before the attention.
struct BlockLink {
    Ten m1_gate, d_m1_gate;   // Act [N,H]: M1's gate, produced by MLP l, consumed by attention l+1
    Ten m2_idx, m2_wts;       // Index / Stat [N,k]: M2's sparse rows, attention l -> MLP l
    // M3 (MLA only): attention l's k_lat [N,L] (Act, as used by its attention) goes to MLP l,
    // whose backward writes d_k_lat; MLP l's m3_latent = h C [N,L] goes to attention l+1, which
    // adds m3_alpha_next (a Param [1] of MLP l) times it to its k_lat and writes d_m3_latent.
    Ten k_lat, d_k_lat;
    Ten m3_latent, d_m3_latent, m3_alpha_next;
};

// Buffers that every layer uses in turn (never two layers at once), planned once by GPT.
struct SharedScratch {
    // train.recompute = gelu/both: Act [B*T,F], the MLP hidden GELU(c_fc x) of whichever layer ran
    // last. Each MLP writes it in forward and recomputes it from its kept pre-activation at the
    // start of its backward; it is read only inside that MLP's own forward/backward (M1/M2/M3
    // included), so one buffer serves every layer. Absent: each MLP keeps its own hidden.
    Ten mlp_hidden;
};

// What attention and MLP units share about their output projection's bias (absent: none), whose
// gradient is the column sum of backward's dout. A caller that sums those columns anyway (the
// LayerNorm backward that finishes dout, GPT::backward) takes that gradient over: after
// take_output_bias_grad(), backward leaves it.
class OutputBiasGrad {
public:
    virtual ~OutputBiasGrad() = default;
    virtual Ten output_bias() const { return {}; }
    void take_output_bias_grad() { taken_ = true; }

protected:
    // The output projection's bias gradient for backward to accumulate: absent once taken over.
    Ten output_bias_grad(Ten bias) const { return taken_ ? Ten{} : bias.as(Space::Grad); }

private:
    bool taken_ = false;
};

class AttentionUnit : public OutputBiasGrad {
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
    // FLOPs of the attention op itself (q.k and p.v, forward + backward, causal) per token at
    // sequence length T; the projections are counted from the parameters (6N).
    virtual double attention_flops_per_token(int T) const = 0;
    // Called once after construction, before plan(): the link from the previous block (nullptr
    // in block 0), this block's link, and the shared buffers (planned later, read at run time).
    virtual void connect(BlockLink* from_prev, BlockLink* own, const SharedScratch* shared) {
        (void)from_prev, (void)own, (void)shared;
    }
};

class MlpUnit : public OutputBiasGrad {
public:
    virtual ~MlpUnit() = default;
    virtual void declare(ParamTable& params) = 0;
    virtual void plan(ActivationPlan& acts, int B, int T) = 0;
    virtual size_t grad_scratch_elems(int B, int T) const = 0;
    virtual void forward(const StepContext& c, Ten in, Ten out) = 0;
    virtual void backward(const StepContext& c, Ten in, Ten dout, Ten din, Ten scratch) = 0;
    virtual std::string describe() const = 0;
    // Called once after construction, before plan(): this block's link (see BlockLink) and the
    // shared buffers (SharedScratch::mlp_hidden is planned before plan() is called).
    virtual void connect(BlockLink* own, const SharedScratch* shared) { (void)own, (void)shared; }

};

// Factories: pick the unit for a layer from the model configuration (Error for unknown kinds).
std::unique_ptr<AttentionUnit> make_attention_unit(const ModelConfig& cfg, int layer);
std::unique_ptr<MlpUnit> make_mlp_unit(const ModelConfig& cfg, int layer);

}  // namespace gpt
