// Reading, overriding, validating and writing the YAML run file (docs/configuration.md lists every
// key). The YAML maps onto the structs of src/model/config.h key for key; a key is the dotted path
// of a field: `train.optim.lr` is RunConfig::train.optim.lr.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"
#include "train/presets.h"

namespace gpt {

// The embedded default run (the same values as defconfigs/default): a small GPT on the State of
// the Union corpus that trains in minutes on two CPU cores.
RunConfig default_run_config();

// Loads a YAML run file, then applies overrides ("key=value", dotted keys, e.g.
// "train.optim.lr=3e-4"), then validates. The model preset (model.preset, from the overrides if
// given there, else from the file) is applied first; every explicit model key then overrides it.
RunConfig load_run_config(const std::string& yaml_path, const std::vector<std::string>& overrides = {});

// Parses YAML text the same way (the source name only labels error messages). Validates too.
RunConfig parse_run_config(const std::string& yaml_text, const std::string& source_name = "<yaml>",
                           const std::vector<std::string>& overrides = {});

// Sets one key from its text form. Setting model.preset applies the preset's shape
// (n_layer, n_embd, n_head, block_size). Throws gpt::Error naming the key on an unknown key or a
// value of the wrong type; ranges and cross-key rules are checked by validate().
void apply_override(RunConfig& config, const std::string& key, const std::string& value);

// Splits "key=value" and applies it.
void apply_override(RunConfig& config, const std::string& key_equals_value);

// Checks every range and every rule between keys; throws gpt::Error naming the key, what is
// wrong and the allowed values. Looks at values only, never at the file system.
void validate(const RunConfig& config);

// Checks that the files the job reads exist (training/validation shards, tokenizer files): throws
// gpt::Error naming the path and how to prepare it. Call it before starting a job.
void check_data_files(const RunConfig& config);

// The whole configuration as YAML, every key written out; load_run_config() reads it back to
// an identical configuration.
std::string to_yaml(const RunConfig& config);

// Every key the YAML run file may contain, in file order.
std::vector<std::string> run_config_keys();

// The job names accepted by `job:`, and the number of steps in the SPEC §4 ablation table.
std::vector<std::string> job_names();
constexpr int kAblationStepCount = 19;

}  // namespace gpt
