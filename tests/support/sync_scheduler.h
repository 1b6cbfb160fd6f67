// SPDX-License-Identifier: LGPL-2.1-or-later
//
// sync_scheduler.h: a seeded scheduler over the library's named sync points.
//
// Participant threads run library code; whenever one reaches a sync point it parks
// there. The scheduler (the test thread) lets exactly one parked participant go at a
// time, chosen by a seeded random generator, and runs the test's oracle after every
// step. So one seed is one interleaving of the participants' steps, and a failing seed
// replays the same choices.
//
// A participant may also block inside the library between two points (a writer on a
// suspended page, a daemon draining a page, a writer waiting for another thread's
// persist). The scheduler cannot see that: when a released participant has not parked
// again after `blocked_after`, it is taken to be blocked and another one is chosen; it
// rejoins when it parks at its next point. Only those steps depend on timing.
//
// Only meaningful in builds with LLBITMAP_SYNC_POINTS=ON.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "sync_point.h"

namespace llbitmap::test {

class SyncScheduler {
 public:
  SyncScheduler(std::uint64_t seed, const std::vector<std::string>& points,
                std::chrono::milliseconds blocked_after = std::chrono::milliseconds(5))
      : rng_(seed), points_(points), blocked_after_(blocked_after) {
    for (const std::string& p : points_) detail::SyncPoints::set(p, [this, p] { park(p); });
  }
  ~SyncScheduler() {
    for (const std::string& p : points_) detail::SyncPoints::clear(p);
  }
  SyncScheduler(const SyncScheduler&) = delete;
  SyncScheduler& operator=(const SyncScheduler&) = delete;

  // Starts a participant. Its sync-point hits park it; other threads pass freely.
  void spawn(std::function<void()> body) {
    std::lock_guard lk(mu_);
    const std::size_t id = parts_.size();
    parts_.push_back(Part{});
    parts_[id].thread = std::thread([this, id, body = std::move(body)] {
      tls_id_ = static_cast<int>(id);
      park("start");
      body();
      std::lock_guard l(mu_);
      parts_[id].done = true;
      cv_.notify_all();
    });
  }

  // A scheduling point in the participant's own code (between its operations).
  void step(const std::string& name) { park(name); }

  // Runs the schedule until every participant is done; `after_step` is called after
  // each step with the name of the point the released participant had parked at.
  // Returns the number of steps.
  std::size_t run(const std::function<void(const std::string&)>& after_step) {
    std::size_t steps = 0;
    std::unique_lock lk(mu_);
    for (;;) {
      std::vector<std::size_t> parked;
      bool live = false;
      for (std::size_t i = 0; i < parts_.size(); ++i) {
        if (parts_[i].done) continue;
        live = true;
        if (parts_[i].waiting) parked.push_back(i);
      }
      if (!live) break;
      if (parked.empty()) {
        // Everyone left runs or is blocked inside the library: wait for one to park or
        // finish.
        cv_.wait_for(lk, blocked_after_);
        continue;
      }
      const std::size_t pick =
          parked[std::uniform_int_distribution<std::size_t>(0, parked.size() - 1)(rng_)];
      Part& p = parts_[pick];
      const std::string point = p.point;
      const std::uint64_t parks = p.parks;
      p.waiting = false;  // only the participant sets it again, at its next point
      cv_.notify_all();
      ++steps;
      // Let it run to its next point or finish; past blocked_after it is taken to be
      // blocked inside the library and the others go on.
      cv_.wait_for(lk, blocked_after_, [&] { return p.done || p.parks != parks; });
      lk.unlock();
      after_step(point);
      lk.lock();
    }
    lk.unlock();
    for (Part& p : parts_) p.thread.join();
    return steps;
  }

 private:
  struct Part {
    std::thread thread;
    bool waiting = false;  // parked at `point`, not yet released
    bool done = false;
    std::uint64_t parks = 0;  // times it parked
    std::string point;
  };

  void park(const std::string& point) {
    const int id = tls_id_;
    if (id < 0) return;  // not a participant (e.g. the library's own threads)
    std::unique_lock lk(mu_);
    Part& p = parts_[static_cast<std::size_t>(id)];
    p.waiting = true;
    p.point = point;
    ++p.parks;
    cv_.notify_all();
    cv_.wait(lk, [&] { return !p.waiting; });
  }

  static inline thread_local int tls_id_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Part> parts_;  // deque: parked threads keep references across spawn()
  std::mt19937_64 rng_;
  std::vector<std::string> points_;
  std::chrono::milliseconds blocked_after_;
};

}  // namespace llbitmap::test
