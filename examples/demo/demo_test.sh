#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# demo_test.sh crash DEMO: runs `llbitmap-demo crash` on a small device and checks its
#   table: exit status 0, the legs identical after the resync and after the re-add, the
#   re-add copied exactly the chunks written while degraded, fewer chunks resynced than
#   the device has, and the temporary directory removed (or kept with --keep). Also the
#   usage errors.
# demo_test.sh barrier DEMO: runs `llbitmap-demo barrier --seconds 1`: the progress and
#   summary lines exist, the daemon suspended pages (suspends > 0) and none timed out.
set -u

mode=${1:?mode}
tool=${2:?demo program}
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

work=$(mktemp -d "${TMPDIR:-/tmp}/llbitmap-demo-test.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
out=$work/out

if [ "$mode" = barrier ]; then
  "$tool" barrier --seconds 1 --threads 2 --pages 8 --idle 20 >"$out" 2>&1 || fail "barrier exited $?"
  cat "$out"
  grep -Eq '^\[  1 s\] ' "$out" || fail "barrier: no progress line"
  grep -Eq '^summary: threads=2 pages=8 ' "$out" || fail "barrier: no summary line"
  suspends=$(sed -n 's/^summary: .* suspends=\([0-9]*\) .*/\1/p' "$out")
  if ! { [ -n "$suspends" ] && [ "$suspends" -gt 0 ]; }; then
    fail "barrier: expected suspends > 0, got '$suspends'"
  fi
  timeouts=$(sed -n 's/^summary: .* suspend_timeouts=\([0-9]*\) .*/\1/p' "$out")
  [ "$timeouts" = 0 ] || fail "barrier: expected no suspend timeouts, got '$timeouts'"
  for bad in "--threads 0" "--bogus"; do
    # shellcheck disable=SC2086
    "$tool" barrier $bad >"$out" 2>&1
    rc=$?
    [ "$rc" -eq 2 ] || fail "barrier $bad exited $rc, expected 2"
  done
  [ "$failures" -eq 0 ] || { echo "$failures check(s) failed" >&2; exit 1; }
  echo "barrier demo test passed"
  exit 0
fi
[ "$mode" = crash ] || { echo "unknown mode $mode" >&2; exit 2; }

# field LABEL: the value after a table label (the first word of it).
field() { sed -n "s/^    $1  *\([^ ]*\).*/\1/p" "$out" | head -1; }

TMPDIR=$work "$tool" crash --size 64M --seconds 1 --seed 7 >"$out" 2>&1
rc=$?
sed 's/^/    | /' "$out"
[ "$rc" -eq 0 ] || fail "crash exited $rc"
[ "$(field 'legs identical after the resync')" = yes ] || fail "legs not identical after the resync"
[ "$(field 'legs identical after the re-add')" = yes ] || fail "legs not identical after the re-add"
written=$(field 'chunks written while degraded')
copied=$(field 'chunks copied by the re-add')
if ! { [ -n "$written" ] && [ "$written" = "$copied" ]; }; then
  fail "re-add copied '$copied' chunks, '$written' were written while degraded"
fi
need=$(field 'chunks NeedSync after the crash')
if ! { [ -n "$need" ] && [ "$need" -gt 0 ] && [ "$need" -lt 1024 ]; }; then
  fail "chunks NeedSync after the crash: '$need' (expected 1 .. 1023 of 1024)"
fi
grep -Eq '^    full copy time \(no bitmap\) +[0-9.]+ s' "$out" || fail "no full copy time"
left=$(find "$work" -maxdepth 1 -name 'llbitmap-demo.*' | wc -l)
[ "$left" -eq 0 ] || fail "the demo left its directory behind"

# --keep and --dir keep the mirror's files.
mkdir "$work/keep"
"$tool" crash --size 4M --seconds 1 --seed 1 --keep --dir "$work/keep" >"$out" 2>&1 ||
  fail "crash --keep exited $?"
kept=$(find "$work/keep" -maxdepth 1 -name 'llbitmap-demo.*' | head -1)
if ! { [ -n "$kept" ] && [ -f "$kept/primary.img" ] && [ -f "$kept/mirror.bitmap" ]; }; then
  fail "--keep did not keep the mirror's files"
fi

# Usage errors: exit status 2.
for bad in "--size 1K" "--seconds 0" "--bogus" "--seed x"; do
  # shellcheck disable=SC2086
  "$tool" crash $bad >"$out" 2>&1
  rc=$?
  [ "$rc" -eq 2 ] || fail "crash $bad exited $rc, expected 2"
done

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "demo test passed"
