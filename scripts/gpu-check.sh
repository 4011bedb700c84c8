#!/usr/bin/env bash
# Runs on a GPU machine, from the project root, with .device/ from scripts/gpu-prepare.sh:
# a short bench that must find the CUDA libraries without LD_LIBRARY_PATH, the CUDA tests
# (ops against the CPU, golden FF step, repeatability), the benchmark in bf16 (with the
# epoch, and the evaluation also without sharing block 0 between the labels) and f32, bf16
# also unfused (epoch and evaluation too), with any cuDNN algorithm, with block 0's
# convolution unpadded, with cuDNN's algorithms timed (Find), with APL (the epoch's kind of
# step) and the epoch with a loader thread per core, a per-kernel profile
# of the bf16 step, and 10 epochs of the Trifecta on the CIFAR-10 JPEG copy (then 2 in f32,
# to set beside the CPU's). Logs go to $OUT (or ./gpu-logs), eight files at most (what the
# device tool brings back).
#
# With --quick it runs the libraries check, the tests, the default bf16 bench and the profile
# only (about half the time), for a session that changes the step and measures it again.
# With --thesis-100 it then trains the Trifecta for the thesis' 100 epochs on the same copy
# (about 2 minutes at the H200's last measured 0.9 s + 0.2 s an epoch; give the call about 4
# more minutes), for the README's Results table (74.0% in the thesis).
set -uo pipefail
thesis100=0
quick=0
for arg in "$@"; do
    case "$arg" in
    --thesis-100) thesis100=1 ;;
    --quick) quick=1 ;;
    *) echo "gpu-check.sh: unknown option $arg (--quick, --thesis-100)" >&2; exit 2 ;;
    esac
done
out="${OUT:-gpu-logs}"
mkdir -p "$out"
# First without LD_LIBRARY_PATH: the backend should find the libraries itself (libs.rs). A
# two-step bench also compiles the kernels into the on-disk cache for the runs below.
echo "== libraries found without LD_LIBRARY_PATH"
if env -u LD_LIBRARY_PATH timeout 90 .device/trifecta bench --device cuda --steps 2 --warmup 1 \
    --epoch-images 0 >/tmp/libraries.log 2>&1; then
    found="libraries: found without LD_LIBRARY_PATH"
else
    found="libraries: NOT found without LD_LIBRARY_PATH: $(tail -1 /tmp/libraries.log)"
