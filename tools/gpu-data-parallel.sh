#!/usr/bin/env bash
# Data-parallel training throughput (train.gpus, docs/performance.md "Data-parallel training"):
# GPT-2 124M at the ratio ablation's shape (micro-batch 8, T = 1024, 8 micro-batches per step,
# 65,536 tokens) trained for a few steps on 1 GPU and on N GPUs with the same global batch, with
# AdamW without dropout (the step as a CUDA graph) and at the ablation's real setting (AdamWSPAM,
# dropout 0.1: eager steps). Data: random tokens written here (the GPU machine has no corpus).
# Prints tokens/s per run (the trainer's own "done" line: steps after the first, evaluation and
# checkpoints excluded) and the speed-up.
#
# Usage: tools/gpu-data-parallel.sh BUILD_DIR [N=2] [STEPS=20]
set -eu
BUILD=${1:?usage: tools/gpu-data-parallel.sh BUILD_DIR [N] [STEPS]}
N=${2:-2}
STEPS=${3:-20}
WORK=$(mktemp -d /tmp/gpt-dp.XXXXXX)
python3 - "$WORK" <<'PY'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(1)
for name, n in (("train", 12_000_000), ("val", 400_000)):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, n)
    with open(f"{d}/syn_{name}_000000.bin", "wb") as f:
        f.write(header.tobytes())
        f.write(rng.integers(0, 50257, n, dtype=np.uint16).tobytes())
PY
declare -a ROWS
for setting in "adamw, dropout 0|train.optim.kind=adamw model.dropout=0" \
               "ablation: adamw_spam, dropout 0.1|train.optim.kind=adamw_spam model.dropout=0.1"; do
    label=${setting%%|*}
    sets=${setting#*|}
    declare -A TOK=()
    for g in 1 "$N"; do
        out=$WORK/run_${g}_${label//[^a-z0-9]/_}
        # shellcheck disable=SC2086
        "$BUILD/gpt2" train --set model.preset=gpt2 train.device=cuda train.seq_len=1024 train.batch_size=8 \
            train.grad_accum=8 train.max_iters="$STEPS" train.eval_interval=0 train.eval_batches=2 \
            train.sample_tokens=0 train.resume=false train.gpus="$g" train.out_dir="$out" \
            data.train_path="$WORK/syn_train_*.bin" data.val_path="$WORK/syn_val_*.bin" $sets \
            >"$out.log" 2>&1 || { echo "run failed ($label, $g GPUs):"; tail -n 30 "$out.log"; exit 1; }
        TOK[$g]=$(grep -oE "\(([0-9]+) tokens/s\)" "$out.log" | tail -n 1 | grep -oE "[0-9]+")
        echo "$label, $g GPU(s): ${TOK[$g]} tokens/s"
    done
    ROWS+=("$(printf "| %s | %s | %s | %.2fx |" "$label" "${TOK[1]}" "${TOK[$N]}" \
        "$(python3 -c "print(${TOK[$N]} / ${TOK[1]})")")")
    unset TOK
done
echo
nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1
echo "| GPT-2 124M, 8 x 8 x 1024 tokens per step | 1 GPU tok/s | $N GPUs tok/s | speed-up |"
echo "|---|---|---|---|"
printf "%s\n" "${ROWS[@]}"
rm -rf "$WORK"
