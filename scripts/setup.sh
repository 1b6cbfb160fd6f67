#!/usr/bin/env bash
# Installs what building and testing llbitmap needs, on Debian 12 (bookworm), when missing:
# a C++20 compiler (g++ 12), CMake >= 3.25, Ninja, pkg-config, liburcu >= 0.13 (liburcu-dev),
# GoogleTest/GoogleMock >= 1.12 and Google Benchmark >= 1.7 (their CMake packages), the
# spin model checker (models/), clang with its libFuzzer runtime (scripts/fuzz.sh), the
# static checkers of scripts/lint.sh (clang-format, clang-tidy, shellcheck), and for the
# nbd tests and bench/e2e only: nbdkit, nbdkit-plugin-dev, fio, libnbd-bin (nbdcopy,
# nbdinfo) and gnuplot-nox; for the io_uring example engine (examples/uring_mirror) and its
# tests: liburing-dev (found through pkg-config `liburing`) and strace.
#
# Idempotent: when everything is present it installs nothing and returns at once. Otherwise
# it runs `apt-get update` and `apt-get install -y <missing packages>`, as root or through
# sudo; with neither it stops and prints the command to run.
#
# Usage: bash scripts/setup.sh [--check]     (--check: only report, exit 1 if anything is missing)
set -euo pipefail

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h | --help)
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit 0
    ;;
  *)
    echo "setup: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

say() { echo "setup: $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

# A CMake package config (<Name>Config.cmake or <name>-config.cmake) in a standard prefix.
have_cmake_package() {
  local name=$1 lower dir
  lower=$(echo "$name" | tr '[:upper:]' '[:lower:]')
  for dir in /usr/lib/*/cmake /usr/lib/cmake /usr/share/cmake /usr/local/lib/*/cmake \
    /usr/local/lib/cmake /usr/local/share/cmake; do
    if [[ -f "$dir/$name/${name}Config.cmake" || -f "$dir/$name/${lower}-config.cmake" ]]; then
      return 0
    fi
  done
  return 1
}

# version_ge A B: true if version A >= B (dotted numbers).
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

missing=()
need() { missing+=("$@"); }

have g++ || need g++
if have cmake; then
  cmake_version=$(cmake --version | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')
  version_ge "${cmake_version:-0}" 3.25 || need cmake
else
  need cmake
fi
have ninja || need ninja-build
have pkg-config || need pkg-config
# liburcu's bulletproof flavour, through pkg-config (checked only once pkg-config exists).
if ! have pkg-config || ! pkg-config --exists 'liburcu-bp >= 0.13'; then
  need liburcu-dev
fi
have_cmake_package GTest || need libgtest-dev libgmock-dev
have_cmake_package benchmark || need libbenchmark-dev
# The protocol model (models/, ctest spin_model) is checked with spin.
have spin || need spin
# The libFuzzer run of scripts/fuzz.sh (part of test.sh --full) needs clang's runtimes.
have clang++ || need clang
if ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  need libclang-rt-14-dev
fi
# scripts/lint.sh (part of test.sh --full): clang-format and clang-tidy 14, shellcheck.
have clang-format || have clang-format-14 || need clang-format
have clang-tidy || have clang-tidy-14 || need clang-tidy
have shellcheck || need shellcheck
# Used only by the nbd tests (tests/nbd, ctest -L nbd) and the end-to-end benchmark
# (bench/e2e): the mirror served by nbdkit (examples/nbdkit), driven by fio and nbdcopy,
# charted with gnuplot.
have nbdkit || need nbdkit
[[ -f /usr/include/nbdkit-plugin.h ]] || need nbdkit-plugin-dev
have fio || need fio
have nbdcopy || need libnbd-bin
have gnuplot || need gnuplot-nox
# The io_uring example engine (examples/uring_mirror, ctest -L uring): liburing through
# pkg-config (checked only once pkg-config exists), and strace for its no-blocking check.
if ! have pkg-config || ! pkg-config --exists liburing; then
  need liburing-dev
fi
have strace || need strace

if [[ ${#missing[@]} -eq 0 ]]; then
  say "all build and test dependencies are present"
  exit 0
fi

say "missing: ${missing[*]}"
if [[ $check_only -eq 1 ]]; then
  exit 1
fi
if ! have apt-get; then
  say "no apt-get here: install the packages above (or their equivalents) by hand" >&2
  exit 1
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif have sudo && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
elif have sudo && [[ -t 0 ]]; then
  say "installing needs root; sudo may ask for your password"
  as_root=(sudo)
else
  say "installing needs root, and sudo is not available without a password here." >&2
  say "run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
"${as_root[@]}" apt-get update -q
say "apt-get install -y ${missing[*]}"
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

# What was installed must now satisfy the build (e.g. liburcu >= 0.13, CMake >= 3.25).
if ! pkg-config --exists 'liburcu-bp >= 0.13'; then
  say "liburcu-bp >= 0.13 is still not found by pkg-config (found: $(pkg-config --modversion liburcu-bp 2>/dev/null || echo none))" >&2
  exit 1
fi
cmake_version=$(cmake --version | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')
if ! version_ge "${cmake_version:-0}" 3.25; then
  say "CMake ${cmake_version:-?} is too old: llbitmap needs CMake >= 3.25" >&2
  exit 1
fi
say "done"
