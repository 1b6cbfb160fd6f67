// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The reactor driver's admission (reactor_core.h): a write or discard is admitted at once,
// parked until a round completes or a page reopens, or refused; ReactorQueue runs the
// parked ones' callbacks on its own thread.
#include <llbitmap/detail/check.h>
#include <llbitmap/reactor.h>

#include <algorithm>

#include "image_ops.h"
#include "page_barrier_fast.h"
#include "reactor_core.h"
#include "sync_point.h"
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace llbitmap {

namespace {
using ull = unsigned long long;

// Its address tells threads apart (ReactorQueue::owner_): one TLS address computation.
thread_local const char t_thread_tag = 0;
}  // namespace

// ------------------------------------------------------------------ ReactorWrite

ReactorWrite::~ReactorWrite() {
  LLBM_CHECK(!pending(), "ReactorWrite %p (offset %llu, length %llu): destroyed while pending",
             static_cast<void*>(this), static_cast<ull>(offset_), static_cast<ull>(length_));
}

bool ReactorCore::persisted(const ReactorWrite& w) const noexcept {
  // Every chunk of w durably covered (w holds their pages), whatever else of their blocks
  // is not yet durable: the rule of Bitmap::mark_and_persist. Otherwise a block is
  // covered once its durable change number reaches w's, or the block's own latest (which
  // is at least the one w's scan saw: change numbers only grow).
  const Geometry& geo = image_.geometry();
  const std::uint64_t first = geo.chunk_of(w.offset_);
  const std::uint64_t last = geo.chunk_of(w.offset_ + w.length_ - 1);
  if (image_ops::durably_covered(image_, first, last)) return true;
  for (std::uint64_t b = geo.block_of_chunk(first); b <= geo.block_of_chunk(last); ++b)
    if (image_.durable_seq(b) < std::min(w.seq_, image_.dirty_seq(b))) return false;
  return true;
}

bool ReactorCore::covered(ReactorWrite& w) {
  // Another admission may have changed the write's chunks since it marked them (a
  // discard of an overlapping range makes them Unwritten): such a write is marked again
  // and waits for that change to be durable, so it is never admitted over a chunk that is
  // not durably Dirty or NeedSync.
  const Geometry& geo = image_.geometry();
  const std::uint64_t first = geo.chunk_of(w.offset_);
  const std::uint64_t last = geo.chunk_of(w.offset_ + w.length_ - 1);
  for (std::uint64_t c = first; c <= last; ++c) {
    if (image_ops::startwrite_keeps(image_.load_byte(geo.chunk_pos(c)))) continue;
    std::vector<Target> targets;
    change_range(first, last, Action::kStartwrite, context(), &targets);
    for (const Target& t : targets) w.seq_ = std::max(w.seq_, t.seq);
    return false;
  }
  return persisted(w);
}

void ReactorCore::make_due(ReactorWrite& w) noexcept {
  ReactorQueue& q = *w.queue_;
  // relaxed: sequenced before the release CAS that publishes w, so the owner, which sees
  // w only through that CAS (acquire), sees this count too and its destructor waits.
  q.pushers_.fetch_add(1, std::memory_order_relaxed);
  // relaxed load, release CAS: pairs with poll()'s acquire exchange, which then sees
  // everything written to w before the push (its result, its flags).
  w.next_ = q.ready_.load(std::memory_order_relaxed);
  while (!q.ready_.compare_exchange_weak(w.next_, &w, std::memory_order_release,
                                         std::memory_order_relaxed)) {
  }
  // Wake::kOtherThreads: a push on the owner's own thread is seen by the poll() it makes
  // before it sleeps; the flag is left alone, so a push from another thread still signals.
  // acq_rel: the first push after poll() cleared the flag signals; poll() clears it
  // before it takes the stack, so a push it misses signals again.
  if ((q.wake_ == ReactorQueue::Wake::kAlways || q.owner_ != &t_thread_tag) &&
      !q.signalled_.exchange(true, std::memory_order_acq_rel) && q.efd_ >= 0) {
    const std::uint64_t one = 1;
    // A full counter (EAGAIN) is already readable; nothing else can fail here.
    ssize_t ignored = ::write(q.efd_, &one, sizeof one);
    (void)ignored;
  }
  // release: pairs with the destructor's acquire load; q is not touched after this.
  q.pushers_.fetch_sub(1, std::memory_order_release);
}

template <class Blocked>
bool ReactorCore::park_retry(ReactorWrite& w, Blocked still_blocked) {
  detail::SpinLockGuard lock(wait_lock_);
  // The releaser unblocks first and then takes wait_lock_ to release retry_: a block
  // seen here under the lock is released by it later.
  if (!still_blocked()) return false;
  // relaxed: w and the counter are the owner thread's until poll() runs w.
  w.pending_.store(true, std::memory_order_relaxed);
  w.queue_->pending_.fetch_add(1, std::memory_order_relaxed);
  w.next_ = retry_;
  retry_ = &w;
  return true;
}

void ReactorCore::release_retries() noexcept {
  ReactorWrite* list = nullptr;
  {
    detail::SpinLockGuard lock(wait_lock_);
    list = retry_;
    retry_ = nullptr;
  }
  while (list != nullptr) {
    ReactorWrite* next = list->next_;
    list->retry_ = true;
    make_due(*list);
    list = next;
  }
}

void ReactorCore::settle_persist_waiters() noexcept {
  // acquire: pairs with fail()'s release store of kFailing.
  const bool failing = (refused_.load(std::memory_order_acquire) & kFailing) != 0;
  const Geometry& geo = image_.geometry();
  ReactorWrite* due = nullptr;
  {
    detail::SpinLockGuard lock(wait_lock_);
    ReactorWrite** link = &persist_waiters_;
    while (*link != nullptr) {
      ReactorWrite* w = *link;
      if (!failing && !covered(*w)) {
        link = &w->next_;
        continue;
      }
      *link = w->next_;
      if (failing) {
        release_pages(geo.page_of_chunk(geo.chunk_of(w->offset_)),
                      geo.page_of_chunk(geo.chunk_of(w->offset_ + w->length_ - 1)));
        w->result_ = make_error_code(Errc::bitmap_failed);
      } else {
        w->result_.clear();
      }
      w->next_ = due;
      due = w;
    }
  }
  while (due != nullptr) {
    ReactorWrite* next = due->next_;
    make_due(*due);
    due = next;
  }
}

// ------------------------------------------------------------------ admission

Admit ReactorCore::admit(ReactorQueue& q, std::uint64_t offset, std::uint64_t length, bool discard,
                         ReactorWrite& w, std::error_code& ec) {
  LLBM_CHECK(!w.pending(), "ReactorQueue %p: ReactorWrite %p submitted while still pending",
             static_cast<void*>(&q), static_cast<void*>(&w));
  ec.clear();
  if (!in_device(offset, length)) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return Admit::kRefused;
  }
  w.offset_ = offset;
  w.length_ = length;
  w.discard_ = discard;
  w.queue_ = &q;
  w.retry_ = false;
  const Geometry& geo = image_.geometry();
  std::uint64_t first = 0, last = 0;
  if (discard) {
    image_ops::discard_chunks(geo, offset, length, first, last);
  } else {
    first = geo.chunk_of(offset);
    last = geo.chunk_of(offset + length - 1);
  }
  for (;;) {
    // acquire: pairs with the release stores of fail(), end_pass() (closed) and
    // finish_round() (open done), so their effects are seen.
    const std::uint8_t refused = refused_.load(std::memory_order_acquire);
    if ((refused & (kFailing | kClosed)) != 0) {
      ec = make_error_code((refused & kClosed) != 0 ? Errc::bitmap_closed : Errc::bitmap_failed);
      return Admit::kRefused;
    }
    if (first > last) return Admit::kReady;  // a discard that covers no whole chunk
    if ((refused & kOpening) != 0) {
      // acquire: as above.
      if (park_retry(w,
                     [this] { return (refused_.load(std::memory_order_acquire) & kOpening) != 0; }))
        return Admit::kPending;
      continue;
    }
    const std::uint64_t lo = geo.page_of_chunk(first);
    const std::uint64_t hi = geo.page_of_chunk(last);
    // The fast path: one chunk, already dirty-like and durably covered (ChunkImage).
    if (!discard && first == last && detail::PageBarrierFast::try_raise(*pages_[lo])) {
      // relaxed refused_: as Bitmap::start_write (the raise orders a close before it).
      if (image_ops::startwrite_keeps(image_.load_byte(geo.chunk_pos(first))) &&
          refused_.load(std::memory_order_relaxed) == 0 &&
          image_.durably_covered(geo.chunk_pos(first)))
        return Admit::kReady;
    } else {
      std::uint64_t p = lo;
      for (; p <= hi; ++p)
        if (!pages_[p]->try_raise()) break;
      if (p <= hi) {
        // A page is being cleaned (or closed): hold nothing and wait for it to reopen.
        if (p > lo) release_pages(lo, p - 1);
        PageBarrier& busy = *pages_[p];
        if (park_retry(w, [&busy] { return busy.is_suspended(); })) {
          pending_page_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics only
          return Admit::kPending;
        }
        continue;
      }
    }
    LLBM_SYNC_POINT("reactor:after_raise");
    // The pages are held. acquire: as above; a close or failure since the entry check
    // must not admit (a closed bitmap resumes its pages after setting kClosed).
    if (const std::uint8_t r = refused_.load(std::memory_order_acquire);
        (r & (kFailing | kClosed)) != 0) {
      release_pages(lo, hi);
      ec = make_error_code((r & kClosed) != 0 ? Errc::bitmap_closed : Errc::bitmap_failed);
      return Admit::kRefused;
    }
    if (discard) {
      // Unwritten is persisted lazily (as upstream): a stale Dirty or Clean is safe.
      change_range(first, last, Action::kDiscard, context(), nullptr);
      return Admit::kReady;
    }
    const TransitionContext ctx = context();
    if (ctx.write_error) {
      release_pages(lo, hi);
      ec = make_error_code(Errc::bitmap_failed);
      return Admit::kRefused;
    }
    std::vector<Target> targets;
    change_range(first, last, Action::kStartwrite, ctx, &targets);
    LLBM_SYNC_POINT("reactor:after_mark");
#ifdef LLBM_SYNC_POINTS
    // relaxed: a test switch, set before the test's threads start.
    if (detail::test_hooks().admit_before_durable.load(std::memory_order_relaxed))
      return Admit::kReady;
#endif
    std::uint64_t seq = 0;
    for (const Target& t : targets) seq = std::max(seq, t.seq);
    w.seq_ = seq;
    {
      detail::SpinLockGuard lock(wait_lock_);
      // Checked under wait_lock_: a round that completed (or failed) before this settles
      // nothing of w, so w must see its result here. acquire: as above.
      if ((refused_.load(std::memory_order_acquire) & kFailing) == 0) {
        if (covered(w)) return Admit::kReady;
        // relaxed: the owner's own fields until poll() runs w (see park_retry).
        w.pending_.store(true, std::memory_order_relaxed);
        q.pending_.fetch_add(1, std::memory_order_relaxed);
        w.next_ = persist_waiters_;
        persist_waiters_ = &w;
        pending_persist_.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistics only
        return Admit::kPending;
      }
    }
    release_pages(lo, hi);
    ec = make_error_code(Errc::bitmap_failed);
    return Admit::kRefused;
  }
}

