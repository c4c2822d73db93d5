#!/usr/bin/env bash
# Training-step benchmarks on the GPU machine, ours and PyTorch's in the same run (SPEC §7-§8):
# GPT-2 124M, T = 1024, B = 32 and 64 (ms/step, tokens/s, MFU, memory), then the ablation's
# attention variants at B = 32 as tokens/s ratios to the baseline (step 0), the ablation's steps
# without and with dropout 0.1 (its real setting), then the PyTorch peer
# (.peer/peer_torch_gpt2.py, copied there by hand from ../shared/bench, never committed), then the
# attention module alone at the seeds' shape (gpt2 bench --module) and .peer/peer_torch_attn.py.
# Expects tools/gpu-check.sh to have configured the build directory.
#
# Usage: tools/gpu-bench.sh [build-dir]      GPU_BENCH_SKIP="variants peer module" skips parts
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-gpu}
LOG=$BUILD/gpu-check-logs
SKIP=${GPU_BENCH_SKIP:-}
mkdir -p "$LOG"
[[ -f $BUILD/CMakeCache.txt ]] || GPU_CHECK_SKIP="build tests sanitize racecheck bench peer" bash "$ROOT/tools/gpu-check.sh" "$BUILD" >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target gpt2 >"$LOG/build-gpt2.log" 2>&1 || { tail -30 "$LOG/build-gpt2.log"; exit 1; }
G=$BUILD/gpt2
COMMON=(--set model.preset=gpt2 train.seq_len=1024 train.device=cuda)

echo "=== ours: GPT-2 124M training step"
"$G" bench "${COMMON[@]}" -b 32 -b 64 --warmup 5 --steps 20 2>&1 | tee "$LOG/bench-gpt2.log"
if [[ " $SKIP " != *" variants "* ]]; then
    # Issue 4's speed table, like for like: every arm with the configured AdamW (a CUDA graph),
    # ratios to the first arm, the baseline, measured in this process.
    echo "=== ours: attention variants at B=32 (AdamW, CUDA graph; ratios to the baseline, same run)"
    "$G" bench "${COMMON[@]}" -b 32 --warmup 3 --steps 10 \
        --variant "baseline: model.attention=baseline" \
        --variant "RA exact, full transpose: model.attention=ra model.ra.band=0" \
        --variant "RA exact, band 64: model.attention=ra model.ra.band=64" \
        --variant "RA same-FLOP R=4: model.attention=ra_lowrank model.ra.rank=4" \
        --variant "RA same-FLOP R=8: model.attention=ra_lowrank model.ra.rank=8" \
        --variant "RA same-FLOP R=16: model.attention=ra_lowrank model.ra.rank=16" \
        --variant "RA same-FLOP R=8, rows form: model.attention=ra_lowrank model.ra.rank=8 model.ra.lowrank_form=rows" \
        --variant "MLA L=128: model.attention=mla" \
        --variant "RA-CT top-k: model.ract.enabled=true model.ract.stat=topk" \
        --variant "RA-CT entropy: model.ract.enabled=true model.ract.stat=entropy" 2>&1 \
        | tee "$LOG/bench-variants.log"
    # The ablation's own steps (SPEC §4: AdamWSPAM, which decides on the host each step, so
    # these run eagerly): ratios to step 0.
    echo "=== ours: ablation steps at B=32 (AdamWSPAM, eager; ratios to step 0, same run)"
    "$G" bench "${COMMON[@]}" -b 32 --warmup 3 --steps 10 --ablation-step 0 5 8 11 13 17 18 4 7 2>&1 \
        | tee "$LOG/bench-ablation-steps.log"
    # The same steps at the ablation's real setting, dropout 0.1 (defconfigs/gpt2-ratio-ablation).
    echo "=== ours: ablation steps at B=32 with dropout 0.1 (the real runs' setting; ratios to step 0)"
    "$G" bench "${COMMON[@]}" model.dropout=0.1 -b 32 --warmup 3 --steps 10 --ablation-step 0 5 8 11 13 17 18 4 7 2>&1 \
        | tee "$LOG/bench-ablation-steps-dropout.log"
fi
if [[ " $SKIP " != *" peer "* && -f "$ROOT/.peer/peer_torch_gpt2.py" ]]; then
    for b in 32 64; do
        echo "=== PyTorch peer: B=$b"
        PYTHONUNBUFFERED=1 python3 "$ROOT/.peer/peer_torch_gpt2.py" "$b" 2>&1 | tee "$LOG/peer-gpt2-$b.log"
    done
fi
if [[ " $SKIP " != *" module "* ]]; then
    # SPEC §7: the attention module alone (c_attn -> attention -> c_proj, layer 0's unit) at the
    # seeds' shape B=8 H=12 T=1024 D=64, fwd and fwd+bwd as ratios to the baseline, then the
    # PyTorch peer's core and module rows in the same run.
    echo "=== ours: attention module at the seeds' shape (B=8, H=12, T=1024, D=64)"
    "$G" bench --module "${COMMON[@]}" train.batch_size=8 --warmup 20 --steps 100 \
        --variant "RA exact: model.attention=ra model.ra.band=0" \
        --variant "RA same-FLOP R=4: model.attention=ra_lowrank model.ra.rank=4" \
        --variant "RA same-FLOP R=8: model.attention=ra_lowrank model.ra.rank=8" \
        --variant "RA same-FLOP R=16: model.attention=ra_lowrank model.ra.rank=16" \
        --variant "RA same-FLOP R=8, rows form: model.attention=ra_lowrank model.ra.rank=8 model.ra.lowrank_form=rows" 2>&1 \
        | tee "$LOG/bench-module.log"
    if [[ " $SKIP " != *" peer "* && -f "$ROOT/.peer/peer_torch_attn.py" ]]; then
        echo "=== PyTorch peer: attention core and module (seeds' shape)"
        PYTHONUNBUFFERED=1 python3 "$ROOT/.peer/peer_torch_attn.py" 2>&1 | tee "$LOG/peer-attn.log"
    fi
fi
[[ -n "${OUT:-}" ]] && cp "$LOG"/bench-*.log "$LOG"/peer-gpt2-*.log "$LOG"/peer-attn.log "$OUT"/ 2>/dev/null
exit 0
