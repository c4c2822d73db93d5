#include "model/attention_mla.h"

#include <cmath>

#include <fmt/format.h>

namespace gpt {

MlaAttention::MlaAttention(const ModelConfig& cfg, int layer)
    : AttentionBase(cfg, layer), reciprocal_(cfg.attention == AttentionKind::ra_mla) {}

void MlaAttention::declare_inputs(ParamTable& p) {
    const int64_t E = cfg_.n_embd, D = cfg_.head_dim(), L = cfg_.mla.latent;
    const std::string pre = fmt::format("h.{}.attn.", layer_);
    w_q_ = p.add(pre + "w_q.weight", {E, E}, Init::normal, 0.02f, true);
    w_kd_ = p.add(pre + "w_kd.weight", {L, E}, Init::normal, 0.02f, true);
    w_vd_ = p.add(pre + "w_vd.weight", {L, E}, Init::normal, 0.02f, true);
    p_map_ = p.add(pre + "q_map", {maps(), D, L}, Init::xavier, 0.f, true);
    u_map_ = p.add(pre + "v_map", {maps(), L, D}, Init::xavier, 0.f, true);
    if (reciprocal_) ra_alpha_ = p.add(pre + "ra_alpha", {1}, Init::constant, cfg_.mla.ra_alpha, false);
}

void MlaAttention::plan_inputs(ActivationPlan& a, int B, int T) {
    const size_t N = size_t(B) * T, E = cfg_.n_embd, H = cfg_.n_head, L = cfg_.mla.latent;
    const std::string pre = fmt::format("h.{}.mla_", layer_);
    Q_ = a.add(Space::Act, N * E, "attention", pre + "q");
    k_lat_ = a.add(Space::Act, N * L, "attention", pre + "k_lat");
    v_lat_ = a.add(Space::Act, N * L, "attention", pre + "v_lat");
    q_lat_ = a.add(Space::Act, N * H * L, "attention", pre + "q_lat");
    if (reciprocal_) {
        qt_ = a.add(Space::Act, N * H * 2 * L, "attention", pre + "ra_qt");
        kt_ = a.add(Space::Act, N * H * 2 * L, "attention", pre + "ra_kt");
        vh_ = a.add(Space::Act, N * E, "attention", pre + "v_heads");
    }
    if (cfg_.m3) own_->k_lat = k_lat_;   // M3: this block's MLP reads k_lat (as the attention uses it)
}

bool MlaAttention::m3_input() const { return prev_ && prev_->m3_latent.present(); }

void MlaAttention::plan_output(ActivationPlan& a, int B, int T) {
    if (!reciprocal_)
        ctx_ = a.add(Space::Act, size_t(B) * T * cfg_.n_embd, "attention", fmt::format("h.{}.mla_ctx", layer_));
}

MlaAttention::Grads MlaAttention::grads(int B, int T, Ten scratch) const {
    const size_t N = size_t(B) * T, E = cfg_.n_embd, H = cfg_.n_head, L = cfg_.mla.latent;
    size_t off = 0;
    auto take = [&](size_t n) {
        const Ten t = scratch.sub(off, n);
        off += (n + 63) / 64 * 64;
        return t;
    };
    Grads g;
    g.dQ = take(N * E);
    g.dtmp = take(N * E);
    g.dq_lat = take(N * H * L);
    g.dk_lat = take(N * L);
    g.dv_lat = take(N * L);
    if (reciprocal_) {
        g.dqt = take(N * H * 2 * L);
        g.dkt = take(N * H * 2 * L);
        g.dvh = take(N * E);
    }
    return g;
}

size_t MlaAttention::inputs_scratch_elems(int B, int T) const {
    const Grads g = grads(B, T, Ten{Space::Act, 0, size_t(-1) / 2});   // offsets only
    const Ten last = reciprocal_ ? g.dvh : g.dv_lat;
    return last.off + last.n;
}

size_t MlaAttention::output_scratch_elems(int B, int T) const {
    return reciprocal_ ? 0 : size_t(B) * T * cfg_.n_embd;   // dctx
}

HeadMapDims MlaAttention::query_map(const StepContext& c) const {
    HeadMapDims m;
    m.N = c.B * c.T;
    m.H = m.Hin = cfg_.n_head;
    m.Hm = maps();
    m.Din = cfg_.head_dim();
    m.Dout = cfg_.mla.latent;
    m.in_stride = cfg_.n_embd;
    return m;
}

HeadMapDims MlaAttention::value_map(const StepContext& c) const {
    HeadMapDims m;
    m.N = c.B * c.T;
    m.H = cfg_.n_head;
    m.Hm = maps();
    m.Din = cfg_.mla.latent;
    m.Dout = cfg_.head_dim();
    m.Hin = reciprocal_ ? 1 : cfg_.n_head;   // v_lat is one shared head; o has a head per query head
    m.in_stride = m.Hin * m.Din;
    return m;
}

RaFoldDims MlaAttention::fold_dims(const StepContext& c) const {
    RaFoldDims f;
    f.N = c.B * c.T;
    f.H = cfg_.n_head;
    f.Hk = 1;
    f.D = cfg_.mla.latent;
    f.q_stride = cfg_.n_head * cfg_.mla.latent;
    f.k_stride = cfg_.mla.latent;
    f.n_gates = 1;
    f.g_std_fixed = 1.f;   // SPEC §2.4: the standard term is not gated
    return f;
}

void MlaAttention::inputs_fwd(const StepContext& c, Ten in) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, E = cfg_.n_embd, L = cfg_.mla.latent;
    ops.matmul_fwd(Q_, in, w_q_, {}, N, E, E);
    ops.matmul_fwd(k_lat_, in, w_kd_, {}, N, E, L);
    ops.matmul_fwd(v_lat_, in, w_vd_, {}, N, E, L);
    if (m3_input())   // M3: k_lat += alpha_3' (h C) of the previous block's MLP
        ops.add_scaled_fwd(k_lat_, k_lat_, prev_->m3_latent, prev_->m3_alpha_next, size_t(N) * L);
    ops.head_map_fwd(q_lat_, Q_, p_map_, query_map(c));
    if (reciprocal_) {
        ops.ra_fold_fwd(qt_, kt_, q_lat_, k_lat_, {}, ra_alpha_, fold_dims(c));
        ops.head_map_fwd(vh_, v_lat_, u_map_, value_map(c));
    }
}

