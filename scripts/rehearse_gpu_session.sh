#!/usr/bin/env bash
# The lent H200's session (docs/gpu.md, "Running it on a lent H200") rehearsed on this CPU machine,
# so that a session that draws a GPU spends its 15 device minutes on the study, not on a broken step.
#
#   scripts/rehearse_gpu_session.sh [DATA]      DATA: the CIFAR-100 .npz (../shared/data/cifar100.npz)
#
# What it does, as on the GPU machine except for the GPU itself:
#   1. the "image": a Python 3.12 venv holding CPU jax/jaxlib 0.11.2 (the image's version) and those
#      of eanet[joblib]'s dependencies that scripts/gpu-image-packages.txt says the image has, so the
#      carried wheels (built with that list excluded) must fill exactly the gap, as there;
#   2. scripts/prepare_gpu_carry.sh in a clean worktree of HEAD (what the device tool copies), and a
#      check that each piece plus the tree that travels with it stays under the 64 MiB of one call;
#   3. `gpu_session.sh stage` for each piece into a fresh STAGE, then `gpu_session.sh run setup study
#      aug pack` with the tests' tiny model (TINY=1, 2 packed jobs) and an nvidia-smi that names the
#      GPU "CPU rehearsal": the sha256 of the reassembled data, the offline venv, the study's sweep,
#      report and record, both measurements.
# Leaves everything under REHEARSAL (/tmp/eanet-rehearsal): the stage timings in rehearsal.log, and
# gpu-session-out/ as $OUT would come back. 7.3 minutes on 2 cores (2026-12-01, beside a training run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=$(realpath "${1:-../shared/data/cifar100.npz}")
REHEARSAL=${REHEARSAL:-/tmp/eanet-rehearsal}
JAX_VERSION=0.11.2
CARRY_LIMIT=$((64 * 1024 * 1024))
PYTHON312=${PYTHON312:-$(scripts/find_python312.sh)}
log() { echo "[rehearsal $(date +%T)] $*"; }

rm -rf "$REHEARSAL"
mkdir -p "$REHEARSAL/bin"
IMAGE=$REHEARSAL/image
TREE=$REHEARSAL/tree

log "1. the image: Python 3.12 + jax $JAX_VERSION (CPU) + what it shares with eanet[joblib]'s dependencies"
"$PYTHON312" -m venv "$IMAGE"
"$IMAGE/bin/pip" install --quiet --upgrade pip
"$IMAGE/bin/pip" install --quiet --dry-run --ignore-installed --report "$REHEARSAL/deps.json" ".[joblib]"
"$IMAGE/bin/python" - "$REHEARSAL/deps.json" scripts/gpu-image-packages.txt >"$REHEARSAL/image-packages.txt" <<'PY'
import json, re, sys
normal = lambda name: re.sub(r"[-_.]+", "-", name.strip().lower())
needed = {normal(item["metadata"]["name"]) for item in json.load(open(sys.argv[1]))["install"]}
image = {normal(line) for line in open(sys.argv[2]) if line.strip() and not line.startswith("#")}
print("\n".join(sorted(needed & image)))
PY
# shellcheck disable=SC2046
"$IMAGE/bin/pip" install --quiet $(cat "$REHEARSAL/image-packages.txt") "jax==$JAX_VERSION" \
    "jaxlib==$JAX_VERSION" setuptools wheel
log "   $(wc -l <"$REHEARSAL/image-packages.txt") of the image's packages + jax $JAX_VERSION"

log "2. the carry, in a clean worktree of HEAD ($(git rev-parse --short HEAD))"
git worktree add --force --detach "$TREE" HEAD >/dev/null
trap 'git -C "$ROOT" worktree remove --force "$TREE" 2>/dev/null || true' EXIT
(cd "$TREE" && PYTHON312=$PYTHON312 scripts/prepare_gpu_carry.sh "$DATA")
tree_bytes=$(cd "$TREE" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb | tail -1 | cut -f1)
for piece in "$TREE"/.carry[0-9]*; do
    bytes=$(du -cb "$piece" | tail -1 | cut -f1)
    if [ $((bytes + tree_bytes)) -gt $CARRY_LIMIT ]; then
        echo "rehearsal: $(basename "$piece") ($bytes bytes) + the tree ($tree_bytes) exceed one call's 64 MiB" >&2
        exit 1
    fi
done
log "   pieces + tree ($tree_bytes bytes) fit one call each"

log "3. the machine's side: stage each piece, then run setup study aug pack (tiny settings)"
printf '#!/bin/sh\necho "CPU rehearsal"\n' >"$REHEARSAL/bin/nvidia-smi"
chmod +x "$REHEARSAL/bin/nvidia-smi"
export STAGE=$REHEARSAL/stage OUT=$REHEARSAL/gpu-session-out
for piece in "$TREE"/.carry[0-9]*; do
    (cd "$TREE" && bash scripts/gpu_session.sh stage "$(basename "$piece")" >/dev/null)
done
rm -rf "$TREE"/.carry[0-9]*  # a later call's tree does not hold them either
(cd "$TREE" && PATH=$REHEARSAL/bin:$PATH PYTHON=$IMAGE/bin/python TINY=1 PACK=2 AUG_STEPS=5 \
    PACK_STEPS=20 PACK_JOBS="1 2" bash scripts/gpu_session.sh run setup study aug pack) 2>&1 | tee "$REHEARSAL/rehearsal.log" \
    | grep -E '^\[gpu_session|^gpu_setup|^gpu_study|^recorded|COMPLETED|FAILED|KILLED'
for expected in record.tar.gz augmentation.jsonl packing.csv; do
    test -s "$OUT/$expected" || { echo "rehearsal: $OUT/$expected is missing" >&2; exit 1; }
done
mkdir -p "$REHEARSAL/record" && tar -xzf "$OUT/record.tar.gz" -C "$REHEARSAL/record"
runs=$("$IMAGE/bin/python" -c 'import json, sys; print(sum(r["status"] == "FINISHED" for r in json.load(open(sys.argv[1]))["runs"]))' \
    "$(ls -d "$REHEARSAL"/record/experiments/seed/*-cpu-rehearsal | tail -1)/record.json")
test "$runs" = 6 || { echo "rehearsal: $runs of the seed study's 6 runs FINISHED" >&2; exit 1; }
log "passed: $runs FINISHED runs recorded, $(wc -l <"$OUT/augmentation.jsonl") augmentation records, packing.csv; in $REHEARSAL"
