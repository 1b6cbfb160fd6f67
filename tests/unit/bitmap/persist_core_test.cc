// SPDX-License-Identifier: LGPL-2.1-or-later
//
// PersistCore, the planning half of a persist round (docs/design.md#group-commit), with
// no Storage at all: the requests of a round (their order, offsets and bytes), what
// completing a round publishes, that two rounds never overlap for one block, and the
// stale mark of the failed state.
#include "persist_core.h"

#include <llbitmap/format.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "chunk_image.h"

namespace llbitmap {
namespace {

using Kind = PersistCore::Request::Kind;

// One request as handed out, with a copy of its bytes (they live only until the next).
struct Planned {
  Kind kind;
  std::uint64_t offset;
  std::vector<std::byte> bytes;
};

// A fresh bitmap of 512-byte blocks whose checksum table spans two blocks (256 blocks,
// chunks in both halves),
// built the way BitmapImpl builds its image and checksum state from a file.
struct Fixture {
  Superblock sb;
  std::vector<std::byte> file;
  std::unique_ptr<ChunkImage> image;
  std::unique_ptr<PersistCore> core;

  Fixture() {
    FormatOptions fo;
    fo.device_bytes = 120000ull << 16;  // 120000 chunks: state bytes in both table halves
    fo.chunk_bytes = 64 << 10;
    fo.space_bytes = 128 << 10;
    fo.block_bytes = 512;
    fo.uuid = random_uuid();
    std::error_code ec;
    auto made = make_superblock(fo, ec);
    EXPECT_FALSE(ec) << ec.message();
    sb = *made;
    file = build_fresh_file(sb, 0);  // every chunk Unwritten
    const Geometry& g = sb.geometry;
    std::span<const std::byte> all(file);
    image = std::make_unique<ChunkImage>(sb, all.first(g.image_bytes()));
    std::vector<std::uint32_t> crc(g.blocks());
    for (std::uint64_t b = 0; b < g.blocks(); ++b)
      crc[b] = stored_block_crc(g, all.subspan(g.checksum_table_offset()), b);
    core = std::make_unique<PersistCore>(*image, std::move(crc));
  }

  const Geometry& geo() const { return sb.geometry; }
  std::uint64_t table_block_of(std::uint64_t block) const {
    return (geo().checksum_offset(block) - geo().checksum_table_offset()) / geo().block_bytes();
  }

  // Every request of the round, up to and including its sync.
  std::vector<Planned> drain(PersistCore::Round& round) {
    std::vector<Planned> out;
    for (;;) {
      const PersistCore::Request r = core->next_request(round);
      out.push_back(Planned{r.kind, r.offset, {r.bytes.begin(), r.bytes.end()}});
      if (r.kind == Kind::kSync) return out;
    }
  }

  // A round begun and every request of it handed out (its copies taken), not completed;
  // nullopt if no round could begin.
  std::optional<PersistCore::Round> copied_round() {
    std::optional<PersistCore::Round> round = core->begin_round();
    if (round) drain(*round);
    return round;
  }

  // A whole round, completed successfully.
  std::vector<Planned> run_round() {
    std::optional<PersistCore::Round> round = core->begin_round();
    EXPECT_TRUE(round.has_value());
    std::vector<Planned> reqs = drain(*round);
    EXPECT_TRUE(core->complete_round(std::move(*round), {}));
    return reqs;
  }

  // Applies `action` to chunk c and returns the block's new change number.
  std::uint64_t change(std::uint64_t chunk, Action action) {
    const ChunkImage::Change ch =
        image->change_chunk(chunk, action, transition_context(false, false, false));
    EXPECT_NE(ch.seq, 0u) << "chunk " << chunk << " did not change";
    core->enqueue(geo().block_of_chunk(chunk));
    return ch.seq;
  }

