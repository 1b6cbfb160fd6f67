// SPDX-License-Identifier: LGPL-2.1-or-later
//
// FaultStorage: durable vs volatile images, k-th failures of each kind, fsyncgate
// semantics, short writes, the trace, the hooks and crash images.
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/testing/fault_storage.h>

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "start_gate.h"

namespace llbitmap {
namespace {

using Kind = TraceEvent::Kind;

std::vector<std::byte> bytes(std::size_t n, std::uint8_t v) {
  return std::vector<std::byte>(n, std::byte{v});
}

std::vector<std::byte> slice(const std::vector<std::byte>& v, std::size_t off, std::size_t n) {
  return {v.begin() + static_cast<std::ptrdiff_t>(off),
          v.begin() + static_cast<std::ptrdiff_t>(off + n)};
}

std::vector<std::byte> read_all(FaultStorage& s) {
  std::uint64_t size = 0;
  EXPECT_FALSE(s.size(size));
  std::vector<std::byte> out(size);
  EXPECT_FALSE(s.read(0, out));
  return out;
}

TEST(FaultStorage, StartsWithDurableEqualToVolatile) {
  FaultStorage s(bytes(8192, 7));
  EXPECT_EQ(s.durable_image(), bytes(8192, 7));
  EXPECT_EQ(s.volatile_image(), bytes(8192, 7));
  EXPECT_TRUE(s.unsynced_writes().empty());
  std::uint64_t size = 0;
  ASSERT_FALSE(s.size(size));
  EXPECT_EQ(size, 8192u);
}

TEST(FaultStorage, WritesAreVolatileUntilASuccessfulSync) {
  FaultStorage s(bytes(8192, 0));
  ASSERT_FALSE(s.write(100, bytes(50, 1)));
  ASSERT_FALSE(s.write(4096, bytes(512, 2)));
  ASSERT_FALSE(s.write(120, bytes(10, 3)));  // overlaps the first; issue order wins

  std::vector<std::byte> want = bytes(8192, 0);
  std::fill_n(want.begin() + 100, 50, std::byte{1});
  std::fill_n(want.begin() + 4096, 512, std::byte{2});
  std::fill_n(want.begin() + 120, 10, std::byte{3});
  EXPECT_EQ(s.volatile_image(), want);
  EXPECT_EQ(read_all(s), want);
  EXPECT_EQ(s.durable_image(), bytes(8192, 0));
  const auto pending = s.unsynced_writes();
  ASSERT_EQ(pending.size(), 3u);
  EXPECT_EQ(pending[0].offset, 100u);
  EXPECT_EQ(pending[1].offset, 4096u);
  EXPECT_EQ(pending[2].data, bytes(10, 3));

  ASSERT_FALSE(s.sync());
  EXPECT_EQ(s.durable_image(), want);
  EXPECT_TRUE(s.unsynced_writes().empty());
  const FaultCounters c = s.counters();
  EXPECT_EQ(c.writes, 3u);
  EXPECT_EQ(c.syncs, 1u);
  EXPECT_EQ(c.reads, 1u);
  EXPECT_EQ(c.failed_writes + c.failed_syncs + c.failed_reads, 0u);
}

TEST(FaultStorage, ReadPastTheEndAndWritePastTheEnd) {
  FaultStorage s(bytes(100, 1));
  std::vector<std::byte> buf(10);
  EXPECT_EQ(s.read(95, buf), Errc::short_io);
  EXPECT_EQ(s.read(1000, buf), Errc::short_io);
  ASSERT_FALSE(s.write(200, bytes(10, 2)));  // leaves a hole of zeros
  std::uint64_t size = 0;
  ASSERT_FALSE(s.size(size));
  EXPECT_EQ(size, 210u);
  EXPECT_EQ(slice(s.volatile_image(), 100, 100), bytes(100, 0));
  EXPECT_EQ(s.durable_image().size(), 100u);
  ASSERT_FALSE(s.sync());
  EXPECT_EQ(s.durable_image(), s.volatile_image());
}

TEST(FaultStorage, KthWriteFailsCountingFromNow) {
  FaultStorage s(bytes(4096, 0));
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(s.write(0, bytes(1, 9)));
  s.fail_write(2, std::make_error_code(std::errc::no_space_on_device));
  EXPECT_FALSE(s.write(0, bytes(8, 1)));
  EXPECT_EQ(s.write(8, bytes(8, 2)), std::errc::no_space_on_device);
  EXPECT_FALSE(s.write(16, bytes(8, 3)));
  // The failed write changed nothing, anywhere.
  EXPECT_EQ(slice(s.volatile_image(), 8, 8), bytes(8, 0));
  const auto pending = s.unsynced_writes();
  ASSERT_EQ(pending.size(), 7u);
  EXPECT_EQ(pending.back().offset, 16u);
  EXPECT_EQ(s.counters().failed_writes, 1u);
}

TEST(FaultStorage, KthReadFailsAndPoisonsTheBuffer) {
  FaultStorage s(bytes(4096, 3));
  s.fail_read(2);
  std::vector<std::byte> buf(16, std::byte{0});
  EXPECT_FALSE(s.read(0, buf));
  EXPECT_EQ(buf, bytes(16, 3));
  EXPECT_EQ(s.read(0, buf), std::errc::io_error);
  EXPECT_EQ(buf, bytes(16, 0xA5));
  EXPECT_FALSE(s.read(0, buf));
  EXPECT_EQ(buf, bytes(16, 3));
  EXPECT_EQ(s.counters().failed_reads, 1u);
}

TEST(FaultStorage, RepeatedAndPermanentFaults) {
  FaultStorage s(bytes(4096, 0));
  s.fail_write(1, std::make_error_code(std::errc::io_error), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(s.write(0, bytes(1, 1)), std::errc::io_error) << i;
  EXPECT_FALSE(s.write(0, bytes(1, 1)));

  s.fail_sync(2, std::make_error_code(std::errc::io_error), FaultStorage::kForever);
  EXPECT_FALSE(s.sync());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.sync(), std::errc::io_error) << i;
  s.clear_faults();
  EXPECT_FALSE(s.sync());

  // Two faults on the same call: the one armed first wins.
  s.fail_read(1, std::make_error_code(std::errc::io_error));
  s.fail_read(1, std::make_error_code(std::errc::no_space_on_device));
  std::vector<std::byte> buf(1);
  EXPECT_EQ(s.read(0, buf), std::errc::io_error);
  EXPECT_FALSE(s.read(0, buf));
}

TEST(FaultStorage, FailedSyncDropsTheUnsyncedWritesForever) {
  FaultStorage s(bytes(4096, 0));
  ASSERT_FALSE(s.write(0, bytes(100, 1)));    // A
  ASSERT_FALSE(s.write(200, bytes(100, 2)));  // B
  s.fail_sync(1);
  EXPECT_EQ(s.sync(), std::errc::io_error);
  // Reads still see A and B; the disk never will.
  EXPECT_EQ(slice(read_all(s), 0, 100), bytes(100, 1));
  EXPECT_EQ(slice(read_all(s), 200, 100), bytes(100, 2));
  EXPECT_EQ(s.durable_image(), bytes(4096, 0));
  EXPECT_TRUE(s.unsynced_writes().empty());
  EXPECT_EQ(s.counters().dropped_writes, 2u);
  EXPECT_EQ(s.counters().failed_syncs, 1u);

  // A later successful sync makes only what was written after the failure durable.
  ASSERT_FALSE(s.write(1000, bytes(10, 3)));  // C
  ASSERT_FALSE(s.sync());
  const auto durable = s.durable_image();
  EXPECT_EQ(slice(durable, 0, 100), bytes(100, 0));
  EXPECT_EQ(slice(durable, 200, 100), bytes(100, 0));
  EXPECT_EQ(slice(durable, 1000, 10), bytes(10, 3));
  // And an empty sync afterwards brings nothing back either.
  ASSERT_FALSE(s.sync());
  EXPECT_EQ(s.durable_image(), durable);
}

TEST(FaultStorage, ShortWriteLandsAPrefixAndFails) {
  FaultStorage s(bytes(4096, 0));
  s.short_write(1, 100);
  EXPECT_EQ(s.write(512, bytes(512, 4)), std::errc::no_space_on_device);
  const auto v = s.volatile_image();
  EXPECT_EQ(slice(v, 512, 100), bytes(100, 4));
  EXPECT_EQ(slice(v, 612, 412), bytes(412, 0));
  const auto pending = s.unsynced_writes();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].offset, 512u);
  EXPECT_EQ(pending[0].data, bytes(100, 4));
  const auto trace = s.trace();
  ASSERT_EQ(trace.size(), 1u);
  EXPECT_EQ(trace[0].landed, 100u);
  EXPECT_EQ(trace[0].data.size(), 512u);
  EXPECT_EQ(trace[0].result, std::errc::no_space_on_device);
  // The landed prefix is an ordinary unsynced write: a sync makes it durable.
  ASSERT_FALSE(s.sync());
  EXPECT_EQ(slice(s.durable_image(), 512, 100), bytes(100, 4));
  EXPECT_EQ(slice(s.durable_image(), 612, 10), bytes(10, 0));

