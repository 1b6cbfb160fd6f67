#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Runs the libFuzzer target fuzz_open (tests/fuzz/fuzz_open.cc, docs/testing.md#fuzzing) on a
# fresh copy of the seed corpus for a fixed time, and prints how many inputs it executed.
# It fails (non-zero) on any crash, sanitizer report or violated property; the input
# that caused it is left in WORKDIR/artifacts/ and named in the output.
#
#   run_fuzzer.sh FUZZER CORPUS_DIR WORKDIR SECONDS [SEED]
#
# SEED: libFuzzer's -seed (default 0: a random seed, which libFuzzer prints).
set -uo pipefail
if [[ $# -ne 4 && $# -ne 5 ]]; then
  echo "usage: $0 FUZZER CORPUS_DIR WORKDIR SECONDS [SEED]" >&2
  exit 2
fi
fuzzer=$1 corpus=$2 work=$3 seconds=$4 seed=${5:-0}
[[ -x "$fuzzer" ]] || { echo "run_fuzzer.sh: $fuzzer is not an executable" >&2; exit 2; }
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "run_fuzzer.sh: bad SECONDS '$seconds'" >&2; exit 2; }
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "run_fuzzer.sh: bad SEED '$seed'" >&2; exit 2; }
shopt -s nullglob
seeds=("$corpus"/*)
[[ ${#seeds[@]} -gt 0 ]] || { echo "run_fuzzer.sh: no seed in $corpus" >&2; exit 2; }

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp "${seeds[@]}" "$work/corpus/"

# -close_fd_mask=2: the library logs one line per opened image with an invalid state
# byte; libFuzzer and the sanitizers keep reporting on their copy of stderr, and so do
# the target's property checks.
"$fuzzer" -seed="$seed" -max_total_time="$seconds" -max_len=32768 -timeout=30 -rss_limit_mb=4096 \
  -close_fd_mask=2 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
  "$work/corpus" 2>&1 | tee "$work/fuzz.log"
rc=${PIPESTATUS[0]}

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log" | tail -n1)
corpus_n=$(find "$work/corpus" -type f | wc -l)
echo "fuzz_open: ${execs:-?} executions in ${seconds} s, corpus ${#seeds[@]} -> ${corpus_n} inputs"
if [[ $rc -ne 0 ]]; then
  echo "fuzz_open: FAILED (exit $rc); reproducer(s):" >&2
  ls -l "$work/artifacts" >&2
  exit "$rc"
fi
exit 0
