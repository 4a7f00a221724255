# keypin: see README.md. `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
ARCH ?=
NARCH := $(or $(ARCH),x64)
BARCH := $(or $(ARCH),xtensawin)
KIT := $(ROOT)/build/mpy-kit/micropython
NATMOD_DIR := $(ROOT)/build/natmod/$(NARCH)
NATMOD := $(NATMOD_DIR)/keypin_spki.mpy
PORT ?=
FIRMWARE ?=

export PATH := $(VENV)/bin:$(PATH)

.PHONY: deps natmod test test-host demo bench build image deploy flash fuzz soak fleet clean

deps:
	@sh tools/deps.sh

# The native SPKI module for ARCH (x64 for the Unix port, xtensawin for ESP32).
natmod: deps
	@if [ "$(NARCH)" = xtensawin ] && ! command -v xtensa-esp32-elf-gcc >/dev/null; then \
	  echo "natmod: xtensa-esp32-elf-gcc not found on PATH; install ESP-IDF (its export.sh puts the Xtensa toolchain on PATH) and run make natmod ARCH=xtensawin again" >&2; exit 1; fi
	@mkdir -p $(NATMOD_DIR)
	@$(MAKE) --no-print-directory -s -C firmware/spki MPY_DIR=$(KIT) ARCH=$(NARCH) \
	  BUILD=$(NATMOD_DIR)/obj PYTHON=$(PY) Q=@ ECHO=@true >/dev/null
	@cp firmware/spki/keypin_spki.mpy $(NATMOD) && rm -f firmware/spki/keypin_spki.mpy

test: natmod
	@$(PY) -m pytest -q tests

demo: natmod
	@$(PY) tools/lab/demo/demo.py

bench: natmod
	@$(PY) tools/lab/bench/bench.py

# Parser fuzzing: libFuzzer (ASan+UBSan) then the differential stage. SECONDS=600 for longer.
SECONDS ?= 60
fuzz: natmod
	@bash tools/lab/fuzz/fuzz.sh $(SECONDS)

# The device image (boot.py, main.py, lib/ as .mpy, native module when built for ARCH).
IMAGE ?= build/image-$(BARCH)
CONFIG ?=
PINS ?=
build: deps
	@-$(MAKE) --no-print-directory natmod ARCH=$(BARCH) || echo "build: no native module for $(BARCH) (toolchain missing): the image uses the pure-Python SPKI reference"
	@$(VENV)/bin/keypin image --out $(IMAGE) --arch $(BARCH) --force $(if $(CONFIG),--config $(CONFIG)) $(if $(PINS),--pins $(PINS))

deploy: build
	@test -n "$(PORT)" || { echo "deploy: give PORT=/dev/ttyUSB0" >&2; exit 1; }
	@$(VENV)/bin/keypin deploy --port $(PORT) --image $(IMAGE)

flash: deps
	@test -n "$(PORT)" -a -n "$(FIRMWARE)" || { echo "flash: give PORT=/dev/ttyUSB0 FIRMWARE=ESP32_GENERIC-....bin" >&2; exit 1; }
	@$(VENV)/bin/keypin flash --port $(PORT) --firmware $(FIRMWARE)

# 2,000 HTTPS + MQTTS cycles in one device process, servers restarted every 200 cycles.
soak: natmod
	@$(PY) tools/lab/soak/soak.py

# N simulated devices rotating to backup 0 on one mosquitto, a rogue broker with the old key.
N ?= 1000
fleet: natmod
	@$(PY) tools/lab/fleet/fleet.py $(N)

clean:
	rm -rf build/natmod build/image-* firmware/spki/keypin_spki.mpy
