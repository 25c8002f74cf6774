# One-command set-up: every target installs what it needs (virtualenv, pip, xmlsec1).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# axe-core (MPL-2.0), the accessibility checker the browser tests inject into every page:
# fetched from the npm registry at set-up into var/ (never committed), checked against its hash.
AXE_VERSION := 4.11.1
AXE_SHA256 := 5b86f813d96904f2d925fed5715877c75fc1cc140f89565fb42145e7801b2305
AXE := var/axe-core-$(AXE_VERSION)/axe.min.js

.PHONY: setup system-deps browser-deps interop-deps test test-compat demo demo-once bench clean lock image image-test

setup: system-deps $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --constraint constraints.txt -e '.[dev,postgres]'
	touch $@

# pysaml2 shells out to xmlsec1 to sign and verify SAML messages.
system-deps:
	@command -v xmlsec1 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xmlsec1; \
	  else \
	    echo "xmlsec1 is missing: install it with 'sudo apt-get install xmlsec1' (Debian/Ubuntu) or 'brew install libxmlsec1'" >&2; exit 1; \
	  fi; }

# The real-browser tests (tests/e2e/test_browser.py): the playwright Python package in the
# virtualenv drives Debian's chromium package. Never `playwright install`: no browser download.
# Without root the missing package is named and the tests skip (SATOSA_ORCID_REQUIRE_BROWSER=1,
# set by .ci/run, makes them fail instead).
browser-deps: $(VENV)/.installed $(AXE)
	@$(BIN)/python -c 'import playwright.sync_api' 2>/dev/null || $(BIN)/pip install -q 'playwright>=1.40'
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "chromium is missing: install it with 'sudo apt-get install chromium' to run the browser tests" >&2; \
	  fi; }

$(AXE):
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "npm is missing: install it (apt-get install npm) to fetch axe-core for the browser tests" >&2; \
	else \
	  set -e; rm -rf var/axe-download && mkdir -p var/axe-download $(@D); \
	  (cd var/axe-download && npm pack --silent axe-core@$(AXE_VERSION) >/dev/null); \
	  echo "$(AXE_SHA256)  var/axe-download/axe-core-$(AXE_VERSION).tgz" | sha256sum -c --quiet; \
	  tar -xzf var/axe-download/axe-core-$(AXE_VERSION).tgz -C $(@D) --strip-components=1 package/axe.min.js package/LICENSE; \
	  rm -rf var/axe-download; \
	fi

# The foreign clients of tests/interop: python3-saml and Authlib come with the dev extra
# (python3-saml's xmlsec is a manylinux wheel; where pip has to build it from source it needs
# libxmlsec1-dev and pkg-config, installed here too), Shibboleth SP 3 (shibd and Apache's
# mod_shib) from Debian. As root they are installed with apt (under flock, so parallel runs
# never run apt at once); without root the missing packages are named and the tests skip
# (SATOSA_ORCID_REQUIRE_FOREIGN=1 or SATOSA_ORCID_REQUIRE_SERVICES=1, set by .ci/run, fail instead).
INTEROP_APT := shibboleth-sp-utils libapache2-mod-shib apache2 libxmlsec1-dev pkg-config
interop-deps: $(VENV)/.installed
	@missing=""; \
	[ -x /usr/sbin/shibd ] || missing="$$missing shibboleth-sp-utils"; \
	[ -f /usr/lib/apache2/modules/mod_shib.so ] || missing="$$missing libapache2-mod-shib"; \
	[ -x /usr/sbin/apache2 ] || missing="$$missing apache2"; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	pkg-config --exists xmlsec1 2>/dev/null || missing="$$missing libxmlsec1-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    flock /tmp/apt.lock sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing"; \
	  else \
	    echo "the foreign-client tests (tests/interop) need:$$missing; install them with 'sudo apt-get install$$missing'" >&2; \
	  fi; \
	fi
	@$(BIN)/python -c 'import onelogin.saml2, xmlsec, authlib' 2>/dev/null || $(BIN)/pip install -q -e '.[dev]'

test: setup browser-deps interop-deps
	@# byte-compile first: threads importing fresh sources at once can trip CPython 3.11's cpython#106905
	$(BIN)/python -m compileall -q satosa_orcid_plugin tests > /dev/null
	$(BIN)/pytest $(PYTEST_ARGS)

# SATOSA compatibility (install_requires: satosa>=8.4,<9; the matrix is in the README).
# `make test` runs everything on the newest SATOSA pip resolves, under $(PYTHON). This runs the
# flow tests (SATOSA's real WSGI app over the real proxy_conf/) in throw-away virtualenvs:
#   $(PYTHON)                  + the OLDEST supported SATOSA   COMPAT_TESTS (the journeys)
#   python3.12 (if installed)  + the newest SATOSA             COMPAT_QUICK_TESTS
#   python3.13 (if installed)  + the oldest SATOSA             COMPAT_QUICK_TESTS
# After installing the plugin next to the pinned SATOSA it checks that pip kept that SATOSA.
# The virtualenvs live in $(COMPAT_DIR) and are reused until setup.cfg changes.
COMPAT_SATOSA_OLDEST ?= 8.4.0
COMPAT_DIR ?= .venv-compat
COMPAT_QUICK_TESTS ?= tests/flows/test_saml_plumbing.py tests/flows/test_oidc.py tests/flows/test_federation_metadata.py
# The oldest SATOSA gets the journeys too (hop, Institutional Connect, several workers, two IdPs);
# `make test-compat COMPAT_TESTS=tests/flows` runs every flow test there (slower).
COMPAT_TESTS ?= tests/flows/test_consent_hop.py tests/flows/test_institutional_connect.py tests/flows/test_any_worker.py \
	tests/flows/test_issuer_binding.py $(COMPAT_QUICK_TESTS)
