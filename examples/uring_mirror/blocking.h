// SPDX-License-Identifier: LGPL-2.1-or-later
//
// blocking.h: --mode blocking of llbitmap-uring-mirror, the same RAID-1 of two files
// and the same load, but on the blocking Bitmap API (include/llbitmap/bitmap.h) driven
// by threads instead of ReactorBitmap driven by reactors: the baseline the reactor
// engine is measured against at the same number of writes in flight.
//
// reactors x iodepth worker threads (named llbm-worker), in `reactors` groups of
// `iodepth`. Group i picks its offsets exactly as reactor i does (one OffsetPicker of
// index i, workload.h, behind the group's lock, which also keeps the group's offsets in
// flight). Each worker loops: pick an offset, Bitmap::start_write (which may block:
// persist of Dirty, a suspended page), pwrite the 4 KiB block to leg0 then leg1 (the
// legs as the reactors have them, O_DIRECT where allowed), Bitmap::end_write, and
// record the latency: from the end of the worker's previous write (the run's start for
// the first) to after end_write, as a reactor's slot starts its next write when the
// previous one completed; so a worker's wait for a CPU counts, like a reactor write's
// wait for its loop, and the mean latency is (writes in flight) / IOPS in both modes.
// The bitmap is the file
// the reactor mode uses (same format), opened with Bitmap::open, its daemon thread
// running and OpenOptions::data_flush = fdatasync of both legs, so end_write comes right
// after the leg writes, as in the reactor mode (ReactorOptions::data_flush).
//
// Threads: open, start, join, close and stats on the main thread, in that order (start
// returns once every worker has started; they write once Shared::go is set and
// notified, and stop at Shared::stop or when kFirst runs out); each worker writes only
// its own ReactorResult.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "engine.h"

namespace llbitmap {
class Bitmap;
}

namespace llbitmap::uring_mirror {

// The blocking bitmap's counters for the report (BitmapStats).
struct BlockingStats {
  std::uint64_t persist_rounds = 0;  // syncs of the bitmap file
  std::uint64_t persist_waits = 0;   // start_write calls that waited for a persist
  std::uint64_t pages_cleaned = 0;   // pages the daemon cleaned
};

class BlockingMirror {
 public:
  // Opens `path` with Bitmap::open (creating it with Bitmap::create when missing) for
  // shared.device_bytes, with data_flush = fdatasync of shared.leg_fd and the daemon
  // running; a non-zero daemon_sleep / barrier_idle is set on it. On failure: nullptr
  // and `error` says why.
  static std::unique_ptr<BlockingMirror> open(Shared& shared, const std::filesystem::path& path,
                                              std::chrono::milliseconds daemon_sleep,
                                              std::chrono::milliseconds barrier_idle,
                                              std::string& error);
  ~BlockingMirror();  // joins the workers if join() was not called (after Shared::stop)
  BlockingMirror(const BlockingMirror&) = delete;
  BlockingMirror& operator=(const BlockingMirror&) = delete;

  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept;
  // reactors x iodepth.
  [[nodiscard]] unsigned workers() const noexcept;
  // Starts the workers (results gets one entry each) and returns once every one has
  // started and written its tid.
  void start(std::vector<ReactorResult>& results);
  // Joins the workers (after Shared::stop, or once they all ran out: kFirst).
  void join();
  // Bitmap::close (after join): cleans and persists everything.
  std::error_code close();
  [[nodiscard]] BlockingStats stats() const noexcept;

 private:
  struct Group;
  explicit BlockingMirror(Shared& shared);
  void work(Group& group, unsigned index, unsigned slot, ReactorResult& result);

  Shared& s_;
  std::unique_ptr<Bitmap> bitmap_;
  std::vector<std::unique_ptr<Group>> groups_;
  std::vector<std::thread> threads_;
};

}  // namespace llbitmap::uring_mirror
