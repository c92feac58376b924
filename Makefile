# The README's two commands: `make up` runs the product, `make test` runs the tests.
# Both install into the active Python (a virtualenv if you use one) the first time and
# again whenever pyproject.toml changes; the first install fetches torch and takes minutes.

PYTHON ?= python3
# Some hosts point pip's find-links at a CPU-only torch wheel that torchvision cannot use:
# unset it so torch and torchvision resolve together from the index.
PIP := env -u PIP_FIND_LINKS $(PYTHON) -m pip
STAMPS := build/.make
PYTEST_ARGS ?=
UP_ARGS ?=

.PHONY: help install install-dev up serve test test-fast

help:
	@echo "make up         server + workers on SQLite under ./ganscope-data, with two demo runs"
	@echo "make test       the whole test suite (slow end-to-end tests included, as in CI)"
	@echo "make test-fast  the suite without tests marked slow"

$(STAMPS)/trainer: pyproject.toml
	$(PIP) install -e '.[trainer]'
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/dev: pyproject.toml
	$(PIP) install -e '.[dev]'
	@mkdir -p $(STAMPS) && touch $@

install: $(STAMPS)/trainer

install-dev: $(STAMPS)/dev

up: install
	$(PYTHON) -m ganscope up $(UP_ARGS)

serve: install
	$(PYTHON) -m ganscope serve

test: install-dev
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast: install-dev
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)
