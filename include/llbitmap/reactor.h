// SPDX-License-Identifier: LGPL-2.1-or-later
//
// reactor.h: ReactorBitmap, the write-intent bitmap for event-loop engines (SPDK
// reactors, Seastar shards, io_uring loops): no call blocks, sleeps or does IO, and
// the library starts no thread of its own for it (docs/design.md#the-reactor-driver).
//
// Layer 4, beside Bitmap (bitmap.h). Both are drivers of one core: the chunk states and
// their transition table (chunk_state.h), the crash-recovery rule (recovery.h), the
// page barriers (page_barrier.h) and the persist planning with group commit. Bitmap
// executes the core's metadata IO itself and runs a daemon thread; ReactorBitmap hands
// every IO to the engine and runs its cleaning pass as a step the engine calls.
//
// The engine's loop, on every reactor thread that uses the bitmap:
//
//   ReactorQueue q(bitmap);                 // one per reactor thread
//   ...
//   Admit a = q.start_write(off, len, pw, ec);
//     kReady:   every chunk of the range is durably Dirty (or NeedSync) and its pages
//               are held: issue the data write now, call end_write when it is durable
//               (or when the data flush will make it durable, see kDataFlush).
//     kPending: the bitmap keeps `pw`; its callback runs later from q.poll() on this
//               thread, with an empty error (admitted: as kReady) or a refusal
//               (nothing held: do not issue the write, do not call end_write).
//     kRefused: `ec` says why (invalid_argument, bitmap_failed, bitmap_closed);
//               nothing held.
//   q.poll();                               // runs the callbacks that became due
//   while (bitmap.next_io(io)) submit(io);  // metadata IO the engine performs
//   ... on its completion: bitmap.complete(io.id, result);
//   bitmap.step(now);                       // the cleaning pass, a few steps at a time
//
// Completion of a pending write: a callback run from ReactorQueue::poll() on the thread
// that owns the queue. A queue also has an eventfd (event_fd()) that becomes readable when
// poll() has work, for an engine that sleeps in epoll or io_uring: a write admitted
// because another reactor completed the sync it waited for wakes its own reactor (with
// ReactorQueue::Wake::kOtherThreads, only such a write: one made due on the queue's own
// thread waits for the poll() that thread makes before it sleeps). A
// busy-polling engine (SPDK) ignores the descriptor. Callbacks rather than a descriptor
// per write: a callback is the engine's own continuation, on its own thread, and costs
// no system call; the descriptor is one per queue and only wakes a sleeping loop.
//
// Metadata IO: next_io() hands out, in the order they may be issued, the writes of a
// persist round (any number outstanding at once, completed in any order), then its
// sync (handed out only once every write of the round has completed, or, with
// ReactorOptions::ordered_sync, right behind the writes in one next_ios() call, for the
// engine to start once they completed: MetaIo::after_writes), and the cleaning
// pass's data flush. Each MetaIo must be completed exactly once with complete(id, ec);
// an unknown id or a second completion aborts with a message. Any thread may call
// next_io and complete; the requests are the same whichever thread takes them. Data
// writes are admitted only after the sync that made their Dirty durable completed
// (write-ahead, docs/design.md#write-ahead-ordering). A failed write or sync makes the
// bitmap failed for good (docs/design.md#failure-rule): pending writes are refused with
// bitmap_failed, later ones too, and next_io then hands out the stale mark of the
// superblock (two writes and a sync) before failed() turns true.
//
// The cleaning pass (step): while Dirty chunks exist it runs every daemon_sleep (counted
// from the end of the last pass): it picks the pages idle for barrier_idle that hold
// Dirty chunks, kills them with one grace period (waited for by later steps, never on the
// caller's thread), waits in later steps until their writes have drained (a page whose
// writes outlive daemon_sleep is given up and reopened, as Bitmap's daemon does), asks
// for the data flush (kDataFlush, when ReactorOptions::data_flush is set), turns Dirty
// into Clean, has the Clean blocks persisted through next_io, and resumes the pages. A
// write that meets a page being cleaned is kPending and is retried when the page
// reopens. A failed data flush keeps the pages Dirty, and the next pass retries them.
// step() may be called from any thread and as often as the engine likes (each call
// does what is due and returns); calls are serialised internally (a call that finds
// another running returns at once).
//
// Open and create: open() takes the bitmap file's bytes as the engine read them and
// applies the crash-recovery rule of Bitmap::open (recovery.h). Two rounds follow, as
// Bitmap::open's two syncs: the first makes the recovered states durable (open queues
// every block), the second the superblock (stale and first-use flags cleared, events
// moved on, device bound). Writes are kPending until both completed (ready()): a crash
// between them must not reopen a first-use file, whose every chunk reads Unwritten,
// under an admitted write. format() gives the bytes of a new file for the engine to
// write (or create the file with `llbitmap create` or Bitmap::create beforehand). The
// engine owns the file: it opens it, keeps one writer per file, and closes it.
//
// Close: begin_close() asks the cleaning pass to finish: once no write is in flight it
// suspends every page, flushes the data, cleans, and persists the Clean states with the
// superblock's events moved on. close_state() then reports kClosed with the result.
// A write still in flight when the drain allowance (100 ms after the grace period) runs
// out gives Errc::busy: the bitmap stays open and usable and begin_close() may be called
// again. After a close that did not end busy, start_write and start_discard are kRefused
// with bitmap_closed and pending ones are refused with it too. Destroying a
// ReactorBitmap with a write in flight, a write pending, a queue still attached, a
// metadata IO outstanding or a pass in progress aborts with a message; destroying it
// open is a crash as far as the file is concerned (see the destructor).
//
// Threads: any number of reactor threads, each with its own ReactorQueue, may share one
// bitmap. start_write/start_discard on a queue only from the thread that owns it (the
// one that calls its poll()); end_write/end_discard, next_io, complete, step and every
// query from any thread. Nothing here blocks: the locks it takes are spin locks held for
// a few loads and stores (never across IO or a wait), and the page barriers' kill hands
// its grace period to the library's switch thread.
//
// Memory ordering: a kReady return or an admitting callback happens after the
// complete() of the sync that made the range's Dirty durable (the completing thread's
// release, the admitted thread's acquire), so a data write issued next comes after that
// sync. end_write releases the page barrier; the cleaning pass's drain (one grace period
// and the zero count) happens after it, and the data flush is requested only after the
// drain, so every data write whose end_write came before the pass is covered by the
// flush before Clean is written.
//
// Errors: std::error_code, never exceptions. Misuse aborts with a message naming the
// object and the broken rule (a completion for an unknown or completed IO, end_write
// without a start, a queue used from two threads at once where that is checked, a
// ReactorWrite submitted while it is still pending).
#pragma once

