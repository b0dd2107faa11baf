# make run     the seed study (EANet vs ViT on CIFAR-100, 50 epochs), recorded in MLflow
# make test    the test suite (CPU, a few minutes)
# Both create or refresh the virtual environment .venv first.
#
#   make run DATA=/path/to/cifar100.npz     use a local CIFAR-100 copy (tarball, folder or .npz)
#   make run ARGS="trainer=quick"           any Hydra overrides
#   make venv EXTRAS=gpu                    TensorFlow with CUDA instead of tensorflow-cpu

PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= cpu
DATA ?= $(EANET_DATA)
ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: venv run quick test test-all clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),test]"
	rm -f $(VENV)/.installed-*
	touch $@

run: venv
	$(if $(DATA),EANET_DATA=$(DATA)) $(PY) -m eanet.run -m model=ea,vit $(ARGS)

quick: venv
	$(if $(DATA),EANET_DATA=$(DATA)) $(PY) -m eanet.run -m model=ea,vit trainer=quick $(ARGS)

test: venv
	$(PY) -m pytest -m "not slow" -q -n auto --maxprocesses 4

test-all: venv
	$(PY) -m pytest -q

clean:
	rm -rf outputs multirun .pytest_cache
