#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Instructions per iteration (per pair) of fast-path benchmarks, from callgrind.

Usage: callgrind_pairs.py BENCH_BINARY [BENCHMARK ...]

For each benchmark family (default: the fast paths of docs/design.md#performance-targets) it runs
BENCH_BINARY under `valgrind --tool=callgrind`, collecting only inside the
benchmark function (--toggle-collect), at one thread, twice: with a short and a
longer --benchmark_min_time. Google Benchmark's --v=2 log gives the iterations of
every run it made (estimation runs included), callgrind the instructions collected.
The figure is the slope (Ir_long - Ir_short) / (iters_long - iters_short): the
per-run set-up (timers, StartKeepRunning) cancels out. Counts are exact and do
not depend on the machine's load, unlike the times; they do depend on the binary
(compiler, flags) and on liburcu-bp's runtime choice of barrier. Output is Markdown.
"""
import os
import re
import subprocess
import sys
import tempfile

DEFAULT = [
    "BM_ThreadLocalIncDec",
    "BM_KernelShapeRaiseRelease",
    "BM_AsymmetricFenceRaiseRelease",
    "BM_PercpuRefGetPut",
    "BM_PercpuRefTrygetLivePut",
    "BM_PageBarrierRaiseRelease",
    "BM_BitmapWriteDirtyChunk",
]


def run(binary, fam, min_time, tmp):
    out = os.path.join(tmp, f"{fam}.{min_time}.cg")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           f"--toggle-collect=*{fam}*", binary,
           f"--benchmark_filter=^{fam}/threads:1$", f"--benchmark_min_time={min_time}",
           "--v=2"]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    text = p.stdout + p.stderr
    iters = sum(int(m) for m in re.findall(r"Running \S+ for (\d+)", text))
    m = re.search(r"Collected : (\d+)", text)
    if m is None or iters == 0:
        raise RuntimeError(f"{fam}: no callgrind total or no iterations\n{text[-2000:]}")
    return int(m.group(1)), iters


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    binary = argv[1]
    fams = argv[2:] or DEFAULT
    print("| Benchmark | instructions per iteration (callgrind, 1 thread) |")
    print("|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for fam in fams:
            ir1, n1 = run(binary, fam, 0.02, tmp)
            ir2, n2 = run(binary, fam, 0.2, tmp)
            if n2 == n1:
                print(f"| `{fam}` | – (same iteration count twice) |")
                continue
            print(f"| `{fam}` | {(ir2 - ir1) / (n2 - n1):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