  // Applies every write of `reqs` to `file`.
  void apply(const std::vector<Planned>& reqs) {
    for (const Planned& p : reqs) {
      if (p.kind == Kind::kSync) continue;
      std::copy(p.bytes.begin(), p.bytes.end(),
                file.begin() + static_cast<std::ptrdiff_t>(p.offset));
    }
  }
};

TEST(PersistCoreTest, FirstRoundWritesEveryBlockThenTheTableThenSyncs) {
  Fixture f;
  const Geometry& g = f.geo();
  const std::uint32_t bs = g.block_bytes();
  ASSERT_EQ(g.checksum_table_bytes(), 2u * bs);  // two table blocks
  const std::vector<std::byte> fresh = f.file;

  std::optional<PersistCore::Round> round = f.core->begin_round();
  ASSERT_TRUE(round.has_value());
  ASSERT_EQ(round->blocks().size(), g.blocks());
  const std::vector<Planned> reqs = f.drain(*round);

  // Every block in order, then table blocks 0 and 1, then the one sync, last.
  ASSERT_EQ(reqs.size(), g.blocks() + 2 + 1);
  for (std::uint64_t b = 0; b < g.blocks(); ++b) {
    SCOPED_TRACE(b);
    EXPECT_EQ(reqs[b].kind, Kind::kBlock);
    EXPECT_EQ(reqs[b].offset, b * bs);
    ASSERT_EQ(reqs[b].bytes.size(), bs);
    // Nothing changed since the file was made: the copy is the file's block.
    EXPECT_EQ(0, std::memcmp(reqs[b].bytes.data(), fresh.data() + b * bs, bs));
    EXPECT_EQ(round->snapshot_seq(b), 1u);  // every block's change number at open
  }
  for (std::uint64_t t = 0; t < 2; ++t) {
    const Planned& p = reqs[g.blocks() + t];
    EXPECT_EQ(p.kind, Kind::kChecksums);
    EXPECT_EQ(p.offset, g.checksum_table_offset() + t * bs);
    EXPECT_EQ(p.bytes.size(), bs);
  }
  EXPECT_EQ(reqs.back().kind, Kind::kSync);
  EXPECT_TRUE(reqs.back().bytes.empty());

  // The bytes written make a file whose every block matches its checksum entry.
  f.apply(reqs);
  EXPECT_TRUE(unverifiable_blocks(g, f.sb.uuid,
                                  std::span<const std::byte>(f.file).first(g.image_bytes()),
                                  std::span<const std::byte>(f.file).subspan(g.image_bytes()))
                  .empty());
  EXPECT_EQ(f.file, fresh);
  EXPECT_TRUE(f.core->complete_round(std::move(*round), {}));
  EXPECT_FALSE(f.core->has_queued());
}

TEST(PersistCoreTest, ChangedBlockRoundPlansItsBlockAndItsTableBlock) {
  Fixture f;
  f.run_round();
  const Geometry& g = f.geo();
  const std::uint32_t bs = g.block_bytes();
  // A chunk whose block's entry lies in the second table block.
  const std::uint64_t chunk = g.chunks() - 1;
  const std::uint64_t block = g.block_of_chunk(chunk);
  ASSERT_EQ(f.table_block_of(block), 1u);
  const std::uint64_t seq = f.change(chunk, Action::kStartwrite);
  ASSERT_TRUE(f.core->has_queued());

  std::optional<PersistCore::Round> round = f.core->begin_round();
  ASSERT_TRUE(round.has_value());
  ASSERT_EQ(round->blocks(), std::vector<std::uint64_t>{block});
  const std::vector<Planned> reqs = f.drain(*round);
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].kind, Kind::kBlock);
  EXPECT_EQ(reqs[0].offset, block * bs);
  EXPECT_EQ(round->snapshot_seq(0), seq);
  // The copy holds the change.
  EXPECT_EQ(static_cast<std::uint8_t>(reqs[0].bytes[g.chunk_pos(chunk) - block * bs]),
            to_byte(ChunkState::kDirty));
  EXPECT_EQ(reqs[1].kind, Kind::kChecksums);
  EXPECT_EQ(reqs[1].offset, g.checksum_table_offset() + bs);
  EXPECT_EQ(reqs[2].kind, Kind::kSync);
  // The table block carries the copy's checksum in the block's entry.
  const std::uint64_t entry = g.checksum_offset(block) - reqs[1].offset;
  std::uint32_t stored = 0;
  for (int i = 3; i >= 0; --i)
    stored = (stored << 8) | static_cast<std::uint8_t>(reqs[1].bytes[entry + i]);
  EXPECT_EQ(stored, block_crc(block, f.sb.uuid, reqs[0].bytes));
  f.apply(reqs);
  EXPECT_TRUE(verify_block(g, f.sb.uuid, std::span<const std::byte>(f.file).first(g.image_bytes()),
                           std::span<const std::byte>(f.file).subspan(g.image_bytes()), block));

