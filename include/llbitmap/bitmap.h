// SPDX-License-Identifier: LGPL-2.1-or-later
//
// bitmap.h: Bitmap, the write-intent bitmap of one protected device (md-llbitmap's
// bitmap operations), with its cleaning daemon.
//
// Layer 4. The device is split into chunks; every chunk has a one-byte state (see
// chunk_state.h), kept in memory and in a file (see format.h). The engine calls:
//
//   start_write(off, len)  before issuing a data write. Raises the barrier of every page
//                          the range touches (ascending), turns the chunks Dirty, and
//                          returns once Dirty is durable: the bitmap file was synced after
//                          the change, also when another thread's persist of the same
//                          block was still in flight. On error nothing is held: do not
//                          issue the write and do not call end_write.
//   end_write(off, len)    after the data write is durable (or after the engine's data
//                          flush hook will make it durable, see BitmapOptions::data_flush).
//   start_discard / end_discard  the same for a discard (Discard: fully covered chunks
//                          become Unwritten, lazily persisted).
//   start_sync / end_sync / abort_sync / close_sync / needs_sync  the resync side:
//                          no barrier, as upstream.
//   needs_recovery / needs_rebuild, start_sync(off, SyncKind)  the recovery side: what a
//                          re-added member and a new blank member need (see there).
//
// A daemon thread (or run_daemon_once() in tests) wakes every daemon_sleep while Dirty
// chunks exist. For every page idle for barrier_idle it suspends the page (all
// candidate pages share one grace period), calls the engine's data flush hook, turns
// Dirty into Clean, persists the page while it is still suspended, and resumes it. A
// page whose writes outlive daemon_sleep stays Dirty and open; one resumed with Dirty
// chunks left (a failed data flush hook) stays idle, so the next pass retries. While
// degraded nothing is cleaned and new writes give NeedSync. Each page counts its Dirty
// chunks, so a pass reads only the pages that have some, and a chunk that turns Dirty
// while a pass decides whether to sleep keeps the daemon armed (BitmapStats::daemon_armed).
//
// Fast path: start_write + end_write on a chunk that is already durably Dirty (or
// NeedSync) is one raise and one release of the page barrier plus a few loads: no lock,
// no locked instruction, no call into another translation unit.
//
// Write-ahead ordering (docs/design.md#write-ahead-ordering; upstream fix ef4ca3d4bf09):
// raise, then mark, then persist. Persists are serialised and grouped: one round writes
// every block changed so far and syncs once, so concurrent writers that dirty one block
// share one sync, and two snapshots of a block never land out of order.
//
// Failure (fsyncgate, docs/design.md#failure-rule): if a persist fails, the writers
// waiting for it get the error, the bitmap goes to the failed state (every later
// start_write returns Errc::bitmap_failed, nothing Clean is persisted again), and the
// superblock is marked stale (best effort) so that the next open resyncs every written
// chunk.
//
// Crash recovery on open: Dirty and Syncing chunks become NeedSync (Reload); a block
// whose checksum fails makes all its chunks NeedSync; a stale or failed bitmap makes
// every written chunk NeedSync (Stale). A superblock that cannot be trusted is refused
// with an error and the file is left untouched.
//
// Identity (docs/design.md#identity-device-uuid-and-events): a bitmap can be bound to its
// device (BitmapOptions::device_uuid, stored in the superblock); open() refuses a file
// bound to another device with Errc::foreign_bitmap and leaves it untouched. events()
// counts opens and closes; an engine that records it with its own metadata and passes
// it back as OpenOptions::min_events has a bitmap older than that record (a restored
// backup, a stale copy) opened out of date: every chunk NeedSync.
//
// Threads: start_write/end_write/start_discard/end_discard from any number of threads.
// The sync calls from the engine's resync thread(s). flush, run_daemon_once, close and
// the setters from any thread, not concurrently with close(). start_write and
// start_discard may race close(): each either succeeds first (close() then returns
// Errc::busy until it is ended) or returns Errc::bitmap_closed; none is left waiting.
// start_write may block (page suspended, persist); end_write never blocks.
//
// Memory ordering: when start_write returns success, the sync that made the chunk's
// Dirty durable has returned (on this thread, or on the round leader's, whose release
// store of the block's durable change number this thread loaded with acquire), so the
// data write the engine issues next comes after Dirty is on stable storage. end_write
// releases the page barrier (release); a daemon pass suspends the page, which waits for
// every such release (one grace period), then calls data_flush, and only after
// data_flush returned marks Clean and persists it. So everything the engine did before
// end_write happens before data_flush, and Clean reaches the file only after the data it
// covers. failed() is an acquire load paired with the release store made after the
// stale mark was written and synced.
//
// Layout: this header declares only the interface. The state lives in a class derived
// from Bitmap inside the library (src/bitmap/bitmap_impl.h), which create() and open()
// make; the member functions reach it by a static_cast (no pointer is followed on the
// write path), and the virtual destructor lets std::unique_ptr<Bitmap> delete it. Bitmap
// cannot be derived from or constructed elsewhere.
//
// Errors: std::error_code, never exceptions. A range that is empty or reaches past the
// device is std::errc::invalid_argument (nothing is marked or clamped).
//
// After close(): once a close() returned anything but Errc::busy the bitmap is closed
// for good, in every build. start_write, guard_write, start_discard, flush and the
// setters return Errc::bitmap_closed (a writer that was waiting on a page when close()
// finished is woken and gets it too); close() returns what the closing close() returned;
// the queries and set_degraded still work; start_sync, end_sync, abort_sync, close_sync
// and run_daemon_once abort with a message. Each declaration below says which.
//
// Misuse aborts with a message: a sync call past the device, the aborting calls above
// after close(), destroying the bitmap with a write in flight, and an end_write or
// end_discard without a matching start, which is checked exactly so: debug builds (no
// NDEBUG) keep a count of starts in flight per chunk and abort at the end_write or
// end_discard that finds a chunk of its range at zero, also while another write holds
// the same page; release builds catch it only through the page barrier, at the next
// suspend of a page whose count went below zero (a stray end masked by another write on
// the same page gets there only after that write ended, and the daemon may have cleaned
// the page under that write meanwhile).
#pragma once

