// SPDX-License-Identifier: LGPL-2.1-or-later
//
// percpu_area.h: per-thread counter areas, the user-space analog of alloc_percpu.
//
// Layer 1, private. Every PercpuRef owns a slot index. Every thread that touches a
// ref gets a CounterArea: a directory of 512-byte blocks of 64 slots each, allocated
// only for the blocks whose slots the thread touched. Only the owning thread writes
// its counters (relaxed load + relaxed store, no locked instruction); other threads
// read them only under the registry lock, after an RCU grace period has ordered the
// owner's stores (the fold in the switch thread), or while the ref is quiescent.
//
// Lifetime: a thread's area is created on its first slow-path use of any ref and is
// destroyed when the thread exits: its non-zero counters are added to the owning
// refs' orphan counters under the registry lock, so no count is ever lost, and the
// memory is returned. A thread whose area is already gone (a TLS destructor running
// after ours) counts in the ref's orphan counter directly.
//
// Slots are recycled. Allocating a slot zeroes it in every live area (a destroyed
// ref can leave +1 on one thread and -1 on another).
#pragma once

#include <llbitmap/detail/cacheline.h>
#include <llbitmap/detail/mutex.h>
#include <llbitmap/detail/thread_annotations.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "rcu.h"

namespace llbitmap::detail {

inline constexpr std::uint32_t kSlotsPerBlock = 64;

struct alignas(kCacheLine) CounterBlock {
  std::atomic<std::uint64_t> slot[kSlotsPerBlock];
};

// The registry lock: the mutex of PercpuRegistry::instance().
Mutex& registry_lock() noexcept;

class CounterArea {
 public:
  constexpr CounterArea() noexcept = default;

  // Owner thread only. Null when the slot's block has not been allocated yet.
  [[nodiscard]] std::atomic<std::uint64_t>* find(std::uint32_t slot) const noexcept {
    const std::uint32_t b = slot / kSlotsPerBlock;
    if (b >= nblocks_) return nullptr;
    CounterBlock* blk = dir_[b];
    return blk == nullptr ? nullptr : &blk->slot[slot % kSlotsPerBlock];
  }
  // The fast path's find(): also null when the thread may not take the fast path at all
  // (the empty area of a thread that has none, or RcuReader::fast_sections() false), with
  // the same one bounds check.
  std::atomic<std::uint64_t>* find_fast(std::uint32_t slot) const noexcept {
    const std::uint32_t b = slot / kSlotsPerBlock;
    if (b >= fast_nblocks_) return nullptr;
    CounterBlock* blk = dir_[b];
    return blk == nullptr ? nullptr : &blk->slot[slot % kSlotsPerBlock];
  }
  // The owner's urcu-bp reader, valid while find_fast() returns non-null (the area is
  // detached before urcu-bp unregisters the thread).
  RcuReader::Handle reader() const noexcept { return reader_; }

 private:
  friend class PercpuRegistry;
  // Written by the owner under the registry lock; read by the owner without it (find(),
  // the fast path: hence no LLBM_GUARDED_BY) and by others under it.
  CounterBlock** dir_ = nullptr;
  std::uint32_t nblocks_ = 0;
  // nblocks_ if the fast path may be used, else 0. Owner only.
  std::uint32_t fast_nblocks_ = 0;
  RcuReader::Handle reader_ = nullptr;  // owner only
  bool fast_ = false;                   // RcuReader::fast_sections() at attach; owner only
  // The registry's list of live areas.
  CounterArea* prev_ LLBM_GUARDED_BY(registry_lock()) = nullptr;
  CounterArea* next_ LLBM_GUARDED_BY(registry_lock()) = nullptr;
};

// The area of a thread that has none (yet, or any more): empty, never attached, never
// written. tls_counter_area points to it instead of being null, so that the fast path's
// bounds check also covers "no area".
extern CounterArea no_counter_area;

// The calling thread's area: a plain constant-initialised thread_local so that the
// fast path reads it with a single TLS load and no init wrapper. Never null.
extern thread_local CounterArea* tls_counter_area;

// Bytes of counter memory live in all areas (blocks + directories); for the memory
// benchmark and tests.
struct AreaStats {
  std::size_t areas;
  std::size_t blocks;
  std::size_t bytes;
};

class PercpuRegistry {
 public:
  static PercpuRegistry& instance() noexcept;

  // Allocates a slot for a ref whose orphan counter is `orphan`; zeroes the slot in
  // every live area.
  std::uint32_t alloc_slot(std::atomic<std::uint64_t>* orphan);
  void free_slot(std::uint32_t slot) noexcept;

  // Sum of the slot over all live areas plus the ref's orphan counter (modular).
  std::uint64_t sum(std::uint32_t slot) noexcept;
  // Zeroes the slot in every area and the orphan counter.
  void zero(std::uint32_t slot) noexcept;

  // The calling thread's counter for `slot`, creating the area and block if needed.
  // Null if the thread is exiting (its area is gone): the caller then counts in the
  // ref's orphan counter.
  std::atomic<std::uint64_t>* counter_for_current_thread(std::uint32_t slot);

  AreaStats stats() noexcept;

  // Fork support: the switch thread's prepare handler takes this lock last.
  void lock() LLBM_ACQUIRE(registry_lock()) { registry_lock().lock(); }
  void unlock() LLBM_RELEASE(registry_lock()) { registry_lock().unlock(); }

  // Thread exit: folds the area into the orphans and frees it.
  void detach(CounterArea* area) noexcept;

 private:
  friend Mutex& registry_lock() noexcept;
  PercpuRegistry() = default;
  CounterArea* attach_current_thread();

  // Taken through registry_lock() (one name for the analysis: the registry is a
  // singleton, and CounterArea's links are guarded by the same lock).
  Mutex mu_;
  CounterArea* areas_ LLBM_GUARDED_BY(registry_lock()) = nullptr;
  std::size_t nareas_ LLBM_GUARDED_BY(registry_lock()) = 0;
  std::size_t nblocks_ LLBM_GUARDED_BY(registry_lock()) = 0;
  std::size_t dir_bytes_ LLBM_GUARDED_BY(registry_lock()) = 0;
  std::vector<std::atomic<std::uint64_t>*> orphans_ LLBM_GUARDED_BY(registry_lock());  // by slot
  std::vector<std::uint32_t> free_slots_ LLBM_GUARDED_BY(registry_lock());
};

}  // namespace llbitmap::detail
