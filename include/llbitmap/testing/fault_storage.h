// SPDX-License-Identifier: LGPL-2.1-or-later
//
// fault_storage.h: FaultStorage, an in-memory Storage that models what a disk keeps
// across a crash and injects the failures a real one produces. For tests, and for
// engines that want to test their integration with the bitmap.
//
// Layer 3. The file exists twice:
//
//   volatile image  what reads return: every write that landed, synced or not;
//   durable image   what survives a crash: the writes made durable by a successful sync.
//
// Between the two sits the list of unsynced writes (offset + bytes, in issue order).
// sync() that succeeds applies them to the durable image in issue order and empties the
// list. sync() that fails follows Linux ("fsyncgate"): the unsynced writes are dropped
// from the durable future (they never land there) while reads still see them, and a
// later successful sync does not bring them back. crash_image() builds any image a disk
// could hold after a crash now: the durable image plus a chosen subset of the unsynced
// writes in a chosen order, optionally one of them torn at 512 B or 4 KiB granularity.
//
// Faults, each counted from the moment it is armed (k = 1 is the next call of that
// kind): fail the k-th read, write or sync with a given error (EIO, ENOSPC, ...), for one
// call or for `times` consecutive calls; or make the k-th write short (its first
// `landed` bytes reach the volatile image as an unsynced write, the call returns the
// error). A failed read leaves `out` filled with 0xA5 so callers cannot use it by
// accident; a failed (not short) write changes nothing.
//
// Every write and sync is recorded in a trace with a sequence number (shared by writes
// and syncs, from 1), the bytes asked for, what landed and the result.
//
// Hooks: a write hook and a sync hook run at every write and sync, with the internal
// mutex HELD, so what they see (the durable image before the change, the writes about
// to become durable or be dropped) is exactly what happens next: a test oracle checks
// its invariants atomically with each durability change. A hook gets everything it
// needs in its argument and must not call back into this FaultStorage (doing so is a
// programming error, caught by LLBM_CHECK rather than a deadlock). Nor may it take a
// lock that some thread holds while calling into this FaultStorage (lock-order
// inversion); an oracle keeps its own state under a lock of its own that is never held
// across a storage call. A hook may return a non-zero error to fail an operation that
// would otherwise succeed.
//
// Threads: every member may be called from any thread at once; each call takes the
// internal mutex for its whole duration (so operations are linearizable in trace
// order). Nothing blocks beyond that mutex and the hooks.
#pragma once

#include <llbitmap/detail/mutex.h>
#include <llbitmap/detail/thread_annotations.h>
#include <llbitmap/storage.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <system_error>
#include <thread>
#include <vector>

namespace llbitmap {

// A write that landed in the volatile image and is not yet durable.
struct PendingWrite {
  std::uint64_t seq = 0;  // its trace sequence number
  std::uint64_t offset = 0;
  std::vector<std::byte> data;  // the bytes that landed (a short write: a prefix)
};

struct TraceEvent {
  enum class Kind { kWrite, kSync };
  std::uint64_t seq = 0;
  Kind kind = Kind::kWrite;
  std::uint64_t offset = 0;     // write: where
  std::vector<std::byte> data;  // write: the bytes asked for
  std::size_t landed = 0;       // write: bytes that reached the volatile image
  std::size_t writes = 0;       // sync: unsynced writes made durable (ok) or dropped (failed)
  std::error_code result;
};

struct FaultCounters {
  std::uint64_t reads = 0;
  std::uint64_t writes = 0;
  std::uint64_t syncs = 0;
  std::uint64_t failed_reads = 0;
  std::uint64_t failed_writes = 0;  // short writes included
  std::uint64_t failed_syncs = 0;
  std::uint64_t dropped_writes = 0;  // unsynced writes discarded by failed syncs
};

// What the write hook sees, before the volatile image changes.
struct WriteEvent {
  std::uint64_t seq = 0;
  std::uint64_t offset = 0;
  std::span<const std::byte> data;            // the bytes asked for
  std::size_t landed = 0;                     // bytes that will land (planned)
  std::error_code result;                     // planned outcome (from injected faults)
  std::span<const std::byte> volatile_image;  // before the write
  std::span<const std::byte> durable_image;
};

// What the sync hook sees, before the durable image changes.
struct SyncEvent {
  std::uint64_t seq = 0;
  std::span<const PendingWrite> pending;     // will land in this order, or be dropped
  std::span<const std::byte> durable_image;  // before the sync
  std::span<const std::byte> volatile_image;
  std::error_code result;  // planned outcome (from injected faults)
};

// Return {} to keep the planned outcome, or an error to fail an operation that would
// have succeeded (a write then lands nothing; a sync then drops its writes).
using WriteHook = std::function<std::error_code(const WriteEvent&)>;
using SyncHook = std::function<std::error_code(const SyncEvent&)>;

// One unsynced write that lands only in part: the write is cut into units at absolute
// file offsets that are multiples of `granularity` (512 or 4096); unit i of the write
// lands if units[i] is true (missing entries: false).
struct TornWrite {
  std::size_t index = 0;  // into unsynced_writes()
  std::uint64_t granularity = 512;
  std::vector<bool> units;
};

class FaultStorage final : public Storage {
 public:
  static constexpr std::uint64_t kForever = ~std::uint64_t{0};

