#!/usr/bin/python3
"""Turns a Kconfig .config (or a defconfig) into the YAML run file the program reads.

Usage:
  /usr/bin/python3 tools/kconfig2yaml.py [--kconfig Kconfig] [--strict] CONFIG OUT.yaml
  /usr/bin/python3 tools/kconfig2yaml.py --list-keys     # every YAML key this script can write
  /usr/bin/python3 tools/kconfig2yaml.py --lint          # every symbol has help and a YAML key

The YAML keys are the fields of src/model/config.h (docs/configuration.md lists them). A key
whose Kconfig symbol is hidden (its `depends on` is not met) is left out: the program then uses
its default. It needs Debian's python3-kconfiglib, so run it with /usr/bin/python3.
"""
import argparse
import json
import os
import re
import sys

try:
    import kconfiglib
except ImportError:
    sys.exit("kconfig2yaml.py: the Python module kconfiglib is missing; install python3-kconfiglib "
             "(tools/setup.sh does) and run this script with /usr/bin/python3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- how each YAML key is read from the symbols ---------------------------------------------------

class Choice:
    """A Kconfig choice: the selected symbol's name maps to the YAML value."""
    def __init__(self, values):
        self.values = values          # symbol name -> YAML word
        self.symbols = list(values)


class Sym:
    """One symbol: kind is int, bool, number (a string symbol holding a float), string or steps."""
    def __init__(self, name, kind):
        self.name, self.kind = name, kind
        self.symbols = [name]


def choice(prefix, words):
    return Choice({prefix + w.upper().replace("-", "_"): w for w in words})


PRESETS = {"MODEL_PRESET_GPT2_TINY": "gpt2-tiny", "MODEL_PRESET_GPT2_MINI": "gpt2-mini",
           "MODEL_PRESET_GPT2": "gpt2", "MODEL_PRESET_GPT2_MEDIUM": "gpt2-medium",
           "MODEL_PRESET_GPT2_LARGE": "gpt2-large", "MODEL_PRESET_GPT2_XL": "gpt2-xl",
           "MODEL_PRESET_CUSTOM": "custom"}

# In the order of the run file (and of src/train/config_io.cpp).
KEYS = [
    ("job", choice("JOB_", ["train", "ablation", "quality", "eval", "sample", "bench", "check"])),
    ("model.preset", Choice(PRESETS)),
    ("model.n_layer", Sym("MODEL_N_LAYER", "int")),
    ("model.n_embd", Sym("MODEL_N_EMBD", "int")),
    ("model.n_head", Sym("MODEL_N_HEAD", "int")),
    ("model.vocab_size", Sym("MODEL_VOCAB_SIZE", "int")),
    ("model.padded_vocab", Sym("MODEL_PADDED_VOCAB", "int")),
    ("model.block_size", Sym("MODEL_BLOCK_SIZE", "int")),
    ("model.mlp_hidden", Sym("MODEL_MLP_HIDDEN", "int")),
    ("model.dropout", Sym("MODEL_DROPOUT", "number")),
    ("model.attention", choice("ATTENTION_", ["baseline", "ra", "ra_lowrank", "mla", "ra_mla"])),
    ("model.attention_impl", choice("ATTENTION_IMPL_", ["auto", "ours", "cudnn", "cudnn_nondeterministic"])),
    ("model.ra.band", Sym("RA_BAND", "int")),
    ("model.ra.gates", choice("RA_GATES_", ["per_head", "per_layer"])),
    ("model.ra.learnable", Sym("RA_LEARNABLE", "bool")),
    ("model.ra.g_std", Sym("RA_G_STD", "number")),
    ("model.ra.g_rec", Sym("RA_G_REC", "number")),
    ("model.ra.rank", Sym("RA_RANK", "int")),
    ("model.ra.lowrank_form", choice("RA_LOWRANK_FORM_", ["auto", "rows", "weights"])),
    ("model.ra.fold", choice("RA_FOLD_", ["auto", "materialized", "kernel"])),
    ("model.ra.route_threshold", Sym("RA_ROUTE_THRESHOLD", "number")),
    ("model.ra.discoverability", Sym("RA_DISCOVERABILITY", "bool")),
    ("model.mla.latent", Sym("MLA_LATENT", "int")),
    ("model.mla.shared_maps", Sym("MLA_SHARED_MAPS", "bool")),
    ("model.mla.ra_alpha", Sym("MLA_RA_ALPHA", "number")),
    ("model.mla.ra_band", Sym("MLA_RA_BAND", "int")),
    ("model.mla.form", choice("MLA_FORM_", ["auto", "latent", "expanded"])),
    ("model.ract.enabled", Sym("RACT_ENABLED", "bool")),
    ("model.ract.stat", choice("RACT_STAT_", ["topk", "max", "entropy", "rms"])),
    ("model.ract.apply", choice("RACT_APPLY_", ["output", "weights"])),
    ("model.ract.topk", Sym("RACT_TOPK", "int")),
    ("model.ract.alpha", Sym("RACT_ALPHA", "number")),
    ("model.ract.head_average", Sym("RACT_HEAD_AVERAGE", "bool")),
    ("model.ract.detach", Sym("RACT_DETACH", "bool")),
    ("model.m1", Sym("MLP_M1", "bool")),
    ("model.m2", Sym("MLP_M2", "bool")),
    ("model.m3", Sym("MLP_M3", "bool")),
    ("model.m2_rank", Sym("MLP_M2_RANK", "int")),
    ("train.batch_size", Sym("TRAIN_BATCH_SIZE", "int")),
    ("train.seq_len", Sym("TRAIN_SEQ_LEN", "int")),
    ("train.grad_accum", Sym("TRAIN_GRAD_ACCUM", "int")),
    ("train.max_iters", Sym("TRAIN_MAX_ITERS", "int")),
    ("train.eval_interval", Sym("TRAIN_EVAL_INTERVAL", "int")),
    ("train.eval_batches", Sym("TRAIN_EVAL_BATCHES", "int")),
    ("train.log_interval", Sym("TRAIN_LOG_INTERVAL", "int")),
    ("train.sample_interval", Sym("TRAIN_SAMPLE_INTERVAL", "int")),
    ("train.sample_tokens", Sym("TRAIN_SAMPLE_TOKENS", "int")),
    ("train.checkpoint_interval", Sym("TRAIN_CHECKPOINT_INTERVAL", "int")),
    ("train.keep_checkpoints", Sym("TRAIN_KEEP_CHECKPOINTS", "int")),
    ("train.seed", Sym("SEED", "int")),
    ("train.precision", choice("PRECISION_", ["auto", "fp32", "bf16"])),
    ("train.device", choice("DEVICE_", ["auto", "cpu", "cuda"])),
    ("train.out_dir", Sym("OUT_DIR", "string")),
    ("train.resume", Sym("TRAIN_RESUME", "bool")),
    ("train.threads", Sym("THREADS", "int")),
    ("train.cuda_graph", Sym("CUDA_GRAPH", "bool")),
    ("train.gpus", Sym("TRAIN_GPUS", "int")),
    ("train.recompute", choice("RECOMPUTE_", ["none", "gelu", "layernorm", "both"])),
    ("train.optim.kind", choice("OPTIM_", ["adamw", "adamw_spam"])),
    ("train.optim.lr", Sym("OPTIM_LR", "number")),
    ("train.optim.min_lr", Sym("OPTIM_MIN_LR", "number")),
    ("train.optim.warmup_iters", Sym("OPTIM_WARMUP_ITERS", "int")),
    ("train.optim.lr_decay_iters", Sym("OPTIM_LR_DECAY_ITERS", "int")),
    ("train.optim.weight_decay", Sym("OPTIM_WEIGHT_DECAY", "number")),
    ("train.optim.beta1", Sym("OPTIM_BETA1", "number")),
    ("train.optim.beta2", Sym("OPTIM_BETA2", "number")),
    ("train.optim.eps", Sym("OPTIM_EPS", "number")),
    ("train.optim.amsgrad", Sym("OPTIM_AMSGRAD", "bool")),
    ("train.optim.grad_clip", Sym("OPTIM_GRAD_CLIP", "number")),
    ("train.optim.decay_embeddings", Sym("OPTIM_DECAY_EMBEDDINGS", "bool")),
    ("train.optim.spam_theta", Sym("OPTIM_SPAM_THETA", "number")),
    ("train.optim.spam_interval", Sym("OPTIM_SPAM_INTERVAL", "int")),
    ("train.optim.spam_warmup", Sym("OPTIM_SPAM_WARMUP", "int")),
    ("train.optim.spam_spike_z", Sym("OPTIM_SPAM_SPIKE_Z", "number")),
    ("train.optim.spam_window", Sym("OPTIM_SPAM_WINDOW", "int")),
    ("train.optim.prune_sparsity", Sym("OPTIM_PRUNE_SPARSITY", "number")),
    ("data.dataset", Sym("DATA_NAME", "string")),
    ("data.train_path", Sym("DATA_TRAIN_PATH", "string")),
    ("data.val_path", Sym("DATA_VAL_PATH", "string")),
    ("data.tokenizer_dir", Sym("DATA_TOKENIZER_DIR", "string")),
    ("sample.prompt", Sym("SAMPLE_PROMPT", "string")),
    ("sample.max_new_tokens", Sym("SAMPLE_MAX_NEW_TOKENS", "int")),
    ("sample.temperature", Sym("SAMPLE_TEMPERATURE", "number")),
    ("sample.top_k", Sym("SAMPLE_TOP_K", "int")),
    ("sample.seed", Sym("SAMPLE_SEED", "int")),
    ("ablation.name", Sym("ABLATION_NAME", "string")),
    ("ablation.steps", Sym("ABLATION_STEPS", "steps")),
    ("ablation.jobs", Sym("ABLATION_JOBS", "int")),
    ("ablation.devices", Sym("ABLATION_DEVICES", "steps")),
    ("quality.arms", Sym("QUALITY_ARMS", "string")),
    ("quality.seeds", Sym("QUALITY_SEEDS", "steps")),
]

# The embedded corpus: choosing it fixes the data keys (the Makefile prepares these shards).
SOTU_DATA = {"data.dataset": "sotu", "data.train_path": "data/sotu/sotu_train_*.bin",
             "data.val_path": "data/sotu/sotu_val_*.bin"}
# Symbols that steer the conversion without a key of their own.
CONTROL_SYMBOLS = {"DATA_SOTU", "DATA_CUSTOM"}

NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def yaml_scalar(text):
    """Plain when it reads back as the same text, else a double-quoted (JSON-escaped) string."""
    if NUMBER.match(text) or text in ("true", "false"):
        return text
    return json.dumps(text, ensure_ascii=False)


def parse_steps(text):
    """'0 1 2', '0,1,2' or '0-18' -> [0, 1, 2, ...]; None when it is not such a list."""
    steps = []
    for word in text.replace(",", " ").split():
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", word)
        if not m:
            return None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            return None
        steps.extend(range(lo, hi + 1))
    return steps


def key_value(kconf, key, spec):
    """The YAML text of one key, or None when its symbol is hidden."""
    if isinstance(spec, Choice):
        sym = kconf.syms[spec.symbols[0]]
        ch = sym.choice
        if ch is None or ch.visibility == 0 or ch.selection is None:
            return None
        return spec.values[ch.selection.name]
    sym = kconf.syms[spec.name]
    if sym.visibility == 0:
        return None
    value = sym.str_value
    if spec.kind == "bool":
        return "true" if value == "y" else "false"
    if spec.kind == "int":
        return value
    if spec.kind == "number":
        return yaml_scalar(value.strip())
    if spec.kind == "steps":
        steps = parse_steps(value)
        # Not a list of numbers: pass the text on; the program names the key and the problem.
        return "[" + ", ".join(map(str, steps)) + "]" if steps is not None else yaml_scalar(value)
    if key == "sample.prompt":
        value = value.replace("\\n", "\n")
    return json.dumps(value, ensure_ascii=False)


def convert(kconf, source):
    values = {}
    for key, spec in KEYS:
        text = key_value(kconf, key, spec)
        if text is not None:
            values[key] = text
    if kconf.syms["DATA_SOTU"].str_value == "y":
        values.update({k: json.dumps(v) for k, v in SOTU_DATA.items()})

    lines = [f"# Generated from {source} by tools/kconfig2yaml.py: change the configuration with",
             "# `make menuconfig` (or edit .config), not here. Keys: docs/configuration.md"]
    open_sections = []
    for key, _ in KEYS:
        if key not in values:
            continue
        *sections, leaf = key.split(".")
        common = 0
        while common < min(len(open_sections), len(sections)) and open_sections[common] == sections[common]:
            common += 1
        open_sections = open_sections[:common]
        for section in sections[common:]:
            lines.append("  " * len(open_sections) + section + ":")
            open_sections.append(section)
        lines.append("  " * len(open_sections) + f"{leaf}: {values[key]}")
    return "\n".join(lines) + "\n"


def load_kconfig(path):
    kconf = kconfiglib.Kconfig(path, warn_to_stderr=False, suppress_traceback=True)
    kconf.warn_assign_undef = True
    kconf.warn_assign_override = True
    kconf.warn_assign_redun = True
    return kconf


def lint(kconf):
    """Every symbol and choice has help text; every symbol is read by some key (or steers one)."""
    problems = []
    for node in kconf.node_iter():
        item = node.item
        if isinstance(item, (kconfiglib.Symbol, kconfiglib.Choice)) and node.prompt and not node.help:
            problems.append(f"{item.name or 'choice'} (line {node.linenr}) has no help text")
    used = set(CONTROL_SYMBOLS)
    for _, spec in KEYS:
        used.update(spec.symbols)
    for spec in (s for _, s in KEYS if isinstance(s, Choice)):
        sym = kconf.syms.get(spec.symbols[0])
        if sym is None or sym.choice is None:
            problems.append(f"{spec.symbols[0]} is not a choice member in the Kconfig file")
        elif {s.name for s in sym.choice.syms} != set(spec.symbols):
            problems.append(f"choice of {spec.symbols[0]}: members {sorted(s.name for s in sym.choice.syms)} "
                            f"differ from the converter's {sorted(spec.symbols)}")
    for name in sorted(used):
        if name not in kconf.syms or not kconf.syms[name].nodes:
            problems.append(f"{name} is used by the converter but not defined in the Kconfig file")
    for sym in kconf.unique_defined_syms:
        if sym.name not in used:
            problems.append(f"{sym.name} has no YAML key in tools/kconfig2yaml.py")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", help=".config or a defconfigs/ file")
    parser.add_argument("out", nargs="?", help="the YAML run file to write ('-' for stdout)")
    parser.add_argument("--kconfig", default=os.path.join(REPO, "Kconfig"))
    parser.add_argument("--strict", action="store_true",
                        help="fail on any warning while loading CONFIG (unknown symbol, bad value)")
    parser.add_argument("--list-keys", action="store_true", help="print every YAML key and exit")
    parser.add_argument("--lint", action="store_true", help="check the Kconfig file and exit")
    args = parser.parse_args()

    if args.list_keys:
        print("\n".join(key for key, _ in KEYS))
        return 0
    try:
        kconf = load_kconfig(args.kconfig)
    except kconfiglib.KconfigError as e:
        sys.exit(f"kconfig2yaml.py: {args.kconfig}: {e}")
    if args.lint:
        problems = lint(kconf)
        for p in problems:
            print(f"kconfig2yaml.py: {args.kconfig}: {p}", file=sys.stderr)
        return 1 if problems else 0
    if not args.config or not args.out:
        parser.error("give CONFIG and OUT.yaml (or --list-keys / --lint)")
    if not os.path.isfile(args.config):
        sys.exit(f"kconfig2yaml.py: {args.config} does not exist; create it with `make defconfig-NAME` "
                 "or `make menuconfig`")
    kconf.load_config(args.config)
    for w in kconf.warnings:
        print(f"kconfig2yaml.py: {w}", file=sys.stderr)
    if args.strict and kconf.warnings:
        sys.exit(f"kconfig2yaml.py: {args.config}: fix the warnings above (unknown symbols or bad values)")

    text = convert(kconf, args.config)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