  // Not durable before the round completes; durable at the copy's number after.
  EXPECT_FALSE(f.image->block_durable(block));
  EXPECT_TRUE(f.core->complete_round(std::move(*round), {}));
  EXPECT_TRUE(f.image->block_durable(block));
  EXPECT_EQ(f.image->durable_seq(block), seq);
}

TEST(PersistCoreTest, FailedRoundPublishesNothing) {
  Fixture f;
  f.run_round();
  const std::uint64_t chunk = 5;
  const std::uint64_t block = f.geo().block_of_chunk(chunk);
  const std::uint64_t durable_before = f.image->durable_seq(block);
  f.change(chunk, Action::kStartwrite);

  std::optional<PersistCore::Round> round = f.core->begin_round();
  ASSERT_TRUE(round.has_value());
  // The driver's first write fails: it asks for nothing more.
  EXPECT_EQ(f.core->next_request(*round).kind, Kind::kBlock);
  EXPECT_FALSE(
      f.core->complete_round(std::move(*round), std::make_error_code(std::errc::io_error)));
  EXPECT_FALSE(f.image->block_durable(block));
  EXPECT_EQ(f.image->durable_seq(block), durable_before);

  // A round that got as far as its sync and failed there publishes nothing either.
  f.core->enqueue(block);
  round = f.core->begin_round();
  ASSERT_TRUE(round.has_value());
  f.drain(*round);
  EXPECT_FALSE(
      f.core->complete_round(std::move(*round), std::make_error_code(std::errc::io_error)));
  EXPECT_FALSE(f.image->block_durable(block));
  EXPECT_EQ(f.image->durable_seq(block), durable_before);
}

TEST(PersistCoreTest, BlockChangedDuringARoundGoesToTheNextRound) {
  Fixture f;
  f.run_round();
  const Geometry& g = f.geo();
  const std::uint64_t chunk = 100;
  const std::uint64_t block = g.block_of_chunk(chunk);
  const std::uint64_t pos = g.chunk_pos(chunk) - block * g.block_bytes();
  const std::uint64_t first = f.change(chunk, Action::kStartwrite);

  std::optional<PersistCore::Round> r1 = f.core->begin_round();
  ASSERT_TRUE(r1.has_value());
  const PersistCore::Request copy1 = f.core->next_request(*r1);
  ASSERT_EQ(copy1.kind, Kind::kBlock);
  EXPECT_EQ(static_cast<std::uint8_t>(copy1.bytes[pos]), to_byte(ChunkState::kDirty));
  EXPECT_EQ(r1->snapshot_seq(0), first);

  // The block changes again while the round is open: queued, and no second round opens.
  const std::uint64_t second = f.change(chunk, Action::kDaemon);
  ASSERT_GT(second, first);
  const std::uint8_t second_byte = f.image->load_byte(g.chunk_pos(chunk));
  ASSERT_NE(second_byte, to_byte(ChunkState::kDirty));
  EXPECT_TRUE(f.core->has_queued());
  EXPECT_FALSE(f.core->begin_round().has_value());

  // The first round completes with the older copy only.
  f.drain(*r1);
  EXPECT_TRUE(f.core->complete_round(std::move(*r1), {}));
  EXPECT_EQ(f.image->durable_seq(block), first);
  EXPECT_FALSE(f.image->block_durable(block));

  // The next round takes the newer copy; the older one is never planned again.
  std::optional<PersistCore::Round> r2 = f.core->begin_round();
  ASSERT_TRUE(r2.has_value());
  ASSERT_EQ(r2->blocks(), std::vector<std::uint64_t>{block});
  const std::vector<Planned> reqs = f.drain(*r2);
  ASSERT_EQ(reqs[0].kind, Kind::kBlock);
  EXPECT_EQ(static_cast<std::uint8_t>(reqs[0].bytes[pos]), second_byte);
  EXPECT_EQ(r2->snapshot_seq(0), second);
  EXPECT_TRUE(f.core->complete_round(std::move(*r2), {}));
  EXPECT_EQ(f.image->durable_seq(block), second);
  EXPECT_TRUE(f.image->block_durable(block));
}

