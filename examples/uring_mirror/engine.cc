// SPDX-License-Identifier: LGPL-2.1-or-later
//
// engine.cc: the reactor loop of llbitmap-uring-mirror (see engine.h).
//
// One iteration of the loop:
//   1. kLlbitmap: the cleaning pass is stepped (at most every millisecond); q.poll()
//      runs the admissions that became due (their callbacks submit the leg writes),
//      including those this thread's own completions and step made due, which do not
//      write the eventfd (ReactorQueue::Wake::kOtherThreads); every MetaIo the bitmap
//      hands out goes onto this ring (next_ios: a round's writes linked to its sync).
//   2. The end of the run: once the stop flag is seen no new write starts; once this
//      reactor's writes have ended it leaves the count of writing reactors, and the last
//      one to leave asks the bitmap to close. Every reactor keeps driving metadata IO and
//      stepping until the bitmap reports kClosed.
//   3. io_uring_submit_and_wait_timeout: submits what the iteration queued and sleeps in
//      io_uring_enter until a completion arrives (a leg write, a metadata IO, or the
//      queue's eventfd becoming readable: another reactor admitted one of our writes),
//      or 1 ms passed (the next step of the cleaning pass). With --busy-poll it only
//      submits (io_uring_enter only when something was queued) and goes on at once.
//   4. The completions are handled: a write whose two leg writes completed ends
//      (end_write), is recorded, and its slot starts the next write.
// Nothing on this thread blocks outside io_uring_enter in kNone and kLlbitmap mode;
// kClassic takes ClassicBitmap's lock (the design it models).
#include "engine.h"

#include <llbitmap/error.h>
#include <llbitmap/reactor.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <system_error>
#include <thread>
#include <vector>

#include "classic_bitmap.h"
#include "workload.h"
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace llbitmap::uring_mirror {

const char* mode_name(Mode m) noexcept {
  switch (m) {
    case Mode::kNone:
      return "none";
    case Mode::kLlbitmap:
      return "llbitmap";
    case Mode::kClassic:
      return "classic";
    case Mode::kBlocking:
      return "blocking";
  }
  return "?";
}

const char* workload_name(Workload w) noexcept {
  switch (w) {
    case Workload::kUniform:
      return "uniform";
    case Workload::kHot:
      return "hot";
    case Workload::kFirst:
      return "first";
    case Workload::kSeq:
      return "seq";
  }
  return "?";
}

namespace {

// What a completion belongs to: the low bits of its user_data (every object is at
// least 8-byte aligned).
enum Tag : std::uintptr_t {
  kTagLeg = 0,            // a Slot's leg write
  kTagMeta = 1,           // a MetaReq
  kTagEvent = 2,          // the poll of the queue's eventfd
  kTagClassicFlush = 3,   // the classic bitmap's page write + fdatasync before data writes
  kTagClassicDaemon = 4,  // the classic daemon pass's page write + fdatasync
};
constexpr std::uintptr_t kTagMask = 7;

template <typename T>
std::uint64_t tagged(T* p, Tag t) noexcept {
  return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p) | t);
}

class Reactor;

// One write in flight: its buffer, where it goes, and (kLlbitmap) the ReactorWrite the
// bitmap holds while its admission waits.
struct Slot : ReactorWrite {
  explicit Slot(Reactor* r) : ReactorWrite(&on_admit), reactor(r) {}
  static void on_admit(ReactorWrite& w, std::error_code ec);
  Reactor* reactor;
  std::byte* buf = nullptr;
  std::uint64_t off = 0;
  std::uint64_t t0 = 0;
  int legs_left = 0;
  int err = 0;
  bool busy = false;
  Slot* next = nullptr;  // kClassic: the list of writes waiting for a bitmap flush
  // kClassic: per reactor, the ticket its flushes must have done before this write's legs
  // go (see ClassicPeer; this reactor's own entry is unused).
  std::vector<std::uint64_t> tickets;
};

// A metadata IO of the bitmap on its way through the ring.
struct MetaReq {
  MetaIo io;
  int fd = -1;             // kWrite: where it goes (the bitmap file; see fail_meta_write)
  std::uint64_t done = 0;  // kWrite: bytes written so far
  int left = 0;            // completions still expected
  int err = 0;             // the first error (errno)
};

