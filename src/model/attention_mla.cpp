#include "model/attention_mla.h"

#include <cmath>

#include <fmt/format.h>

namespace gpt {

double mla_form_flops_per_token(const ModelConfig& cfg, bool expanded, int T) {
    const double H = cfg.n_head, D = cfg.head_dim(), L = cfg.mla.latent, Hm = cfg.mla.shared_maps ? 1 : H;
    const bool ra = cfg.attention == AttentionKind::ra_mla;
    const double w = expanded ? D : L;   // query/key width of a head before the RA fold
    const double dqk = ra ? 2 * w : w, dv = ra ? D : w;
    // Map MACs per token: latent Q_h P_h (a shared P still maps every head) and U on o or v_lat;
    // expanded k_lat P^T and v_lat U once per map (RA+MLA needs v per query head).
    const double map_macs = expanded ? Hm * L * D + (ra ? H : Hm) * L * D : 2 * H * D * L;
    return 6.0 * map_macs + 3.0 * H * (dqk + dv) * double(T);   // as attention_flops_per_token
}

bool mla_expanded(const ModelConfig& cfg) {
    switch (cfg.mla.form) {
        case MlaForm::latent: return false;
        case MlaForm::expanded: return true;
        case MlaForm::auto_select: break;
    }
    return mla_form_flops_per_token(cfg, true, cfg.block_size) < mla_form_flops_per_token(cfg, false, cfg.block_size);
}

MlaAttention::MlaAttention(const ModelConfig& cfg, int layer)
    : AttentionBase(cfg, layer), reciprocal_(cfg.attention == AttentionKind::ra_mla), expanded_(mla_expanded(cfg)) {}

void MlaAttention::declare_inputs(ParamTable& p) {
    const int64_t E = cfg_.n_embd, D = cfg_.head_dim(), L = cfg_.mla.latent;
    const std::string pre = fmt::format("h.{}.attn.", layer_);
    w_q_ = p.add(pre + "w_q.weight", {E, E}, Init::normal, 0.02f, true);
    w_kd_ = p.add(pre + "w_kd.weight", {L, E}, Init::normal, 0.02f, true);
    w_vd_ = p.add(pre + "w_vd.weight", {L, E}, Init::normal, 0.02f, true);
    // P [maps, D, L] read as one [maps*D, L] matrix is the [out, in] weight of k_lat -> k_h.
    p_map_ = p.add(pre + "q_map", {maps(), D, L}, Init::xavier, 0.f, true);
    u_map_ = p.add(pre + "v_map", {maps(), L, D}, Init::xavier, 0.f, true);
    if (reciprocal_) ra_alpha_ = p.add(pre + "ra_alpha", {1}, Init::constant, cfg_.mla.ra_alpha, false);
}

void MlaAttention::plan_inputs(ActivationPlan& a, int B, int T) {
    const size_t N = size_t(B) * T, E = cfg_.n_embd, H = cfg_.n_head, L = cfg_.mla.latent, D = cfg_.head_dim();
    const size_t W = qk_width();
    const std::string pre = fmt::format("h.{}.mla_", layer_);
    Q_ = a.add(Space::Act, N * E, "attention", pre + "q");
    k_lat_ = a.add(Space::Act, N * L, "attention", pre + "k_lat");
    v_lat_ = a.add(Space::Act, N * L, "attention", pre + "v_lat");
    if (expanded_)
        kh_ = a.add(Space::Act, N * maps() * D, "attention", pre + "k_heads");
    else
        q_lat_ = a.add(Space::Act, N * H * L, "attention", pre + "q_lat");
    if (value_heads() > 0) vh_ = a.add(Space::Act, N * value_heads() * D, "attention", pre + "v_heads");
    if (reciprocal_) {
        qt_ = a.add(Space::Act, N * H * 2 * W, "attention", pre + "ra_qt");
        kt_ = a.add(Space::Act, N * H * 2 * W, "attention", pre + "ra_kt");
    }
    if (cfg_.m3) own_->k_lat = k_lat_;   // M3: this block's MLP reads k_lat (as the attention uses it)
}

bool MlaAttention::m3_input() const { return prev_ && prev_->m3_latent.present(); }

void MlaAttention::plan_output(ActivationPlan& a, int B, int T) {
    if (latent_output_map())
        ctx_ = a.add(Space::Act, size_t(B) * T * cfg_.n_embd, "attention", fmt::format("h.{}.mla_ctx", layer_));
}

MlaAttention::Grads MlaAttention::grads(int B, int T, Ten scratch) const {
    const size_t N = size_t(B) * T, E = cfg_.n_embd, H = cfg_.n_head, L = cfg_.mla.latent, D = cfg_.head_dim();
    Grads g;
    auto take = [&](size_t n) {
        const Ten t = scratch.sub(g.end, n);
        g.end += (n + 63) / 64 * 64;
        return t;
    };
    g.dQ = take(N * E);
    g.dk_lat = take(N * L);
    g.dv_lat = take(N * L);
    if (expanded_)
        g.dkh = take(N * maps() * D);
    else
        g.dq_lat = take(N * H * L);
    if (value_heads() > 0) g.dvh = take(N * value_heads() * D);
    if (reciprocal_) {
        g.dqt = take(N * H * 2 * qk_width());
        g.dkt = take(N * H * 2 * qk_width());
    }
    return g;
}

size_t MlaAttention::inputs_scratch_elems(int B, int T) const {
    return grads(B, T, Ten{Space::Act, 0, size_t(-1) / 2}).end;   // offsets only
}

size_t MlaAttention::output_scratch_elems(int B, int T) const {
    return latent_output_map() ? size_t(B) * T * cfg_.n_embd : 0;   // dctx
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
    m.H = value_heads();
    m.Hin = 1;   // v_lat: one latent head shared by all
    m.Hm = maps() == 1 ? 1 : m.H;
    m.Din = cfg_.mla.latent;
    m.Dout = cfg_.head_dim();
    m.in_stride = cfg_.mla.latent;
    return m;
}

HeadMapDims MlaAttention::output_map(const StepContext& c) const {
    HeadMapDims m;
    m.N = c.B * c.T;
    m.H = m.Hin = cfg_.n_head;
    m.Hm = maps();
    m.Din = cfg_.mla.latent;
    m.Dout = cfg_.head_dim();
    m.in_stride = cfg_.n_head * cfg_.mla.latent;
    return m;
}

RaFoldDims MlaAttention::fold_dims(const StepContext& c) const {
    RaFoldDims f;
    f.N = c.B * c.T;
    f.H = cfg_.n_head;
    f.Hk = kv_heads();   // latent: the shared k_lat; expanded: k_h (one per map)
    f.D = qk_width();
    f.q_stride = cfg_.n_head * f.D;
    f.k_stride = f.Hk * f.D;
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
    if (expanded_)   // k_h = k_lat P_h^T for all maps at once: P is the [maps*D, L] weight
        ops.matmul_fwd(kh_, k_lat_, p_map_, {}, N, L, maps() * cfg_.head_dim());
    else
        ops.head_map_fwd(q_lat_, Q_, p_map_, query_map(c));
    if (value_heads() > 0) ops.head_map_fwd(vh_, v_lat_, u_map_, value_map(c));
    if (reciprocal_)
        ops.ra_fold_fwd(qt_, kt_, expanded_ ? Q_ : q_lat_, expanded_ ? kh_ : k_lat_, {}, ra_alpha_, fold_dims(c));
}

AttentionOperands MlaAttention::attention_on(Ten q, Ten k, Ten v, const StepContext& c) const {
    AttnDims d = base_dims(c);
    const int H = cfg_.n_head, W = qk_width();
    d.Hq = H;
    d.scale = 1.0f / std::sqrt(float(cfg_.mla.latent));   // both forms: the latent logits' scale
    if (reciprocal_) {   // folded: k̃ depends on the query head, so K/V have H heads
        d.Hkv = H;
        d.Dqk = 2 * W;
        d.Dv = cfg_.head_dim();
        d.q_stride = d.k_stride = H * 2 * W;
        d.v_stride = cfg_.n_embd;
        d.band = cfg_.mla.ra_band;
        d.band_split = W;
    } else {   // latent: multi-query, one K/V head of width L; expanded: kv_heads() heads of width D
        d.Hkv = kv_heads();
        d.Dqk = d.Dv = W;
        d.q_stride = H * W;
        d.k_stride = d.v_stride = d.Hkv * W;
    }
    return {q, k, v, d};
}

AttentionOperands MlaAttention::operands(const StepContext& c) const {
    if (reciprocal_) return attention_on(qt_, kt_, vh_, c);
    return expanded_ ? attention_on(Q_, kh_, vh_, c) : attention_on(q_lat_, k_lat_, v_lat_, c);
}

AttentionOperands MlaAttention::operand_grads(const StepContext& c, Ten scratch) const {
    const Grads g = grads(c.B, c.T, scratch);
    if (reciprocal_) return attention_on(g.dqt, g.dkt, g.dvh, c);
    return expanded_ ? attention_on(g.dQ, g.dkh, g.dvh, c) : attention_on(g.dq_lat, g.dk_lat, g.dv_lat, c);
}

void MlaAttention::inputs_bwd(const StepContext& c, Ten in, Ten din, Ten scratch) {
    Ops& ops = *c.ops;
    const int N = c.B * c.T, E = cfg_.n_embd, L = cfg_.mla.latent;
    const Grads g = grads(c.B, c.T, scratch);
    // The attention's query/key before the fold and where their gradients go.
    const Ten q = expanded_ ? Q_ : q_lat_, k = expanded_ ? kh_ : k_lat_;
    const Ten dq = expanded_ ? g.dQ : g.dq_lat, dk = expanded_ ? g.dkh : g.dk_lat;
    if (reciprocal_)
        ops.ra_fold_bwd(dq, dk, {}, ra_alpha_.as(Space::Grad), g.dqt, g.dkt, q, k, {}, ra_alpha_, fold_dims(c));
    if (value_heads() > 0) ops.head_map_bwd(g.dv_lat, u_map_.as(Space::Grad), g.dvh, v_lat_, u_map_, value_map(c));
    if (expanded_)
        ops.matmul_bwd(g.dk_lat, p_map_.as(Space::Grad), {}, g.dkh, k_lat_, p_map_, N, L, maps() * cfg_.head_dim());
    else
        ops.head_map_bwd(g.dQ, p_map_.as(Space::Grad), g.dq_lat, Q_, p_map_, query_map(c));
    ops.matmul_bwd(din, w_q_.as(Space::Grad), {}, g.dQ, in, w_q_, N, E, E);
    if (cfg_.m3) ops.add_inplace(g.dk_lat, own_->d_k_lat, size_t(N) * L);   // from this block's MLP
    if (m3_input())
        ops.add_scaled_bwd(prev_->d_m3_latent, prev_->m3_alpha_next.as(Space::Grad), g.dk_lat, prev_->m3_latent,
                           prev_->m3_alpha_next, size_t(N) * L);
    ops.matmul_bwd_add(din, w_kd_.as(Space::Grad), {}, g.dk_lat, in, w_kd_, N, E, L);
    ops.matmul_bwd_add(din, w_vd_.as(Space::Grad), {}, g.dv_lat, in, w_vd_, N, E, L);
}

void MlaAttention::output_fwd(const StepContext& c, Ten y, Ten out) {
    if (!latent_output_map()) return AttentionBase::output_fwd(c, y, out);
    c.ops->head_map_fwd(ctx_, y, u_map_, output_map(c));
    AttentionBase::output_fwd(c, ctx_, out);
}

void MlaAttention::output_bwd(const StepContext& c, Ten y, Ten dout, Ten dy, Ten scratch) {
    if (!latent_output_map()) return AttentionBase::output_bwd(c, y, dout, dy, scratch);
    const Ten dctx = scratch.sub(0, size_t(c.B) * c.T * cfg_.n_embd);
    AttentionBase::output_bwd(c, ctx_, dout, dctx, scratch);
    c.ops->head_map_bwd(dy, u_map_.as(Space::Grad), dctx, y, u_map_, output_map(c));
}

std::string MlaAttention::describe_kind() const {
    const std::string maps_str = cfg_.mla.shared_maps ? "shared maps" : "per-head maps";
    const std::string form = expanded_ ? "expanded form: per-head K/V of width D" : "latent form";
    if (reciprocal_)
        return fmt::format("RA+MLA (H={}, L={}, {}, alpha={} learnable, band W={}, {})", cfg_.n_head,
                           cfg_.mla.latent, maps_str, cfg_.mla.ra_alpha, cfg_.mla.ra_band, form);
    return fmt::format("MLA (H={}, L={}, {}, {})", cfg_.n_head, cfg_.mla.latent, maps_str,
                       expanded_ ? form : "latent form: multi-query latent K/V");
}

}  // namespace gpt
