# relviz: the two commands are `make app` and `make test`; everything else here serves them.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# The environment is rebuilt only when what defines it changes.
ENV_HASH := $(shell cat requirements.txt requirements.lock pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.relviz-env-$(ENV_HASH)
# Ignore machine-wide pip settings: some machines offer a local CPU-only torch wheel that breaks
# torchvision; the registry's torch build is the one that works everywhere.
PIP := env PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: app test env sysdeps browser workspace dataset warm lock

# A first `make app` says what it does, what each step is expected to take, and what it took
# (expectations: docs/setup-timing.md, measured on a 2-core machine).
TIMED = bash -c 'echo "==> $$0"; start=$$SECONDS; "$$@"; rc=$$?; echo "    ($$0: $$((SECONDS - start)) s)"; exit $$rc'

app:
	@$(TIMED) "environment: .venv (first time 3-6 min, then a second)" $(MAKE) --no-print-directory env
	@$(TIMED) "workspace: demo dataset (first time about 90 s, then a second)" $(MAKE) --no-print-directory dataset
	@$(TIMED) "app caches: relviz warm (first time about 30 s, then a few seconds)" $(MAKE) --no-print-directory warm
	@echo "==> starting the app on http://$(HOST):$(PORT) (ready in about 10 s)"
	$(VENV)/bin/relviz app --host $(HOST) --port $(PORT)

test: env browser
	$(VENV)/bin/python -m pytest

env: sysdeps $(STAMP)

$(STAMP):
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -r requirements.txt -c requirements.lock
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.relviz-env-*; touch $@
	@echo "environment ready: $(VENV)"

# open3d needs libusb-1.0 from the system.
sysdeps:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing libusb-1.0-0 (needed by open3d)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null; \
		else \
			echo "open3d needs libusb-1.0; install it with:  sudo apt-get install -y libusb-1.0-0" >&2; exit 1; \
		fi; \
	fi

# The real-browser test drives Debian's Chromium (no browser download); skipped where it is absent.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium (for the real-browser test)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "note: chromium is not installed (sudo apt-get install -y chromium); the browser test will be skipped"; \
		fi; \
	fi

workspace: dataset warm

dataset: env
	@$(VENV)/bin/relviz workspace >/dev/null
	@$(VENV)/bin/relviz demo --dataset-only

warm: env
	@$(VENV)/bin/relviz warm || echo "note: the app starts anyway; its pages compute what could not be cached"

# Re-freeze the whole resolved tree after changing requirements.txt.
lock:
	$(PIP) freeze --exclude-editable | grep -v -i '^relviz' > requirements.lock
