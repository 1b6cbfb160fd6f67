#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/uring_mirror.sh: llbitmap-uring-mirror (examples/uring_mirror) with no bitmap,
# llbitmap (ReactorBitmap), the classic md bitmap and blocking (the blocking Bitmap API
# driven by reactors x iodepth threads: the same writes in flight as llbitmap), in
# alternating paired runs: every round runs the four modes back to back (their order
# rotating from round to round), for every directory, reactor count and workload. Prints
# the median IOPS and p99 latency per mode and the ratios llbitmap/none, classic/none,
# llbitmap/classic and llbitmap/blocking (the reactor engine against blocking threads at
# the same queue depth); each ratio is the median of the per-round ratios, so that a slow
# moment of the machine hits all four modes alike.
#
# Usage: bash bench/uring_mirror.sh [ENGINE] [options]
#   ENGINE            the engine binary (default build/release/examples/uring_mirror/
#                     llbitmap-uring-mirror)
#   --rounds N        paired rounds per configuration (default 3)
#   --seconds S       measured seconds per run (default 2)
#   --warmup S        seconds each run writes first without counting (default 3; 0 for
#                     none): the first touches of the chunks a workload dirties, and
#                     their persists, stay out of the steady state (the first workload
#                     always runs without one: its first touches are what it measures)
#   --size BYTES      the device (default 1G; the legs are sparse on tmpfs and filled
#                     with zeros once on other file systems, so no run pays for block
#                     allocation)
#   --dirs "A B"      the directories to run in (default "/dev/shm /var/tmp"); a
#                     subdirectory llbm-uring-bench is made in each and removed at the end
#   --reactors "1 2"  reactor counts
#   --workloads "uniform hot first first@1"
#                     WORKLOAD@N runs WORKLOAD at iodepth N instead of --iodepth (first@1:
#                     a first touch with no queue in front of it)
#   --iodepth N       writes in flight per reactor (default 32)
#   --out FILE        also keep the raw results (TSV) in FILE
#   --engine-args "A" more options for every run of the engine (for example --busy-poll)
set -euo pipefail

engine=build/release/examples/uring_mirror/llbitmap-uring-mirror
rounds=3
seconds=2
warmup=3
size=1G
dirs="/dev/shm /var/tmp"
reactors="1 2"
workloads="uniform hot first first@1"
iodepth=32
out=""
engine_args=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --dirs) dirs=$2; shift 2 ;;
    --reactors) reactors=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --iodepth) iodepth=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --engine-args) engine_args=$2; shift 2 ;;
    -h | --help)
      awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
      exit 0
      ;;
    -*) echo "uring_mirror.sh: unknown option $1" >&2; exit 2 ;;
    *) engine=$1; shift ;;
  esac
done
read -ra extra <<<"$engine_args"
[[ -x $engine ]] || { echo "uring_mirror.sh: no engine at $engine (build the release preset)" >&2; exit 1; }

raw=$(mktemp)
probe=$(mktemp)
made=()
cleanup() {
  rm -f "$raw" "$probe"
  local d
  for d in "${made[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

modes=(none llbitmap classic blocking)
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)
echo "# llbitmap-uring-mirror: $cpu, $(nproc) CPUs, kernel $(uname -r)"
echo "# size $size, iodepth $iodepth, $seconds s per run, $rounds paired rounds"