void ReactorBitmap::end_write(std::uint64_t offset, std::uint64_t length) {
  ReactorCore& s = core_of(*this);
  LLBM_CHECK(s.in_device(offset, length),
             "ReactorBitmap %p: end_write(%llu, %llu) of a range start_write would refuse",
             static_cast<void*>(this), static_cast<ull>(offset), static_cast<ull>(length));
  const Geometry& geo = s.image_.geometry();
  s.release_pages(geo.page_of_chunk(geo.chunk_of(offset)),
                  geo.page_of_chunk(geo.chunk_of(offset + length - 1)));
}

void ReactorBitmap::end_discard(std::uint64_t offset, std::uint64_t length) {
  ReactorCore& s = core_of(*this);
  LLBM_CHECK(s.in_device(offset, length),
             "ReactorBitmap %p: end_discard(%llu, %llu) of a range start_discard would refuse",
             static_cast<void*>(this), static_cast<ull>(offset), static_cast<ull>(length));
  const Geometry& geo = s.image_.geometry();
  std::uint64_t first = 0, last = 0;
  image_ops::discard_chunks(geo, offset, length, first, last);
  if (first > last) return;
  s.release_pages(geo.page_of_chunk(first), geo.page_of_chunk(last));
}

// ------------------------------------------------------------------ queue

