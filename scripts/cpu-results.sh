#!/usr/bin/env bash
# The across-datasets rows of the README's Results that a CPU can reach (no SVHN copy here;
# CIFAR-10 is the GPU's): FF and backprop at the thesis' settings, 100 epochs each, on MNIST
# and Fashion-MNIST, as `trifecta reproduce datasets --only ...` runs into ROOT (default
# runs/cpu-results): ff-mnist, ff-fashion-mnist, then bp-mnist, bp-fashion-mnist, and
# ROOT/results.md with the thesis' figures beside ours. Every run resumes where a stop left
# it and a finished one is reused, so the same command goes on after a closed session:
#
#   nohup scripts/cpu-results.sh /tmp/acc/datasets > /tmp/acc/cpu-results.log 2>&1 &
#
# On the 2-core development VM an FF epoch takes about 4.5-6.5 minutes with its evaluation
# (every 2nd epoch), a backprop epoch about 3 (measured: 403 samples/s of training): some 10
# hours per FF run and 5 per backprop run. TRIFECTA=path/to/binary uses another build (by
# default target/release/trifecta, built if missing); EPOCHS (default 100) and EXTRA (more
# flags) change the runs, e.g. for a quick try:
#   EPOCHS=1 EXTRA="--width 0.125 --train-limit 256 --test-limit 100" scripts/cpu-results.sh /tmp/try
set -euo pipefail
root="${1:-runs/cpu-results}"
data="${DATA:-../shared/datasets}"
trifecta="${TRIFECTA:-target/release/trifecta}"
[ -x "$trifecta" ] || cargo build --release
grid() {
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    "$trifecta" reproduce datasets --only "$1" --data-dir "$data" --epochs "${EPOCHS:-100}" \
        --eval-every 2 --out "$root" ${EXTRA:-}
}
# The FF runs first (the grid's own order would put backprop on MNIST before FF on
# Fashion-MNIST); the second call reuses them and writes the four rows.
grid ff-mnist,ff-fashion-mnist
grid ff-mnist,ff-fashion-mnist,bp-mnist,bp-fashion-mnist
"$trifecta" report "$root"/ff-mnist "$root"/ff-fashion-mnist "$root"/bp-mnist \
    "$root"/bp-fashion-mnist --out "$root/report"
