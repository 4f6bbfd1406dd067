# gpuops.sharing — two commands on a fresh machine: `make demo` and `make test`.
#
# Everything is installed by this file into project-local virtualenvs:
#   .venv        main target: newest ansible-core (2.21) on Python 3.13 (3.12 if 3.13 is missing)
#   .venv-floor  the requires_ansible floor: ansible-core 2.18 on Python 3.11
# The checkout is made importable as ansible_collections.gpuops.sharing through a
# symlink tree under .build/collections (no copying by hand).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY_MAIN ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13 /root/.pyenv/versions/3.13*/bin/python3.13) \
                       $(shell command -v python3.13 2>/dev/null) \
                       $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12) \
                       $(shell command -v python3.12 2>/dev/null))
PY_FLOOR ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.11*/bin/python3.11 /root/.pyenv/versions/3.11*/bin/python3.11) \
                        $(shell command -v python3.11 2>/dev/null))
VENV := $(ROOT)/.venv
VENV_FLOOR := $(ROOT)/.venv-floor
BUILD := $(ROOT)/.build
COLLECTIONS := $(BUILD)/collections
# outside the checkout: ansible-test walks up to the nearest .git and would list only tracked files
TESTROOT := $(or $(TMPDIR),/tmp)/gpuops-sharing-test-$(shell printf %s '$(ROOT)' | md5sum | cut -c1-8)
TESTTREE := $(TESTROOT)/ansible_collections/gpuops/sharing
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PIP_QUIET := --quiet --no-warn-script-location
# pip's "Location ... is ignored" chatter about this machine's file:// mirrors is noise
PIP_FILTER := grep -v "^WARNING: Location 'file://" || true

.PHONY: help venv venv-floor system-deps collection-link test test-quick sanity sanity-floor units units-floor \
        simulator-tests integration lint docs-lint build demo bench clean

help:
	@echo "make demo        run playbooks/site.yml on a simulated GPU fleet"
	@echo "make test        everything CI runs (sanity, units, integration, lint, docs, build, fleet)"
	@echo "make test-quick  the same without the booted fleet hosts"
	@echo "make bench       benchmark tables"

# ---------------------------------------------------------------- environments
$(VENV)/.installed: requirements/main.txt requirements/main.lock
	@test -n "$(PY_MAIN)" || { echo "need Python 3.13 or 3.12 (pyenv or python3.13 on PATH) for ansible-core 2.21" >&2; exit 1; }
	@echo "== creating $(VENV) with $(PY_MAIN)"
	@test -x $(VENV)/bin/python || $(PY_MAIN) -m venv $(VENV)
	@($(VENV)/bin/pip install $(PIP_QUIET) -r requirements/main.txt -c requirements/main.lock 2>&1 | $(PIP_FILTER))
	@$(VENV)/bin/python -c "import ansible, pynvml, pytest, hypothesis, yaml"  # fail loudly if anything is missing
	@touch $@

$(VENV_FLOOR)/.installed: requirements/floor.txt requirements/floor.lock
	@test -n "$(PY_FLOOR)" || { echo "need Python 3.11 for the ansible-core floor checks" >&2; exit 1; }
	@echo "== creating $(VENV_FLOOR) with $(PY_FLOOR)"
	@test -x $(VENV_FLOOR)/bin/python || $(PY_FLOOR) -m venv $(VENV_FLOOR)
	@($(VENV_FLOOR)/bin/pip install $(PIP_QUIET) -r requirements/floor.txt -c requirements/floor.lock 2>&1 | $(PIP_FILTER))
	@$(VENV_FLOOR)/bin/python -c "import ansible, pynvml, pytest"
	@touch $@

venv: $(VENV)/.installed collection-link
venv-floor: $(VENV_FLOOR)/.installed collection-link

# Debian packages the tests use, installed by this file when run as root (apt lines, nothing by hand)
SYSTEM_PACKAGES ?= shellcheck fuse3 mdevctl
system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "== apt-get install $$missing"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages: $$missing (install them, or run make as root)" >&2; exit 1; fi; \
	fi

