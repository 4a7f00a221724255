# keypin: see README.md. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
ARCH ?= x64
KIT := $(ROOT)/build/mpy-kit/micropython
NATMOD_DIR := $(ROOT)/build/natmod/$(ARCH)
NATMOD := $(NATMOD_DIR)/keypin_spki.mpy
PORT ?=
FIRMWARE ?=

export PATH := $(VENV)/bin:$(PATH)

.PHONY: deps natmod test test-host demo bench build image deploy flash fuzz soak fleet clean

deps:
	@sh tools/deps.sh

# The native SPKI module for ARCH (x64 for the Unix port, xtensawin for ESP32).
natmod: deps
	@if [ "$(ARCH)" = xtensawin ] && ! command -v xtensa-esp32-elf-gcc >/dev/null; then \
	  echo "natmod: xtensa-esp32-elf-gcc not found on PATH; install ESP-IDF (its export.sh puts the Xtensa toolchain on PATH) and run make natmod ARCH=xtensawin again" >&2; exit 1; fi
	@mkdir -p $(NATMOD_DIR)
	@$(MAKE) --no-print-directory -s -C firmware/spki MPY_DIR=$(KIT) ARCH=$(ARCH) \
	  BUILD=$(NATMOD_DIR)/obj PYTHON=$(PY) Q=@ ECHO=@true >/dev/null
	@cp firmware/spki/keypin_spki.mpy $(NATMOD) && rm -f firmware/spki/keypin_spki.mpy

test: natmod
	@$(PY) -m pytest -q tests

demo: natmod
	@$(PY) tools/demo.py

bench: natmod
	@$(PY) tools/bench.py

clean:
	rm -rf build/natmod firmware/spki/keypin_spki.mpy