  // A short write larger than the data lands all of it and still reports the error.
  s.short_write(1, 1000, std::make_error_code(std::errc::io_error));
  EXPECT_EQ(s.write(0, bytes(10, 5)), std::errc::io_error);
  EXPECT_EQ(slice(s.volatile_image(), 0, 10), bytes(10, 5));
}

TEST(FaultStorage, TraceRecordsWritesAndSyncsInOrder) {
  FaultStorage s(bytes(1024, 0));
  ASSERT_FALSE(s.write(0, bytes(4, 1)));
  ASSERT_FALSE(s.write(8, bytes(4, 2)));
  ASSERT_FALSE(s.sync());
  s.fail_write(1);
  EXPECT_TRUE(s.write(16, bytes(4, 3)));
  s.fail_sync(1);
  EXPECT_TRUE(s.sync());
  std::vector<std::byte> buf(4);
  ASSERT_FALSE(s.read(0, buf));  // reads are not traced

  const auto t = s.trace();
  ASSERT_EQ(t.size(), 5u);
  for (std::size_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i].seq, i + 1);
  EXPECT_EQ(t[0].kind, Kind::kWrite);
  EXPECT_EQ(t[0].offset, 0u);
  EXPECT_EQ(t[0].data, bytes(4, 1));
  EXPECT_EQ(t[0].landed, 4u);
  EXPECT_FALSE(t[0].result);
  EXPECT_EQ(t[2].kind, Kind::kSync);
  EXPECT_EQ(t[2].writes, 2u);
  EXPECT_FALSE(t[2].result);
  EXPECT_EQ(t[3].kind, Kind::kWrite);
  EXPECT_EQ(t[3].landed, 0u);
  EXPECT_EQ(t[3].result, std::errc::io_error);
  EXPECT_EQ(t[4].kind, Kind::kSync);
  EXPECT_EQ(t[4].writes, 0u);
  EXPECT_EQ(t[4].result, std::errc::io_error);
  // Pending writes carry their trace sequence number.
  ASSERT_FALSE(s.write(0, bytes(1, 1)));
  EXPECT_EQ(s.unsynced_writes().at(0).seq, 6u);
  s.clear_trace();
  EXPECT_TRUE(s.trace().empty());
}

