// SPDX-License-Identifier: LGPL-2.1-or-later
//
// main() of the benchmark binaries: Google Benchmark's, plus context lines that say
// how the library was linked and which read-side barrier liburcu-bp chose at start-up
// (a compiler barrier when membarrier() is available, an mfence otherwise: the second
// adds tens of ns to every raise+release).
#include <benchmark/benchmark.h>

#include <string>

#include "rcu.h"

#ifndef LLBM_BENCH_LINK
#define LLBM_BENCH_LINK "unknown"
#endif

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("llbitmap_link", LLBM_BENCH_LINK);
#ifdef LLBM_RCU_CALLED
  benchmark::AddCustomContext("llbitmap_read_side", "called (ThreadSanitizer build)");
#else
  benchmark::AddCustomContext("llbitmap_read_side", "inlined");
  benchmark::AddCustomContext("urcu_bp_has_sys_membarrier",
                              std::to_string(urcu_bp_has_sys_membarrier));
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
