// SPDX-License-Identifier: LGPL-2.1-or-later
//
// meta_engine.h: MetaEngine, the metadata side of an event-loop engine for tests of
// ReactorBitmap (docs/design.md#the-reactor-driver): it takes the MetaIo requests the
// bitmap hands out (next_io), performs them on a MetaDisk (meta_disk.h: a FaultStorage
// with volatile and durable bytes) and reports them with complete(), in an order the
// test controls.
//
//   pull()          takes every request next_io hands out now (they are outstanding);
//   complete(i)     performs the i-th outstanding request and reports it: a kWrite lands
//                   in the volatile image, a kSync makes every landed write durable, a
//                   kDataFlush completes with data_flush_result();
//   complete_one()  the same for an outstanding request chosen by the seeded generator
//                   (a shuffle of the outstanding IOs: any order, as a real device);
//   drain()         pull and complete_one until nothing is outstanding or handed out.
//
// A hook may also watch the requests as pull() takes them.
//
// A request is performed only when it completes, so the order of completion is the
// order in which writes reach the disk. Faults: MetaDisk::fail_write / fail_sync make
// the k-th write or sync from now return EIO (and, for a sync, drop its writes as Linux
// does). A hook runs after every completion (complete() has returned), e.g. to take
// crash images.
//
// The engine checks what the header promises about the requests and records what it
// finds broken in violations(): ids unique among the outstanding requests; a kSync
// handed out only once every kWrite handed out before it completed, or (after_writes)
// directly behind all of them in one next_ios() call; a kWrite with bytes. An
// after_writes kSync is completed by complete_one() only once its writes have, and, as
// io_uring's link does, not performed (operation_canceled) if one of them failed.
//
// Single-threaded: one thread drives the engine (the bitmap's other callers may run on
// other threads).
#pragma once

#include <llbitmap/reactor.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "meta_disk.h"

namespace llbitmap::test {

class MetaEngine {
 public:
  // What a hook sees of a completed request (its bytes are no longer valid).
  struct Done {
    MetaIo::Kind kind = MetaIo::Kind::kSync;
    std::uint64_t id = 0;
    std::uint64_t offset = 0;
    std::size_t bytes = 0;
    std::error_code result;
  };
  using Hook = std::function<void(const Done&)>;

  MetaEngine(ReactorBitmap& bitmap, MetaDisk& disk, std::uint64_t seed)
      : bitmap_(bitmap), disk_(disk), rng_(seed) {}
  MetaEngine(const MetaEngine&) = delete;
  MetaEngine& operator=(const MetaEngine&) = delete;

  // Takes every request next_io (or next_ios, see set_batch) hands out now; returns how
  // many.
  std::size_t pull() {
    std::size_t n = 0;
    std::vector<MetaIo> batch(batch_);
    for (;;) {
      const std::size_t got =
          batch_ == 1 ? (bitmap_.next_io(batch[0]) ? 1 : 0) : bitmap_.next_ios(batch);
      if (got == 0) break;
      std::vector<std::uint64_t> run;  // the kWrites directly before, in this call
      for (std::size_t i = 0; i < got; ++i) {
        const MetaIo io = batch[i];
        ++n;
        handed_.push_back(io.kind);
        for (const MetaIo& o : outstanding_)
          if (o.id == io.id)
            violation("next_io handed out id " + std::to_string(io.id) +
                      " while it is outstanding");
        std::vector<std::uint64_t> after;
        if (io.kind == MetaIo::Kind::kSync) {
          std::size_t writes = 0;
          for (const MetaIo& o : outstanding_) writes += o.kind == MetaIo::Kind::kWrite ? 1 : 0;
          if (io.after_writes) {
            // Allowed only behind the writes it waits for, all of them in this call.
            if (writes == 0 || writes != run.size())
              violation("next_ios handed out an after_writes kSync with " + std::to_string(writes) +
                        " kWrite(s) outstanding, " + std::to_string(run.size()) +
                        " of them directly before it in the call");
            after = run;
          } else if (writes != 0) {
            violation("next_io handed out a kSync while " + std::to_string(writes) +
                      " kWrite(s) handed out before it were not completed");
          }
        }
        if (io.kind == MetaIo::Kind::kWrite && io.bytes.empty())
          violation("next_io handed out a kWrite without bytes");
        if (io.kind == MetaIo::Kind::kWrite)
          run.push_back(io.id);
        else
          run.clear();
        if (io.after_writes) ++after_writes_;
        outstanding_.push_back(io);
        after_.push_back(std::move(after));
        if (handed_hook_) handed_hook_(Done{io.kind, io.id, io.offset, io.bytes.size(), {}});
      }
    }
    return n;
  }

  // How many requests pull() asks for per call: 1 uses next_io, more next_ios (an
  // ordered_sync bitmap then hands a round's sync out behind its writes).
  void set_batch(std::size_t n) { batch_ = n == 0 ? 1 : n; }
  // after_writes syncs handed out so far, and those completed with operation_canceled
  // without being performed because a write they follow failed.
  [[nodiscard]] std::uint64_t after_writes_syncs() const noexcept { return after_writes_; }
  [[nodiscard]] std::uint64_t cancelled_syncs() const noexcept { return cancelled_syncs_; }
  // True if the i-th outstanding request may start now: not an after_writes kSync whose
  // writes are still outstanding.
  [[nodiscard]] bool startable(std::size_t i) const {
    for (const std::uint64_t id : after_.at(i))
      for (const MetaIo& o : outstanding_)
        if (o.id == id) return false;
    return true;
  }

