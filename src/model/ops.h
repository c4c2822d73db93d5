// The operation interface: the model's layer sequence is written once against this class, and each
// backend (kernels/cpu: fp32 reference; kernels/cuda: bf16 tensor cores) implements it.
//
// Tensors are views into a handful of planned buffers, one per Space, allocated once up front.
// A backend resolves a view to its own element type:
//   Param  fp32 master weights (CUDA also keeps a bf16 copy: every Ops write to Param refreshes the
//          range it wrote, adamw included; params_changed() refreshes it all after host uploads).
//   Grad   fp32 parameter gradients, same offsets as Param. Always accumulated (+=).
//   Opt    fp32 optimizer state (AdamW m, v, vmax, pruning masks), addressed like Param.
//   Act    activations and their gradients: fp32 on the CPU, bf16 on CUDA.
//   Stat   fp32 side values: LayerNorm mean/rstd, attention log-sum-exp, per-token losses.
//   Index  int32: tokens and targets.
// All calls are asynchronous on the backend's stream except the ones that return a host value.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace gpt {

enum class Space : uint8_t { Param, Grad, Opt, Act, Stat, Index };
constexpr int kNumSpaces = 6;

struct Ten {
    Space space = Space::Act;
    size_t off = 0;   // in elements of the space
    size_t n = 0;     // element count; 0 means "absent" (e.g. no bias)
    bool present() const { return n != 0; }
    Ten sub(size_t offset, size_t count) const { return Ten{space, off + offset, count}; }
    Ten as(Space s) const { return Ten{s, off, n}; }   // same offsets in another space (Param->Grad)
};

struct MemoryPlan {
    size_t elems[kNumSpaces] = {0, 0, 0, 0, 0, 0};
    size_t& operator[](Space s) { return elems[static_cast<int>(s)]; }
    size_t operator[](Space s) const { return elems[static_cast<int>(s)]; }
};

// Causal attention over per-token rows. q row of token t, head h is at
//   q.off + (b*T + t)*q_stride + h*Dqk        (likewise k, v with their strides and Hkv heads)
// out is [B, T, Hq, Dv] contiguous. lse is Stat [B, Hq, T]: the row's log-sum-exp of the scaled
// logits, saved for backward. Hkv divides Hq (grouped / multi-query heads): query head h uses
// key/value head h / (Hq/Hkv).
// Dropout contract: probability P[b,h,i,j] (query head h, query row i, key column j <= i) is kept
// iff attention_dropout_keep(seed, b*Hq + h, i, j, T, dropout) (common/rng.h) and then scaled by
// 1/(1-dropout); backward regenerates the mask from the same draws. The CPU and our CUDA kernels (impl = ours)
// draw exactly this mask. cuDNN (impl = auto/cudnn on CUDA) draws its own Philox mask from `seed`
// instead: the same distribution, reproducible from the seed, a different sample (the GPU test
// checks cuDNN against the CPU with the extracted mask; kernels/cuda/attention_cudnn.cuh).
struct AttnDims {
    int B = 0, T = 0, Hq = 0, Hkv = 0, Dqk = 0, Dv = 0;
    int q_stride = 0, k_stride = 0, v_stride = 0;   // elements between consecutive tokens
    float scale = 0.f;                              // logits = scale * q.k
    float dropout = 0.f;                            // on the probabilities (counter RNG)
    AttentionImpl impl = AttentionImpl::auto_select; // model.attention_impl (CUDA: ours or cuDNN; fills padding)
    uint64_t seed = 0;                              // dropout stream
    int band = 0;        // if band > 0: q.k over dims [band_split, Dqk) counts only where i - j <= band
    int band_split = 0;  // (reciprocal attention's folded half, SPEC 2.2); band = 0 keeps plain attention
};

struct AdamWTensor {
    Ten param;          // Param space; grad, m, v share its offsets in Grad / Opt spaces
    Ten m, v, vmax;     // Opt space (vmax present only with AMSGrad)
    bool decay = false; // decoupled weight decay applies
};

struct AdamWHyper {
    float lr = 0, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0;
    int step = 1;              // 1-based, for bias correction
    float grad_scale = 1.f;    // multiplies the gradient first (global-norm clipping)
    bool amsgrad = false;
    float spam_theta = 0.f;    // >0: clip |g| > sqrt(theta * v) to sign(g) sqrt(theta * v) (SPAM)
    // Per element: g = grad*grad_scale; SPAM clip with v = the second moment BEFORE this step's
    // update (skipped where v == 0: first step, or first after a reset); m, v updated; with AMSGrad
    // vmax = max(vmax, v) replaces v below; p -= lr*wd*p where decay (old p);
    // p -= lr * (m/(1-beta1^step)) / (sqrt(v/(1-beta2^step)) + eps).
};

