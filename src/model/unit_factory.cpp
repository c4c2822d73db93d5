// Which unit implements which configured variant. Variants (or options) not implemented are
// refused here with a message naming the option and the fix, rather than silently falling back
// to the baseline (the prototype's ablation steps collapsed onto the same model that way).
#include <fmt/format.h>

#include "common/error.h"
#include "model/attention_baseline.h"
#include "model/attention_mla.h"
#include "model/attention_ra.h"
#include "model/mlp_standard.h"
#include "model/units.h"
#include "model/variant_names.h"

namespace gpt {

namespace {

bool is_ra(AttentionKind k) { return k == AttentionKind::ra || k == AttentionKind::ra_lowrank; }
bool is_mla(AttentionKind k) { return k == AttentionKind::mla || k == AttentionKind::ra_mla; }

void check_attention_options(const ModelConfig& cfg) {
    const char* kind = attention_kind_str(cfg.attention);
    if (is_ra(cfg.attention)) {
        if (cfg.ra.route_threshold >= 0.f)
            fail(fmt::format("model.ra.route_threshold: head-selective routing ({}) is not wired into the model "
                             "(SPEC §2.2 calls it optional; the prototype measured no gain); set it to -1 (off)",
                             cfg.ra.route_threshold));
        GPT_CHECK(cfg.ra.band >= 0, fmt::format("model.ra.band: {} must be >= 0 (0 = the full transpose)", cfg.ra.band));
        GPT_CHECK(cfg.ra.g_std >= 0.f && cfg.ra.g_rec >= 0.f,
                  fmt::format("model.ra.g_std / g_rec: gates {} / {} must be >= 0 (they enter the fold as "
                              "square roots); use non-negative initial values",
                              cfg.ra.g_std, cfg.ra.g_rec));
        if (cfg.attention == AttentionKind::ra_lowrank)
            GPT_CHECK(cfg.ra.rank > 0 && cfg.ra.rank < cfg.head_dim(),
                      fmt::format("model.ra.rank: {} must be in 1..{} (below the head dim {} = n_embd / n_head)",
                                  cfg.ra.rank, cfg.head_dim() - 1, cfg.head_dim()));
    } else if (cfg.ra.discoverability || cfg.ra.route_threshold >= 0.f) {
        fail(fmt::format("model.ra.discoverability / route_threshold: these options belong to RA "
                         "(attention = ra or ra_lowrank), but model.attention is '{}'; turn them off",
                         kind));
    }
    if (is_mla(cfg.attention)) {
        GPT_CHECK(cfg.mla.latent > 0, fmt::format("model.mla.latent: {} must be > 0", cfg.mla.latent));
        if (cfg.attention == AttentionKind::ra_mla) {
            GPT_CHECK(cfg.mla.ra_band >= 0, fmt::format("model.mla.ra_band: {} must be >= 0", cfg.mla.ra_band));
            GPT_CHECK(cfg.mla.ra_alpha >= 0.f,
                      fmt::format("model.mla.ra_alpha: {} must be >= 0 (it enters the fold as a square root)",
                                  cfg.mla.ra_alpha));
        }
    }
    if (cfg.ract.enabled) {
        GPT_CHECK(cfg.ract.stat != RactStat::topk || cfg.ract.topk > 0,
                  fmt::format("model.ract.topk: {} must be > 0 for the topk statistic", cfg.ract.topk));
        GPT_CHECK(cfg.ract.apply == RactApply::output || (cfg.ract.alpha >= 0.f && cfg.ract.alpha <= 1.f),
                  fmt::format("model.ract.alpha: {} must lie in [0, 1] for apply = weights", cfg.ract.alpha));
    }
}

}  // namespace

std::unique_ptr<AttentionUnit> make_attention_unit(const ModelConfig& cfg, int layer) {
    check_attention_options(cfg);
    switch (cfg.attention) {
        case AttentionKind::baseline: return std::make_unique<BaselineAttention>(cfg, layer);
        case AttentionKind::ra:
        case AttentionKind::ra_lowrank: return std::make_unique<RaAttention>(cfg, layer);
        case AttentionKind::mla:
        case AttentionKind::ra_mla: return std::make_unique<MlaAttention>(cfg, layer);
    }
    fail(fmt::format("model.attention: unknown kind {}; allowed: baseline, ra, ra_lowrank, mla, ra_mla",
                     int(cfg.attention)));
}

std::unique_ptr<MlpUnit> make_mlp_unit(const ModelConfig& cfg, int layer) {
    if (cfg.m3 && !is_mla(cfg.attention))
        fail(fmt::format("model.m3: latent reciprocity needs an MLA attention (model.attention = mla or ra_mla), "
                         "not '{}'; set model.m3 to false or change the attention",
                         attention_kind_str(cfg.attention)));
    GPT_CHECK(!cfg.m2 || cfg.m2_rank > 0, fmt::format("model.m2_rank: {} must be > 0 with model.m2", cfg.m2_rank));
    return std::make_unique<StandardMlp>(cfg, layer);
}

}  // namespace gpt
