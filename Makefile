# One-command set-up: every target installs what it needs (virtualenv, pip, xmlsec1).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup system-deps browser-deps test demo demo-once bench clean lock image image-test

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
browser-deps: $(VENV)/.installed
	@$(BIN)/python -c 'import playwright.sync_api' 2>/dev/null || $(BIN)/pip install -q 'playwright>=1.40'
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "chromium is missing: install it with 'sudo apt-get install chromium' to run the browser tests" >&2; \
	  fi; }

test: setup browser-deps
	@# byte-compile first: threads importing fresh sources at once can trip CPython 3.11's cpython#106905
	$(BIN)/python -m compileall -q satosa_orcid_plugin tests > /dev/null
	$(BIN)/pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/satosa-orcid demo

demo-once: setup
	$(BIN)/satosa-orcid demo --once

bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var demo-data .pytest_cache

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
