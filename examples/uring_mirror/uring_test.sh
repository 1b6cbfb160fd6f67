#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The tests of llbitmap-uring-mirror (ctest -L uring). Each runs the engine for a second
# or two in a new directory under /dev/shm (or $TMPDIR, /tmp) and removes it.
#
#   uring_test.sh run ENGINE MODE   1 s of the uniform workload in MODE with --json; the
#                                   JSON must parse, with iops > 0 and no errors. MODE
#                                   blocking also: one worker per write in flight, and
#                                   the bitmap file goes both ways between the modes
#                                   (blocking's Bitmap::create -> llbitmap's ReactorBitmap
#                                   -> blocking's Bitmap::open), each closing it cleanly
#                                   (--resync then finds nothing to copy, legs identical).
#                                   Every mode also: 0.5 s with --busy-poll and 2
#                                   reactors (busy_poll in the JSON; blocking ignores
#                                   it). MODE llbitmap also: a persist round's sync linked
#                                   behind its writes (linked_sync) and pipelined rounds,
#                                   and 0.5 s each with --unlinked-sync and
#                                   --serial-rounds, which must work as well; and 0.5 s
#                                   with --ring-entries 2, rings too small for a round's
#                                   linked chain: syncs are held back (syncs_held > 0, 0
#                                   by default) and a clean close leaves nothing to resync.
#   uring_test.sh probe ENGINE      --probe-flush: the medium's write + fdatasync by
#                                   syscalls and through a ring, p50 <= p99, all > 0.
#   uring_test.sh fault ENGINE      llbitmap mode with --fail-meta-write 2: the first round's
#                                   second write fails (EBADF), its linked sync is cancelled
#                                   and not performed, the bitmap fails (exit status 1, the
#                                   library's message, refused writes); --resync must then
#                                   exit 0 with the legs identical.
#   uring_test.sh crash ENGINE [ARGS...]
#                                   llbitmap mode, hot workload (and ARGS), SIGKILLed about
#                                   1 s after its "running" line; --resync must then exit 0
#                                   with the legs identical, having resynced some chunks but
#                                   fewer than all.
#   uring_test.sh strace ENGINE     llbitmap mode, hot workload, ~2 s under strace -f; no
#                                   thread named llbm-reactor may make a futex wait,
#                                   fdatasync, fsync, pwrite64, pread64 or (clock_)nanosleep.
#
# Exit status 77 (ctest SKIP_RETURN_CODE) with a message when io_uring is not permitted
# here (the engine's own exit status 77), or strace / ptrace is not available.
set -euo pipefail

case_name=${1:?usage: uring_test.sh run|probe|fault|crash|strace ENGINE [MODE]}
engine=${2:?engine binary required}
mode=${3:-llbitmap}

base=/dev/shm
[[ -d $base && -w $base ]] || base=${TMPDIR:-/tmp}
work=$(mktemp -d "$base/uring-test.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

say() { echo "uring_test($case_name): $*"; }
die() {
  say "FAIL: $*" >&2
  exit 1
}
skip() {
  say "SKIP: $*"
  exit 77
}

# Runs the engine; maps its "io_uring not permitted" exit status to a skip.
engine_or_skip() {
  local rc=0
  "$engine" "$@" || rc=$?
  [[ $rc -eq 77 ]] && skip "io_uring is not permitted here"
  return "$rc"
}

# wait_for_line FILE PATTERN PID: until FILE has a line matching PATTERN (or PID died).
wait_for_line() {
  local file=$1 pattern=$2 pid=$3 i
  for ((i = 0; i < 3000; i++)); do
    grep -q "$pattern" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.01
  done
  return 1
}

# variant FIELD VALUE ARGS...: 0.5 s in $mode with ARGS; the JSON's FIELD must read VALUE,
# with writes done and no errors.
variant() {
  local field=$1 want=$2
  shift 2
  engine_or_skip --dir "$work/d" --size 256M --mode "$mode" "$@" --seconds 0.5 --json \
    >"$work/variant.json" || die "the engine failed with $*"
  python3 - "$work/variant.json" "$field" "$want" <<'EOF' || die "bad JSON output with $*"
import json, sys
r = json.load(open(sys.argv[1]))
assert str(r[sys.argv[2]]) == sys.argv[3] and r["iops"] > 0 and r["errors"] == 0, r
EOF
  say "ok: $*"
}

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

case $case_name in
  run)
    engine_or_skip --dir "$work/d" --size 256M --mode "$mode" --workload uniform \
      --seconds 1 --json >"$work/out.json" || die "the engine failed (mode $mode)"
    cat "$work/out.json"
    python3 - "$work/out.json" "$mode" <<'EOF' || die "bad JSON output"
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("iops", "lat_p50_us", "lat_p99_us", "lat_p999_us", "mode", "workload",
          "reactors", "iodepth", "seconds", "ops"):
    assert k in r, "missing " + k