#include <llbitmap/chunk_state.h>
#include <llbitmap/clock.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/page_barrier.h>
#include <llbitmap/storage.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

namespace llbitmap {

// The identity of the protected device as the engine knows it (for example the uuid in
// its own metadata). All zero means "not bound" (in a file) or "do not check" (at open).
using DeviceUuid = std::array<std::uint8_t, 16>;

// What a start_sync call is part of (see Bitmap::start_sync).
enum class SyncKind {
  kResync,    // bring the members of a whole device back in step: NeedSync, Syncing
  kRecovery,  // a re-added member that missed writes: Dirty, NeedSync, Syncing
  kRebuild,   // a new blank member: every chunk that is not Unwritten
};

struct BitmapOptions {
  std::uint64_t device_bytes = 0;         // size of the protected device (required)
  std::uint64_t chunk_bytes = 0;          // 0 = auto: 64 KiB, doubled until the chunks fit
  std::uint64_t space_bytes = 128 << 10;  // bitmap area incl. the 1 KiB superblock
  std::uint32_t block_bytes = 4096;       // bitmap write unit
  std::chrono::milliseconds daemon_sleep{30000};
  std::chrono::milliseconds barrier_idle{5000};
  bool assume_clean = false;  // Init to Clean instead of Unwritten
  bool parity = false;        // raid456 rule
  bool start_daemon = true;   // false: tests call run_daemon_once()
  // Not stored in the file:
  // Called by the daemon (and flush/close) before it persists Clean: it must make every
  // data write that end_write was called for durable (e.g. fdatasync of the legs). An
  // error keeps the pages Dirty. Without a hook, end_write must only be called once the
  // data is durable.
  std::function<std::error_code()> data_flush;
  Clock* clock = nullptr;  // nullptr: Clock::system()
  // Stored in the file: binds the bitmap to this device (all zero: not bound). open()
  // with another OpenOptions::device_uuid refuses it (Errc::foreign_bitmap).
  DeviceUuid device_uuid{};
};

// What open() needs that the file does not store.
struct OpenOptions {
  bool start_daemon = true;
  bool parity = false;
  std::function<std::error_code()> data_flush;
  Clock* clock = nullptr;
  // The device the engine opens the bitmap for. All zero: not checked. Otherwise a file
  // bound to another device is refused with Errc::foreign_bitmap (file untouched); a
  // file bound to this one opens; an unbound file (all zero, as every file written
  // before the field existed) opens and is bound to this device by the superblock
  // write open makes anyway. A bound file opened with an all-zero device_uuid opens
  // unchecked and stays bound.
  DeviceUuid device_uuid{};
  // The events() the engine recorded with its own metadata (0: not checked). A file
  // whose events are below it is older than the engine's record (a restored backup, a
  // copy of an earlier state): it opens out of date, every chunk NeedSync, Unwritten
  // included (out_of_date() then returns true). Those NeedSync states are made durable
  // before open() returns, and before the superblock's events move on, so a crash at
  // any point during or after such an open reopens out of date again or with the
  // NeedSync states already on disk.
  std::uint64_t min_events = 0;
};

struct StateCounts {
  std::uint64_t unwritten, clean, dirty, need_sync, syncing;
};

// Counters for tests, benchmarks and the tools.
struct BitmapStats {
  std::uint64_t persist_rounds;    // syncs of the bitmap file
  std::uint64_t blocks_written;    // blocks written by those rounds
  std::uint64_t persist_waits;     // start_write calls that waited for a persist
  std::uint64_t daemon_passes;     // passes that suspended at least one page
  std::uint64_t pages_cleaned;     // pages suspended, cleaned and resumed
  std::uint64_t suspend_timeouts;  // pages skipped because a write outlived daemon_sleep
  std::uint64_t invalid_bytes;     // state bytes found invalid at open (forced to NeedSync)
  std::uint64_t bad_blocks;        // blocks whose checksum failed at open
  std::uint64_t raise_waits;       // page raises that met a suspended page (sum over pages)
  std::uint64_t suspend_waits;     // page suspends that waited for a write in flight
  bool daemon_armed;               // the daemon thread will wake: Dirty chunks may remain
};

class Bitmap;

// Holds a started write; calls end_write on destruction. Move-only.
class WriteGuard {
 public:
  WriteGuard() = default;
  WriteGuard(WriteGuard&& other) noexcept { *this = std::move(other); }
  WriteGuard& operator=(WriteGuard&& other) noexcept;
  ~WriteGuard() { reset(); }
  // True while it holds a write.
  explicit operator bool() const noexcept { return bitmap_ != nullptr; }
  // Ends the write now.
  void reset() noexcept;

