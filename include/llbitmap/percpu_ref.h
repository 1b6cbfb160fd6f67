// SPDX-License-Identifier: LGPL-2.1-or-later
//
// percpu_ref.h: PercpuRef, a reference count whose get and put touch only the
// calling thread's own counter: the user-space port of the kernel's percpu_ref.
//
// Layer 1. The count starts at 1 (the "initial reference", owned by whoever created
// the ref). Two modes:
//
//   percpu  get/put/tryget/tryget_live add to a counter that only the calling thread
//           writes (an owner-only relaxed load and store, inside a liburcu read-side
//           section). No locked instruction, no fence, no shared cache line is written.
//           Only the sum over all threads is meaningful.
//   atomic  one shared atomic count; put() that reaches zero calls `release`.
//
// States and what each operation does in it:
//
//   |            | get/put | tryget      | tryget_live | kill          | resurrect      |
//   |------------|---------|-------------|-------------|---------------|----------------|
//   | live       | ok      | true        | true        | -> dying      | invalid        |
//   | dying, n>0 | ok      | true        | false (*)   | invalid       | -> live        |
//   | dead (n=0) | invalid | false       | false       | invalid       | -> live        |
//
//   (*) once dying is visible; after confirm_kill has run it is guaranteed to fail.
//
// kill() marks the ref dying, switches it to atomic mode asynchronously and drops the
// initial reference. The switch waits for an RCU grace period so that every get that
// saw percpu mode has finished its add; the per-thread counters are then folded into
// the atomic count (which carries a bias until then, so early atomic puts cannot reach
// zero). `release` runs exactly once when the count reaches zero, on the thread that
// dropped the last reference or on the library's switch thread; it must not block.
// kill() itself never sleeps unless a previous mode switch of this ref is pending.
//
// Threads: any thread may call get/put/tryget/tryget_live at any time on a ref that is
// not dead; a get on one thread and the put on another is normal. A thread that exits
// keeps its counts: they are folded, never lost. Threads never register with liburcu
// (the bulletproof flavour is used), and the application may use liburcu itself.
// kill/resurrect/reinit/switch_* are serialised by the caller against each other
// (one owner drives the lifecycle), as in the kernel.
//
// Memory ordering: everything a thread did before its put() happens-before `release`
// and before any is_zero() that returns true. Everything done before resurrect()
// happens-before a later percpu-mode get on any thread (resurrect publishes percpu mode
// with a release store that the fast path's acquire load pairs with).
//
// Memory: each ref owns a slot index; each thread owns an area of 8-byte slots that
// grows in blocks as it touches refs (not with all refs in the process) and is freed
// when the thread exits.
//
// Misuse (put below zero, double kill, resurrect of a ref that is not dying, destroying
// a ref while a switch is pending or while references beyond the initial one are held)
// aborts with a message naming the ref and the rule (LLBM_CHECK). Put below zero is
// caught at the put in atomic mode and at the fold in percpu mode, as the kernel does.
#pragma once

#include <llbitmap/detail/cacheline.h>
#include <llbitmap/detail/thread_annotations.h>

#include <atomic>
#include <cstdint>
#include <functional>

namespace llbitmap {

enum class RefFlags : unsigned { kNone = 0, kInitAtomic = 1, kInitDead = 2, kAllowReinit = 4 };

constexpr RefFlags operator|(RefFlags a, RefFlags b) noexcept {
  return static_cast<RefFlags>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}
constexpr bool has_flag(RefFlags set, RefFlags flag) noexcept {
  return (static_cast<unsigned>(set) & static_cast<unsigned>(flag)) != 0;
}

namespace detail {
class SwitchWorker;
struct PercpuRefFast;                  // the inlined fast paths (src/sync/percpu_ref_fast.h)
class LLBM_CAPABILITY("mutex") Mutex;  // detail/mutex.h
// The kernel's percpu_ref_switch_lock: one lock for the mode switches of every ref
// (src/sync/switch_worker.cc). Named here so that the fields it guards say so.
Mutex& switch_lock() noexcept;
}  // namespace detail

class PercpuRef {
 public:
  // `release` is called once when the count drops to zero after kill(). The init
  // flags follow the kernel: kInitAtomic starts in atomic mode and keeps it (sticky, as
  // after switch_to_atomic(): resurrect and reinit return to atomic mode until
  // switch_to_percpu()), kInitDead starts dead (count 0, revive with reinit()); both
  // imply kAllowReinit.
  explicit PercpuRef(std::function<void()> release, RefFlags flags = RefFlags::kNone);
  // percpu_ref_exit. Requires: no switch pending, and either dead or holding only the
  // initial reference.
  ~PercpuRef();

