# Two commands set everything up on a fresh machine: `make train` and `make test`.
# TORCH picks the torch build: the default is the CPU wheel this machine has;
# elsewhere e.g. `make test TORCH=torch` takes the newest (CUDA) build.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install dev train test test-slurm gpu-wheels lint bench clean docs docs-serve docs-figures

# setuptools warns on every editable install of a package-dir layout that a folder named like the
# package may shadow it; that is this repository's layout on purpose, so the install stays quiet.
QUIET := PYTHONWARNINGS=ignore

$(BIN)/python:
	@echo "make: creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "make: installing $(TORCH) (a couple of minutes the first time), then dqn"
	$(BIN)/pip install -q "$(TORCH)"
	$(QUIET) $(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	@echo "make: installing the dev extras (pytest, ruff, sweep plugins, minatar, envpool, matplotlib, docs, wandb, mlflow)"
	$(QUIET) $(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

train: install
	$(BIN)/dqn train $(ARGS)

# -n auto: one pytest worker per core (pytest-xdist); the end-to-end runs are most of the time.
test: lint
	$(BIN)/python -m pytest -q -n auto $(ARGS)

# Sweeps on a real single-node SLURM 22.05 started on this machine (root: installs slurm-wlm,
# munge, slurmdbd and mariadb-server with apt where missing), stopped again afterwards.
test-slurm: dev
	scripts/slurm_local.sh start
	$(BIN)/python -m pytest -q -m slurm tests/test_slurm.py $(ARGS); rc=$$?; scripts/slurm_local.sh stop; exit $$rc

# The wheels a GPU machine like the device tool's lacks (Python 3.12, torch with CUDA, matplotlib,
# pandas, scipy, seaborn, tensorboard and opencv preinstalled; no network) for scripts/gpu_check.sh,
# into the ignored .whl/ (under 64 MiB with the repository).
GPU_PYTHON ?= 3.12
GPU_WHEELS ?= gymnasium==1.4.0 ale-py==0.12.1 hydra-core==1.3.8 omegaconf==2.3.1 farama-notifications==0.0.6 \
	cloudpickle==3.1.3 minatar==1.0.15 tqdm==4.70.1 imageio==2.38.2 pyyaml==6.0.3 pytest==8.4.2 iniconfig pluggy pygments
gpu-wheels: dev
	rm -rf .whl && mkdir -p .whl
	$(BIN)/pip download --quiet --dest .whl --only-binary=:all: --no-deps --python-version $(GPU_PYTHON) \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 $(GPU_WHEELS)
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir .whl antlr4-python3-runtime==4.9.3  # sdist only on PyPI
	du -sh .whl

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site (MkDocs Material, the docs extra): docs-figures copies each figure that
# `dqn plot` wrote under results/ over its copy in docs/img/ (a test checks they agree), docs builds
# the site strictly into site/, docs-serve serves it at http://127.0.0.1:8000 while you edit.
docs-figures:
	@for img in docs/img/*.png; do \
		src=$$(git ls-files results | grep "/$$(basename $$img)$$" | head -n 1); \
		if [ -n "$$src" ] && ! cmp -s "$$src" "$$img"; then cp "$$src" "$$img" && echo "docs/img: $$src"; fi; \
	done

docs: dev docs-figures
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: dev docs-figures
	$(BIN)/mkdocs serve

bench: install
	$(BIN)/dqn bench $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
