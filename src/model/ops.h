// The operation interface: the model's layer sequence is written once against this class, and each
// backend (kernels/cpu: fp32 reference; kernels/cuda: bf16 tensor cores) implements it.
//
// Tensors are views into a handful of planned buffers, one per Space, allocated once up front.
// A backend resolves a view to its own element type:
//   Param  fp32 master weights (CUDA also keeps a bf16 copy, refreshed by params_changed()).
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
// Dropout contract (every backend must draw the same mask): probability P[b,h,i,j] (query head h,
// query row i, key column j <= i) is kept iff dropout_keep(seed, ((b*Hq + h)*T + i)*T + j, dropout)
// and then scaled by 1/(1-dropout). Backward regenerates the mask from the same counter.
struct AttnDims {
    int B = 0, T = 0, Hq = 0, Hkv = 0, Dqk = 0, Dv = 0;
    int q_stride = 0, k_stride = 0, v_stride = 0;   // elements between consecutive tokens
    float scale = 0.f;                              // logits = scale * q.k
    float dropout = 0.f;                            // on the probabilities (counter RNG)
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

    // --- layers (dX = gradient w.r.t. X) -------------------------------------------------------
    // out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]
    virtual void embedding_fwd(Ten out, Ten tokens, Ten wte, Ten wpe, int B, int T, int E) = 0;
    // dwte += scatter(dout); dwpe += sum over batch
    virtual void embedding_bwd(Ten dwte, Ten dwpe, Ten dout, Ten tokens, int B, int T, int E) = 0;

    // out = (in - mean) * rstd * w + b over rows of C; mean, rstd: Stat [N]
    virtual void layernorm_fwd(Ten out, Ten mean, Ten rstd, Ten in, Ten w, Ten b, int N, int C) = 0;
    // din += ..., dw += ..., db += ...
    virtual void layernorm_bwd(Ten din, Ten dw, Ten db, Ten dout, Ten in, Ten w, Ten mean,
                               Ten rstd, int N, int C) = 0;

    // out[M,N] = in[M,K] . w[N,K]^T (+ bias[N]); if gelu_out is present, also
    // gelu_out = GELU(out) (fused epilogue; out keeps the pre-activation for backward).
    virtual void matmul_fwd(Ten out, Ten in, Ten w, Ten bias, int M, int K, int N,
                            Ten gelu_out = {}) = 0;
    // din = dout . w (overwrite; skipped if absent); dw += dout^T . in; dbias += colsum(dout)
    virtual void matmul_bwd(Ten din, Ten dw, Ten dbias, Ten dout, Ten in, Ten w, int M, int K,
                            int N) = 0;

    virtual void gelu_fwd(Ten out, Ten in, size_t n) = 0;              // GPT-2 tanh approximation
    virtual void gelu_bwd(Ten din, Ten in, Ten dout, size_t n) = 0;    // din = GELU'(in)*dout (din may alias dout)
    virtual void add(Ten out, Ten a, Ten b, size_t n) = 0;              // out = a + b
    virtual void add_inplace(Ten acc, Ten x, size_t n) = 0;             // acc += x

    // In place: x = keep ? x / (1-p) : 0, keep from dropout_keep(seed, i, p), i in [0, n).
    // The backward is the same call on the gradient with the same seed.
    virtual void dropout(Ten x, size_t n, float p, uint64_t seed) = 0;

    virtual void attention_fwd(Ten out, Ten lse, Ten q, Ten k, Ten v, const AttnDims& d) = 0;
    // dq, dk, dv have the layouts of q, k, v and are overwritten.
    virtual void attention_bwd(Ten dq, Ten dk, Ten dv, Ten dout, Ten out, Ten lse, Ten q, Ten k,
                               Ten v, const AttnDims& d) = 0;

    // Fused classifier over rows of logits [N, Vp] (only the first V columns are real tokens):
    // losses[i] = -log softmax(logits[i,:V])[targets[i]]   (Stat [N])
    // if dloss != 0: logits[i,:] is overwritten with dloss * (softmax - onehot) (0 in padding).
    virtual void classifier(Ten losses, Ten logits, Ten targets, int N, int V, int Vp,
                            float dloss) = 0;

    // --- optimisation --------------------------------------------------------------------------
    virtual double sum_squares(Ten t) = 0;                   // synchronous, fp32 spaces
    virtual void adamw(const std::vector<AdamWTensor>& ts, const AdamWHyper& h) = 0;
    virtual void mul_inplace(Ten x, Ten mask, size_t n) = 0; // x *= mask (pruning), fp32 spaces
};

}  // namespace gpt
