// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The system clock: std::chrono::steady_clock plus a ticker thread that republishes
// the coarse word every `resolution` while at least one subscription is alive. The
// ticker parks on a condition variable when nobody subscribes, and a forked child
// (which has no ticker thread) starts a new one on its next subscription.
#include <llbitmap/clock.h>
#include <llbitmap/detail/mutex.h>
#include <llbitmap/detail/thread_annotations.h>

#include <map>
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
  // The one instance, Clock::system(). Leaked: the ticker thread may outlive static
  // destruction.
  static SteadyClock& instance() noexcept {
    static auto* clock = new SteadyClock;
    return *clock;
  }

  time_point now() noexcept override {
    const rep t = steady_ticks();
    publish(t);
    return time_point(duration(t));
  }

 private:
  SteadyClock() {
    publish(steady_ticks());
    // Hold mu_ across fork so the child never inherits subs_ half-changed. The lock is
    // taken in one handler and dropped (or rebuilt) in another, which the analysis
    // cannot follow.
    ::pthread_atfork([]() LLBM_NO_THREAD_SAFETY_ANALYSIS { instance().mu_.lock(); },
                     []() LLBM_NO_THREAD_SAFETY_ANALYSIS { instance().mu_.unlock(); },
                     []() LLBM_NO_THREAD_SAFETY_ANALYSIS {
                       auto& self = instance();
                       new (&self.mu_) detail::Mutex;
                       new (&self.cv_) detail::CondVar;
                       self.running_ = false;
                     });
  }

  void add_subscription(duration resolution) override {
    detail::MutexLock lk(mu_);
    ++subs_[resolution];
    publish(steady_ticks());
    if (!running_) {
      running_ = true;
      std::thread([this] {
        pthread_setname_np(pthread_self(), "llbm-clock");  // see SwitchWorker
        tick();
      }).detach();
    }
    cv_.notify_all();  // the finest resolution may have changed
  }

  void remove_subscription(duration resolution) noexcept override {
    detail::MutexLock lk(mu_);
    auto it = subs_.find(resolution);
    if (it != subs_.end() && --it->second == 0) subs_.erase(it);
  }

  void tick() noexcept {
    detail::MutexLock lk(mu_);
    for (;;) {
      while (subs_.empty()) cv_.wait(mu_);
      const duration step = subs_.begin()->first;
      publish(steady_ticks());
      (void)cv_.wait_for(mu_, step);
    }
  }

  detail::Mutex mu_;
  detail::CondVar cv_;
  std::map<duration, unsigned> subs_ LLBM_GUARDED_BY(mu_);  // resolution -> subscribers
  bool running_ LLBM_GUARDED_BY(mu_) = false;
};

}  // namespace

Clock& Clock::system() noexcept {
  return SteadyClock::instance();
}

Clock::Subscription Clock::subscribe(duration resolution) {
  if (resolution < std::chrono::milliseconds(1)) resolution = std::chrono::milliseconds(1);
  add_subscription(resolution);
  return {this, resolution};
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
