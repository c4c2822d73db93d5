// The run configuration: YAML in and out, overrides, presets, and an error that names the key for
// every kind of mistake.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/error.h"
#include "train/config_io.h"

namespace fs = std::filesystem;
using namespace gpt;

namespace {

// The message of the gpt::Error that `action` throws; fails the test when nothing is thrown.
template <class Action>
std::string error_of(Action&& action) {
    try {
        action();
    } catch (const Error& e) {
        return e.what();
    }
    FAIL("expected a gpt::Error");
    return "";
}

std::string parse_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
    return error_of([&] { parse_run_config(yaml, "test.yaml", overrides); });
}

std::string override_error(const std::string& key, const std::string& value) {
    return error_of([&] {
        RunConfig c = default_run_config();
        apply_override(c, key, value);
        validate(c);
    });
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

fs::path scratch_dir(const std::string& name) {
    fs::path dir = fs::temp_directory_path() / ("gpt_test_config_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

const char* kPython = "/usr/bin/python3";
const std::string kSource = GPT_SOURCE_DIR;

bool have_kconfiglib() {
    return fs::exists(kPython) && std::system("/usr/bin/python3 -c 'import kconfiglib' >/dev/null 2>&1") == 0;
}

// Runs tools/kconfig2yaml.py on a defconfig and loads the result.
RunConfig convert_defconfig(const std::string& name, const fs::path& dir) {
    fs::path out = dir / (name + ".yaml");
    std::string cmd = std::string(kPython) + " '" + kSource + "/tools/kconfig2yaml.py' --strict --kconfig '" + kSource +
                      "/Kconfig' '" + kSource + "/defconfigs/" + name + "' '" + out.string() + "'";
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
    return load_run_config(out.string());
}

}  // namespace

TEST_CASE("config: the embedded default validates and has the documented shape") {
    RunConfig c = default_run_config();
    CHECK_NOTHROW(validate(c));
    CHECK(c.job == "train");
    CHECK(c.model.preset == "gpt2-tiny");
    CHECK(c.model.n_layer == 4);
    CHECK(c.model.n_embd == 128);
    CHECK(c.train.seq_len <= c.model.block_size);
    CHECK(c.data.train_path == "data/sotu/sotu_train_*.bin");
    CHECK(c.data.val_path == "data/sotu/sotu_val_*.bin");
}

TEST_CASE("config: presets give the SPEC shapes and explicit keys override them") {
    struct Shape { const char* name; int layers, width, heads; };
    for (Shape s : {Shape{"gpt2", 12, 768, 12}, Shape{"gpt2-medium", 24, 1024, 16},
                    Shape{"gpt2-large", 36, 1280, 20}, Shape{"gpt2-xl", 48, 1600, 25}}) {
        CAPTURE(s.name);
        ModelConfig m = model_preset(s.name);
        CHECK(m.n_layer == s.layers);
        CHECK(m.n_embd == s.width);
        CHECK(m.n_head == s.heads);
        CHECK(m.block_size == 1024);
        CHECK(m.head_dim() == 64);
        CHECK(m.hidden() == 4 * s.width);
        CHECK(m.preset == s.name);
    }
    for (const auto& name : model_preset_names()) {
        RunConfig c = default_run_config();
        c.model = model_preset(name);
        CAPTURE(name);
        CHECK_NOTHROW(validate(c));
    }
    RunConfig c = parse_run_config("model:\n  preset: gpt2\n  n_layer: 2\n");
    CHECK(c.model.n_layer == 2);    // explicit key wins, wherever it stands in the file
    CHECK(c.model.n_embd == 768);
    RunConfig d = parse_run_config("model:\n  n_layer: 3\n  preset: gpt2-medium\n");
    CHECK(d.model.n_layer == 3);
    CHECK(d.model.n_embd == 1024);
    std::string e = error_of([] { model_preset("gpt3"); });
    CHECK(contains(e, "model.preset"));
    CHECK(contains(e, "gpt2-medium"));
}

TEST_CASE("config: to_yaml round-trips every key") {
    RunConfig c = default_run_config();
    c.job = "ablation";
    c.model = model_preset("gpt2-mini");
    c.model.attention = AttentionKind::ra_mla;
    c.model.mlp_hidden = 960;
    c.model.dropout = 0.1f;
    c.model.ra.gates = GateScope::per_layer;
    c.model.ra.learnable = false;
    c.model.ra.g_rec = 0.25f;
    c.model.ra.route_threshold = -0.5f;
    c.model.mla.latent = 96;
    c.model.mla.ra_alpha = 0.3f;
    c.model.ract.enabled = true;
    c.model.ract.stat = RactStat::entropy;
    c.model.ract.apply = RactApply::weights;
    c.model.m1 = c.model.m2 = c.model.m3 = true;
    c.model.m2_rank = 64;
    c.train.optim.kind = OptimizerKind::adamw_spam;
    c.train.optim.lr = 3e-4f;
    c.train.optim.min_lr = 3e-5f;
    c.train.optim.eps = 1e-8f;
    c.train.optim.beta2 = 0.999f;
    c.train.seed = 18446744073709551615ull;
    c.train.precision = "bf16";
    c.train.device = "cuda";
    c.train.out_dir = "runs/with: colon # and hash";
    c.sample.prompt = "Mr. Speaker,\n\t\"quoted\" text";
    c.data.train_path = "data/x/train_*.bin";
    c.ablation_name = "mini";
    c.ablation_steps = {0, 5, 18};
    std::string text = to_yaml(c);
    RunConfig back = parse_run_config(text, "roundtrip.yaml");
    CHECK(to_yaml(back) == text);
    CHECK(back.model.attention == AttentionKind::ra_mla);
    CHECK(back.model.ra.gates == GateScope::per_layer);
    CHECK(back.model.ract.stat == RactStat::entropy);
    CHECK(back.train.optim.lr == c.train.optim.lr);
    CHECK(back.train.optim.min_lr == c.train.optim.min_lr);
    CHECK(back.model.ra.route_threshold == c.model.ra.route_threshold);
    CHECK(back.train.seed == c.train.seed);
    CHECK(back.sample.prompt == c.sample.prompt);
    CHECK(back.train.out_dir == c.train.out_dir);
    CHECK(back.ablation_steps == std::vector<int>{0, 5, 18});
    // Every key appears once in the output.
    for (const auto& key : run_config_keys()) {
        std::string leaf = key.substr(key.rfind('.') + 1) + ":";
        CAPTURE(key);
        CHECK(contains(text, leaf));
    }
}

TEST_CASE("config: load_run_config reads a file and applies overrides last") {
    fs::path dir = scratch_dir("load");
    fs::path file = dir / "run.yaml";
    std::ofstream(file) << "job: train\nmodel:\n  attention: ra\ntrain:\n  max_iters: 7\n  optim:\n    lr: 1e-3\n";
    RunConfig c = load_run_config(file.string(), {"train.optim.lr=3e-4", "model.attention=mla", "ablation.steps=1-3,7"});
    CHECK(c.train.max_iters == 7);
    CHECK(c.train.optim.lr == doctest::Approx(3e-4));
    CHECK(c.model.attention == AttentionKind::mla);
    CHECK(c.ablation_steps == std::vector<int>{1, 2, 3, 7});
    // An overridden preset is applied before the file's explicit keys.
    RunConfig p = load_run_config(file.string(), {"model.preset=gpt2"});
    CHECK(p.model.n_embd == 768);
    RunConfig q = default_run_config();
    apply_override(q, "model.preset=gpt2-xl");
    CHECK(q.model.n_head == 25);
    CHECK(contains(error_of([&] { load_run_config((dir / "missing.yaml").string()); }), "missing.yaml"));
    CHECK(contains(error_of([&] { apply_override(q, "train.max_iters"); }), "key=value"));
    fs::remove_all(dir);
}

TEST_CASE("config: an unknown key names the closest known key") {
    std::string e = parse_error("train:\n  lr: 0.1\n");
    CHECK(contains(e, "test.yaml"));
    CHECK(contains(e, "'train.lr'"));
    CHECK(contains(e, "train.optim.lr"));
    CHECK(contains(override_error("model.n_layers", "3"), "model.n_layer"));
    CHECK(contains(override_error("modle.attention", "ra"), "model.attention"));
    e = parse_error("model: gpt2\n");
    CHECK(contains(e, "'model' is a section"));
    CHECK(contains(e, "model.preset"));
}

TEST_CASE("config: a value of the wrong type names the key, the type and the text") {
    CHECK(contains(override_error("train.batch_size", "abc"), "train.batch_size: expected an integer, got 'abc'"));
    CHECK(contains(override_error("train.batch_size", "8.5"), "train.batch_size: expected an integer"));
    CHECK(contains(override_error("train.optim.lr", "fast"), "train.optim.lr: expected a number"));
    CHECK(contains(override_error("train.optim.lr", "nan"), "train.optim.lr"));
    CHECK(contains(override_error("model.m1", "maybe"), "model.m1: expected a boolean"));
    CHECK(contains(override_error("train.seed", "-1"), "train.seed: expected a non-negative integer"));
    CHECK(contains(override_error("train.max_iters", "99999999999"), "train.max_iters"));
    CHECK(contains(parse_error("train:\n  batch_size: [1, 2]\n"), "train.batch_size: expected a single value"));
    CHECK(contains(parse_error("train: [\n"), "test.yaml: not valid YAML at line"));
    CHECK(contains(parse_error("- just\n- a list\n"), "top level"));
}

TEST_CASE("config: a value out of range names the key and the allowed range") {
    std::string e = override_error("train.optim.beta1", "1.5");
    CHECK(contains(e, "train.optim.beta1: 1.5 is out of range"));
    CHECK(contains(e, "0 <= value < 1"));
    CHECK(contains(override_error("train.batch_size", "0"), "train.batch_size: 0 is out of range; allowed: 1 <= value"));
    CHECK(contains(override_error("model.dropout", "1"), "model.dropout"));
    CHECK(contains(override_error("train.optim.lr", "0"), "train.optim.lr"));
    CHECK(contains(override_error("train.optim.prune_sparsity", "-0.5"), "train.optim.prune_sparsity"));
    CHECK(contains(override_error("train.optim.min_lr", "1"), "train.optim.min_lr: 1 is larger than train.optim.lr"));
    CHECK(contains(override_error("sample.temperature", "0"), "sample.temperature"));
}

TEST_CASE("config: an enum value that is not allowed lists the allowed ones") {
    std::string e = override_error("model.attention", "flash");
    CHECK(contains(e, "model.attention: 'flash' is not allowed"));
    CHECK(contains(e, "baseline, ra, ra_lowrank, mla, ra_mla"));
    CHECK(contains(override_error("job", "fly"), "train, ablation, quality, eval, sample, bench, check"));
    CHECK(contains(override_error("train.precision", "fp16"), "auto, fp32, bf16"));
    CHECK(contains(override_error("train.device", "tpu"), "auto, cpu, cuda"));
    CHECK(contains(override_error("model.ract.stat", "mean"), "topk, max, entropy, rms"));
    CHECK(contains(override_error("train.optim.kind", "sgd"), "adamw, adamw_spam"));
    CHECK(contains(override_error("model.preset", "gpt5"), "model.preset"));
    RunConfig c = default_run_config();
    c.train.device = "gpu";   // set in code, bypassing the parser: validate() still catches it
    CHECK(contains(error_of([&] { validate(c); }), "train.device: 'gpu' is not allowed"));
}

TEST_CASE("config: shape rules between keys name both keys") {
    std::string e = parse_error("model:\n  preset: custom\n  n_embd: 130\n  n_head: 4\n");
    CHECK(contains(e, "model.n_embd: 130 is not divisible by model.n_head = 4"));
    e = override_error("train.seq_len", "512");
    CHECK(contains(e, "train.seq_len: 512 is larger than model.block_size = 256"));
    CHECK(contains(override_error("model.padded_vocab", "50000"), "model.padded_vocab"));
    CHECK(contains(override_error("sample.top_k", "60000"), "sample.top_k"));
    CHECK(contains(parse_error("train:\n  optim:\n    warmup_iters: 100\n    lr_decay_iters: 50\n"),
                   "train.optim.lr_decay_iters"));
}

TEST_CASE("config: incompatible options are refused with the fix") {
    std::string e = parse_error("model:\n  m3: true\n");
    CHECK(contains(e, "model.m3"));
    CHECK(contains(e, "mla or ra_mla"));
    CHECK_NOTHROW(parse_run_config("model:\n  m3: true\n  attention: mla\n"));
    // head dim 128 / 4 = 32
    e = parse_error("model:\n  attention: ra_lowrank\n  ra:\n    rank: 32\n");
    CHECK(contains(e, "model.ra.rank: R = 32 must be smaller than the head dimension D"));
    CHECK(contains(e, "1 .. 31"));
    CHECK_NOTHROW(parse_run_config("model:\n  attention: ra_lowrank\n  ra:\n    rank: 16\n"));
    e = parse_error("model:\n  attention: ra_lowrank\n  ra:\n    band: 64\n");
    CHECK(contains(e, "model.ra.band"));
    CHECK(contains(e, "not supported with model.attention = ra_lowrank"));
    CHECK(contains(parse_error("model:\n  m1: true\n  preset: custom\n  n_layer: 1\n"), "model.m1"));
    CHECK(contains(parse_error("model:\n  m2: true\n  m2_rank: 4096\n"), "model.m2_rank"));
    CHECK(contains(parse_error("train:\n  device: cpu\n  precision: bf16\n"), "train.precision: bf16 needs"));
}

TEST_CASE("config: the ablation step list is checked against the 19-step table") {
    CHECK(contains(override_error("ablation.steps", "0 5 19"), "ablation.steps: 19 is out of range"));
    CHECK(contains(override_error("ablation.steps", "3 3"), "ablation.steps: 3 is listed twice"));
    CHECK(contains(override_error("ablation.steps", "0 x"), "ablation.steps: expected an integer, got 'x'"));
    CHECK(contains(override_error("ablation.steps", "5-2"), "ablation.steps"));
    CHECK(contains(parse_error("job: ablation\nablation:\n  steps: []\n"), "ablation.steps: empty"));
    RunConfig c = parse_run_config("job: ablation\nablation:\n  steps: \"0-18\"\n");
    CHECK(c.ablation_steps.size() == 19);
    CHECK(c.ablation_steps.back() == 18);
}

TEST_CASE("config: a job that reads data needs its paths, and check_data_files names the fix") {
    std::string e = parse_error("data:\n  train_path: \"\"\n");
    CHECK(contains(e, "data.train_path: empty"));
    CHECK(contains(e, "gpt2 prepare"));
    CHECK_NOTHROW(parse_run_config("job: sample\ndata:\n  train_path: \"\"\n"));

    fs::path dir = scratch_dir("data");
    RunConfig c = default_run_config();
    c.data.train_path = (dir / "sotu_train_*.bin").string();
    c.data.val_path = (dir / "sotu_val_000000.bin").string();
    c.data.tokenizer_dir = (dir / "tok").string();
    e = error_of([&] { check_data_files(c); });
    CHECK(contains(e, "data.train_path"));
    CHECK(contains(e, c.data.train_path));
    CHECK(contains(e, "`make` prepares it"));
    std::ofstream(dir / "sotu_train_000001.bin") << "x";
    e = error_of([&] { check_data_files(c); });
    CHECK(contains(e, "data.val_path"));
    std::ofstream(dir / "sotu_val_000000.bin") << "x";
    e = error_of([&] { check_data_files(c); });
    CHECK(contains(e, "encoder.json"));
    CHECK(contains(e, "fetch_assets.sh"));
    fs::create_directories(dir / "tok");
    std::ofstream(dir / "tok" / "encoder.json") << "{}";
    std::ofstream(dir / "tok" / "vocab.bpe") << "x";
    CHECK_NOTHROW(check_data_files(c));
    c.data.dataset = "fineweb";
    c.data.train_path = (dir / "fineweb").string();   // an empty directory holds no shard
    fs::create_directories(c.data.train_path);
    e = error_of([&] { check_data_files(c); });
    CHECK(contains(e, "fineweb.py"));
    fs::remove_all(dir);
}

TEST_CASE("config: every defconfig converts through Kconfig and validates") {
    if (!have_kconfiglib()) {
        MESSAGE("skipped: /usr/bin/python3 with kconfiglib is not available (tools/setup.sh installs it)");
        return;
    }
    fs::path dir = scratch_dir("defconfigs");
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(kSource + "/defconfigs")) names.insert(entry.path().filename());
    CHECK(names.count("default") == 1);
    CHECK(names.count("gpt2-124m") == 1);
    for (const auto& name : names) {
        CAPTURE(name);
        RunConfig c = convert_defconfig(name, dir);
        CHECK_NOTHROW(validate(c));
    }

    RunConfig d = convert_defconfig("default", dir);
    CHECK(to_yaml(d) == to_yaml(default_run_config()));

    RunConfig big = convert_defconfig("gpt2-124m", dir);
    CHECK(big.model.n_layer == 12);
    CHECK(big.train.seq_len == 1024);
    CHECK(big.data.train_path == "data/fineweb10B/fineweb_train_*.bin");

    RunConfig abl = convert_defconfig("gpt2-ratio-ablation", dir);
    CHECK(abl.job == "ablation");
    CHECK(abl.ablation_steps.size() == 19);
    CHECK(abl.model.dropout == doctest::Approx(0.1));
    CHECK(abl.model.mla.latent == 128);
    CHECK(abl.model.mla.ra_band == 64);
    CHECK(abl.train.optim.kind == OptimizerKind::adamw_spam);
    CHECK(abl.train.optim.beta2 == doctest::Approx(0.999));
    CHECK(abl.train.precision == "bf16");
    CHECK(abl.train.batch_size * abl.train.grad_accum * abl.train.seq_len == 65536);
    CHECK(abl.train.max_iters == 10400);
    CHECK(abl.train.optim.warmup_iters == 2000);

    RunConfig rec = convert_defconfig("gpt2-ratio-ablation-reciprocal", dir);
    CHECK(rec.ablation_steps == std::vector<int>{3, 4, 7, 10, 12, 16});
    CHECK(to_yaml(rec).substr(to_yaml(rec).find("model:")) .find("preset: gpt2") != std::string::npos);

    RunConfig mini = convert_defconfig("gpt2-ratio-ablation-mini", dir);
    CHECK(mini.ablation_steps.size() == 19);
    CHECK(mini.data.dataset == "sotu");
    fs::remove_all(dir);
}

TEST_CASE("config: Kconfig, the converter and docs/configuration.md cover every key") {
    std::string docs = read_text(kSource + "/docs/configuration.md");
    for (const auto& key : run_config_keys()) {
        CAPTURE(key);
        CHECK(contains(docs, "`" + key + "`"));
    }
    if (!have_kconfiglib()) {
        MESSAGE("skipped the Kconfig half: /usr/bin/python3 with kconfiglib is not available");
        return;
    }
    fs::path dir = scratch_dir("keys");
    std::string cmd = std::string(kPython) + " '" + kSource + "/tools/kconfig2yaml.py' --list-keys > '" +
                      (dir / "keys.txt").string() + "'";
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::istringstream listed(read_text(dir / "keys.txt"));
    std::vector<std::string> converter_keys;
    for (std::string line; std::getline(listed, line);) converter_keys.push_back(line);
    CHECK(converter_keys == run_config_keys());
    cmd = std::string(kPython) + " '" + kSource + "/tools/kconfig2yaml.py' --lint --kconfig '" + kSource + "/Kconfig'";
    CHECK(std::system(cmd.c_str()) == 0);   // every symbol has help text and a YAML key
    fs::remove_all(dir);
}
