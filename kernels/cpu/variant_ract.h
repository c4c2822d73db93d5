// CPU reference of RA-CT (SPEC §2.5): a per-token, per-head gate from one statistic of the
// post-softmax attention row, g = sigmoid(stat * scale[h] + bias[h]); the gate is then applied to
// the attention output by head_gate_fwd (variant_head_gate.h) with alpha = 1 ("output") or
// alpha = ract.alpha ("weights"). This is the materialised-probabilities path: probs come from the
// attention forward (attention_ref_fwd's probs, before dropout), and the statistic's gradient goes
// back into the attention backward as its dprobs argument. Gradients accumulate (+=).
#pragma once
#include "model/config.h"

namespace gpt::ref {

struct RactDims {
    int B = 0, T = 0, H = 0;
    RactStat stat = RactStat::topk;
    int topk = 8;               // k of the topk statistic (rows shorter than k sum all entries)
    bool head_average = false;  // statistic of the head-mean row, shared by the heads
};

// probs [B,H,T,T] (row i uses columns 0..i); stat, gate [B*T, H]; scale, bias [H].
template <class S>
void ract_gate_fwd(S* stat, S* gate, const S* probs, const S* scale, const S* bias, const RactDims& d);
// dgate [B*T,H] in; dprobs [B,H,T,T] += (pass nullptr to detach the statistic); dscale, dbias += .
template <class S>
void ract_gate_bwd(S* dprobs, S* dscale, S* dbias, const S* dgate, const S* probs, const S* stat,
                   const S* gate, const S* scale, const RactDims& d);

// The selected columns of topk / max (ops.h ract_gate_fwd's sel): sel [B*T, head_average ? 1 : H,
// slots] with slots = k of topk, 1 for max; the columns of the largest entries of the source row
// (the head's or the head-mean), largest first, -1 in slots past the row's length. Other statistics:
// nothing written.
template <class S>
void ract_selection(int* sel, const S* probs, const RactDims& d);

// One statistic of a causal row r[0..n) and (if grad != nullptr) its gradient d stat / d r.
template <class S>
S row_statistic(const S* r, int n, RactStat stat, int topk, S* grad);

}  // namespace gpt::ref
