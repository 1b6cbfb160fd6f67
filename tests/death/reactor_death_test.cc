// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Misuse of the reactor driver (include/llbitmap/reactor.h) aborts with a message that
// names the object and the broken rule (docs/design.md#conventions): a completion for
// an IO that is not outstanding, a second completion, an after_writes sync completed
// before its writes, destruction with IO outstanding.
#include <llbitmap/bitmap.h>
#include <llbitmap/reactor.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <system_error>
#include <vector>

namespace llbitmap {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<ReactorBitmap> open_new(ReactorOptions ro = {}) {
  BitmapOptions o;
  o.device_bytes = 64ull << 20;
  o.chunk_bytes = 64 << 10;
  o.space_bytes = 16 << 10;
  o.block_bytes = 4096;
  std::error_code ec;
  const std::vector<std::byte> file = ReactorBitmap::format(o, ec);
  if (ec) return nullptr;
  return ReactorBitmap::open(file, ro, ec);
}

TEST(ReactorDeathTest, CompleteOfAnUnknownId) {
  EXPECT_DEATH(
      {
        auto bm = open_new();
        if (!bm) return;
        MetaIo io;
        const bool handed = bm->next_io(io);
        bm->complete(handed ? io.id + 1000003 : 12345, {});
      },
      "ReactorBitmap.*complete.*not outstanding");
}

TEST(ReactorDeathTest, SecondCompleteOfTheSameId) {
  EXPECT_DEATH(
      {
        auto bm = open_new();
        if (!bm) return;
        MetaIo io;
        if (!bm->next_io(io)) return;
        bm->complete(io.id, {});
        bm->complete(io.id, {});
      },
      "ReactorBitmap.*complete.*not outstanding");
}

TEST(ReactorDeathTest, DestroyWithIoOutstanding) {
  EXPECT_DEATH(
      {
        auto bm = open_new();
        if (!bm) return;
        MetaIo io;
        if (!bm->next_io(io)) return;
        bm.reset();
      },
      "ReactorBitmap.*outstanding");
}

TEST(ReactorDeathTest, AnAfterWritesSyncCompletedBeforeItsWrites) {
  EXPECT_DEATH(
      {
        ReactorOptions ro;
        ro.ordered_sync = true;
        auto bm = open_new(ro);
        if (!bm) return;
        std::vector<MetaIo> batch(64);
        const std::size_t n = bm->next_ios(batch);
        if (n < 2 || !batch[n - 1].after_writes) return;
        bm->complete(batch[n - 1].id, {});  // its writes are outstanding
      },
      "ReactorBitmap.*complete.*kSync while [0-9]+ kWrite.*outstanding");
}

// Performs every metadata IO the bitmap hands out (successfully) until it has none.
void drive(ReactorBitmap& bm) {
  MetaIo io;
  for (int i = 0; i < 100000 && bm.next_io(io); ++i) bm.complete(io.id, {});
}

void on_admit(ReactorWrite&, std::error_code) {}

TEST(ReactorDeathTest, DestroyWithAQueueAttached) {
  EXPECT_DEATH(
      {
        auto bm = open_new();
        if (!bm) return;
        drive(*bm);
        new ReactorQueue(*bm);  // leaked: still attached
        bm.reset();
      },
      "ReactorBitmap.*destroyed.*ReactorQueue");
}

TEST(ReactorDeathTest, DestroyWithAWriteInFlight) {
  EXPECT_DEATH(
      {
        auto bm = open_new();
        if (!bm) return;
        drive(*bm);
        {
          ReactorQueue q(*bm);
          ReactorWrite w(&on_admit);
          std::error_code ec;
          if (q.start_write(0, 4096, w, ec) == Admit::kPending) {
            drive(*bm);
            q.poll();
          }
        }
        drive(*bm);
        bm.reset();  // the write was admitted and never ended
      },
      "ReactorBitmap.*destroyed");
}

// The preconditions these rely on, outside a death test: open() hands out a request, and
// with ordered_sync its first round's writes and then its after_writes sync in one call.
TEST(ReactorDeathTest, OrderedOpenHandsOutItsFirstRoundInOneCall) {
  ReactorOptions ro;
  ro.ordered_sync = true;
  auto bm = open_new(ro);
  ASSERT_TRUE(bm);
  std::vector<MetaIo> batch(64);
  const std::size_t n = bm->next_ios(batch);
  ASSERT_GE(n, 2u);
  for (std::size_t i = 0; i + 1 < n; ++i) EXPECT_EQ(batch[i].kind, MetaIo::Kind::kWrite);
  EXPECT_EQ(batch[n - 1].kind, MetaIo::Kind::kSync);
  EXPECT_TRUE(batch[n - 1].after_writes);
  for (std::size_t i = 0; i < n; ++i) bm->complete(batch[i].id, {});  // in order: allowed
  for (int i = 0; i < 1000 && !bm->ready(); ++i) {
    const std::size_t k = bm->next_ios(batch);
    for (std::size_t j = 0; j < k; ++j) bm->complete(batch[j].id, {});
  }
  ASSERT_TRUE(bm->ready());
  bm->begin_close();
  std::error_code r;
  for (int i = 0; i < 1000000; ++i) {
    const std::size_t k = bm->next_ios(batch);
    for (std::size_t j = 0; j < k; ++j) bm->complete(batch[j].id, {});
    bm->step();
    if (bm->close_state(r) == ReactorBitmap::CloseState::kClosed && !bm->io_outstanding()) break;
  }
  EXPECT_EQ(bm->close_state(r), ReactorBitmap::CloseState::kClosed);
}

// The preconditions these rely on, outside a death test: open() hands out a request.
TEST(ReactorDeathTest, OpenHandsOutTheFirstRoundsWrite) {
  auto bm = open_new();
  ASSERT_TRUE(bm);
  MetaIo io;
  ASSERT_TRUE(bm->next_io(io));
  EXPECT_EQ(io.kind, MetaIo::Kind::kWrite);
  // Leave it in a state its destructor accepts: complete everything, close.
  std::vector<std::uint64_t> ids{io.id};
  bool closing = false;
  for (int i = 0; i < 1000000; ++i) {
    for (std::uint64_t id : ids) bm->complete(id, {});
    ids.clear();
    while (bm->next_io(io)) ids.push_back(io.id);
    std::error_code r;
    if (ids.empty() && bm->ready()) {
      if (!closing) bm->begin_close();
      closing = true;
      bm->step();
      if (bm->close_state(r) == ReactorBitmap::CloseState::kClosed && !bm->io_outstanding()) break;
    }
  }
}

}  // namespace
}  // namespace llbitmap
