// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The system clock: std::chrono::steady_clock plus a ticker thread that republishes
// the coarse word every `resolution` while at least one subscription is alive. The
// ticker parks on a condition variable when nobody subscribes, and a forked child
// (which has no ticker thread) starts a new one on its next subscription.
#include <llbitmap/clock.h>
#include <llbitmap/detail/thread_annotations.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <new>
#include <thread>

#include <pthread.h>

namespace llbitmap {

namespace {

Clock::rep steady_ticks() noexcept {
  return std::chrono::duration_cast<Clock::duration>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class SteadyClock final : public Clock {
 public:
  SteadyClock() {
    publish(steady_ticks());
    // Hold mu_ across fork so the child never inherits subs_ half-changed.
    ::pthread_atfork([] { static_cast<SteadyClock&>(Clock::system()).mu_.lock(); },
                     [] { static_cast<SteadyClock&>(Clock::system()).mu_.unlock(); },
                     [] {
                       auto& self = static_cast<SteadyClock&>(Clock::system());
                       new (&self.mu_) std::mutex;
                       new (&self.cv_) std::condition_variable;
                       self.running_ = false;
                     });
  }

  time_point now() noexcept override {
    const rep t = steady_ticks();
    publish(t);
    return time_point(duration(t));
  }

 private:
  void add_subscription(duration resolution) override {
    std::lock_guard lk(mu_);
    ++subs_[resolution];
    publish(steady_ticks());
    if (!running_) {
      running_ = true;
      std::thread([this] { tick(); }).detach();
    }
    cv_.notify_all();  // the finest resolution may have changed
  }

  void remove_subscription(duration resolution) noexcept override {
    std::lock_guard lk(mu_);
    auto it = subs_.find(resolution);
    if (it != subs_.end() && --it->second == 0) subs_.erase(it);
  }

  void tick() noexcept {
    std::unique_lock lk(mu_);
    for (;;) {
      cv_.wait(lk, [this]() LLBM_NO_THREAD_SAFETY_ANALYSIS { return !subs_.empty(); });
      const duration step = subs_.begin()->first;
      publish(steady_ticks());
      cv_.wait_for(lk, step);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<duration, unsigned> subs_ LLBM_GUARDED_BY(mu_);  // resolution -> subscribers
  bool running_ LLBM_GUARDED_BY(mu_) = false;
};

}  // namespace

Clock& Clock::system() noexcept {
  // Leaked: the ticker thread may outlive static destruction.
  static Clock* clock = new SteadyClock;
  return *clock;
}

Clock::Subscription Clock::subscribe(duration resolution) {
  if (resolution < std::chrono::milliseconds(1)) resolution = std::chrono::milliseconds(1);
  add_subscription(resolution);
  return Subscription(this, resolution);
}

Clock::Subscription::Subscription(Subscription&& other) noexcept
    : clock_(other.clock_), resolution_(other.resolution_) {
  other.clock_ = nullptr;
}

Clock::Subscription& Clock::Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    if (clock_ != nullptr) clock_->remove_subscription(resolution_);
    clock_ = other.clock_;
    resolution_ = other.resolution_;
    other.clock_ = nullptr;
  }
  return *this;
}

Clock::Subscription::~Subscription() {
  if (clock_ != nullptr) clock_->remove_subscription(resolution_);
}

}  // namespace llbitmap