// ==== variant operations (SPEC §2): shapes of the extra Ops methods below ====================
// Reciprocal-attention fold (SPEC §2.2): q̃[n,h] = [√g_std q[n,h], √g_rec k[n,hk]] and
// k̃[n,h] = [√g_std k[n,hk], √g_rec q[n,h]], width 2D, hk = h (Hk == H) or 0 (Hk == 1, RA+MLA's
// shared k_lat). Row n (= b*T + t) of q starts at n*q_stride, head h at h*D (k likewise, Hk heads).
// Gates enter as sqrt(max(g, 1e-8)); below the floor a gate gets no gradient.
struct RaFoldDims {
    int N = 0, H = 0, Hk = 0, D = 0;
    int q_stride = 0, k_stride = 0;
    int n_gates = 0;            // H (per head: head h reads g[h]) or 1 (per layer: every head reads g[0])
    float g_std_fixed = 1.f;    // the gate value used when the g_std tensor is absent (a fixed gate)
    float g_rec_fixed = 1.f;
};
// Same-FLOP low-rank RA (SPEC §2.2): q̃[n,h] = [√g_std q[:D-R], √g_rec (k W)],
// k̃[n,h] = [√g_std k[:D-R], √g_rec (q W)], width D; W [D,R] row-major, one per layer, all heads.
struct RaLowRankDims {
    int N = 0, H = 0, D = 0, R = 0;
    int q_stride = 0, k_stride = 0;
    int n_gates = 0;
    float g_std_fixed = 1.f, g_rec_fixed = 1.f;
};
// Discoverability bias (SPEC §2.2) as one more channel of the folded operands, inserted at column
// `split` (before the banded reciprocal tail) and followed by `pad` zero channels: width W ->
// W+1+pad, see Ops::disc_channel_fwd. The pad keeps the widths and the band split multiples of 16
// (what the GPU's attention kernels take).
struct DiscChannelDims {
    int N = 0, H = 0, D = 0;
    int k_stride = 0;   // the real keys k (heads of D) the bias reads, rows at n*k_stride
    int W = 0;          // width of the folded operands per head before the insert
    int split = 0;      // the channel goes to column `split` (0 <= split <= W)
    float scale = 0.f;  // the attention's logit scale (the bias is added unscaled)
    int pad = 0;        // zero channels after the bias channel
    int out_width() const { return W + 1 + pad; }
};
// MLA's per-head maps (SPEC §2.3): out[n,h,:] = in[n, Hin == 1 ? 0 : h, :] . M[Hm == 1 ? 0 : h],
// M [Hm, Din, Dout] row-major. in rows at n*in_stride (head h at h*Din); out contiguous [N,H,Dout].
struct HeadMapDims {
    int N = 0, H = 0;
    int Hin = 0;   // H, or 1 (one input head shared by all heads, e.g. v_lat)
    int Hm = 0;    // H (per-head maps), or 1 (one map shared by the heads: mla.shared_maps)
    int Din = 0, Dout = 0;
    int in_stride = 0;
};
// RA-CT (SPEC §2.5) statistic of the post-softmax row: topk (sum of the min(topk, i+1) largest),
// max, entropy (-sum P log P, zero entries skipped), rms (sqrt(mean over the causal row of P^2)).
// head_average: the statistic of the head-mean row, shared by all heads of the row.
struct RactDims {
    int B = 0, T = 0, H = 0;
    RactStat stat = RactStat::topk;
    int topk = 8;
    bool head_average = false;
};
// Slots per row of ract_gate_fwd's selection: topk for topk, 1 for max, 0 (no selection) otherwise.
inline int ract_sel_slots(const RactDims& d) {
    return d.stat == RactStat::topk ? d.topk : d.stat == RactStat::max ? 1 : 0;
}
// Per-head slices of token rows (Ops::copy_heads): dst[n*dst_stride + h*dst_head_stride + c] =
// src[n*src_stride + h*src_head_stride + c] for c < width; the views may start mid-row.
struct HeadCopyDims {
    int N = 0, H = 0, width = 0;
    int dst_stride = 0, dst_head_stride = 0;
    int src_stride = 0, src_head_stride = 0;
};

