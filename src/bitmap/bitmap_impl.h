// SPDX-License-Identifier: LGPL-2.1-or-later
//
// bitmap_impl.h: BitmapImpl, the state behind the public Bitmap.
//
// Bitmap (include/llbitmap/bitmap.h) declares the public member functions and has no
// data members; BitmapImpl is the only class derived from it (Bitmap's constructor is
// private and BitmapImpl its friend), and create()/open() make one. Bitmap's member
// functions reach the state with impl(*this), a static_cast at offset 0: no pointer is
// followed, so the write fast path costs what it did when the fields were Bitmap's own.
// Bitmap's virtual destructor lets std::unique_ptr<Bitmap> destroy a BitmapImpl.
//
// What it owns, in construction order (destruction runs backwards, so the daemon thread
// is stopped before anything it uses goes away):
//   pages_      one PageBarrier per page of the image (the write path raises them, the
//               daemon suspends them)
//   image_      ChunkImage: state bytes, change numbers, stripe locks, superblock, Dirty
//               counts (chunk_image.h)
//   persister_  Persister: group-commit persistence and the failed state (persister.h)
//   daemon_     Daemon: the cleaning thread and the passes (daemon.h)
// The write path (bitmap.cc) changes chunks through image_, queues the changed blocks
// with persister_ and arms daemon_ when a chunk turns Dirty.
#pragma once

#include <llbitmap/bitmap.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>
#include <vector>

#include "chunk_image.h"
#include "daemon.h"
#include "persister.h"

namespace llbitmap {

class BitmapImpl final : public Bitmap {
 public:
  using Recovered = llbitmap::Recovered;

  // Reads, validates and recovers the file, makes the recovered states durable, starts
  // the daemon (see Bitmap::open).
  static std::unique_ptr<Bitmap> load(std::unique_ptr<Storage> storage, const OpenOptions& opt,
                                      std::error_code& ec);

  BitmapImpl(std::unique_ptr<Storage> storage, const Superblock& sb, Recovered recovered,
             const OpenOptions& opt);
  // Closes if not closed. Requires: no write in flight.
  ~BitmapImpl() override;

 private:
  friend class Bitmap;
  using PageList = Daemon::PageList;

  // True if [offset, offset + length) is not empty and inside the device.
  [[nodiscard]] bool in_device(std::uint64_t offset, std::uint64_t length) const noexcept {
    const std::uint64_t dev = image_.geometry().device_bytes();
    return length != 0 && offset < dev && length <= dev - offset;
  }
  // The chunks a discard of an in-device range covers completely: [first, last], or
  // first > last when it covers none.
  void discard_chunks(std::uint64_t offset, std::uint64_t length, std::uint64_t& first,
                      std::uint64_t& last) const noexcept;
  [[nodiscard]] TransitionContext context() const noexcept;
  // Changes one chunk (ChunkImage::change_chunk), then queues its block and arms the
  // daemon if the chunk turned Dirty. Returns the block's new change number, or 0.
  std::uint64_t change_chunk(std::uint64_t chunk, Action action, const TransitionContext& ctx);
  // Applies `action` to [first, last]; when `targets` is given, collects each touched
  // block with the change number that must be durable.
  std::uint64_t change_range(std::uint64_t first, std::uint64_t last, Action action,
                             const TransitionContext& ctx, std::vector<Target>* targets);
  // Applies `action` to [first, last] and waits until the blocks are durable.
  std::error_code mark_and_persist(std::uint64_t first, std::uint64_t last, Action action);
  // The rest of start_write once the pages are raised: mark, persist, or undo the raise
  // on error.
  std::error_code start_write_slow(std::uint64_t first, std::uint64_t last);
  // The rest of start_write when its one-chunk fast raise does not apply: raise page by
  // page (slow paths included), then start_write_slow.
  std::error_code start_write_raise(std::uint64_t first, std::uint64_t last);
  // start_write's answer when Persister::refused() is not 0: closed wins over failed.
  // Inline: the write path calls only make_error_code on this branch.
  [[gnu::always_inline]] static std::error_code refusal(std::uint8_t refused) noexcept {
    return make_error_code((refused & Persister::kClosed) != 0 ? Errc::bitmap_closed
                                                               : Errc::bitmap_failed);
  }
  // True once close() has finished (any result but Errc::busy). acquire: pairs with
  // close()'s release store, so close_error_ and the closed bitmap's state are visible.
  [[nodiscard]] bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }
  // Aborts if the bitmap is closed: `call` needs an open bitmap (bitmap.h says which).
  void check_open(const char* call) const noexcept;
  // close()'s last step once the daemon drained and persisted everything: writes are
  // refused from now on, and the pages Daemon::close left suspended are resumed, so a
  // writer that waited on one wakes, sees the refusal and returns Errc::bitmap_closed.
  void finish_close(std::error_code ec) noexcept;

