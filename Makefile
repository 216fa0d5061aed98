# The two entry points of the README: `make demo` and `make test`.
# Both build .venv from the project's own files; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint venv clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ncd.gallery_job

# The suite runs on two workers (pytest-xdist; the machines have two cores), a test file at a
# time on one worker (`--dist loadfile`: a module's fixtures are made once), the slowest files
# first (`--no-loadscope-reorder` keeps the order tests/conftest.py gives). Every test is safe
# to run in parallel: outputs go to pytest's temporary folders, goldens are written atomically
# and hypothesis is derandomised (tests/conftest.py). ruff and mypy run inside the suite
# (tests/test_static.py), so that the type checker shares the workers with the other tests.
# Bytecode is written (into the ignored `__pycache__` folders) even where the environment says
# not to: the suite starts many Python processes, and without bytecode each one compiles the
# modules of ncd it imports again (about 15 s of a fresh clone's run).
test: $(STAMP) browser
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# The browser tests (tests/browser.py) take screenshots of the pages `ncd site` and `ncd watch`
# make with headless Chromium. Installed here when missing and apt-get can (as root); elsewhere
# a note, and those tests are skipped (outside CI).
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || command -v google-chrome >/dev/null 2>&1; then \
	  :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium for the browser tests (apt-get)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null; } || echo "note: could not install chromium; the browser tests need it"; \
	else \
	  echo "note: no chromium, and apt-get cannot install it here (not root, or no apt-get);" \
	    "the browser tests need it"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info site
