#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# run.sh: the end-to-end benchmark. The Mirror (mirror/) is served by nbdkit
# through nbdkit-llmirror-plugin.so on a unix socket, and fio's nbd engine drives it, as a
# user-space counterpart of the fio randwrite table in the kernel's llbitmap cover letter
# (none / bitmap / llbitmap; here none / classic / llbitmap).
#
#   1. Steady state. For each mode (none, classic, llbitmap): a new mirror of two sparse
#      files of --size bytes in a temporary directory on the local disk; fio randwrite,
#      bs=4k, iodepth=--iodepth, norandommap, time_based: a warm-up of --warmup s with
#      numjobs=2 (not measured), then --runtime s at numjobs=1 and --runtime s at
#      numjobs=2 (each job is its own NBD connection). With --reps N every cell is the
#      median of N runs (the modes take turns, each rep starting with the next mode).
#      Prints IOPS and MiB/s per cell and the ratios llbitmap/none and llbitmap/classic,
#      and with N > 1 also the median of the per-rep ratios (the modes of one rep run
#      back to back, so the pairing cancels drift between reps).
#   2. Crash and resync. A new mirror; fio writes random 4 KiB blocks, then nbdkit is
#      killed with SIGKILL; it is restarted and its start-up resync (resync=wait: the
#      plugin copies before it serves, and logs "llmirror: resync: C chunks, B bytes
#      copied in S s") is timed by the plugin itself:
#        llbitmap, 1% region   writes confined to a region of 1% of the device (at its
#                              middle), --crash-seconds s, killed while fio is writing
#                              (every chunk of the region is Dirty). The case the target
#                              is about.
#        llbitmap, 1% spread   1% of the device's bytes written as 4 KiB writes at random
#                              offsets over the whole device, killed as soon as fio is done:
#                              each write dirties its whole chunk, so far more than 1% is
#                              copied (shown for honesty, not a target).
#        none, full resync     mode=none, same writes as the 1% region; with no bitmap the
#                              restart copies the whole device.
#   3. Draws both tables into a PNG (gnuplot): --png (default bench/e2e/e2e.png).
#
# Targets (docs/design.md#performance-targets): llbitmap >= 0.95x none at steady state
# and above classic; the 1% crash resyncs in <= 5% of the full resync's time. The script
# prints PASS/MISS for each; it exits non-zero only on errors, not on a missed target.
#
# Needs: nbdkit, fio (with the nbd engine), gnuplot (Debian: nbdkit fio gnuplot-nox; the
# plugin needs nbdkit-plugin-dev to build). Numbers from a shared or busy machine are noisy:
# nbdkit, fio and the mirror's threads compete for the same cores.
#
# Usage: bench/e2e/run.sh [--build DIR | --plugin SO] [--size 1G] [--runtime 10]
#          [--warmup 3] [--iodepth 16] [--reps 1] [--crash-seconds 3] [--dir /var/tmp]
#          [--png bench/e2e/e2e.png] [--no-png] [--quick]
#   --build DIR   build directory holding mirror/nbdkit/nbdkit-llmirror-plugin.so
#                 (default build/release)
#   --quick       a smoke run: --size 256M --runtime 2 --warmup 1 --crash-seconds 1
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build/release
plugin=""
size=1G
runtime=10
warmup=3
iodepth=16
reps=1
crash_seconds=3
tmp_parent=/var/tmp
png=$here/e2e.png
draw=1

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 3 { sub(/^# ?/, ""); print }' "$0"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --plugin) plugin=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --iodepth) iodepth=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --crash-seconds) crash_seconds=$2; shift 2 ;;
    --dir) tmp_parent=$2; shift 2 ;;
    --png) png=$2; shift 2 ;;
    --no-png) draw=0; shift ;;
    --quick) size=256M runtime=2 warmup=1 crash_seconds=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[[ -n $plugin ]] || plugin=$build/mirror/nbdkit/nbdkit-llmirror-plugin.so
[[ -f $plugin ]] || {
  echo "run.sh: $plugin not found: build the plugin first, e.g." >&2
  echo "  cmake --preset release && cmake --build --preset release --target nbdkit_llmirror_plugin" >&2
  exit 1
}
for t in nbdkit fio; do
  command -v "$t" >/dev/null || { echo "run.sh: $t is not installed (bash scripts/setup.sh)" >&2; exit 1; }
done
if [[ $draw -eq 1 ]] && ! command -v gnuplot >/dev/null; then
  echo "run.sh: gnuplot is not installed (apt-get install gnuplot-nox, or --no-png)" >&2
  exit 1
fi

