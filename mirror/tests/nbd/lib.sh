# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# lib.sh: helpers the nbd tests source. They run nbdkit with nbdkit-llmirror-plugin.so on
# a unix socket in a private temporary directory and drive it with fio, nbdcopy and the
# llbitmap tool (plus coreutils: dd, cmp, sed).
#
#   source lib.sh PLUGIN TOOL     PLUGIN: path of nbdkit-llmirror-plugin.so,
#                                 TOOL: path of the llbitmap tool (examine)
#
# Sets: $work (temporary directory, removed on exit), $sock, $uri (nbd+unix URI).
# nbd_start PARAM...   starts nbdkit with the plugin (and the filters in the array
#                      $nbd_filters), --exit-with-parent so that it cannot outlive the test,
#                      and returns once the plugin logged that it is ready (mirror open,
#                      start-up resync done); fails if nbdkit exits first. $log is its log.
# nbd_stop             SIGTERM, and checks that nbdkit exits with status 0.
# nbd_crash            SIGKILL (an unclean stop: no close, no bitmap flush).
# resync_line          the "llmirror: resync: ..." line of the current log ("" if none).
# examine_resync FILE  prints "<chunks> <bytes>" a reopen of bitmap FILE would resync.
# damage LEG OFF LEN   overwrites LEN bytes of LEG at OFF with random bytes.
# scribble_resync_ranges BITMAP LEG  overwrites LEG with random bytes in every range the
#                      bitmap says a reopen would resync (what a write that reached only
#                      one leg before the crash leaves behind); prints the range count.
# A trap stops any nbdkit still running (SIGKILL) and removes $work on every exit path.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 PLUGIN TOOL" >&2
  exit 2
fi
PLUGIN=$1
TOOL=$2
for f in "$PLUGIN" "$TOOL"; do
  if [[ ! -e $f ]]; then
    echo "FAIL: $f does not exist (build it first)" >&2
    exit 1
  fi
done

# Unix socket paths are limited to 107 bytes: keep the directory short.
work=$(mktemp -d /tmp/llmirror-nbd.XXXXXX)
sock=$work/nbd.sock
uri="nbd+unix:///?socket=$sock"
nbd_pid=""
log=""
nbd_starts=0
nbd_filters=()  # e.g. (--filter=fua): nbdkit filters for the next nbd_start

_nbd_cleanup() {
  local rc=$?
  if [[ -n $nbd_pid ]] && kill -0 "$nbd_pid" 2>/dev/null; then
    kill -KILL "$nbd_pid" 2>/dev/null || true
    wait "$nbd_pid" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 ]]; then
    echo "--- test failed (exit $rc); nbdkit logs:" >&2
    for f in "$work"/nbdkit.*.log; do
      [[ -e $f ]] && { echo "--- $f" >&2; cat "$f" >&2; }
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap _nbd_cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

step() { echo "=== $*"; }

nbd_start() {
  [[ -z $nbd_pid ]] || fail "nbd_start: nbdkit is already running"
  nbd_starts=$((nbd_starts + 1))
  log=$work/nbdkit.$nbd_starts.log
  rm -f "$sock"
  nbdkit --exit-with-parent -U "$sock" "${nbd_filters[@]}" "$PLUGIN" "$@" >"$log" 2>&1 &
  nbd_pid=$!
  local i
  for ((i = 0; i < 600; i++)); do
    if ! kill -0 "$nbd_pid" 2>/dev/null; then
      local rc=0
      wait "$nbd_pid" || rc=$?
      nbd_pid=""
      cat "$log" >&2
      fail "nbdkit exited (status $rc) before it was ready: $*"
    fi
    if [[ -S $sock ]] &&
      grep -Eq 'llmirror: (resync: |resync failed|[a-z]+ marked failed|resync=off|resync=background)' "$log"; then
      grep -q 'llmirror: resync failed' "$log" && fail "start-up resync failed: $(cat "$log")"
      return 0
    fi
    sleep 0.1
  done
  fail "nbdkit not ready after 60 s: $*"
}

nbd_stop() {
  [[ -n $nbd_pid ]] || fail "nbd_stop: nbdkit is not running"
  kill -TERM "$nbd_pid"
  local rc=0
  wait "$nbd_pid" || rc=$?
  nbd_pid=""
  [[ $rc -eq 0 ]] || fail "nbdkit exited with status $rc after SIGTERM"
  if grep -q 'error' "$log"; then
    fail "nbdkit logged an error: $(grep error "$log")"
  fi
}

nbd_crash() {
  [[ -n $nbd_pid ]] || fail "nbd_crash: nbdkit is not running"
  kill -KILL "$nbd_pid"
  wait "$nbd_pid" 2>/dev/null || true
  nbd_pid=""
}

resync_line() { grep -E 'llmirror: resync: [0-9]+ chunks' "$log" || true; }

# "<chunks> <bytes>" from a resync line: "llmirror: resync: C chunks, B bytes copied in S s"
resync_numbers() { resync_line | sed -E 's/.*resync: ([0-9]+) chunks, ([0-9]+) bytes.*/\1 \2/'; }

examine_resync() {
  "$TOOL" examine "$1" >"$work/examine.out" || fail "llbitmap examine $1 failed"
  local chunks bytes
  chunks=$(sed -nE 's/^resync on reopen \([^)]*\): ([0-9]+) chunks? in.*/\1/p' "$work/examine.out")
  bytes=$(sed -nE 's/^total to resync: ([0-9]+) bytes.*/\1/p' "$work/examine.out")
  [[ -n $chunks && -n $bytes ]] || fail "cannot read llbitmap examine's output: $(cat "$work/examine.out")"
  echo "$chunks $bytes"
}

# damage LEG OFFSET LENGTH: overwrites that byte range of LEG with random bytes.
damage() {
  dd if=/dev/urandom of="$1" bs=64K seek="$2" count="$3" oflag=seek_bytes \
    iflag=count_bytes,fullblock conv=notrunc status=none
}

scribble_resync_ranges() {
  "$TOOL" examine "$1" --all >"$work/examine.out" || fail "llbitmap examine $1 failed"
  local n=0 start end
  while read -r start end; do
    damage "$2" "$start" $((end - start))
    n=$((n + 1))
  done < <(sed -nE 's/^  \[([0-9]+), ([0-9]+)\).*/\1 \2/p' "$work/examine.out")
  echo "$n"
}

# fio through the plugin; the arguments are fio options (without the leading --).
run_fio() {
  local args=() a
  for a in "$@"; do args+=("--$a"); done
  timeout 120 fio --ioengine=nbd --uri="$uri" \
    --name=job "${args[@]}" >"$work/fio.out" 2>&1 || {
    cat "$work/fio.out" >&2
    return 1
  }
}