  PercpuRef(const PercpuRef&) = delete;
  PercpuRef& operator=(const PercpuRef&) = delete;

  // Wait-free in percpu mode. Requires: the ref is not dead (kernel: not zero).
  void get(std::uint64_t nr = 1) noexcept;
  // Like get(), but fails (returns false) once the count is zero.
  [[nodiscard]] bool tryget(std::uint64_t nr = 1) noexcept;
  // Like tryget(), but also fails once the ref is dying. nr is always 1.
  [[nodiscard]] bool tryget_live() noexcept;
  // Drops nr references. In atomic mode, the put that reaches zero calls `release`.
  void put(std::uint64_t nr = 1) noexcept;

  // Marks the ref dying, starts the switch to atomic mode and drops the initial ref.
  // Requires: not dying.
  void kill() noexcept;
  // As kill(); `confirm_kill` runs on the switch thread once the switch is done, after
  // which tryget_live() is guaranteed to fail. It must not block.
  void kill_and_confirm(std::function<void()> confirm_kill);
  // Requires: dying (zero or not) and kAllowReinit. Waits for a pending switch, clears
  // dying, takes the initial reference back and returns to percpu mode (unless
  // switch_to_atomic() or kInitAtomic made atomic mode sticky).
  void resurrect() noexcept;
  // Requires: zero. Then as resurrect().
  void reinit() noexcept;

  // Sticky atomic mode (the ref stays live). Returns without waiting for the switch.
  void switch_to_atomic();
  // As switch_to_atomic(), and waits until the counters are folded.
  void switch_to_atomic_sync();
  // Clears sticky atomic mode; back to percpu mode unless dying. Requires kAllowReinit.
  void switch_to_percpu();

  // True only in atomic mode with a count of 0.
  [[nodiscard]] bool is_zero() const noexcept;
  // True from kill() until resurrect().
  [[nodiscard]] bool is_dying() const noexcept;

 private:
  friend class detail::SwitchWorker;
  friend struct detail::PercpuRefFast;

  // Mode bits in mode_ (kernel: the low bits of percpu_count_ptr).
  static constexpr std::uintptr_t kAtomic = 1;
  static constexpr std::uintptr_t kDead = 2;

  bool tryget_live_slow() noexcept;
  bool tryget_slow(std::uint64_t nr) noexcept;
  void get_slow(std::uint64_t nr) noexcept;
  void put_slow(std::uint64_t nr) noexcept;
  void put_atomic(std::uint64_t nr) noexcept;
  void start_kill(std::function<void()> confirm);
  void switch_mode_locked() LLBM_REQUIRES(detail::switch_lock());
  void switch_to_percpu_locked() LLBM_REQUIRES(detail::switch_lock());
  void fold_percpu_counts() noexcept;  // runs on the switch thread after a grace period
  [[nodiscard]] std::uint64_t sum_percpu_counts() const noexcept;

  // --- read-mostly line: every fast-path operation reads it ---
  alignas(detail::kCacheLine) std::atomic<std::uintptr_t> mode_;
  std::uint32_t slot_ = 0;  // this ref's index in every thread's counter area

  // --- slow line: atomic-mode count and switch bookkeeping ---
  alignas(detail::kCacheLine) std::atomic<std::uint64_t> count_;
  // Counts taken in percpu mode by threads that have no counter area (a thread that is
  // exiting); folded with the per-thread counters.
  std::atomic<std::uint64_t> orphan_{0};
  std::function<void()> release_;
  std::function<void()> confirm_switch_ LLBM_GUARDED_BY(detail::switch_lock());
  bool switch_pending_ LLBM_GUARDED_BY(detail::switch_lock()) = false;
  bool force_atomic_ LLBM_GUARDED_BY(detail::switch_lock()) = false;
  bool allow_reinit_ = false;
  PercpuRef* switch_next_ = nullptr;  // link in the switch thread's queue
  // Switches queued or being folded, plus release callbacks running: the destructor
  // waits for zero, so a ref may be destroyed as soon as is_zero() is seen.
  std::atomic<unsigned> in_flight_{0};
};

}  // namespace llbitmap