 private:
  friend class Bitmap;
  WriteGuard(Bitmap* b, std::uint64_t off, std::uint64_t len) : bitmap_(b), off_(off), len_(len) {}
  Bitmap* bitmap_ = nullptr;
  std::uint64_t off_ = 0;
  std::uint64_t len_ = 0;
};

class Bitmap {
 public:
  // Creates a new bitmap file (atomically; std::errc::file_exists if it exists).
  static std::unique_ptr<Bitmap> create(const std::filesystem::path& path,
                                        const BitmapOptions& options, std::error_code& ec);
  // Opens an existing one (crash recovery as described above).
  static std::unique_ptr<Bitmap> open(const std::filesystem::path& path, std::error_code& ec);
  static std::unique_ptr<Bitmap> open(const std::filesystem::path& path, const OpenOptions& options,
                                      std::error_code& ec);
  // The same over a caller's Storage (fault injection, tests, other media). create()
  // writes a fresh image into it and syncs.
  static std::unique_ptr<Bitmap> create(std::unique_ptr<Storage> storage,
                                        const BitmapOptions& options, std::error_code& ec);
  static std::unique_ptr<Bitmap> open(std::unique_ptr<Storage> storage, const OpenOptions& options,
                                      std::error_code& ec);

  // Closes if not closed (its error is lost then: call close() first to see it).
  // Requires: no write in flight (aborts otherwise), no call of this bitmap running or
  // still to come on another thread.
  virtual ~Bitmap();
  Bitmap(const Bitmap&) = delete;
  Bitmap& operator=(const Bitmap&) = delete;

