// SPDX-License-Identifier: LGPL-2.1-or-later
#include "sync_point.h"

#include <map>
#include <mutex>

namespace llbitmap::detail {

namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, std::function<void()>, std::less<>> points;
  std::atomic<bool> any{false};  // fast exit when no point is set
};

Registry& registry() {
  static auto* r = new Registry;
  return *r;
}

}  // namespace

void SyncPoints::set(const std::string& name, std::function<void()> callback) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  r.points[name] = std::move(callback);
  r.any.store(true, std::memory_order_release);
}

void SyncPoints::clear(const std::string& name) {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  r.points.erase(name);
  r.any.store(!r.points.empty(), std::memory_order_release);
}

void SyncPoints::clear_all() {
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  r.points.clear();
  r.any.store(false, std::memory_order_release);
}

void SyncPoints::hit(const char* name) noexcept {
  Registry& r = registry();
  if (!r.any.load(std::memory_order_acquire)) return;
  std::function<void()> fn;
  {
    std::lock_guard lk(r.mu);
    auto it = r.points.find(std::string_view(name));
    if (it == r.points.end()) return;
    fn = it->second;
  }
  fn();
}

TestHooks& test_hooks() noexcept {
  static TestHooks hooks;
  return hooks;
}

}  // namespace llbitmap::detail
