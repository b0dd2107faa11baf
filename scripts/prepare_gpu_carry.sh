#!/usr/bin/env bash
# Here, on a connected machine without a GPU: what a lent H200 needs for a study, cut into
# pieces that one call of the device tool can carry (64 MiB a call, the working tree included).
# docs/gpu.md, "Running it on a lent H200", has the calls that use them.
#
#   scripts/prepare_gpu_carry.sh [DATA]      DATA: the CIFAR-100 .npz (../shared/data/cifar100.npz)
#
# Builds the wheels the machine's image lacks (Python 3.12; EXCLUDE=scripts/gpu-image-packages.txt)
# and packs them with the data as one tar stream split into .carry1/, .carry2/, … (60 MiB each at
# most; about 200 MB in all: 4 pieces). On the machine, `scripts/gpu_session.sh stage .carryN`
# collects them and `scripts/gpu_session.sh run` puts the stream back together (sha256 checked).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/cifar100.npz}
PYTHON312=${PYTHON312:-$(scripts/find_python312.sh)}
BUILD=.carry-build
rm -rf "$BUILD" .carry[0-9]*
mkdir -p "$BUILD"
PYTHON=$PYTHON312 EXCLUDE=scripts/gpu-image-packages.txt \
    scripts/build_wheelhouse.sh "$BUILD/wheels" joblib
ln "$(realpath "$DATA")" "$BUILD/cifar100.npz" 2>/dev/null || cp "$DATA" "$BUILD/cifar100.npz"
tar -cf - -C "$BUILD" wheels cifar100.npz | split -b 60m - "$BUILD/bundle.tar.part-"
i=0
for part in "$BUILD"/bundle.tar.part-*; do
    i=$((i + 1))
    mkdir -p ".carry$i"
    mv "$part" ".carry$i/"
done
rm -rf "$BUILD"
du -sh .carry[0-9]*
echo "carry .carry1 … .carry$i, one a call (docs/gpu.md)"