// Residual dropout fused into the LayerNorm next to it (GPT::forward_body, GPT::backward): p = 0 is
// none. Keep decisions are dropout()'s, dropout_keep(seed, i, p) over the flat [N, C] index i.
// keep (optional; Index space, >= ceil(N C / 32) elements): the forward records the decisions there
// (bit i % 8 of byte i / 8), and the backward with the same p, seed and keep reads them instead of
// drawing again. A backend may ignore it and draw again (the CPU does): the decisions are the same.
struct ResidualDropout {
    float p = 0.f;
    uint64_t seed = 0;
    Ten keep;
    bool on() const { return p > 0.f; }
};

class Ops {
public:
    virtual ~Ops() = default;
    virtual std::string name() const = 0;            // "cpu-fp32", "cuda-bf16", ...

    // --- memory -------------------------------------------------------------------------------
    virtual void allocate(const MemoryPlan& plan) = 0;   // zero-filled
    virtual void upload(Ten dst, const float* src) = 0;          // Param/Grad/Opt/Act/Stat
    virtual void upload_index(Ten dst, const int32_t* src) = 0;  // Index
    virtual void download(Ten src, float* dst) = 0;              // synchronous
    virtual void zero(Ten t) = 0;
    virtual void copy(Ten dst, Ten src) = 0;                     // same space kind, n elements
    virtual void scale(Ten t, float s) = 0;                      // t *= s (fp32 spaces)
    virtual void params_changed() {}                             // refresh low-precision copies
    virtual void synchronize() {}
    // Device memory the backend holds right now and at most so far, in bytes (0: not tracked).
    virtual size_t memory_in_use() const { return 0; }
    virtual size_t memory_peak() const { return 0; }
    virtual void reset_memory_peak() {}                          // peak := in use (benchmarks)

    // --- the training-step pipeline (train/train_step.cpp, docs/kernels-cuda.md) ---------------
    // Hooks that let a training step run without a host synchronisation and be captured as a
    // graph. The defaults (model/ops_pipeline.cpp) are plain synchronous host code, what the CPU
    // backend needs; CUDA overrides them (pinned staging, a copy stream, scalars kept on the
    // device, CUDA graphs). Only scalar_read and scalars_fetch wait for the device.
    //
    // Batch staging in two slots: fill stage_host(slot, n) (pinned on CUDA; waits until the slot's
    // previous copy has finished), stage_commit(slot) copies it to the device (copy stream, after
    // the step that last read the slot; later work on the compute stream waits for the copy),
    // stage_take copies elements [off, off + dst.n) of the slot into an Index view in stream
    // order, stage_release(slot) marks the end of the step that reads the slot.
    virtual int32_t* stage_host(int slot, size_t n);
    virtual void stage_commit(int slot) { (void)slot; }
    virtual void stage_take(Ten dst, int slot, size_t off);
    virtual void stage_release(int slot) { (void)slot; }
    // Step scalars: doubles the backend keeps (on the device on CUDA), read back once per step.
    virtual void scalars_reserve(int n);                 // zeroed; never while capturing
    virtual void scalars_zero(int first, int n);
    virtual void scalar_add_sum(int slot, Ten t);        // += sum of fp32 t (Stat), in double
    virtual void scalar_sum_squares(int slot, Ten t);    // = sum_squares(t), the same value
    virtual double scalar_read(int slot);                // synchronous
    virtual void scalars_publish(int first, int n) { (void)first, (void)n; }   // queue their copy to the host
    virtual void step_end(int tag) { (void)tag; }        // mark the end of a step's work (tag 0/1)
    // Waits for step_end(tag), then reads what scalars_publish copied before it.
    virtual void scalars_fetch(int tag, int first, int n, double* out);
    // adamw with h.grad_scale from the global norm g = sqrt(scalar norm_sq_slot), as clipping:
    // clip / (g + 1e-6) where clip > 0 and g > clip, else 1; no update at all where g is not
    // finite. The default reads the norm on the host (synchronous).
    virtual void adamw_clipped(const std::vector<AdamWTensor>& ts, const AdamWHyper& h, int norm_sq_slot,
                               float clip);
    // Graph capture of a step: graph_begin starts recording the calls that follow instead of
    // running them (false: not supported, run eagerly); graph_end makes the executable graph (a
    // new one, or an update of the last one in place) and returns false with the reason when
    // capture failed, in which case nothing ran; graph_launch runs it; graph_abort ends a capture
    // that an exception interrupted.
    virtual bool graph_begin() { return false; }
    virtual bool graph_end(std::string* why);
    virtual void graph_launch() {}
    virtual void graph_abort() {}
    // Data-parallel ranks (train.gpus > 1, train/data_parallel.h): join_ranks makes this backend
    // rank `rank` of `world` (CUDA: an NCCL communicator from the launcher's id; the default, the
    // CPU's, refuses with the reason). Then, in stream order and capturable: allreduce_sum sums an
    // fp32 view (the gradients) over the ranks in place, scalars_allreduce sums the step scalars
    // [first, first + n), broadcast copies an fp32 view from rank `root` to all; allreduce_value
    // sums one host number (synchronous). Before join_ranks (one process) they change nothing.
    virtual void join_ranks(int rank, int world, const std::string& id);
    virtual void allreduce_sum(Ten t) { (void)t; }
    virtual void scalars_allreduce(int first, int n) { (void)first, (void)n; }
    virtual void broadcast(Ten t, int root) { (void)t, (void)root; }
    virtual double allreduce_value(double v) { return v; }