AttentionOperands MlaAttention::attention_on(Ten q, Ten k, Ten v, const StepContext& c) const {
    AttnDims d = base_dims(c);
    const int H = cfg_.n_head, L = cfg_.mla.latent;
    d.Hq = H;
    d.scale = 1.0f / std::sqrt(float(L));
    if (reciprocal_) {   // folded: k̃ depends on the query head, so K/V have H heads
        d.Hkv = H;
        d.Dqk = 2 * L;
        d.Dv = cfg_.head_dim();
        d.q_stride = d.k_stride = H * 2 * L;
        d.v_stride = cfg_.n_embd;
        d.band = cfg_.mla.ra_band;
        d.band_split = L;
    } else {   // multi-query: one K/V head of width L
        d.Hkv = 1;
        d.Dqk = d.Dv = L;
        d.q_stride = H * L;
        d.k_stride = d.v_stride = L;
    }
    return {q, k, v, d};
}

AttentionOperands MlaAttention::operands(const StepContext& c) const {
    return reciprocal_ ? attention_on(qt_, kt_, vh_, c) : attention_on(q_lat_, k_lat_, v_lat_, c);
}

AttentionOperands MlaAttention::operand_grads(const StepContext& c, Ten scratch) const {
    const Grads g = grads(c.B, c.T, scratch);
    return reciprocal_ ? attention_on(g.dqt, g.dkt, g.dvh, c) : attention_on(g.dq_lat, g.dk_lat, g.dv_lat, c);
}

void MlaAttention::inputs_bwd(const StepContext& c, Ten in, Ten din, Ten scratch) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, E = cfg_.n_embd, L = cfg_.mla.latent;
    const size_t NE = size_t(N) * E;
    const Grads g = grads(c.B, c.T, scratch);
    if (reciprocal_) {
        ops.ra_fold_bwd(g.dq_lat, g.dk_lat, {}, ra_alpha_.as(Space::Grad), g.dqt, g.dkt, q_lat_, k_lat_, {},
                        ra_alpha_, fold_dims(c));
        ops.head_map_bwd(g.dv_lat, u_map_.as(Space::Grad), g.dvh, v_lat_, u_map_, value_map(c));
    }
    ops.head_map_bwd(g.dQ, p_map_.as(Space::Grad), g.dq_lat, Q_, p_map_, query_map(c));
    ops.matmul_bwd(din, w_q_.as(Space::Grad), {}, g.dQ, in, w_q_, N, E, E);
    if (cfg_.m3) ops.add_inplace(g.dk_lat, own_->d_k_lat, size_t(N) * L);   // from this block's MLP
    if (m3_input())
        ops.add_scaled_bwd(prev_->d_m3_latent, prev_->m3_alpha_next.as(Space::Grad), g.dk_lat, prev_->m3_latent,
                           prev_->m3_alpha_next, size_t(N) * L);
    ops.matmul_bwd(g.dtmp, w_kd_.as(Space::Grad), {}, g.dk_lat, in, w_kd_, N, E, L);
    ops.add_inplace(din, g.dtmp, NE);
    ops.matmul_bwd(g.dtmp, w_vd_.as(Space::Grad), {}, g.dv_lat, in, w_vd_, N, E, L);
    ops.add_inplace(din, g.dtmp, NE);
}

void MlaAttention::output_fwd(const StepContext& c, Ten y, Ten out) {
    if (reciprocal_) return AttentionBase::output_fwd(c, y, out);
    c.ops->head_map_fwd(ctx_, y, u_map_, value_map(c));
    AttentionBase::output_fwd(c, ctx_, out);
}

void MlaAttention::output_bwd(const StepContext& c, Ten y, Ten dout, Ten dy, Ten scratch) {
    if (reciprocal_) return AttentionBase::output_bwd(c, y, dout, dy, scratch);
    const Ten dctx = scratch.sub(0, size_t(c.B) * c.T * cfg_.n_embd);
    AttentionBase::output_bwd(c, ctx_, dout, dctx, scratch);
    c.ops->head_map_bwd(dy, u_map_.as(Space::Grad), dctx, y, u_map_, value_map(c));
}

std::string MlaAttention::describe_kind() const {
    const std::string maps_str = cfg_.mla.shared_maps ? "shared maps" : "per-head maps";
    if (reciprocal_)
        return fmt::format("RA+MLA (H={}, L={}, {}, alpha={} learnable, band W={})", cfg_.n_head, cfg_.mla.latent,
                           maps_str, cfg_.mla.ra_alpha, cfg_.mla.ra_band);
    return fmt::format("MLA (H={}, L={}, {}, multi-query latent K/V)", cfg_.n_head, cfg_.mla.latent, maps_str);
}

}  // namespace gpt
