#!/usr/bin/env bash
# Builds what a GPU machine without a Rust toolchain needs into .device/ (git-ignored): the
# `trifecta` binary and the CUDA test binary (both with --features cuda), the golden files and
# the CIFAR-10 JPEG copy. Then run scripts/gpu-check.sh there with .device carried along, e.g.
# through the device tool: carry [".device"], command "bash scripts/gpu-check.sh".
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${TRIFECTA_SHARED:-../shared}"
cargo build --release --features cuda
tests=$(cargo test --release --features cuda --test cuda --no-run 2>&1 |
    sed -n 's/.*Executable tests\/cuda.rs (\(.*\))/\1/p')
[ -x "$tests" ] || { echo "gpu-prepare: could not find the cuda test binary" >&2; exit 1; }
rm -rf .device
mkdir -p .device/shared .device/cifar10-jpeg
cp target/release/trifecta .device/trifecta
cp "$tests" .device/cuda-tests
cp -r "$shared/golden" .device/shared/golden
cp "$shared/datasets/cifar10-jpeg/cifar10-jpeg.tar.gz" .device/cifar10-jpeg/
du -sh .device
