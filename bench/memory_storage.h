// SPDX-License-Identifier: LGPL-2.1-or-later
//
// memory_storage.h: MemoryStorage, the bitmap's Storage as a plain byte vector, for the
// layer-4 benchmarks.
//
// FaultStorage keeps a trace of every write (with a copy of its bytes) and a durable
// image apart from the volatile one: right for tests, but in a benchmark that runs a
// pass thousands of times the trace's growth (malloc, page faults) is what gets timed.
// MemoryStorage does no more than a file in the page cache would: copy the bytes in;
// sync() calls an optional hook (a device flush's latency) and counts.
#pragma once

#include <llbitmap/detail/mutex.h>
#include <llbitmap/error.h>
#include <llbitmap/storage.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <span>
#include <vector>

namespace llbitmap::bench {

class MemoryStorage final : public Storage {
 public:
  explicit MemoryStorage(std::function<void()> on_sync = {}) : on_sync_(std::move(on_sync)) {}

  std::error_code read(std::uint64_t offset, std::span<std::byte> out) override {
    detail::MutexLock lk(mu_);
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) return Errc::short_io;
    std::memcpy(out.data(), bytes_.data() + offset, out.size());
    return {};
  }
  std::error_code write(std::uint64_t offset, std::span<const std::byte> data) override {
    detail::MutexLock lk(mu_);
    if (offset + data.size() > bytes_.size()) bytes_.resize(offset + data.size());
    std::memcpy(bytes_.data() + offset, data.data(), data.size());
    return {};
  }
  std::error_code sync() override {
    if (on_sync_) on_sync_();
    syncs_.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  std::error_code size(std::uint64_t& bytes) override {
    detail::MutexLock lk(mu_);
    bytes = bytes_.size();
    return {};
  }
  [[nodiscard]] std::uint64_t syncs() const noexcept {
    return syncs_.load(std::memory_order_relaxed);
  }

 private:
  detail::Mutex mu_;
  std::vector<std::byte> bytes_ LLBM_GUARDED_BY(mu_);
  const std::function<void()> on_sync_;
  std::atomic<std::uint64_t> syncs_{0};
};

}  // namespace llbitmap::bench