TEST(FaultStorage, SyncHookSeesTheDurableImageBeforeTheChangeAndThePendingWrites) {
  FaultStorage s(bytes(1024, 0));
  int calls = 0;
  s.set_sync_hook([&](const SyncEvent& ev) {
    ++calls;
    EXPECT_EQ(ev.durable_image[10], std::byte{0});  // not yet applied
    EXPECT_EQ(ev.volatile_image[10], std::byte{5});
    EXPECT_EQ(ev.pending.size(), 2u);
    EXPECT_EQ(ev.pending[0].offset, 10u);
    EXPECT_EQ(ev.pending[1].offset, 20u);
    EXPECT_FALSE(ev.result);
    EXPECT_EQ(ev.seq, 3u);
    return std::error_code{};
  });
  ASSERT_FALSE(s.write(10, bytes(1, 5)));
  ASSERT_FALSE(s.write(20, bytes(1, 6)));
  ASSERT_FALSE(s.sync());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(s.durable_image()[10], std::byte{5});

  // The hook sees an injected failure as the planned result.
  s.set_sync_hook([&](const SyncEvent& ev) {
    ++calls;
    EXPECT_EQ(ev.result, std::errc::io_error);
    return std::error_code{};
  });
  s.fail_sync(1);
  EXPECT_EQ(s.sync(), std::errc::io_error);
  EXPECT_EQ(calls, 2);
}