ReactorQueue::ReactorQueue(ReactorBitmap& bitmap, Wake wake)
    : bitmap_(bitmap),
      efd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      wake_(wake),
      owner_(&t_thread_tag) {
  ReactorCore& s = core_of(bitmap_);
  // relaxed: a count for the destructor's check.
  s.queues_.fetch_add(1, std::memory_order_relaxed);
  // Prepare the calling thread: its first entry into a page registers it with liburcu
  // and gives it a counter for that page, each once, under the library's registry lock.
  // Doing it here for every page means the reactor's loop never takes that lock later.
  // A page being cleaned just now is skipped (its counter comes at its first write).
  for (auto& p : s.pages_)
    if (p->try_raise()) detail::PageBarrierFast::release(*p);
}

ReactorQueue::~ReactorQueue() {
  // relaxed: the owner's own count (see park_retry).
  LLBM_CHECK(pending_.load(std::memory_order_relaxed) == 0,
             "ReactorQueue %p: destroyed with %zu writes pending (poll until their callbacks ran)",
             static_cast<void*>(this), pending_.load(std::memory_order_relaxed));
  // A thread that made this queue's last write due may still be signalling it.
  // acquire: pairs with make_due's release decrement. Spins: a push is a few instructions
  // and one eventfd write long.
  while (pushers_.load(std::memory_order_acquire) != 0) sched_yield();
  if (efd_ >= 0) ::close(efd_);
  core_of(bitmap_).queues_.fetch_sub(1, std::memory_order_relaxed);
}

