# Two commands set up a fresh machine: `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A machine with an NVIDIA driver gets the GPU build of vLLM, any other the CPU build.
EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
SERVE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install prepare serve test proto bench clean

install: $(VENV)/.installed-$(EXTRA)

$(VENV)/.installed-$(EXTRA): pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e clients/python -e ".[$(EXTRA),prepare,test]"
	@# PyPI's torchvision/torchaudio/torchcodec break `import transformers` beside
	@# the CPU torch, and text-only models need none of them.
	@if [ "$(EXTRA)" = cpu ]; then $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec; fi
	touch $@

# Converts the embedded SmolLM2 once and embeds the default catalogue once.
prepare: install
	$(VENV)/bin/slatewise prepare

serve: prepare
	$(VENV)/bin/slatewise serve $(SERVE_ARGS)

test: prepare
	$(PY) -m pytest $(PYTEST_ARGS)

# Regenerates the stubs in clients/python/slatewise_client/pb (their only home).
proto: install
	$(PY) -m slatewise_client.pb.generate

bench: prepare
	$(PY) tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
