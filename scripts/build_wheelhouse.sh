#!/usr/bin/env bash
# On a machine with internet: a folder of wheels (a "wheelhouse") from which eanet installs on a
# machine without a package index (docs/gpu.md).
#
#   scripts/build_wheelhouse.sh wheels                          eanet[jax,joblib] and everything below it
#   scripts/build_wheelhouse.sh wheels jax-cuda,joblib          JAX with its CUDA 12 wheels (GBs)
#   EXCLUDE=image-packages.txt scripts/build_wheelhouse.sh wheels joblib
#                                                               only what the target image lacks
#   PYTHON=python3.12 SPLIT=60m scripts/build_wheelhouse.sh wheels joblib
#
# LOCK (requirements/jax.txt, from `make lock`): the versions CI tested, as pip constraints; a
#   package it does not name (jax[cuda12]'s CUDA plugins, …) is resolved as usual.
# PYTHON: the interpreter that resolves and builds; its minor version (3.12, …) must be the target
#   machine's, as compiled wheels are made for one Python version (pure-Python ones are not).
# EXCLUDE: a file of names already installed on the target (`pip freeze` or `pip list` output, or
#   one name a line): their wheels are left out, so only the missing ones travel. Install such a
#   wheelhouse with SYSTEM_SITE=1 scripts/gpu_setup.sh (no dependency resolution there).
# SPLIT: also pack the folder as <dir>.tar.part-aa, -ab, … of at most this size each (`split -b`
#   sizes), for transfers with a size limit; `cat <dir>.tar.part-* | tar -x` puts it back.
set -euo pipefail
DIR=${1:?usage: scripts/build_wheelhouse.sh DIR [EXTRAS]}
EXTRAS=${2:-jax,joblib}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
LOCK=${LOCK:-requirements/jax.txt}
mkdir -p "$DIR"

# Wheels of eanet's dependencies (sdists such as antlr4-python3-runtime built into wheels), and
# of the build backend, so that an editable install of the checkout builds offline too.
"$PYTHON" -m pip wheel --quiet --wheel-dir "$DIR" --constraint "$LOCK" ".[$EXTRAS]" \
    "setuptools>=68" wheel
rm -f "$DIR"/eanet-*.whl  # eanet itself installs from the checkout

normalize() { tr 'A-Z_.' 'a-z--'; }
if [ -n "${EXCLUDE:-}" ]; then
    # name==version, name version (pip list) or a bare name → the normalized project name
    sed -E 's/[ =<>@;].*//' "$EXCLUDE" | normalize | sort -u >"$DIR/.exclude"
    for wheel in "$DIR"/*.whl; do
        name=$(basename "$wheel" | sed -E 's/-[0-9].*//' | normalize)
        if grep -qx "$name" "$DIR/.exclude"; then rm -f "$wheel"; fi
    done
    rm -f "$DIR/.exclude"
fi
echo "$(ls "$DIR"/*.whl | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR (Python $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])'))"

if [ -n "${SPLIT:-}" ]; then
    rm -f "$DIR".tar.part-*
    tar -cf - -C "$(dirname "$DIR")" "$(basename "$DIR")" | split -b "$SPLIT" - "$DIR.tar.part-"
    ls -l "$DIR".tar.part-*
fi
