// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The reactor driver (reactor.h, reactor_core.h; docs/design.md#the-reactor-driver):
// open and format, the helpers its parts share, the resync side and the queries. The
// admission is in reactor_admission.cc, the metadata IO in reactor_io.cc, the cleaning
// pass in reactor_pass.cc.
#include <llbitmap/detail/check.h>
#include <llbitmap/reactor.h>

#include <algorithm>
#include <vector>

#include "image_ops.h"
#include "page_barrier_fast.h"
#include "reactor_core.h"
#include <sched.h>

namespace llbitmap {

namespace {

using ull = unsigned long long;

}  // namespace

// ------------------------------------------------------------------ open, format

std::vector<std::byte> ReactorBitmap::format(const BitmapOptions& options, std::error_code& ec) {
  ec.clear();
  return fresh_contents(options, ec);
}

std::unique_ptr<ReactorBitmap> ReactorBitmap::open(std::span<const std::byte> file,
                                                   const ReactorOptions& options,
                                                   std::error_code& ec) {
  ec.clear();
  const auto sb = Superblock::decode(
      file.first(std::min<std::size_t>(file.size(), kSuperblockBytes)), ec, file.size());
  if (!sb) return nullptr;
  if (!identity_matches(*sb, options.device_uuid)) {
    ec = make_error_code(Errc::foreign_bitmap);
    return nullptr;
  }
  const Geometry& g = sb->geometry;
  std::vector<std::byte> image(file.begin(),
                               file.begin() + static_cast<std::ptrdiff_t>(g.image_bytes()));
  const auto table = file.subspan(g.checksum_table_offset(), g.checksum_table_bytes());
  return std::make_unique<ReactorCore>(
      *sb, recover(*sb, std::move(image), table, options.min_events), options);
}

ReactorBitmap::~ReactorBitmap() = default;

ReactorCore::ReactorCore(const Superblock& sb, Recovered recovered, const ReactorOptions& opt)
    : clock_(opt.clock != nullptr ? opt.clock : &Clock::system()),
      parity_(opt.parity),
      data_flush_(opt.data_flush),
      ordered_sync_(opt.ordered_sync),
      pipelined_(opt.pipelined_rounds),
      invalid_bytes_(recovered.invalid_bytes),
      bad_blocks_(recovered.bad_blocks),
      out_of_date_(recovered.out_of_date),
      min_events_(opt.min_events),
      device_uuid_(to_uuid(opt.device_uuid)),
      sleep_ms_(sb.daemon_sleep.count()),
      pages_(make_pages(sb.geometry.pages(), *clock_, sb.barrier_idle)),
      image_(sb, recovered.image),
      // Every block is queued: the first round makes the recovered states durable.
      core_(image_, std::move(recovered.crc)) {
  // relaxed: construction; the bitmap is published to other threads by the caller.
  if (image_.dirty_at_open()) armed_.store(true, std::memory_order_relaxed);
  detail::SpinLockGuard lock(step_lock_);
  last_pass_end_ = clock_->now();
  timeout_logged_.assign(pages_.size(), false);
}

ReactorCore::~ReactorCore() {
  // relaxed: the caller guarantees no other call runs; these are diagnostics.
  LLBM_CHECK(outstanding_.load(std::memory_order_relaxed) == 0,
             "ReactorBitmap %p: destroyed with %zu metadata IOs outstanding (complete them first)",
             static_cast<void*>(this), outstanding_.load(std::memory_order_relaxed));
  LLBM_CHECK(queues_.load(std::memory_order_relaxed) == 0,
             "ReactorBitmap %p: destroyed with %u ReactorQueues attached (destroy them first)",
             static_cast<void*>(this), queues_.load(std::memory_order_relaxed));
  detail::SpinLockGuard lock(step_lock_);
  LLBM_CHECK(phase_ == Phase::kIdle,
             "ReactorBitmap %p: destroyed in the middle of a cleaning pass (step until the "
             "close finished)",
             static_cast<void*>(this));
  // acquire: pairs with end_pass's release store of kClosed. A closed bitmap drained every
  // page and admits nothing since; an open one is checked for a write in flight: every
  // page is suspended without an allowance (one grace period, waited for here: teardown,
  // not the reactor's loop), and a page that does not drain has a holder.
  if ((refused_.load(std::memory_order_acquire) & kClosed) != 0) return;
  std::vector<PageBarrier*> all;
  for (auto& p : pages_) all.push_back(p.get());
  PageBarrier::begin_suspend_many(all);
  for (std::size_t i = 0; i < all.size(); ++i) {
    PageBarrier::SuspendPoll st = PageBarrier::SuspendPoll::kConfirming;
    while ((st = all[i]->poll_suspend(clock_->now(), std::chrono::milliseconds(0))) ==
           PageBarrier::SuspendPoll::kConfirming)
      sched_yield();
    LLBM_CHECK(st == PageBarrier::SuspendPoll::kSuspended,
               "ReactorBitmap %p: destroyed with a write in flight on page %zu (call end_write "
               "first)",
               static_cast<void*>(this), i);
  }
}

// ------------------------------------------------------------------ helpers

TransitionContext ReactorCore::context() const noexcept {
  // relaxed: see BitmapImpl::context().
  return transition_context(degraded_.load(std::memory_order_relaxed), parity_,
                            (refused_.load(std::memory_order_relaxed) & kFailing) != 0);
}

std::uint64_t ReactorCore::change_chunk(std::uint64_t chunk, Action action,
                                        const TransitionContext& ctx) {
  const ChunkImage::Change change = image_.change_chunk(chunk, action, ctx);
  if (change.seq == 0) return 0;
  // seq_cst: with the seq_cst increment of the page's Dirty count in change_chunk, pairs
  // with the pass's seq_cst clear of armed_ and its seq_cst loads of the counts (see
  // end_pass), as Daemon::note_dirty does.
  if (change.dirtied && !armed_.load(std::memory_order_seq_cst))
    armed_.store(true, std::memory_order_seq_cst);
  core_.enqueue(image_.geometry().block_of_chunk(chunk));
  return change.seq;
}

std::uint64_t ReactorCore::change_range(std::uint64_t first, std::uint64_t last, Action action,
                                        const TransitionContext& ctx,
                                        std::vector<Target>* targets) {
  return image_ops::change_range(image_, first, last, action, ctx, targets,
                                 [this](std::uint64_t c, Action a, const TransitionContext& x) {
                                   return change_chunk(c, a, x);
                                 });
}

void ReactorCore::release_pages(std::uint64_t first_page, std::uint64_t last_page) noexcept {
  for (std::uint64_t p = first_page; p <= last_page; ++p)
    detail::PageBarrierFast::release(*pages_[p]);
}

// ------------------------------------------------------------------ resync side

bool ReactorBitmap::start_sync(std::uint64_t offset, SyncKind kind) {
  ReactorCore& s = core_of(*this);
  const Geometry& geo = s.image_.geometry();
  LLBM_CHECK(offset < geo.device_bytes(), "ReactorBitmap %p: start_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<ull>(offset));
  return image_ops::start_sync(
      s.image_, geo.chunk_of(offset), kind, s.context(),
      [&s](std::uint64_t c, Action a, const TransitionContext& x) {
        return s.change_chunk(c, a, x);
      },
      // acquire: pairs with fail()'s release store.
      [&s] { return (s.refused_.load(std::memory_order_acquire) & ReactorCore::kFailing) != 0; });
}

void ReactorBitmap::end_sync(std::uint64_t offset) {
  ReactorCore& s = core_of(*this);
  const Geometry& geo = s.image_.geometry();
  LLBM_CHECK(offset < geo.device_bytes(), "ReactorBitmap %p: end_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<ull>(offset));
  const std::uint64_t c = geo.chunk_of(offset);
  if (s.change_chunk(c, Action::kEndsync, s.context()) != 0)
    s.pages_[geo.page_of_chunk(c)]->expire_now();  // let the cleaning pass take it
}

void ReactorBitmap::abort_sync(std::uint64_t offset) {
  ReactorCore& s = core_of(*this);
  const Geometry& geo = s.image_.geometry();
  LLBM_CHECK(offset < geo.device_bytes(), "ReactorBitmap %p: abort_sync(%llu) past the device",
             static_cast<void*>(this), static_cast<ull>(offset));
  s.change_chunk(geo.chunk_of(offset), Action::kAbortsync, s.context());
}

void ReactorBitmap::close_sync() {
  ReactorCore& s = core_of(*this);
  s.change_range(0, s.image_.geometry().chunks() - 1, Action::kEndsync, s.context(), nullptr);
  for (auto& p : s.pages_) p->expire_now();
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> ReactorBitmap::needs_sync() const {
  return image_ops::runs_where(core_of(*this).image_,
                               [](ChunkState st) { return llbitmap::needs_sync(st); });
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> ReactorBitmap::needs_recovery() const {
  return image_ops::runs_where(core_of(*this).image_,
                               [](ChunkState st) { return is_dirty_like(st); });
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> ReactorBitmap::needs_rebuild() const {
  return image_ops::runs_where(core_of(*this).image_,
                               [](ChunkState st) { return st != ChunkState::kUnwritten; });
}

void ReactorBitmap::set_degraded(bool degraded) {
  core_of(*this).degraded_.store(degraded, std::memory_order_relaxed);  // relaxed: a flag
}

bool ReactorBitmap::degraded() const noexcept {
  return core_of(*this).degraded_.load(std::memory_order_relaxed);  // relaxed: a flag
}

// ------------------------------------------------------------------ queries, knobs

StateCounts ReactorBitmap::counts() const {
  return image_ops::count_states(core_of(*this).image_);
}
std::uint64_t ReactorBitmap::chunk_bytes() const noexcept {
  return core_of(*this).image_.geometry().chunk_bytes();
}
std::uint64_t ReactorBitmap::chunks() const noexcept {
  return core_of(*this).image_.geometry().chunks();
}
std::uint64_t ReactorBitmap::device_bytes() const noexcept {
  return core_of(*this).image_.geometry().device_bytes();
}
const Geometry& ReactorBitmap::geometry() const noexcept {
  return core_of(*this).image_.geometry();
}
ChunkState ReactorBitmap::state(std::uint64_t chunk) const noexcept {
  const ChunkImage& image = core_of(*this).image_;
  return decode_state(image.load_byte(image.geometry().chunk_pos(chunk)));
}
bool ReactorBitmap::failed() const noexcept {
  return core_of(*this).failure_final_.load(std::memory_order_acquire);  // see complete()
}
bool ReactorBitmap::ready() const noexcept {
  // acquire: pairs with finish_round's release (the open's states are durable).
  return (core_of(*this).refused_.load(std::memory_order_acquire) & ReactorCore::kOpening) == 0;
}
std::uint64_t ReactorBitmap::events() const {
  // The superblock's lock is taken to read it; nothing is changed.
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast)
  ChunkImage& image = const_cast<ReactorCore&>(core_of(*this)).image_;
  detail::SpinLockGuard lock(image.superblock_lock());
  return image.superblock().events;
}
bool ReactorBitmap::out_of_date() const noexcept {
  return core_of(*this).out_of_date_;
}

ReactorStats ReactorBitmap::stats() const noexcept {
  const ReactorCore& s = core_of(*this);
  constexpr auto kRelaxed = std::memory_order_relaxed;  // relaxed: statistics only
  return ReactorStats{s.rounds_.load(kRelaxed),
                      s.blocks_written_.load(kRelaxed),
                      s.pending_persist_.load(kRelaxed),
                      s.pending_page_.load(kRelaxed),
                      s.passes_.load(kRelaxed),
                      s.pages_cleaned_.load(kRelaxed),
                      s.suspend_timeouts_.load(kRelaxed),
                      s.data_flushes_.load(kRelaxed),
                      s.invalid_bytes_,
                      s.bad_blocks_};
}

std::error_code ReactorBitmap::set_daemon_sleep(std::chrono::milliseconds d) {
  if (!interval_in_range(d)) return std::make_error_code(std::errc::invalid_argument);
  ReactorCore& s = core_of(*this);
  // acquire: see admit().
  if ((s.refused_.load(std::memory_order_acquire) & ReactorCore::kClosed) != 0)
    return Errc::bitmap_closed;
  s.sleep_ms_.store(d.count(), std::memory_order_relaxed);  // relaxed: a setting
  {
    detail::SpinLockGuard lock(s.image_.superblock_lock());
    s.image_.superblock().daemon_sleep = d;
    s.image_.bump_block(s.image_.superblock_lock(), 0);
  }
  s.core_.enqueue(0);
  return {};
}

std::error_code ReactorBitmap::set_barrier_idle(std::chrono::milliseconds d) {
  if (!interval_in_range(d)) return std::make_error_code(std::errc::invalid_argument);
  ReactorCore& s = core_of(*this);
  // acquire: see admit().
  if ((s.refused_.load(std::memory_order_acquire) & ReactorCore::kClosed) != 0)
    return Errc::bitmap_closed;
  for (auto& p : s.pages_) p->set_barrier_idle(d);
  {
    detail::SpinLockGuard lock(s.image_.superblock_lock());
    s.image_.superblock().barrier_idle = d;
    s.image_.bump_block(s.image_.superblock_lock(), 0);
  }
  s.core_.enqueue(0);
  return {};
}

std::chrono::milliseconds ReactorBitmap::daemon_sleep() const noexcept {
  return std::chrono::milliseconds(core_of(*this).sleep_ms_.load(std::memory_order_relaxed));
}

std::chrono::milliseconds ReactorBitmap::barrier_idle() const noexcept {
  return core_of(*this).pages_.front()->barrier_idle();
}

}  // namespace llbitmap
