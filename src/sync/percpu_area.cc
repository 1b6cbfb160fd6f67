// SPDX-License-Identifier: LGPL-2.1-or-later
#include "percpu_area.h"

#include <llbitmap/detail/check.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "rcu.h"

namespace llbitmap::detail {

constinit CounterArea no_counter_area;
thread_local constinit CounterArea* tls_counter_area = &no_counter_area;

namespace {

enum class AreaState : unsigned char { kNone, kLive, kGone };
thread_local constinit AreaState tls_area_state = AreaState::kNone;

// Its destructor runs when the thread exits (before liburcu-bp's own pthread-key
// destructor unregisters the thread) and hands the area back.
struct AreaReaper {
  AreaReaper() = default;
  AreaReaper(const AreaReaper&) = delete;
  AreaReaper& operator=(const AreaReaper&) = delete;
  ~AreaReaper() {
    CounterArea* area = tls_counter_area;
    tls_counter_area = &no_counter_area;
    tls_area_state = AreaState::kGone;
    if (area != &no_counter_area) PercpuRegistry::instance().detach(area);
  }
};
thread_local AreaReaper tls_area_reaper;

CounterBlock* new_block() {
  auto* blk = new CounterBlock;
  // relaxed: the block is not shared yet; the registry lock publishes it.
  for (auto& s : blk->slot) s.store(0, std::memory_order_relaxed);
  return blk;
}

}  // namespace

PercpuRegistry& PercpuRegistry::instance() noexcept {
  // Leaked on purpose: areas of threads that outlive static destruction still detach.
  static auto* registry = new PercpuRegistry;
  return *registry;
}

Mutex& registry_lock() noexcept {
  return PercpuRegistry::instance().mu_;
}

std::uint32_t PercpuRegistry::alloc_slot(std::atomic<std::uint64_t>* orphan) {
  MutexLock lk(registry_lock());
  std::uint32_t slot = 0;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    LLBM_CHECK(orphans_.size() < UINT32_MAX, "PercpuRef: out of slots (%zu refs alive)",
               orphans_.size());
    slot = static_cast<std::uint32_t>(orphans_.size());
    orphans_.push_back(nullptr);
  }
  orphans_[slot] = orphan;
  const std::uint32_t b = slot / kSlotsPerBlock;
  // relaxed: no thread uses the slot yet; a thread learns of it from the ref, whose
  // constructor publishes slot_ with the release store of mode_.
  for (CounterArea* a = areas_; a != nullptr; a = a->next_) {
    if (b < a->nblocks_ && a->dir_[b] != nullptr)
      a->dir_[b]->slot[slot % kSlotsPerBlock].store(0, std::memory_order_relaxed);
  }
  return slot;
}

void PercpuRegistry::free_slot(std::uint32_t slot) noexcept {
  MutexLock lk(registry_lock());
  orphans_[slot] = nullptr;
  free_slots_.push_back(slot);
}

std::uint64_t PercpuRegistry::sum(std::uint32_t slot) noexcept {
  MutexLock lk(registry_lock());
  const std::uint32_t b = slot / kSlotsPerBlock;
  // relaxed: the owners' stores are ordered before these loads by the RCU grace period
  // of the fold (PercpuRef::fold_percpu_counts), or the ref is quiescent (destructor);
  // detach() moves counts to the orphan counter under the same lock.
  std::uint64_t total = orphans_[slot]->load(std::memory_order_relaxed);
  for (CounterArea* a = areas_; a != nullptr; a = a->next_) {
    if (b < a->nblocks_ && a->dir_[b] != nullptr)
      total += a->dir_[b]->slot[slot % kSlotsPerBlock].load(std::memory_order_relaxed);
  }
  return total;
}

void PercpuRegistry::zero(std::uint32_t slot) noexcept {
  MutexLock lk(registry_lock());
  const std::uint32_t b = slot / kSlotsPerBlock;
  // relaxed: the ref is in atomic mode (no thread adds to the slot); the release store
  // of percpu mode in PercpuRef::switch_to_percpu_locked publishes the zeros.
  orphans_[slot]->store(0, std::memory_order_relaxed);
  for (CounterArea* a = areas_; a != nullptr; a = a->next_) {
    if (b < a->nblocks_ && a->dir_[b] != nullptr)
      a->dir_[b]->slot[slot % kSlotsPerBlock].store(0, std::memory_order_relaxed);
  }
}

