#!/usr/bin/env bash
# The GPU machine's side of a session that has one (docs/gpu.md, "Running it on a lent H200"):
# files arrive in pieces (a call carries at most 64 MiB), then one command installs, runs and
# measures, leaving what should come back in $OUT (at most 8 files there).
#
#   bash scripts/gpu_session.sh stage .carry1          copy a carried folder into $STAGE (kept while
#                                                       the machine stays warm: /root/eanet-stage)
#   bash scripts/gpu_session.sh run                     all stages: setup study aug pack
#   bash scripts/gpu_session.sh run setup aug pack      some of them, in this order
#
# Stages:
#   setup  the wheels and CIFAR-100 from the carried pieces of scripts/prepare_gpu_carry.sh (sha256
#          checked); .venv-gpu seeing the image's JAX+CUDA, plus
#          the carried wheels (keras, hydra, mlflow, …) — scripts/gpu_setup.sh with SYSTEM_SITE=1
#   study  scripts/gpu_study.sh $STUDY (seed) with $PACK (6) jobs on the GPU, stopped after
#          $TIME_LIMIT s (a relaunch with the same WORK resumes it); record → $OUT/record.tar.gz
#   aug    augmentation's share of a training step: eanet.bench with and without it, EANet and
#          ViT → $OUT/augmentation.jsonl
#   pack   total images/s of K = $PACK_JOBS (1 2 4 8) packed jobs → $OUT/packing.csv
# BENCH_ARGS: Hydra overrides for both measurements; with TINY=1 (a CPU check, also passed on to
# the study) scripts/tiny-overrides.txt, the tests' tiny model;
# RUN_PYTHON: another environment's python than .venv-gpu's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAGE=${STAGE:-/root/eanet-stage}
OUT=${OUT:-$ROOT/gpu-session-out}
CIFAR_SHA256=98d8d32c2145b6c318b024a7cb1648a47c764c93e17f5bac4cd52b96fdede2d2
export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
log() { echo "[gpu_session $(date +%T)] $*"; }
if [ "${TINY:-0}" = 1 ]; then BENCH_ARGS=${BENCH_ARGS:-$(tr '\n' ' ' <scripts/tiny-overrides.txt)}; fi

case "${1:-}" in
stage)
    mkdir -p "$STAGE"
    cp -r "${2:?usage: gpu_session.sh stage DIR}"/. "$STAGE"/
    du -sh "$STAGE"/*
    exit 0 ;;
run) shift ;;
*) echo "usage: gpu_session.sh stage DIR | run [setup] [study] [aug] [pack]" >&2; exit 2 ;;
esac
stages=${*:-setup study aug pack}
mkdir -p "$OUT"
PY=${RUN_PYTHON:-$ROOT/.venv-gpu/bin/python}
DATA=$STAGE/cifar100.npz

for stage in $stages; do
case $stage in
setup)
    log "setup: wheels and data from the carried pieces (scripts/prepare_gpu_carry.sh)"
    if [ ! -f "$DATA" ]; then cat "$STAGE"/bundle.tar.part-* | tar -x -C "$STAGE"; fi
    echo "$CIFAR_SHA256  $DATA" | sha256sum -c -
    log "setup: venv"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    PYTHON=${PYTHON:-python3} SYSTEM_SITE=1 WHEELS=$STAGE/wheels VENV=.venv-gpu scripts/gpu_setup.sh
    ;;
study)
    log "study ${STUDY:-seed}, ${PACK:-6} jobs at once"
    RUN_PYTHON=$PY DATA=$DATA PACK=${PACK:-6} TIME_LIMIT=${TIME_LIMIT:-540} \
        WORK=$ROOT/runs/${STUDY:-seed}-gpu OUT_ROOT=$ROOT/experiments \
        scripts/gpu_study.sh "${STUDY:-seed}" || log "study ended with status $?"
    tar -czf "$OUT/record.tar.gz" experiments/"${STUDY:-seed}"
    ;;
aug)
    for model in ea vit; do
        for aug in on off; do
            off=()
            [ "$aug" = off ] && off=(data.augmentation.horizontal_flip=false
                data.augmentation.rotation=0 data.augmentation.contrast=0 data.augmentation.zoom=0)
            log "aug: $model augmentation $aug"
            "$PY" -m eanet.bench bench.steps=${AUG_STEPS:-60} bench.warmup=10 model=$model \
                "hydra.run.dir=runs/bench/$model-$aug" "${off[@]}" ${BENCH_ARGS:-} 2>&1 \
                | grep '^BENCH' | sed "s/^BENCH /{\"augmentation\": \"$aug\", \"record\": /; s/\$/}/" \
                | tee -a "$OUT/augmentation.jsonl"
        done
    done
    ;;
pack)
    log "pack: K = ${PACK_JOBS:-1 2 4 8}"
    # shellcheck disable=SC2086
    "$PY" -m eanet.bench.packing --jobs ${PACK_JOBS:-1 2 4 8} --steps ${PACK_STEPS:-300} \
        --warmup 5 --out runs/packing -- ${BENCH_ARGS:-} | tee "$OUT/packing.txt"
    cp runs/packing/packing.csv "$OUT/"
    ;;
*) echo "gpu_session: unknown stage $stage" >&2; exit 2 ;;
esac
done
log "done: $(ls "$OUT")"
