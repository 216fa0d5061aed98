# The two entry points of the README: `make demo` and `make test`.
# Both build .venv from the project's own files; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ncd.gallery_job

# The suite runs on two workers (pytest-xdist; the machines have two cores), a test file at a
# time on one worker (`--dist loadfile`: a module's fixtures are made once). Every test is safe
# to run in parallel: outputs go to pytest's temporary folders, goldens are written atomically
# and hypothesis is derandomised (tests/conftest.py).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
