#!/usr/bin/env bash
# `make lock`: resolve eanet's requirements afresh, with the test suites as the gate.
#
#   requirements/tensorflow.txt   eanet[cpu,test]: `make venv`, `make test` and CI install from it
#   requirements/jax.txt          eanet[jax,test], without TensorFlow: `make test-jax`'s wheelhouse
#                                 and a GPU study's environment (scripts/build_wheelhouse.sh,
#                                 scripts/gpu_setup.sh)
#
# Both are pip-compile's output for this interpreter (PYTHON, python3), used as pip constraints:
# every package they name installs at the version CI tested; one they do not name (another
# extra's, such as jax[cuda12]'s CUDA plugins or tensorflow[and-cuda]) is resolved as usual. Each
# new resolution is put in requirements/, installed into temporary virtual environments and tested
# there (`make test`, `make test-jax`: the recipes CI runs, tests/test_locks.py included); unless
# both pass, the previous files are put back.
# KEEP=1 pins what the locks pin now where pyproject.toml still allows it (only what changed there
# moves); by default everything moves to its newest allowed release.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/eanet-lock.XXXXXX")
mkdir "$WORK/previous"
cp requirements/tensorflow.txt requirements/jax.txt "$WORK/previous/"
passed=0
finish() {
    if [ "$passed" != 1 ]; then
        cp "$WORK"/previous/*.txt requirements/
        echo "make lock: requirements/ left as it was" >&2
    fi
    rm -rf "$WORK"
}
trap finish EXIT

"$PYTHON" -m venv "$WORK/tools"
"$WORK/tools/bin/pip" install --quiet pip-tools

compile() {  # compile LOCK EXTRA…: requirements/LOCK.txt, resolved into $WORK/LOCK.txt
    local lock=$1 extras=() extra
    shift
    for extra in "$@"; do extras+=(--extra "$extra"); done
    if [ "${KEEP:-0}" = 1 ]; then cp "requirements/$lock.txt" "$WORK/$lock.txt"; fi
    # No index or find-links lines: a lock names versions, not where this machine got them.
    CUSTOM_COMPILE_COMMAND="make lock" "$WORK/tools/bin/pip-compile" --quiet --strip-extras \
        $([ "${KEEP:-0}" = 1 ] || echo --upgrade) --no-emit-index-url --no-emit-find-links \
        "${extras[@]}" --output-file "$WORK/$lock.txt" pyproject.toml
}
compile tensorflow cpu test
compile jax jax test
if grep -qiE '^tensorflow' "$WORK/jax.txt"; then
    echo "make lock: TensorFlow resolved into the JAX lock:" >&2
    grep -iE '^tensorflow' "$WORK/jax.txt" >&2
    exit 1
fi

# The gate: the recipes CI runs, in fresh environments installed from the new locks.
cp "$WORK/tensorflow.txt" "$WORK/jax.txt" requirements/
make test VENV="$WORK/venv" PYTHON="$PYTHON"
make test-jax JAX_VENV="$WORK/venv-jax" JAX_WHEELS="$WORK/wheels-jax" PYTHON="$PYTHON"
passed=1
git --no-pager diff --stat -- requirements/ || true
echo "make lock: requirements/tensorflow.txt and requirements/jax.txt replaced (tests passed)"
