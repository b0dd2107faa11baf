#!/bin/bash
# The measurements behind experiments/performance/xeon-amx-fused (run from the repository root).
# Worktrees: /tmp/base = 7c1a1b6 (main at the start of this work), /tmp/new = 4044fc8 (+ the
# dropout-mask kernels), /tmp/whole = the whole-attention kernels, /tmp/fuse3 = 12bf61b (+ layer
# norm, GELU-dropout, EANet's (B, N, D) layout), /tmp/fuse4 = 29188ba (+ ViT's interleaved heads).
set -x
OUT=experiments/performance/xeon-amx-fused
.venv/bin/python -m eanet.bench.compare --rounds 3 --steps 8 --warmup 2 seed "PYTHONPATH=/tmp/base eanet" "PYTHONPATH=/tmp/new eanet" > $OUT/ab_dropout_mask_ea.txt 2>&1
.venv/bin/python -m eanet.bench.compare --rounds 3 --steps 8 --warmup 2 seed "PYTHONPATH=/tmp/new eanet" "PYTHONPATH=/tmp/whole eanet" "PYTHONPATH=/tmp/whole eanet trainer.matmul_precision=bfloat16" "PYTHONPATH=/tmp/new eanet trainer.matmul_precision=bfloat16" > $OUT/ab_whole_attention_ea.txt 2>&1
.venv/bin/python -m eanet.bench.compare --attention self --rounds 3 --steps 6 --warmup 2 seed "PYTHONPATH=/tmp/new eanet" "PYTHONPATH=/tmp/whole eanet" "PYTHONPATH=/tmp/whole eanet trainer.matmul_precision=bfloat16" "PYTHONPATH=/tmp/new eanet trainer.matmul_precision=bfloat16" > $OUT/ab_whole_attention_vit.txt 2>&1
.venv/bin/python -m eanet.bench.compare --rounds 4 --steps 8 --warmup 2 seed "PYTHONPATH=/tmp/base eanet" "PYTHONPATH=/tmp/fuse3 eanet" "PYTHONPATH=/tmp/fuse3 eanet trainer.matmul_precision=bfloat16" "PYTHONPATH=/tmp/fuse3 eanet trainer.precision=mixed_bfloat16" > $OUT/compare_eanet.txt 2>&1
.venv/bin/python -m eanet.bench.compare --attention self --rounds 3 --steps 6 --warmup 2 seed "PYTHONPATH=/tmp/base eanet" "PYTHONPATH=/tmp/fuse4 eanet" "PYTHONPATH=/tmp/fuse4 eanet trainer.matmul_precision=bfloat16" "PYTHONPATH=/tmp/fuse4 eanet trainer.precision=mixed_bfloat16" > $OUT/compare_vit.txt 2>&1
for m in ea vit; do
  .venv/bin/python experiments/performance/xeon-amx-fused/attention_paths.py $m > $OUT/attention_paths_$m.txt 2>&1
  .venv/bin/python -m eanet.bench bench.mode=profile model=$m bench.steps=3 bench.warmup=2 bench.out=$OUT > $OUT/profile_$m.txt 2>&1
done
# The final compares (/tmp/final = cc4849f), the first step, make quick, the AVX2 checks.
.venv/bin/python -m eanet.bench.compare --rounds 4 --steps 8 --warmup 2 seed "PYTHONPATH=/tmp/base eanet" "PYTHONPATH=/tmp/final eanet" "PYTHONPATH=/tmp/final eanet trainer.matmul_precision=bfloat16" "PYTHONPATH=/tmp/final eanet trainer.precision=mixed_bfloat16" > $OUT/compare_eanet_final.txt 2>&1
.venv/bin/python -m eanet.bench.compare --attention self --rounds 3 --steps 6 --warmup 2 seed "PYTHONPATH=/tmp/base eanet" "PYTHONPATH=/tmp/final eanet" "PYTHONPATH=/tmp/final eanet trainer.matmul_precision=bfloat16" "PYTHONPATH=/tmp/final eanet trainer.precision=mixed_bfloat16" > $OUT/compare_vit_final.txt 2>&1
.venv/bin/python -m eanet.bench.compare --attention self --rounds 3 --steps 6 --warmup 2 seed "PYTHONPATH=/tmp/fuse4 eanet" > $OUT/compare_vit_again.txt 2>&1
bash experiments/performance/xeon-amx/ab_first_step.sh > $OUT/ab_first_step.txt 2>&1  # /tmp/base = 7c1a1b6
make venv && /usr/bin/time -f "make quick wall %e s" make quick DATA=../shared/data/cifar100.npz ARGS="hydra.sweep.dir=$(mktemp -d)/multirun tracking.tracking_uri=sqlite:///$(mktemp -d)/mlflow.db" > $OUT/make_quick.txt 2>&1
.venv/bin/python $OUT/avx2_build_tests.py
for m in ea vit; do .venv/bin/python $OUT/avx2_attention_paths.py $m; done
