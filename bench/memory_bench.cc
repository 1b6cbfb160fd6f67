// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Memory of the per-thread counter areas (docs/design.md#percpuref-semantics: memory per thread
// grows with the refs it touches, not with all refs in the process; target <= 16 B per (thread,
// ref) pair plus <= 4 KiB per thread).
//
// BM_PercpuRefMemory/<threads>/<refs> runs once (Iterations(1)):
//   1. <threads> threads each do one get+put on a single ref, the one with the highest
//      slot index, stay alive, and the registry's byte count is read: the fixed cost of
//      a thread (bytes_per_thread): its area header, one counter block and a block
//      directory long enough to reach that slot.
//   2. <threads> threads each do one get+put on each of <refs> refs and stay alive:
//      all counter memory divided by threads x refs (bytes_per_pair; the per-thread
//      part is included, so this is the conservative figure).
//   3. Once every thread has exited, the byte count must be back where it started
//      (bytes_after_exit is the difference; anything but 0 fails the benchmark).
// Bytes are what detail::PercpuRegistry::stats() accounts: counter blocks, block
// directories and area headers. Allocator overhead and liburcu-bp's own per-thread
// registration are not included. The time reported is the wall time of the whole
// run and means little.
#include <llbitmap/percpu_ref.h>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <latch>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "percpu_area.h"

namespace {

using llbitmap::PercpuRef;
using llbitmap::detail::AreaStats;
using llbitmap::detail::PercpuRegistry;

// Starts `threads` threads that each do a get+put on every ref in `refs`, reads the
// registry's stats while all of them are alive, then lets them exit and joins them.
AreaStats stats_with_live_threads(std::size_t threads, std::span<PercpuRef* const> refs) {
  std::latch touched(static_cast<std::ptrdiff_t>(threads));
  std::latch may_exit(1);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (PercpuRef* r : refs) {
        r->get();
        r->put();
      }
      touched.count_down();
      may_exit.wait();
    });
  }
  touched.wait();
  const AreaStats live = PercpuRegistry::instance().stats();
  may_exit.count_down();
  for (auto& th : pool) th.join();
  return live;
}

void BM_PercpuRefMemory(benchmark::State& state) {
  const auto threads = static_cast<std::size_t>(state.range(0));
  const auto nrefs = static_cast<std::size_t>(state.range(1));
  // Created in order and never destroyed, so their slots increase: refs.back() has the
  // highest slot of those used (a recycled slot could be anywhere).
  static auto* pool = new std::vector<std::unique_ptr<PercpuRef>>;
  while (pool->size() < nrefs) pool->push_back(std::make_unique<PercpuRef>([] {}));
  std::vector<PercpuRef*> refs;
  for (std::size_t i = 0; i < nrefs; ++i) refs.push_back((*pool)[i].get());
  PercpuRegistry& registry = PercpuRegistry::instance();

  double per_thread = 0;
  double per_pair = 0;
  double after_exit = 0;
  double blocks_per_thread = 0;
  for (auto _ : state) {
    const AreaStats base = registry.stats();
    const AreaStats one = stats_with_live_threads(threads, std::span(refs).last(1));
    const AreaStats all = stats_with_live_threads(threads, refs);
    const AreaStats end = registry.stats();
    if (one.areas - base.areas != threads || all.areas - base.areas != threads) {
      state.SkipWithError("not every thread had a counter area while alive");
      break;
    }
    per_thread = static_cast<double>(one.bytes - base.bytes) / static_cast<double>(threads);
    per_pair = static_cast<double>(all.bytes - base.bytes) / static_cast<double>(threads * nrefs);
    blocks_per_thread =
        static_cast<double>(all.blocks - base.blocks) / static_cast<double>(threads);
    after_exit = static_cast<double>(end.bytes) - static_cast<double>(base.bytes);
    if (end.bytes != base.bytes || end.areas != base.areas || end.blocks != base.blocks) {
      state.SkipWithError("counter memory was not returned when the threads exited");
      break;
    }
  }
  state.counters["bytes_per_thread"] = per_thread;
  state.counters["bytes_per_pair"] = per_pair;
  state.counters["blocks_per_thread"] = blocks_per_thread;
  state.counters["bytes_after_exit"] = after_exit;
}
// 1000 x 1000 is the target's case (docs/design.md#performance-targets). 100 x 100000 shows what a
// process with many pages costs a thread that touches only one of them (the directory part of
// bytes_per_thread).
BENCHMARK(BM_PercpuRefMemory)
    ->Args({1000, 1000})
    ->Args({100, 100000})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
