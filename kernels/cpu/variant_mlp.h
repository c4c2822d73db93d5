// CPU reference math of the MLP mechanisms of SPEC §2.6 (M1, M2, M3). Weights use the PyTorch
// Linear layout [out, in] (the layout of Ops::matmul_fwd's w). "h_fc" is the MLP hidden after
// GELU, [N, F] with N = B*T rows. Gradients accumulate (+=); nullptr skips.
#pragma once

namespace gpt::ref {

constexpr int kM1Hidden = 64;  // W_1: F -> 64

// ---- M1: block l's h_fc gates block l+1's attention heads -------------------------------------
// pre = h_fc W1^T [N,Hid] (saved for backward), gate = sigmoid(GELU(pre) W2^T + b2) [N,H].
// W1 [Hid,F], W2 [H,Hid], b2 [H]. The consumer applies it with head_gate_fwd(alpha = alpha_1).
template <class S>
void m1_gate_fwd(S* gate, S* pre, const S* h_fc, const S* W1, const S* W2, const S* b2, int N, int F,
                 int Hid, int H);
template <class S>
void m1_gate_bwd(S* dh_fc, S* dW1, S* dW2, S* db2, const S* dgate, const S* gate, const S* pre,
                 const S* h_fc, const S* W1, const S* W2, int N, int F, int Hid, int H);

// ---- M2: cross-token MLP ----------------------------------------------------------------------
// A^ = head mean of probs [B,H,T,T], top-k entries of each causal row (fewer when i+1 < k),
// renormalised to sum 1: idx [N,k] holds global rows n' = b*T + j (-1 = unused), wts [N,k].
// No gradient flows through A^.
template <class S>
void m2_sparse_rows(int* idx, S* wts, const S* probs, int B, int H, int T, int k);
// z = h_fc W_down^T [N,r]; agg_i = sum_t wts[i,t] z[idx[i,t]] [N,r];
// out = h_fc + alpha (agg W_up^T) [N,F]. W_down [r,F], W_up [F,r]; z, agg saved for backward.
template <class S>
void m2_fwd(S* out, S* z, S* agg, const S* h_fc, const S* W_down, const S* W_up, S alpha,
            const int* idx, const S* wts, int N, int F, int r, int k);
template <class S>
void m2_bwd(S* dh_fc, S* dW_down, S* dW_up, S* dalpha, const S* dout, const S* h_fc, const S* agg,
            const S* W_down, const S* W_up, S alpha, const int* idx, const S* wts, int N, int F, int r,
            int k);

// ---- M3: latent reciprocity through one tied C [F,L] per block (MLA only) ---------------------
// latent_to_hidden: out[N,F] += alpha (in[N,L] C^T)   (this block's h_fc += alpha_3 k_lat C)
// hidden_to_latent: out[N,L] += alpha (in[N,F] C)     (next block's k_lat += alpha_3' h_fc C^T)
enum class M3Direction { latent_to_hidden, hidden_to_latent };
template <class S>
void m3_add_fwd(S* out, const S* in, const S* C, S alpha, int N, int F, int L, M3Direction dir);
// The gradient of out passes through unchanged (the caller keeps it); this adds din, dC, dalpha.
template <class S>
void m3_add_bwd(S* din, S* dC, S* dalpha, const S* dout, const S* in, const S* C, S alpha, int N,
                int F, int L, M3Direction dir);

// GPT-2's tanh-approximate GELU and its derivative (shared by the mechanisms above).
template <class S>
S gelu(S x);
template <class S>
S gelu_grad(S x);

}  // namespace gpt::ref
