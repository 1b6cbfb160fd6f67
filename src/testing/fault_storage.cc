// SPDX-License-Identifier: LGPL-2.1-or-later
#include <llbitmap/detail/check.h>
#include <llbitmap/error.h>
#include <llbitmap/testing/fault_storage.h>

#include <algorithm>
#include <limits>
#include <utility>

namespace llbitmap {
namespace {

constexpr std::uint64_t kMaxU64 = std::numeric_limits<std::uint64_t>::max();

// Copies `data` to `image` at `offset`, growing it with zeros like a file written past
// its end.
void apply(std::vector<std::byte>& image, std::uint64_t offset, std::span<const std::byte> data) {
  if (data.empty()) return;
  const std::uint64_t end = offset + data.size();
  if (end > image.size()) image.resize(end, std::byte{0});
  std::copy(data.begin(), data.end(), image.begin() + static_cast<std::ptrdiff_t>(offset));
}

// Marks the calling thread as running a hook for the lifetime of the object.
class HookScope {
 public:
  explicit HookScope(std::atomic<std::thread::id>& slot) noexcept : slot_(slot) {
    slot_.store(std::this_thread::get_id(), std::memory_order_relaxed);  // read back by us only
  }
  ~HookScope() { slot_.store(std::thread::id{}, std::memory_order_relaxed); }
  HookScope(const HookScope&) = delete;
  HookScope& operator=(const HookScope&) = delete;

