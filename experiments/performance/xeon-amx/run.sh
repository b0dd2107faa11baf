#!/bin/bash
# The A B C D E rounds behind experiments/performance/xeon-amx (run from the repository root).
# /tmp/base: a git worktree of bb0c7bc (main before the fused kernels and the matmul switch).
cd /work/main
{ grep -m1 "model name" /proc/cpuinfo; echo "flags: $(grep -o -wE 'avx512[a-z_0-9]*|amx[a-z_0-9]*|avx2|avx_vnni|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"; echo "cores: $(nproc)"; echo "commit: $(git rev-parse --short HEAD)"; echo "base: bb0c7bc"; date -u; } > /tmp/xeon/final/machine.txt
.venv/bin/python -m eanet.bench.compare --rounds 3 --steps 8 --warmup 2 seed "PYTHONPATH=/tmp/base eanet" eanet "eanet trainer.matmul_precision=bfloat16" "eanet trainer.precision=mixed_bfloat16" > /tmp/xeon/final/compare_eanet.txt 2>&1
.venv/bin/python -m eanet.bench.compare --attention self --rounds 3 --steps 6 --warmup 2 seed "PYTHONPATH=/tmp/base eanet" eanet "eanet trainer.matmul_precision=bfloat16" "eanet trainer.precision=mixed_bfloat16" > /tmp/xeon/final/compare_vit.txt 2>&1
for m in ea vit; do
  .venv/bin/python -m eanet.bench bench.mode=profile model=$m bench.steps=3 bench.warmup=2 bench.out=/tmp/xeon/final > /tmp/xeon/final/profile_$m.txt 2>&1
  .venv/bin/python -m eanet.bench bench.mode=profile model=$m trainer.precision=mixed_bfloat16 bench.steps=3 bench.warmup=2 bench.out=/tmp/xeon/final/bf16 > /tmp/xeon/final/profile_${m}_mixed_bfloat16.txt 2>&1
  .venv/bin/python -m eanet.bench bench.mode=profile model=$m trainer.matmul_precision=bfloat16 bench.steps=3 bench.warmup=2 bench.out=/tmp/xeon/final/mm > /tmp/xeon/final/profile_${m}_matmul_bfloat16.txt 2>&1
done
date -u > /tmp/xeon/final/DONE