  [[nodiscard]] const std::vector<MetaIo>& outstanding() const noexcept { return outstanding_; }
  [[nodiscard]] std::size_t count(MetaIo::Kind kind) const {
    std::size_t n = 0;
    for (const MetaIo& o : outstanding_) n += o.kind == kind ? 1 : 0;
    return n;
  }
  // The index of the first outstanding request of `kind`, or outstanding().size().
  [[nodiscard]] std::size_t find(MetaIo::Kind kind) const {
    std::size_t i = 0;
    while (i < outstanding_.size() && outstanding_[i].kind != kind) ++i;
    return i;
  }

  // Performs and reports the i-th outstanding request.
  Done complete(std::size_t i) {
    const MetaIo io = outstanding_.at(i);
    const std::vector<std::uint64_t> after = after_.at(i);
    outstanding_.erase(outstanding_.begin() + static_cast<std::ptrdiff_t>(i));
    after_.erase(after_.begin() + static_cast<std::ptrdiff_t>(i));
    Done d{io.kind, io.id, io.offset, io.bytes.size(), {}};
    bool cancelled = false;
    for (const std::uint64_t w : after)
      if (std::find(failed_writes_.begin(), failed_writes_.end(), w) != failed_writes_.end())
        cancelled = true;
    switch (io.kind) {
      case MetaIo::Kind::kWrite:
        d.result = disk_.write(io.offset, io.bytes);
        if (d.result) failed_writes_.push_back(io.id);
        ++writes_;
        break;
      case MetaIo::Kind::kSync:
        if (cancelled) {
          // As io_uring's link: a write the sync follows failed, so it is not performed.
          d.result = std::make_error_code(std::errc::operation_canceled);
          ++cancelled_syncs_;
          break;
        }
        // A lying disk (crash tests' self-test) acknowledges every other sync undone.
        d.result = skip_syncs_ && syncs_ % 2 == 1 ? std::error_code{} : disk_.sync();
        ++syncs_;
        break;
      case MetaIo::Kind::kDataFlush:
        d.result = data_flush_result_;
        ++flushes_;
        break;
    }
    bitmap_.complete(io.id, d.result);
    if (hook_) hook_(d);
    return d;
  }

  // Completes one outstanding request that may start (startable) chosen by the
  // generator; false if none.
  bool complete_one() {
    std::vector<std::size_t> can;
    for (std::size_t i = 0; i < outstanding_.size(); ++i)
      if (startable(i)) can.push_back(i);
    if (can.empty()) return false;
    complete(can[static_cast<std::size_t>(rng_() % can.size())]);
    return true;
  }

  // pull() and complete_one() until nothing is outstanding and next_io has nothing;
  // returns the number of requests completed (at most `cap`).
  std::size_t drain(std::size_t cap = 100000) {
    std::size_t n = 0;
    while (n < cap) {
      pull();
      if (!complete_one()) break;
      ++n;
    }
    return n;
  }

  void set_data_flush_result(std::error_code ec) { data_flush_result_ = ec; }
  void set_hook(Hook hook) { hook_ = std::move(hook); }
  // Runs as pull() takes each request from next_io (result empty).
  void set_handed_hook(Hook hook) { handed_hook_ = std::move(hook); }
  // true: every other kSync is reported done without syncing (a disk that lies about
  // flushes; for the self-test of a crash checker only).
  void set_skip_syncs(bool skip) { skip_syncs_ = skip; }

  [[nodiscard]] const std::vector<MetaIo::Kind>& handed_out() const noexcept { return handed_; }
  [[nodiscard]] std::uint64_t writes() const noexcept { return writes_; }
  [[nodiscard]] std::uint64_t syncs() const noexcept { return syncs_; }
  [[nodiscard]] std::uint64_t flushes() const noexcept { return flushes_; }
  [[nodiscard]] const std::vector<std::string>& violations() const noexcept { return violations_; }
  [[nodiscard]] std::mt19937_64& rng() noexcept { return rng_; }

 private:
  void violation(std::string what) { violations_.push_back(std::move(what)); }

  ReactorBitmap& bitmap_;
  MetaDisk& disk_;
  std::mt19937_64 rng_;
  std::vector<MetaIo> outstanding_;
  std::vector<std::vector<std::uint64_t>> after_;  // per outstanding_: the writes it follows
  std::size_t batch_ = 1;
  std::uint64_t after_writes_ = 0;
  std::vector<std::uint64_t> failed_writes_;  // ids of kWrites that failed
  std::uint64_t cancelled_syncs_ = 0;
  std::vector<MetaIo::Kind> handed_;
  std::vector<std::string> violations_;
  std::error_code data_flush_result_;
  Hook hook_;
  Hook handed_hook_;
  bool skip_syncs_ = false;
  std::uint64_t writes_ = 0, syncs_ = 0, flushes_ = 0;
};

// The name of a request kind, for messages.
inline const char* kind_name(MetaIo::Kind k) {
  switch (k) {
    case MetaIo::Kind::kWrite:
      return "kWrite";
    case MetaIo::Kind::kSync:
      return "kSync";
    case MetaIo::Kind::kDataFlush:
      return "kDataFlush";
  }
  return "?";
}

}  // namespace llbitmap::test