TEST(FaultStorage, HooksCanFailAnOperation) {
  FaultStorage s(bytes(1024, 0));
  // Fail the sync that would make byte 0 durable as 9: an oracle refusing a state.
  s.set_sync_hook([](const SyncEvent& ev) {
    for (const PendingWrite& w : ev.pending)
      if (w.offset == 0 && w.data[0] == std::byte{9})
        return std::make_error_code(std::errc::io_error);
    return std::error_code{};
  });
  ASSERT_FALSE(s.write(0, bytes(1, 9)));
  EXPECT_EQ(s.sync(), std::errc::io_error);
  EXPECT_EQ(s.durable_image()[0], std::byte{0});
  EXPECT_EQ(s.volatile_image()[0], std::byte{9});  // fsyncgate applies to hook failures too

  s.set_write_hook([](const WriteEvent& ev) {
    return ev.offset == 512 ? std::make_error_code(std::errc::no_space_on_device)
                            : std::error_code{};
  });
  EXPECT_EQ(s.write(512, bytes(4, 1)), std::errc::no_space_on_device);
  EXPECT_EQ(s.volatile_image()[512], std::byte{0});
  EXPECT_FALSE(s.write(0, bytes(4, 1)));
  s.set_write_hook({});
  s.set_sync_hook({});
  EXPECT_FALSE(s.write(512, bytes(4, 1)));
  EXPECT_FALSE(s.sync());
  EXPECT_EQ(s.durable_image()[512], std::byte{1});
}

TEST(FaultStorage, WriteHookSeesTheImagesBeforeTheWrite) {
  FaultStorage s(bytes(1024, 0));
  std::vector<std::uint64_t> seqs;
  s.set_write_hook([&](const WriteEvent& ev) {
    seqs.push_back(ev.seq);
    EXPECT_EQ(ev.volatile_image[ev.offset], std::byte{0});
    EXPECT_EQ(ev.data.size(), 4u);
    if (ev.seq == 2) {
      EXPECT_EQ(ev.landed, 0u);
      EXPECT_EQ(ev.result, std::errc::io_error);
    } else {
      EXPECT_EQ(ev.landed, 4u);
      EXPECT_FALSE(ev.result);
    }
    return std::error_code{};
  });
  ASSERT_FALSE(s.write(0, bytes(4, 1)));
  s.fail_write(1);
  EXPECT_TRUE(s.write(100, bytes(4, 1)));
  ASSERT_FALSE(s.write(200, bytes(4, 1)));
  EXPECT_EQ(seqs, (std::vector<std::uint64_t>{1, 2, 3}));
}