TEST(PersistCoreTest, AfterWritesDoneTheNextRoundBeginsAndRoundsCompleteInAnyOrder) {
  Fixture f;
  f.run_round();
  const Geometry& g = f.geo();
  const std::uint64_t chunk = 100;
  const std::uint64_t block = g.block_of_chunk(chunk);
  const std::uint64_t first = f.change(chunk, Action::kStartwrite);
  std::optional<PersistCore::Round> r1 = f.copied_round();
  ASSERT_TRUE(r1.has_value());
  // Its sync is planned but its writes are not reported done: still the writing round.
  const std::uint64_t second = f.change(chunk + 1, Action::kStartwrite);
  ASSERT_GT(second, first);
  EXPECT_FALSE(f.core->begin_round().has_value());
  f.core->writes_done(*r1);
  std::optional<PersistCore::Round> r2 = f.core->begin_round();
  ASSERT_TRUE(r2.has_value()) << "no round begins while the last one only syncs";
  ASSERT_EQ(r2->blocks(), std::vector<std::uint64_t>{block});
  f.drain(*r2);
  EXPECT_EQ(r2->snapshot_seq(0), second);
  // The later round completes first; the earlier one's completion must not lower the
  // block's durable number.
  EXPECT_TRUE(f.core->complete_round(std::move(*r2), {}));
  EXPECT_EQ(f.image->durable_seq(block), second);
  EXPECT_TRUE(f.core->complete_round(std::move(*r1), {}));
  EXPECT_EQ(f.image->durable_seq(block), second);
  EXPECT_TRUE(f.image->block_durable(block));
  // Both are closed: a round begins again (none queued, so an empty one).
  f.change(chunk + 2, Action::kStartwrite);
  EXPECT_TRUE(f.core->begin_round().has_value());
}

// The covered bits (ChunkImage::durably_covered): set from a completed round's copy,
// kept while other chunks of the block change, cleared as soon as a copy holding the
// chunk clean-like is taken, and never set again by an older round completing late.
TEST(PersistCoreTest, ACompletedRoundCoversItsDirtyChunksAndOnlyThose) {
  Fixture f;
  f.run_round();
  const Geometry& g = f.geo();
  const std::uint64_t a = 100, b = 101;  // one block
  ASSERT_EQ(g.block_of_chunk(a), g.block_of_chunk(b));
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(a)));  // Unwritten
  f.change(a, Action::kStartwrite);
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(a))) << "covered before any copy";
  std::optional<PersistCore::Round> r = f.copied_round();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(a))) << "covered before the sync";
  EXPECT_TRUE(f.core->complete_round(std::move(*r), {}));
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(a)));
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(b)));
  // Another chunk of the block changes: the block is no longer durable, chunk a stays
  // covered, through the next copy and its completion.
  f.change(b, Action::kStartwrite);
  EXPECT_FALSE(f.image->block_durable(g.block_of_chunk(a)));
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(a)));
  f.run_round();
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(a)));
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(b)));
  // A failed round covers nothing.
  const std::uint64_t c = 102;
  f.change(c, Action::kStartwrite);
  r = f.copied_round();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(f.core->complete_round(std::move(*r), std::make_error_code(std::errc::io_error)));
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(c)));
}

TEST(PersistCoreTest, ACopyHoldingAChunkCleanUncoversItBeforeItLands) {
  Fixture f;
  f.run_round();
  const Geometry& g = f.geo();
  const std::uint64_t a = 100, b = 101;
  f.change(a, Action::kStartwrite);
  f.run_round();
  ASSERT_TRUE(f.image->durably_covered(g.chunk_pos(a)));
  // Discarded (Unwritten in memory): still covered, the file still holds it Dirty.
  f.change(a, Action::kDiscard);
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(a)));
  // R1 copies the block with chunk a Unwritten: that copy may land, so a is uncovered
  // as soon as it is taken.
  std::optional<PersistCore::Round> r1 = f.copied_round();
  ASSERT_TRUE(r1.has_value());
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(a)));
  f.core->writes_done(*r1);
  // Written again (Dirty in memory), and R2 copies that; R2 completes first, then R1.
  f.change(a, Action::kStartwrite);
  f.change(b, Action::kStartwrite);
  std::optional<PersistCore::Round> r2 = f.copied_round();
  ASSERT_TRUE(r2.has_value());
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(a)));
  EXPECT_TRUE(f.core->complete_round(std::move(*r2), {}));
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(a)));
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(b)));
  EXPECT_TRUE(f.core->complete_round(std::move(*r1), {}));
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(a))) << "R1's older copy uncovered it again";
}

