// CPU reference math of MLA's per-head maps (SPEC §2.3, §2.4): q_lat_h = Q_h P_h before the
// multi-query attention on the shared latent, and v_h = v_lat U_h (or ctx_h = o_h U_h after it).
// The attention itself is the generic op (Hkv = 1 for MLA; for RA+MLA ra_fold_fwd with Hk = 1 and
// then Hkv = H, see docs/variants.md). Gradients accumulate (+=), see variant_attention.h.
#pragma once

namespace gpt::ref {

// out[n,h,:] = in[n, hin(h), :] . M[hm(h)]    with M[hm] a [Din, Dout] row-major matrix,
// hin(h) = h if Hin == H else 0 (one shared input head, e.g. v_lat), hm(h) = h if Hm == H else 0
// (per-head maps, or one map shared by the heads). in rows at n*in_stride; out contiguous [N,H,Dout].
struct HeadMapDims {
    int N = 0, H = 0;
    int Hin = 0;  // H or 1
    int Hm = 0;   // H or 1
    int Din = 0, Dout = 0;
    int in_stride = 0;
};
template <class S>
void head_map_fwd(S* out, const S* in, const S* M, const HeadMapDims& d);
// din += dout . M^T, dM += in^T . dout (summed over the heads that share them); nullptr skips.
template <class S>
void head_map_bwd(S* din, S* dM, const S* dout, const S* in, const S* M, const HeadMapDims& d);

}  // namespace gpt::ref