#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/clock.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <system_error>
#include <utility>
#include <vector>

namespace llbitmap {

class ReactorBitmap;
class ReactorQueue;

// One metadata IO the engine performs for the bitmap (ReactorBitmap::next_io).
struct MetaIo {
  enum class Kind : std::uint8_t {
    kWrite,      // write `bytes` at byte `offset` of the bitmap file
    kSync,       // make every completed kWrite durable (fdatasync of the bitmap file);
                 // with ReactorOptions::pipelined_rounds several may be outstanding,
                 // to be completed in any order
    kDataFlush,  // make every data write that end_write was called for durable (what
                 // BitmapOptions::data_flush does for Bitmap: the legs' fdatasync)
  };
  Kind kind = Kind::kSync;
  // Names this IO in complete(); unique among the IOs not yet completed.
  std::uint64_t id = 0;
  // kWrite only: where, and what (valid until complete(id) returns; a short write must
  // be finished or reported as an error by the engine).
  std::uint64_t offset = 0;
  std::span<const std::byte> bytes;
  // kSync only, and only with ReactorOptions::ordered_sync: the sync was handed out by the
  // same next_ios() call as the kWrites of its round, directly behind them, before they
  // completed. Start it only once every one of those kWrites has completed (io_uring:
  // IOSQE_IO_LINK on each of them; a linked sync cancelled by a short write is started
  // again once the write is finished). If one of them failed, complete the sync with an
  // error without performing it (as io_uring's link does: ECANCELED); performing it is
  // safe too, but makes the round's other writes durable without the failed one, so a
  // block can read as unverifiable (its chunks resynced) until the stale mark is durable.
  // Completing it while one of them is outstanding aborts with a message.
  bool after_writes = false;
};

// The answer of ReactorQueue::start_write and start_discard.
enum class Admit : std::uint8_t {
  kReady,    // admitted now: the range is held
  kPending,  // the ReactorWrite's callback will say (from the queue's poll())
  kRefused,  // not admitted; the error code says why; nothing held
};

// A write (or discard) that could not be admitted at once. The engine owns it, usually
// inside its IO context, and must keep it alive and in place from the kPending return
// until its callback has started; it may then be reused or destroyed (also from inside
// the callback). Not copyable or movable.
class ReactorWrite {
 public:
  // ec empty: admitted (as kReady). Otherwise refused (nothing held).
  using Callback = void (*)(ReactorWrite& write, std::error_code ec);
  explicit ReactorWrite(Callback on_admit) noexcept : on_admit_(on_admit) {}
  ReactorWrite(const ReactorWrite&) = delete;
  ReactorWrite& operator=(const ReactorWrite&) = delete;
  // Aborts if destroyed while pending.
  ~ReactorWrite();