assert r["mode"] == sys.argv[2], r["mode"]
assert r["iops"] > 0, "iops is 0"
assert r["ops"] > 0 and r["errors"] == 0
assert r["lat_p50_us"] <= r["lat_p99_us"] <= r["lat_p999_us"]
if r["mode"] == "blocking":
    assert r["workers"] == r["reactors"] * r["iodepth"], r["workers"]
EOF
    [[ $(json_field "$work/out.json" busy_poll) == False ]] || die "busy_poll without --busy-poll"
    if [[ $mode == blocking ]]; then
      variant busy_poll False --busy-poll # no reactors to poll
    else
      variant busy_poll True --busy-poll --reactors 2
    fi
    if [[ $mode == llbitmap ]]; then
      [[ $(json_field "$work/out.json" linked_sync) == True ]] || die "the round's sync is not linked"
      variant linked_sync False --unlinked-sync
      [[ $(json_field "$work/out.json" pipelined_rounds) == True ]] || die "rounds are not pipelined"
      variant pipelined_rounds False --serial-rounds
      [[ $(json_field "$work/out.json" syncs_held) == 0 ]] || die "a sync was held back by default"
      variant ring_entries 2 --ring-entries 2
      (($(json_field "$work/variant.json" syncs_held) > 0)) ||
        die "no sync was held back with --ring-entries 2"
      engine_or_skip --dir "$work/d" --resync --json >"$work/resync.json" || die "--resync failed"
      [[ $(json_field "$work/resync.json" chunks_needing_sync) == 0 ]] ||
        die "a clean close with held syncs left chunks needing a resync"
      say "ok: syncs held back in rings too small for a chain, closed clean"
    fi
    if [[ $mode == blocking ]]; then
      rc=0
      "$engine" --dir "$work/d" --size 256M --mode llbitmap --seconds 0.5 --json \
        >"$work/reactor.json" 2>"$work/reactor.err" || rc=$?
      ((rc == 0)) || { cat "$work/reactor.err" >&2; die "llbitmap mode on blocking's bitmap failed"; }
      "$engine" --dir "$work/d" --size 256M --mode blocking --seconds 0.5 --json \
        >"$work/again.json" || die "blocking mode on llbitmap's bitmap failed"
      "$engine" --dir "$work/d" --resync --json >"$work/resync.json" || die "--resync failed"
      cat "$work/resync.json"
      [[ $(json_field "$work/resync.json" chunks_needing_sync) == 0 ]] ||
        die "a clean close left chunks needing a resync"
      [[ $(json_field "$work/resync.json" identical) == True ]] || die "the legs differ"
      say "ok: the bitmap file went blocking -> llbitmap -> blocking, closed clean"
    fi
    say "ok: mode $mode"
    ;;

  probe)
    engine_or_skip --dir "$work/d" --probe-flush --json >"$work/probe.json" || die "--probe-flush failed"
    cat "$work/probe.json"
    python3 - "$work/probe.json" <<'EOF' || die "bad --probe-flush output"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["samples"] == 200, r
for way in ("syscall", "ring"):
    assert 0 < r[way + "_p50_us"] <= r[way + "_p99_us"], r
EOF
    [[ ! -e $work/d/flush-probe ]] || die "the probe file was left behind"
    say "ok: probe"
    ;;

  fault)
    rc=0
    "$engine" --dir "$work/d" --size 256M --mode llbitmap --workload uniform --seconds 1 \
      --fail-meta-write 2 --json >"$work/out.json" 2>"$work/err" || rc=$?
    [[ $rc -eq 77 ]] && skip "io_uring is not permitted here"
    cat "$work/out.json"
    ((rc == 1)) || { cat "$work/err" >&2; die "exit status $rc, not 1, after a failed bitmap write"; }
    grep -q 'a bitmap write or sync failed' "$work/err" || die "no message of the failed write"
    python3 - "$work/out.json" <<'EOF' || die "bad JSON after a failed bitmap write"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["bitmap_failed"] is True, r
