#include "train/config_io.h"

#include <glob.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include "common/error.h"
#include "model/attention_ra.h"
#include "train/quality.h"

namespace gpt {
namespace {

// ---- text -> value, each error naming the key ---------------------------------------------------

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::string lower(std::string s) {
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
}

std::string join(const std::vector<std::string>& items, const std::string& sep = ", ") {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += sep;
        out += items[i];
    }
    return out;
}

[[noreturn]] void type_error(const std::string& key, const std::string& expected, const std::string& text) {
    fail(key + ": expected " + expected + ", got '" + text + "'");
}

// std::from_chars over the whole (trimmed) text, a leading '+' allowed. Fails with "expected ..."
// when the text is not a T; `too_big` reports a value outside T.
template <class T>
T read_whole(const std::string& key, const std::string& raw, const std::string& expected, bool& too_big) {
    std::string text = trim(raw);
    const char* first = text.data() + (!text.empty() && text[0] == '+');
    T value{};
    auto [end, ec] = std::from_chars(first, text.data() + text.size(), value);
    if (text.empty() || ec == std::errc::invalid_argument || end != text.data() + text.size())
        type_error(key, expected, raw);
    too_big = ec == std::errc::result_out_of_range;
    return value;
}

int64_t parse_integer(const std::string& key, const std::string& raw, int64_t lo, int64_t hi) {
    bool too_big = false;
    int64_t value = read_whole<int64_t>(key, raw, "an integer", too_big);
    if (too_big || value < lo || value > hi)
        fail(key + ": " + trim(raw) + " does not fit; allowed: " + std::to_string(lo) + " .. " + std::to_string(hi));
    return value;
}

uint64_t parse_unsigned(const std::string& key, const std::string& raw) {
    bool too_big = false;
    if (trim(raw).rfind('-', 0) == 0) type_error(key, "a non-negative integer", raw);
    uint64_t value = read_whole<uint64_t>(key, raw, "a non-negative integer", too_big);
    if (too_big) fail(key + ": " + trim(raw) + " does not fit in 64 bits");
    return value;
}

float parse_number(const std::string& key, const std::string& raw) {
    bool too_big = false;
    float value = read_whole<float>(key, raw, "a number (like 0.1 or 3e-4)", too_big);
    if (too_big || !std::isfinite(value)) fail(key + ": " + trim(raw) + " is not a finite single-precision number");
    return value;
}

bool parse_boolean(const std::string& key, const std::string& raw) {
    std::string text = lower(trim(raw));
    if (text == "true" || text == "yes" || text == "on" || text == "y" || text == "1") return true;
    if (text == "false" || text == "no" || text == "off" || text == "n" || text == "0") return false;
    type_error(key, "a boolean (true or false)", raw);
}

// "0 1 2", "0,1,2", "[0, 1, 2]", "0-18" or a mix; ranges are inclusive.
std::vector<int> parse_step_list(const std::string& key, const std::string& raw) {
    std::string text = raw;
    for (auto& ch : text)
        if (ch == ',' || ch == '[' || ch == ']') ch = ' ';
    std::vector<int> steps;
    std::istringstream words(text);
    for (std::string word; words >> word;) {
        size_t dash = word.find('-', 1);
        if (dash == std::string::npos) {
            steps.push_back(static_cast<int>(parse_integer(key, word, -1000000, 1000000)));
            continue;
        }
        int from = static_cast<int>(parse_integer(key, word.substr(0, dash), -1000000, 1000000));
        int to = static_cast<int>(parse_integer(key, word.substr(dash + 1), -1000000, 1000000));
        if (to < from) fail(key + ": the range '" + word + "' runs backwards; write it as low-high");
        for (int s = from; s <= to; ++s) steps.push_back(s);
    }
    return steps;
}

std::string format_number(float value) {
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    return ec == std::errc() ? std::string(buf, end) : std::to_string(value);
}

// ---- the key table ------------------------------------------------------------------------------

enum class Style { plain, quoted, list };

struct Key {
    explicit Key(std::string key_name, Style key_style = Style::plain) : name(std::move(key_name)), style(key_style) {}
    std::string name;
    Style style;
    std::function<void(RunConfig&, const std::string&)> set;
    std::function<std::string(const RunConfig&)> get;
    std::function<void(const RunConfig&)> check;   // range/membership; may be empty
};

// A numeric range with its description for messages ("0 <= value < 1").
struct Range {
    double lo, hi;
    bool lo_open = false, hi_open = false;
    bool contains(double v) const {
        return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    }
    std::string describe() const {
        auto num = [](double v) {
            if (v == std::numeric_limits<double>::infinity()) return std::string("inf");
            std::ostringstream os;
            os << v;
            return os.str();
        };
        if (hi == std::numeric_limits<double>::infinity())
            return std::string("value ") + (lo_open ? "> " : ">= ") + num(lo);
        return num(lo) + (lo_open ? " < " : " <= ") + "value" + (hi_open ? " < " : " <= ") + num(hi);
    }
};
constexpr double kInf = std::numeric_limits<double>::infinity();

Range closed(double lo, double hi) { return {lo, hi}; }
Range at_least(double lo) { return {lo, kInf}; }
Range above(double lo) { return {lo, kInf, true}; }
Range half_open(double lo, double hi) { return {lo, hi, false, true}; }

template <class Value>
void check_range(const std::string& key, Value value, const Range& range, const std::string& note) {
    if (range.contains(static_cast<double>(value))) return;
    std::string text = [&] {
        if constexpr (std::is_floating_point_v<Value>) return format_number(value);
        else return std::to_string(value);
    }();
    fail(key + ": " + text + " is out of range; allowed: " + range.describe() + (note.empty() ? "" : " (" + note + ")"));
}

// Where a key's value lives: a captureless lambda turned into a function pointer, so that all keys
// of one type share one instantiation of the code below (this file compiles several times faster
// than with a distinct lambda type per key).
template <class T>
using Locate = T* (*)(RunConfig&);
#define FIELD(path) +[](RunConfig& c) { return &c.path; }

// Reads a field through its locator; the locator only computes the address, nothing is modified.
template <class T>
const T& read(Locate<T> locate, const RunConfig& c) {
    return *locate(const_cast<RunConfig&>(c));
}

template <class T>
using Parse = T (*)(const std::string& key, const std::string& text);
template <class T>
using Format = std::string (*)(const T&);

// A key read by parse(key, text) and written by format(value).
template <class T>
Key value_key(std::string name, Locate<T> locate, Parse<T> parse, Format<T> format, Style style = Style::plain) {
    Key k(name, style);
    k.set = [name, locate, parse](RunConfig& c, const std::string& t) { *locate(c) = parse(name, t); };
    k.get = [locate, format](const RunConfig& c) { return format(read(locate, c)); };
    return k;
}

template <class T>
Key ranged_key(std::string name, Locate<T> locate, Parse<T> parse, Format<T> format, Range range, std::string note) {
    Key k = value_key(name, locate, parse, format);
    k.check = [name, locate, range, note](const RunConfig& c) { check_range(name, read(locate, c), range, note); };
    return k;
}

int parse_int(const std::string& key, const std::string& text) {
    return static_cast<int>(parse_integer(key, text, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}
std::string format_int(const int& value) { return std::to_string(value); }
std::string format_seed(const uint64_t& value) { return std::to_string(value); }
std::string format_float(const float& value) { return format_number(value); }
std::string format_boolean(const bool& value) { return value ? "true" : "false"; }
std::string parse_text(const std::string&, const std::string& text) { return text; }
std::string format_text(const std::string& text) { return text; }

Key int_key(std::string name, Locate<int> locate, Range range, std::string note = "") {
    return ranged_key(name, locate, parse_int, format_int, range, note);
}

Key number_key(std::string name, Locate<float> locate, Range range, std::string note = "") {
    return ranged_key(name, locate, parse_number, format_float, range, note);
}

Key seed_key(std::string name, Locate<uint64_t> locate) { return value_key(name, locate, parse_unsigned, format_seed); }
Key bool_key(std::string name, Locate<bool> locate) { return value_key(name, locate, parse_boolean, format_boolean); }
Key string_key(std::string name, Locate<std::string> locate) {
    return value_key(name, locate, parse_text, format_text, Style::quoted);
}

[[noreturn]] void not_allowed(const std::string& key, const std::string& value, const std::vector<std::string>& allowed) {
    fail(key + ": '" + value + "' is not allowed; allowed: " + join(allowed));
}

// A list of integers ("0 1 2", "0-4", a YAML list), each within `range`; `unique`: none twice.
Key int_list_key(std::string name, Locate<std::vector<int>> locate, Range range, std::string note, bool unique) {
    Key k(name, Style::list);
    k.set = [name, locate](RunConfig& c, const std::string& t) { *locate(c) = parse_step_list(name, t); };
    k.get = [locate](const RunConfig& c) {
        std::vector<std::string> words;
        for (int v : read(locate, c)) words.push_back(std::to_string(v));
        return join(words, " ");
    };
    k.check = [name, locate, range, note, unique](const RunConfig& c) {
        std::set<int> seen;
        for (int v : read(locate, c)) {
            check_range(name, v, range, note);
            if (unique && !seen.insert(v).second) fail(name + ": " + std::to_string(v) + " is listed twice");
        }
    };
    return k;
}

// A string field restricted to a set of words (job, precision, device).
Key word_key(std::string name, Locate<std::string> locate, std::vector<std::string> allowed) {
    Key k(name);
    auto require_allowed = [name, allowed](const std::string& word) {
        if (std::find(allowed.begin(), allowed.end(), word) == allowed.end()) not_allowed(name, word, allowed);
    };
    k.set = [locate, require_allowed](RunConfig& c, const std::string& raw) {
        require_allowed(trim(raw));
        *locate(c) = trim(raw);
    };
    k.get = [locate](const RunConfig& c) { return read(locate, c); };
    k.check = [locate, require_allowed](const RunConfig& c) { require_allowed(read(locate, c)); };
    return k;
}

template <class Enum>
Key enum_key(std::string name, Locate<Enum> locate, std::vector<std::pair<std::string, Enum>> values) {
    Key k(name);
    k.set = [name, locate, values](RunConfig& c, const std::string& raw) {
        std::string t = trim(raw);
        for (const auto& [word, value] : values)
            if (word == t) return void(*locate(c) = value);
        std::vector<std::string> allowed;
        for (const auto& v : values) allowed.push_back(v.first);
        not_allowed(name, t, allowed);
    };
    k.get = [locate, values](const RunConfig& c) {
        for (const auto& [word, value] : values)
            if (value == read(locate, c)) return word;
        return std::string("?");
    };
    return k;
}

std::vector<Key> build_keys() {
    std::vector<Key> keys;
    keys.push_back(word_key("job", FIELD(job), job_names()));

    // model.preset first: setting it copies the preset's shape, later keys override that.
    {
        Key k("model.preset");
        k.set = [](RunConfig& c, const std::string& t) { apply_model_preset(c.model, trim(t)); };
        k.get = [](const RunConfig& c) { return c.model.preset; };
        k.check = [](const RunConfig& c) { (void)model_preset(c.model.preset); };
        keys.push_back(k);
    }
    keys.push_back(int_key("model.n_layer", FIELD(model.n_layer), closed(1, 1024)));
    keys.push_back(int_key("model.n_embd", FIELD(model.n_embd), closed(1, 65536)));
    keys.push_back(int_key("model.n_head", FIELD(model.n_head), closed(1, 1024)));
    keys.push_back(int_key("model.vocab_size", FIELD(model.vocab_size), closed(1, 65536), "shard tokens are uint16"));
    keys.push_back(int_key("model.padded_vocab", FIELD(model.padded_vocab), closed(1, 1 << 20)));
    keys.push_back(int_key("model.block_size", FIELD(model.block_size), closed(1, 1 << 20)));
    keys.push_back(int_key("model.mlp_hidden", FIELD(model.mlp_hidden), closed(0, 1 << 20), "0 means 4 * n_embd"));
    keys.push_back(number_key("model.dropout", FIELD(model.dropout), half_open(0, 1)));
    keys.push_back(enum_key<AttentionKind>("model.attention", FIELD(model.attention),
        {{"baseline", AttentionKind::baseline}, {"ra", AttentionKind::ra}, {"ra_lowrank", AttentionKind::ra_lowrank},
         {"mla", AttentionKind::mla}, {"ra_mla", AttentionKind::ra_mla}}));
    keys.push_back(enum_key<AttentionImpl>("model.attention_impl", FIELD(model.attention_impl),
        {{"auto", AttentionImpl::auto_select}, {"ours", AttentionImpl::ours}, {"cudnn", AttentionImpl::cudnn},
         {"cudnn_nondeterministic", AttentionImpl::cudnn_nondeterministic}}));

    keys.push_back(int_key("model.ra.band", FIELD(model.ra.band), closed(0, 1 << 20), "0 means the full transpose"));
    keys.push_back(enum_key<GateScope>("model.ra.gates", FIELD(model.ra.gates),
        {{"per_head", GateScope::per_head}, {"per_layer", GateScope::per_layer}}));
    keys.push_back(bool_key("model.ra.learnable", FIELD(model.ra.learnable)));
    keys.push_back(number_key("model.ra.g_std", FIELD(model.ra.g_std), at_least(0)));
    keys.push_back(number_key("model.ra.g_rec", FIELD(model.ra.g_rec), at_least(0)));
    keys.push_back(int_key("model.ra.rank", FIELD(model.ra.rank), closed(1, 1024)));
    keys.push_back(enum_key<RaLowRankForm>("model.ra.lowrank_form", FIELD(model.ra.lowrank_form),
        {{"auto", RaLowRankForm::auto_select}, {"rows", RaLowRankForm::rows}, {"weights", RaLowRankForm::weights}}));
    keys.push_back(enum_key<RaFold>("model.ra.fold", FIELD(model.ra.fold),
        {{"auto", RaFold::auto_select}, {"materialized", RaFold::materialized}, {"kernel", RaFold::kernel}}));
    keys.push_back(number_key("model.ra.route_threshold", FIELD(model.ra.route_threshold), closed(-kInf, kInf)));
    keys.push_back(bool_key("model.ra.discoverability", FIELD(model.ra.discoverability)));

    keys.push_back(int_key("model.mla.latent", FIELD(model.mla.latent), closed(1, 65536)));
    keys.push_back(bool_key("model.mla.shared_maps", FIELD(model.mla.shared_maps)));
    keys.push_back(number_key("model.mla.ra_alpha", FIELD(model.mla.ra_alpha), at_least(0)));
    keys.push_back(int_key("model.mla.ra_band", FIELD(model.mla.ra_band), closed(0, 1 << 20), "0 means the full transpose"));
    keys.push_back(enum_key<MlaForm>("model.mla.form", FIELD(model.mla.form),
        {{"auto", MlaForm::auto_select}, {"latent", MlaForm::latent}, {"expanded", MlaForm::expanded}}));

    keys.push_back(bool_key("model.ract.enabled", FIELD(model.ract.enabled)));
    keys.push_back(enum_key<RactStat>("model.ract.stat", FIELD(model.ract.stat),
        {{"topk", RactStat::topk}, {"max", RactStat::max}, {"entropy", RactStat::entropy}, {"rms", RactStat::rms}}));
    keys.push_back(enum_key<RactApply>("model.ract.apply", FIELD(model.ract.apply),
        {{"output", RactApply::output}, {"weights", RactApply::weights}}));
    keys.push_back(int_key("model.ract.topk", FIELD(model.ract.topk), closed(1, 1 << 20)));
    keys.push_back(number_key("model.ract.alpha", FIELD(model.ract.alpha), closed(0, 1)));
    keys.push_back(bool_key("model.ract.head_average", FIELD(model.ract.head_average)));
    keys.push_back(bool_key("model.ract.detach", FIELD(model.ract.detach)));

    keys.push_back(bool_key("model.m1", FIELD(model.m1)));
    keys.push_back(bool_key("model.m2", FIELD(model.m2)));
    keys.push_back(bool_key("model.m3", FIELD(model.m3)));
    keys.push_back(int_key("model.m2_rank", FIELD(model.m2_rank), closed(1, 1 << 20)));

    keys.push_back(int_key("train.batch_size", FIELD(train.batch_size), closed(1, 1 << 16)));
    keys.push_back(int_key("train.seq_len", FIELD(train.seq_len), closed(1, 1 << 20)));
    keys.push_back(int_key("train.grad_accum", FIELD(train.grad_accum), closed(1, 1 << 16)));
    keys.push_back(int_key("train.max_iters", FIELD(train.max_iters), closed(0, std::numeric_limits<int>::max())));
    keys.push_back(int_key("train.eval_interval", FIELD(train.eval_interval), at_least(0), "0: only at the end"));
    keys.push_back(int_key("train.eval_batches", FIELD(train.eval_batches), at_least(1)));
    keys.push_back(int_key("train.log_interval", FIELD(train.log_interval), at_least(1)));
    keys.push_back(int_key("train.sample_interval", FIELD(train.sample_interval), at_least(0), "0: only at the end"));
    keys.push_back(int_key("train.sample_tokens", FIELD(train.sample_tokens), at_least(0), "0: no samples"));
    keys.push_back(int_key("train.checkpoint_interval", FIELD(train.checkpoint_interval), at_least(0), "0: only at the end"));
    keys.push_back(int_key("train.keep_checkpoints", FIELD(train.keep_checkpoints), at_least(1)));
    keys.push_back(seed_key("train.seed", FIELD(train.seed)));
    keys.push_back(word_key("train.precision", FIELD(train.precision), {"auto", "fp32", "bf16"}));
    keys.push_back(word_key("train.device", FIELD(train.device), {"auto", "cpu", "cuda"}));
    keys.push_back(string_key("train.out_dir", FIELD(train.out_dir)));
    keys.push_back(bool_key("train.resume", FIELD(train.resume)));
    keys.push_back(int_key("train.threads", FIELD(train.threads), closed(0, 4096), "0: all cores"));
    keys.push_back(bool_key("train.cuda_graph", FIELD(train.cuda_graph)));
    keys.push_back(int_key("train.gpus", FIELD(train.gpus), closed(1, 1024),
                           "data-parallel GPUs for one run; train.grad_accum micro-batches split evenly over them"));
    keys.push_back(enum_key<Recompute>("train.recompute", FIELD(train.recompute),
        {{"none", Recompute::none}, {"gelu", Recompute::gelu}, {"layernorm", Recompute::layernorm},
         {"both", Recompute::both}}));

    keys.push_back(enum_key<OptimizerKind>("train.optim.kind", FIELD(train.optim.kind),
        {{"adamw", OptimizerKind::adamw}, {"adamw_spam", OptimizerKind::adamw_spam}}));
    keys.push_back(number_key("train.optim.lr", FIELD(train.optim.lr), above(0)));
    keys.push_back(number_key("train.optim.min_lr", FIELD(train.optim.min_lr), at_least(0)));
    keys.push_back(int_key("train.optim.warmup_iters", FIELD(train.optim.warmup_iters), at_least(0)));
    keys.push_back(int_key("train.optim.lr_decay_iters", FIELD(train.optim.lr_decay_iters), at_least(0), "0 means train.max_iters"));
    keys.push_back(number_key("train.optim.weight_decay", FIELD(train.optim.weight_decay), at_least(0)));
    keys.push_back(number_key("train.optim.beta1", FIELD(train.optim.beta1), half_open(0, 1)));
    keys.push_back(number_key("train.optim.beta2", FIELD(train.optim.beta2), half_open(0, 1)));
    keys.push_back(number_key("train.optim.eps", FIELD(train.optim.eps), above(0)));
    keys.push_back(bool_key("train.optim.amsgrad", FIELD(train.optim.amsgrad)));
    keys.push_back(number_key("train.optim.grad_clip", FIELD(train.optim.grad_clip), at_least(0), "0 disables clipping"));
    keys.push_back(bool_key("train.optim.decay_embeddings", FIELD(train.optim.decay_embeddings)));
    keys.push_back(number_key("train.optim.spam_theta", FIELD(train.optim.spam_theta), above(0)));
    keys.push_back(int_key("train.optim.spam_interval", FIELD(train.optim.spam_interval), at_least(0), "0: never reset the moments"));
    keys.push_back(int_key("train.optim.spam_warmup", FIELD(train.optim.spam_warmup), at_least(0)));
    keys.push_back(number_key("train.optim.spam_spike_z", FIELD(train.optim.spam_spike_z), above(0)));
    keys.push_back(int_key("train.optim.spam_window", FIELD(train.optim.spam_window), at_least(2)));
    keys.push_back(number_key("train.optim.prune_sparsity", FIELD(train.optim.prune_sparsity), half_open(0, 1), "0 disables pruning"));

    keys.push_back(string_key("data.dataset", FIELD(data.dataset)));
    keys.push_back(string_key("data.train_path", FIELD(data.train_path)));
    keys.push_back(string_key("data.val_path", FIELD(data.val_path)));
    keys.push_back(string_key("data.tokenizer_dir", FIELD(data.tokenizer_dir)));

    keys.push_back(string_key("sample.prompt", FIELD(sample.prompt)));
    keys.push_back(int_key("sample.max_new_tokens", FIELD(sample.max_new_tokens), at_least(1)));
    keys.push_back(number_key("sample.temperature", FIELD(sample.temperature), above(0)));
    keys.push_back(int_key("sample.top_k", FIELD(sample.top_k), at_least(0), "0: no top-k cut"));
    keys.push_back(seed_key("sample.seed", FIELD(sample.seed)));

    keys.push_back(string_key("ablation.name", FIELD(ablation_name)));
    keys.push_back(int_list_key("ablation.steps", FIELD(ablation_steps), closed(0, kAblationStepCount - 1),
                                "the SPEC §4 table has steps 0 .. 18", true));
    keys.push_back(int_key("ablation.jobs", FIELD(ablation_jobs), closed(0, 1024),
                           "steps trained at once; 0: one per visible GPU (1 on the CPU)"));
    keys.push_back(int_list_key("ablation.devices", FIELD(ablation_devices), closed(0, 1023),
                                "CUDA device ordinals as nvidia-smi lists them; empty means all visible GPUs", false));
    {
        Key k = string_key("quality.arms", FIELD(quality_arms));
        k.check = [](const RunConfig& c) {   // each arm parses and names existing keys
            std::istringstream all(c.quality_arms);
            for (std::string spec; std::getline(all, spec, ';');) {
                if (spec.find_first_not_of(" \t\n") == std::string::npos) continue;
                RunConfig arm = c;
                arm.quality_arms.clear();
                for (const auto& kv : parse_config_arm(spec, "quality.arms").second) apply_override(arm, kv);
            }
        };
        keys.push_back(k);
    }
    keys.push_back(int_list_key("quality.seeds", FIELD(quality_seeds), closed(0, 1 << 30), "training seeds", true));
    return keys;
}

#undef FIELD

const std::vector<Key>& all_keys() {
    static const std::vector<Key> keys = build_keys();
    return keys;
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

std::string last_part(const std::string& key) {
    size_t dot = key.rfind('.');
    return dot == std::string::npos ? key : key.substr(dot + 1);
}

// The known key a typo most likely meant: the same last word in another section first
// ("train.lr" -> "train.optim.lr"), else the smallest edit distance.
std::string closest_key(const std::string& key) {
    std::string best;
    size_t best_distance = std::numeric_limits<size_t>::max();
    for (const auto& k : all_keys()) {
        size_t d = last_part(k.name) == last_part(key) ? 0 : 1 + edit_distance(k.name, key);
        if (d < best_distance) best_distance = d, best = k.name;
    }
    return best;
}

const Key& find_key(const std::string& key) {
    for (const auto& k : all_keys())
        if (k.name == key) return k;
    for (const auto& k : all_keys())
        if (k.name.rfind(key + ".", 0) == 0)
            fail("'" + key + "' is a section, not a value: write its keys below it (e.g. " + k.name + ")");
    fail("unknown key '" + key + "'; did you mean '" + closest_key(key) +
         "'? (docs/configuration.md lists every key)");
}

// ---- YAML -> (key, text) pairs ------------------------------------------------------------------

using KeyValues = std::vector<std::pair<std::string, std::string>>;

void flatten(const YAML::Node& node, const std::string& prefix, KeyValues& out) {
    for (const auto& item : node) {
        std::string name = item.first.as<std::string>();
        std::string key = prefix.empty() ? name : prefix + "." + name;
        const YAML::Node& value = item.second;
        switch (value.Type()) {
        case YAML::NodeType::Map: flatten(value, key, out); break;
        case YAML::NodeType::Null: out.emplace_back(key, ""); break;
        case YAML::NodeType::Scalar: out.emplace_back(key, value.Scalar()); break;
        case YAML::NodeType::Sequence: {
            std::vector<std::string> elements;
            for (const auto& element : value) {
                if (!element.IsScalar()) fail(key + ": expected a list of plain values");
                elements.push_back(element.Scalar());
            }
            std::string joined = join(elements, " ");
            if (find_key(key).style != Style::list) type_error(key, "a single value", "[" + joined + "]");
            out.emplace_back(key, joined);
            break;
        }
        default: fail(key + ": unsupported YAML value");
        }
    }
}

std::pair<std::string, std::string> split_override(const std::string& assignment) {
    size_t eq = assignment.find('=');
    if (eq == std::string::npos || trim(assignment.substr(0, eq)).empty())
        fail("override '" + assignment + "': expected key=value, e.g. train.optim.lr=3e-4");
    return {trim(assignment.substr(0, eq)), assignment.substr(eq + 1)};
}

bool job_reads_data(const std::string& job) {
    return job == "train" || job == "ablation" || job == "quality" || job == "eval" || job == "check";
}

bool is_mla(AttentionKind kind) { return kind == AttentionKind::mla || kind == AttentionKind::ra_mla; }

}  // namespace

std::vector<std::string> job_names() { return {"train", "ablation", "quality", "eval", "sample", "bench", "check"}; }

std::vector<std::string> run_config_keys() {
    std::vector<std::string> names;
    for (const auto& k : all_keys()) names.push_back(k.name);
    return names;
}

RunConfig default_run_config() {
    RunConfig c;
    c.job = "train";
    c.model = model_preset("gpt2-tiny");
    c.train.batch_size = 8;
    c.train.seq_len = 128;
    c.train.max_iters = 400;
    c.train.eval_interval = 50;
    c.train.eval_batches = 10;
    c.train.log_interval = 10;
    c.train.sample_tokens = 64;
    c.train.out_dir = "runs/default";
    c.train.optim.lr = 1e-3f;
    c.train.optim.min_lr = 1e-4f;
    c.train.optim.warmup_iters = 30;
    c.data.dataset = "sotu";
    c.data.train_path = "data/sotu/sotu_train_*.bin";
    c.data.val_path = "data/sotu/sotu_val_*.bin";
    c.data.tokenizer_dir = "assets/gpt2";
    return c;
}

void apply_override(RunConfig& config, const std::string& key, const std::string& value) {
    find_key(trim(key)).set(config, value);
}

void apply_override(RunConfig& config, const std::string& key_equals_value) {
    auto [key, value] = split_override(key_equals_value);
    apply_override(config, key, value);
}

RunConfig parse_run_config(const std::string& yaml_text, const std::string& source_name,
                           const std::vector<std::string>& overrides) {
    YAML::Node root;
    try {
        root = YAML::Load(yaml_text);
    } catch (const YAML::Exception& e) {
        fail(source_name + ": not valid YAML at line " + std::to_string(e.mark.line + 1) + ", column " +
             std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
    KeyValues from_file;
    if (root.IsMap()) {
        try {
            flatten(root, "", from_file);
        } catch (const YAML::Exception& e) {
            fail(source_name + ": unreadable entry at line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
        } catch (const Error& e) {
            fail(source_name + ": " + e.what());
        }
    } else if (!root.IsNull()) {
        fail(source_name + ": expected a YAML mapping of keys (job:, model:, train:, ...) at the top level");
    }
    KeyValues from_overrides;
    for (const auto& o : overrides) from_overrides.push_back(split_override(o));

    RunConfig config = default_run_config();
    auto apply_all = [&](const KeyValues& pairs, const std::string& origin, bool preset_pass) {
        for (const auto& [key, value] : pairs) {
            if ((key == "model.preset") != preset_pass) continue;
            try {
                apply_override(config, key, value);
            } catch (const Error& e) {
                fail(origin + ": " + e.what());
            }
        }
    };
    // The preset first (an override's preset wins), then the explicit keys, then the overrides.
    bool preset_overridden = std::any_of(from_overrides.begin(), from_overrides.end(),
                                         [](const auto& kv) { return kv.first == "model.preset"; });
    apply_all(preset_overridden ? from_overrides : from_file, preset_overridden ? "--set" : source_name, true);
    apply_all(from_file, source_name, false);
    apply_all(from_overrides, "--set", false);
    try {
        validate(config);
    } catch (const Error& e) {
        fail(source_name + ": " + e.what());
    }
    return config;
}

RunConfig load_run_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
    std::ifstream in(yaml_path);
    if (!in)
        fail(yaml_path + ": cannot read the run file; `make` writes run.yaml from .config (see `make help`), "
             "or pass an existing file with --config");
    std::stringstream text;
    text << in.rdbuf();
    return parse_run_config(text.str(), yaml_path, overrides);
}

void validate(const RunConfig& c) {
    for (const auto& k : all_keys())
        if (k.check) k.check(c);

    const ModelConfig& m = c.model;
    if (m.n_embd % m.n_head != 0)
        fail("model.n_embd: " + std::to_string(m.n_embd) + " is not divisible by model.n_head = " +
             std::to_string(m.n_head) + "; choose n_embd = n_head * head_dim");
    if (m.padded_vocab < m.vocab_size)
        fail("model.padded_vocab: " + std::to_string(m.padded_vocab) + " is smaller than model.vocab_size = " +
             std::to_string(m.vocab_size) + "; it must be >= vocab_size (50304 for GPT-2)");
    if (c.train.seq_len > m.block_size)
        fail("train.seq_len: " + std::to_string(c.train.seq_len) + " is larger than model.block_size = " +
             std::to_string(m.block_size) + "; allowed: 1 .. block_size");
    if (m.attention == AttentionKind::ra_lowrank) {
        if (m.ra.rank >= m.head_dim())
            fail("model.ra.rank: R = " + std::to_string(m.ra.rank) + " must be smaller than the head dimension D = "
                 "n_embd / n_head = " + std::to_string(m.head_dim()) + " for ra_lowrank; allowed: 1 .. " +
                 std::to_string(m.head_dim() - 1));
        if (m.ra.band != 0)
            fail("model.ra.band: a band (W = " + std::to_string(m.ra.band) +
                 ") is not supported with model.attention = ra_lowrank; set model.ra.band to 0");
        if (m.ra.lowrank_form == RaLowRankForm::weights && m.ra.discoverability)
            fail("model.ra.lowrank_form: the weights form cannot add the discoverability bias (it reads the "
                 "real keys, which that form never computes); set model.ra.lowrank_form to rows or auto, or "
                 "model.ra.discoverability to false");
    }
    if (m.ra.fold == RaFold::kernel) {
        if (const char* why = ra_fold_in_kernel_blocker(m))
            fail(std::string("model.ra.fold: kernel (the fold inside our attention kernels) cannot be used here: ") +
                 why + "; set model.ra.fold to auto or materialized");
    }
    if (m.m3 && !is_mla(m.attention))
        fail("model.m3: latent reciprocity (M3) needs MLA attention; set model.attention to mla or ra_mla, "
             "or model.m3 to false");
    if (m.m1 && m.n_layer < 2)
        fail("model.m1: the MLP->attention gate (M1) hands a gate from block l to block l+1 and needs "
             "model.n_layer >= 2; got " + std::to_string(m.n_layer));
    if (m.m3 && m.n_layer < 2)
        fail("model.m3: latent reciprocity (M3) hands k_lat terms from block l to block l+1 and needs "
             "model.n_layer >= 2; got " + std::to_string(m.n_layer));
    if (m.m2 && m.m2_rank > m.hidden())
        fail("model.m2_rank: " + std::to_string(m.m2_rank) + " is larger than the MLP hidden size " +
             std::to_string(m.hidden()) + "; allowed: 1 .. " + std::to_string(m.hidden()));

    const OptimConfig& o = c.train.optim;
    if (o.min_lr > o.lr)
        fail("train.optim.min_lr: " + format_number(o.min_lr) + " is larger than train.optim.lr = " +
             format_number(o.lr) + "; allowed: 0 <= min_lr <= lr");
    if (o.lr_decay_iters != 0 && o.lr_decay_iters <= o.warmup_iters)
        fail("train.optim.lr_decay_iters: " + std::to_string(o.lr_decay_iters) +
             " must be larger than train.optim.warmup_iters = " + std::to_string(o.warmup_iters) +
             " (or 0 to decay until train.max_iters)");
    if (c.train.gpus > 1) {
        if (c.train.device == "cpu")
            fail("train.gpus: " + std::to_string(c.train.gpus) + " GPUs asked for, but train.device is cpu; "
                 "data-parallel training runs on CUDA GPUs: set train.device to cuda (or auto) or train.gpus to 1");
        if (c.train.grad_accum % c.train.gpus != 0)
            fail("train.grad_accum: " + std::to_string(c.train.grad_accum) + " micro-batches per step cannot be split "
                 "evenly over train.gpus = " + std::to_string(c.train.gpus) + "; make grad_accum a multiple of gpus "
                 "(the global batch is grad_accum micro-batches of train.batch_size)");
    }
    if (c.train.precision == "bf16" && c.train.device == "cpu")
        fail("train.precision: bf16 needs the CUDA backend, but train.device is cpu; use fp32 or auto on the CPU");
    if (c.sample.top_k > m.vocab_size)
        fail("sample.top_k: " + std::to_string(c.sample.top_k) + " is larger than model.vocab_size = " +
             std::to_string(m.vocab_size) + "; allowed: 0 .. vocab_size");

    if (job_reads_data(c.job)) {
        for (const auto& [key, path] : {std::pair{"data.train_path", c.data.train_path},
                                        std::pair{"data.val_path", c.data.val_path}})
            if (trim(path).empty())
                fail(std::string(key) + ": empty, but job '" + c.job + "' reads token shards; set it to a shard "
                     "file, glob or directory (the embedded default data/sotu/sotu_*_*.bin is prepared by "
                     "`make` or `gpt2 prepare`)");
    }
    if (c.job == "quality" && c.quality_seeds.empty())
        fail("quality.seeds: empty, but job is 'quality'; list the seeds, e.g. \"1 2 3\" (3 or more for a useful test)");
    if (c.job == "ablation" && c.ablation_steps.empty())
        fail("ablation.steps: empty, but job is 'ablation'; list the steps to run, e.g. \"0 1 2\" or \"0-18\"");
}

namespace {

bool has_glob_chars(const std::string& path) { return path.find_first_of("*?[") != std::string::npos; }

// True when the path names at least one regular file: a file, a non-empty directory, or a glob
// pattern with a match.
bool path_has_files(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (has_glob_chars(path)) {
        glob_t matches{};
        int rc = ::glob(path.c_str(), 0, nullptr, &matches);
        bool found = rc == 0 && matches.gl_pathc > 0;
        globfree(&matches);
        return found;
    }
    if (fs::is_directory(path, ec)) {
        for (const auto& entry : fs::directory_iterator(path, ec))
            if (entry.is_regular_file(ec)) return true;
        return false;
    }
    return fs::is_regular_file(path, ec);
}

std::string how_to_prepare(const RunConfig& c, const std::string& path) {
    if (c.data.dataset == "sotu" || path.rfind("data/sotu/", 0) == 0)
        return "`make` prepares it, or run `build/gpt2 prepare --input assets/corpus/sotu.jsonl --out data/sotu "
               "--name sotu` (tools/fetch_assets.sh fetches the corpus)";
    return "prepare token shards with `build/gpt2 prepare --input <text or .jsonl files> --out <dir> --name <name>`, "
           "or point it at existing llm.c-format shards (for FineWeb: llm.c's dev/data/fineweb.py writes "
           "fineweb_train_*.bin / fineweb_val_*.bin)";
}

}  // namespace

void check_data_files(const RunConfig& c) {
    if (job_reads_data(c.job)) {
        for (const auto& [key, path] : {std::pair{"data.train_path", c.data.train_path},
                                        std::pair{"data.val_path", c.data.val_path}})
            if (!path_has_files(path))
                fail(std::string(key) + ": no token shard found at '" + path + "'; " + how_to_prepare(c, path));
    }
    bool writes_text = c.job == "sample" ||
                       ((c.job == "train" || c.job == "ablation" || c.job == "quality") && c.train.sample_tokens > 0);
    if (writes_text) {
        for (const char* file : {"encoder.json", "vocab.bpe"}) {
            std::string path = (std::filesystem::path(c.data.tokenizer_dir) / file).string();
            if (!path_has_files(path))
                fail("data.tokenizer_dir: '" + path + "' is missing; run tools/fetch_assets.sh (or `make`, which "
                     "calls it) to fetch the GPT-2 tokenizer files");
        }
    }
}

std::string to_yaml(const RunConfig& config) {
    YAML::Emitter out;
    out << YAML::Comment("gpt2 run file: every key is listed in docs/configuration.md");
    out << YAML::BeginMap;
    std::vector<std::string> open;   // the sections (nested maps) currently open
    for (const auto& k : all_keys()) {
        std::vector<std::string> parts;
        std::istringstream path(k.name);
        for (std::string part; std::getline(path, part, '.');) parts.push_back(part);
        std::vector<std::string> sections(parts.begin(), parts.end() - 1);
        size_t common = 0;
        while (common < open.size() && common < sections.size() && open[common] == sections[common]) ++common;
        for (; open.size() > common; open.pop_back()) out << YAML::EndMap;
        for (; open.size() < sections.size(); open.push_back(sections[open.size()]))
            out << YAML::Key << sections[open.size()] << YAML::Value << YAML::BeginMap;
        out << YAML::Key << parts.back() << YAML::Value;
        std::string value = k.get(config);
        switch (k.style) {
        case Style::plain: out << value; break;
        case Style::quoted: out << YAML::DoubleQuoted << value; break;
        case Style::list:
            out << YAML::Flow << YAML::BeginSeq;
            for (int s : config.ablation_steps) out << s;
            out << YAML::EndSeq;
            break;
        }
    }
    for (; !open.empty(); open.pop_back()) out << YAML::EndMap;
    out << YAML::EndMap;
    return std::string(out.c_str()) + "\n";
}

}  // namespace gpt