    // --- layers (dX = gradient w.r.t. X) -------------------------------------------------------
    // out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
    virtual void embedding_fwd(Ten out, Ten tokens, Ten wte, Ten wpe, int B, int T, int E) = 0;
    // dwte += scatter(dout); dwpe += sum over batch
    virtual void embedding_bwd(Ten dwte, Ten dwpe, Ten dout, Ten tokens, int B, int T, int E) = 0;

    // out = (in - mean) * rstd * w + b over rows of C; mean, rstd: Stat [N]
    virtual void layernorm_fwd(Ten out, Ten mean, Ten rstd, Ten in, Ten w, Ten b, int N, int C) = 0;
    // The pre-LN block's residual add and the next LayerNorm in one pass: out_sum = a + b (the
    // residual stream, kept for backward), then layernorm_fwd(out, mean, rstd, out_sum, w, bias).
    // With drop on, b (a branch's output) goes through dropout(b, N C, drop.p, drop.seed) first, and
    // its contents afterwards are unspecified (the default drops it in place; CUDA leaves it).
    // Bit-identical to those calls, which are the default; CUDA fuses them (one read of a, b).
    virtual void residual_layernorm_fwd(Ten out_sum, Ten out, Ten mean, Ten rstd, Ten a, Ten b, Ten w, Ten bias,
                                        int N, int C, const ResidualDropout& drop = {}) {
        if (drop.on()) dropout(b, size_t(N) * C, drop.p, drop.seed);
        add(out_sum, a, b, size_t(N) * C);
        layernorm_fwd(out, mean, rstd, out_sum, w, bias, N, C);
    }
    // din += ..., dw += ..., db += ...; if present, dsum[C] += the column sums of din after the add.
    // din is then the whole gradient of a residual stream point, so dsum is the bias gradient of the
    // output projection that wrote into that point (GPT::backward; no second pass over din).
    // With branch present: branch = din after the add, through dropout(branch, N C, drop.p,
    // drop.seed) (drop on): the gradient the dropped-out branch that wrote into this point sees; dsum
    // then sums branch's columns (that branch's output bias gradient) instead of din's. Bit-identical
    // to copy + dropout; CUDA writes branch from the same pass.
    virtual void layernorm_bwd(Ten din, Ten dw, Ten db, Ten dout, Ten in, Ten w, Ten mean,
                               Ten rstd, int N, int C, Ten dsum = {}, Ten branch = {},
                               const ResidualDropout& drop = {}) = 0;

    // out[M,N] = in[M,K] . w[N,K]^T (+ bias[N]); if gelu_out is present, also
    // gelu_out = GELU(out) (fused epilogue; out keeps the pre-activation for backward).
    virtual void matmul_fwd(Ten out, Ten in, Ten w, Ten bias, int M, int K, int N,
                            Ten gelu_out = {}) = 0;
    // din = dout . w (overwrite; skipped if absent); dw += dout^T . in; dbias += colsum(dout)
    virtual void matmul_bwd(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K,
                            int N) = 0;
    // matmul_bwd with din accumulated: din += dout . w (din present). A second path's input
    // gradient (M1's gate, M2's mix, MLA's down-projections) summed by the GEMM itself (CUDA: beta
    // = 1, one rounding to bf16) instead of written to scratch and added by a pass of its own.
    virtual void matmul_bwd_add(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K,
                                int N) = 0;
    // out[M,N] = residual[M,N] + in[M,K] . w[N,K]^T: a path added onto an activation by the GEMM
    // itself (CUDA: beta = 1 reading residual as C, one rounding to bf16), so the path's product
    // is never written out and re-read by an add of its own (M2's mix, M3's latent path). out may
    // alias residual.
    virtual void matmul_fwd_add(Ten out, Ten in, Ten w, Ten residual, int M, int K, int N) = 0;
    // matmul_bwd through the GELU that produced `in` (an MLP's c_proj): din = GELU'(pre) * (dout . w)
    // with pre [M,K] the pre-activation matmul_fwd kept beside gelu_out; din present, not aliasing
    // pre. The default, the two calls, is the reference; CUDA fuses it (cuBLASLt DGELU epilogue).
    virtual void matmul_bwd_gelu(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, Ten pre, int M,
                                 int K, int N) {
        matmul_bwd(din, dw, dbias, dout, in, w, M, K, N);
        gelu_bwd(din, pre, din, size_t(M) * K);
    }

