#!/usr/bin/env bash
# Runs on a GPU machine, from the project root, with .device/ from scripts/gpu-prepare.sh:
# the thesis' CIFAR-10 ablation (vanilla FF, SymBa, SymBa + APL, SymBa + BN, the Trifecta),
# 100 epochs each on the CIFAR-10 JPEG copy, for the README's Results table. The Trifecta
# runs first (the thesis' headline 74.0% is its); `reproduce` then reuses it and runs the
# other four. At the H200's last measured 0.9 s + 0.2 s an epoch a run takes about 2 minutes
# (the LayerNorm variants are unmeasured), so the five take two device calls: the script
# stops by its deadline (DEADLINE seconds, default 540, inside the tool's 10 minutes a
# command), and the same command again at once, while the machine is still warm, continues
# every run from its last checkpoint. Run scripts/gpu-check.sh in another session: this
# needs the whole 15 minutes. What finished comes back in $OUT (or ./gpu-logs): each run's
# metrics.jsonl, runs.tar.gz (every run folder without its checkpoints, for `trifecta report`
# here), and results.md once all five are done: seven files of the tool's eight.
set -uo pipefail
out="${OUT:-gpu-logs}"
mkdir -p "$out"
deadline="${DEADLINE:-540}"
left() { echo $((deadline - SECONDS)); }
libs=$(python3 -c 'import glob, os, nvidia
print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/*/lib/lib*.so*")})))' 2>/dev/null)
export LD_LIBRARY_PATH="${libs}:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
runs=/tmp/trifecta-ablation
trifecta="$runs/trifecta"
# `timeout 0` would mean no limit: nothing starts with under 10 s left.
run() { [ "$(left)" -gt 10 ] && timeout "$(left)" "$@"; }
echo "== the Trifecta, 100 epochs (at ${SECONDS} s)"
if [ -f "$trifecta/config.toml" ]; then
    run .device/trifecta train --resume "$trifecta" --device cuda \
        --data-dir .device/cifar10-jpeg >>/tmp/trifecta.log 2>&1
else
    run .device/trifecta train --device cuda --dataset folder \
        --data-dir .device/cifar10-jpeg --epochs 100 --eval-every 5 --out "$trifecta" \
        >/tmp/trifecta.log 2>&1
fi
grep -E "^epoch 100/100:" -A6 /tmp/trifecta.log
echo "== the other four variants (at ${SECONDS} s)"
run .device/trifecta reproduce ablation --device cuda --dataset folder \
    --data-dir .device/cifar10-jpeg --epochs 100 --eval-every 5 --out "$runs" \
    >>/tmp/ablation.log 2>&1
grep -h -E "^error" /tmp/trifecta.log /tmp/ablation.log 2>/dev/null
for variant in vanilla symba symba-apl symba-bn trifecta; do
    cp "$runs/$variant/metrics.jsonl" "$out/$variant.jsonl" 2>/dev/null &&
        echo "$variant: $(wc -l <"$runs/$variant/metrics.jsonl") epochs done"
done
# Every run's folder but its checkpoints (config, metrics, goodness samples) in one archive, so
# that `trifecta report` draws the figures here: tar xzf runs.tar.gz, then
# trifecta report trifecta-ablation --out report.
(cd "$(dirname "$runs")" && tar czf - --exclude='checkpoint.*' --exclude='progress.*' \
    --exclude='best.*' --exclude='*.tmp' \
    "$(basename "$runs")") >"$out/runs.tar.gz" 2>/dev/null
echo "== results (at ${SECONDS} s)"
if cp "$runs/results.md" "$out/" 2>/dev/null; then
    cat "$runs/results.md"
else
    echo "not every run has finished: run the same command again now (the machine is warm)"
    exit 1
fi