  [[nodiscard]] std::uint64_t offset() const noexcept { return offset_; }
  [[nodiscard]] std::uint64_t length() const noexcept { return length_; }
  [[nodiscard]] bool discard() const noexcept { return discard_; }
  // True from a kPending return until the callback starts.
  [[nodiscard]] bool pending() const noexcept {
    // relaxed: the owner's own thread sets and clears it (poll() runs the callback there).
    return pending_.load(std::memory_order_relaxed);
  }

 private:
  friend class ReactorBitmap;
  friend class ReactorQueue;
  friend class ReactorCore;
  Callback on_admit_;
  std::uint64_t offset_ = 0;
  std::uint64_t length_ = 0;
  std::uint64_t seq_ = 0;  // the change number its blocks must have durable
  ReactorQueue* queue_ = nullptr;
  ReactorWrite* next_ = nullptr;
  std::error_code result_;
  bool discard_ = false;
  bool retry_ = false;  // due for a new admission, not for its callback
  std::atomic<bool> pending_{false};
};

// What ReactorBitmap::open needs that the file does not store.
struct ReactorOptions {
  bool parity = false;  // raid456 rule
  // true: the cleaning pass asks for a kDataFlush before it persists Clean (end_write may
  // then be called once the data write completed, before it is durable). false: the
  // engine calls end_write only once the data is durable.
  bool data_flush = false;
  Clock* clock = nullptr;        // nullptr: Clock::system() (barrier_idle's coarse time)
  DeviceUuid device_uuid{};      // as OpenOptions::device_uuid
  std::uint64_t min_events = 0;  // as OpenOptions::min_events
  // true: the engine promises to start a kSync marked after_writes only once the kWrites
  // handed out before it in the same next_ios() call have completed, so a round's sync
  // can be handed out right behind its writes and a round costs one trip through the
  // engine's IO path instead of two. false: a round's kSync is handed out only after all
  // its kWrites were completed (next_io and next_ios hand out the same requests).
  bool ordered_sync = false;
  // true: the next persist round may begin once every write of the current one has
  // completed, while its kSync is outstanding, so a write that arrives during a round's
  // sync waits for one round instead of the rest of that one and then its own. Several
  // kSyncs may then be outstanding together and may complete in any order. A crash while
  // a later round's block write is durable without its checksum-table write leaves that
  // block unverifiable, so recovery resyncs all its chunks, as after a crash in the
  // middle of any round (docs/design.md#pipelined-rounds). false: one round at a time.
  bool pipelined_rounds = false;
};

// Counters for tests, benchmarks and the tools (relaxed snapshots).
struct ReactorStats {
  std::uint64_t persist_rounds;    // syncs completed
  std::uint64_t blocks_written;    // block writes completed
  std::uint64_t pending_persist;   // admissions that waited for a persist
  std::uint64_t pending_page;      // admissions that met a page being cleaned
  std::uint64_t daemon_passes;     // passes that suspended at least one page
  std::uint64_t pages_cleaned;     // pages suspended, cleaned and resumed
  std::uint64_t suspend_timeouts;  // pages given up: a write outlived daemon_sleep
  std::uint64_t data_flushes;      // kDataFlush requests completed
  std::uint64_t invalid_bytes;     // as BitmapStats
  std::uint64_t bad_blocks;        // as BitmapStats
};

class ReactorBitmap {
 public:
  enum class CloseState : std::uint8_t { kOpen, kClosing, kClosed };