  // The debug-build ledger of writes and discards in flight, per chunk (compiled only
  // without NDEBUG: the release write path does not touch it). start_write and
  // start_discard add their chunks once they succeed; end_write and end_discard take
  // them away first and abort if a chunk has none left, which an end without a
  // matching start on that chunk gives even while another write holds the same page.
#ifndef NDEBUG
  void ledger_add(std::uint64_t first, std::uint64_t last) noexcept;
  void ledger_remove(const char* call, std::uint64_t offset, std::uint64_t length,
                     std::uint64_t first, std::uint64_t last) noexcept;
#else
  void ledger_add(std::uint64_t, std::uint64_t) noexcept {}
  void ledger_remove(const char*, std::uint64_t, std::uint64_t, std::uint64_t,
                     std::uint64_t) noexcept {}
#endif

  // Changes the superblock under its lock, gives block 0 a new change number and queues
  // it. f is called with the superblock and must not block.
  template <class F>
  void edit_superblock(F&& f) {
    {
      detail::MutexLock lock(image_.superblock_lock());
      f(image_.superblock());
      image_.bump_block(image_.superblock_lock(), 0);
    }
    persister_.enqueue(0);
  }

  // Read by every write; fixed at construction.
  // &std::system_category(), so that the fast path returns success without a call.
  const std::error_category* const ok_category_;
  Clock* const clock_;
  const bool parity_;
  const std::function<std::error_code()> data_flush_;
  const std::uint64_t invalid_bytes_;
  const std::uint64_t bad_blocks_;
  const bool out_of_date_;
  // set_degraded's flag. relaxed on both sides: it publishes no data, and the ordering
  // that matters comes from the page barrier. An engine sets it before it ends the write
  // that missed a member; a daemon pass reads it again (context()) after its suspend,
  // which happens after that end_write, so the relaxed load sees it (coherence).
  std::atomic<bool> degraded_{false};
  // Set (release) at the end of close() unless it returned Errc::busy; closed() loads it
  // acquire, so what close() did happens before whatever skips or refuses because of
  // it. The aborting misuse checks load it relaxed: a diagnostic only.
  std::atomic<bool> closed_{false};
  // What the close() that closed the bitmap returned; every later close() returns it
  // again. Written before closed_'s release store, read after its acquire load.
  std::error_code close_error_;
#ifndef NDEBUG
  // The ledger: per chunk, starts not yet ended (atomic_ref, relaxed: each end comes
  // after its start by the engine's own ordering, so coherence is enough). calloc'd, so
  // the pages of a large device that are never written are never touched.
  struct FreeDeleter {
    void operator()(std::uint32_t* p) const noexcept;
  };
  std::unique_ptr<std::uint32_t[], FreeDeleter> in_flight_;
#endif
  PageList pages_;
  ChunkImage image_;
  Persister persister_;
  Daemon daemon_;
};

// Bitmap's members reach the state through these: BitmapImpl is the only class derived
// from Bitmap, at offset 0.
inline BitmapImpl& impl(Bitmap& b) noexcept {
  return static_cast<BitmapImpl&>(b);
}
inline const BitmapImpl& impl(const Bitmap& b) noexcept {
  return static_cast<const BitmapImpl&>(b);
}

}  // namespace llbitmap