# python3.12/python3.13 on PATH, else under pyenv (whose shims may exist without the version selected)
find_python = $(firstword $(foreach c,$(shell command -v python$(1) 2>/dev/null) $(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1)),$(shell $(c) -c 'print("$(c)")' 2>/dev/null)))
PYTHON312 ?= $(call find_python,3.12)
PYTHON313 ?= $(call find_python,3.13)

test-compat: system-deps
	@# every combination runs even when one fails; the target fails if any did
	@status=0; \
	$(MAKE) --no-print-directory _compat-run COMPAT_PY='$(PYTHON)' COMPAT_PIN='$(COMPAT_SATOSA_OLDEST)' COMPAT_RUN='$(COMPAT_TESTS)' || status=1; \
	if [ -n "$(PYTHON312)" ]; then \
	  $(MAKE) --no-print-directory _compat-run COMPAT_PY='$(PYTHON312)' COMPAT_PIN='' COMPAT_RUN='$(COMPAT_QUICK_TESTS)' || status=1; \
	else echo "test-compat: no python3.12 on this machine, skipped"; fi; \
	if [ -n "$(PYTHON313)" ]; then \
	  $(MAKE) --no-print-directory _compat-run COMPAT_PY='$(PYTHON313)' COMPAT_PIN='$(COMPAT_SATOSA_OLDEST)' COMPAT_RUN='$(COMPAT_QUICK_TESTS)' || status=1; \
	else echo "test-compat: no python3.13 on this machine, skipped"; fi; \
	exit $$status

_compat-run:
	@set -e; \
	pyver=$$($(COMPAT_PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	venv=$(COMPAT_DIR)/py$$pyver-satosa-$(or $(COMPAT_PIN),newest); \
	if [ ! -f $$venv/.installed ] || [ setup.cfg -nt $$venv/.installed ]; then \
	  echo "test-compat: building $$venv"; rm -rf $$venv; $(COMPAT_PY) -m venv $$venv; \
	  $$venv/bin/pip install -q --upgrade pip; \
	  if [ -n "$(COMPAT_PIN)" ]; then $$venv/bin/pip install -q 'satosa==$(COMPAT_PIN)'; fi; \
	  $$venv/bin/pip install -q -e '.[dev,postgres]'; \
	  touch $$venv/.installed; \
	fi; \
	have=$$($$venv/bin/python -c 'import importlib.metadata as m; print(m.version("satosa"))'); \
	if [ -n "$(COMPAT_PIN)" ] && [ "$$have" != "$(COMPAT_PIN)" ]; then \
	  echo "test-compat: installing the plugin replaced SATOSA $(COMPAT_PIN) by $$have" >&2; exit 1; fi; \
	echo "test-compat: Python $$pyver, SATOSA $$have: $(COMPAT_RUN)"; \
	$$venv/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_RUN)

demo: setup
	$(BIN)/satosa-orcid demo

demo-once: setup
	$(BIN)/satosa-orcid demo --once

bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(COMPAT_DIR) var demo-data .pytest_cache

# constraints.txt: every dependency (all extras) at one version, resolved by pip-compile
# (pip-tools) from setup.cfg; docker/requirements.txt: the image's runtime subset (extra
# postgres) at the same versions. `make setup`, CI and the image install from them. Run after
# changing setup.cfg, or to take newer releases; commit the result.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND='make lock' $(BIN)/pip-compile --quiet --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host
lock: $(VENV)/.installed
	@$(BIN)/python -c 'import piptools' 2>/dev/null || $(BIN)/pip install -q pip-tools
	$(PIP_COMPILE) --upgrade --all-extras --output-file constraints.txt setup.cfg
	$(PIP_COMPILE) --extra postgres --constraint constraints.txt --output-file docker/requirements.txt setup.cfg

# The image (docker/Dockerfile), labelled with the plugin version and the git commit. Needs a
# Docker daemon ($$DOCKER_HOST); .ci/image starts a private one and builds a stand-in base
# image when python:3.11-slim cannot be pulled. --network host: such a daemon has no bridge.
IMAGE ?= satosa-orcid:local
VERSION := $(shell sed -n 's/^version *= *//p' setup.cfg)
VCS_REF := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
image:
	nice docker build --network host -f docker/Dockerfile \
	  --build-arg VERSION=$(VERSION) --build-arg VCS_REF=$(VCS_REF) -t $(IMAGE) .

# Starts the image (and compose's stack, and nginx in front) and logs in through it:
# tests/image/. Needs the image, a Docker daemon, PostgreSQL, docker-compose and nginx.
# The two files run side by side (mostly waiting on containers); the compose run's output
# follows the other's.
image-test: setup
	@mkdir -p var
	@SATOSA_ORCID_IMAGE=$(IMAGE) $(BIN)/pytest -p no:cacheprovider tests/image/test_compose.py $(PYTEST_ARGS) \
	  > var/image-test-compose.log 2>&1 & compose=$$!; \
	SATOSA_ORCID_IMAGE=$(IMAGE) $(BIN)/pytest -p no:cacheprovider tests/image/test_image.py $(PYTEST_ARGS); single=$$?; \
	wait $$compose; both=$$?; echo "--- tests/image/test_compose.py"; cat var/image-test-compose.log; \
	[ $$single -eq 0 ] && [ $$both -eq 0 ]