  // The bytes of a new bitmap file for `options` (BitmapOptions: geometry, timings,
  // assume_clean, device_uuid; the rest is ignored). Empty with ec set on a bad option.
  static std::vector<std::byte> format(const BitmapOptions& options, std::error_code& ec);
  // Opens the file whose bytes are `file` (the whole file, as read by the engine).
  // Refusals as Bitmap::open (the bytes are only read). Writes are kPending until the
  // recovered states are durable (see the header comment).
  static std::unique_ptr<ReactorBitmap> open(std::span<const std::byte> file,
                                             const ReactorOptions& options, std::error_code& ec);

  // Requires: no IO outstanding, no queue attached, no write pending or in flight, no
  // cleaning pass in progress (each aborts with a message). Without a close the file
  // holds what the last completed round made durable, and the next open recovers it as
  // after a crash (Dirty chunks become NeedSync); close first for a clean file.
  virtual ~ReactorBitmap();
  ReactorBitmap(const ReactorBitmap&) = delete;
  ReactorBitmap& operator=(const ReactorBitmap&) = delete;

  // Requires: a start_write (or an admitting callback) of the same range, not ended.
  void end_write(std::uint64_t offset, std::uint64_t length);
  void end_discard(std::uint64_t offset, std::uint64_t length);

  // The resync side, as Bitmap's (no barrier, never pending); the changes they make are
  // persisted through next_io like any other.
  bool start_sync(std::uint64_t offset, SyncKind kind = SyncKind::kResync);
  void end_sync(std::uint64_t offset);
  void abort_sync(std::uint64_t offset);
  void close_sync();
  [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> needs_sync() const;
  [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> needs_recovery() const;
  [[nodiscard]] std::vector<std::pair<std::uint64_t, std::uint64_t>> needs_rebuild() const;
  void set_degraded(bool degraded);
  [[nodiscard]] bool degraded() const noexcept;

  // The next metadata IO to issue: true and `io` filled, or false (nothing to issue now).
  bool next_io(MetaIo& io);
  // Up to out.size() of them at once, in the order next_io would hand them out; returns
  // how many were filled. With ReactorOptions::ordered_sync, a round that starts in this
  // call and whose writes fit in `out` with a slot to spare gets its kSync in the same
  // call, marked after_writes, directly behind its kWrites.
  std::size_t next_ios(std::span<MetaIo> out);
  // Reports the result of an IO next_io handed out. Aborts for an id that is not
  // outstanding (unknown, or completed already).
  void complete(std::uint64_t id, std::error_code result);
  // True if some IO was handed out and not completed.
  [[nodiscard]] bool io_outstanding() const noexcept;

  // Advances the cleaning pass (and a requested flush or close) as far as it can
  // without waiting. `now` on the bitmap's clock (ReactorOptions::clock).
  void step(Clock::time_point now);
  void step();  // step(clock.now())
  // Cleans every page at the next steps, expired or not (Bitmap::flush without the wait):
  // flushed() turns true once every chunk that was Dirty when it was asked is Clean and
  // durable (or could not be: a write outlived daemon_sleep, a data flush failed, the
  // bitmap failed; then flush_result() says which).
  void begin_flush();
  [[nodiscard]] bool flushed() const noexcept;
  [[nodiscard]] std::error_code flush_result() const;
  void begin_close();
  [[nodiscard]] CloseState close_state(std::error_code& result) const;

  [[nodiscard]] StateCounts counts() const;
  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept;
  [[nodiscard]] std::uint64_t chunks() const noexcept;
  [[nodiscard]] std::uint64_t device_bytes() const noexcept;
  [[nodiscard]] const Geometry& geometry() const noexcept;
  [[nodiscard]] ChunkState state(std::uint64_t chunk) const noexcept;
  // True once a failed IO is final and the stale mark's IO completed (whatever its result).
  [[nodiscard]] bool failed() const noexcept;
  // True once open()'s two rounds completed: the recovered states and then the
  // superblock are durable, and writes can be admitted.
  [[nodiscard]] bool ready() const noexcept;
  [[nodiscard]] std::uint64_t events() const;
  [[nodiscard]] bool out_of_date() const noexcept;
  [[nodiscard]] ReactorStats stats() const noexcept;
  std::error_code set_daemon_sleep(std::chrono::milliseconds d);
  std::error_code set_barrier_idle(std::chrono::milliseconds d);
  [[nodiscard]] std::chrono::milliseconds daemon_sleep() const noexcept;
  [[nodiscard]] std::chrono::milliseconds barrier_idle() const noexcept;

 private:
  friend class ReactorCore;
  ReactorBitmap() = default;
};

// One reactor thread's door into a ReactorBitmap: its admissions, their callbacks and its
// eventfd. Owned by the engine; must be destroyed before the bitmap, with no write of it
// pending (aborts otherwise).
class ReactorQueue {
 public:
  // Construct it on the reactor thread that will use it, before that thread's loop
  // starts: it prepares the thread (its registration with the library's per-thread
  // counters and a counter for every page), a one-time step that may wait for the
  // library's registry lock if another thread registers at the same moment. Nothing the
  // loop calls afterwards takes that lock.
  // When the queue's eventfd is written (see event_fd()).
  enum class Wake : std::uint8_t {
    // For every callback made due while the descriptor is not readable yet.
    kAlways,
    // Only for callbacks made due by another thread. One made due on the queue's own
    // thread (by its complete(), step(), end_write() or begin_close() calls) is left for
    // the poll() the engine makes before it next sleeps: that thread is awake. Saves
    // the eventfd's write and read for every pending write whose completion the reactor
    // reports itself. Requires an engine that calls poll() after its other bitmap calls
    // and before it sleeps (the loop in the header comment does).
    kOtherThreads,
  };
  explicit ReactorQueue(ReactorBitmap& bitmap, Wake wake = Wake::kAlways);
  ~ReactorQueue();
  ReactorQueue(const ReactorQueue&) = delete;
  ReactorQueue& operator=(const ReactorQueue&) = delete;

  // See the header comment. On kPending, `w` is held until its callback runs from poll().
  // Requires: `w` not pending.
  Admit start_write(std::uint64_t offset, std::uint64_t length, ReactorWrite& w,
                    std::error_code& ec);
  // The same for a discard (fully covered chunks become Unwritten, lazily persisted: a
  // discard never waits for a persist, only for a page being cleaned).
  Admit start_discard(std::uint64_t offset, std::uint64_t length, ReactorWrite& w,
                      std::error_code& ec);
  // Runs the callbacks that became due, on the calling thread; returns how many ran.
  std::size_t poll();
  // Readable (EFD_NONBLOCK eventfd) when poll() has work; poll() drains it. -1 if the
  // kernel refused an eventfd (poll() still works).
  [[nodiscard]] int event_fd() const noexcept { return efd_; }
  // Writes of this queue that are pending.
  [[nodiscard]] std::size_t pending() const noexcept;
  [[nodiscard]] ReactorBitmap& bitmap() const noexcept { return bitmap_; }

 private:
  friend class ReactorCore;
  ReactorBitmap& bitmap_;
  int efd_ = -1;
  Wake wake_ = Wake::kAlways;
  const void* owner_ = nullptr;  // the constructing thread's tag (reactor_admission.cc)
  // The callbacks due, pushed by any thread (under the core's queue lock), run by poll().
  std::atomic<ReactorWrite*> ready_{nullptr};
  std::atomic<bool> signalled_{false};
  std::atomic<std::size_t> pending_{0};
  // Threads inside a push onto ready_ (it touches the queue after the push: the signal);
  // the destructor waits for none, so a queue destroyed right after its last callback ran
  // is never touched again.
  std::atomic<std::uint32_t> pushers_{0};
};

}  // namespace llbitmap
