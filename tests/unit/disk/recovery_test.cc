// SPDX-License-Identifier: LGPL-2.1-or-later
//
// recover_chunk_states, the crash-recovery rule of open (recovery.h;
// docs/design.md#crash-recovery-on-open): Reload, Stale, invalid bytes, blocks whose
// checksum fails, and the states it keeps. The expectations are written out by hand,
// not derived from the transition table.
#include <llbitmap/chunk_state.h>
#include <llbitmap/format.h>
#include <llbitmap/recovery.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <vector>

namespace llbitmap {
namespace {

constexpr std::uint8_t U = 0, C = 1, D = 2, N = 3, Y = 4;  // Unwritten .. Syncing

// A small bitmap: 512-byte blocks, so the chunks span several blocks. 8 MiB device,
// 4 KiB chunks: 2048 chunks, state bytes at image bytes 1024 .. 3071 (blocks 2 .. 5).
class Recovery : public ::testing::Test {
 protected:
  void SetUp() override {
    FormatOptions fo;
    fo.device_bytes = 8 << 20;
    fo.chunk_bytes = 4096;
    fo.space_bytes = 4096;
    fo.block_bytes = 512;
    for (std::size_t i = 0; i < fo.uuid.size(); ++i) fo.uuid[i] = std::byte(0x40 + i);
    std::error_code ec;
    auto sb = make_superblock(fo, ec);
    ASSERT_TRUE(sb) << ec.message();
    sb_ = *sb;
    ASSERT_EQ(g().chunks(), 2048u);
    ASSERT_EQ(g().blocks(), 8u);
    const std::vector<std::byte> file = build_fresh_file(sb_, U);
    image_.assign(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(g().image_bytes()));
    table_.assign(file.begin() + static_cast<std::ptrdiff_t>(g().checksum_table_offset()),
                  file.end());
  }

  const Geometry& g() const { return sb_.geometry; }
  void set(std::uint64_t chunk, std::uint8_t byte) {
    image_[g().chunk_pos(chunk)] = std::byte(byte);
  }
  std::uint8_t at(std::uint64_t chunk) const {
    return std::to_integer<std::uint8_t>(image_[g().chunk_pos(chunk)]);
  }
  // Sets the superblock's state flags in the image (the rule reads them from sb_).
  void set_flags(std::uint32_t flags) {
    sb_.state = flags;
    sb_.encode(std::span<std::byte, kSuperblockBytes>(image_.data(), kSuperblockBytes));
  }
  // Makes every block verify again after the test changed bytes of the image.
  void reseal() { fill_checksum_table(g(), sb_.uuid, image_, table_); }
  RecoveryReport recover() { return recover_chunk_states(sb_, image_, table_); }

