#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Prints the result table and the ratios of docs/design.md#performance-targets from
Google Benchmark JSON output.

Usage: ratios.py RESULT.json [RESULT.json ...]

Each file is one run of llbitmap_bench or llbitmap_bench_shared with
--benchmark_repetitions=N --benchmark_report_aggregates_only=true
--benchmark_out=RESULT.json --benchmark_out_format=json. The column label is the
run's "llbitmap_link" context (static/shared), else the file name. Times are the
median cpu_time per thread (real time for the UseRealTime benchmarks). Output is
Markdown. The exit status is 0 even when a target is missed: this reports, it does
not gate (the numbers depend on the machine and its load).
"""
import json
import math
import os
import sys

UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

# Rows of the result table: (family, label).
FAST_ROWS = [
    ("BM_ThreadLocalIncDec", "thread_local ++/-- (floor)"),
    ("BM_SharedAtomicIncDec", "one shared seq_cst atomic"),
    ("BM_SharedMutexShared", "std::shared_mutex lock_shared/unlock_shared"),
    ("BM_PthreadRwlockRead", "pthread_rwlock rdlock/unlock"),
    ("BM_KernelShapeRaiseRelease", "hand-written kernel shape raise+release"),
    ("BM_AsymmetricFenceRaiseRelease", "asymmetric-fence (Dekker) raise+release"),
    ("BM_PercpuRefGetPut", "PercpuRef get+put"),
    ("BM_PercpuRefTrygetLivePut", "PercpuRef tryget_live+put"),
    ("BM_PageBarrierRaiseRelease", "PageBarrier raise+release"),
    ("BM_BitmapWriteDirtyChunk", "Bitmap start_write+end_write, Dirty chunk"),
    ("BM_ClassicBitmapWrite", "ClassicBitmap start_write+end_write"),
]
SLOW_ROWS = [
    ("BM_PageBarrierSuspendResume/real_time", "suspend+resume, one idle page"),
    ("BM_DaemonPassSuspendResume/1/real_time", "daemon pass, 1 idle page"),
    ("BM_DaemonPassSuspendResume/32/real_time", "daemon pass, 32 idle pages"),
]


def load(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    label = doc.get("context", {}).get("llbitmap_link") or os.path.basename(path)
    runs = {}
    for b in doc.get("benchmarks", []):
        if b.get("run_type") == "aggregate":
            agg = b.get("aggregate_name")
        elif b.get("run_type") == "iteration" and b.get("repetitions", 1) == 1:
            agg = "median"  # a single run is its own median
        else:
            continue
        if agg not in ("median", "cv"):
            continue
        runs.setdefault(b["run_name"], {})[agg] = b
    return label, doc.get("context", {}), runs


def ns(entry, real=False):
    if entry is None:
        return None
    t = entry["real_time"] if real else entry["cpu_time"]
    return t * UNIT_NS.get(entry.get("time_unit", "ns"), 1.0)


def med(runs, name, real=False):
    return ns(runs.get(name, {}).get("median"), real)


def cv(runs, name, real=False):
    e = runs.get(name, {}).get("cv")
    if e is None:
        return None
    return e["real_time"] if real else e["cpu_time"]


def counter(runs, prefix, key):
    for name, aggs in runs.items():
        if name.startswith(prefix) and "median" in aggs:
            return aggs["median"].get(key)
    return None


def fmt(x, digits=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    files = [load(p) for p in argv[1:]]

    out = []
    ctx = files[0][1]
    out.append(
        f"Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
        f"load average {', '.join(f'{x:.2f}' for x in ctx.get('load_avg', []))} at start;\n"
        f"urcu_bp_has_sys_membarrier={ctx.get('urcu_bp_has_sys_membarrier', '?')}, "
        f"read side {ctx.get('llbitmap_read_side', '?')}.")
    out.append("")

    # --- fast paths: one table per run
    for label, _, runs in files:
        # "2 thr wall" is the real time per pair for the process: about half the 2 thr
        # figure when both threads really ran at once.
        out += [f"{label}: median ns per pair (cpu_time per thread; 2 thr wall = real time)",
                "",
                "| Benchmark (one iteration = one pair) | 1 thr | 2 thr | 2 thr wall | 2T/1T "
                "| cv max |",
                "|---|---|---|---|---|---|"]
        for fam, text in FAST_ROWS:
            if f"{fam}/threads:1" not in runs:
                continue
            t1 = med(runs, f"{fam}/threads:1")
            t2 = med(runs, f"{fam}/threads:2")
            w2 = med(runs, f"{fam}/threads:2", real=True)
            cvs = [c for c in (cv(runs, f"{fam}/threads:1"), cv(runs, f"{fam}/threads:2"))
                   if c is not None]
            cvtxt = f"{100 * max(cvs):.0f}%" if cvs else "–"
            out.append(f"| `{fam}` {text} | {fmt(t1)} | {fmt(t2)} | {fmt(w2)} "
                       f"| {fmt(ratio(t2, t1))} | {cvtxt} |")
        out.append("")

    # --- slow paths
    head = "| Benchmark (real time, one iteration) |"
    sep = "|---|"
    for label, _, _ in files:
        head += f" {label} µs | {label} cv | {label} grace periods/iter |"
        sep += "---|---|---|"
    out += ["Median µs per iteration (real time):", "", head, sep]
    for name, text in SLOW_ROWS:
        if not any(name in r for _, _, r in files):
            continue
        row = f"| `{name.replace('/real_time', '')}` {text} |"
        for _, _, runs in files:
            t = med(runs, name, real=True)
            c = cv(runs, name, real=True)
            gp = runs.get(name, {}).get("median", {}).get("grace_periods")
            row += (f" {fmt(t / 1e3 if t is not None else None)} |"
                    f" {f'{100 * c:.0f}%' if c is not None else '–'} | {fmt(gp)} |")
        out.append(row)
    out.append("")

    # --- memory
    mem_names = sorted({n for _, _, r in files for n in r if n.startswith("BM_PercpuRefMemory/")})
    if mem_names:
        head = "| Memory run (threads/refs) |"
        sep = "|---|"
        for label, _, _ in files:
            head += f" {label} B/pair | {label} B/thread | {label} B after exit |"
            sep += "---|---|---|"
        out += ["Per-thread counter memory (PercpuRegistry::stats()):", "", head, sep]
        for name in mem_names:
            short = name.split("/")[1] + "/" + name.split("/")[2]
            row = f"| {short} |"
            for _, _, runs in files:
                m = runs.get(name, {}).get("median", {})
                row += (f" {fmt(m.get('bytes_per_pair'))} | {fmt(m.get('bytes_per_thread'))} |"
                        f" {fmt(m.get('bytes_after_exit'))} |")
            out.append(row)
        out.append("")

    # --- ratios against the targets
    checks = []

    def add(text, target, fn, ok):
        checks.append((text, target, fn, ok))

    rr = "BM_PageBarrierRaiseRelease/threads:"
    add("raise+release 1 thr / floor 1 thr", "≤ 8",
        lambda r: ratio(med(r, rr + "1"), med(r, "BM_ThreadLocalIncDec/threads:1")),
        lambda v: v <= 8)
    add("raise+release 2 thr / 1 thr (per thread)", "≤ 1.1",
        lambda r: ratio(med(r, rr + "2"), med(r, rr + "1")), lambda v: v <= 1.1)
    ks = "BM_KernelShapeRaiseRelease/threads:"
    af = "BM_AsymmetricFenceRaiseRelease/threads:"
    bw = "BM_BitmapWriteDirtyChunk/threads:"
    for t in ("1", "2"):
        add(f"raise+release / kernel shape, {t} thr", "≤ 1.2",
            lambda r, t=t: ratio(med(r, rr + t), med(r, ks + t)), lambda v: v <= 1.2)
    for t in ("1", "2"):
        add(f"Bitmap dirty-chunk write / kernel shape, {t} thr", "≤ 2",
            lambda r, t=t: ratio(med(r, bw + t), med(r, ks + t)), lambda v: v <= 2)
    add("Bitmap dirty-chunk write 2 thr / 1 thr (per thread)", "≤ 1.1",
        lambda r: ratio(med(r, bw + "2"), med(r, bw + "1")), lambda v: v <= 1.1)
    for t in ("1", "2"):
        add(f"(info) raise+release / asymmetric fence, {t} thr", "–",
            lambda r, t=t: ratio(med(r, rr + t), med(r, af + t)), None)
    for t in ("1", "2"):
        add(f"(info) Bitmap dirty-chunk write / asymmetric fence, {t} thr", "–",
            lambda r, t=t: ratio(med(r, bw + t), med(r, af + t)), None)
    add("(info) kernel shape / asymmetric fence, 1 thr", "–",
        lambda r: ratio(med(r, ks + "1"), med(r, af + "1")), None)
    add("raise+release / shared_mutex, 2 thr", "≤ 0.05",
        lambda r: ratio(med(r, rr + "2"), med(r, "BM_SharedMutexShared/threads:2")),
        lambda v: v <= 0.05)
    add("raise+release / shared seq_cst atomic, 2 thr", "≤ 0.15",
        lambda r: ratio(med(r, rr + "2"), med(r, "BM_SharedAtomicIncDec/threads:2")),
        lambda v: v <= 0.15)
    add("Bitmap dirty-chunk write / ClassicBitmap write, 2 thr", "≤ 0.1",
        lambda r: ratio(med(r, "BM_BitmapWriteDirtyChunk/threads:2"),
                        med(r, "BM_ClassicBitmapWrite/threads:2")),
        lambda v: v <= 0.1)
    add("daemon pass 32 pages / 1 page", "≤ 3",
        lambda r: ratio(med(r, "BM_DaemonPassSuspendResume/32/real_time", True),
                        med(r, "BM_DaemonPassSuspendResume/1/real_time", True)),
        lambda v: v <= 3)
    add("suspend+resume of an idle page, µs", "≤ 1000",
        lambda r: (lambda t: t / 1e3 if t is not None else None)(
            med(r, "BM_PageBarrierSuspendResume/real_time", True)),
        lambda v: v <= 1000)
    add("bytes per (thread, ref) pair, 1000 thr x 1000 refs", "≤ 16",
        lambda r: counter(r, "BM_PercpuRefMemory/1000/1000", "bytes_per_pair"),
        lambda v: v <= 16)
    add("bytes per thread (fixed), 1000 thr x 1000 refs", "≤ 4096",
        lambda r: counter(r, "BM_PercpuRefMemory/1000/1000", "bytes_per_thread"),
        lambda v: v <= 4096)
    add("bytes not returned after the threads exit", "= 0",
        lambda r: counter(r, "BM_PercpuRefMemory/1000/1000", "bytes_after_exit"),
        lambda v: v == 0)
    add("(info) PercpuRef get+put 1 thr / floor 1 thr", "–",
        lambda r: ratio(med(r, "BM_PercpuRefGetPut/threads:1"),
                        med(r, "BM_ThreadLocalIncDec/threads:1")), None)
    # What the floor itself scores against the 2-thread peers: a bound no design with a
    # per-thread counter can beat on the machine at hand.
    add("(info) floor / shared_mutex, 2 thr", "–",
        lambda r: ratio(med(r, "BM_ThreadLocalIncDec/threads:2"),
                        med(r, "BM_SharedMutexShared/threads:2")), None)
    add("(info) floor / shared seq_cst atomic, 2 thr", "–",
        lambda r: ratio(med(r, "BM_ThreadLocalIncDec/threads:2"),
                        med(r, "BM_SharedAtomicIncDec/threads:2")), None)
    add("(info) raise+release / pthread_rwlock, 2 thr", "–",
        lambda r: ratio(med(r, rr + "2"), med(r, "BM_PthreadRwlockRead/threads:2")), None)

    head = "| Ratio (docs/design.md#performance-targets) | target |"
    sep = "|---|---|"
    for label, _, _ in files:
        head += f" {label} |"
        sep += "---|"
    out += ["Ratios against the targets:", "", head, sep]
    for text, target, fn, ok in checks:
        vals = [fn(runs) for _, _, runs in files]
        if all(v is None for v in vals):
            continue
        row = f"| {text} | {target} |"
        for v in vals:
            if v is None:
                row += " – |"
            elif ok is None:
                row += f" {fmt(v)} |"
            else:
                row += f" {fmt(v)} {'met' if ok(v) else '**missed**'} |"
        out.append(row)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
