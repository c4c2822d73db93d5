// CPU reference of RA-CT's entropy statistic in the augmented-value form (ops.h ract_entropy_fwd /
// _bwd): with the attention run on the values v' = [v, k], the row entropy is
//   H_i = -sum_j P_ij log P_ij = lse_i - mu_i,   mu_i = sum_j P_ij s_ij = scale q_i . (P k)_i,
// so it comes from the attention's own output, and its gradient -c_i P_ij (s_ij - mu_i) rides on
// the attention backward through dout' = [dout, -c scale q] (dP picks up -c s, rowsum(dout' o')
// picks up -c mu). Layouts: out2, dout2 [N,H,Dv+Dqk]; y, dy [N,H,Dv]; q rows at n*q_stride (head h
// at h*Dqk); lse [B,H,T]; stat, gate [N,H]; scale, bias [H]. Gradients dscale, dbias accumulate.
#pragma once

namespace gpt::ref {

struct EntropyDims {
    int B = 0, T = 0, H = 0, Dqk = 0, Dv = 0;
    int q_stride = 0;
    float attn_scale = 0.f;   // the logits' scale
    float alpha = 1.f;        // apply mode: 1 (output) or ract.alpha (weights)
};

template <class S>
void ract_entropy_fwd(S* y, S* stat, S* gate, const S* out2, const S* q, const S* lse, const S* scale,
                      const S* bias, const EntropyDims& d);
// dout2 overwritten; c = 0 when detach.
template <class S>
void ract_entropy_bwd(S* dout2, S* dscale, S* dbias, const S* dy, const S* out2, const S* q, const S* stat,
                      const S* gate, const S* scale, bool detach, const EntropyDims& d);

}  // namespace gpt::ref