fi
echo "$found"
# The CUDA libraries of the Python wheels (cuDNN, cuBLAS, NVRTC), then the driver's.
libs=$(python3 -c 'import glob, os, nvidia
print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/*/lib/lib*.so*")})))' 2>/dev/null)
export LD_LIBRARY_PATH="${libs}:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"
export TRIFECTA_SHARED="$PWD/.device/shared"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -m pip list 2>/dev/null | grep -i -E "^nvidia-(cudnn|cublas|cuda-nvrtc|cuda-runtime)" | tee -a "$out/gpu.txt"
# The binaries were linked here against glibc 2.36 and need 2.35 there (objdump -T).
ldd --version 2>/dev/null | head -1 | tee -a "$out/gpu.txt"
status=0
echo "== CUDA tests (at ${SECONDS} s)"
timeout 240 .device/cuda-tests --test-threads=1 2>&1 | tee "$out/tests.log" || status=1
# Each bench's lines in bench.log follow a "== " line naming it (the summary shows both).
: >"$out/bench.log"
bench() {
    echo "== bench, $1 (at ${SECONDS} s)" | tee -a "$out/bench.log"
    shift
    timeout "$@" 2>&1 | tee -a "$out/bench.log" || status=1
}
bench "bf16 (default workload at batch 512, epoch and evaluation, the latter also unshared)" \
    120 .device/trifecta bench --device cuda --steps 50 --warmup 5 --compare-unshared-eval
if [ "$quick" = 0 ]; then
    bench "f32 step" 60 .device/trifecta bench --device cuda --precision f32 --steps 50 --warmup 5 \
        --epoch-images 0
    bench "bf16 unfused (step, epoch and evaluation)" 90 .device/trifecta bench --device cuda \
        --unfused --steps 50 --warmup 5
    bench "bf16 step, any cuDNN algorithm" 60 .device/trifecta bench --device cuda \
        --any-cudnn-algorithm --steps 50 --warmup 5 --epoch-images 0
    bench "bf16 step, block 0's 4 channels not padded to 8" 60 .device/trifecta bench --device cuda \
        --no-channel-padding --steps 50 --warmup 5 --epoch-images 0
    bench "bf16 step, cuDNN algorithms timed on the device (Find)" 60 .device/trifecta bench \
        --device cuda --cudnn-benchmark --steps 50 --warmup 5 --epoch-images 0
    # The epoch's steps alternate (APL): the bare APL step beside the epoch's time per step
    # says what feeding the GPU costs; the epoch again with as many loader threads as cores.
    bench "bf16 APL step (the epoch's kind of step, no loader)" 60 .device/trifecta bench \
        --device cuda --apl --steps 50 --warmup 5 --epoch-images 0
    bench "bf16 epoch with as many loader threads as cores ($(nproc))" 90 env \
        TRIFECTA_LOADER_THREADS="$(nproc)" .device/trifecta bench --device cuda --steps 2 --warmup 1
fi
echo "== bench, bf16 step, time per kernel (GPU events) (at ${SECONDS} s)"
timeout 60 .device/trifecta bench --device cuda --profile --steps 20 --warmup 5 --epoch-images 0 2>&1 |
    tee "$out/profile.log" || status=1
if [ "$quick" = 0 ]; then
    echo "== Trifecta, CIFAR-10 JPEG copy, 10 epochs (at ${SECONDS} s)"
    timeout 300 .device/trifecta train --device cuda --dataset folder --data-dir .device/cifar10-jpeg \
        --epochs 10 --out /tmp/trifecta-cifar 2>&1 | tee "$out/train.log" || status=1
    cp /tmp/trifecta-cifar/metrics.jsonl "$out/" 2>/dev/null
    echo "== Trifecta, CIFAR-10 JPEG copy, 2 epochs in f32 (same seed as the CPU run in the README) (at ${SECONDS} s)"
    timeout 120 .device/trifecta train --device cuda --precision f32 --dataset folder \
        --data-dir .device/cifar10-jpeg --epochs 2 --out /tmp/trifecta-cifar-f32 2>&1 |
        tee "$out/train-f32.log" || status=1
fi
if [ "$thesis100" = 1 ]; then
    # train.log and metrics.jsonl of the 10-epoch run are kept; this run's log and records
    # go into one file (its per-epoch lines, then metrics.jsonl).
    echo "== Trifecta, CIFAR-10 JPEG copy, 100 epochs (at ${SECONDS} s)"
    timeout 420 .device/trifecta train --device cuda --dataset folder \
        --data-dir .device/cifar10-jpeg --epochs 100 --out /tmp/trifecta-cifar-100 >/tmp/train-100.log 2>&1 ||
        status=1
    { grep -E "^epoch [0-9]+/100:|^  layer|^error" /tmp/train-100.log
      echo "== metrics.jsonl"
      cat /tmp/trifecta-cifar-100/metrics.jsonl 2>/dev/null; } >"$out/train-100.log"
fi
# The lines that matter, last (a remote runner may return only the end of the output).
echo "== summary (at ${SECONDS} s)"
cat "$out/gpu.txt"
echo "$found"
grep -h "^test result" "$out/tests.log"
grep -h -A2 "panicked at" "$out/tests.log" | head -12
awk '/^failures:$/ {f = 1; n++} f && n == 2' "$out/tests.log" | head -25
grep -h -E "^== bench|^device:|^step:|^host:|^convolutions:|^epoch \(" "$out/bench.log"
grep -h -E "ms in all|^ +[0-9.]+ ms +[0-9.]+% +[0-9]" "$out/profile.log" | head -28
grep -h -E "by part of|^ +[0-9.]+ ms +[0-9.]+% +[a-z(]" "$out/profile.log"
grep -E "^epoch [0-9]+/[0-9]+:" "$out/train.log" 2>/dev/null | tail -3
grep -A7 "^epoch 10/10:" "$out/train.log" 2>/dev/null | tail -6
grep -h -A7 -E "^epoch [12]/2:" "$out/train-f32.log" 2>/dev/null
if [ "$thesis100" = 1 ]; then
    grep -E "^epoch [0-9]+/100:" "$out/train-100.log" | tail -2
    grep -A6 "^epoch 100/100:" "$out/train-100.log" | tail -6
    grep "^error" "$out/train-100.log"
fi
exit $status