  // Durable and volatile both start as `initial` (e.g. build_fresh_file()'s output).
  explicit FaultStorage(std::vector<std::byte> initial = {});
  ~FaultStorage() override;
  FaultStorage(const FaultStorage&) = delete;
  FaultStorage& operator=(const FaultStorage&) = delete;

  [[nodiscard]] std::error_code read(std::uint64_t offset, std::span<std::byte> out) override;
  [[nodiscard]] std::error_code write(std::uint64_t offset,
                                      std::span<const std::byte> data) override;
  [[nodiscard]] std::error_code sync() override;
  [[nodiscard]] std::error_code size(std::uint64_t& bytes) override;

  // --- fault injection. k >= 1; `times` consecutive calls from the k-th fail
  // (kForever: every call from the k-th on). Several faults may be armed at once; when
  // two cover the same call, the one armed first wins.
  void fail_read(std::uint64_t k, std::error_code error = std::make_error_code(std::errc::io_error),
                 std::uint64_t times = 1);
  void fail_write(std::uint64_t k,
                  std::error_code error = std::make_error_code(std::errc::io_error),
                  std::uint64_t times = 1);
  void fail_sync(std::uint64_t k, std::error_code error = std::make_error_code(std::errc::io_error),
                 std::uint64_t times = 1);
  // The k-th write lands only its first min(landed, size) bytes and returns `error`.
  void short_write(std::uint64_t k, std::size_t landed,
                   std::error_code error = std::make_error_code(std::errc::no_space_on_device));
  void clear_faults();

  // --- hooks (replace the previous one; an empty function removes it)
  void set_write_hook(WriteHook hook);
  void set_sync_hook(SyncHook hook);

  // --- inspection (copies, taken under the mutex)
  [[nodiscard]] std::vector<std::byte> durable_image() const;
  [[nodiscard]] std::vector<std::byte> volatile_image() const;
  [[nodiscard]] std::vector<PendingWrite> unsynced_writes() const;
  [[nodiscard]] std::vector<TraceEvent> trace() const;
  [[nodiscard]] FaultCounters counters() const;
  void clear_trace();

  // An image a disk could hold after a crash now: the durable image, then the unsynced
  // writes with the given indices (into unsynced_writes(), each at most once) applied in
  // the given order, then `torn` (if any) applied in part. Requires: valid, distinct
  // indices; torn granularity 512 or 4096.
  [[nodiscard]] std::vector<std::byte> crash_image(
      std::span<const std::size_t> writes,
      const std::optional<TornWrite>& torn = std::nullopt) const;

 private:
  enum class Op { kRead, kWrite, kSync };
  struct Fault {
    Op op;
    std::uint64_t first;  // 1-based call number of that kind
    std::uint64_t last;
    std::error_code error;
    std::optional<std::size_t> landed;  // short write
  };

  void arm(Op op, std::uint64_t k, std::error_code error, std::uint64_t times,
           std::optional<std::size_t> landed);
  const Fault* fault_for(Op op, std::uint64_t call) const LLBM_REQUIRES(mu_);
  void check_not_in_hook() const noexcept;

  mutable detail::Mutex mu_;
  std::vector<std::byte> volatile_ LLBM_GUARDED_BY(mu_);
  std::vector<std::byte> durable_ LLBM_GUARDED_BY(mu_);
  std::vector<PendingWrite> unsynced_ LLBM_GUARDED_BY(mu_);
  std::vector<TraceEvent> trace_ LLBM_GUARDED_BY(mu_);
  std::vector<Fault> faults_ LLBM_GUARDED_BY(mu_);
  FaultCounters counters_ LLBM_GUARDED_BY(mu_);
  std::uint64_t seq_ LLBM_GUARDED_BY(mu_) = 0;
  WriteHook write_hook_ LLBM_GUARDED_BY(mu_);
  SyncHook sync_hook_ LLBM_GUARDED_BY(mu_);
  // The thread running a hook, to catch re-entry. Written and read with relaxed order:
  // only the hook thread's own program order matters (it reads back its own store).
  std::atomic<std::thread::id> hook_thread_{};
};

}  // namespace llbitmap
