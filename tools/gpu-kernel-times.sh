#!/usr/bin/env bash
# Per-kernel GPU time of one training step, from Nsight Compute's gpu__time_duration (each kernel
# timed alone, clocks left as they are): the table the op-level `--profile` cannot give when one
# op launches several kernels. Sums by kernel name over the profiled launches, largest first.
#
# Usage: tools/gpu-kernel-times.sh BUILD_DIR [--kernels REGEX] [-- extra `gpt2 bench` arguments]
#   e.g. tools/gpu-kernel-times.sh /tmp/b --kernels 'ract|head_gate' -- --set model.ract.enabled=true
# Runs `gpt2 bench -b 32 --warmup 1 --steps 1 --profile` (GPT-2 124M, T=1024): three steps in
# all, reported per step (parameter init's few kernels are included, spread over the three). A
# first run without ncu fills the GEMM autotune cache, so no tuning trials are profiled.
# KEEP_CSV=FILE keeps ncu's raw table.
set -eu
BUILD=${1:?usage: tools/gpu-kernel-times.sh BUILD_DIR [--kernels REGEX] [-- bench args]}; shift
FILTER=()
if [[ ${1:-} == --kernels ]]; then FILTER=(--kernel-name "regex:$2"); shift 2; fi
[[ ${1:-} == -- ]] && shift
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[[ -x $NCU ]] || { echo "gpu-kernel-times: ncu (Nsight Compute) not found" >&2; exit 1; }
CSV=$(mktemp)
BENCH=("$BUILD/gpt2" bench --set model.preset=gpt2 train.seq_len=1024 train.device=cuda -b 32
       --warmup 1 --steps 1 --profile "$@")
"${BENCH[@]}" >/dev/null 2>&1 || true   # fills the GEMM autotune cache
"$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --page raw --print-units base \
    --print-kernel-base function "${FILTER[@]}" "${BENCH[@]}" >"$CSV" 2>"$CSV.err" \
    || { tail -20 "$CSV.err"; exit 1; }
python3 - "$CSV" <<'EOF'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols = rows[head]
name, dur = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum")
tot, cnt = collections.Counter(), collections.Counter()
for r in rows[head + 1:]:   # a units row, if any, fails the float()
    try: t = float(r[dur].replace(",", ""))   # ncu groups thousands
    except (ValueError, IndexError): continue
    tot[r[name]] += t; cnt[r[name]] += 1
steps = 3   # warm-up, measured, profiled
all_ns = sum(tot.values())
print(f"{'kernel':90s} {'launches':>8s} {'ms/step':>8s} {'share':>6s}")
for k, t in tot.most_common():
    print(f"{k[:90]:90s} {cnt[k]/steps:8.1f} {t/steps/1e6:8.3f} {100*t/all_ns:5.1f}%")
print(f"{'total':90s} {'':8s} {all_ns/steps/1e6:8.3f}")
EOF
[[ -n ${KEEP_CSV:-} ]] && cp "$CSV" "$KEEP_CSV"   # the raw ncu table, for a closer look
rm -f "$CSV" "$CSV.err"
