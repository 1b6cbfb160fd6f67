#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# demo_test.sh TOOL: runs `llbitmap demo` on a small device and checks its table: exit
# status 0, the legs identical after the resync and after the re-add, the re-add copied
# exactly the chunks written while degraded, fewer chunks resynced than the device has,
# and the temporary directory removed (or kept with --keep). Also the usage errors.
set -u

tool=${1:?tool}
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

work=$(mktemp -d "${TMPDIR:-/tmp}/llbitmap-demo-test.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
out=$work/out

# field LABEL: the value after a table label (the first word of it).
field() { sed -n "s/^    $1  *\([^ ]*\).*/\1/p" "$out" | head -1; }

TMPDIR=$work "$tool" demo --size 64M --seconds 1 --seed 7 >"$out" 2>&1
rc=$?
sed 's/^/    | /' "$out"
[ "$rc" -eq 0 ] || fail "demo exited $rc"
[ "$(field 'legs identical after the resync')" = yes ] || fail "legs not identical after the resync"
[ "$(field 'legs identical after the re-add')" = yes ] || fail "legs not identical after the re-add"
written=$(field 'chunks written while degraded')
copied=$(field 'chunks copied by the re-add')
[ -n "$written" ] && [ "$written" = "$copied" ] ||
  fail "re-add copied '$copied' chunks, '$written' were written while degraded"
need=$(field 'chunks NeedSync after the crash')
[ -n "$need" ] && [ "$need" -gt 0 ] && [ "$need" -lt 1024 ] ||
  fail "chunks NeedSync after the crash: '$need' (expected 1 .. 1023 of 1024)"
grep -Eq '^    full copy time \(no bitmap\) +[0-9.]+ s' "$out" || fail "no full copy time"
left=$(find "$work" -maxdepth 1 -name 'llbitmap-demo.*' | wc -l)
[ "$left" -eq 0 ] || fail "the demo left its directory behind"

# --keep and --dir keep the mirror's files.
mkdir "$work/keep"
"$tool" demo --size 4M --seconds 1 --seed 1 --keep --dir "$work/keep" >"$out" 2>&1 ||
  fail "demo --keep exited $?"
kept=$(find "$work/keep" -maxdepth 1 -name 'llbitmap-demo.*' | head -1)
[ -n "$kept" ] && [ -f "$kept/primary.img" ] && [ -f "$kept/mirror.bitmap" ] ||
  fail "--keep did not keep the mirror's files"

# Usage errors: exit status 2.
for bad in "--size 1K" "--seconds 0" "--bogus" "--seed x"; do
  # shellcheck disable=SC2086
  "$tool" demo $bad >"$out" 2>&1
  rc=$?
  [ "$rc" -eq 2 ] || fail "demo $bad exited $rc, expected 2"
done

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "demo test passed"