for dir in $dirs; do
  d=$dir/llbm-uring-bench
  mkdir -p "$d"
  made+=("$d")
  # The first line: a directory can have several mounts stacked on it.
  fstype=$(findmnt -n -o FSTYPE -T "$dir" 2>/dev/null | head -n 1 || stat -f -c %T "$dir")
  if [[ $fstype != tmpfs ]]; then
    # Fill the legs once: a write into a hole allocates, and no mode should pay that.
    bytes=$(numfmt --from=iec "$size")
    for leg in leg0 leg1; do
      if [[ ! -f $d/$leg || $(stat -c %s "$d/$leg") -ne $bytes || $(stat -c %b "$d/$leg") -eq 0 ]]; then
        dd if=/dev/zero of="$d/$leg" bs=1M count=$((bytes >> 20)) oflag=direct status=none
      fi
    done
  fi
  # The medium's own cost of what a first touch adds: one 4 KiB write of a file there
  # and one fdatasync, by syscalls and through an io_uring with the fsync linked behind
  # the write (the engine's --probe-flush: p50 of 200 each).
  if json=$("$engine" --dir "$d" --probe-flush --json 2>/dev/null); then
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%s\t%s\t%s" % (sys.argv[2], r["syscall_p50_us"], r["ring_p50_us"]))' \
      "$json" "$dir($fstype)" >>"$probe"
  fi
  for r in $reactors; do
    for w in $workloads; do
      wl=${w%@*}
      qd=$iodepth
      [[ $w == *@* ]] && qd=${w#*@}
      wu=$warmup
      [[ $wl == first ]] && wu=0 # its first touches are what it measures
      for ((i = 0; i < rounds; i++)); do
        for ((k = 0; k < ${#modes[@]}; k++)); do
          m=${modes[$(((i + k) % ${#modes[@]}))]}
          if ! json=$("$engine" --dir "$d" --size "$size" --mode "$m" --workload "$wl" \
            --reactors "$r" --iodepth "$qd" --seconds "$seconds" --warmup "$wu" "${extra[@]}" \
            --json 2>/dev/null); then
            echo "# failed: $dir r=$r $w $m" >&2
            continue
          fi
          python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["iops"], r["lat_p99_us"], r["lat_p50_us"])' \
            "$json" | while read -r iops p99 p50; do
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$dir($fstype)" "$r" "$w" "$i" "$m" "$iops" "$p99" "$p50" >>"$raw"
          done
        done
      done
      echo "# done: $dir r=$r $w" >&2
    done
  done
done
[[ -n $out ]] && cp "$raw" "$out"

python3 - "$raw" "$probe" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(dict)  # (dir, r, w) -> {(round, mode): (iops, p99, p50)}
for line in open(sys.argv[1]):
    d, r, w, i, m, iops, p99, p50 = line.rstrip("\n").split("\t")
    runs[(d, int(r), w)][(int(i), m)] = (float(iops), float(p99), float(p50))
flush = {}
for line in open(sys.argv[2]):
    d, by_syscall, by_ring = line.rstrip("\n").split("\t")
    flush[d] = (by_syscall, by_ring)
modes = ("none", "llbitmap", "classic", "blocking")
print("| dir | reactors | workload | none IOPS | llbitmap IOPS | classic IOPS | blocking IOPS | llbitmap/none | classic/none | llbitmap/classic | llbitmap/blocking | p99 µs none / llbitmap / classic / blocking | p99 llbitmap/none |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
first = []
for (d, r, w), v in runs.items():
    rounds = sorted({i for i, _ in v})
    def median(m, k):
        xs = [v[(i, m)][k] for i in rounds if (i, m) in v]
        return statistics.median(xs) if xs else float("nan")
    med = {m: median(m, 0) for m in modes}
    p99 = {m: median(m, 1) for m in modes}
    def ratio(a, b):
        rs = [v[(i, a)][0] / v[(i, b)][0] for i in rounds if (i, a) in v and (i, b) in v and v[(i, b)][0] > 0]
        return "%.2f" % statistics.median(rs) if rs else "-"
    p50 = {m: median(m, 2) for m in modes}
    print("| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %s | %s | %s | %s | %.0f / %.0f / %.0f / %.0f | %.2f |" % (
        d, r, w, med["none"], med["llbitmap"], med["classic"], med["blocking"],
        ratio("llbitmap", "none"), ratio("classic", "none"), ratio("llbitmap", "classic"),
        ratio("llbitmap", "blocking"), p99["none"], p99["llbitmap"], p99["classic"], p99["blocking"],
        p99["llbitmap"] / p99["none"] if p99["none"] > 0 else float("nan")))
    if w.split("@")[0] == "first":
        first.append((d, r, w, p50["llbitmap"] - p50["none"], p50["classic"] - p50["none"],
                      flush.get(d, ("-", "-"))))
if first:
    print()
    print("| dir | reactors | workload | first touch added, p50 µs: llbitmap / classic | the medium's 4 KiB write + fdatasync, p50 µs: syscalls / io_uring (linked) |")
    print("|---|---|---|---|---|")
    for d, r, w, added, added_classic, (by_syscall, by_ring) in first:
        print("| %s | %d | %s | %.0f / %.0f | %s / %s |" % (d, r, w, added, added_classic, by_syscall, by_ring))
EOF
