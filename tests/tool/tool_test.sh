#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tool_test.sh: runs the built `llbitmap` tool and checks its output and exit codes.
#
#   tool_test.sh examine TOOL MAKE_CRASH_IMAGES [PYTHON]
#       create, examine (text and --json) a fresh file, crash images (Dirty, NeedSync,
#       stale, many ranges), a zeroed state block, and the refusals (missing, foreign,
#       truncated, corrupt superblock), checking that examine never changes a file.
#
# Every check that fails prints what it expected and what it got; the script exits 1
# if any failed.
set -u

mode=${1:?mode}
tool=${2:?tool}
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# expect_line FILE REGEX DESCRIPTION: FILE has a line matching the extended REGEX.
expect_line() {
  if ! grep -Eq -- "$2" "$1"; then
    fail "$3: no line matching /$2/ in:"
    sed 's/^/    | /' "$1" >&2
  fi
}

# run_rc EXPECTED_RC OUT ERR CMD...: runs CMD, checks its exit status.
run_rc() {
  local want=$1 out=$2 err=$3
  shift 3
  "$@" >"$out" 2>"$err"
  local rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "'$*' exited $rc, expected $want; stderr:"
    sed 's/^/    | /' "$err" >&2
  fi
}

sum() { sha256sum "$1" | cut -d' ' -f1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/llbitmap-tool-test.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
out=$work/out
err=$work/err

# refuse NAME FILE MESSAGE_REGEX: examine FILE fails with exit 1 and a one-line message
# that names the file and matches MESSAGE_REGEX; the file's bytes are unchanged.
refuse() {
  local name=$1 file=$2 regex=$3 before=missing after=missing
  [ -e "$file" ] && before=$(sum "$file")
  run_rc 1 "$out" "$err" "$tool" examine "$file"
  [ -e "$file" ] && after=$(sum "$file")
  [ "$before" = "$after" ] || fail "$name: examine changed the file ($before -> $after)"
  [ "$(wc -l <"$err")" -eq 1 ] || fail "$name: expected a one-line message, got $(wc -l <"$err") lines"
  expect_line "$err" "^llbitmap: examine $file: .*$regex" "$name"
  [ -s "$out" ] && fail "$name: unexpected output on stdout"
  # --json fails the same way.
  run_rc 1 "$out" "$err" "$tool" examine --json "$file"
  [ -e "$file" ] && after=$(sum "$file")
  [ "$before" = "$after" ] || fail "$name: examine --json changed the file"
}

# check_json FILE PYTHON-EXPRESSIONS...: the --json output of FILE is valid JSON and
# every expression (over `d`, the parsed object) is true.
check_json() {
  local file=$1
  shift
  run_rc 0 "$work/json" "$err" "$tool" examine --json "$file"
  if [ -z "$python" ]; then
    echo "note: no python3, JSON of $file not validated" >&2
    return
  fi
  "$python" -m json.tool "$work/json" >/dev/null 2>"$err" || {
    fail "examine --json $file: not valid JSON:"
    sed 's/^/    | /' "$err" "$work/json" >&2
    return
  }
  local e
  for e in "$@"; do
    "$python" -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($e) else 1)" \
      "$work/json" || fail "examine --json $file: expected $e"
  done
}

