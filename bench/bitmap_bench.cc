// SPDX-License-Identifier: LGPL-2.1-or-later
//
// bitmap_bench.cc: the layer-4 benchmarks (docs/design.md#performance-targets).
//
//   BM_BitmapWriteDirtyChunk  start_write + end_write on an already-Dirty chunk (no IO):
//                             every thread on the same chunk, the same page.
//   BM_ClassicBitmapWrite     the same on the peer: one mutex and a per-chunk counter, as
//                             the old md-bitmap does (classic_bitmap.h).
//   BM_BitmapDaemonPass/N     one daemon pass over N expired pages that each hold a Dirty
//                             chunk: suspend (one grace period), clean, persist, resume.
//   BM_BitmapGroupCommit      1, 2, 4, 8 writers dirtying fresh chunks of one block, with a
//                             storage whose sync sleeps 50 µs (a device flush): reports
//                             syncs per write (1.0 without group commit).
#include <llbitmap/bitmap.h>

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "bench_util.h"
#include "classic_bitmap.h"
#include "memory_storage.h"

namespace llbitmap::bench {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kDevice = 1ull << 30;  // 16384 chunks of 64 KiB, 5 pages

std::unique_ptr<Bitmap> make_bitmap(Clock* clock, std::unique_ptr<Storage> storage = nullptr) {
  BitmapOptions o;
  o.device_bytes = kDevice;
  o.start_daemon = false;
  o.daemon_sleep = 1000ms;
  o.barrier_idle = 5000ms;
  o.clock = clock;
  std::error_code ec;
  if (!storage) storage = std::make_unique<MemoryStorage>();
  auto bm = Bitmap::create(std::move(storage), o, ec);
  if (!bm) std::abort();
  return bm;
}

void BM_BitmapWriteDirtyChunk(benchmark::State& state) {
  static std::unique_ptr<Bitmap> bm;
  if (state.thread_index() == 0) {
    bm = make_bitmap(nullptr);
    if (bm->start_write(0, 4096)) std::abort();  // Dirty and durable from here on
    bm->end_write(0, 4096);
  }
  for (auto _ : state) {
    if (bm->start_write(512, 4096)) std::abort();
    bm->end_write(512, 4096);
  }
  if (state.thread_index() == 0) {
    state.counters["syncs"] = static_cast<double>(bm->stats().persist_rounds);
  }
}
BENCHMARK(BM_BitmapWriteDirtyChunk)->Threads(1)->Threads(2);

void BM_ClassicBitmapWrite(benchmark::State& state) {
  static std::unique_ptr<ClassicBitmap> cb;
  if (state.thread_index() == 0) cb = std::make_unique<ClassicBitmap>(kDevice, 64 << 10);
  for (auto _ : state) {
    cb->start_write(512, 4096);
    cb->end_write(512, 4096);
  }
}
BENCHMARK(BM_ClassicBitmapWrite)->Threads(1)->Threads(2);

// One pass over N expired pages, each with one Dirty chunk. The pass includes the
// bitmap persist (to an in-memory storage, so it measures the protocol, not a disk).
void BM_BitmapDaemonPass(benchmark::State& state) {
  const auto pages = static_cast<std::uint64_t>(state.range(0));
  FakeClock clock;
  // 32 pages need more than the default 128 KiB of states: 8 MiB chunks of 64 KiB on a
  // 8 GiB device give 131072 chunks -> 33 pages of 4096 states.
  BitmapOptions o;
  o.device_bytes = 8ull << 30;
  o.chunk_bytes = 64 << 10;
  o.space_bytes = 256 << 10;
  o.start_daemon = false;
  o.daemon_sleep = 1000ms;
  o.barrier_idle = 5000ms;
  o.clock = &clock;
  std::error_code ec;
  auto bm = Bitmap::create(std::make_unique<MemoryStorage>(), o, ec);
  if (!bm) {
    state.SkipWithError(ec.message().c_str());
    return;
  }
  const Geometry& g = bm->geometry();
  for (auto _ : state) {
    state.PauseTiming();
    for (std::uint64_t p = 0; p < pages; ++p) {
      const std::uint64_t off = g.chunk_offset(g.first_chunk_of_page(p));
      if (bm->start_write(off, 4096)) std::abort();
      bm->end_write(off, 4096);
    }
    clock.advance(6000ms);
    state.ResumeTiming();
    bm->run_daemon_once();
  }
  if (bm->counts().dirty != 0) state.SkipWithError("the pass left Dirty chunks");
  state.counters["pages"] = static_cast<double>(pages);
}
BENCHMARK(BM_BitmapDaemonPass)->Arg(1)->Arg(32)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Writers that each dirty a fresh chunk of the same block; a sync costs 50 µs.
void BM_BitmapGroupCommit(benchmark::State& state) {
  static std::unique_ptr<Bitmap> bm;
  static std::atomic<std::uint64_t> next{0};
  static std::atomic<std::uint64_t> writes{0};
  if (state.thread_index() == 0) {
    // A device flush blocks without using the CPU: sleep, so that at 4 and 8 threads
    // on 2 cores the other writers run meanwhile (a spinning sync would starve them).
    bm = make_bitmap(nullptr,
                     std::make_unique<MemoryStorage>([] { std::this_thread::sleep_for(50us); }));
    next = 0;
    writes = 0;
  }
  const std::uint64_t chunks_per_block = 4096;
  for (auto _ : state) {
    // Chunks 3072.. are block 1; wrap within it (a chunk already Dirty costs no sync).
    const std::uint64_t c = 3072 + next.fetch_add(1, std::memory_order_relaxed) % chunks_per_block;
    if (bm->start_write(c << 16, 4096)) std::abort();
    bm->end_write(c << 16, 4096);
    writes.fetch_add(1, std::memory_order_relaxed);
  }
  if (state.thread_index() == 0) {
    // persist_rounds includes the one at create time.
    state.counters["syncs_per_write"] =
        static_cast<double>(bm->stats().persist_rounds) / static_cast<double>(writes.load());
  }
}
// 500 writes per thread: at 8 threads 4000 fresh chunks, all inside block 1's 4096, so
// no write finds its chunk already Dirty.
BENCHMARK(BM_BitmapGroupCommit)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->Threads(8)
    ->UseRealTime()
    ->Iterations(500);

}  // namespace
}  // namespace llbitmap::bench
