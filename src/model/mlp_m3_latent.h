// M3, latent reciprocity (SPEC §2.6, MLA only), with one tied C [F,L] per block:
//   in block l:        h' = h + alpha_3 (k_lat_l C^T)        (k_lat_l from this block's attention)
//   into block l+1:    k_lat_{l+1} += alpha_3' (h_l C)        (h_l before the in-block additions)
// The MLP unit owns C, alpha_3 and (blocks 0..Ly-2) alpha_3'; the attention of block l+1 adds
// alpha_3' (h_l C), handed over in the block link, to its k_lat (MlaAttention). The in-block
// addition is the rank-L path x = alpha_3 k_lat, U = C, which the MLP applies through c_proj
// (mlp_low_rank_path.h); the hand-over's dh += d(h C) C^T is added by the GEMM itself.
#pragma once
#include "model/mlp_low_rank_path.h"
#include "model/units.h"

namespace gpt {

class M3LatentReciprocity {
public:
    M3LatentReciprocity(const ModelConfig& cfg, int layer) : cfg_(cfg), layer_(layer) {}
    void declare(ParamTable& p);
    void plan(ActivationPlan& a, BlockLink& link, int B, int T);
    // From h (the GELU output), the path's x = alpha_3 k_lat (path().x) and the hand-over h C.
    void forward(const StepContext& c, Ten h);
    const LowRankPath& path() const { return path_; }
    // In-block part: dx, the gradient of x (low_rank_path_bwd's), gives the link's d_k_lat and
    // alpha_3's gradient.
    void backward(const StepContext& c, Ten dx);
    // Hand-over part (blocks 0..Ly-2): dh += the gradient of h through h C (block l+1's k_lat).
    // Call it once dh is the gradient of h itself (after M2's backward).
    void backward_handover(const StepContext& c, Ten h, Ten dh);

private:
    bool producer() const { return layer_ + 1 < cfg_.n_layer; }
    ModelConfig cfg_;
    int layer_;
    BlockLink* link_ = nullptr;
    Ten c_, alpha_, alpha_next_;
    LowRankPath path_;   // x = alpha_3 k_lat [N,L], u = C
};

}  // namespace gpt