collection-link:
	@mkdir -p $(COLLECTIONS)/ansible_collections/gpuops
	@ln -sfn $(ROOT) $(COLLECTIONS)/ansible_collections/gpuops/sharing

# ansible-test needs the collection at .../ansible_collections/gpuops/sharing for real
# (it resolves symlinks), so sanity/integration run on a fresh copy of the working tree.
$(TESTTREE): FORCE
	@rm -rf $(TESTROOT) && mkdir -p $@
	@git -C $(ROOT) ls-files -z -co --exclude-standard | (cd $(ROOT) && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C $@
FORCE:

# ---------------------------------------------------------------- tests
test: test-quick fleet-test
	@echo "== make test: all parts passed"

test-quick: simulator-tests units units-floor sanity sanity-floor integration lint docs-lint build
	@echo "== make test-quick: all parts passed (fleet not run)"

simulator-tests: venv system-deps
	@echo "== simulator tests"
	cd $(ROOT) && PYTHONPATH=simulator $(VENV)/bin/python -m pytest -q -p no:cacheprovider simulator/tests

units: venv
	@echo "== unit tests (ansible-core 2.21, Python 3.13)"
	cd $(ROOT) && $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit

units-floor: venv-floor
	@echo "== unit tests (ansible-core 2.18, Python 3.11)"
	cd $(ROOT) && $(VENV_FLOOR)/bin/python -m pytest -q -p no:cacheprovider tests/unit

sanity: venv system-deps $(TESTTREE)
	@echo "== ansible-test sanity (ansible-core 2.21)"
	@$(ROOT)/hacking/install_get_pip.sh $(VENV)
	cd $(TESTTREE) && PATH=$(VENV)/bin:$$PATH ansible-test sanity --local --python $$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no

sanity-floor: venv-floor system-deps $(TESTTREE)
	@echo "== ansible-test sanity (ansible-core 2.18 floor)"
	@$(ROOT)/hacking/install_get_pip.sh $(VENV_FLOOR)
	cd $(TESTTREE) && PATH=$(VENV_FLOOR)/bin:$$PATH ansible-test sanity --local --python 3.11 --color no

integration: venv $(TESTTREE)
	@echo "== ansible-test integration (simulated GPUs)"
	cd $(TESTTREE) && PATH=$(VENV)/bin:$$PATH GPUSIM_PYTHONPATH=$(ROOT)/simulator \
	  ansible-test integration --local --python $$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no

lint: venv
	@echo "== ansible-lint (production profile), ruff, yamllint"
	cd $(ROOT) && PATH=$(VENV)/bin:$$PATH ansible-lint --profile production --offline -q
	cd $(ROOT) && $(VENV)/bin/ruff check plugins simulator tests hacking bench demo
	cd $(ROOT) && $(VENV)/bin/yamllint -s .

docs-lint: venv
	@echo "== antsibull-docs lint, changelog lint"
	cd $(COLLECTIONS)/ansible_collections/gpuops/sharing && PATH=$(VENV)/bin:$$PATH antsibull-docs lint-collection-docs --plugin-docs .
	cd $(ROOT) && $(VENV)/bin/antsibull-changelog lint

build: venv
	@echo "== ansible-galaxy collection build"
	@rm -rf $(BUILD)/dist && mkdir -p $(BUILD)/dist
	cd $(ROOT) && $(VENV)/bin/ansible-galaxy collection build --output-path $(BUILD)/dist .
	@$(VENV)/bin/python $(ROOT)/hacking/check_artifact.py $(BUILD)/dist/gpuops-sharing-*.tar.gz

# ---------------------------------------------------------------- demo and benchmarks
demo: venv
	@cd $(ROOT) && PATH=$(VENV)/bin:$$PATH $(VENV)/bin/python demo/run.py

bench: venv
	@cd $(ROOT) && PATH=$(VENV)/bin:$$PATH PYTHONPATH=simulator $(VENV)/bin/python bench/run.py

clean:
	rm -rf $(BUILD) $(TESTROOT) demo/.run bench/.run

-include tests/fleet/fleet.mk
