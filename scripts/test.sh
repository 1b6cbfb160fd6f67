#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh), then configures, builds and tests llbitmap with
# the CMake presets (CMakePresets.json):
#
#   bash scripts/test.sh                the default build (preset "debug"): the whole ctest
#                                       suite (unit, stress, death, install, bench-smoke, ...)
#   bash scripts/test.sh --sanitizers   ... then the "asan" (ASan+UBSan) and "tsan" builds
#   bash scripts/test.sh --full         everything CI runs (.ci/run): debug, then "release"
#                                       (optimised: the fast-path inlining check and the
#                                       benchmark smoke tests as consumers build it), asan,
#                                       tsan, the "clang-tsa" build (clang's thread-safety
#                                       analysis: build only, no tests), 60 s of libFuzzer
#                                       (scripts/fuzz.sh, seed 1 or $LLBITMAP_FUZZ_SEED), then the static checks
#                                       (scripts/lint.sh: clang-format, clang-tidy on the
#                                       changed library sources, shellcheck)
#
# Options: -j N / --jobs N   parallel build and test jobs (default 2, or $LLBITMAP_JOBS)
#          --preset NAME     run only that step (debug, release, asan, tsan, clang-tsa,
#                            fuzz, lint)
#          --no-setup        skip scripts/setup.sh
# Build trees go to build/<preset>/ and are reused (incremental). Every build runs even if
# an earlier one failed; the exit status is non-zero if any step of any build failed.
# The output ends with a summary, then each build's ctest summary (failing builds last).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