  Superblock sb_;
  std::vector<std::byte> image_;
  std::vector<std::byte> table_;
};

TEST_F(Recovery, ReloadTurnsDirtyAndSyncingIntoNeedSyncAndKeepsTheRest) {
  for (std::uint8_t s : {U, C, D, N, Y}) set(s, s);
  set(2047, D);
  reseal();
  const std::vector<std::byte> before = image_;
  const RecoveryReport r = recover();
  EXPECT_EQ(r.action, Action::kReload);
  EXPECT_EQ(at(0), U);
  EXPECT_EQ(at(1), C);
  EXPECT_EQ(at(2), N);
  EXPECT_EQ(at(3), N);
  EXPECT_EQ(at(4), N);
  EXPECT_EQ(at(2047), N);
  EXPECT_EQ(r.invalid_bytes, 0u);
  EXPECT_TRUE(r.bad_blocks.empty());
  EXPECT_EQ(r.bad_block_chunks, 0u);
  // Nothing else changed: not the other chunks, not the superblock, not the tail.
  for (std::size_t i = 0; i < image_.size(); ++i) {
    if (i == g().chunk_pos(2) || i == g().chunk_pos(4) || i == g().chunk_pos(2047)) continue;
    ASSERT_EQ(image_[i], before[i]) << "image byte " << i;
  }
}

TEST_F(Recovery, UnwrittenCleanAndNeedSyncAreKeptByReload) {
  for (std::uint64_t c = 0; c < g().chunks(); ++c)
    set(c, static_cast<std::uint8_t>(c % 2 == 0 ? U : C));
  set(100, N);
  reseal();
  const std::vector<std::byte> before = image_;
  const RecoveryReport r = recover();
  EXPECT_EQ(r.action, Action::kReload);
  EXPECT_EQ(image_, before) << "a clean image must come back unchanged";
  EXPECT_EQ(at(100), N);
}

TEST_F(Recovery, StaleMakesEveryWrittenChunkNeedSync) {
  for (const std::uint32_t flags : {kSbStale, kSbWriteError, kSbStale | kSbWriteError | kSbClean}) {
    SetUp();
    for (std::uint8_t s : {U, C, D, N, Y}) set(s, s);
    for (std::uint64_t c = 5; c < g().chunks(); ++c)
      set(c, static_cast<std::uint8_t>(c % 2 == 0 ? U : C));
    set_flags(flags);
    reseal();
    ASSERT_TRUE(recovers_as_stale(flags));
    const RecoveryReport r = recover();
    EXPECT_EQ(r.action, Action::kStale) << flags;
    EXPECT_EQ(at(0), U) << "Stale leaves Unwritten alone";
    EXPECT_EQ(at(1), N);
    EXPECT_EQ(at(2), N);
    EXPECT_EQ(at(3), N);
    EXPECT_EQ(at(4), N);
    for (std::uint64_t c = 5; c < g().chunks(); ++c)
      ASSERT_EQ(at(c), c % 2 == 0 ? U : N) << "chunk " << c;
    EXPECT_EQ(r.invalid_bytes, 0u);
    EXPECT_TRUE(r.bad_blocks.empty());
  }
}

TEST_F(Recovery, OutOfDateMakesEveryChunkNeedSyncUnwrittenIncluded) {
  for (std::uint8_t s : {U, C, D, N, Y}) set(s, s);
  set(6, 0x77);  // invalid: still counted
  reseal();
  const RecoveryReport r = recover_chunk_states(sb_, image_, table_, true);
  EXPECT_TRUE(r.out_of_date);
  EXPECT_EQ(r.action, Action::kReload) << "rule 1 still reports what the superblock says";
  EXPECT_EQ(r.invalid_bytes, 1u);
  for (std::uint64_t c = 0; c < g().chunks(); ++c) ASSERT_EQ(at(c), N) << "chunk " << c;
  // Not out of date: the ordinary rule.
  SetUp();
  set(0, C);
  reseal();
  EXPECT_FALSE(recover_chunk_states(sb_, image_, table_, false).out_of_date);
  EXPECT_EQ(at(0), C);
  EXPECT_EQ(at(1), U);
}

TEST_F(Recovery, OtherFlagsDoNotMakeItStale) {
  for (const std::uint32_t flags : {0u, kSbClean, kSbDaemonBusy}) {
    SetUp();
    set(7, C);
    set_flags(flags);
    reseal();
    EXPECT_FALSE(recovers_as_stale(flags));
    const RecoveryReport r = recover();
    EXPECT_EQ(r.action, Action::kReload) << flags;
    EXPECT_EQ(at(7), C) << flags;
  }
}

// Rule 0: FIRST_USE means the bytes were never initialised. Every chunk becomes
// Unwritten (Clean with CLEAN too, the kernel's Init), whatever the bytes, the
// checksums or the other flags say; nothing is counted as invalid or bad.
TEST_F(Recovery, FirstUseInitialisesEveryChunk) {
  for (const std::uint32_t flags :
       {kSbFirstUse, kSbFirstUse | kSbClean, kSbFirstUse | kSbStale | kSbWriteError}) {
    SetUp();
    for (std::uint8_t s : {U, C, D, N, Y}) set(s, s);
    set(100, 0x80);  // not a state
    set_flags(flags);
    reseal();
    image_[g().chunk_pos(1500)] = std::byte{D};  // and a block whose checksum fails
    const RecoveryReport r = recover();
    EXPECT_TRUE(r.first_use) << flags;
    const std::uint8_t want = (flags & kSbClean) != 0 ? C : U;
    for (std::uint64_t c = 0; c < g().chunks(); ++c)
      ASSERT_EQ(at(c), want) << "chunk " << c << " flags " << flags;
    EXPECT_EQ(r.invalid_bytes, 0u);
    EXPECT_TRUE(r.bad_blocks.empty());
    EXPECT_EQ(r.bad_block_chunks, 0u);
  }
}

TEST_F(Recovery, InvalidBytesBecomeNeedSyncAndAreCounted) {
  set(10, 5);
  set(11, C);
  set(500, 0x80);
  set(2047, 0xff);  // ChunkState::kNone as a stored byte is invalid too
  reseal();
  RecoveryReport r = recover();
  EXPECT_EQ(r.action, Action::kReload);
  EXPECT_EQ(at(10), N);
  EXPECT_EQ(at(11), C);
  EXPECT_EQ(at(500), N);
  EXPECT_EQ(at(2047), N);
  EXPECT_EQ(r.invalid_bytes, 3u);
  EXPECT_EQ(r.first_invalid_chunk, 10u);
  EXPECT_EQ(r.first_invalid_byte, 5u);
  EXPECT_TRUE(r.bad_blocks.empty());

  // The same under Stale.
  SetUp();
  set(20, 0x42);
  set(21, U);
  set_flags(kSbStale);
  reseal();
  r = recover();
  EXPECT_EQ(r.action, Action::kStale);
  EXPECT_EQ(at(20), N);
  EXPECT_EQ(at(21), U);
  EXPECT_EQ(r.invalid_bytes, 1u);
  EXPECT_EQ(r.first_invalid_chunk, 20u);
  EXPECT_EQ(r.first_invalid_byte, 0x42u);
}

TEST_F(Recovery, EveryByteValueUnderBothActions) {
  // Chunk c holds byte c % 256; expected results written out per byte value.
  for (const bool stale : {false, true}) {
    SetUp();
    for (std::uint64_t c = 0; c < 256; ++c) set(c, static_cast<std::uint8_t>(c));
    if (stale) set_flags(kSbStale);
    reseal();
    const RecoveryReport r = recover();
    for (std::uint64_t c = 0; c < 256; ++c) {
      std::uint8_t want = N;
      if (c == U) want = U;
      if (c == C && !stale) want = C;
      ASSERT_EQ(at(c), want) << "byte " << c << (stale ? " (stale)" : " (reload)");
    }
    EXPECT_EQ(r.invalid_bytes, 256u - kChunkStateCount);
    EXPECT_EQ(r.first_invalid_chunk, 5u);
  }
}

TEST_F(Recovery, EveryChunkOfABlockThatFailsItsChecksumIsNeedSync) {
  // Block 3 holds the state bytes of chunks 512 .. 1023.
  ASSERT_EQ(g().chunks_in_block(3), (ChunkRange{512, 1024}));
  for (std::uint64_t c = 0; c < g().chunks(); ++c)
    set(c, static_cast<std::uint8_t>(c % 2 == 0 ? U : C));
  set(700, 0x99);  // an invalid byte inside the bad block is still counted
  reseal();
  // Zero the block after sealing: it reads as all Unwritten, and must not be trusted.
  for (std::uint64_t c = 512; c < 1024; ++c)
    if (c != 700) set(c, U);
  const RecoveryReport r = recover();
  EXPECT_EQ(r.action, Action::kReload);
  EXPECT_EQ(r.bad_blocks, std::vector<std::uint64_t>{3});
  EXPECT_EQ(r.bad_block_chunks, 512u);
  EXPECT_EQ(r.invalid_bytes, 1u);
  EXPECT_EQ(r.first_invalid_chunk, 700u);
  for (std::uint64_t c = 0; c < g().chunks(); ++c) {
    const bool in_bad = c >= 512 && c < 1024;
    ASSERT_EQ(at(c), in_bad ? N : (c % 2 == 0 ? U : C)) << "chunk " << c;
  }
}

TEST_F(Recovery, ABadBlockUnderStaleAndABadChecksumEntry) {
  set(2000, U);
  set(2001, C);
  set_flags(kSbStale);
  reseal();
  // Corrupt block 5's checksum entry, not its bytes: the block fails all the same.
  table_[g().checksum_offset(5) - g().checksum_table_offset()] ^= std::byte{1};
  const RecoveryReport r = recover();
  EXPECT_EQ(r.action, Action::kStale);
  EXPECT_EQ(r.bad_blocks, std::vector<std::uint64_t>{5});
  EXPECT_EQ(at(2000), N) << "Unwritten in a bad block is NeedSync, even under Stale";
  EXPECT_EQ(at(2001), N);
  EXPECT_EQ(at(1535), U) << "the block before is trusted";
}

TEST_F(Recovery, ABadBlockWithoutChunksIsReportedAndChangesNoChunk) {
  reseal();
  image_[300] ^= std::byte{0xff};   // block 0: the superblock area, past its 256 bytes
  image_[4000] ^= std::byte{0xff};  // block 7: the zero tail after the last chunk
  const std::vector<std::byte> before = image_;
  const RecoveryReport r = recover();
  EXPECT_EQ(r.bad_blocks, (std::vector<std::uint64_t>{0, 7}));
  EXPECT_EQ(r.bad_block_chunks, 0u);
  EXPECT_EQ(image_, before) << "only chunk state bytes may change";
}

using RecoveryDeathTest = Recovery;

TEST_F(RecoveryDeathTest, ImageOrTableOfTheWrongSizeAborts) {
  std::vector<std::byte> short_image(image_.begin(), image_.end() - 1);
  EXPECT_DEATH((void)recover_chunk_states(sb_, short_image, table_), "image of 4095 bytes");
  std::vector<std::byte> short_table(table_.begin(), table_.end() - 1);
  EXPECT_DEATH((void)recover_chunk_states(sb_, image_, short_table), "checksum table of");
}

}  // namespace
}  // namespace llbitmap
