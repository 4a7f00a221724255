#!/bin/bash
# tools/lab/fuzz/fuzz.sh [SECONDS]: fuzz keypin's SPKI parser (firmware/spki/spki_core.c).
#   1. builds tools/lab/fuzz/fuzz_spki.c with clang's libFuzzer + ASan + UBSan into build/fuzz/;
#   2. writes a seed corpus of real certificates (tools/lab/fuzz/fuzz_seeds.py) to build/fuzz/seeds/;
#   3. runs libFuzzer for SECONDS (default 60; one job, -max_len=8192);
#   4. runs the differential stage (tools/lab/fuzz/difffuzz.py): mutated certificates plus libFuzzer's
#      corpus, C module vs viper module vs Python reference in the Unix port, and vs cryptography.
# Last line: "fuzz: E execs, C crashes, D disagreements". Exit 0 only if C = D = 0;
# 1 if anything was found, 2 if a stage could not be built or run.
# Environment:
#   FUZZ_SEED=1          libFuzzer -seed and difffuzz --seed
#   FUZZ_DIFF_COUNT=10000  generated differential inputs (libFuzzer's corpus comes on top)
#   FUZZ_OUT=DIR         work directory instead of build/fuzz (tests use a temporary one)
#   FUZZ_KEEP_CORPUS=1   keep build/fuzz/corpus from earlier runs (longer, opt-in campaigns);
#                        by default every run starts from the seeds alone, so runs repeat.
# Crash inputs are kept as build/fuzz/crashes/crash-*; disagreements as build/fuzz/diff/*.der.
set -u
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
SECS=${1:-60}
SEED=${FUZZ_SEED:-1}
DIFF_COUNT=${FUZZ_DIFF_COUNT:-10000}
OUT=${FUZZ_OUT:-$ROOT/build/fuzz}
PY=$ROOT/.venv/bin/python
CC=${CC_FUZZ:-clang}
CORE=${FUZZ_CORE:-$ROOT/firmware/spki/spki_core.c}  # another core only for testing this script

case $SECS in ''|*[!0-9]*) echo "fuzz: SECONDS must be a whole number, not '$SECS'" >&2; exit 2 ;; esac

die() {
    echo "fuzz: $*" >&2
    exit 2
}

PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null
        sleep 1
        kill -9 "$PID" 2>/dev/null
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

mkdir -p "$OUT/crashes" "$OUT/diff" || die "cannot create $OUT"

# ---- 1. build ----
command -v "$CC" >/dev/null 2>&1 || die "$CC not found; install clang with libFuzzer: apt-get install clang"
if ! "$CC" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Wall -Wextra \
        -I"$ROOT/firmware/spki" "$ROOT/tools/lab/fuzz/fuzz_spki.c" "$CORE" \
        -o "$OUT/fuzz_spki" 2>"$OUT/build.log"; then
    cat "$OUT/build.log" >&2
    die "building the libFuzzer target failed (clang with the libFuzzer runtime needed: apt-get install clang)"
fi
if [ ! -f "$ROOT/build/natmod/x64/keypin_spki.mpy" ] || [ ! -f "$ROOT/build/viper/x64/keypin_spkiv.mpy" ]; then
    make -s -C "$ROOT" natmod viper >/dev/null || die "building the native modules (make natmod viper) failed"
fi

# ---- 2. seeds ----
[ -x "$PY" ] || die "$PY not found; run 'make deps' first"
rm -rf "$OUT/seeds"
"$PY" "$ROOT/tools/lab/fuzz/fuzz_seeds.py" "$OUT/seeds" || die "generating seed certificates failed"
if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then
    rm -rf "$OUT/corpus"
fi
mkdir -p "$OUT/corpus"
# DER tokens the mutator may splice in
printf '%s\n' '"\x30\x82"' '"\x30\x81"' '"\x30\x80"' '"\xa0\x03\x02\x01\x02"' '"\x02\x01\x00"' \
    '"\x05\x00"' '"\x03\x82"' '"\x03\x81"' '"\x84\xff\xff\xff\xff"' '"\x85"' '"\x81\x7f"' \
    '"\x82\x00\x80"' '"\x1f"' '"\xa3\x82"' '"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"' \
    '"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"' '"\x06\x03\x2b\x65\x70"' > "$OUT/der.dict"

# ---- 3. libFuzzer ----
before=$(ls "$OUT/crashes" | wc -l)
echo "fuzz: libFuzzer for ${SECS}s (log: $OUT/libfuzzer.log)"
# timeout bounds a stuck run (the fuzzer stops itself after SECS) and forwards TERM to it
timeout -k 10 $((SECS + 120)) "$OUT/fuzz_spki" -max_total_time="$SECS" -max_len=8192 -seed="$SEED" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -dict="$OUT/der.dict" \
    -artifact_prefix="$OUT/crashes/" "$OUT/corpus" "$OUT/seeds" >"$OUT/libfuzzer.log" 2>&1 </dev/null &
PID=$!
wait "$PID"
frc=$?
PID=
execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$OUT/libfuzzer.log" | tail -1)
if [ -z "$execs" ]; then
    # a crash ends libFuzzer before its final stats: take the last status line's count
    execs=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$OUT/libfuzzer.log" | tail -1)
fi
execs=${execs:-0}
crashes=$(( $(ls "$OUT/crashes" | wc -l) - before ))
if [ "$frc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes=1
fi
if [ "$frc" -ne 0 ]; then
    echo "fuzz: libFuzzer exit $frc; the report:" >&2
    grep -E 'ERROR|SUMMARY|invariant|runtime error|Test unit written' "$OUT/libfuzzer.log" | head -20 >&2
fi
grep -E '^(Done|stat::)' "$OUT/libfuzzer.log"
[ "$execs" -gt 0 ] || [ "$crashes" -gt 0 ] || die "libFuzzer did not run; see $OUT/libfuzzer.log"

# ---- 4. differential ----
"$PY" "$ROOT/tools/lab/fuzz/difffuzz.py" --count "$DIFF_COUNT" --seed "$SEED" --seeds "$OUT/seeds" \
    --corpus "$OUT/corpus" --out "$OUT/diff" | tee "$OUT/difffuzz.log"
drc=${PIPESTATUS[0]}
last=$(tail -1 "$OUT/difffuzz.log")
case $last in
    "difffuzz: "*" inputs, "*" disagreements") ;;
    *) die "the differential stage failed (exit $drc)" ;;
esac
n=$(echo "$last" | sed 's/^difffuzz: \([0-9]*\) inputs, \([0-9]*\) disagreements$/\1/')
dis=$(echo "$last" | sed 's/^difffuzz: \([0-9]*\) inputs, \([0-9]*\) disagreements$/\2/')

echo "fuzz: $((execs + n)) execs, $crashes crashes, $dis disagreements"
if [ "$crashes" -ne 0 ] || [ "$dis" -ne 0 ]; then
    exit 1
fi
exit 0