jobs=${LLBITMAP_JOBS:-2}
presets=(debug)
setup=1
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sanitizers) presets=(debug asan tsan) ;;
    --full) presets=(debug release asan tsan clang-tsa fuzz lint) ;;
    --preset)
      [[ $# -ge 2 ]] || { echo "test.sh: --preset needs a name" >&2; exit 2; }
      presets=("$2")
      shift
      ;;
    -j | --jobs)
      [[ $# -ge 2 ]] || { echo "test.sh: $1 needs a number" >&2; exit 2; }
      jobs=$2
      shift
      ;;
    -j*) jobs=${1#-j} ;;
    --no-setup) setup=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "test.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "test.sh: -j wants a positive number, got '$jobs'" >&2; exit 2; }

banner() { printf '\n==== %s ====\n' "$*"; }
fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

if [[ $setup -eq 1 ]]; then
  banner "setup"
  bash "$root/scripts/setup.sh"
fi

banner "toolchain"
echo "g++:     $(g++ --version | head -n1)"
echo "clang++: $(clang++ --version 2>/dev/null | head -n1 || echo 'not installed')"
echo "cmake:   $(cmake --version | head -n1)"
echo "liburcu: $(pkg-config --modversion liburcu-bp)"
echo "cores:   $(nproc), jobs: $jobs"

# ThreadSanitizer (GCC 12's runtime) aborts at start-up on kernels with more than 28 bits
# of mmap randomisation ("unexpected memory mapping"). Running the tests without ASLR
# avoids that; the personality is inherited by every test ctest starts.
tsan_launcher=()
rnd_bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)
if [[ "$rnd_bits" -gt 28 ]]; then
  if setarch "$(uname -m)" -R true 2>/dev/null; then
    tsan_launcher=(setarch "$(uname -m)" -R)
    echo "note:    vm.mmap_rnd_bits=$rnd_bits: TSan tests run under 'setarch -R' (no ASLR)"
  else
    echo "warning: vm.mmap_rnd_bits=$rnd_bits and 'setarch -R' is not permitted: TSan may abort" >&2
  fi
fi

declare -A status=() detail=() elapsed=()
failed=0

# Steps that run no ctest suite: their summary line is all they report.
no_ctest() { [[ "$1" == fuzz || "$1" == clang-tsa || "$1" == lint ]]; }

run_preset() {
  local p=$1
  local log="$root/build/$p/ctest-output.log"
  if [[ "$p" == fuzz ]]; then
    # Not a ctest build: 60 s of libFuzzer on Bitmap::open (clang, ASan+UBSan), with a
    # fixed seed so that a failure here is reproduced by the same command (a random seed
    # is what the longer runs of scripts/fuzz.sh use, docs/testing.md#fuzzing).
    banner "fuzz: 60 s of libFuzzer on open() (seed ${LLBITMAP_FUZZ_SEED:-1})"
    if bash "$root/scripts/fuzz.sh" --seconds 60 --seed "${LLBITMAP_FUZZ_SEED:-1}" --build-dir "$root/build/fuzz" -j "$jobs"; then
      status[$p]=PASS detail[$p]="no crash, sanitizer report or violated property"
      return 0
    fi
    status[$p]=FAIL detail[$p]="scripts/fuzz.sh failed"
    return 1
  fi
  if [[ "$p" == lint ]]; then
    # Not a build: the static checks (build/debug's compile commands for clang-tidy).
    banner "lint: clang-format, clang-tidy, shellcheck"
    if bash "$root/scripts/lint.sh" -j "$jobs"; then
      status[$p]=PASS detail[$p]="clang-format, clang-tidy and shellcheck clean"
      return 0
    fi
    status[$p]=FAIL detail[$p]="scripts/lint.sh failed (see its summary above)"
    return 1
  fi
  rm -f "$log"  # a summary from an earlier run must not stand in for this one
  banner "$p: configure"
  if ! cmake --preset "$p"; then
    status[$p]=FAIL detail[$p]="configure failed"
    return 1
  fi
  banner "$p: build"
  if ! cmake --build --preset "$p" --parallel "$jobs"; then
    status[$p]=FAIL detail[$p]="build failed"
    return 1
  fi
  if [[ "$p" == clang-tsa ]]; then
    # Build only: -Wthread-safety -Werror has checked every lock annotation.
    status[$p]=PASS detail[$p]="built with -Wthread-safety -Werror (no tests)"
    return 0
  fi
  banner "$p: test"
  local launcher=()
  if [[ "$p" == tsan ]]; then launcher=("${tsan_launcher[@]}"); fi
  local rc=0
  "${launcher[@]}" ctest --preset "$p" --parallel "$jobs" 2>&1 </dev/null | tee "$log" || rc=$?
  local line
  line=$(grep -E '^[0-9]+% tests passed' "$log" | tail -n1 || true)
  if [[ $rc -ne 0 ]]; then
    status[$p]=FAIL detail[$p]="ctest failed: ${line:-no summary}"
    return 1
  fi
  status[$p]=PASS detail[$p]="$line"
}

total_start=$SECONDS
for p in "${presets[@]}"; do
  start=$SECONDS
  if ! run_preset "$p"; then
    failed=$((failed + 1))
  fi
  elapsed[$p]=$((SECONDS - start))
done

banner "summary"
for p in "${presets[@]}"; do
  printf '  %-9s %-4s  %7s  %s\n' "$p" "${status[$p]}" "$(fmt_time "${elapsed[$p]}")" "${detail[$p]}"
done
if [[ $failed -eq 0 ]]; then
  echo "result: PASS (${#presets[@]} build(s), $(fmt_time $((SECONDS - total_start))))"
else
  echo "result: FAIL ($failed of ${#presets[@]} build(s) failed, $(fmt_time $((SECONDS - total_start))))"
fi

# Each build's ctest summary block, passing builds first, so that the last lines are a
# failing build's if there is one.
print_ctest_summary() {
  local p=$1 log="$root/build/$1/ctest-output.log"
  echo
  echo "---- ctest summary: $p ----"
  if [[ -f "$log" ]] && grep -qE '^[0-9]+% tests passed' "$log"; then
    sed -n '/^[0-9]*% tests passed/,$p' "$log"
  else
    echo "$p: ${detail[$p]} (no ctest summary)"
  fi
}
for p in "${presets[@]}"; do
  no_ctest "$p" && continue  # its line is in the summary above
  if [[ "${status[$p]}" == PASS ]]; then print_ctest_summary "$p"; fi
done
for p in "${presets[@]}"; do
  no_ctest "$p" && continue
  if [[ "${status[$p]}" != PASS ]]; then print_ctest_summary "$p"; fi
done

[[ $failed -eq 0 ]]
