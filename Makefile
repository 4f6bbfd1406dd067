# gpuops.sharing — two commands on a fresh machine: `make demo` and `make test`.
#
# Everything is installed by this file into project-local virtualenvs:
#   .venv        main target: newest ansible-core (2.21) on Python 3.13 (3.12 if 3.13 is missing)
#   .venv-floor  the requires_ansible floor: ansible-core 2.18 on Python 3.11
#   .venv-2.19, .venv-2.20  the minors between floor and main (units + sanity), on Python 3.12
#   .venv-importer  Galaxy's galaxy-importer (it pins its own ansible-core/ansible-lint; kept apart)
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
PY_MID ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12) \
                      $(shell command -v python3.12 2>/dev/null))
VENV := $(ROOT)/.venv
VENV_FLOOR := $(ROOT)/.venv-floor
VENV_IMPORTER := $(ROOT)/.venv-importer
# every ansible-core minor of requires_ansible: 2.18 (floor) and 2.21 (main) have their venvs above
CORE_MIDS := 2.19 2.20
BUILD := $(ROOT)/.build
COLLECTIONS := $(BUILD)/collections
# outside the checkout: ansible-test walks up to the nearest .git and would list only tracked files
TESTROOT := $(or $(TMPDIR),/tmp)/gpuops-sharing-test-$(shell printf %s '$(ROOT)' | md5sum | cut -c1-8)
# each ansible-test run gets its own copy (the two lanes of make test run side by side): in a recipe,
# $(tree) is the copy for that target and $(fresh-tree) makes it
tree = $(TESTROOT)/$@/ansible_collections/gpuops/sharing
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1
PIP_QUIET := --quiet --no-warn-script-location
# pip's "Location ... is ignored" chatter about this machine's file:// mirrors is noise
PIP_FILTER := grep -v "^WARNING: Location 'file://" || true

.PHONY: help venv venv-floor system-deps collection-link test test-quick lane-a lane-b integration-vgpu integration-rest sanity sanity-floor units units-floor \
        simulator-tests integration lint docs-lint docs build artifact-check demo bench clean \
        $(addprefix units-,$(CORE_MIDS)) $(addprefix sanity-,$(CORE_MIDS))

help:
	@echo "make demo        run playbooks/site.yml on a simulated GPU fleet"
	@echo "make test        everything CI runs (sanity, units, integration, lint, docs, build, fleet)"
	@echo "make test-quick  the same without the booted fleet hosts"
	@echo "make docs        build the documentation site (.build/docsite/build/html)"
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

# .venv-2.19, .venv-2.20: ansible-core of that minor on Python 3.12 (a controller Python of both)
$(CORE_MIDS:%=$(ROOT)/.venv-%/.installed): $(ROOT)/.venv-%/.installed: requirements/core-%.txt requirements/core-%.lock
	@test -n "$(PY_MID)" || { echo "need Python 3.12 for the ansible-core 2.19/2.20 checks" >&2; exit 1; }
	@echo "== creating $(ROOT)/.venv-$* with $(PY_MID)"
	@test -x $(ROOT)/.venv-$*/bin/python || $(PY_MID) -m venv $(ROOT)/.venv-$*
	@($(ROOT)/.venv-$*/bin/pip install $(PIP_QUIET) -r requirements/core-$*.txt -c requirements/core-$*.lock 2>&1 | $(PIP_FILTER))
	@$(ROOT)/.venv-$*/bin/python -c "import ansible, pynvml, pytest"
	@touch $@

$(VENV_IMPORTER)/.installed: requirements/importer.txt requirements/importer.lock
	@test -n "$(PY_MAIN)" || { echo "need Python 3.13 or 3.12 for galaxy-importer" >&2; exit 1; }
	@echo "== creating $(VENV_IMPORTER) with $(PY_MAIN)"
	@test -x $(VENV_IMPORTER)/bin/python || $(PY_MAIN) -m venv $(VENV_IMPORTER)
	@($(VENV_IMPORTER)/bin/pip install $(PIP_QUIET) -r requirements/importer.txt -c requirements/importer.lock 2>&1 | $(PIP_FILTER))
	@$(VENV_IMPORTER)/bin/python -c "import galaxy_importer"
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

