#!/usr/bin/env bash
# The virtual environment of a GPU study, offline from a wheelhouse (docs/gpu.md).
#
#   WHEELS=wheels scripts/gpu_setup.sh                  .venv-gpu: eanet[jax-cuda,joblib] from the wheels
#   WHEELS=wheels SYSTEM_SITE=1 scripts/gpu_setup.sh    on an image that has JAX+CUDA (numpy, …) already:
#                                                       the venv sees it, the wheels add what it lacks
#   scripts/gpu_setup.sh                                no WHEELS: from the package index
#
# LOCK (requirements/jax.txt): the versions CI tested, as pip constraints (not with SYSTEM_SITE=1).
# VENV (.venv-gpu), PYTHON (python3: the interpreter, and with SYSTEM_SITE=1 the environment whose
# packages the venv sees — also when that is itself a venv, as /opt/…/.venv on some images),
# EXTRAS (jax-cuda,joblib; with SYSTEM_SITE=1 none: every wheel in WHEELS is installed as it is,
# without resolving dependencies, since the image's versions are not the wheelhouse's).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
PYTHON=${PYTHON:-python3}
index=()
if [ -n "${WHEELS:-}" ]; then index=(--no-index --find-links "$WHEELS"); fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
if [ "${SYSTEM_SITE:-0}" = 1 ]; then
    # venv --system-site-packages would show the base interpreter's packages, not those of a venv
    # that PYTHON may belong to: name PYTHON's own site-packages in a .pth file instead.
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/_image_packages.pth"
    if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip install --quiet "${index[@]}" --no-deps "$WHEELS"/*.whl
    fi
    "$VENV/bin/python" -m pip install --quiet "${index[@]}" --no-deps --no-build-isolation -e . \
        || echo "gpu_setup: eanet not installed (runs from the checkout: python -m eanet.run works in it)"
else
    "$VENV/bin/python" -m pip install --quiet "${index[@]}" --constraint "${LOCK:-requirements/jax.txt}" \
        -e ".[${EXTRAS:-jax-cuda,joblib}]"
fi

KERAS_BACKEND=${KERAS_BACKEND:-jax} "$VENV/bin/python" - <<'PY'
import importlib.util, os
import eanet.run, keras, mlflow, hydra  # noqa: F401  every import path of a run
print(f"gpu_setup: keras {keras.__version__} on {keras.backend.backend()}, mlflow {mlflow.__version__}")
if keras.backend.backend() == "jax":
    import jax
    print(f"gpu_setup: jax {jax.__version__}, devices {jax.devices()}")
print("gpu_setup: tensorflow", "installed" if importlib.util.find_spec("tensorflow") else "absent")
PY