 private:
  std::atomic<std::thread::id>& slot_;
};

}  // namespace

FaultStorage::FaultStorage(std::vector<std::byte> initial)
    : volatile_(initial), durable_(std::move(initial)) {}

FaultStorage::~FaultStorage() = default;

void FaultStorage::check_not_in_hook() const noexcept {
  // relaxed: only the thread's own store (HookScope) can make this equal its id.
  LLBM_CHECK(hook_thread_.load(std::memory_order_relaxed) != std::this_thread::get_id(),
             "FaultStorage: called from its own write/sync hook (the mutex is held: this would "
             "deadlock); hooks get what they need in their argument");
}

const FaultStorage::Fault* FaultStorage::fault_for(Op op, std::uint64_t call) const {
  for (const Fault& f : faults_)
    if (f.op == op && call >= f.first && call <= f.last) return &f;
  return nullptr;
}

void FaultStorage::arm(Op op, std::uint64_t k, std::error_code error, std::uint64_t times,
                       std::optional<std::size_t> landed) {
  check_not_in_hook();
  LLBM_CHECK(k >= 1, "FaultStorage: k counts from 1 (the next call), got %llu",
             static_cast<unsigned long long>(k));
  LLBM_CHECK(times >= 1, "FaultStorage: times must be >= 1");
  LLBM_CHECK(static_cast<bool>(error), "FaultStorage: a fault needs a non-zero error code");
  detail::MutexLock lk(mu_);
  const std::uint64_t done = op == Op::kRead    ? counters_.reads
                             : op == Op::kWrite ? counters_.writes
                                                : counters_.syncs;
  // Forget faults whose window has passed.
  std::erase_if(faults_, [&](const Fault& f) {
    const std::uint64_t calls = f.op == Op::kRead    ? counters_.reads
                                : f.op == Op::kWrite ? counters_.writes
                                                     : counters_.syncs;
    return f.last <= calls;
  });
  Fault f{op, done + k, 0, error, landed};
  f.last = times == kForever || times - 1 > kMaxU64 - f.first ? kMaxU64 : f.first + (times - 1);
  faults_.push_back(f);
}

void FaultStorage::fail_read(std::uint64_t k, std::error_code error, std::uint64_t times) {
  arm(Op::kRead, k, error, times, std::nullopt);
}
void FaultStorage::fail_write(std::uint64_t k, std::error_code error, std::uint64_t times) {
  arm(Op::kWrite, k, error, times, std::nullopt);
}
void FaultStorage::fail_sync(std::uint64_t k, std::error_code error, std::uint64_t times) {
  arm(Op::kSync, k, error, times, std::nullopt);
}
void FaultStorage::short_write(std::uint64_t k, std::size_t landed, std::error_code error) {
  arm(Op::kWrite, k, error, 1, landed);
}

void FaultStorage::clear_faults() {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  faults_.clear();
}

void FaultStorage::set_write_hook(WriteHook hook) {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  write_hook_ = std::move(hook);
}

void FaultStorage::set_sync_hook(SyncHook hook) {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  sync_hook_ = std::move(hook);
}

std::error_code FaultStorage::read(std::uint64_t offset, std::span<std::byte> out) {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  const std::uint64_t call = ++counters_.reads;
  std::error_code result;
  if (const Fault* f = fault_for(Op::kRead, call)) {
    result = f->error;
  } else if (offset > volatile_.size() || out.size() > volatile_.size() - offset) {
    result = make_error_code(Errc::short_io);
  }
  if (result) {
    ++counters_.failed_reads;
    std::fill(out.begin(), out.end(), std::byte{0xA5});
    return result;
  }
  std::copy_n(volatile_.begin() + static_cast<std::ptrdiff_t>(offset), out.size(), out.begin());
  return {};
}

std::error_code FaultStorage::write(std::uint64_t offset, std::span<const std::byte> data) {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  const std::uint64_t call = ++counters_.writes;
  const std::uint64_t seq = ++seq_;
  std::error_code result;
  std::size_t landed = data.size();
  if (data.size() > kMaxU64 - offset) {
    result = std::make_error_code(std::errc::invalid_argument);
    landed = 0;
  } else if (const Fault* f = fault_for(Op::kWrite, call)) {
    result = f->error;
    landed = f->landed ? std::min(*f->landed, data.size()) : 0;
  }
  if (write_hook_) {
    const WriteEvent ev{seq, offset, data, landed, result, volatile_, durable_};
    std::error_code veto;
    {
      HookScope scope(hook_thread_);
      veto = write_hook_(ev);
    }
    if (!result && veto) {
      result = veto;
      landed = 0;
    }
  }
  const std::span<const std::byte> part = data.first(landed);
  apply(volatile_, offset, part);
  if (!part.empty()) unsynced_.push_back(PendingWrite{seq, offset, {part.begin(), part.end()}});
  trace_.push_back(TraceEvent{
      seq, TraceEvent::Kind::kWrite, offset, {data.begin(), data.end()}, landed, 0, result});
  if (result) ++counters_.failed_writes;
  return result;
}

std::error_code FaultStorage::sync() {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  const std::uint64_t call = ++counters_.syncs;
  const std::uint64_t seq = ++seq_;
  std::error_code result;
  if (const Fault* f = fault_for(Op::kSync, call)) result = f->error;
  if (sync_hook_) {
    const SyncEvent ev{seq, unsynced_, durable_, volatile_, result};
    std::error_code veto;
    {
      HookScope scope(hook_thread_);
      veto = sync_hook_(ev);
    }
    if (!result && veto) result = veto;
  }
  const std::size_t n = unsynced_.size();
  if (!result) {
    for (const PendingWrite& w : unsynced_) apply(durable_, w.offset, w.data);
  } else {
    // fsyncgate: the failed writeback marks the pages clean; these writes never reach
    // the disk, and no later sync will carry them. Reads keep seeing them.
    ++counters_.failed_syncs;
    counters_.dropped_writes += n;
  }
  unsynced_.clear();
  trace_.push_back(TraceEvent{seq, TraceEvent::Kind::kSync, 0, {}, 0, n, result});
  return result;
}

std::error_code FaultStorage::size(std::uint64_t& bytes) {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  bytes = volatile_.size();
  return {};
}

std::vector<std::byte> FaultStorage::durable_image() const {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  return durable_;
}

std::vector<std::byte> FaultStorage::volatile_image() const {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  return volatile_;
}

std::vector<PendingWrite> FaultStorage::unsynced_writes() const {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  return unsynced_;
}

std::vector<TraceEvent> FaultStorage::trace() const {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  return trace_;
}

FaultCounters FaultStorage::counters() const {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  return counters_;
}

void FaultStorage::clear_trace() {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  trace_.clear();
}

std::vector<std::byte> FaultStorage::crash_image(std::span<const std::size_t> writes,
                                                 const std::optional<TornWrite>& torn) const {
  check_not_in_hook();
  detail::MutexLock lk(mu_);
  // The lambda reads no guarded field (the analysis does not see mu_ held inside it).
  const std::size_t nunsynced = unsynced_.size();
  std::vector<bool> used(nunsynced, false);
  auto take = [&](std::size_t i) {
    LLBM_CHECK(i < nunsynced, "FaultStorage::crash_image: write %zu of %zu unsynced", i, nunsynced);
    LLBM_CHECK(!used[i], "FaultStorage::crash_image: write %zu used twice", i);
    used[i] = true;
  };
  std::vector<std::byte> image = durable_;
  for (const std::size_t i : writes) {
    take(i);
    apply(image, unsynced_[i].offset, unsynced_[i].data);
  }
  if (torn) {
    take(torn->index);
    const std::uint64_t g = torn->granularity;
    LLBM_CHECK(g == 512 || g == 4096, "FaultStorage::crash_image: tear granularity %llu",
               static_cast<unsigned long long>(g));
    const PendingWrite& w = unsynced_[torn->index];
    const std::uint64_t end = w.offset + w.data.size();
    std::size_t unit = 0;
    for (std::uint64_t start = w.offset / g * g; start < end; start += g, ++unit) {
      if (unit >= torn->units.size() || !torn->units[unit]) continue;
      const std::uint64_t from = std::max(start, w.offset);
      const std::uint64_t to = std::min(start + g, end);
      apply(image, from, std::span<const std::byte>(w.data).subspan(from - w.offset, to - from));
    }
  }
  return image;
}

}  // namespace llbitmap
