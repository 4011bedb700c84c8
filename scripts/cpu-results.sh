#!/usr/bin/env bash
# The across-datasets rows of the README's Results that a CPU can reach (no SVHN copy here;
# CIFAR-10 is the GPU's): FF and backprop at the thesis' settings, 100 epochs each, on MNIST
# and Fashion-MNIST, one run after another in ROOT (default runs/cpu-results). Every run
# resumes where a stop left it, so the same command goes on after a closed session:
#
#   nohup scripts/cpu-results.sh /tmp/acc > /tmp/acc/cpu-results.log 2>&1 &
#
# On the 2-core development VM an FF epoch takes about 4.5-6.5 minutes with its evaluation
# (every 2nd epoch), a backprop epoch about 3 (measured: 403 samples/s of training): some 10
# hours per FF run and 5 per backprop run. TRIFECTA=path/to/binary uses another build (by
# default target/release/trifecta, built if missing); EPOCHS (default 100) and EXTRA (more
# train flags) change what new runs are, e.g. for a quick try:
#   EPOCHS=1 EXTRA="--width 0.125 --train-limit 256 --test-limit 100" scripts/cpu-results.sh /tmp/try
set -euo pipefail
root="${1:-runs/cpu-results}"
data="${DATA:-../shared/datasets}"
trifecta="${TRIFECTA:-target/release/trifecta}"
[ -x "$trifecta" ] || cargo build --release
mkdir -p "$root"
# name, model, dataset
while read -r name model dataset; do
    dir="$root/$name"
    echo "== $name ($model on $dataset) at $(date -u +%H:%M)"
    if [ -f "$dir/config.toml" ]; then
        "$trifecta" train --resume "$dir"
    else
        "$trifecta" train --model "$model" --dataset "$dataset" --data-dir "$data/$dataset" \
            --epochs "${EPOCHS:-100}" --eval-every 2 --out "$dir" ${EXTRA:-}
    fi
done <<'RUNS'
mnist-thesis ff mnist
fmnist-thesis ff fashion-mnist
mnist-bp bp mnist
fmnist-bp bp fashion-mnist
RUNS
"$trifecta" report "$root"/mnist-thesis "$root"/fmnist-thesis "$root"/mnist-bp "$root"/fmnist-bp \
    --out "$root/report"