CounterArea* PercpuRegistry::attach_current_thread() {
  // Register with liburcu-bp now, so that the fast path never reaches its register call.
  RcuReader::lock();
  RcuReader::unlock();
  (void)&tls_area_reaper;  // odr-use: registers the reaper's destructor for this thread
  auto* area = new CounterArea;
  area->reader_ = RcuReader::current();
  area->fast_ = RcuReader::fast_sections();
  {
    MutexLock lk(registry_lock());
    area->next_ = areas_;
    if (areas_ != nullptr) areas_->prev_ = area;
    areas_ = area;
    ++nareas_;
  }
  tls_counter_area = area;
  tls_area_state = AreaState::kLive;
  return area;
}

std::atomic<std::uint64_t>* PercpuRegistry::counter_for_current_thread(std::uint32_t slot) {
  CounterArea* area = tls_counter_area;
  if (area == &no_counter_area) {
    if (tls_area_state == AreaState::kGone) return nullptr;
    area = attach_current_thread();
  }
  if (auto* c = area->find(slot)) return c;
  const std::uint32_t b = slot / kSlotsPerBlock;
  CounterBlock* blk = new_block();
  MutexLock lk(registry_lock());
  if (b >= area->nblocks_) {
    std::uint32_t n = area->nblocks_ == 0 ? 4 : area->nblocks_;
    while (n <= b) n *= 2;
    auto** dir = new CounterBlock*[n];
    for (std::uint32_t i = 0; i < n; ++i) dir[i] = i < area->nblocks_ ? area->dir_[i] : nullptr;
    delete[] area->dir_;
    // The directory holds pointers to blocks: sizeof a pointer is meant.
    // NOLINTNEXTLINE(bugprone-sizeof-expression)
    dir_bytes_ += (n - area->nblocks_) * sizeof(CounterBlock*);
    area->dir_ = dir;
    area->nblocks_ = n;
    if (area->fast_) area->fast_nblocks_ = n;
  }
  area->dir_[b] = blk;
  ++nblocks_;
  return &blk->slot[slot % kSlotsPerBlock];
}

void PercpuRegistry::detach(CounterArea* area) noexcept {
  MutexLock lk(registry_lock());
  for (std::uint32_t b = 0; b < area->nblocks_; ++b) {
    CounterBlock* blk = area->dir_[b];
    if (blk == nullptr) continue;
    for (std::uint32_t i = 0; i < kSlotsPerBlock; ++i) {
      // relaxed: the exiting owner reads its own counters; the orphan counter is changed
      // under the registry lock, which sum() takes too.
      const std::uint64_t v = blk->slot[i].load(std::memory_order_relaxed);
      const std::size_t slot = std::size_t{b} * kSlotsPerBlock + i;
      // A slot without an owner belongs to a destroyed ref; it is zeroed on reuse.
      if (v != 0 && slot < orphans_.size() && orphans_[slot] != nullptr)
        orphans_[slot]->fetch_add(v, std::memory_order_relaxed);
    }
    delete blk;
    --nblocks_;
  }
  // NOLINTNEXTLINE(bugprone-sizeof-expression): the directory's pointers, as above
  dir_bytes_ -= area->nblocks_ * sizeof(CounterBlock*);
  delete[] area->dir_;
  if (area->prev_ != nullptr)
    area->prev_->next_ = area->next_;
  else
    areas_ = area->next_;
  if (area->next_ != nullptr) area->next_->prev_ = area->prev_;
  --nareas_;
  delete area;
}

AreaStats PercpuRegistry::stats() noexcept {
  MutexLock lk(registry_lock());
  return AreaStats{nareas_, nblocks_,
                   nblocks_ * sizeof(CounterBlock) + dir_bytes_ + nareas_ * sizeof(CounterArea)};
}

}  // namespace llbitmap::detail
