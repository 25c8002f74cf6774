# One-command set-up: every target installs what it needs (virtualenv, pip, xmlsec1).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup system-deps browser-deps interop-deps test demo demo-once bench clean

setup: system-deps $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,postgres]'
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

demo: setup
	$(BIN)/satosa-orcid demo

demo-once: setup
	$(BIN)/satosa-orcid demo --once

bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var demo-data .pytest_cache
