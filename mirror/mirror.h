// SPDX-License-Identifier: LGPL-2.1-or-later
//
// mirror.h: Mirror, a user-space RAID-1 of two legs (files or block devices) whose
// write-intent bitmap is an llbitmap Bitmap, used exactly as md raid1 uses llbitmap.
//
// It is the library's reference client, shipped as an example (target
// llbitmap_mirror, not installed): the `llbitmap-demo crash` crash-and-recover run and the
// nbdkit plugin (nbdkit-llmirror-plugin.so) are built on it.
//
//   write(off, data)  Bitmap::start_write (durable Dirty) -> pwrite both legs ->
//                     Bitmap::end_write. No sync per write: the bitmap's data-flush hook
//                     fdatasyncs both legs before the daemon persists Clean. With
//                     fua=true the legs are fdatasynced before write() returns.
//   read(off, buf)    from the primary leg (the secondary while the primary is failed).
//   flush()           fdatasync both legs.
//   trim(off, len)    Bitmap discard + punch a hole in both legs.
//   resync()          copies every NeedSync chunk from the primary to the secondary
//                     (start_sync / copy / end_sync), with progress reports, while new
//                     writes continue (a write and the copy of the same chunk exclude
//                     each other with a per-chunk-stripe lock, as md's resync barrier).
//   fail_leg(i)       marks a leg failed: the mirror runs degraded (writes go to the
//                     other leg and make their chunks NeedSync; nothing is cleaned).
//   readd_leg(i)      brings it back and copies Bitmap::needs_recovery(): the chunks
//                     written meanwhile and those that were Dirty when the leg went away
//                     (a write may have been in flight to them).
//
// A leg file that is missing at open is created blank and rebuilt: under an existing
// bitmap the next resync copies Bitmap::needs_rebuild() (every chunk that is not
// Unwritten), under a new bitmap the whole device.
//
// Modes (for benchmarks): kLlbitmap (the above), kNone (no bitmap at all: a crash then
// needs a full resync), kClassic (the mutex + per-chunk counter bitmap of bench/, in
// memory: the old md-bitmap's locking cost without its IO).
//
// Threads: write/read/flush/trim from any number of threads at once; resync from one
// thread at a time, concurrently with IO; fail_leg/readd_leg/close not concurrently
// with each other. Errors are std::error_code; nothing throws. As with md raid1, two
// writes to the same bytes that are in flight at the same time may land in different
// orders on the two legs: callers (file systems, the NBD client) do not issue them.
//
// State beyond the legs and the bitmap: <primary>.llmirror-degraded names a failed
// leg (it stays failed across a reopen until readd_leg), in kNone/kClassic modes
// <primary>.llmirror-clean records a clean close, and in kLlbitmap mode
// <primary>.llmirror-id holds the mirror's device uuid and the bitmap's last recorded
// events: open refuses another mirror's bitmap (Errc::foreign_bitmap) and opens a bitmap
// older than the record (a restored copy) out of date, every chunk to be copied. A write
// error on one leg fails that leg (the write succeeds on the other); see mirror.cc.
#pragma once

#include <llbitmap/bitmap.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <system_error>

namespace llbitmap::mirror {

enum class Mode { kLlbitmap, kNone, kClassic };

struct MirrorOptions {
  std::filesystem::path primary;
  std::filesystem::path secondary;
  std::filesystem::path bitmap;  // unused in kNone and kClassic modes
  std::uint64_t size = 0;        // required when the files are created
  bool create = false;           // create missing legs (sparse) and the bitmap
  Mode mode = Mode::kLlbitmap;
  std::uint64_t chunk_bytes = 0;  // 0: the bitmap's automatic choice
  std::chrono::milliseconds daemon_sleep{5000};
  std::chrono::milliseconds barrier_idle{1000};
};

struct ResyncProgress {
  std::uint64_t chunks_total = 0;  // chunks that needed a copy when the resync started
  std::uint64_t chunks_done = 0;
  std::uint64_t bytes_copied = 0;
};

// Counters since open (tests, benchmarks, tools).
struct MirrorStats {
  std::uint64_t writes = 0;         // write() calls that issued their data
  std::uint64_t fua_writes = 0;     // of those, with fua=true
  std::uint64_t bytes_written = 0;  // bytes of those writes (counted once, not per leg)
  std::uint64_t trims = 0;
  std::uint64_t leg_syncs = 0;      // fdatasync calls on the legs, for any reason
  std::uint64_t chunks_copied = 0;  // by resync() and readd_leg()
  std::uint64_t bytes_copied = 0;
  std::uint64_t leg_errors = 0;  // IO errors that failed a leg
};

class Mirror {
 public:
  // Opens (or, with create, creates) the legs and the bitmap. An existing bitmap is
  // opened with crash recovery: call resync() to bring the legs back in step.
  static std::unique_ptr<Mirror> open(const MirrorOptions& options, std::error_code& ec);
  ~Mirror();
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  std::error_code write(std::uint64_t offset, std::span<const std::byte> data, bool fua = false);
  std::error_code read(std::uint64_t offset, std::span<std::byte> out);
  std::error_code flush();
  std::error_code trim(std::uint64_t offset, std::uint64_t length);

  std::error_code resync(const std::function<void(const ResyncProgress&)>& progress = {});
  // (offset, length) runs the next resync would copy (all of the device in kNone mode
  // after an unclean shutdown).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> needs_sync() const;

  void fail_leg(int leg);  // 0 = primary, 1 = secondary
  std::error_code readd_leg(int leg,
                            const std::function<void(const ResyncProgress&)>& progress = {});

  std::error_code close();
  [[nodiscard]] std::uint64_t size() const noexcept;
  [[nodiscard]] Bitmap* bitmap() noexcept;  // null in kNone and kClassic modes
  [[nodiscard]] MirrorStats stats() const noexcept;
  // The unit of resync copies and of the write/copy exclusion: the bitmap's chunk in
  // kLlbitmap mode, MirrorOptions::chunk_bytes (or the bitmap's automatic choice for
  // this size) in the others.
  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept;
  // The leg is failed (fail_leg, an IO error, or recorded so by an earlier run).
  [[nodiscard]] bool leg_failed(int leg) const noexcept;

 private:
  struct Impl;
  explicit Mirror(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llbitmap::mirror