# kubernetes.core (galaxy.yml's dependency, for playbooks/cluster_bootstrap.yml) comes from the ansible package
# that requirements/main.txt installs in .venv (Galaxy cannot be reached); linked next to the collection so that
# ansible-lint, antsibull-docs and the playbook tests find it on ANSIBLE_COLLECTIONS_PATH
collection-link:
	@mkdir -p $(COLLECTIONS)/ansible_collections/gpuops
	@ln -sfn $(ROOT) $(COLLECTIONS)/ansible_collections/gpuops/sharing
	@k8s=$$(ls -d $(VENV)/lib/python3*/site-packages/ansible_collections/kubernetes 2>/dev/null | head -n 1); \
	  if [ -n "$$k8s" ]; then ln -sfn "$$k8s" $(COLLECTIONS)/ansible_collections/kubernetes; fi

# ansible-test needs the collection at .../ansible_collections/gpuops/sharing for real
# (it resolves symlinks), so sanity/integration run on a fresh copy of the working tree.
fresh-tree = rm -rf $(TESTROOT)/$@ && mkdir -p $(tree) && git -C $(ROOT) ls-files -z -co --exclude-standard \
  | (cd $(ROOT) && tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C $(tree)

# ---------------------------------------------------------------- tests
test: test-quick fleet-test
	@echo "== make test: all parts passed"

# Two lanes side by side (CI has 2 cores; each ansible-test run is mostly one process). Each part's output is
# kept in .build/test-logs/<part>.log and printed whole when the part ends; the environments are made first,
# one at a time. The fleet runs alone after.
LANE_a := simulator-tests integration-vgpu units units-floor $(addprefix units-,$(CORE_MIDS)) lint docs-lint docs
LANE_b := integration-rest sanity sanity-floor $(addprefix sanity-,$(CORE_MIDS)) artifact-check
test-quick: venv venv-floor $(CORE_MIDS:%=$(ROOT)/.venv-%/.installed) $(VENV_IMPORTER)/.installed system-deps
	@rm -rf $(BUILD)/test-logs && mkdir -p $(BUILD)/test-logs
	@started=$$(date +%s); $(MAKE) --no-print-directory -j2 -Onone lane-a lane-b; \
	echo "== make test-quick: all parts passed in $$(( $$(date +%s) - started ))s (fleet not run)"

lane-a lane-b: lane-%:
	@for part in $(LANE_$*); do \
	  log=$(BUILD)/test-logs/$$part.log; started=$$(date +%s); \
	  if $(MAKE) --no-print-directory -j1 $$part > $$log 2>&1; then result=passed; else result=FAILED; fi; \
	  { flock 9; cat $$log; echo "== $$part: $$result in $$(( $$(date +%s) - started ))s (lane $*)"; } 9>$(BUILD)/test-logs/.lock; \
	  [ $$result = passed ] || exit 1; done

simulator-tests: venv system-deps
	@echo "== simulator tests"
	cd $(ROOT) && PYTHONPATH=simulator $(VENV)/bin/python -m pytest -q -p no:cacheprovider simulator/tests

units: venv
	@echo "== unit tests (ansible-core 2.21, Python 3.13)"
	cd $(ROOT) && $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit

units-floor: venv-floor
	@echo "== unit tests (ansible-core 2.18, Python 3.11)"
	cd $(ROOT) && $(VENV_FLOOR)/bin/python -m pytest -q -p no:cacheprovider tests/unit

# units-2.19, units-2.20: what touches ansible-core's API (modules' main(), action and filter plugins, roles,
# playbooks, docs). The pure planners under tests/unit/plugins/module_utils import nothing from
# Ansible; they run on the newest core and on the floor (units, units-floor), not twice more.
MID_UNITS := tests/unit/plugins/modules tests/unit/plugins/action tests/unit/plugins/filter $(wildcard tests/unit/test_*.py)
$(addprefix units-,$(CORE_MIDS)): units-%: $(ROOT)/.venv-%/.installed collection-link
	@echo "== unit tests (ansible-core $*, Python 3.12): modules, action plugins, roles, playbooks"
	cd $(ROOT) && $(ROOT)/.venv-$*/bin/python -m pytest -q -p no:cacheprovider $(MID_UNITS)

sanity: venv system-deps
	@echo "== ansible-test sanity (ansible-core 2.21)"
	@$(ROOT)/hacking/install_get_pip.sh $(VENV)
	@$(fresh-tree)
	cd $(tree) && PATH=$(VENV)/bin:$$PATH ansible-test sanity --local --python $$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no

sanity-floor: venv-floor system-deps
	@echo "== ansible-test sanity (ansible-core 2.18 floor)"
	@$(ROOT)/hacking/install_get_pip.sh $(VENV_FLOOR)
	@$(fresh-tree)
	cd $(tree) && PATH=$(VENV_FLOOR)/bin:$$PATH ansible-test sanity --local --python 3.11 --color no

# sanity-2.19, sanity-2.20
$(addprefix sanity-,$(CORE_MIDS)): sanity-%: $(ROOT)/.venv-%/.installed collection-link system-deps
	@echo "== ansible-test sanity (ansible-core $*)"
	@$(ROOT)/hacking/install_get_pip.sh $(ROOT)/.venv-$*
	@$(fresh-tree)
	cd $(tree) && PATH=$(ROOT)/.venv-$*/bin:$$PATH ansible-test sanity --local --python 3.12 --color no

# integration: every target. make test-quick runs it as two parts, one per lane: integration-vgpu (the
# vgpu_devices target, the longest: FUSE sysfs and the real mdevctl in a private mount namespace) and
# integration-rest (every other target), each in its own tree copy.
INTEGRATION_ARGS_integration :=
INTEGRATION_ARGS_integration-vgpu := vgpu_devices
INTEGRATION_ARGS_integration-rest := --exclude vgpu_devices
integration integration-vgpu integration-rest: venv
	@echo "== ansible-test integration (simulated GPUs) $(INTEGRATION_ARGS_$@)"
	@$(fresh-tree)
	cd $(tree) && PATH=$(VENV)/bin:$$PATH GPUSIM_PYTHONPATH=$(ROOT)/simulator \
	  ansible-test integration --local --python $$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no \
	  $(INTEGRATION_ARGS_$@)

lint: venv
	@echo "== ansible-lint (production profile), ruff, yamllint"
	cd $(ROOT) && PATH=$(VENV)/bin:$$PATH ansible-lint --profile production --offline -q
	cd $(ROOT) && $(VENV)/bin/ruff check plugins simulator tests hacking bench demo
	cd $(ROOT) && $(VENV)/bin/yamllint -s .

docs-lint: venv
	@echo "== antsibull-docs lint, changelog lint, the next release notes (dry run)"
	cd $(COLLECTIONS)/ansible_collections/gpuops/sharing && PATH=$(VENV)/bin:$$PATH antsibull-docs lint-collection-docs --plugin-docs .
	cd $(ROOT) && $(VENV)/bin/antsibull-changelog lint
	cd $(ROOT) && $(VENV)/bin/python hacking/check_release_notes.py
	cd $(ROOT) && $(VENV)/bin/python hacking/gen_docsite.py --check

# The documentation site: plugin, role and collection pages plus docs/*.md (as docs/docsite/rst,
# see hacking/gen_docsite.py), built by antsibull-docs and Sphinx into .build/docsite/build/html.
# sphinx-init's build.sh, with Sphinx's warnings checked by hacking/check_docs_log.py instead of -W:
# offline, references into docs.ansible.com (intersphinx) cannot resolve; every other warning fails.
docs: venv
	@echo "== antsibull-docs sphinx-init + build: the documentation site"
	@rm -rf $(BUILD)/docsite && mkdir -p $(BUILD)/docsite
	cd $(COLLECTIONS)/ansible_collections/gpuops/sharing && PATH=$(VENV)/bin:$$PATH antsibull-docs sphinx-init \
	  --use-current --fail-on-error --sphinx-theme alabaster --dest-dir $(BUILD)/docsite gpuops.sharing
	sed -i 's/^sphinx-build -M html rst build -c . -W --keep-going$$/sphinx-build -M html rst build -c . --keep-going/' \
	  $(BUILD)/docsite/build.sh
	cd $(BUILD)/docsite && PATH=$(VENV)/bin:$$PATH ./build.sh > build.log 2>&1 || { tail -40 build.log; exit 1; }
	$(VENV)/bin/python $(ROOT)/hacking/check_docs_log.py $(BUILD)/docsite/build.log
	@echo "== the site: $(BUILD)/docsite/build/html/index.html"

build: venv
	@echo "== ansible-galaxy collection build"
	@rm -rf $(BUILD)/dist && mkdir -p $(BUILD)/dist
	cd $(ROOT) && $(VENV)/bin/ansible-galaxy collection build --output-path $(BUILD)/dist .
	@$(VENV)/bin/python $(ROOT)/hacking/check_artifact.py $(BUILD)/dist/gpuops-sharing-*.tar.gz

# The artifact as Galaxy and Automation Hub read it: galaxy-importer with its default configuration
# (metadata, ansible-doc of every plugin, ansible-lint; any WARNING or ERROR fails), then the tarball
# installed (extracted and checksummed), the execution environment ansible-builder makes of it
# (hacking/check_ee.py: `ansible-builder create` and the collection's introspection, no container
# built), and ansible-test sanity run on that tree, with no ignore files.
ARTIFACT_ROOT := $(TESTROOT)-artifact
artifact-check: build $(VENV_IMPORTER)/.installed system-deps
	@echo "== the built artifact: galaxy-importer, ansible-test sanity on the extracted tarball"
	@rm -rf $(ARTIFACT_ROOT) && mkdir -p $(ARTIFACT_ROOT)
	@$(ROOT)/hacking/install_get_pip.sh $(VENV)
	@# Galaxy installs galaxy.yml's dependencies (kubernetes.core) before its ansible-lint; here Galaxy cannot be
	@# reached, so the importer's Python finds the one from .venv's ansible package on its path, and nothing else
	@rm -rf $(BUILD)/importer-deps && mkdir -p $(BUILD)/importer-deps/ansible_collections
	@k8s=$$(ls -d $(VENV)/lib/python3*/site-packages/ansible_collections/kubernetes | head -n 1); \
	  ln -sfn "$$k8s" $(BUILD)/importer-deps/ansible_collections/kubernetes
	cd $(ARTIFACT_ROOT) && PATH=$(VENV_IMPORTER)/bin:$$PATH PYTHONPATH=$(BUILD)/importer-deps ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=true \
	  $(VENV_IMPORTER)/bin/python $(ROOT)/hacking/check_artifact.py --importer $(BUILD)/dist/gpuops-sharing-*.tar.gz
	@# --no-deps: Galaxy (kubernetes.core, galaxy.yml's dependency) cannot be reached from here; sanity does not need it
	ANSIBLE_COLLECTIONS_PATH=$(ARTIFACT_ROOT) $(VENV)/bin/ansible-galaxy collection install --offline --no-deps -p $(ARTIFACT_ROOT) $(BUILD)/dist/gpuops-sharing-*.tar.gz
	$(VENV_IMPORTER)/bin/python $(ROOT)/hacking/check_ee.py $(VENV_IMPORTER)/bin/ansible-builder $(ARTIFACT_ROOT)
	cd $(ARTIFACT_ROOT)/ansible_collections/gpuops/sharing && PATH=$(VENV)/bin:$$PATH \
	  ansible-test sanity --local --python $$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no

# ---------------------------------------------------------------- demo and benchmarks
demo: venv
	@cd $(ROOT) && PATH=$(VENV)/bin:$$PATH $(VENV)/bin/python demo/run.py

bench: venv
	@cd $(ROOT) && PATH=$(VENV)/bin:$$PATH PYTHONPATH=simulator $(VENV)/bin/python bench/run.py

clean:
	rm -rf $(BUILD) $(TESTROOT) $(ARTIFACT_ROOT) demo/.run bench/.run

-include tests/fleet/fleet.mk