TEST(FaultStorage, ConcurrentWritersAndSyncs) {
  constexpr int kThreads = 2, kWrites = 500;
  FaultStorage s(bytes(kThreads * kWrites, 0));
  std::atomic<std::uint64_t> hook_writes{0};
  s.set_write_hook([&](const WriteEvent&) {
    hook_writes.fetch_add(1, std::memory_order_relaxed);
    return std::error_code{};
  });
  test::StartGate gate(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      gate.arrive_and_wait();
      for (int i = 0; i < kWrites; ++i) {
        ASSERT_FALSE(s.write(static_cast<std::uint64_t>(i * kThreads + t),
                             bytes(1, static_cast<std::uint8_t>(t + 1))));
        if (i % 50 == 0) {
          ASSERT_FALSE(s.sync());
        }
      }
      ASSERT_FALSE(s.sync());
    });
  }
  gate.open_when_ready();
  for (auto& th : threads) th.join();
  const auto durable = s.durable_image();
  for (int i = 0; i < kThreads * kWrites; ++i) {
    ASSERT_EQ(durable[static_cast<std::size_t>(i)], static_cast<std::byte>(i % kThreads + 1)) << i;
  }
  EXPECT_EQ(hook_writes.load(), static_cast<std::uint64_t>(kThreads * kWrites));
  // Sequence numbers are unique and increasing in trace order.
  const auto t = s.trace();
  for (std::size_t i = 0; i < t.size(); ++i) {
    ASSERT_EQ(t[i].seq, i + 1);
  }
}

TEST(FaultStorage, CrashImageWithSubsetsAndPermutations) {
  FaultStorage s(bytes(4096, 0));
  ASSERT_FALSE(s.write(0, bytes(100, 1)));    // 0
  ASSERT_FALSE(s.write(50, bytes(100, 2)));   // 1, overlaps 0 on [50, 100)
  ASSERT_FALSE(s.write(1000, bytes(10, 3)));  // 2
  const std::vector<std::size_t> none;
  EXPECT_EQ(s.crash_image(none), s.durable_image());

  const std::vector<std::size_t> first_and_last = {0, 2};
  auto img = s.crash_image(first_and_last);
  EXPECT_EQ(slice(img, 0, 100), bytes(100, 1));
  EXPECT_EQ(slice(img, 100, 50), bytes(50, 0));
  EXPECT_EQ(slice(img, 1000, 10), bytes(10, 3));

  // Overlapping writes reordered: whichever lands last wins the overlap.
  const std::vector<std::size_t> in_order = {0, 1}, reversed = {1, 0};
  img = s.crash_image(in_order);
  EXPECT_EQ(slice(img, 50, 50), bytes(50, 2));
  img = s.crash_image(reversed);
  EXPECT_EQ(slice(img, 50, 50), bytes(50, 1));
  EXPECT_EQ(slice(img, 100, 50), bytes(50, 2));

  // All of them in order is the volatile image.
  const std::vector<std::size_t> all = {0, 1, 2};
  EXPECT_EQ(s.crash_image(all), s.volatile_image());
  // crash_image changes nothing.
  EXPECT_EQ(s.unsynced_writes().size(), 3u);
  EXPECT_EQ(s.durable_image(), bytes(4096, 0));
}