to_bytes() {
  local v=${1%[KkMmGgTt]} s=${1: -1}
  case "$s" in
    K | k) echo $((v << 10)) ;; M | m) echo $((v << 20)) ;;
    G | g) echo $((v << 30)) ;; T | t) echo $((v << 40)) ;;
    *) echo "$1" ;;
  esac
}
size_bytes=$(to_bytes "$size")
# The 1% region: 1% of the device, rounded down to whole 4 KiB blocks, at its middle.
region_bytes=$((size_bytes / 100 / 4096 * 4096))
region_offset=$((size_bytes / 2 / 4096 * 4096))

work=$(mktemp -d "$tmp_parent/llmirror-e2e.XXXXXX")
sock=$work/nbd.sock
uri="nbd+unix:///?socket=$sock"
nbd_pid=""
log=""
cleanup() {
  local rc=$?
  if [[ -n $nbd_pid ]] && kill -0 "$nbd_pid" 2>/dev/null; then
    kill -KILL "$nbd_pid" 2>/dev/null || true
    wait "$nbd_pid" 2>/dev/null || true
  fi
  [[ $rc -eq 0 ]] || echo "run.sh: failed (exit $rc); logs were in $work" >&2
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "run.sh: $*" >&2; exit 1; }

# start NAME PARAM...: nbdkit in the foreground, in the background of this shell; returns
# once the plugin logged that the mirror is open and any start-up resync is done.
start() {
  local name=$1
  shift
  log=$work/$name.log
  rm -f "$sock"
  nbdkit --exit-with-parent -U "$sock" "$plugin" "$@" >"$log" 2>&1 &
  nbd_pid=$!
  local i
  for ((i = 0; i < 6000; i++)); do
    if ! kill -0 "$nbd_pid" 2>/dev/null; then
      nbd_pid=""
      cat "$log" >&2
      die "nbdkit exited before it was ready ($*)"
    fi
    if [[ -S $sock ]] && grep -Eq 'llmirror: (resync: |resync failed)' "$log"; then
      grep -q 'resync failed' "$log" && die "resync failed: $(cat "$log")"
      return 0
    fi
    sleep 0.1
  done
  die "nbdkit not ready after 600 s"
}
stop() {
  kill -TERM "$nbd_pid"
  local rc=0
  wait "$nbd_pid" || rc=$?
  nbd_pid=""
  [[ $rc -eq 0 ]] || die "nbdkit exited with status $rc on SIGTERM: $(cat "$log")"
}
crash() {
  kill -KILL "$nbd_pid"
  wait "$nbd_pid" 2>/dev/null || true
  nbd_pid=""
}
new_mirror_params() {  # new_mirror_params MODE: fresh files in $work/m
  rm -rf "$work/m"
  mkdir "$work/m"
  echo "primary=$work/m/primary secondary=$work/m/secondary bitmap=$work/m/bitmap mode=$1 size=$size_bytes"
}
existing_mirror_params() {
  echo "primary=$work/m/primary secondary=$work/m/secondary bitmap=$work/m/bitmap mode=$1"
}

# fio_randwrite NUMJOBS RUNTIME [fio options...]: prints "IOPS KiB/s" (terse v3: write
# bandwidth is field 48, write IOPS field 49; field 5 is the error).
fio_randwrite() {
  local nj=$1 rt=$2
  shift 2
  fio --ioengine=nbd --uri="$uri" --name=randwrite --rw=randwrite --bs=4k \
    --iodepth="$iodepth" --numjobs="$nj" --size="$size_bytes" --norandommap --randrepeat=0 \
    --time_based --runtime="$rt" --group_reporting --output-format=terse --terse-version=3 \
    "$@" >"$work/fio.out" 2>"$work/fio.err" || die "fio failed: $(cat "$work/fio.err" "$work/fio.out")"
  awk -F';' '$1 == "3" { if ($5 != 0) exit 1; print $49, $48 }' "$work/fio.out" ||
    die "fio reported an error: $(cat "$work/fio.out")"
}

echo "# llbitmap end-to-end: nbdkit $(nbdkit --version | awk '{print $2}'), $(fio --version)," \
  "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# device $size ($size_bytes bytes) on sparse files in $tmp_parent; fio randwrite bs=4k" \
  "iodepth=$iodepth, ${warmup}s warm-up, ${runtime}s per cell, $reps rep(s)"
echo "# plugin: $plugin"