    virtual void gelu_fwd(Ten out, Ten in, size_t n) = 0;              // GPT-2 tanh approximation
    virtual void gelu_bwd(Ten din, Ten in, Ten dout, size_t n) = 0;    // din = GELU'(in)*dout (din may alias dout)
    virtual void add(Ten out, Ten a, Ten b, size_t n) = 0;              // out = a + b
    virtual void add_inplace(Ten acc, Ten x, size_t n) = 0;             // acc += x

    // In place: x = keep ? x / (1-p) : 0, keep from dropout_keep(seed, i, p), i in [0, n).
    // The backward is the same call on the gradient with the same seed.
    virtual void dropout(Ten x, size_t n, float p, uint64_t seed) = 0;

    virtual void attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, const AttnDims& d) = 0;
    // dq, dk, dv have the layouts of q, k, v and are overwritten. delta_shift (Stat [B,Hq,T], lse's
    // layout) or absent: each row's D_i = sum_j P_ij dP_ij (= dout_i . out_i) becomes D_i + shift_i,
    // so the logits' gradient gains -shift_i P_ij: a caller adds the dense part of a row
    // statistic's gradient through the softmax this way (RA-CT's selection statistics).
    virtual void attention_bwd(Ten dq, Ten dk, Ten dv, Ten dout, Ten out, Ten lse, Ten q, Ten k,
                               Ten v, const AttnDims& d, Ten delta_shift = {}) = 0;

    // Fused classifier over rows of logits [N, Vp] (only the first V columns are real tokens):
    // losses[i] = -log softmax(logits[i,:V])[targets[i]]   (Stat [N])
    // if dloss != 0: logits[i,:] is overwritten with dloss * (softmax - onehot) (0 in padding).
    virtual void classifier(Ten losses, Ten logits, Ten targets, int N, int V, int Vp,
                            float dloss) = 0;

    // --- optimisation --------------------------------------------------------------------------
    virtual double sum_squares(Ten t) = 0;                   // synchronous, fp32 spaces
    virtual void adamw(const std::vector<AdamWTensor>& ts, const AdamWHyper& h) = 0;
    virtual void mul_inplace(Ten x, Ten mask, size_t n) = 0; // x *= mask (pruning), fp32 spaces

    // ==== variant operations (SPEC §2) ========================================================
    // Added for the attention/MLP variants; every method has a default that throws, so a backend
    // that does not implement one fails loudly when a model needs it. "overwritten" = the
    // output is written, "accumulated" = += (zero it first where needed). "absent" = a Ten with
    // n == 0. Act tensors are bf16 on CUDA; Stat, Param, Grad are fp32 everywhere.

    // RA fold forward: qt = [g_std q, k], kt = [k, g_rec q] with g = max(g, 1e-8) (the logits of
    // SPEC §2.2's √g on both sides). qt, kt: Act [N,H,2D] contiguous, overwritten. q, k: Act, strided.
    // g_std, g_rec: Param [n_gates], or absent = the fixed value in d. Then attention_fwd(qt, kt, v)
    // with Dqk = 2D, scale 1/sqrt(D), band = W, band_split = D is exactly RA.
    virtual void ra_fold_fwd(Ten qt, Ten kt, Ten q, Ten k, Ten g_std, Ten g_rec, const RaFoldDims& d);
    // RA fold backward: dq = g_std dqt[:D] + g_rec dkt[D:], dk = dkt[:D] + dqt[D:] (dk summed over
    // the heads when Hk == 1). dq, dk: Act in the strided layouts of q, k, OVERWRITTEN on the heads'
    // columns of each row only (other columns of the row untouched). dqt, dkt: Act [N,H,2D].
    // dg_std, dg_rec: Grad [n_gates], accumulated with sum(dqt[:D].q) and sum(dkt[D:].q) (k is not
    // read); absent = no gradient (fixed gate).
    // dbias (optional): Grad, ACCUMULATED with the column sums over the N rows of the dq and dk just
    // written ((H + Hk)·D entries), then, when dv (Act, H·D columns at row stride q_stride) is
    // present, of dv too ((2H + Hk)·D entries): with q, k, v packed as c_attn's rows this is c_attn's
    // whole bias gradient, taken while the pass has the rows in hand (no separate column sum).
    virtual void ra_fold_bwd(Ten dq, Ten dk, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt, Ten q, Ten k,
                             Ten g_std, Ten g_rec, const RaFoldDims& d, Ten dbias = {}, Ten dv = {});
    // RA with the fold inside the attention (model.ra.fold = kernel): exactly ra_fold_fwd into q̃, k̃
    // then attention_fwd(out, lse, q̃, k̃, v, a), but q̃, k̃ never exist in memory (the kernel builds
    // their tiles from q, k). f: the fold (Hk == H); a: the attention on the fold (Dqk = 2 f.D, Dv,
    // scale, band with band_split = f.D, dropout, impl; its q_stride/k_stride are f's strides).
    virtual void ra_attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, Ten g_std, Ten g_rec, const RaFoldDims& f,
                                  const AttnDims& a);
    // Its backward, attention_bwd then ra_fold_bwd in one: dq, dk overwritten on the heads' columns
    // (as ra_fold_bwd), dv overwritten, dg_std/dg_rec accumulated (absent = no gradient).
    virtual void ra_attention_bwd(Ten dq, Ten dk, Ten dv, Ten dg_std, Ten dg_rec, Ten dout, Ten out, Ten lse, Ten q,
                                  Ten k, Ten v, Ten g_std, Ten g_rec, const RaFoldDims& f, const AttnDims& a);
    // Low-rank RA fold. qt, kt: Act [N,H,D] overwritten; W: Param [D,R]. Attention on them with
    // Dqk = D, scale 1/sqrt(D) (band_split = D-R if banded) is same-FLOP RA.
    virtual void ra_lowrank_fwd(Ten qt, Ten kt, Ten q, Ten k, Ten W, Ten g_std, Ten g_rec,
                                const RaLowRankDims& d);
    // dq, dk: Act, strided, overwritten on the heads' columns (as ra_fold_bwd); dW: Grad [D,R]
    // accumulated; dg_std, dg_rec: Grad accumulated (absent = skip).
    virtual void ra_lowrank_bwd(Ten dq, Ten dk, Ten dW, Ten dg_std, Ten dg_rec, Ten dqt, Ten dkt,
                                Ten q, Ten k, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d);
    // The same low-rank fold in weight space (model.ra.lowrank_form = weights): q̃, k̃ are linear
    // in the block input x (q = x Wq^T + bq, k W = x (Wk^T W) + bk W), so one c_attn GEMM with
    // these effective weights writes [q̃ | k̃ | v] directly; ra_lowrank_fwd applied to the rows of
    // [w^T; b] gives the same numbers. w, b: Param, c_attn's [3E, K] and [3E] (E = H*D, K = d.N
    // input features; d.q_stride, d.k_stride unused). w_eff [3E, K], b_eff [3E]: Act, overwritten
    // (GEMM operands). W, gates: as ra_lowrank_fwd.
    virtual void ra_lowrank_weights_fwd(Ten w_eff, Ten b_eff, Ten w, Ten b, Ten W, Ten g_std, Ten g_rec,
                                        const RaLowRankDims& d);
    // dw_eff [3E, K], db_eff [3E]: Stat, the gradients of w_eff, b_eff (the GEMM's). dw, db: Grad of
    // c_attn, accumulated; dW, dg_std, dg_rec: Grad accumulated (absent = skip).
    virtual void ra_lowrank_weights_bwd(Ten dw, Ten db, Ten dW, Ten dg_std, Ten dg_rec, Ten dw_eff, Ten db_eff,
                                        Ten w, Ten b, Ten W, Ten g_std, Ten g_rec, const RaLowRankDims& d);
    // MLA per-head map (HeadMapDims). out: Act [N,H,Dout] overwritten; in: Act strided; M: Param.
    virtual void head_map_fwd(Ten out, Ten in, Ten M, const HeadMapDims& d);
    // din: Act in the layout of in, OVERWRITTEN with dout . M^T (summed over the heads when
    // Hin == 1; absent = skip); dM: Grad [Hm,Din,Dout] accumulated with in^T . dout.
    virtual void head_map_bwd(Ten din, Ten dM, Ten dout, Ten in, Ten M, const HeadMapDims& d);

    // RA-CT statistic and gate, flash-style (no [T, T] buffer): the statistic of the pre-dropout
    // probabilities P[b,h,i,j] = exp(logit[i,j] - lse[b,h,i]), j <= i, logit as in attention_fwd
    // (same q, k, AttnDims, band included; dropout ignored); lse is attention_fwd's Stat. stat Stat
    // [B*T,H] and gate Act [B*T,H] overwritten, gate = sigmoid(stat*scale[h] + bias[h]); scale, bias
    // Param [H]. sel Index [B*T, head_average ? 1 : H, ract_sel_slots(d)] overwritten with the
    // selected columns of topk/max, largest first, -1 in unused slots (absent for entropy/rms): the
    // backward reads the selection instead of recomputing it.
    virtual void ract_gate_fwd(Ten stat, Ten gate, Ten sel, Ten q, Ten k, Ten lse, Ten scale, Ten bias,
                               const AttnDims& a, const RactDims& d);
    // dgate Act [B*T,H] in. dscale, dbias Grad [H] accumulated. dq, dk (the layouts of q, k) ACCUMULATED
    // with the statistic's gradient through the logits (call after attention_bwd, which overwrites
    // them; dk summed over the query heads of a key head); both absent = detached statistic.
    virtual void ract_gate_bwd(Ten dq, Ten dk, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse,
                               Ten stat, Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d);
    // The same gradient in split form, for the selection statistics (topk, max), where it is cheap:
    // with c = dL/dstat, the logits get dS_ij = P_ij (alpha_i [j selected] - beta_i) (per-row
    // coefficients as in ract_gate_bwd's kernels). ract_gate_coef writes alpha, beta (Stat
    // [B,Hq,T], lse's layout, overwritten) and accumulates dscale, dbias as ract_gate_bwd does;
    // attention_bwd(..., delta_shift = beta) then carries the dense -beta P part; ract_select_bwd
    // ACCUMULATES the sparse part into dq, dk (layouts of q, k; dk summed over the query heads of a
    // key head): dq_i += scale sum_sel alpha_i P_ij k_j, dk_j += scale sum alpha_i P_ij q_i over
    // the rows that selected j. sel, q, k, lse as ract_gate_fwd's. Only topk and max.
    virtual void ract_gate_coef(Ten alpha, Ten beta, Ten dscale, Ten dbias, Ten dgate, Ten q, Ten k, Ten lse,
                                Ten stat, Ten sel, Ten gate, Ten scale, const AttnDims& a, const RactDims& d);
    virtual void ract_select_bwd(Ten dq, Ten dk, Ten alpha, Ten sel, Ten q, Ten k, Ten lse, const AttnDims& a,
                                 const RactDims& d);
    // RA-CT entropy in the augmented-value form (model/attention_base.cpp): the attention ran on
    // the values v' = [v, k] (Dv' = Dv + Dqk), so out2 [N,Hq,Dv'] holds o = P v and ok = P k. Since
    // -sum_j P log P = lse - scale q.(P k), the statistic needs no pass over the logits:
    // stat = lse - a.scale q.ok (Stat [N,Hq]), gate = sigmoid(stat scale[h] + bias[h]) (Act [N,Hq]),
    // y = ((1-alpha) + alpha gate) o (Act [N,Hq,Dv]); all overwritten. q, lse, a: the attention's
    // (a.Dv is the real Dv; Hq = Hkv, no band, no dropout).
    virtual void ract_entropy_fwd(Ten y, Ten stat, Ten gate, Ten out2, Ten q, Ten lse, Ten scale, Ten bias,
                                  float alpha, const AttnDims& a);
    // Backward of ract_entropy_fwd given dy = dL/dy: dout2 [N,Hq,Dv'] OVERWRITTEN with
    // [((1-alpha) + alpha gate) dy, -c a.scale q], c = dL/dstat (0 when detach). The attention
    // backward on (q, k, v', out2, dout2) then gives dq, dk with the statistic's gradient
    // -c P (s - mu) included (its dP picks up -c s, its rowsum(dO' o') the -c mu), and dv' = [dv, -]
    // (the second half is not a gradient: drop it). dscale, dbias: Grad [Hq] accumulated.
    virtual void ract_entropy_bwd(Ten dout2, Ten dscale, Ten dbias, Ten dy, Ten out2, Ten q, Ten stat, Ten gate,
                                  Ten scale, float alpha, bool detach, const AttnDims& a);
    // Act: per-head slices between two row layouts (HeadCopyDims); dst and src must not overlap.
    virtual void copy_heads(Ten dst, Ten src, const HeadCopyDims& d);
    // Per-head output gate (RA-CT apply, M1 consumer): out[n,h,:] = ((1-a) + a gate[n,h]) ctx[n,h,:]
    // with a = alpha[0] (Param [1]) if present, else alpha_fixed. out, ctx: Act [N,H,Dv], distinct;
    // gate: Act [N,H].
    virtual void head_gate_fwd(Ten out, Ten ctx, Ten gate, Ten alpha, float alpha_fixed, int N, int H,
                               int Dv);
    // dctx: Act [N,H,Dv] OVERWRITTEN with ((1-a) + a gate) dout (dctx must not alias dout);
    // dgate: Act [N,H] OVERWRITTEN with a sum_c dout ctx (absent = skip); dalpha: Grad [1]
    // accumulated with sum (gate-1) dout.ctx (absent = skip).
    virtual void head_gate_bwd(Ten dctx, Ten dgate, Ten dalpha, Ten dout, Ten ctx, Ten gate, Ten alpha,
                               float alpha_fixed, int N, int H, int Dv);
    // M1's gate nonlinearity, Act: out = 1/(1+exp(-in)) (overwritten; may alias in).
    virtual void sigmoid_fwd(Ten out, Ten in, size_t n);
    // din = out (1-out) dout, overwritten; din may alias dout.
    virtual void sigmoid_bwd(Ten din, Ten out, Ten dout, size_t n);
    // M2: the head mean of the pre-dropout probabilities (as ract_gate_fwd: q, k, lse, AttnDims)
    // row by row; keep the min(k, i+1) largest entries (ties in any order), renormalised to sum 1.
    // idx: Index [B*T,k] overwritten with the global row b*T + j of each kept entry, largest first,
    // -1 for unused slots; wts: Stat [B*T,k] overwritten (0 in unused slots). No gradient.
    virtual void topk_rows(Ten idx, Ten wts, Ten q, Ten k, Ten lse, const AttnDims& a, int topk);
    // agg[n,:] = sum_t wts[n,t] z[idx[n,t],:] (slots with idx < 0 skipped). agg, z: Act [N,r];
    // agg overwritten.
    virtual void sparse_mix_fwd(Ten agg, Ten z, Ten idx, Ten wts, int N, int r, int k);
    // dz[idx[n,t],:] += wts[n,t] dagg[n,:] over all n, t, with dz OVERWRITTEN first (a scatter:
    // on a GPU make it deterministic, e.g. by gathering over an inverse index).
    virtual void sparse_mix_bwd(Ten dz, Ten dagg, Ten idx, Ten wts, int N, int r, int k);
    // out = a + alpha[0] b, Act, n elements (out may alias a; a absent: out = alpha[0] b); alpha:
    // Param [1] (M2's alpha_2).
    virtual void add_scaled_fwd(Ten out, Ten a, Ten b, Ten alpha, size_t n);
    // db = alpha[0] dout (Act, OVERWRITTEN; absent = skip); dalpha: Grad [1] accumulated with
    // sum dout b. (The gradient of a is dout itself.)
    virtual void add_scaled_bwd(Ten db, Ten dalpha, Ten dout, Ten b, Ten alpha, size_t n);
    // Discoverability channel: qt_out[n,h] = [qt[n,h,:split], 1, 0 x pad, qt[n,h,split:]] and
    // kt_out[n,h] = [kt[n,h,:split], g_disc[h] (k[n,h].u[h]) / scale, 0 x pad, kt[n,h,split:]]; qt,
    // kt: Act [N,H,W]; qt_out, kt_out: Act [N,H,W+1+pad] overwritten; k: Act strided; u: Param
    // [H,D]; g_disc: Param [H]. Attention on the outputs (Dqk = W+1+pad, band_split = split+1+pad)
    // adds g_disc[h] (k_j.u_h) unscaled to every logit of key column j.
    virtual void disc_channel_fwd(Ten qt_out, Ten kt_out, Ten qt, Ten kt, Ten k, Ten u, Ten g_disc,
                                  const DiscChannelDims& d);
    // dqt, dkt: Act [N,H,W] OVERWRITTEN with dqt_out, dkt_out minus the channel and its pad; dk (k's strided
    // layout), du, dg_disc: ACCUMULATED with the bias's gradient. Every output may be absent (skipped),
    // so a caller whose dk is overwritten later (ra_fold_bwd) can add dk in a second call.
    virtual void disc_channel_bwd(Ten dqt, Ten dkt, Ten dk, Ten du, Ten dg_disc, Ten dqt_out, Ten dkt_out,
                                  Ten k, Ten u, Ten g_disc, const DiscChannelDims& d);
    // ==== end of variant operations ===========================================================

protected:
    // State of the default (host) step-pipeline hooks.
    std::vector<double> host_scalars_;
    std::vector<int32_t> host_stage_[2];
};

}  // namespace gpt
