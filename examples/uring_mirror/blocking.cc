// SPDX-License-Identifier: LGPL-2.1-or-later
//
// blocking.cc: --mode blocking of llbitmap-uring-mirror (see blocking.h).
#include "blocking.h"

#include <llbitmap/bitmap.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <utility>

#include "leg_io.h"
#include "workload.h"
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace llbitmap::uring_mirror {

namespace {

constexpr std::uint64_t kIdle = std::numeric_limits<std::uint64_t>::max();  // no write

}  // namespace

// One reactor's share of the load: its picker and what its workers have in flight.
struct BlockingMirror::Group {
  Group(Shared& s, unsigned index) : picker(s, index), in_flight(s.iodepth, kIdle) {}
  std::mutex mu;
  OffsetPicker picker;                   // guarded by mu
  std::vector<std::uint64_t> in_flight;  // guarded by mu; per worker slot, kIdle if none
};

BlockingMirror::BlockingMirror(Shared& shared) : s_(shared) {}

BlockingMirror::~BlockingMirror() {
  join();
}

std::unique_ptr<BlockingMirror> BlockingMirror::open(Shared& shared,
                                                     const std::filesystem::path& path,
                                                     std::chrono::milliseconds daemon_sleep,
                                                     std::chrono::milliseconds barrier_idle,
                                                     std::string& error) {
  std::unique_ptr<BlockingMirror> m(new BlockingMirror(shared));
  // Every end_write comes right after its leg writes; the daemon calls this before it
  // persists Clean, so Clean reaches the bitmap file only after the data it covers.
  const int leg0 = shared.leg_fd[0], leg1 = shared.leg_fd[1];
  auto data_flush = [leg0, leg1]() -> std::error_code {
    std::error_code ec = mirror::sync_fd(leg0);
    if (!ec) ec = mirror::sync_fd(leg1);
    return ec;
  };
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    BitmapOptions opts;  // the library's defaults, as ReactorBitmap::format in llbitmap mode
    opts.device_bytes = shared.device_bytes;
    if (daemon_sleep.count() != 0) opts.daemon_sleep = daemon_sleep;
    if (barrier_idle.count() != 0) opts.barrier_idle = barrier_idle;
    opts.data_flush = data_flush;
    m->bitmap_ = Bitmap::create(path, opts, ec);
    if (ec) {
      error = "creating " + path.string() + ": " + ec.message();
      return nullptr;
    }
  } else {
    OpenOptions opts;
    opts.data_flush = data_flush;
    m->bitmap_ = Bitmap::open(path, opts, ec);
    if (ec) {
      error = path.string() + ": " + ec.message();
      return nullptr;
    }
  }
  if (m->bitmap_->device_bytes() != shared.device_bytes) {
    error = path.string() + ": made for " + std::to_string(m->bitmap_->device_bytes()) +
            " bytes, not --size " + std::to_string(shared.device_bytes);
    return nullptr;  // no write was started: closed by its destructor
  }
  if (daemon_sleep.count() != 0) ec = m->bitmap_->set_daemon_sleep(daemon_sleep);
  if (!ec && barrier_idle.count() != 0) ec = m->bitmap_->set_barrier_idle(barrier_idle);
  if (ec) {
    error = "bitmap timings: " + ec.message();
    return nullptr;
  }
  return m;
}

std::uint64_t BlockingMirror::chunk_bytes() const noexcept {
  return bitmap_->chunk_bytes();
}

unsigned BlockingMirror::workers() const noexcept {
  return s_.reactors * s_.iodepth;
}

void BlockingMirror::start(std::vector<ReactorResult>& results) {
  const unsigned n = workers();
  results.resize(n);
  for (unsigned g = 0; g < s_.reactors; ++g) groups_.push_back(std::make_unique<Group>(s_, g));
  for (unsigned i = 0; i < n; ++i) {
    Group& group = *groups_[i / s_.iodepth];
    threads_.emplace_back(
        [this, &group, i, &result = results[i]] { work(group, i, i % s_.iodepth, result); });
  }
  // acquire: pairs with each worker's release increment (its tid is written before); each
  // increment is notified.
  for (unsigned v; (v = s_.started.load(std::memory_order_acquire)) < n;)
    s_.started.wait(v, std::memory_order_acquire);
}