# ---------------------------------------------------------------- 1. steady state
modes=(none classic llbitmap)
results=$work/results  # lines: mode numjobs iops kib_s
: >"$results"
for ((rep = 1; rep <= reps; rep++)); do
  # Each rep starts with another mode, so that no mode always runs right after another.
  order=("${modes[@]:$(((rep - 1) % 3))}" "${modes[@]:0:$(((rep - 1) % 3))}")
  for mode in "${order[@]}"; do
    # shellcheck disable=SC2046  # the parameters are single words without spaces
    start "perf-$mode" $(new_mirror_params "$mode")
    fio_randwrite 2 "$warmup" >/dev/null
    for nj in 1 2; do
      read -r iops kib < <(fio_randwrite "$nj" "$runtime")
      echo "$mode $nj $iops $kib" >>"$results"
      echo "  [${SECONDS}s] rep $rep: $mode numjobs=$nj: $iops IOPS, $((kib / 1024)) MiB/s" >&2
    done
    stop
    echo "  [${SECONDS}s] $mode stopped" >&2
    rm -rf "$work/m"
  done
done

median() {  # median MODE NUMJOBS FIELD(3 = IOPS, 4 = KiB/s)
  awk -v m="$1" -v n="$2" -v f="$3" '$1 == m && $2 == n { print $f }' "$results" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
declare -A IOPS MIBS
for mode in "${modes[@]}"; do
  for nj in 1 2; do
    IOPS[$mode.$nj]=$(median "$mode" "$nj" 3)
    MIBS[$mode.$nj]=$(awk -v k="$(median "$mode" "$nj" 4)" 'BEGIN { printf "%.1f", k / 1024 }')
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
kiops() { awk -v v="$1" 'BEGIN { printf "%.1fk", v / 1000 }'; }

echo
echo "| fio randwrite 4 KiB, iodepth $iodepth | none | classic | llbitmap | llbitmap / none | llbitmap / classic |"
echo "|---|---|---|---|---|---|"
verdict=()
for nj in 1 2; do
  row="| numjobs=$nj"
  for mode in "${modes[@]}"; do
    row+=" | $(kiops "${IOPS[$mode.$nj]}") IOPS, ${MIBS[$mode.$nj]} MiB/s"
  done
  r_none=$(ratio "${IOPS[llbitmap.$nj]}" "${IOPS[none.$nj]}")
  r_classic=$(ratio "${IOPS[llbitmap.$nj]}" "${IOPS[classic.$nj]}")
  echo "$row | $r_none | $r_classic |"
  verdict+=("numjobs=$nj: llbitmap/none = $r_none (target >= 0.95): $(awk -v r="$r_none" 'BEGIN { print (r >= 0.95 ? "PASS" : "MISS") }')")
  verdict+=("numjobs=$nj: llbitmap/classic = $r_classic (target > 1): $(awk -v r="$r_classic" 'BEGIN { print (r > 1 ? "PASS" : "MISS") }')")
done

# The same ratios paired by rep: the modes of one rep run back to back, so a rep's ratio
# shares that minute's background (a VM's neighbours, writeback); the median of the
# per-rep ratios is less sensitive to drift between reps than the ratio of medians.
paired() {  # paired NUMJOBS OTHER_MODE: "median (min-max, N reps)" of llbitmap/OTHER per rep
  awk -v n="$1" -v o="$2" '
    $2 == n && $1 == "llbitmap" { l[++nl] = $3 }
    $2 == n && $1 == o { b[++nb] = $3 }
    END {
      for (i = 1; i <= nl && i <= nb; i++) r[i] = (b[i] > 0 ? l[i] / b[i] : 0);
      m = (nl < nb ? nl : nb);
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
      med = (m % 2 ? r[(m + 1) / 2] : (r[m / 2] + r[m / 2 + 1]) / 2);
      printf "%.2f (%.2f-%.2f, %d reps)", med, r[1], r[m], m
    }' "$results"
}
if [[ $reps -gt 1 ]]; then
  echo
  for nj in 1 2; do
    echo "paired by rep, numjobs=$nj: llbitmap/none $(paired "$nj" none), llbitmap/classic $(paired "$nj" classic)"
  done
fi

# ---------------------------------------------------------------- 2. crash and resync
# crash_case NAME MODE KIND: KIND region (time_based in the 1% region, killed while
# writing) or spread (1% of the bytes as random 4 KiB writes, killed when fio is done).
# Sets CHUNKS, BYTES, SECONDS from the restart's resync line.
crash_case() {
  local name=$1 mode=$2 kind=$3
  # shellcheck disable=SC2046
  start "crash-$name" $(new_mirror_params "$mode")
  if [[ $kind == region ]]; then
    fio --ioengine=nbd --uri="$uri" --name=crash --rw=randwrite --bs=4k --iodepth="$iodepth" \
      --numjobs=2 --offset="$region_offset" --size="$region_bytes" --time_based --runtime=600 \
      >"$work/fio-crash.out" 2>&1 &
    local fio_pid=$!
    sleep "$crash_seconds"
    kill -0 "$fio_pid" 2>/dev/null || die "fio ended before the kill: $(cat "$work/fio-crash.out")"
    crash
    wait "$fio_pid" 2>/dev/null || true
  else
    fio --ioengine=nbd --uri="$uri" --name=crash --rw=randwrite --bs=4k --iodepth="$iodepth" \
      --numjobs=1 --size="$size_bytes" --io_size="$region_bytes" --randrepeat=0 \
      >"$work/fio-crash.out" 2>&1 || die "fio failed: $(cat "$work/fio-crash.out")"
    crash
  fi
  # shellcheck disable=SC2046
  start "restart-$name" $(existing_mirror_params "$mode")
  local line
  line=$(grep -E 'llmirror: resync: [0-9]+ chunks' "$log") || die "no resync after the crash: $(cat "$log")"
  read -r CHUNKS BYTES SECONDS_ < <(sed -E 's/.*resync: ([0-9]+) chunks, ([0-9]+) bytes copied in ([0-9.]+) s.*/\1 \2 \3/' <<<"$line")
  stop
  rm -rf "$work/m"
  echo "  [${SECONDS}s] crash $name: $line" >&2
}

crash_case region llbitmap region
c_region=$CHUNKS b_region=$BYTES s_region=$SECONDS_
crash_case spread llbitmap spread
c_spread=$CHUNKS b_spread=$BYTES s_spread=$SECONDS_
crash_case full none region
c_full=$CHUNKS b_full=$BYTES s_full=$SECONDS_

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f%%", (b > 0 ? 100 * a / b : 0) }'; }
echo
echo "| crash (SIGKILL) after writing 1% of the device, then restart | chunks copied | bytes copied | resync time | time vs full |"
echo "|---|---|---|---|---|"
echo "| llbitmap, writes confined to a 1% region | $c_region | $(mib "$b_region") | $s_region s | $(pct "$s_region" "$s_full") |"
echo "| llbitmap, 1% of the bytes spread over the device | $c_spread | $(mib "$b_spread") | $s_spread s | $(pct "$s_spread" "$s_full") |"
echo "| none (no bitmap): full resync | $c_full | $(mib "$b_full") | $s_full s | 100% |"
verdict+=("1% crash resync = $(pct "$s_region" "$s_full") of a full resync (target <= 5%): $(awk -v a="$s_region" -v b="$s_full" 'BEGIN { print (a <= 0.05 * b ? "PASS" : "MISS") }')")
echo
for v in "${verdict[@]}"; do echo "- $v"; done

# ---------------------------------------------------------------- 3. chart
if [[ $draw -eq 1 ]]; then
  {
    echo "# numjobs none classic llbitmap (IOPS)"
    for nj in 1 2; do
      echo "numjobs=$nj ${IOPS[none.$nj]} ${IOPS[classic.$nj]} ${IOPS[llbitmap.$nj]}"
    done
  } >"$work/perf.dat"
  {
    echo "# case seconds"
    printf '"llbitmap 1%%" %s\n' "$s_region"
    printf '"llbitmap spread" %s\n' "$s_spread"
    printf '"none (full)" %s\n' "$s_full"
  } >"$work/crash.dat"
  mkdir -p "$(dirname "$png")"
  gnuplot <<EOF
set terminal pngcairo size 1100,460 font "sans,10"
set output "$png"
set multiplot layout 1,2 title "llbitmap end to end: Mirror over nbdkit, fio nbd engine, randwrite 4 KiB, iodepth $iodepth, $size device"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
set ylabel "IOPS (median of $reps)"
set title "steady state (${runtime} s per bar)"
plot "$work/perf.dat" using 2:xtic(1) title "none" lc rgb "#9e9e9e", \
     "" using 3 title "classic" lc rgb "#e07b39", \
     "" using 4 title "llbitmap" lc rgb "#3a7dc9", \
     "" using (\$0 - 0.25):2:(sprintf("%.1fk", \$2 / 1000)) with labels offset 0,0.6 font ",8" notitle, \
     "" using (\$0):3:(sprintf("%.1fk", \$3 / 1000)) with labels offset 0,0.6 font ",8" notitle, \
     "" using (\$0 + 0.25):4:(sprintf("%.1fk", \$4 / 1000)) with labels offset 0,0.6 font ",8" notitle
set title "resync after SIGKILL (1% of the device written)"
set ylabel "resync time, s (log scale)"
set logscale y
set offsets 0, 0, 0, 0
set key off
set style histogram clustered gap 1
set yrange [0.001:*]
plot "$work/crash.dat" using 2:xtic(1) lc rgb "#3a7dc9", \
     "" using 0:2:(sprintf("%.3f s", \$2)) with labels offset 0,0.8
unset multiplot
EOF
  echo
  echo "chart: $png"
fi
