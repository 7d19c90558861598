# Two commands on a fresh Debian machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench soak screenshot binaries clean

# `make demo DEMO_ARGS=--keep-running` leaves the stack up for your own agents (examples/worker_agent/).
demo: $(STAMP) binaries
	$(BIN)/autonomy demo $(DEMO_ARGS)

test: $(STAMP) binaries
	$(BIN)/python -m pytest

bench: $(STAMP) binaries
	$(BIN)/python bench/run.py

# A simulated week of random faults (about 15 minutes here); the report, and one JSON line last.
soak: $(STAMP) binaries
	$(BIN)/autonomy soak --json

# The README's console screenshot (docs/console.png), taken in headless Chromium during the demo's drills.
screenshot: $(STAMP) binaries
	$(BIN)/python -m devstack.console_session --out docs/console.png

binaries:
	@sh scripts/ensure-binaries.sh

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