  // Errors: std::errc::invalid_argument (bad range), Errc::bitmap_failed (failed state,
  // or the persist's own error), Errc::bitmap_closed (after close(), also for a call that
  // was waiting on a suspended page when close() finished).
  std::error_code start_write(std::uint64_t offset, std::uint64_t length);
  // Requires: a start_write of the same range that succeeded and has not been ended (see
  // "Misuse" above for what is checked). Never after close(): close() refuses with
  // Errc::busy while a write is in flight, so an end_write after close() has no start.
  void end_write(std::uint64_t offset, std::uint64_t length);
  // start_write + a guard that calls end_write. On error the guard is empty (the same
  // errors as start_write, Errc::bitmap_closed included).
  [[nodiscard]] WriteGuard guard_write(std::uint64_t offset, std::uint64_t length,
                                       std::error_code& ec);
  // As start_write; Errc::bitmap_closed after close() even for a range that covers no
  // whole chunk (which is otherwise success with nothing held).
  std::error_code start_discard(std::uint64_t offset, std::uint64_t length);
  // Requires: a matching start_discard that succeeded (as end_write).
  void end_discard(std::uint64_t offset, std::uint64_t length);

  // The chunk at offset: true if it needs copying (it is now Syncing).
  // Same as start_sync(offset, SyncKind::kResync).
  bool start_sync(std::uint64_t offset);
  // The chunk at offset, as part of a `kind` pass: true if the engine must copy it; it
  // is then Syncing, and end_sync (-> Dirty, cleaned by the daemon once not degraded)
  // or abort_sync (-> NeedSync) must follow.
  //   kResync:   NeedSync and Syncing chunks (Startsync, as upstream); a Dirty chunk
  //              too while degraded (upstream's degraded rule). Clean, Unwritten: false.
  //   kRecovery: also Dirty, degraded or not: a re-added member may have missed a
  //              write that was in flight to a Dirty chunk when it went away (md's
  //              recovery syncs Dirty chunks). Clean, Unwritten: false.
  //   kRebuild:  also Clean: a new blank member needs every written chunk (md copies
  //              every chunk that is not Unwritten onto a new member). Unwritten: false.
  // A Dirty or Clean chunk passes through NeedSync on its way to Syncing (a crash in
  // between resyncs it: more, never less). A Syncing chunk gives true again, as
  // upstream. On a failed bitmap no chunk changes any more and the next open resyncs
  // every written chunk: true for every chunk that is not Unwritten, whatever the kind
  // (md resyncs everything when its bitmap is disabled); end_sync/abort_sync are then
  // no-ops. Aborts after close().
  bool start_sync(std::uint64_t offset, SyncKind kind);
  // Endsync: Syncing -> Dirty (cleaned by the daemon). Aborts after close().
  void end_sync(std::uint64_t offset);
  void abort_sync(std::uint64_t offset);  // Abortsync: Syncing -> NeedSync. Aborts after close().
  void close_sync();  // Endsync everywhere, expire all pages now. Aborts after close().
  // (offset, length) runs of chunks that are NeedSync or Syncing, clipped to the device
  // (the last chunk may be short), adjacent chunks merged, ascending: what a resync of
  // members that were all present needs.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> needs_sync() const;
  // The same runs for Dirty, NeedSync and Syncing chunks: what a re-added member needs
  // (one that was present before and missed the writes of its absence, including any
  // write in flight when it went away). Always a superset of needs_sync(); copy them
  // with start_sync(offset, SyncKind::kRecovery).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> needs_recovery() const;
  // The same runs for every chunk that is not Unwritten: what a new blank member needs.
  // Always a superset of needs_recovery(); copy them with
  // start_sync(offset, SyncKind::kRebuild).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> needs_rebuild() const;

