#!/bin/bash
# First training step after the command, A B rounds: main before the work measured (a git
# worktree at /tmp/base on PYTHONPATH: bb0c7bc here, 7c1a1b6 for ../xeon-amx-fused) against the
# working tree, a short real EANet run started
# as `python -m eanet.run` starts it (fresh MLflow store each time; the fused kernels' library is
# already in ~/.cache/eanet/kernels, as on any run after a machine's first).
set -u
cd /work/main
work=$(mktemp -d)
for round in 1 2 3; do
  for tree in /tmp/base /work/main; do
    rm -rf "$work"/*
    (cd "$work" && PYTHONPATH=$tree /work/main/.venv/bin/python -P -m eanet.bench bench.mode=overhead \
      data.path=/work/shared/data/cifar100.npz trainer.epochs=1 trainer.steps_per_epoch=2 \
      trainer.validation_steps=1 trainer.test_steps=1 trainer.verbose=0 bench.steps=1 bench.warmup=1 \
      hydra.run.dir="$work/out" > "$work/log" 2>&1)
    line=$(grep -E '"measurement": "overhead"' "$work/log" | tail -1)
    age=$(echo "$line" | sed -E 's/.*"first_step_age_s": ([0-9.]+).*/\1/')
    echo "round $round $tree first_step_age_s $age"
  done
done
rm -rf "$work"