// The classic bitmap's page write + fdatasync, and the writes waiting for it.
struct ClassicFlush {
  int left = 0;
  int err = 0;
  Slot* waiters = nullptr;
  std::uint64_t ticket = 0;  // the highest ticket whose page marks it carries
};

class Reactor {
 public:
  Reactor(Shared& shared, unsigned index, ReactorResult& result)
      : s_(shared), index_(index), result_(result), picker_(shared, index) {}
  ~Reactor() {
    // kClassic owns its eventfd (kLlbitmap's is the queue's). No other reactor writes it
    // once it is -1.
    if (s_.mode == Mode::kClassic && efd_ >= 0) {
      s_.classic_peers[index_].efd.store(-1, std::memory_order_relaxed);
      ::close(efd_);
    }
    if (ring_ok_) io_uring_queue_exit(&ring_);
    std::free(buffers_);
    std::free(page_buf_);
  }
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  void run();

  // Called for a slot whose admission completed (kReady, or its callback).
  void admitted(Slot& slot) { submit_legs(slot); }
  void refused(Slot& slot, std::error_code ec) {
    ++result_.errors;
    if (result_.error.empty()) result_.error = "write refused: " + ec.message();
    release(slot);  // nothing held: the slot stays idle
  }

 private:
  io_uring_sqe* sqe() {
    io_uring_sqe* e = io_uring_get_sqe(&ring_);
    if (e == nullptr) {  // the submission queue is full: hand it to the kernel first
      io_uring_submit(&ring_);
      e = io_uring_get_sqe(&ring_);
    }
    if (e == nullptr) {
      std::fprintf(stderr, "llbitmap-uring-mirror: reactor %u: no free SQE after a submit\n",
                   index_);
      std::abort();
    }
    return e;
  }

  // A system call that cannot fail in a working process did: says which, and aborts.
  [[noreturn]] void die_errno(const char* what) const {
    std::fprintf(stderr, "llbitmap-uring-mirror: reactor %u: %s: %s\n", index_, what,
                 std::strerror(errno));
    std::abort();
  }

  bool in_flight(std::uint64_t off) const noexcept {
    for (const auto& sl : slots_)
      if (sl->busy && sl->off == off) return true;
    return false;
  }
  void start_op(Slot& slot);
  void submit_legs(Slot& slot);
  void on_leg(Slot& slot, int res);
  void finish(Slot& slot);
  void release(Slot& slot) {
    slot.busy = false;
    --busy_;
  }
  void classic_admit(Slot& slot);
  // After its own reactor's flush (if it waited for one): the legs, once the other
  // reactors' flushes it must follow are done, or parked in foreign_waiters_ until then.
  void classic_go(Slot& slot);
  [[nodiscard]] bool others_done(const Slot& slot) const;
  // This reactor's tickets up to `ticket` are done: publish, and wake the reactors with
  // writes parked on them.
  void classic_done(std::uint64_t ticket);
  void classic_recheck();  // the eventfd fired: release the parked writes that may go
  void submit_classic_pages(std::uint64_t user_data, std::size_t pages);
  void on_classic_flush(int res);
  void on_classic_daemon(int res);
  void arm_event();
  void handle(std::uint64_t user_data, int res);
  void submit_meta_batch(std::span<const MetaIo> batch);
  // link: IOSQE_IO_LINK on a kWrite; hold: a kSync that must wait for this reactor's
  // bitmap writes (resubmit_).
  void submit_meta(const MetaIo& io, bool link, bool hold);
  void submit_meta_write(MetaReq& m, bool link);
  void submit_meta_sync(MetaReq& m);
  void on_meta(MetaReq& m, int res);

