// The ratio ablation of SPEC §4 as data (one AblationStep record per table row), and the
// parameter list every attention/MLP variant owes according to SPEC §2 (names, shapes, init,
// weight decay): the model built by src/model must declare exactly these tensors, which is what
// count_parameters() reports. docs/variants.md lists them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/param_table.h"

namespace gpt {

constexpr int kAblationReferenceWidth = 768;  // the table's MLP widths are for E = 768 (gpt2)

// The kAblationStepCount (19, train/config_io.h) steps, in order. Each keeps everything of
// `base`/`base_optim` (shape, dropout, schedule, RA/MLA/RA-CT hyper-parameters) and sets what
// defines the step: attention kind, MLP width (the table's width scaled by n_embd / 768, so exact
// for gpt2 and proportional for small test models), RA/MLA/RA-CT switches, M1/M2/M3,
// optim.kind = adamw_spam and optim.prune_sparsity.
// The RA of steps 5-7 is the band form: band W = base.mla.ra_band, one learnable gate pair per
// layer with g_std = 1 and g_rec = base.mla.ra_alpha (the same W and alpha as RA+MLA).
std::vector<AblationStep> ratio_ablation_steps(const ModelConfig& base, const OptimConfig& base_optim);

// gpt2-ratio-ablation-reciprocal: the steps with M1/M2 on the reciprocal arms.
std::vector<int> reciprocal_ablation_steps();

// Throws gpt::Error when an id is outside 0..n_steps-1 or listed twice; `key` names the config
// key in the message (e.g. "ablation_steps").
void check_ablation_step_ids(const std::vector<int>& ids, int n_steps, const std::string& key);

// The steps with these ids, in the order given (ids are checked); an empty list selects all.
std::vector<AblationStep> select_ablation_steps(const std::vector<AblationStep>& steps,
                                                const std::vector<int>& ids);

// Step ids of a named ablation: "gpt2-ratio-ablation" (all) or "gpt2-ratio-ablation-reciprocal".
std::vector<int> ablation_step_ids(const std::string& ablation_name);

// Every parameter tensor of a model per SPEC §1-§2, in declaration order (HF GPT-2 names for the
// common tensors, "h.<l>.attn.*" / "h.<l>.mlp.*" for the variants' own). Throws gpt::Error for
// combinations the spec does not define (m3 without MLA, ra.rank >= head dim, ...).
ParamTable spec_parameters(const ModelConfig& cfg);

// Exact number of parameters (sum of the tensors above; the padded vocabulary rows of wte are
// counted, as they are allocated: gpt2 = 124,475,904, which is 124,439,808 + 47 * 768).
int64_t count_parameters(const ModelConfig& cfg);

// One line naming every field that changes the model a config builds (fields a variant does not
// read are left out), e.g. for logs and to check that ablation steps differ.
std::string model_signature(const ModelConfig& cfg);

}  // namespace gpt
