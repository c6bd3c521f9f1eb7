# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision are installed first, pinned, from the local wheel mirror (see DEVELOPERS notes in README)
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.propex-installed

.PHONY: demo test test-fast bench venv clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c requirements-ci.txt -e ".[test,demo,viz,vision,cli,serve,text,batch,ray,graph]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/propex demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_gradient.py

# Refresh the lock of what CI installs (run after changing dependencies).
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v -E '^(propex|-e )' > requirements-ci.txt

clean:
	rm -rf $(VENV) propex-demo .pytest_cache