  // Also after close() (it changes nothing there).
  void set_degraded(bool degraded);
  [[nodiscard]] bool degraded() const noexcept;

  // Cleans every page now (waiting for writes in flight up to daemon_sleep) and makes
  // the whole bitmap durable. Errc::bitmap_closed after close().
  std::error_code flush();
  // One daemon pass over the expired pages, on the calling thread. Aborts after close().
  void run_daemon_once();
  // Stops the daemon, cleans and persists everything, then closes the bitmap.
  // Errc::busy if a write is still in flight: nothing changed, the bitmap stays open
  // and usable, and close() may be called again. Any other result closes the bitmap for
  // good, also an error: a failed data_flush or a failed write or sync of the bitmap
  // file leaves the chunks it could not clean Dirty (or the bitmap failed) on the
  // medium, so the next open resyncs them; there is no retry. Every later close()
  // returns the same result as the one that closed the bitmap (success again after a
  // success). Writers waiting on a page when close() finishes get Errc::bitmap_closed.
  std::error_code close();

  [[nodiscard]] StateCounts counts() const;
  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept;
  [[nodiscard]] std::uint64_t chunks() const noexcept;
  [[nodiscard]] std::uint64_t device_bytes() const noexcept;
  [[nodiscard]] const Geometry& geometry() const noexcept;
  [[nodiscard]] ChunkState state(std::uint64_t chunk) const noexcept;
  // True once a failed persist is final: writes are refused and the superblock's stale
  // mark has been written and synced (or the medium refused that too), so a crash from
  // here reopens with every written chunk NeedSync. start_write refuses slightly earlier.
  [[nodiscard]] bool failed() const noexcept;
  [[nodiscard]] BitmapStats stats() const noexcept;
  // The superblock's events counter. It changes only at open (to one more than the
  // stored value, or than OpenOptions::min_events if that is larger; made durable before
  // open returns) and at close (one more, persisted by close; not when the bitmap is
  // failed). Nothing else moves it: a copy of the file taken while it is open carries
  // the same value as the file until close. May be called after close().
  [[nodiscard]] std::uint64_t events() const;
  // True if open() found the file out of date (OpenOptions::min_events) and made every
  // chunk NeedSync.
  [[nodiscard]] bool out_of_date() const noexcept;

  // Runtime knobs: 1 ms .. 24 h, else std::errc::invalid_argument (the kernel's sysfs
  // files accept anything). A new daemon_sleep applies to the daemon's sleep in progress,
  // counted from its start (the end of the last pass): a shorter one can start a pass at once.
  // Errc::bitmap_closed after close() (nothing changes).
  std::error_code set_daemon_sleep(std::chrono::milliseconds d);
  std::error_code set_barrier_idle(std::chrono::milliseconds d);
  [[nodiscard]] std::chrono::milliseconds daemon_sleep() const noexcept;
  [[nodiscard]] std::chrono::milliseconds barrier_idle() const noexcept;

 private:
  // Only the library's implementation class derives from Bitmap (see "Layout" above).
  friend class BitmapImpl;
  Bitmap() = default;
};

}  // namespace llbitmap
