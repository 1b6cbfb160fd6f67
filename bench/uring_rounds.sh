#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/uring_rounds.sh: pipelined persist rounds (ReactorOptions::pipelined_rounds, the
# engine's default) against one round at a time (--serial-rounds), in alternating pairs of
# llbitmap-uring-mirror --workload first (every write a first touch, 32 in flight per
# reactor, a fresh bitmap each run). The first pair of each configuration only allocates
# the legs' blocks and is not counted. Prints the medians per mode and of the per-pair IOPS
# ratio.
#
# Usage: bash bench/uring_rounds.sh [ENGINE] [--pairs N] [--dirs "A B"] [--reactors "1 2"]
set -euo pipefail

engine=build/release/examples/uring_mirror/llbitmap-uring-mirror
pairs=5
dirs="/dev/shm /var/tmp"
reactors="1 2"
if [[ $# -gt 0 && $1 != --* ]]; then
  engine=$1
  shift
fi
while [[ $# -gt 0 ]]; do
  case $1 in
    --pairs) pairs=$2 ;;
    --dirs) dirs=$2 ;;
    --reactors) reactors=$2 ;;
    *)
      echo "usage: $0 [ENGINE] [--pairs N] [--dirs \"A B\"] [--reactors \"1 2\"]" >&2
      exit 2
      ;;
  esac
  shift 2
done
[[ -x $engine ]] || {
  echo "$0: no engine at $engine" >&2
  exit 2
}

raw=$(mktemp)
err=$(mktemp)
trap 'rm -f "$raw" "$err"' EXIT
echo "# $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) CPUs, kernel $(uname -r)"
for dir in $dirs; do
  d=$dir/llbm-uring-rounds
  rm -rf "$d"
  mkdir -p "$d"
  fstype=$(findmnt -n -o FSTYPE -T "$dir" 2>/dev/null | head -n 1 || stat -f -c %T "$dir")
  for r in $reactors; do
    for ((i = 0; i <= pairs; i++)); do
      for mode in pipelined serial; do
        rm -f "$d/bitmap"
        extra=()
        [[ $mode == serial ]] && extra=(--serial-rounds)
        if ! json=$("$engine" --dir "$d" --size 1G --mode llbitmap "${extra[@]}" --workload first \
          --reactors "$r" --seconds 2 --json 2>"$err"); then
          echo "$0: the engine failed ($mode rounds, $r reactors, in $dir):" >&2
          cat "$err" >&2
          rm -rf "$d"
          exit 1
        fi
        ((i == 0)) && continue
        python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("\t".join(sys.argv[2:] + [str(j[k]) for k in ("iops", "lat_p50_us", "lat_p99_us", "persist_rounds")]))' \
          "$json" "$dir($fstype)" "$r" "$i" "$mode" >>"$raw"
      done
    done
  done
  rm -rf "$d"
done

python3 - "$raw" <<'PY'
import collections, statistics as st, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    d, r, i, mode, iops, p50, p99, rounds = line.split("\t")
    runs[(d, r)].setdefault(mode, {})[i] = (float(iops), float(p50), float(p99), float(rounds))
print("| dir | reactors | pipelined IOPS / p50 µs / p99 µs / rounds | serial IOPS / p50 µs / p99 µs / rounds | IOPS ratio |")
print("|---|---|---|---|---|")
for (d, r), m in runs.items():
    med = lambda mode, k: st.median(v[k] for v in m[mode].values())
    ratio = st.median(m["pipelined"][i][0] / m["serial"][i][0] for i in m["pipelined"] if i in m["serial"])
    cells = [" / ".join("%.0f" % med(mode, k) for k in range(4)) for mode in ("pipelined", "serial")]
    print("| %s | %s | %s | %s | %.2f |" % (d, r, cells[0], cells[1], ratio))
PY
