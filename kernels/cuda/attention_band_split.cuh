// The banded split of reciprocal attention's fold (AttnDims::band > 0): the pairs far from the
// diagonal are plain attention, so cuDNN's fused kernel takes them and our kernel only the band.
//
// With s = band + 1 rounded up to a multiple of 128, the pairs with i - j >= s see only the plain
// dims [0, band_split) (the reciprocal tail is zero outside the band) and are exactly causal
// attention of the query rows [s, T) over the key rows [0, T - s): cuDNN on those windows (T - s
// rows each, a multiple of 128, as cuDNN <= 9.15 needs), writing out/lse of rows [s, T) and the
// plain dims of dq (rows [s, T)), dk and dv (rows [0, T - s)). Our kernels then run with
// offband = s: they visit only the pairs with i - j < s (the band and the plain pairs up to s),
// merge their part of each row into out/lse by the two log-sum-exps, and add their gradients.
// The backward's P = exp(S - lse) with the merged lse and D = rowsum(dO O) with the merged O give
// each part its exact share of the gradient (cuDNN's graph forms D from the O it is given).
//
// With dropout each part draws its own mask (cuDNN's Philox for its pairs, ours for the band): the
// same distribution; forward and backward of each part agree because both sides split alike
// (the forward takes the split only when both cuDNN plans build).
#pragma once
#include <string>

#include "cuda/attention_cudnn.cuh"
#include "model/ops.h"

namespace gpt::cuda {

struct BandSplit {
    int s = 0;          // 0: no split (the whole call is ours); else the window shift
    AttnDims off;       // cuDNN's call: T - s rows, Dqk = band_split, no band
    CudnnView view;     // its windows inside the full tensors
};

// The split for these dims, or s = 0 (with the reason in *why) when the call has no band, asks for
// our kernels (impl = ours), T - s < 128, or cuDNN does not cover the off-band shape.
BandSplit band_split_of(const AttnDims& d, std::string* why = nullptr);

}  // namespace gpt::cuda