TEST(FaultStorage, CrashImageWithATornWrite) {
  FaultStorage s(bytes(16384, 0));
  ASSERT_FALSE(s.write(0, bytes(4096, 1)));           // 0: eight 512-byte sectors
  ASSERT_FALSE(s.write(4096 + 256, bytes(1024, 2)));  // 1: misaligned, three sector pieces
  ASSERT_FALSE(s.write(8192, bytes(8192, 3)));        // 2: two 4 KiB pages
  const std::vector<std::size_t> none;

  // Sectors 0 and 2 of write 0 land.
  auto img = s.crash_image(none, TornWrite{0, 512, {true, false, true}});
  EXPECT_EQ(slice(img, 0, 512), bytes(512, 1));
  EXPECT_EQ(slice(img, 512, 512), bytes(512, 0));
  EXPECT_EQ(slice(img, 1024, 512), bytes(512, 1));
  EXPECT_EQ(slice(img, 1536, 4096 - 1536), bytes(4096 - 1536, 0));

  // Write 1 covers [4352, 5376): units [4352,4608) [4608,5120) [5120,5376).
  img = s.crash_image(none, TornWrite{1, 512, {false, true, false}});
  EXPECT_EQ(slice(img, 4352, 256), bytes(256, 0));
  EXPECT_EQ(slice(img, 4608, 512), bytes(512, 2));
  EXPECT_EQ(slice(img, 5120, 256), bytes(256, 0));
  img = s.crash_image(none, TornWrite{1, 4096, {true}});  // one 4 KiB unit: all of it
  EXPECT_EQ(slice(img, 4352, 1024), bytes(1024, 2));

  // 4 KiB granularity on write 2: only the second page lands; with write 0 whole.
  const std::vector<std::size_t> zero = {0};
  img = s.crash_image(zero, TornWrite{2, 4096, {false, true}});
  EXPECT_EQ(slice(img, 0, 4096), bytes(4096, 1));
  EXPECT_EQ(slice(img, 8192, 4096), bytes(4096, 0));
  EXPECT_EQ(slice(img, 12288, 4096), bytes(4096, 3));
  // No unit lands: the torn write is as if lost.
  EXPECT_EQ(s.crash_image(none, TornWrite{2, 4096, {}}), s.durable_image());
}

// With the format: a block persisted as two writes (the block, then its checksum entry)
// that crashes in between, or tears, is unverifiable on reopen, never silently accepted.
TEST(FaultStorage, TornOrHalfPersistedBlockIsUnverifiable) {
  std::error_code ec;
  const std::optional<Superblock> sb = make_superblock({.device_bytes = 20000ull * (64 << 10),
                                                        .chunk_bytes = 64 << 10,
                                                        .space_bytes = 64 << 10,
                                                        .block_bytes = 4096,
                                                        .uuid = random_uuid()},
                                                       ec);
  ASSERT_TRUE(sb) << ec.message();
  const Geometry& g = sb->geometry;
  FaultStorage s(build_fresh_file(*sb, 1));

  // Persist block 2 with every chunk Dirty (2): the block, then its entry.
  std::vector<std::byte> block(g.block_bytes(), std::byte{2});
  std::array<std::byte, 4> entry{};
  store_le32(entry, block_crc(2, sb->uuid, block));
  ASSERT_FALSE(s.write(2 * g.block_bytes(), block));
  ASSERT_FALSE(s.write(g.checksum_offset(2), entry));

  auto unverifiable = [&](const std::vector<std::byte>& file) {
    const std::span<const std::byte> f(file);
    return unverifiable_blocks(g, sb->uuid, f.first(g.image_bytes()),
                               f.subspan(g.checksum_table_offset(), g.checksum_table_bytes()));
  };
  const std::vector<std::size_t> none, block_only = {0}, entry_only = {1}, both = {0, 1};
  EXPECT_TRUE(unverifiable(s.crash_image(none)).empty());
  EXPECT_TRUE(unverifiable(s.crash_image(both)).empty());
  EXPECT_EQ(unverifiable(s.crash_image(block_only)), std::vector<std::uint64_t>{2});
  EXPECT_EQ(unverifiable(s.crash_image(entry_only)), std::vector<std::uint64_t>{2});
  for (unsigned mask = 1; mask < 255; ++mask) {  // every proper tear of the block at 512 B
    std::vector<bool> units(8);
    for (unsigned i = 0; i < 8; ++i) units[i] = ((mask >> i) & 1) != 0;
    ASSERT_EQ(unverifiable(s.crash_image(entry_only, TornWrite{0, 512, units})),
              std::vector<std::uint64_t>{2})
        << mask;
  }
}

}  // namespace
}  // namespace llbitmap