TEST(PersistCoreTest, AnOlderRoundCompletingWhileANewerCopyIsOutCoversNothingNew) {
  Fixture f;
  f.run_round();
  const Geometry& g = f.geo();
  const std::uint64_t a = 100;
  // R1 copies chunk a Dirty; before it completes, a is discarded and R2 copies it
  // Unwritten. R1 completing must not cover a: R2's copy may still land over it.
  f.change(a, Action::kStartwrite);
  std::optional<PersistCore::Round> r1 = f.copied_round();
  ASSERT_TRUE(r1.has_value());
  f.core->writes_done(*r1);
  f.change(a, Action::kDiscard);
  std::optional<PersistCore::Round> r2 = f.copied_round();
  ASSERT_TRUE(r2.has_value());
  f.change(a, Action::kStartwrite);  // Dirty in memory again, not yet copied
  EXPECT_TRUE(f.core->complete_round(std::move(*r1), {}));
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(a)))
      << "covered by an older copy while a newer one holding it Unwritten was out";
  EXPECT_TRUE(f.core->complete_round(std::move(*r2), {}));
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(a)));
  f.run_round();  // the copy with a Dirty again
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(a)));

  // The other way round: R3 copies chunk b still Unwritten (for chunk c), then R4 copies
  // b Dirty. R3 completing covers nothing of R4's: b is Unwritten in the durable copy.
  const std::uint64_t b = 101, c = 102;
  f.change(c, Action::kStartwrite);
  std::optional<PersistCore::Round> r3 = f.copied_round();
  ASSERT_TRUE(r3.has_value());
  f.core->writes_done(*r3);
  f.change(b, Action::kStartwrite);
  std::optional<PersistCore::Round> r4 = f.copied_round();
  ASSERT_TRUE(r4.has_value());
  EXPECT_TRUE(f.core->complete_round(std::move(*r3), {}));
  EXPECT_FALSE(f.image->durably_covered(g.chunk_pos(b))) << "covered by a copy not yet durable";
  EXPECT_TRUE(f.core->complete_round(std::move(*r4), {}));
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(b)));
  EXPECT_TRUE(f.image->durably_covered(g.chunk_pos(c)));
}

TEST(PersistCoreTest, StaleMarkDecodesAsAStaleSuperblockWithItsChecksum) {
  Fixture f;
  f.run_round();
  const Geometry& g = f.geo();
  const std::uint32_t bs = g.block_bytes();
  const std::array<PersistCore::OwnedWrite, 2> mark = f.core->stale_mark_requests();

  EXPECT_EQ(mark[0].offset, 0u);
  ASSERT_EQ(mark[0].bytes.size(), bs);
  std::error_code ec;
  const std::optional<Superblock> sb = Superblock::decode(mark[0].bytes, ec);
  ASSERT_TRUE(sb.has_value()) << ec.message();
  EXPECT_EQ(sb->state & (kSbStale | kSbWriteError), kSbStale | kSbWriteError);
  EXPECT_EQ(sb->uuid, f.sb.uuid);

  EXPECT_EQ(mark[1].offset, g.checksum_table_offset());
  ASSERT_EQ(mark[1].bytes.size(), bs);
  // Written over the file, block 0 verifies against the new entry and every other block
  // of the first table block still verifies against its own.
  std::copy(mark[0].bytes.begin(), mark[0].bytes.end(), f.file.begin());
  std::copy(mark[1].bytes.begin(), mark[1].bytes.end(),
            f.file.begin() + static_cast<std::ptrdiff_t>(mark[1].offset));
  std::span<const std::byte> all(f.file);
  EXPECT_TRUE(
      unverifiable_blocks(g, f.sb.uuid, all.first(g.image_bytes()), all.subspan(g.image_bytes()))
          .empty());
}

}  // namespace
}  // namespace llbitmap
