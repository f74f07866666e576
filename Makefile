# qifusion: `make demo` runs the main job on the embedded corpus; `make test` runs the test suite.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# flite, festival + festvox voices: the free voices of the `accents-free` corpus (docs/synth.md); the
# non-free MBROLA voices of the full `accents` corpus are never installed here: `make voices-nonfree`.
# libjemalloc2: the heap allocator `qifusion train` runs under where the system has it (qifusion/malloc.py)
APT_PACKAGES := espeak-ng sox wordnet-base fortunes-min fortunes chromium chromium-driver \
	flite festival festvox-kdlpc16k festvox-kallpc16k \
	cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev \
	zlib1g-dev libbz2-dev liblzma-dev \
	libjemalloc2
# Free, but in Debian's contrib component, which many systems do not enable: installed when apt can see
# it (the British voice `rab` of the accents corpora; `qifusion voices install-nonfree` enables contrib).
APT_OPTIONAL := festvox-rablpc16k
# KenLM's lmplz/build_binary (`qifusion lm`): Debian has no kenlm package, so they are built from the
# kenlm source package on PyPI (the same source as `pip install kenlm`) into the venv's bin/.
KENLM_VERSION := 0.3.0
KENLM_TOOLS := $(BIN)/lmplz $(BIN)/build_binary
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup apt demo test lint clean voices-nonfree

setup: apt $(STAMP) $(BIN)/lmplz

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@for p in $(APT_OPTIONAL); do dpkg -s $$p >/dev/null 2>&1 && continue; \
	  if apt-cache policy $$p 2>/dev/null | grep -q 'Candidate: [0-9]'; then \
	    echo "installing apt package: $$p"; \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$p >/dev/null; \
	  else echo "note: $$p (Debian contrib) is not available from apt here: the accents corpora's British" \
	    "voice rab needs it (qifusion voices install-nonfree enables contrib); everything else works"; fi; \
	done

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all]'
	@touch $(STAMP)

$(BIN)/lmplz: | $(STAMP)
	rm -rf build/kenlm && mkdir -p build/kenlm
	$(BIN)/pip download -q --no-deps --no-binary :all: --no-build-isolation kenlm==$(KENLM_VERSION) -d build/kenlm
	tar xzf build/kenlm/kenlm-$(KENLM_VERSION).tar.gz -C build/kenlm
	cmake -S build/kenlm/kenlm-$(KENLM_VERSION) -B build/kenlm/build -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/kenlm/build --target lmplz build_binary -j$$(nproc) >/dev/null
	cp build/kenlm/build/bin/build_binary build/kenlm/build/bin/lmplz $(BIN)/

# Adds Debian's contrib/non-free apt components and installs the MBROLA voices (non-commercial licence);
# prints every change and asks first. Needed only for `qifusion synth --preset accents`.
voices-nonfree: $(STAMP)
	$(BIN)/qifusion voices install-nonfree

demo: setup
	$(BIN)/python -m qifusion.demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
