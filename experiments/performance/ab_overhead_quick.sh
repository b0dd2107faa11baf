#!/bin/bash
# A B C rounds of the overhead bench (a real trainer=quick EANet run, as python -m eanet.run starts it)
cd /tmp/tim
for round in 1 2 3; do
  for wt in /tmp/wt-pre /tmp/wt-base /work/main; do
    rm -rf mlflow.db mlruns checkpoints
    start=$(date +%s.%N)
    PYTHONPATH=$wt /work/main/.venv/bin/python -m eanet.bench --config-path $wt/conf bench.mode=overhead \
      data.path=/work/shared/data/cifar100.npz trainer=quick trainer.verbose=0 bench.steps=4 bench.warmup=1 \
      hydra.run.dir=/tmp/tim/out > /tmp/tim/ov.log 2>&1
    end=$(date +%s.%N)
    line=$(grep -E "^BENCH|^OVERHEAD|\"measurement\": \"overhead\"" /tmp/tim/ov.log | tail -1)
    echo "round $round $wt wall $(echo "$end - $start" | bc) $line"
  done
done