  Shared& s_;
  const unsigned index_;
  ReactorResult& result_;
  OffsetPicker picker_;  // workload.h
  io_uring ring_{};
  bool ring_ok_ = false;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::byte* buffers_ = nullptr;
  unsigned busy_ = 0;  // slots with a write started and not ended (pending included)
  bool stopping_ = false;
  bool measured_ = false;         // this reactor's measured time has started (--warmup)
  std::uint64_t measure_ns_ = 0;  // when it started
  bool no_more_ = false;          // kFirst ran out of chunks
  std::uint64_t start_ns_ = 0;
  std::uint64_t stamp_ = 0;
  std::unique_ptr<ReactorQueue> queue_;
  std::vector<std::unique_ptr<MetaReq>> meta_pool_;
  std::vector<MetaReq*> meta_free_;
  unsigned meta_writes_ = 0;  // kWrite requests not completed yet
  // After_writes syncs not linked (cancelled by the kernel, or held for want of room):
  // started once meta_writes_ is 0.
  std::vector<MetaReq*> resubmit_;
  bool meta_write_failed_ = false;  // a bitmap write failed (the bitmap is failed for good)
  unsigned meta_inflight_ = 0;
  int efd_ = -1;
  bool event_armed_ = false;
  // kClassic
  std::byte* page_buf_ = nullptr;
  std::size_t classic_pages_ = 0;
  ClassicFlush flush_;
  bool flush_inflight_ = false;
  Slot* next_waiters_ = nullptr;
  std::size_t next_pages_ = 0;
  std::uint64_t next_ticket_ = 0;       // the ticket the next flush will carry
  std::vector<Slot*> foreign_waiters_;  // waiting for other reactors' flushes only
  int daemon_left_ = 0;
  std::uint64_t next_daemon_ns_ = 0;
};

void Slot::on_admit(ReactorWrite& w, std::error_code ec) {
  auto& slot = static_cast<Slot&>(w);
  if (ec)
    slot.reactor->refused(slot, ec);
  else
    slot.reactor->admitted(slot);
}

void Reactor::start_op(Slot& slot) {
  if (stopping_) return;
  std::uint64_t off = 0;
  if (!picker_.pick(off, [this](std::uint64_t o) {
        return in_flight(o);
      })) {  // kFirst: every chunk was touched; the run ends early
    no_more_ = true;
    return;
  }
  slot.off = off;
  slot.err = 0;
  slot.busy = true;
  ++busy_;
  // Every write carries its own bytes, so legs that missed different writes differ.
  ++stamp_;
  for (std::size_t i = 0; i < kBlock; i += 64) {
    const std::uint64_t words[2] = {off, stamp_ ^ (std::uint64_t{index_} << 56)};
    std::memcpy(slot.buf + i, words, sizeof words);
  }
  slot.t0 = now_ns();
  switch (s_.mode) {
    case Mode::kNone:
      submit_legs(slot);
      return;
    case Mode::kClassic:
      classic_admit(slot);
      return;
    case Mode::kBlocking:  // never a reactor's (run_reactor refuses it)
      return;
    case Mode::kLlbitmap: {
      std::error_code ec;
      switch (queue_->start_write(off, kBlock, slot, ec)) {
        case Admit::kReady:
          submit_legs(slot);
          return;
        case Admit::kPending:
          ++result_.pending;  // the callback from q.poll() submits (or refuses) it
          return;
        case Admit::kRefused:
          refused(slot, ec);
          return;
      }
    }
      return;
  }
}

void Reactor::submit_legs(Slot& slot) {
  slot.legs_left = 2;
  for (const int fd : s_.leg_fd) {
    io_uring_sqe* e = sqe();
    io_uring_prep_write(e, fd, slot.buf, static_cast<unsigned>(kBlock), slot.off);
    io_uring_sqe_set_data64(e, tagged(&slot, kTagLeg));
  }
}

void Reactor::on_leg(Slot& slot, int res) {
  if (res != static_cast<int>(kBlock) && slot.err == 0) slot.err = res < 0 ? -res : EIO;
  if (--slot.legs_left == 0) finish(slot);
}

void Reactor::finish(Slot& slot) {
  switch (s_.mode) {
    case Mode::kNone:
      break;
    case Mode::kClassic:
      s_.classic->end_write(slot.off, kBlock, slot.err == 0);
      break;
    case Mode::kBlocking:  // never a reactor's (run_reactor refuses it)
      break;
    case Mode::kLlbitmap:
      // ReactorOptions::data_flush: the cleaning pass's kDataFlush makes it durable.
      s_.bitmap->end_write(slot.off, kBlock);
      break;
  }
  if (slot.err != 0) {
    ++result_.errors;
    if (result_.error.empty()) result_.error = std::string("leg write: ") + std::strerror(slot.err);
  }
  // acquire: pairs with the main thread's release store at the end of the warm-up.
  if (!measured_ && s_.measuring.load(std::memory_order_acquire)) {
    measured_ = true;
    measure_ns_ = now_ns();
  }
  if (!stopping_ && measured_) {
    result_.latency.record(now_ns() - slot.t0);
    ++result_.ops;
  }
  release(slot);
  start_op(slot);
}