void BlockingMirror::join() {
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

std::error_code BlockingMirror::close() {
  return bitmap_->close();
}

BlockingStats BlockingMirror::stats() const noexcept {
  const BitmapStats st = bitmap_->stats();
  return BlockingStats{st.persist_rounds, st.persist_waits, st.pages_cleaned};
}

void BlockingMirror::work(Group& group, unsigned index, unsigned slot, ReactorResult& result) {
  pthread_setname_np(pthread_self(), "llbm-worker");
  result.tid = static_cast<pid_t>(::syscall(SYS_gettid));
  auto* buf = static_cast<std::byte*>(std::aligned_alloc(kBlock, kBlock));
  if (buf == nullptr) throw std::bad_alloc();
  const std::unique_ptr<std::byte, decltype(&std::free)> hold(buf, &std::free);
  // release: pairs with start()'s acquire load.
  s_.started.fetch_add(1, std::memory_order_release);
  s_.started.notify_all();
  // acquire: pairs with the main thread's release store of go (it notifies after it).
  while (!s_.go.load(std::memory_order_acquire)) s_.go.wait(false, std::memory_order_acquire);

  const std::uint64_t start_ns = now_ns();
  auto in_flight = [&group](std::uint64_t off) {  // under group.mu
    for (const std::uint64_t o : group.in_flight)
      if (o == off) return true;
    return false;
  };
  std::uint64_t stamp = 0;
  // A write's latency runs from the end of this worker's previous write (the start, for
  // the first), as a reactor's slot picks its next write when its previous one completed:
  // the time a runnable worker waits for a CPU counts, as the time a reactor's write
  // waits for its loop does.
  std::uint64_t t0 = start_ns;
  bool measured = false;  // --warmup: counted once the main thread says so
  std::uint64_t measure_ns = 0;
  for (;;) {
    // acquire: pairs with the main thread's release store of the stop flag.
    if (s_.stop.load(std::memory_order_acquire)) break;
    std::uint64_t off = 0;
    {
      const std::lock_guard lock(group.mu);
      if (!group.picker.pick(off, in_flight)) {  // kFirst: every chunk was touched
        result.seconds = measured ? static_cast<double>(now_ns() - measure_ns) / 1e9 : 0;
        // relaxed: the main thread only counts; the join orders everything else.
        s_.exhausted.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      group.in_flight[slot] = off;
    }
    // Every write carries its own bytes, so legs that missed different writes differ.
    ++stamp;
    for (std::size_t i = 0; i < kBlock; i += 64) {
      const std::uint64_t words[2] = {off, stamp ^ (std::uint64_t{index} << 48)};
      std::memcpy(buf + i, words, sizeof words);
    }
    if (const std::error_code ec = bitmap_->start_write(off, kBlock)) {
      ++result.errors;  // nothing is held: this worker writes no more
      if (result.error.empty()) result.error = "start_write: " + ec.message();
      const std::lock_guard lock(group.mu);
      group.in_flight[slot] = kIdle;
      break;
    }
    std::error_code leg_ec;
    for (const int fd : s_.leg_fd) {
      const std::error_code ec = mirror::pwrite_all(fd, buf, kBlock, off);
      if (ec && !leg_ec) leg_ec = ec;
    }
    bitmap_->end_write(off, kBlock);  // data_flush makes the leg writes durable before Clean
    const std::uint64_t t1 = now_ns();
    {
      const std::lock_guard lock(group.mu);
      group.in_flight[slot] = kIdle;
    }
    if (leg_ec) {
      ++result.errors;
      if (result.error.empty()) result.error = "leg write: " + leg_ec.message();
    }
    // As a reactor: a write that ends after the stop was seen is not counted.
    if (s_.stop.load(std::memory_order_acquire)) break;  // acquire: as above
    // acquire: pairs with the main thread's release store at the end of the warm-up.
    if (!measured && s_.measuring.load(std::memory_order_acquire)) {
      measured = true;
      measure_ns = t1;
    } else if (measured) {
      result.latency.record(t1 - t0);
      ++result.ops;
    }
    t0 = t1;
  }
  result.seconds = measured ? static_cast<double>(now_ns() - measure_ns) / 1e9 : 0;
}

}  // namespace llbitmap::uring_mirror
