// The CPU fp32 reference backend: ground truth for every CUDA kernel, and the backend the default
// job trains with on a laptop. Matmuls go to OpenBLAS, everything else is OpenMP loops over the
// kernels in cpu_kernels.h. Every call is synchronous.
#pragma once
#include <memory>
#include <vector>

#include "model/ops.h"

namespace gpt {

class CpuOps final : public Ops {
public:
    explicit CpuOps(int threads = 0);   // 0: all cores (OpenMP's default)
    std::string name() const override { return "cpu-fp32"; }
    // Host bytes of the six spaces (what allocate() holds now), and the most held so far.
    size_t memory_in_use() const override;
    size_t memory_peak() const override { return peak_bytes_; }

    void allocate(const MemoryPlan& plan) override;
    void upload(Ten dst, const float* src) override;
    void upload_index(Ten dst, const int32_t* src) override;
    void download(Ten src, float* dst) override;
    void zero(Ten t) override;
    void copy(Ten dst, Ten src) override;
    void scale(Ten t, float s) override;

    void embedding_fwd(Ten out, Ten tokens, Ten wte, Ten wpe, int B, int T, int E) override;
    void embedding_bwd(Ten dwte, Ten dwpe, Ten dout, Ten tokens, int B, int T, int E) override;
    void layernorm_fwd(Ten out, Ten mean, Ten rstd, Ten in, Ten w, Ten b, int N, int C) override;
    void residual_layernorm_fwd(Ten out_sum, Ten out, Ten mean, Ten rstd, Ten a, Ten b, Ten w, Ten bias, int N,
                                int C, const ResidualDropout& drop = {}) override;
    void layernorm_bwd(Ten din, Ten dw, Ten db, Ten dout, Ten in, Ten w, Ten mean, Ten rstd, int N,
                       int C, Ten dsum = {}, Ten branch = {}, const ResidualDropout& drop = {}) override;
    void matmul_fwd(Ten out, Ten in, Ten w, Ten bias, int M, int K, int N,
                    Ten gelu_out = {}) override;
    void matmul_bwd(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K,
                    int N) override;
    void matmul_bwd_add(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K,
                        int N) override;
    void matmul_fwd_add(Ten out, Ten in, Ten w, Ten residual, int M, int K, int N) override;
    void gelu_fwd(Ten out, Ten in, size_t n) override;
    void gelu_bwd(Ten din, Ten in, Ten dout, size_t n) override;
    void add(Ten out, Ten a, Ten b, size_t n) override;
    void add_inplace(Ten acc, Ten x, size_t n) override;
    void dropout(Ten x, size_t n, float p, uint64_t seed) override;
    void attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, const AttnDims& d) override;
    void attention_bwd(Ten dq, Ten dk, Ten dv, Ten dout, Ten out, Ten lse, Ten q, Ten k, Ten v,
                       const AttnDims& d, Ten delta_shift = {}) override;
    void classifier(Ten losses, Ten logits, Ten targets, int N, int V, int Vp,
                    float dloss) override;

    double sum_squares(Ten t) override;
    void adamw(const std::vector<AdamWTensor>& ts, const AdamWHyper& h) override;
    void mul_inplace(Ten x, Ten mask, size_t n) override;

private:
    size_t peak_bytes_ = 0;

    // Resolve a view to memory after checking its space kind and bounds; `need` is the number of
    // elements the operation touches from t.off on. `what` names the call and argument in errors.
    float* f32(Ten t, size_t need, const char* what);
    float* f32_optional(Ten t, size_t need, const char* what);   // nullptr when absent
    int32_t* i32(Ten t, size_t need, const char* what);
    // Strided attention views: only the extent within the space is checked (t.n is not).
    float* f32_extent(Ten t, size_t extent, const char* what);

    std::vector<float> spaces_[kNumSpaces];   // the Index slot stays empty
    std::vector<int32_t> index_;

