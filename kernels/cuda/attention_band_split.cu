// The banded split's shapes (attention_band_split.cuh); CudaOps runs the two parts.
#include "cuda/attention_band_split.cuh"

namespace gpt::cuda {

BandSplit band_split_of(const AttnDims& d, std::string* why) {
    auto no = [&](const std::string& reason) {
        if (why) *why = reason;
        return BandSplit{};
    };
    if (d.band <= 0) return no("no band");
    if (d.impl == AttentionImpl::ours) return no("model.attention_impl = ours");
    const int s = (d.band + 1 + 127) / 128 * 128;
    if (d.T - s < 128) return no("T - " + std::to_string(s) + " < 128 rows for cuDNN's window");
    BandSplit sp;
    sp.s = s;
    sp.off = d;
    sp.off.T = d.T - s;
    sp.off.Dqk = d.band_split;
    sp.off.band = 0;
    sp.off.band_split = 0;
    sp.view.T_buf = d.T;
    sp.view.head_stride = d.Dqk;
    if (!cudnn_attention_wanted(sp.off)) {   // impl is auto or cudnn*: only the shape can refuse
        std::string reason;
        cudnn_attention_supports(sp.off, &reason);
        return no("cuDNN does not cover the off-band part: " + reason);
    }
    return sp;
}

}  // namespace gpt::cuda