// --- kClassic

// md's raid1 unplugs the bitmap (writes its dirty pages and waits) before it submits
// the writes queued meanwhile. Here a write that set a bit starts a flush of the pages
// (write + fdatasync, linked) or, with one in flight, waits for the next; a write that
// set none but finds a flush of this reactor in flight waits for that one (its bit may
// be in it). Each reactor unplugs its own writes, so the page holding a write's bit may
// have been taken by another reactor's unplug: every write also waits until the other
// reactors' flushes that were started or planned when it unplugged have completed (their
// tickets, ClassicPeer), woken through its eventfd when one completes elsewhere.
void Reactor::classic_admit(Slot& slot) {
  ClassicPeer& me = s_.classic_peers[index_];
  // The ticket is taken before the unplug, so a reactor whose unplug comes later (the
  // model's lock orders them) sees it taken. seq_cst: pairs with others_done's loads.
  const std::uint64_t ticket = me.started.fetch_add(1) + 1;
  s_.classic->start_write(slot.off, kBlock);  // one lock for the whole bitmap
  const std::size_t pages = s_.classic->unplug();
  for (unsigned r = 0; r < s_.reactors; ++r)
    slot.tickets[r] = r == index_ ? 0 : s_.classic_peers[r].started.load();
  if (pages > 0 && !flush_inflight_) {
    flush_inflight_ = true;
    flush_ = ClassicFlush{2, 0, nullptr, ticket};
    slot.next = flush_.waiters;
    flush_.waiters = &slot;
    submit_classic_pages(tagged(&flush_, kTagClassicFlush), pages);
  } else if (pages > 0) {
    slot.next = next_waiters_;
    next_waiters_ = &slot;
    next_pages_ = std::max(next_pages_, pages);
    next_ticket_ = ticket;
  } else if (flush_inflight_) {
    // The ticket carries nothing: done with the flushes already planned.
    if (next_waiters_ != nullptr)
      next_ticket_ = ticket;
    else
      flush_.ticket = ticket;
    slot.next = flush_.waiters;
    flush_.waiters = &slot;
  } else {
    classic_done(ticket);
    classic_go(slot);
  }
}

bool Reactor::others_done(const Slot& slot) const {
  for (unsigned r = 0; r < s_.reactors; ++r)
    if (r != index_ && s_.classic_peers[r].done.load() < slot.tickets[r]) return false;
  return true;
}

void Reactor::classic_go(Slot& slot) {
  if (others_done(slot)) {
    submit_legs(slot);
    return;
  }
  foreign_waiters_.push_back(&slot);
  // seq_cst, then the check again: either the other reactor's done store comes before
  // this recheck, or its load of `waiting` after it sees true and writes the eventfd.
  s_.classic_peers[index_].waiting.store(true);
  classic_recheck();
}

void Reactor::classic_done(std::uint64_t ticket) {
  ClassicPeer& me = s_.classic_peers[index_];
  if (ticket <= me.done.load(std::memory_order_relaxed)) return;  // only this thread stores
  me.done.store(ticket);  // seq_cst: pairs with classic_go's store of `waiting`
  for (unsigned r = 0; r < s_.reactors; ++r) {
    if (r == index_ || !s_.classic_peers[r].waiting.load()) continue;
    const int fd = s_.classic_peers[r].efd.load(std::memory_order_relaxed);
    const std::uint64_t one = 1;
    if (fd >= 0 && ::write(fd, &one, sizeof one) < 0 && errno != EAGAIN) die_errno("eventfd write");
  }
}

void Reactor::classic_recheck() {
  std::size_t kept = 0;
  for (Slot* w : foreign_waiters_) {
    if (others_done(*w))
      submit_legs(*w);
    else
      foreign_waiters_[kept++] = w;
  }
  foreign_waiters_.resize(kept);
  if (foreign_waiters_.empty()) s_.classic_peers[index_].waiting.store(false);
}