    // ---- variant operations (SPEC §2; ops.h documents them). Defined in variant_ops*.cpp by the
    // model-variants work on top of the gpt::ref reference math; keep this block at the end. ----
public:
    void ra_fold_fwd(Ten qt, Ten kt, Ten q, Ten k, Ten g_std, Ten g_rec, const RaFoldDims& d) override;
    void ra_attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, Ten g_std, Ten g_rec, const RaFoldDims& f,
                          const AttnDims& a) override;
    void ra_attention_bwd(Ten dq, Ten dk, Ten dv, Ten dg_std, Ten dg_rec, Ten dout, Ten out, Ten lse, Ten q, Ten k,
                          Ten v, Ten g_std, Ten g_rec, const RaFoldDims& f, const AttnDims& a) override;
    void ra_fold_bwd(Ten dq, Ten dk, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k, Ten g_std,
                     Ten g_rec, const RaFoldDims& d, Ten dbias = {}, Ten dv = {}) override;
    void ra_lowrank_fwd(Ten qt, Ten kt, Ten q, Ten k, Ten W, Ten g_std, Ten g_rec,
                        const RaLowRankDims& d) override;
    void ra_lowrank_bwd(Ten dq, Ten dk, Ten dW, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k,
                        Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) override;
    void ra_lowrank_weights_fwd(Ten w_eff, Ten b_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec,
                                const RaLowRankDims& d) override;
    void ra_lowrank_weights_bwd(Ten dw, Ten db, Ten dW, Ten dg_std, Ten dg_rec, Ten dw_eff, Ten db_eff, Ten w,
                                Ten b, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d) override;
    void head_map_fwd(Ten out, Ten in, Ten M, const HeadMapDims& d) override;
    void head_map_bwd(Ten din, Ten dM, Ten dout, Ten in, Ten M, const HeadMapDims& d) override;
    void ract_gate_fwd(Ten stat, Ten gate, Ten sel, Ten q, Ten k, Ten lse, Ten scale, Ten bias,
                       const AttnDims& a, const RactDims& d) override;
    void ract_gate_bwd(Ten dq, Ten dk, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse, Ten stat,
                       Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d) override;
    void ract_gate_coef(Ten alpha, Ten beta, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse, Ten stat,
                        Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d) override;
    void ract_select_bwd(Ten dq, Ten dk, Ten alpha, Ten sel, Ten q, Ten k, Ten lse, const AttnDims& a,
                         const RactDims& d) override;
    void ract_entropy_fwd(Ten y, Ten stat, Ten gate, Ten out2, Ten q, Ten lse, Ten scale, Ten bias, float alpha,
                          const AttnDims& a) override;
    void ract_entropy_bwd(Ten dout2, Ten dscale, Ten dbias, Ten dy, Ten out2, Ten q, Ten stat, Ten gate, Ten scale,
                          float alpha, bool detach, const AttnDims& a) override;
    void copy_heads(Ten dst, Ten src, const HeadCopyDims& d) override;
    void head_gate_fwd(Ten out, Ten ctx, Ten gate, Ten alpha, float alpha_fixed, int N, int H,
                       int Dv) override;
    void head_gate_bwd(Ten dctx, Ten dgate, Ten dalpha, Ten dout, Ten ctx, Ten gate, Ten alpha,
                       float alpha_fixed, int N, int H, int Dv) override;
    void sigmoid_fwd(Ten out, Ten in, size_t n) override;
    void sigmoid_bwd(Ten din, Ten out, Ten dout, size_t n) override;
    void topk_rows(Ten idx, Ten wts, Ten q, Ten k, Ten lse, const AttnDims& a, int topk) override;
    void sparse_mix_fwd(Ten agg, Ten z, Ten idx, Ten wts, int N, int r, int k) override;
    void sparse_mix_bwd(Ten dz, Ten dagg, Ten idx, Ten wts, int N, int r, int k) override;
    void add_scaled_fwd(Ten out, Ten a, Ten b, Ten alpha, size_t n) override;
    void add_scaled_bwd(Ten db, Ten dalpha, Ten dout, Ten b, Ten alpha, size_t n) override;
    void disc_channel_fwd(Ten qt_out, Ten kt_out, Ten qt, Ten kt, Ten k, Ten u, Ten g_disc,
                          const DiscChannelDims& d) override;
    void disc_channel_bwd(Ten dqt, Ten dkt, Ten dk, Ten du, Ten dg_disc, Ten dqt_out, Ten dkt_out, Ten k, Ten u,
                          Ten g_disc, const DiscChannelDims& d) override;
};

// The backend as the interface; threads = 0 uses all cores.
std::unique_ptr<Ops> make_cpu_ops(int threads = 0);

}  // namespace gpt
