#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Model-checks the page barrier protocol (models/page_barrier.pml, docs/testing.md#spin-model)
# with Spin: the model as the code implements it must pass every check, and each
# deliberately broken variant must be rejected with a counterexample:
#
#   correct              safety (S1, S2, S6 assertions, no deadlock)      must pass
#   correct              LTL wake (L1), weak fairness                     must pass
#   correct              LTL suspend_ends (L2), weak fairness             must pass
#   correct              non-progress cycles, weak fairness               must pass
#   MARK_BEFORE_RAISE    safety: mark Dirty before raising (pre-ef4ca3d4bf09) must FAIL
#   NO_GRACE_PERIOD      safety: fold without a grace period              must FAIL
#   NO_WAKE_ON_TIMEOUT   LTL wake: no wake-up after a suspend timeout     must FAIL
#   NO_WAKE_ON_TIMEOUT   safety (the missing wake-up is a liveness bug)   must pass
#
# For each run it prints the states explored; counterexample trails are replayed into
# the work directory. Exit status 0 only if every outcome is the expected one.
#
#   bash scripts/spin.sh [--work-dir DIR]
#
# Needs spin (Debian package `spin`) and a C compiler (gcc).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model="$root/models/page_barrier.pml"
work=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --work-dir) work=${2:?--work-dir needs a path}; shift ;;
    -h | --help) sed -n '3,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "spin.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if ! command -v spin >/dev/null 2>&1; then
  echo "spin.sh: FAILED: spin is not installed, so the protocol model cannot be checked." >&2
  echo "spin.sh: install the Debian package: apt-get install -y spin" >&2
  exit 1
fi
cc=$(command -v gcc || command -v cc || true)
if [[ -z "$cc" ]]; then
  echo "spin.sh: FAILED: no C compiler (gcc) to build Spin's verifier" >&2
  exit 1
fi
[[ -f "$model" ]] || { echo "spin.sh: FAILED: $model is missing" >&2; exit 1; }
if [[ -z "$work" ]]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/llbitmap-spin.XXXXXX")
fi
rm -rf "$work"
mkdir -p "$work"
echo "spin.sh: $(spin -V | head -n1); model $model; work dir $work"

# Search limits: the deepest path of the correct model is about 300k steps; a search cut
# short by the depth limit would not prove anything, so it counts as a failure.
depth=1000000
hash=24

passed=0
failed=0

# check NAME DEFINE MODE EXPECT
#   MODE: safety | ltl:<name> | np        EXPECT: pass | fail
check() {
  local name=$1 define=$2 mode=$3 expect=$4
  local dir="$work/$name" cflags=() run=()
  mkdir -p "$dir"
  cp "$model" "$dir/page_barrier.pml"
  local dflag=()
  [[ -n "$define" ]] && dflag=("-D$define")
  case "$mode" in
    safety) cflags=(-DSAFETY -DNOCLAIM); run=(-m"$depth" -w"$hash") ;;
    ltl:*) cflags=(-DNFAIR=3); run=(-a -f -N "${mode#ltl:}" -m"$depth" -w"$hash") ;;
    np) cflags=(-DNP -DNOCLAIM -DNFAIR=3); run=(-l -f -m"$depth" -w"$hash") ;;
  esac
  # A failing variant only needs its counterexample: breadth-first gives the shortest.
  if [[ "$expect" == fail && "$mode" == safety ]]; then cflags+=(-DBFS); fi
  local start=$SECONDS outcome verdict
  (
    cd "$dir" &&
      spin "${dflag[@]}" -a page_barrier.pml >spin.log 2>&1 &&
      "$cc" -O2 -w -DCOLLAPSE "${cflags[@]}" -o pan pan.c >cc.log 2>&1 &&
      ./pan "${run[@]}" >pan.log 2>&1
  )
  local rc=$?
  local log="$dir/pan.log"
  local states depthr errors
  states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$log" 2>/dev/null | head -n1)
  depthr=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$log" 2>/dev/null | head -n1)
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$log" 2>/dev/null | head -n1)
  if [[ -z "$errors" ]]; then
    outcome="broken"  # spin, the compiler or pan failed before reporting
  elif grep -q 'max search depth too small' "$log"; then
    outcome="truncated"
  elif [[ "$errors" == 0 ]]; then
    outcome="pass"
  else
    outcome="fail"
  fi
  local what=""
  if [[ "$outcome" == fail ]]; then
    what=$(grep -m1 -oE 'assertion violated.*|acceptance cycle.*|non-progress cycle.*|invalid end state.*' "$log")
    (cd "$dir" && spin "${dflag[@]}" -t -p -g page_barrier.pml >trail.txt 2>&1)
  fi
  if [[ "$outcome" == "$expect" ]]; then
    verdict="ok"
    passed=$((passed + 1))
  else
    verdict="UNEXPECTED"
    failed=$((failed + 1))
  fi
  printf '%-10s %-20s %-18s expect %-4s got %-9s %12s states, depth %8s, %3ds %s\n' \
    "$verdict" "$name" "$mode" "$expect" "$outcome" "${states:-?}" "${depthr:-?}" \
    $((SECONDS - start)) "${what:+($what)}"
  if [[ "$verdict" != ok ]]; then
    echo "  spin/pan output: $dir/{spin,cc,pan}.log" >&2
    [[ $rc -ne 0 || "$outcome" == broken ]] && tail -n 5 "$dir"/*.log >&2
    [[ "$outcome" == fail ]] && echo "  counterexample: $dir/trail.txt" >&2
  elif [[ "$outcome" == fail ]]; then
    echo "           counterexample (as expected): $dir/trail.txt"
  fi
}

check correct "" safety pass
check correct-wake "" ltl:wake pass
check correct-suspend "" ltl:suspend_ends pass
check correct-np "" np pass
check mark-before-raise MARK_BEFORE_RAISE safety fail
check no-grace-period NO_GRACE_PERIOD safety fail
check no-wake-wake NO_WAKE_ON_TIMEOUT ltl:wake fail
check no-wake-safety NO_WAKE_ON_TIMEOUT safety pass

echo "spin_model: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
