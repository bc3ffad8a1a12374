# gndesign: `make demo` and `make test` each set up .venv on first use, then run.
# Users with a GPU: make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
# The stamp names the torch spec, so changing TORCH_SPEC reinstalls; editing pyproject.toml does too.
STAMP      := $(VENV)/.installed-$(shell printf '%s' '$(TORCH_SPEC)' | cksum | cut -d' ' -f1)
DEMO_DIR   ?= runs/demo
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	# The pinned (CPU) torch goes first, so no dependency pulls an unpinned CUDA build.
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(VENV)/bin/gndesign demo --out $(DEMO_DIR)

test: install
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check gndesign envs planners workflows tests scripts

clean:
	rm -rf $(VENV) runs .pytest_cache