assert r["errors"] > 0, "no write was refused"
assert r["syncs_cancelled"] >= 1, "the linked sync was not cancelled"
assert r["syncs_restarted"] == 0, "a sync cancelled by a failed write was performed"
EOF
    engine_or_skip --dir "$work/d" --resync --json >"$work/resync.json" ||
      { cat "$work/resync.json"; die "--resync after a failed bitmap failed"; }
    cat "$work/resync.json"
    [[ $(json_field "$work/resync.json" identical) == True ]] || die "the legs differ"
    say "ok: the failed write failed the bitmap, and the resync made the legs identical"
    ;;

  crash)
    # 4 GiB sparse legs, 64 KiB chunks: in a second the hot workload's cold 10 % touches
    # far fewer than the 65536 chunks.
    "$engine" --dir "$work/d" --size 4G --mode llbitmap --workload hot --seconds 60 "${@:3}" \
      >"$work/out" 2>"$work/err" &
    pid=$!
    pids+=("$pid")
    if ! wait_for_line "$work/out" '^running' "$pid"; then
      rc=0
      wait "$pid" || rc=$?
      [[ $rc -eq 77 ]] && skip "io_uring is not permitted here"
      cat "$work/err" >&2
      die "the engine did not start (exit $rc)"
    fi
    sleep 1
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    say "killed the engine: $(head -n1 "$work/out")"
    engine_or_skip --dir "$work/d" --resync --json >"$work/resync.json" ||
      { cat "$work/resync.json"; die "--resync failed"; }
    cat "$work/resync.json"
    [[ $(json_field "$work/resync.json" identical) == True ]] || die "the legs differ"
    resynced=$(json_field "$work/resync.json" chunks_resynced)
    chunks=$(json_field "$work/resync.json" chunks)
    ((resynced > 0)) || die "nothing was resynced after a crash under load"
    ((resynced < chunks)) || die "every chunk was resynced ($resynced of $chunks)"
    # A second resync after the clean close finds nothing to do.
    "$engine" --dir "$work/d" --resync --json >"$work/again.json" || die "second --resync failed"
    [[ $(json_field "$work/again.json" chunks_resynced) == 0 ]] ||
      die "the second resync copied chunks again"
    say "ok: $resynced of $chunks chunks resynced, legs identical"
    ;;

  strace)
    command -v strace >/dev/null || skip "strace is not installed"
    strace -f -qq -o /dev/null true 2>/dev/null || skip "ptrace is not permitted here"
    mkdir -p "$work/trace"
    strace -f -ff -qq -e trace=futex,fdatasync,fsync,pwrite64,pread64,nanosleep,clock_nanosleep \
      -o "$work/trace/t" "$engine" --dir "$work/d" --size 1G --mode llbitmap --workload hot --reactors 2 \
      --seconds 2 --daemon-sleep 200 --barrier-idle 50 >"$work/out" 2>"$work/err" &
    spid=$!
    pids+=("$spid")
    if ! wait_for_line "$work/out" '^running' "$spid"; then
      rc=0
      wait "$spid" || rc=$?
      grep -q 'not permitted' "$work/err" && skip "io_uring is not permitted here"
      cat "$work/err" >&2
      die "the engine did not start under strace (exit $rc)"
    fi
    epid=$(sed -n 's/^running pid=\([0-9]*\).*/\1/p' "$work/out" | head -n1)
    # The reactor threads: the tids the engine printed, each named llbm-reactor (the
    # library names its own threads llbm-switch, llbm-clock and llbm-daemon, so no thread
    # it starts from a reactor inherits the reactor's name).
    reactors=()
    IFS=, read -r -a reactors <<<"$(sed -n 's/^running .*reactor_tids=\([0-9,]*\).*/\1/p' "$work/out" | head -n1)"
    for tid in "${reactors[@]}"; do
      name=$(cat "/proc/$epid/task/$tid/comm" 2>/dev/null || true)
      [[ -z $name || $name == llbm-reactor ]] || die "reactor thread $tid is named '$name'"
    done
    for task in /proc/"$epid"/task/*; do
      if [[ $(cat "$task/comm" 2>/dev/null) == llbm-reactor && ! " ${reactors[*]} " =~ \ ${task##*/}\  ]]; then
        die "thread ${task##*/} is named llbm-reactor but is not a reactor"
      fi
    done
    rc=0
    wait "$spid" || rc=$?
    cat "$work/out"
    [[ $rc -eq 0 ]] || { cat "$work/err" >&2; die "the engine failed under strace (exit $rc)"; }
    ((${#reactors[@]} > 0)) || die "no thread named llbm-reactor in /proc/$epid/task"
    bad=0
    for tid in "${reactors[@]}"; do
      f=$work/trace/t.$tid
      [[ -f $f ]] || continue # it made none of the traced calls
      if grep -m 10 -E '^(fdatasync|fsync|pwrite64|pread64|nanosleep|clock_nanosleep)\(|^futex\([^,]*, FUTEX_(WAIT|LOCK_PI)' "$f"; then
        say "reactor thread $tid made a blocking call (above)" >&2
        bad=1
      fi
    done
    # The check must see the bitmap's own IO somewhere: the main thread's setup syncs.
    grep -qE '^(fdatasync|fsync)\(' "$work"/trace/t.* || die "strace saw no fdatasync at all"
    ((bad == 0)) || die "a reactor thread blocked"
    say "ok: ${#reactors[@]} reactor thread(s) (${reactors[*]}) made no blocking call"
    ;;

  *)
    die "unknown case '$case_name'"
    ;;
esac
