// The SPEC §4 ratio ablation as data, and the spec-derived parameter list of every variant.
#include "train/ablation.h"

#include "model/variant_names.h"

#include <cmath>
#include <set>

#include <fmt/format.h>

#include "common/error.h"
#include "train/config_io.h"

namespace gpt {
namespace {

// ---- the table of SPEC §4 ----------------------------------------------------------------------

enum class Arm { baseline, ra, mla, mla_ra };

struct Row {
    Arm arm;
    int width;          // MLP hidden size for E = 768
    bool prune, m1, m2;
    bool ract;
    RactStat stat;
    RactApply apply;
};

constexpr RactStat kTopk = RactStat::topk;
constexpr RactApply kOut = RactApply::output;

// clang-format off
constexpr Row kTable[] = {
    /* 0 */ {Arm::baseline, 3072, false, false, false, false, kTopk, kOut},
    /* 1 */ {Arm::baseline, 3072, true,  false, false, false, kTopk, kOut},
    /* 2 */ {Arm::baseline, 3840, false, false, false, false, kTopk, kOut},
    /* 3 */ {Arm::baseline, 3264, false, true,  false, false, kTopk, kOut},
    /* 4 */ {Arm::baseline, 3072, false, true,  true,  false, kTopk, kOut},
    /* 5 */ {Arm::ra,       3072, false, false, false, false, kTopk, kOut},
    /* 6 */ {Arm::ra,       3840, false, false, false, false, kTopk, kOut},
    /* 7 */ {Arm::ra,       3072, false, true,  true,  false, kTopk, kOut},
    /* 8 */ {Arm::mla,      3072, false, false, false, false, kTopk, kOut},
    /* 9 */ {Arm::mla,      2560, false, false, false, false, kTopk, kOut},
    /*10 */ {Arm::mla,      2048, false, true,  true,  false, kTopk, kOut},
    /*11 */ {Arm::mla_ra,   2560, false, false, false, false, kTopk, kOut},
    /*12 */ {Arm::mla_ra,   2048, false, true,  true,  false, kTopk, kOut},
    /*13 */ {Arm::baseline, 3072, false, false, false, true,  kTopk, kOut},
    /*14 */ {Arm::mla,      2560, false, false, false, true,  kTopk, kOut},
    /*15 */ {Arm::mla_ra,   2560, false, false, false, true,  kTopk, kOut},
    /*16 */ {Arm::mla_ra,   2048, false, true,  true,  true,  kTopk, kOut},
    /*17 */ {Arm::baseline, 3072, false, false, false, true,  kTopk, RactApply::weights},
    /*18 */ {Arm::baseline, 3072, false, false, false, true,  RactStat::entropy, kOut},
};
// clang-format on
static_assert(sizeof(kTable) / sizeof(kTable[0]) == kAblationStepCount, "SPEC §4 has 19 steps");

const char* arm_name(Arm a) {
    switch (a) {
        case Arm::baseline: return "baseline";
        case Arm::ra: return "ra";
        case Arm::mla: return "mla";
        case Arm::mla_ra: return "mla-ra";
    }
    return "?";
}

const char* apply_name(RactApply a) { return a == RactApply::output ? "output" : "weights"; }

bool is_mla(AttentionKind k) { return k == AttentionKind::mla || k == AttentionKind::ra_mla; }
bool is_ra(AttentionKind k) { return k == AttentionKind::ra || k == AttentionKind::ra_lowrank; }

AblationStep make_step(int id, const Row& row, const ModelConfig& base, const OptimConfig& base_optim) {
    AblationStep s;
    s.id = id;
    ModelConfig& m = s.model;
    m = base;
    m.mlp_hidden = int(std::lround(double(row.width) * base.n_embd / kAblationReferenceWidth));
    m.attention = row.arm == Arm::baseline ? AttentionKind::baseline
                  : row.arm == Arm::ra     ? AttentionKind::ra
                  : row.arm == Arm::mla    ? AttentionKind::mla
                                           : AttentionKind::ra_mla;
    if (row.arm == Arm::ra) {
        m.ra.band = base.mla.ra_band;
        m.ra.gates = GateScope::per_layer;
        m.ra.learnable = true;
        m.ra.g_std = 1.0f;
        m.ra.g_rec = base.mla.ra_alpha;
    }
    m.ract.enabled = row.ract;
    if (row.ract) {
        m.ract.stat = row.stat;
        m.ract.apply = row.apply;
    }
    m.m1 = row.m1;
    m.m2 = row.m2;
    m.m3 = false;
    s.optim = base_optim;
    s.optim.kind = OptimizerKind::adamw_spam;
    s.optim.prune_sparsity = row.prune ? 0.5f : 0.0f;

    std::string extras;
    auto add = [&](const std::string& e) { extras += (extras.empty() ? "" : " + ") + e; };
    if (row.ract) add(fmt::format("RA-CT ({}, {})", ract_stat_name(row.stat), apply_name(row.apply)));
    if (row.m1) add("M1");
    if (row.m2) add("M2");
    if (row.prune) add("50% magnitude pruning");
    s.name = fmt::format("step{:02d}-{}-f{}{}{}{}", id, arm_name(row.arm), row.width, row.ract ? "-ract" : "",
                         row.m1 ? "-m1" : "", row.m2 ? "-m2" : "");
    if (row.prune) s.name += "-prune";
    s.description = fmt::format("{} attention, MLP width {}{}{}", arm_name(row.arm), m.mlp_hidden,
                                extras.empty() ? "" : ", ", extras);
    return s;
}

}  // namespace

std::vector<AblationStep> ratio_ablation_steps(const ModelConfig& base, const OptimConfig& base_optim) {
    std::vector<AblationStep> steps;
    for (int id = 0; id < kAblationStepCount; ++id) steps.push_back(make_step(id, kTable[id], base, base_optim));
    return steps;
}

std::vector<int> reciprocal_ablation_steps() { return {3, 4, 7, 10, 12, 16}; }

void check_ablation_step_ids(const std::vector<int>& ids, int n_steps, const std::string& key) {
    std::set<int> seen;
    for (int id : ids) {
        if (id < 0 || id >= n_steps)
            fail(fmt::format("{}: step {} does not exist; valid steps are 0..{} (SPEC §4 table); fix the list",
                             key, id, n_steps - 1));
        if (!seen.insert(id).second) fail(fmt::format("{}: step {} is listed twice; list each step once", key, id));
    }
}

std::vector<AblationStep> select_ablation_steps(const std::vector<AblationStep>& steps, const std::vector<int>& ids) {
    if (ids.empty()) return steps;
    check_ablation_step_ids(ids, int(steps.size()), "ablation.steps");
    std::vector<AblationStep> out;
    for (int id : ids) out.push_back(steps[size_t(id)]);
    return out;
}

std::vector<int> ablation_step_ids(const std::string& ablation_name) {
    if (ablation_name == "gpt2-ratio-ablation") {
        std::vector<int> all;
        for (int id = 0; id < kAblationStepCount; ++id) all.push_back(id);
        return all;
    }
    if (ablation_name == "gpt2-ratio-ablation-reciprocal") return reciprocal_ablation_steps();
    fail("ablation.name: unknown ablation '" + ablation_name +
         "'; allowed: gpt2-ratio-ablation, gpt2-ratio-ablation-reciprocal");
}

// ---- parameters ------------------------------------------------------------------------------

ParamTable spec_parameters(const ModelConfig& cfg) {
    GPT_CHECK(cfg.n_layer > 0 && cfg.n_embd > 0 && cfg.n_head > 0 && cfg.n_embd % cfg.n_head == 0,
              "model: n_layer, n_embd, n_head must be > 0 and n_head must divide n_embd");
    GPT_CHECK(!cfg.m3 || is_mla(cfg.attention),
              "model.m3: latent reciprocity needs an MLA attention (model.attention = mla or ra_mla)");
    const int64_t E = cfg.n_embd, H = cfg.n_head, D = cfg.head_dim(), F = cfg.hidden(), Ly = cfg.n_layer;
    const int64_t L = cfg.mla.latent;
    const float resid_std = 0.02f / std::sqrt(2.0f * float(Ly));
    const bool decay = true, no_decay = false;
    ParamTable p;
    p.add("wte.weight", {cfg.padded_vocab, E}, Init::normal, 0.02f, decay, cfg.vocab_size);
    p.add("wpe.weight", {cfg.block_size, E}, Init::normal, 0.02f, no_decay);
    for (int64_t l = 0; l < Ly; ++l) {
        const std::string h = fmt::format("h.{}.", l), a = h + "attn.", m = h + "mlp.";
        auto scalar = [&](const std::string& name, float init) {
            p.add(name, {1}, Init::constant, init, no_decay);
        };
        p.add(h + "ln_1.weight", {E}, Init::ones, 0.f, no_decay);
        p.add(h + "ln_1.bias", {E}, Init::zeros, 0.f, no_decay);
        if (is_mla(cfg.attention)) {
            GPT_CHECK(L > 0, "model.mla.latent must be > 0");
            const int64_t maps = cfg.mla.shared_maps ? 1 : H;
            p.add(a + "w_q.weight", {E, E}, Init::normal, 0.02f, decay);
            p.add(a + "w_kd.weight", {L, E}, Init::normal, 0.02f, decay);
            p.add(a + "w_vd.weight", {L, E}, Init::normal, 0.02f, decay);
            p.add(a + "q_map", {maps, D, L}, Init::xavier, 0.f, decay);   // P_h: D -> L
            p.add(a + "v_map", {maps, L, D}, Init::xavier, 0.f, decay);   // U_h: L -> D
            if (cfg.attention == AttentionKind::ra_mla) scalar(a + "ra_alpha", cfg.mla.ra_alpha);
        } else {
            p.add(a + "c_attn.weight", {3 * E, E}, Init::normal, 0.02f, decay);
            p.add(a + "c_attn.bias", {3 * E}, Init::zeros, 0.f, no_decay);
        }
        p.add(a + "c_proj.weight", {E, E}, Init::normal, resid_std, decay);
        p.add(a + "c_proj.bias", {E}, Init::zeros, 0.f, no_decay);
        if (is_ra(cfg.attention)) {
            const int64_t gates = cfg.ra.gates == GateScope::per_head ? H : 1;
            if (cfg.ra.learnable) {
                p.add(a + "ra.g_std", {gates}, Init::constant, cfg.ra.g_std, no_decay);
                p.add(a + "ra.g_rec", {gates}, Init::constant, cfg.ra.g_rec, no_decay);
            }
            if (cfg.attention == AttentionKind::ra_lowrank) {
                GPT_CHECK(cfg.ra.rank > 0 && cfg.ra.rank < D,
                          fmt::format("model.ra.rank: {} must be in 1..{} (below the head dim {})", cfg.ra.rank,
                                      D - 1, D));
                p.add(a + "ra.w_lowrank", {D, int64_t(cfg.ra.rank)}, Init::normal, 0.02f, decay);
            }
            if (cfg.ra.discoverability) {
                p.add(a + "ra.disc_u", {H, D}, Init::normal, 0.02f, no_decay);
                p.add(a + "ra.g_disc", {H}, Init::constant, 0.2f, no_decay);
            }
        }
        if (cfg.ract.enabled) {
            p.add(a + "ract.scale", {H}, Init::constant, 1.0f, no_decay);
            p.add(a + "ract.bias", {H}, Init::constant, 2.0f, no_decay);
        }
        if (cfg.m1 && l >= 1) scalar(a + "m1_alpha", 0.1f);   // consumer of block l-1's gate
        p.add(h + "ln_2.weight", {E}, Init::ones, 0.f, no_decay);
        p.add(h + "ln_2.bias", {E}, Init::zeros, 0.f, no_decay);
        p.add(m + "c_fc.weight", {F, E}, Init::normal, 0.02f, decay);
        p.add(m + "c_fc.bias", {F}, Init::zeros, 0.f, no_decay);
        p.add(m + "c_proj.weight", {E, F}, Init::normal, resid_std, decay);
        p.add(m + "c_proj.bias", {E}, Init::zeros, 0.f, no_decay);
        if (cfg.m1 && l + 1 < Ly) {   // producer of block l+1's gate
            p.add(m + "m1.w1", {64, F}, Init::normal, 0.02f, decay);
            p.add(m + "m1.w2", {H, 64}, Init::normal, 0.02f, decay);
            p.add(m + "m1.b2", {H}, Init::constant, 2.0f, no_decay);
        }
        if (cfg.m2) {
            GPT_CHECK(cfg.m2_rank > 0, "model.m2_rank must be > 0");
            p.add(m + "m2.w_down", {int64_t(cfg.m2_rank), F}, Init::normal, 0.02f, decay);
            p.add(m + "m2.w_up", {F, int64_t(cfg.m2_rank)}, Init::normal, 0.02f, decay);
            scalar(m + "m2.alpha", 0.3f);
        }
        if (cfg.m3) {
            p.add(m + "m3.c", {F, L}, Init::normal, 0.02f, decay);
            scalar(m + "m3.alpha", 0.2f);
            if (l + 1 < Ly) scalar(m + "m3.alpha_next", 0.2f);   // into block l+1's k_lat
        }
    }
    p.add("ln_f.weight", {E}, Init::ones, 0.f, no_decay);
    p.add("ln_f.bias", {E}, Init::zeros, 0.f, no_decay);
    return p;
}

int64_t count_parameters(const ModelConfig& cfg) {
    const ParamTable table = spec_parameters(cfg);
    int64_t n = 0;
    for (const ParamSpec& s : table.specs()) n += int64_t(s.numel());
    return n;
}

std::string model_signature(const ModelConfig& c) {
    std::string s = fmt::format("Ly={} E={} H={} V={}/{} ctx={} F={} dropout={} attention={}", c.n_layer, c.n_embd,
                                c.n_head, c.vocab_size, c.padded_vocab, c.block_size, c.hidden(), c.dropout,
                                attention_kind_str(c.attention));
    if (is_ra(c.attention)) {
        s += fmt::format(" ra(band={} gates={} learnable={} g_std={} g_rec={} route={} disc={}",
                         c.ra.band, c.ra.gates == GateScope::per_head ? "head" : "layer", c.ra.learnable,
                         c.ra.g_std, c.ra.g_rec, c.ra.route_threshold, c.ra.discoverability);
        if (c.attention == AttentionKind::ra_lowrank) s += fmt::format(" rank={}", c.ra.rank);
        s += ")";
    }
    if (is_mla(c.attention)) {
        s += fmt::format(" mla(L={} shared_maps={}", c.mla.latent, c.mla.shared_maps);
        if (c.attention == AttentionKind::ra_mla) s += fmt::format(" alpha={} band={}", c.mla.ra_alpha, c.mla.ra_band);
        s += ")";
    }
    if (c.ract.enabled)
        s += fmt::format(" ract(stat={} apply={} k={} alpha={} head_avg={} detach={})", ract_stat_name(c.ract.stat),
                         apply_name(c.ract.apply), c.ract.topk, c.ract.alpha, c.ract.head_average, c.ract.detach);
    if (c.m1) s += " m1";
    if (c.m2) s += fmt::format(" m2(r={})", c.m2_rank);
    if (c.m3) s += " m3";
    return s;
}

}  // namespace gpt