case $mode in
examine)
  make_images=${3:?make_crash_images}
  python=${4:-}
  cd "$work" || exit 1

  # --- usage and create errors
  run_rc 0 "$out" "$err" "$tool" --help
  expect_line "$out" '^  examine FILE' "help lists examine"
  expect_line "$out" '^  create FILE' "help lists create"
  grep -q 'demo' "$out" && fail "the admin tool's help mentions a demo"
  run_rc 2 "$out" "$err" "$tool" demo
  run_rc 0 "$out" "$err" "$tool" --version
  expect_line "$out" '^llbitmap [0-9]+\.[0-9]+\.[0-9]+$' "version"
  run_rc 2 "$out" "$err" "$tool"
  run_rc 2 "$out" "$err" "$tool" frobnicate
  run_rc 2 "$out" "$err" "$tool" create fresh.bm
  expect_line "$err" 'missing --size' "create without --size"
  run_rc 2 "$out" "$err" "$tool" create fresh.bm --size 1Q
  run_rc 2 "$out" "$err" "$tool" examine
  [ -e fresh.bm ] && fail "a usage error created the file"

  # --- a fresh 1 GiB bitmap
  run_rc 0 "$out" "$err" "$tool" create fresh.bm --size 1G
  expect_line "$out" '^  chunk size +64 KiB \(65536 bytes\)$' "create: chunk size"
  expect_line "$out" '^  chunks +16384$' "create: chunks"
  expect_line "$out" '^  file size +135168 bytes$' "create: file size"
  [ "$(stat -c %s fresh.bm)" -eq 135168 ] || fail "fresh.bm has the wrong size"
  run_rc 1 "$out" "$err" "$tool" create fresh.bm --size 1G
  expect_line "$err" '^llbitmap: create fresh.bm: File exists$' "create over an existing file"
  run_rc 1 "$out" "$err" "$tool" create bad.bm --size 1G --chunk 3K
  expect_line "$err" '^llbitmap: create bad.bm: invalid bitmap geometry' "create with a bad chunk"
  run_rc 1 "$out" "$err" "$tool" create bad.bm --size 1G --barrier-idle 0
  expect_line "$err" '^llbitmap: create bad.bm: .*1 \.\. 86400000 ms' "create with a bad interval"
  [ -e bad.bm ] && fail "a failed create left bad.bm"

  before=$(sum fresh.bm)
  run_rc 0 "$out" "$err" "$tool" examine fresh.bm
  [ "$before" = "$(sum fresh.bm)" ] || fail "examine changed fresh.bm"
  expect_line "$out" '^  magic +0x6d746962' "magic"
  expect_line "$out" '^  version +6 ' "version"
  expect_line "$out" '^  uuid +[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' "uuid"
  expect_line "$out" '^  device uuid +none \(not bound to a device\)$' "device uuid"
  expect_line "$out" '^  events +2$' "events after create and close"
  expect_line "$out" '^  state +0x0 \(none\)$' "state"
  expect_line "$out" '^  chunk size +64 KiB \(65536 bytes\)$' "chunk size"
  expect_line "$out" '^  chunks +16384$' "chunks"
  expect_line "$out" '^  device size +1 GiB \(1073741824 bytes\)$' "device size"
  expect_line "$out" '^  sync size +2097152 sectors$' "sync size"
  expect_line "$out" '^  space +128 KiB \(131072 bytes\)$' "space"
  expect_line "$out" '^  block size +4096 bytes$' "block size"
  expect_line "$out" '^  daemon sleep +30000 ms$' "daemon sleep"
  expect_line "$out" '^  barrier idle +5000 ms$' "barrier idle"
  expect_line "$out" '^  pages +5$' "pages"
  expect_line "$out" '^  blocks +32$' "blocks"
  expect_line "$out" '^  unwritten +16384 ' "unwritten count"
  expect_line "$out" '^  clean +0 ' "clean count"
  expect_line "$out" '^  dirty +0 ' "dirty count"
  expect_line "$out" '^unverifiable blocks \(checksum mismatch\): none$' "no bad block"
  expect_line "$out" '^total to resync: 0 bytes' "nothing to resync"
  check_json fresh.bm \
    'd["superblock"]["magic"] == "0x6d746962"' \
    'd["superblock"]["version"] == 6' \
    'd["superblock"]["chunks"] == 16384' \
    'd["superblock"]["chunk_bytes"] == 65536' \
    'd["superblock"]["device_bytes"] == 1073741824' \
    'd["superblock"]["pages"] == 5 and d["superblock"]["blocks"] == 32' \
    'd["superblock"]["state_flags"] == []' \
    'd["superblock"]["device_bound"] == False and d["superblock"]["events"] == 2' \
    'd["counts"] == {"unwritten": 16384, "clean": 0, "dirty": 0, "need_sync": 0, "syncing": 0, "invalid": 0}' \
    'd["unverifiable_blocks"]["count"] == 0' \
    'd["resync"]["bytes"] == 0 and d["resync"]["ranges"] == []'
  [ "$before" = "$(sum fresh.bm)" ] || fail "examine --json changed fresh.bm"

  # --- options reach the file
  run_rc 0 "$out" "$err" "$tool" create opts.bm --size=10G --chunk 1M --space 64K --block 512 \
    --daemon-sleep 250 --barrier-idle 40 --assume-clean
  run_rc 0 "$out" "$err" "$tool" examine opts.bm
  expect_line "$out" '^  chunks +10240$' "opts: chunks"
  expect_line "$out" '^  chunk size +1 MiB ' "opts: chunk size"
  expect_line "$out" '^  block size +512 bytes$' "opts: block size"
  expect_line "$out" '^  blocks +128$' "opts: blocks"
  expect_line "$out" '^  daemon sleep +250 ms$' "opts: daemon sleep"
  expect_line "$out" '^  barrier idle +40 ms$' "opts: barrier idle"
  expect_line "$out" '^  state +0x10 \(clean\)$' "opts: state flag"
  expect_line "$out" '^  clean +10240 \(100\.00%\)$' "opts: clean count"

  # --- refusals: nothing is modified
  refuse missing "$work/missing.bm" 'No such file or directory'
  head -c 135168 /dev/urandom >foreign.bm
  refuse foreign foreign.bm 'not an llbitmap file'
  head -c 65536 fresh.bm >truncated.bm
  refuse truncated truncated.bm 'size does not match.*whole device must be resynced'
  cp fresh.bm flipped.bm
  printf '\377' | dd of=flipped.bm bs=1 seek=100 conv=notrunc status=none
  refuse flipped flipped.bm 'corrupt bitmap superblock.*whole device must be resynced'

  # --- a zeroed state block (assume-clean, so that zeros differ from the contents)
  run_rc 0 "$out" "$err" "$tool" create clean.bm --size 1G --assume-clean
  cp clean.bm zeroed.bm
  dd if=/dev/zero of=zeroed.bm bs=4096 seek=1 count=1 conv=notrunc status=none
  before=$(sum zeroed.bm)
  run_rc 0 "$out" "$err" "$tool" examine zeroed.bm
  [ "$before" = "$(sum zeroed.bm)" ] || fail "examine changed zeroed.bm"
  expect_line "$out" '^unverifiable blocks \(checksum mismatch\): 1, holding 4096 chunks; their chunks count as need sync$' "zeroed: bad block"
  expect_line "$out" '^  block 1: chunks 3072\.\.7167 \(4096 chunks\)$' "zeroed: block 1"
  expect_line "$out" '^  unwritten +4096 ' "zeroed: stored unwritten"
  expect_line "$out" '^  clean +12288 ' "zeroed: stored clean"
  expect_line "$out" '^resync on reopen \(reload\): 4096 chunks in 1 range$' "zeroed: resync"
  expect_line "$out" '^  \[201326592, 469762048\) +256 MiB at 192 MiB' "zeroed: range"
  expect_line "$out" '^total to resync: 268435456 bytes \(256 MiB\), 25\.00% of the device$' "zeroed: total"
  check_json zeroed.bm \
    'd["unverifiable_blocks"]["count"] == 1' \
    'd["unverifiable_blocks"]["blocks"] == [{"block": 1, "first_chunk": 3072, "chunks": 4096}]' \
    'd["resync"]["ranges"] == [{"offset": 201326592, "length": 268435456, "first_chunk": 3072, "chunks": 4096}]' \
    'd["resync"]["bytes"] == 268435456 and d["resync"]["percent"] == 25.0'

  # --- crash images: Dirty and NeedSync chunks, stale flag, many ranges
  "$make_images" "$work" || fail "make_crash_images failed"
  run_rc 0 "$out" "$err" "$tool" examine crash.bm
  expect_line "$out" '^  clean +16378 ' "crash: clean"
  expect_line "$out" '^  dirty +5 ' "crash: dirty"
  expect_line "$out" '^  need sync +1 ' "crash: need sync"
  expect_line "$out" '^resync on reopen \(reload\): 6 chunks in 4 ranges$' "crash: resync"
  expect_line "$out" '^  \[0, 65536\) ' "crash: range 1"
  expect_line "$out" '^  \[10485760, 10682368\) ' "crash: range 2"
  expect_line "$out" '^  \[536870912, 536936448\) ' "crash: range 3"
  expect_line "$out" '^  \[1073676288, 1073741824\) ' "crash: range 4"
  expect_line "$out" '^total to resync: 393216 bytes \(384 KiB\), 0\.04% of the device$' "crash: total"
  check_json crash.bm \
    'd["counts"]["dirty"] == 5 and d["counts"]["need_sync"] == 1' \
    'd["resync"]["mode"] == "reload" and d["resync"]["chunks"] == 6' \
    '[(r["offset"], r["length"]) for r in d["resync"]["ranges"]] == [(0, 65536), (10485760, 196608), (536870912, 65536), (1073676288, 65536)]'

  run_rc 0 "$out" "$err" "$tool" examine crash-stale.bm
  expect_line "$out" '^  state +0x12 \(stale, clean\)$' "stale: flags"
  expect_line "$out" '^resync on reopen \(stale: every chunk that is not unwritten\): 16384 chunks in 1 range$' "stale: resync"
  expect_line "$out" '^total to resync: 1073741824 bytes \(1 GiB\), 100\.00% of the device$' "stale: total"
  check_json crash-stale.bm 'd["superblock"]["state_flags"] == ["stale", "clean"]' \
    'd["resync"]["mode"] == "stale" and d["resync"]["percent"] == 100.0'

  # After the clean close the Dirty chunks are Clean again; the chunk written while
  # degraded stays NeedSync until a resync copies it.
  run_rc 0 "$out" "$err" "$tool" examine live.bm
  expect_line "$out" '^  clean +16383 ' "live: clean after close"
  expect_line "$out" '^  dirty +0 ' "live: no dirty after close"
  expect_line "$out" '^  need sync +1 ' "live: need sync after close"
  expect_line "$out" '^resync on reopen \(reload\): 1 chunk in 1 range$' "live: resync"
  expect_line "$out" '^  \[536870912, 536936448\) ' "live: range"
  expect_line "$out" '^  device uuid +00112233-4455-6677-8899-aabbccddeeff$' "live: device uuid"
  expect_line "$out" '^  events +2$' "live: events after open and close"
  check_json live.bm 'd["superblock"]["device_bound"] == True' \
    'd["superblock"]["device_uuid"] == "00112233-4455-6677-8899-aabbccddeeff"' \
    'd["superblock"]["events"] == 2'

  # A bitmap open for writing holds an exclusive flock on its file; examine takes no
  # lock, so it reads the file all the same (here flock(1) holds the lock for it), and
  # still changes nothing.
  if command -v flock >/dev/null; then
    before=$(sum live.bm)
    run_rc 0 "$out" "$err" flock --exclusive --nonblock live.bm "$tool" examine live.bm
    expect_line "$out" '^resync on reopen \(reload\): 1 chunk in 1 range$' "live, locked: resync"
    [ "$(sum live.bm)" = "$before" ] || fail "live, locked: examine changed the file"
  else
    echo "note: no flock(1), examine of a locked file not checked" >&2
  fi

  run_rc 0 "$out" "$err" "$tool" examine many.bm
  expect_line "$out" '^resync on reopen \(reload\): 30 chunks in 30 ranges$' "many: resync"
  [ "$(grep -c '^  \[' "$out")" -eq 20 ] || fail "many: expected 20 listed ranges"
  expect_line "$out" '^  \.\.\. and 10 more ranges$' "many: summary of the rest"
  run_rc 0 "$out" "$err" "$tool" examine many.bm --all
  [ "$(grep -c '^  \[' "$out")" -eq 30 ] || fail "many --all: expected 30 listed ranges"
  grep -q 'more ranges' "$out" && fail "many --all: unexpected '... more ranges'"
  check_json many.bm 'len(d["resync"]["ranges"]) == 20 and d["resync"]["omitted_ranges"] == 10' \
    'd["resync"]["range_count"] == 30'
  ;;

*)
  echo "unknown mode $mode" >&2
  exit 2
  ;;
esac

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all checks passed"
