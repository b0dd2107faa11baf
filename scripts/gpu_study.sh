#!/usr/bin/env bash
# One shipped study on one GPU: the sweep through `python -m eanet.run -m` with MLflow and the
# automatic report, K jobs packed on the GPU, then its record under experiments/ (docs/gpu.md).
#
#   DATA=/data/cifar100.npz scripts/gpu_study.sh seed             conf/experiment/seed.yaml, K = 4
#   DATA=… PACK=6 scripts/gpu_study.sh patch_size seed=0,1        any Hydra overrides after the study
#   TINY=1 scripts/gpu_study.sh seed seed=0                       the CPU variant (CI): tiny settings
#
# Runs `scripts/gpu_setup.sh` first when VENV (.venv-gpu) does not exist yet (WHEELS, SYSTEM_SITE as
# there). Everything a study writes — MLflow store and artifacts, Hydra's multirun folder,
# checkpoints, the log — goes to WORK (runs/<study>/<date>_<time>/); the record (report files, each
# run's history.csv, record.json with the command, commit, backend, GPU and wall time) goes to
# OUT_ROOT/<study>/<date>-<gpu>/ (OUT_ROOT: experiments). Relaunching the same command with the same
# WORK resumes: finished runs are skipped, interrupted ones continue from their last epoch.
#
# KERAS_BACKEND (jax), PACK (4: hydra.launcher.n_jobs), TIME_LIMIT (seconds, then the sweep is
# stopped as a scheduler would: SIGTERM), DATA (or EANET_DATA: the CIFAR-100 copy;
# needed unless TINY=1), RUN_PYTHON (the python that runs the study: the venv's by default).
set -euo pipefail
STUDY=${1:?usage: scripts/gpu_study.sh STUDY [hydra overrides…]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
test -f "conf/experiment/$STUDY.yaml" || { echo "gpu_study: no conf/experiment/$STUDY.yaml" >&2; exit 2; }
VENV=${VENV:-.venv-gpu}
if [ -z "${RUN_PYTHON:-}" ]; then
    test -x "$VENV/bin/python" || VENV="$VENV" scripts/gpu_setup.sh
    RUN_PYTHON=$(cd "$VENV" && pwd)/bin/python  # not realpath: a venv's python is a symlink
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
PACK=${PACK:-4}
DATA=${DATA:-${EANET_DATA:-}}
WORK=$(realpath -m "${WORK:-runs/$STUDY/$(date +%Y-%m-%d_%H-%M-%S)}")
OUT_ROOT=$(realpath -m "${OUT_ROOT:-experiments}")

settings=()
if [ "${TINY:-0}" = 1 ]; then  # the tests' tiny model on tiny synthetic data (tests/conftest.py)
    mapfile -t settings <scripts/tiny-overrides.txt
elif [ -n "$DATA" ]; then
    settings=("data.path=$(realpath "$DATA")")
else
    echo "gpu_study: DATA=/path/to/cifar100.npz (or EANET_DATA) is needed: a GPU machine usually" \
         "cannot download CIFAR-100" >&2
    exit 2
fi

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
gpu=${gpu:-none}
slug=$(echo "$gpu" | tr 'A-Z' 'a-z' | sed -E 's/^nvidia //; s/[^a-z0-9]+/-/g; s/^-|-$//g')
[ "$gpu" = none ] && slug=cpu
OUT=$OUT_ROOT/$STUDY/$(date +%Y-%m-%d)-$slug

mkdir -p "$WORK"
command=("$RUN_PYTHON" -m eanet.run -m "+experiment=$STUDY" hydra/launcher=gpu_pack
         "hydra.launcher.n_jobs=$PACK" hydra.sweep.dir=multirun quiet=true "${settings[@]}" "$@")
echo "gpu_study: $STUDY on $gpu ($KERAS_BACKEND, $PACK jobs at once) in $WORK"
echo "gpu_study: (cd $WORK && KERAS_BACKEND=$KERAS_BACKEND PYTHONPATH=$ROOT ${command[*]})"
start=$EPOCHREALTIME
limit=()
if [ -n "${TIME_LIMIT:-}" ]; then  # SIGTERM after that many seconds: runs end KILLED, resumable
    limit=(timeout --signal=TERM --kill-after=60 "$TIME_LIMIT")
fi
set +e
(cd "$WORK" && PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} "${limit[@]}" "${command[@]}") 2>&1 \
    | tee -a "$WORK/sweep.log"
status=${PIPESTATUS[0]}
set -e
wall=$(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }")
echo "gpu_study: sweep ended with status $status after ${wall%.*} s"

if [ ! -f "$WORK/multirun/report/runs.csv" ]; then  # a sweep stopped early: report what it has
    (cd "$WORK" && PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} "$RUN_PYTHON" -m eanet.report \
        sweep=multirun out=multirun/report) || true
fi
(cd "$WORK" && PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} "$RUN_PYTHON" -m eanet.report.record --sweep multirun \
    --study "$STUDY" --out "$OUT" --wall-s "$wall" --gpu "$gpu" --backend "$KERAS_BACKEND" \
    --tracking-uri "sqlite:///$WORK/mlflow.db" \
    --command "KERAS_BACKEND=$KERAS_BACKEND ${command[*]}")
cp "$WORK/sweep.log" "$OUT/sweep.log"
exit "$status"
