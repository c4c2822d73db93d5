// M3, latent reciprocity (SPEC §2.6, MLA only), with one tied C [F,L] per block:
//   in block l:        h' = h + alpha_3 (k_lat_l C^T)        (k_lat_l from this block's attention)
//   into block l+1:    k_lat_{l+1} += alpha_3' (h_l C)        (h_l before the in-block additions)
// The MLP unit owns C, alpha_3 and (blocks 0..Ly-2) alpha_3'; the attention of block l+1 adds
// alpha_3' (h_l C), handed over in the block link, to its k_lat (MlaAttention). Both additions
// onto [N,F] rows are GEMMs that read the row as their beta term (Ops::matmul_fwd_add): h' = h +
// (alpha_3 k_lat) C^T, and the hand-over's dh += d(h C) C^T.
#pragma once
#include "model/units.h"

namespace gpt {

class M3LatentReciprocity {
public:
    M3LatentReciprocity(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {}
    void declare(ParamTable& p);
    void plan(ActivationPlan& a, BlockLink& link, int B, int T);
    size_t grad_scratch_elems(int B, int T) const;
    // h_in: the hidden so far (after M2); h: the GELU output handed to block l+1. Returns h'.
    Ten forward(const StepContext& c, Ten h_in, Ten h);
    Ten output() const { return h_out_; }
    // In-block part: dh_out in (it is also d h_in: the identity path, left in place); writes the
    // link's d_k_lat and the gradients of C and alpha_3.
    void backward(const StepContext& c, Ten dh_out, Ten scratch);
    // Hand-over part (blocks 0..Ly-2): dh += the gradient of h through h C (block l+1's k_lat).
    // Call it once dh is the gradient of h itself (after M2's backward).
    void backward_handover(const StepContext& c, Ten h, Ten dh);

private:
    bool producer() const { return layer_ + 1 < cfg_.n_layer; }
    ModelConfig cfg_;
    int layer_;
    BlockLink* link_ = nullptr;
    Ten c_, alpha_, alpha_next_;
    Ten k_lat_scaled_, h_out_;   // alpha_3 k_lat [N,L] and h' [N,F]
};

}  // namespace gpt