void Reactor::submit_classic_pages(std::uint64_t user_data, std::size_t pages) {
  pages = std::min(pages, classic_pages_);
  io_uring_sqe* w = sqe();
  io_uring_prep_write(w, s_.classic_fd, page_buf_, static_cast<unsigned>(pages * kBlock), 0);
  io_uring_sqe_set_data64(w, user_data);
  w->flags |= IOSQE_IO_LINK;  // the fdatasync runs only after the write completed
  io_uring_sqe* f = sqe();
  io_uring_prep_fsync(f, s_.classic_fd, IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(f, user_data);
}

void Reactor::on_classic_flush(int res) {
  if (res < 0 && flush_.err == 0) flush_.err = -res;
  if (--flush_.left > 0) return;
  Slot* w = flush_.waiters;
  const int err = flush_.err;
  const std::uint64_t ticket = flush_.ticket;
  flush_inflight_ = false;
  flush_.waiters = nullptr;
  if (next_waiters_ != nullptr) {
    flush_inflight_ = true;
    flush_ = ClassicFlush{2, 0, next_waiters_, next_ticket_};
    next_waiters_ = nullptr;
    submit_classic_pages(tagged(&flush_, kTagClassicFlush), next_pages_);
    next_pages_ = 0;
  }
  // A failed flush counts as done too: its writes fail below, and the other reactors'
  // writes waiting on it are no worse off than md's after a failed bitmap write.
  classic_done(ticket);
  while (w != nullptr) {
    Slot* next = w->next;
    if (err != 0) {  // the bit is not durable: the write fails without touching the legs
      w->err = err;
      w->legs_left = 0;
      finish(*w);
    } else {
      classic_go(*w);
    }
    w = next;
  }
}

void Reactor::on_classic_daemon(int res) {
  if (res < 0) {
    ++result_.errors;
    if (result_.error.empty())
      result_.error = std::string("classic bitmap: ") + std::strerror(-res);
  }
  --daemon_left_;
}

// --- kLlbitmap

// One next_ios() call's requests. A kSync marked after_writes follows, in the same call,
// the kWrites of its round (ReactorOptions::ordered_sync): they are linked to it
// (IOSQE_IO_LINK), so the kernel starts the sync only once they completed and the round
// takes one trip through the ring. A chain must not be split by a submit: room for the
// whole call is made first.
void Reactor::submit_meta_batch(std::span<const MetaIo> batch) {
  unsigned need = 0;
  for (const MetaIo& io : batch) need += io.kind == MetaIo::Kind::kDataFlush ? 2 : 1;
  if (io_uring_sq_space_left(&ring_) < need) io_uring_submit(&ring_);
  // Should the ring still lack room (a ring smaller than the chain, --ring-entries, or a
  // kernel that took fewer entries than asked), nothing is linked and the sync waits,
  // unsubmitted, until this reactor's bitmap writes are back.
  const bool chain = io_uring_sq_space_left(&ring_) >= need;
  std::size_t sync_at = batch.size();  // the after_writes sync, if any
  for (std::size_t i = 0; i < batch.size(); ++i)
    if (batch[i].after_writes) sync_at = i;
  std::size_t chain_from = sync_at;  // the first of the writes directly before it
  while (sync_at < batch.size() && chain_from > 0 &&
         batch[chain_from - 1].kind == MetaIo::Kind::kWrite)
    --chain_from;
  for (std::size_t i = 0; i < batch.size(); ++i)
    submit_meta(batch[i], chain && i >= chain_from && i < sync_at, !chain && i == sync_at);
}

void Reactor::submit_meta(const MetaIo& io, bool link, bool hold) {
  if (meta_free_.empty()) {
    meta_pool_.push_back(std::make_unique<MetaReq>());
    meta_free_.push_back(meta_pool_.back().get());
  }
  MetaReq& m = *meta_free_.back();
  meta_free_.pop_back();
  m = MetaReq{};
  m.io = io;
  ++meta_inflight_;
  switch (io.kind) {
    case MetaIo::Kind::kWrite: {
      m.left = 1;
      ++meta_writes_;
      // relaxed: a ticket counter.
      const std::uint64_t n = s_.meta_writes.fetch_add(1, std::memory_order_relaxed) + 1;
      m.fd = n == s_.fail_meta_write ? s_.bitmap_ro_fd : s_.bitmap_fd;
      submit_meta_write(m, link);
      return;
    }
    case MetaIo::Kind::kSync:
      m.left = 1;
      if (hold) ++result_.syncs_held;
      if (hold && meta_writes_ != 0)
        resubmit_.push_back(&m);  // started once the writes before it are back
      else
        submit_meta_sync(m);
      return;
    case MetaIo::Kind::kDataFlush:
      m.left = 2;  // both legs
      for (const int fd : s_.leg_fd) {
        io_uring_sqe* e = sqe();
        io_uring_prep_fsync(e, fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(e, tagged(&m, kTagMeta));
      }
      return;
  }
}

void Reactor::submit_meta_write(MetaReq& m, bool link) {
  io_uring_sqe* e = sqe();
  io_uring_prep_write(e, m.fd, m.io.bytes.data() + m.done,
                      static_cast<unsigned>(m.io.bytes.size() - m.done), m.io.offset + m.done);
  io_uring_sqe_set_data64(e, tagged(&m, kTagMeta));
  if (link) e->flags |= IOSQE_IO_LINK;
}

void Reactor::submit_meta_sync(MetaReq& m) {
  io_uring_sqe* e = sqe();
  io_uring_prep_fsync(e, s_.bitmap_fd, IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(e, tagged(&m, kTagMeta));
}

void Reactor::on_meta(MetaReq& m, int res) {
  if (m.io.kind == MetaIo::Kind::kSync && m.io.after_writes && res == -ECANCELED) {
    ++result_.syncs_cancelled;
    // A write linked before it failed or was short, which broke the chain. After a
    // failure the sync is completed cancelled, not performed (the round fails with the
    // write's error); after a short write, which is being finished, it is started again
    // once this reactor's bitmap writes completed.
    if (meta_write_failed_) {
      m.err = ECANCELED;
      --m.left;
      s_.bitmap->complete(m.io.id, std::error_code(ECANCELED, std::generic_category()));
      --meta_inflight_;
      ++result_.meta_ios;
      meta_free_.push_back(&m);
      return;
    }
    resubmit_.push_back(&m);
    ++result_.syncs_restarted;
    if (meta_writes_ == 0) {
      for (MetaReq* r : resubmit_) submit_meta_sync(*r);
      resubmit_.clear();
    }
    return;
  }
  if (m.io.kind == MetaIo::Kind::kWrite && res > 0) {
    m.done += static_cast<std::uint64_t>(res);
    if (m.done < m.io.bytes.size()) {  // a short write: write the rest
      submit_meta_write(m, false);
      return;
    }
  } else if (res < 0 || (m.io.kind == MetaIo::Kind::kWrite && res == 0)) {
    if (m.err == 0) m.err = res < 0 ? -res : EIO;
  }
  if (--m.left > 0) return;
  if (m.io.kind == MetaIo::Kind::kWrite && m.err != 0) meta_write_failed_ = true;
  const std::error_code ec =
      m.err != 0 ? std::error_code(m.err, std::generic_category()) : std::error_code();
  s_.bitmap->complete(m.io.id, ec);
  --meta_inflight_;
  ++result_.meta_ios;
  meta_free_.push_back(&m);
  if (m.io.kind == MetaIo::Kind::kWrite && --meta_writes_ == 0 && !resubmit_.empty()) {
    for (MetaReq* r : resubmit_) submit_meta_sync(*r);
    resubmit_.clear();
  }
}

void Reactor::arm_event() {
  if (efd_ < 0 || event_armed_) return;
  io_uring_sqe* e = sqe();
  io_uring_prep_poll_add(e, efd_, POLLIN);
  io_uring_sqe_set_data64(e, tagged(this, kTagEvent));
  event_armed_ = true;
}

void Reactor::handle(std::uint64_t user_data, int res) {
  const auto tag = static_cast<Tag>(user_data & kTagMask);
  void* p = reinterpret_cast<void*>(static_cast<std::uintptr_t>(user_data & ~kTagMask));
  switch (tag) {
    case kTagLeg:
      on_leg(*static_cast<Slot*>(p), res);
      return;
    case kTagMeta:
      on_meta(*static_cast<MetaReq*>(p), res);
      return;
    case kTagEvent:
      event_armed_ = false;  // q.poll() at the top of the loop drains the eventfd
      if (s_.mode == Mode::kClassic) {
        std::uint64_t n = 0;
        if (::read(efd_, &n, sizeof n) < 0 && errno != EAGAIN) die_errno("eventfd read");
        classic_recheck();
      }
      return;
    case kTagClassicFlush:
      on_classic_flush(res);
      return;
    case kTagClassicDaemon:
      on_classic_daemon(res);
      return;
  }
}

void Reactor::run() {
  pthread_setname_np(pthread_self(), "llbm-reactor");
  result_.tid = static_cast<pid_t>(::syscall(SYS_gettid));
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(index_ % cpus, &set);
  sched_setaffinity(0, sizeof set, &set);  // best effort: one reactor per core

  unsigned entries = 64;
  while (entries < 2 * s_.iodepth + 64) entries *= 2;
  if (s_.ring_entries != 0) entries = s_.ring_entries;
  const int r = io_uring_queue_init(entries, &ring_, 0);
  bool ok = r == 0;
  if (!ok) result_.error = std::string("io_uring_queue_init: ") + std::strerror(-r);
  ring_ok_ = ok;
  if (ok) {
    buffers_ = static_cast<std::byte*>(std::aligned_alloc(kBlock, s_.iodepth * kBlock));
    if (buffers_ == nullptr) throw std::bad_alloc();
    for (unsigned i = 0; i < s_.iodepth; ++i) {
      slots_.push_back(std::make_unique<Slot>(this));
      slots_.back()->buf = buffers_ + i * kBlock;
    }
    if (s_.mode == Mode::kClassic) {
      classic_pages_ = (bench::ClassicBitmap::kSuperblockBits + s_.device_bytes / s_.chunk_bytes +
                        bench::ClassicBitmap::kFilePageBits - 1) /
                       bench::ClassicBitmap::kFilePageBits;
      page_buf_ = static_cast<std::byte*>(std::aligned_alloc(kBlock, classic_pages_ * kBlock));
      if (page_buf_ == nullptr) throw std::bad_alloc();
      std::memset(page_buf_, 0, classic_pages_ * kBlock);
      for (auto& slot : slots_) slot->tickets.assign(s_.reactors, 0);
      // Another reactor's completed flush wakes this one (classic_done) when it has writes
      // parked on it; polled on the ring like llbitmap's queue eventfd.
      efd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (efd_ < 0) die_errno("eventfd");
      s_.classic_peers[index_].efd.store(efd_, std::memory_order_relaxed);
    }
    if (s_.mode == Mode::kLlbitmap) {
      // The loop polls the queue after every other bitmap call and before it sleeps, so
      // only another reactor's completion needs to write the eventfd.
      queue_ = std::make_unique<ReactorQueue>(*s_.bitmap, ReactorQueue::Wake::kOtherThreads);
      efd_ = queue_->event_fd();
      for (int i = 0; i < 16; ++i) {
        meta_pool_.push_back(std::make_unique<MetaReq>());
        meta_free_.push_back(meta_pool_.back().get());
      }
    }
  }
  // release: pairs with the main thread's acquire load; it prints "running" after it.
  s_.started.fetch_add(1, std::memory_order_release);
  s_.started.notify_all();
  if (!ok) {
    // No ring: this reactor writes nothing. acq_rel as below; if it is the last one
    // out, the bitmap is asked to close and the main thread drives it after the join.
    if (s_.writing.fetch_sub(1, std::memory_order_acq_rel) == 1 && s_.bitmap != nullptr) {
      s_.bitmap->begin_close();
    }
    return;
  }
  // acquire: pairs with the main thread's release store. Spins with a yield: the wait
  // is one registration of each other reactor long, and a reactor never sleeps.
  while (!s_.go.load(std::memory_order_acquire)) sched_yield();
  start_ns_ = now_ns();
  next_daemon_ns_ = start_ns_ + static_cast<std::uint64_t>(
                                    std::chrono::nanoseconds(s_.classic_daemon_sleep).count());
  for (auto& slot : slots_) start_op(*slot);

  [[maybe_unused]] std::uint64_t last_step = 0;
  bool writes_done = false;
  bool closer = false;
  std::vector<std::pair<std::uint64_t, int>> done;
  done.reserve(entries * 2);
  for (;;) {
    const std::uint64_t t = now_ns();
    // The step first: a page it reopens makes writes due, which the poll below runs.
    if (s_.bitmap != nullptr && t - last_step >= 1'000'000) {
      s_.bitmap->step();
      last_step = t;
    }
    if (queue_) {
      queue_->poll();
      std::array<MetaIo, 16> batch;
      for (std::size_t n; (n = s_.bitmap->next_ios(batch)) != 0;)
        submit_meta_batch(std::span<const MetaIo>(batch.data(), n));
    }
    if (s_.mode == Mode::kClassic && index_ == 0 && t >= next_daemon_ns_) {
      next_daemon_ns_ =
          t + static_cast<std::uint64_t>(std::chrono::nanoseconds(s_.classic_daemon_sleep).count());
      if (daemon_left_ == 0) {
        const std::size_t pages = s_.classic->daemon_pass();
        if (pages > 0) {
          daemon_left_ = 2;
          submit_classic_pages(tagged(this, kTagClassicDaemon), pages);
        }
      }
    }
    // acquire: pairs with the main thread's release store of the stop flag.
    if (!stopping_ && s_.stop.load(std::memory_order_acquire)) {
      stopping_ = true;
      result_.seconds = measured_ ? static_cast<double>(t - measure_ns_) / 1e9 : 0;
    }
    if (!stopping_ && no_more_ && busy_ == 0) {  // every chunk was touched: the run ends
      stopping_ = true;
      result_.seconds = measured_ ? static_cast<double>(now_ns() - measure_ns_) / 1e9 : 0;
      // relaxed: the main thread only counts; the join orders everything else.
      s_.exhausted.fetch_add(1, std::memory_order_relaxed);
    }
    if (stopping_ && !writes_done && busy_ == 0 && !flush_inflight_) {
      writes_done = true;
      // acq_rel: the last reactor out sees every other reactor's end_write before it
      // asks the bitmap to close; the others' loads below pair with it.
      if (s_.writing.fetch_sub(1, std::memory_order_acq_rel) == 1 && s_.bitmap != nullptr) {
        closer = true;
        s_.bitmap->begin_close();
      }
    }
    if (writes_done && daemon_left_ == 0) {
      if (s_.bitmap == nullptr) break;
      // acquire: pairs with the fetch_sub above (the close was asked for).
      if (s_.writing.load(std::memory_order_acquire) == 0) {
        std::error_code ec;
        const auto state = s_.bitmap->close_state(ec);
        if (state == ReactorBitmap::CloseState::kClosed && meta_inflight_ == 0) break;
        if (state == ReactorBitmap::CloseState::kOpen && closer && ec == Errc::busy)
          s_.bitmap->begin_close();  // a write outlived the drain allowance: ask again
      }
    }
    arm_event();
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts{0, 1'000'000};  // the next step of the cleaning pass
    if (s_.busy_poll)
      io_uring_submit(&ring_);
    else
      io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    done.clear();
    unsigned head = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      done.emplace_back(cqe->user_data, cqe->res);
    }
    io_uring_cq_advance(&ring_, static_cast<unsigned>(done.size()));
    for (const auto& [data, res] : done) handle(data, res);
  }
  if (!stopping_ && measured_) result_.seconds = static_cast<double>(now_ns() - measure_ns_) / 1e9;
  queue_.reset();
}

}  // namespace

void run_reactor(Shared& shared, unsigned index, ReactorResult& result) {
  if (shared.mode == Mode::kBlocking) {  // blocking.h runs it, on threads of its own
    std::fprintf(stderr, "llbitmap-uring-mirror: run_reactor: --mode blocking has no reactors\n");
    std::abort();
  }
  Reactor r(shared, index, result);
  r.run();
}

}  // namespace llbitmap::uring_mirror
