#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Fuzzes Bitmap::open / Superblock::decode with libFuzzer (docs/testing.md#fuzzing; the
# target and its properties: tests/fuzz/fuzz_open.cc). Configures a separate build tree
# with clang++ and ASan+UBSan (LLBITMAP_FUZZ=ON), builds only the fuzz target, runs it on
# a copy of tests/fuzz/corpus and prints the number of executions.
#
#   bash scripts/fuzz.sh                 60 s, a random seed
#   bash scripts/fuzz.sh --seconds 1800  the nightly length
#   bash scripts/fuzz.sh --seed 1        the input sequence the full test run uses
#
# Options: --seconds N   how long to fuzz (default 60)
#          --seed N      libFuzzer's seed (default 0: a random one, printed by libFuzzer).
#                        One seed gives one input sequence on one build, so a run with a
#                        fixed seed covers a prefix of what a longer run with it covers.
#          --build-dir D the build tree (default build-fuzz)
#          -j N          build jobs (default 2, or $LLBITMAP_JOBS)
# Needs clang (clang++ 14 or later) and its runtimes (Debian: clang, libclang-rt-14-dev).
# Exit status: non-zero on a crash, sanitizer report or violated property; the input is
# left in <build-dir>/tests/fuzz/fuzz_open_run/artifacts/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=60
seed=0
build="$root/build-fuzz"
jobs=${LLBITMAP_JOBS:-2}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift ;;
    --seed) seed=${2:?--seed needs a number}; shift ;;
    --build-dir) build=${2:?--build-dir needs a path}; shift ;;
    -j) jobs=${2:?-j needs a number}; shift ;;
    -h | --help) sed -n '3,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds wants a positive number" >&2; exit 2; }
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seed wants a number" >&2; exit 2; }
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" "${generator[@]}" \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLLBITMAP_FUZZ=ON -DLLBITMAP_SANITIZE=address,undefined \
    -DLLBITMAP_BUILD_BENCH=OFF -DLLBITMAP_BUILD_TOOLS=OFF -DLLBITMAP_INSTALL=OFF
else
  cmake "$build" >/dev/null
fi
cmake --build "$build" --target fuzz_open -j "$jobs"

export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:suppressions=$root/tests/ubsan.supp}
exec bash "$root/tests/fuzz/run_fuzzer.sh" "$build/tests/fuzz/fuzz_open" "$root/tests/fuzz/corpus" \
  "$build/tests/fuzz/fuzz_open_run" "$seconds" "$seed"
