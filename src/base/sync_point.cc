// SPDX-License-Identifier: LGPL-2.1-or-later
#include "sync_point.h"

#include <llbitmap/detail/mutex.h>
#include <llbitmap/detail/thread_annotations.h>

#include <map>

namespace llbitmap::detail {

namespace {

struct Registry {
  Mutex mu;
  std::map<std::string, std::function<void()>, std::less<>> points LLBM_GUARDED_BY(mu);
  // Fast exit when no point is set. Stored under mu by set/clear/clear_all (release);
  // the acquire load in hit() pairs with those stores.
  std::atomic<bool> any{false};
};

Registry& registry() {
  static auto* r = new Registry;
  return *r;
}

}  // namespace

void SyncPoints::set(const std::string& name, std::function<void()> callback) {
  Registry& r = registry();
  MutexLock lk(r.mu);
  r.points[name] = std::move(callback);
  r.any.store(true, std::memory_order_release);  // pairs with the acquire load in hit()
}

void SyncPoints::clear(const std::string& name) {
  Registry& r = registry();
  MutexLock lk(r.mu);
  r.points.erase(name);
  r.any.store(!r.points.empty(), std::memory_order_release);  // pairs with hit()'s load
}

void SyncPoints::clear_all() {
  Registry& r = registry();
  MutexLock lk(r.mu);
  r.points.clear();
  r.any.store(false, std::memory_order_release);  // pairs with the acquire load in hit()
}

void SyncPoints::hit(const char* name) noexcept {
  Registry& r = registry();
  // acquire: pairs with the release stores of set/clear/clear_all.
  if (!r.any.load(std::memory_order_acquire)) return;
  std::function<void()> fn;
  {
    MutexLock lk(r.mu);
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