Admit ReactorQueue::start_write(std::uint64_t offset, std::uint64_t length, ReactorWrite& w,
                                std::error_code& ec) {
  return core_of(bitmap_).admit(*this, offset, length, false, w, ec);
}

Admit ReactorQueue::start_discard(std::uint64_t offset, std::uint64_t length, ReactorWrite& w,
                                  std::error_code& ec) {
  return core_of(bitmap_).admit(*this, offset, length, true, w, ec);
}

std::size_t ReactorQueue::pending() const noexcept {
  return pending_.load(std::memory_order_relaxed);  // relaxed: a snapshot
}

std::size_t ReactorQueue::poll() {
  // acquire: pairs with make_due's acq_rel exchange. Cleared before the stack is taken,
  // so a push after the take signals again.
  if (signalled_.exchange(false, std::memory_order_acquire) && efd_ >= 0) {
    std::uint64_t v = 0;
    ssize_t ignored = ::read(efd_, &v, sizeof v);  // EAGAIN: already drained
    (void)ignored;
  }
  // acquire: pairs with make_due's release CAS.
  ReactorWrite* list = ready_.exchange(nullptr, std::memory_order_acquire);
  ReactorWrite* fifo = nullptr;  // oldest first
  while (list != nullptr) {
    ReactorWrite* next = list->next_;
    list->next_ = fifo;
    fifo = list;
    list = next;
  }
  std::size_t ran = 0;
  while (fifo != nullptr) {
    ReactorWrite& w = *fifo;
    fifo = w.next_;
    // relaxed: the owner's fields (see park_retry); the acquire above ordered the pusher.
    w.pending_.store(false, std::memory_order_relaxed);
    pending_.fetch_sub(1, std::memory_order_relaxed);
    std::error_code ec;
    if (w.retry_) {
      w.retry_ = false;
      const Admit a = core_of(bitmap_).admit(*this, w.offset_, w.length_, w.discard_, w, ec);
      if (a == Admit::kPending) continue;
    } else {
      ec = w.result_;
    }
    ++ran;
    w.on_admit_(w, ec);  // may destroy or reuse w
  }
  return ran;
}

}  // namespace llbitmap
