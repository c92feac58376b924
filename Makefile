# The README's two commands: `make up` runs the product, `make test` runs the tests.
# Both install into the active Python (a virtualenv if you use one) the first time and
# again whenever pyproject.toml changes; the first install fetches torch and takes minutes.

PYTHON ?= python3
# Some hosts point pip's find-links at a CPU-only torch wheel that torchvision cannot use:
# unset it so torch and torchvision resolve together from the index.
PIP := env -u PIP_FIND_LINKS $(PYTHON) -m pip
# Known-good versions of everything installed (constraints.txt, regenerated with `make constraints`):
# a fresh machine next month gets the toolchain the suite was green with, not the newest releases.
CONSTRAINTS := -c constraints.txt
STAMPS := build/.make
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Most tests wait on real servers, workers and browsers, so a few more
# processes than cores overlap those waits; each test file stays on one process (its module fixtures
# are built once). TEST_PROCS=0 runs the suite in this process.
TEST_PROCS ?= 3
XDIST = $(if $(filter 0,$(TEST_PROCS)),,-n $(TEST_PROCS) --dist loadfile)
UP_ARGS ?=

.PHONY: help install install-dev up serve test test-fast constraints check-constraints

help:
	@echo "make up         server + workers on SQLite under ./ganscope-data, with two demo runs"
	@echo "make test       the whole test suite (slow end-to-end tests included, as in CI)"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make constraints  re-pin constraints.txt from this (green) environment; review and commit the diff"

$(STAMPS)/trainer: pyproject.toml constraints.txt
	$(PIP) install $(CONSTRAINTS) -e '.[trainer]'
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/dev: pyproject.toml constraints.txt
	$(PIP) install $(CONSTRAINTS) -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@

install: $(STAMPS)/trainer

install-dev: $(STAMPS)/dev

up: install
	$(PYTHON) -m ganscope up $(UP_ARGS)

serve: install
	$(PYTHON) -m ganscope serve

test: install-dev
	$(PYTHON) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: install-dev
	$(PYTHON) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# Re-pin deliberately: run in an environment where `make test` is green, then review the diff.
constraints:
	$(PYTHON) .ci/constraints.py > constraints.txt.new && mv constraints.txt.new constraints.txt

# Every pin resolves from the index alone (nothing already installed counts), without installing.
check-constraints:
	$(PIP) install --dry-run --ignore-installed $(CONSTRAINTS) -e '.[dev]'
