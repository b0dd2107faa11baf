#!/usr/bin/env bash
# The seed implementation against eanet on one GPU, both attention types, same loop and data
# (benchmarks/gpu_epochs.py on Keras' JAX backend): a few epochs each, median epoch after the
# first (which compiles). Usage: benchmarks/gpu_compare.sh DATA OUT_DIR [EPOCHS]
set -uo pipefail
DATA=$1; OUT=$2; EPOCHS=${3:-4}
export KERAS_BACKEND=jax
NOAUG="data.augmentation.rotation=0 data.augmentation.zoom=0 data.augmentation.contrast=0 data.augmentation.horizontal_flip=false"
mkdir -p "$OUT"
for model in ea vit; do
  for impl in seed eanet; do
    timeout ${RUN_TIMEOUT:-150} python3 benchmarks/gpu_epochs.py --data "$DATA" --epochs "$EPOCHS" \
      --steps-per-execution 16 --implementation "$impl" --seed-dir "${SEED_DIR:-../shared/bench}" \
      model=$model $NOAUG > "$OUT/${impl}_${model}.jsonl" 2> "$OUT/${impl}_${model}.err"
    echo "$impl $model rc=$? $(tail -1 "$OUT/${impl}_${model}.jsonl")"
  done
done
