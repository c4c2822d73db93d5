#include "model/gpt.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "common/error.h"

namespace gpt {

namespace {
constexpr size_t kHeadChunkElems = size_t(1) << 29;   // logits held at once: 512M elements (docs/performance.md, GEMMs)
constexpr int kSiteAttnOut = 1, kSiteMlpOut = 2;        // dropout sites (0 = inside attention)
// A LayerNorm's output, saved statistics and parameters.
struct NormSite {
    Ten out, mean, rstd, w, b;
};
}  // namespace

GPT::GPT(const ModelConfig& cfg, int maxB, int maxT, Recompute recompute)
    : cfg_(cfg), maxB_(maxB), maxT_(maxT), recompute_(recompute) {
    GPT_CHECK(cfg.n_embd % cfg.n_head == 0, "model.n_embd must be divisible by model.n_head");
    GPT_CHECK(maxT <= cfg.block_size, "train.seq_len must be <= model.block_size");
    const int64_t E = cfg.n_embd, Vp = cfg.padded_vocab;

    // Parameters, in the order of Hugging Face's GPT-2 state dict.
    wte_ = params_.add("wte.weight", {Vp, E}, Init::normal, 0.02f, true, cfg.vocab_size);
    wpe_ = params_.add("wpe.weight", {cfg.block_size, E}, Init::normal, 0.02f, false);
    layers_.resize(cfg.n_layer);
    links_.resize(cfg.n_layer);   // never resized again: units keep pointers into it
    for (int l = 0; l < cfg.n_layer; ++l) {
        Layer& L = layers_[l];
        const std::string pre = fmt::format("h.{}.", l);
        L.ln1_w = params_.add(pre + "ln_1.weight", {E}, Init::ones, 0.f, false);
        L.ln1_b = params_.add(pre + "ln_1.bias", {E}, Init::zeros, 0.f, false);
        L.attn = make_attention_unit(cfg, l);
        L.attn->connect(l > 0 ? &links_[l - 1] : nullptr, &links_[l], &shared_);
        L.attn->declare(params_);
        L.ln2_w = params_.add(pre + "ln_2.weight", {E}, Init::ones, 0.f, false);
        L.ln2_b = params_.add(pre + "ln_2.bias", {E}, Init::zeros, 0.f, false);
        L.mlp = make_mlp_unit(cfg, l);
        L.mlp->connect(&links_[l], &shared_);
        L.mlp->declare(params_);
    }
    // The gradient of a block's output projection is the gradient of the residual stream where it
    // adds in (through the residual dropout's mask, when on), which the LayerNorm backward that
    // finishes that gradient writes and sums by columns in the same pass: the projections' bias
    // gradients come from there (backward()), and the units skip their own pass over the same rows.
    for (Layer& L : layers_) {
        L.attn->take_output_bias_grad();
        L.mlp->take_output_bias_grad();
    }
    lnf_w_ = params_.add("ln_f.weight", {E}, Init::ones, 0.f, false);
    lnf_b_ = params_.add("ln_f.bias", {E}, Init::zeros, 0.f, false);

    // Activations for maxB x maxT.
    const size_t BT = size_t(maxB) * maxT, BTE = BT * E;
    tokens_ = acts_.add(Space::Index, BT, "inputs", "tokens");
    targets_ = acts_.add(Space::Index, BT, "inputs", "targets");
    encoded_ = acts_.add(Space::Act, BTE, "residual", "encoded");
    // Recomputed activations live in one buffer each, shared by all layers (train.recompute).
    if (recompute_gelu(recompute_))
        shared_.mlp_hidden = acts_.add(Space::Act, BT * size_t(cfg.hidden()), "recompute", "shared_mlp_hidden");
    if (recompute_layernorm(recompute_)) ln_shared_ = acts_.add(Space::Act, BTE, "recompute", "shared_ln_out");
    size_t scratch = 0;
    for (int l = 0; l < cfg.n_layer; ++l) {
        Layer& L = layers_[l];
        const std::string pre = fmt::format("h.{}.", l);
        L.ln1_out = ln_shared_.present() ? ln_shared_ : acts_.add(Space::Act, BTE, "layernorm", pre + "ln1");
        L.ln1_mean = acts_.add(Space::Stat, BT, "layernorm", pre + "ln1_mean");
        L.ln1_rstd = acts_.add(Space::Stat, BT, "layernorm", pre + "ln1_rstd");
        L.attn->plan(acts_, maxB, maxT);
        L.resid_mid = acts_.add(Space::Act, BTE, "residual", pre + "resid_mid");
        L.ln2_out = ln_shared_.present() ? ln_shared_ : acts_.add(Space::Act, BTE, "layernorm", pre + "ln2");
        L.ln2_mean = acts_.add(Space::Stat, BT, "layernorm", pre + "ln2_mean");
        L.ln2_rstd = acts_.add(Space::Stat, BT, "layernorm", pre + "ln2_rstd");
        L.mlp->plan(acts_, maxB, maxT);
        L.resid_out = acts_.add(Space::Act, BTE, "residual", pre + "resid_out");
        if (cfg.dropout > 0.f) {   // one bit per element, kept from the forward for the backward
            L.attn_keep = acts_.add(Space::Index, (BTE + 31) / 32, "residual", pre + "attn_dropout_keep");
            L.mlp_keep = acts_.add(Space::Index, (BTE + 31) / 32, "residual", pre + "mlp_dropout_keep");
        }
        scratch = std::max({scratch, L.attn->grad_scratch_elems(maxB, maxT),
                            L.mlp->grad_scratch_elems(maxB, maxT)});
    }
    lnf_out_ = acts_.add(Space::Act, BTE, "layernorm", "ln_f");
    lnf_mean_ = acts_.add(Space::Stat, BT, "layernorm", "ln_f_mean");
    lnf_rstd_ = acts_.add(Space::Stat, BT, "layernorm", "ln_f_rstd");
    head_chunk_ = int(std::clamp<size_t>(kHeadChunkElems / size_t(Vp), 1, BT));
    logits_ = acts_.add(Space::Act, size_t(head_chunk_) * Vp, "head", "logits_chunk");
    losses_ = acts_.add(Space::Stat, BT, "head", "losses");
    branch_ = acts_.add(Space::Act, BTE, "residual", "branch_out");
    d_resid_ = acts_.add(Space::Act, BTE, "activation grads", "d_residual");
    // The residual branches' gradient through their dropout masks (backward()): only with dropout.
    if (cfg.dropout > 0.f) d_branch_ = acts_.add(Space::Act, BTE, "activation grads", "d_branch");
    d_ln_ = acts_.add(Space::Act, BTE, "activation grads", "d_ln");
    d_lnf_ = acts_.add(Space::Act, BTE, "activation grads", "d_ln_f");
    scratch_ = acts_.add(Space::Act, scratch, "activation grads", "unit_scratch");
}

GPT::~GPT() = default;

MemoryPlan GPT::memory_plan() const { return acts_.memory_plan(params_.total()); }

std::string GPT::describe() const {
    size_t n = 0;
    for (const auto& s : params_.specs()) n += s.numel();
    std::string s = fmt::format("GPT-2 L={} E={} H={} F={} ctx={} | {} | {} | {} parameters", cfg_.n_layer,
                                cfg_.n_embd, cfg_.n_head, cfg_.hidden(), cfg_.block_size,
                                layers_[0].attn->describe(), layers_[0].mlp->describe(), n);
    if (recompute_ != Recompute::none) s += fmt::format(" | recompute: {}", recompute_name(recompute_));
    return s;
}

double GPT::flops_per_token(int T) const {
    size_t n = 0;
    for (const auto& s : params_.specs()) n += s.numel();
    n -= params_.get("wpe.weight").numel();   // a lookup, not a matmul
    // 6N for the matmuls (fwd + bwd), plus each layer's attention op (q.k and p.v over the causal
    // half, fwd + bwd): 6 E T for the baseline, more for RA's folded width or MLA's latent.
    double attention = 0;
    for (const Layer& L : layers_) attention += L.attn->attention_flops_per_token(T);
    return 6.0 * double(n) + attention;
}

void GPT::set_batch(Ops& ops, const int32_t* inputs, const int32_t* targets, int B, int T) {
    GPT_CHECK(B <= maxB_ && T <= maxT_, fmt::format("batch {}x{} exceeds the planned {}x{}", B, T,
                                                    maxB_, maxT_));
    ops.upload_index(tokens_.sub(0, size_t(B) * T), inputs);
    if (targets) ops.upload_index(targets_.sub(0, size_t(B) * T), targets);
}

Ten GPT::layer_input(int l) const { return l == 0 ? encoded_ : layers_[l - 1].resid_out; }

// The residual dropout of layer l's branch `site` (off outside training or at p = 0), run inside the
// residual add + LayerNorm that reads the branch and the LayerNorm backward after it, with the keep
// bits its forward records and its backward reads; the embeddings' (l = n_layer) keeps none.
ResidualDropout GPT::residual_dropout(const StepContext& c, int l, int site) const {
    if (!c.training || cfg_.dropout <= 0.f) return {};
    ResidualDropout d{cfg_.dropout, c.site_seed(l, site), {}};
    if (l < cfg_.n_layer) {
        const Ten keep = site == kSiteAttnOut ? layers_[l].attn_keep : layers_[l].mlp_keep;
        d.keep = keep.sub(0, (size_t(c.B) * c.T * cfg_.n_embd + 31) / 32);
    }
    return d;
}

void GPT::forward_body(const StepContext& c) {
    Ops& ops = *c.ops;
    const int BT = c.B * c.T, E = cfg_.n_embd;
    const size_t n = size_t(BT) * E;
    const bool drop = c.training && cfg_.dropout > 0.f;

    // The LayerNorm that reads block l's input: its ln_1, or ln_f for l == n_layer. Each residual
    // add runs fused with the LayerNorm after it (residual_layernorm_fwd, bit-identical to add +
    // layernorm_fwd), so only the embeddings' LayerNorm is a plain call.
    auto input_norm = [&](int l) {
        if (l == cfg_.n_layer) return NormSite{lnf_out_, lnf_mean_, lnf_rstd_, lnf_w_, lnf_b_};
        const Layer& L = layers_[l];
        return NormSite{L.ln1_out, L.ln1_mean, L.ln1_rstd, L.ln1_w, L.ln1_b};
    };

    ops.embedding_fwd(encoded_, tokens_, wte_, wpe_, c.B, c.T, E);
    if (drop) ops.dropout(encoded_, n, cfg_.dropout, c.site_seed(cfg_.n_layer, 0));
    const NormSite first = input_norm(0);
    ops.layernorm_fwd(first.out, first.mean, first.rstd, encoded_, first.w, first.b, BT, E);
    for (int l = 0; l < cfg_.n_layer; ++l) {
        Layer& L = layers_[l];
        L.attn->forward(c, L.ln1_out, branch_);
        // resid_mid = x + dropout(branch), ln_2 of it
        ops.residual_layernorm_fwd(L.resid_mid, L.ln2_out, L.ln2_mean, L.ln2_rstd, layer_input(l), branch_, L.ln2_w,
                                   L.ln2_b, BT, E, residual_dropout(c, l, kSiteAttnOut));
        L.mlp->forward(c, L.ln2_out, branch_);
        // resid_out = resid_mid + dropout(branch), and the next block's ln_1 (or ln_f) of it
        const NormSite next = input_norm(l + 1);
        ops.residual_layernorm_fwd(L.resid_out, next.out, next.mean, next.rstd, L.resid_mid, branch_, next.w, next.b,
                                   BT, E, residual_dropout(c, l, kSiteMlpOut));
    }
}

double GPT::forward(const StepContext& c, float dloss) {
    forward_body(c);
    run_head(c, dloss);
    const int BT = c.B * c.T;
    std::vector<float> losses(BT);
    c.ops->download(losses_.sub(0, BT), losses.data());
    double sum = 0;
    for (float v : losses) sum += v;
    return sum / BT;
}

void GPT::run_head(const StepContext& c, float dloss) {
    Ops& ops = *c.ops;
    const int BT = c.B * c.T, E = cfg_.n_embd, V = cfg_.vocab_size, Vp = cfg_.padded_vocab;
    for (int r0 = 0; r0 < BT; r0 += head_chunk_) {
        const int rows = std::min(head_chunk_, BT - r0);
        Ten x = lnf_out_.sub(size_t(r0) * E, size_t(rows) * E);
        Ten logits = logits_.sub(0, size_t(rows) * Vp);
        ops.matmul_fwd(logits, x, wte_, {}, rows, E, Vp);
        ops.classifier(losses_.sub(r0, rows), logits, targets_.sub(r0, rows), rows, V, Vp, dloss);
        if (dloss != 0.f)
            ops.matmul_bwd(d_lnf_.sub(size_t(r0) * E, size_t(rows) * E), wte_.as(Space::Grad), {},
                           logits, x, wte_, rows, E, Vp);
    }
}

void GPT::backward(const StepContext& c) {
    Ops& ops = *c.ops;
    const int BT = c.B * c.T, E = cfg_.n_embd;
    const size_t n = size_t(BT) * E;
    const bool drop = c.training && cfg_.dropout > 0.f;
    Ten dres = d_resid_.sub(0, n), dln = d_ln_.sub(0, n);
    // The gradient a residual branch sees is dres through the branch's dropout mask: the LayerNorm
    // backward that finishes dres writes it into d_branch (ops.h layernorm_bwd's branch). Units only
    // read it, so without dropout they read dres itself (no copy).
    const Ten branch = drop ? d_branch_.sub(0, n) : Ten{}, seen = drop ? branch : dres;

    // The bias gradient of the projection that wrote into the residual stream point a LayerNorm
    // backward finishes (constructor): layer l's MLP after ln_1 of l + 1 (ln_f), its attention after ln_2.
    auto proj_bias_grad = [&](const Ten& bias) { return bias.present() ? bias.as(Space::Grad) : Ten{}; };
    ops.zero(dres);
    ops.layernorm_bwd(dres, lnf_w_.as(Space::Grad), lnf_b_.as(Space::Grad), d_lnf_, layer_input(cfg_.n_layer),
                      lnf_w_, lnf_mean_, lnf_rstd_, BT, E, proj_bias_grad(layers_.back().mlp->output_bias()), branch,
                      residual_dropout(c, cfg_.n_layer - 1, kSiteMlpOut));
    for (int l = cfg_.n_layer - 1; l >= 0; --l) {
        Layer& L = layers_[l];
        // resid_out = resid_mid + dropout(mlp(ln2(resid_mid)))
        // Recomputed LayerNorm outputs: the forward's own op on the kept input, so the output (and
        // the mean/rstd it rewrites) are the forward's values bit for bit on a deterministic backend.
        if (ln_shared_.present())
            ops.layernorm_fwd(L.ln2_out, L.ln2_mean, L.ln2_rstd, L.resid_mid, L.ln2_w, L.ln2_b, BT, E);
        L.mlp->backward(c, L.ln2_out, seen, dln, scratch_);
        ops.layernorm_bwd(dres, L.ln2_w.as(Space::Grad), L.ln2_b.as(Space::Grad), dln, L.resid_mid,
                          L.ln2_w, L.ln2_mean, L.ln2_rstd, BT, E, proj_bias_grad(L.attn->output_bias()), branch,
                          residual_dropout(c, l, kSiteAttnOut));
        // resid_mid = x + dropout(attn(ln1(x)))
        if (ln_shared_.present())
            ops.layernorm_fwd(L.ln1_out, L.ln1_mean, L.ln1_rstd, layer_input(l), L.ln1_w, L.ln1_b, BT, E);
        L.attn->backward(c, L.ln1_out, seen, dln, scratch_);
        // Below layer 0: the previous block's MLP branch; at layer 0: the embeddings' dropout.
        ops.layernorm_bwd(dres, L.ln1_w.as(Space::Grad), L.ln1_b.as(Space::Grad), dln, layer_input(l),
                          L.ln1_w, L.ln1_mean, L.ln1_rstd, BT, E,
                          l > 0 ? proj_bias_grad(layers_[l - 1].mlp->output_bias()) : Ten{}, branch,
                          l > 0 ? residual_dropout(c, l - 1, kSiteMlpOut) : residual_dropout(c, cfg_.n_layer, 0));
    }
    ops.embedding_bwd(wte_.as(Space::Grad), wpe_.as(Space::Grad), seen, tokens_, c.B, c.T, E);
}

std::vector<float> GPT::last_logits(const StepContext& c) {
    const int E = cfg_.n_embd, Vp = cfg_.padded_vocab;
    StepContext eval = c;
    eval.training = false;
    forward_body(eval);
    Ten row = lnf_out_.sub(size_t(c.T - 1) * E, E);
    c.ops->matmul_fwd(logits_.sub(0, Vp), row, wte_, {}, 1, E, Vp);
    std::vector<float> out(Vp);
    c.ops->download(logits_.sub(0, Vp), out.data());
    out.resize(cfg_.vocab_size);
    return out;
}

}  // namespace gpt
