# make run     the seed study (EANet vs ViT on CIFAR-100, 50 epochs), recorded in MLflow
# make test    the test suite (CPU, a few minutes)
# Both create or refresh the virtual environment .venv first.
#
#   make run DATA=/path/to/cifar100.npz     use a local CIFAR-100 copy (tarball, folder or .npz)
#   make run ARGS="trainer=quick"           any Hydra overrides
#   make venv EXTRAS=gpu                    TensorFlow with CUDA instead of tensorflow-cpu
#   make lock                               resolve the requirements afresh; the tests gate the new
#                                           requirements/*.txt (scripts/lock.sh)
# Every install takes the versions CI tested from the locks in requirements/ (pip constraints).

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= cpu
DATA ?= $(EANET_DATA)
ARGS ?=
LOCKS ?= requirements
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: venv run quick test test-all clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCKS)/tensorflow.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCKS)/tensorflow.txt -e ".[$(EXTRAS),test]"
	$(PY) -m eanet.models.native  # the fused CPU kernels, built once here rather than in the first run
	rm -f $(VENV)/.installed-*
	touch $@

run: venv
	$(if $(DATA),EANET_DATA=$(DATA)) $(PY) -m eanet.run -m model=ea,vit $(ARGS)

quick: venv
	$(if $(DATA),EANET_DATA=$(DATA)) $(PY) -m eanet.run -m model=ea,vit trainer=quick $(ARGS)

test: venv
	$(PY) -m pytest -m "not slow" -q -n auto --maxprocesses 4 --durations=15

test-all: venv
	$(PY) -m pytest -q

clean:
	rm -rf outputs multirun .pytest_cache

lock:
	PYTHON=$(PYTHON) scripts/lock.sh

# --- Keras' JAX backend without TensorFlow, and GPU studies (docs/gpu.md) ---------------------
#   make test-jax                the TensorFlow-free environment .venv-jax, installed offline from
#                                a wheelhouse (.wheels-jax) as on a GPU machine, and its tests
#   make gpu-study STUDY=seed DATA=/data/cifar100.npz [WHEELS=dir] [PACK=4] [SYSTEM_SITE=1]
#                                one shipped study on one GPU, recorded under experiments/<study>/
#   make wheelhouse WHEELS=dir [WHEEL_EXTRAS=jax-cuda,joblib]   on a connected machine
JAX_VENV ?= .venv-jax
JAX_WHEELS ?= .wheels-jax
STUDY ?= seed
PACK ?= 4
WHEELS ?=
WHEEL_EXTRAS ?= jax-cuda,joblib

.PHONY: test-jax gpu-study wheelhouse

$(JAX_VENV)/.installed-jax: pyproject.toml $(LOCKS)/jax.txt
	rm -rf $(JAX_WHEELS)
	LOCK=$(LOCKS)/jax.txt PYTHON=$(PYTHON) scripts/build_wheelhouse.sh $(JAX_WHEELS) jax,test
	VENV=$(JAX_VENV) WHEELS=$(JAX_WHEELS) EXTRAS=jax,test LOCK=$(LOCKS)/jax.txt PYTHON=$(PYTHON) \
		scripts/gpu_setup.sh
	touch $@

test-jax: $(JAX_VENV)/.installed-jax
	! $(JAX_VENV)/bin/python -c "import tensorflow" 2>/dev/null  # no TensorFlow in this venv
	KERAS_BACKEND=jax $(JAX_VENV)/bin/python -m pytest -q -p no:cacheprovider \
		tests/test_jax_backend.py tests/test_array_batches.py tests/test_attention.py \
		tests/test_model_loading.py

gpu-study:
	WHEELS="$(WHEELS)" DATA="$(DATA)" PACK="$(PACK)" SYSTEM_SITE="$(SYSTEM_SITE)" \
		scripts/gpu_study.sh $(STUDY) $(ARGS)

wheelhouse:
	test -n "$(WHEELS)" || { echo "make wheelhouse WHEELS=<folder>"; exit 2; }
	scripts/build_wheelhouse.sh $(WHEELS) $(WHEEL_EXTRAS)
