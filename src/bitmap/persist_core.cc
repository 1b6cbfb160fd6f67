// SPDX-License-Identifier: LGPL-2.1-or-later
//
// PersistCore: the plan of each persist round, without IO (docs/design.md#group-commit);
// the contract is in persist_core.h.
//
// A round takes every queued block. Its requests come out one at a time: each block is
// copied under its stripe lock, together with its change number, when its write is asked
// for; after the last block come the checksum-table blocks that hold the entries of the
// blocks just copied, then one sync. Completing the round successfully publishes each
// copy's change number as durable. Only one round writes at a time, so a block changed
// while a round writes waits, queued, for the next one, and its older copy can never
// be written after the newer one. A driver may let the next round begin once every
// write of the current one has completed (writes_done), while its sync is outstanding.
#include "persist_core.h"

#include <llbitmap/detail/check.h>
#include <llbitmap/format.h>

#include <algorithm>

namespace llbitmap {

PersistCore::Round::Round(std::vector<std::uint64_t> blocks, std::uint32_t block_bytes)
    : blocks_(std::move(blocks)), seqs_(blocks_.size(), 0), buf_(block_bytes) {}

PersistCore::PersistCore(ChunkImage& image, std::vector<std::uint32_t> crc)
    : image_(image), crc_(std::move(crc)) {
  const std::uint64_t blocks = image_.geometry().blocks();
  LLBM_CHECK(crc_.size() == blocks, "PersistCore: %zu checksums for %llu blocks", crc_.size(),
             static_cast<unsigned long long>(blocks));
  detail::SpinLockGuard lock(qmu_);
  queued_.assign(blocks, true);
  pending_.reserve(blocks);
  for (std::uint64_t b = 0; b < blocks; ++b) pending_.push_back(b);
}

void PersistCore::enqueue(std::uint64_t block) noexcept {
  detail::SpinLockGuard lock(qmu_);
  if (!queued_[block]) {
    queued_[block] = true;
    pending_.push_back(block);
  }
}

void PersistCore::enqueue_target(const Target& target) noexcept {
  if (image_.durable_seq(target.block) < target.seq) enqueue(target.block);
}

bool PersistCore::has_queued() const noexcept {
  detail::SpinLockGuard lock(qmu_);
  return !pending_.empty();
}

std::optional<PersistCore::Round> PersistCore::begin_round() {
  std::vector<std::uint64_t> blocks;
  {
    detail::SpinLockGuard lock(qmu_);
    if (writing_) return std::nullopt;
    writing_ = true;
    ++open_;
    blocks.swap(pending_);
    for (std::uint64_t b : blocks) queued_[b] = false;
  }
  std::sort(blocks.begin(), blocks.end());
  return Round(std::move(blocks), image_.geometry().block_bytes());
}

PersistCore::Request PersistCore::next_request(Round& round) noexcept {
  LLBM_CHECK(!round.sync_planned_, "PersistCore %p: a request asked of a round after its sync",
             static_cast<void*>(this));
  const Geometry& geo = image_.geometry();
  const std::uint32_t bs = geo.block_bytes();
  std::span<std::byte> buf(round.buf_);
  if (round.next_block_ < round.blocks_.size()) {
    const std::size_t i = round.next_block_++;
    const std::uint64_t b = round.blocks_[i];
    round.seqs_[i] = image_.snapshot_block(b, buf);
    crc_[b] = block_crc(b, image_.uuid(), buf);
    return Request{Request::Kind::kBlock, b * bs, buf};
  }
  // The checksum-table blocks that hold the entries of the blocks just planned; blocks_
  // is ascending, so each table block comes up in one run.
  while (round.next_entry_ < round.blocks_.size()) {
    const std::uint64_t b = round.blocks_[round.next_entry_++];
    const std::uint64_t tb = (geo.checksum_offset(b) - geo.checksum_table_offset()) / bs;
    if (tb == round.last_table_block_) continue;
    round.last_table_block_ = tb;
    std::fill(buf.begin(), buf.end(), std::byte{0});
    const std::uint64_t first_entry = tb * bs / 4;
    for (std::uint64_t e = 0; e < bs / 4 && first_entry + e < geo.blocks(); ++e)
      store_le32(std::span<std::byte, 4>(buf.data() + e * 4, 4), crc_[first_entry + e]);
    return Request{Request::Kind::kChecksums, geo.checksum_table_offset() + tb * bs, buf};
  }
  round.sync_planned_ = true;
  return Request{};
}

void PersistCore::writes_done(Round& round) {
  LLBM_CHECK(round.sync_planned_ && !round.writes_done_,
             "PersistCore %p: writes_done of a round %s", static_cast<void*>(this),
             round.writes_done_ ? "twice" : "before its sync was planned");
  round.writes_done_ = true;
  detail::SpinLockGuard lock(qmu_);
  writing_ = false;
}

bool PersistCore::complete_round(Round round, std::error_code ec) {
  if (!ec) {
    LLBM_CHECK(round.sync_planned_, "PersistCore %p: a round completed before its sync",
               static_cast<void*>(this));
    for (std::size_t i = 0; i < round.blocks_.size(); ++i)
      image_.publish_durable(round.blocks_[i], round.seqs_[i]);
  }
  detail::SpinLockGuard lock(qmu_);
  LLBM_CHECK(open_ != 0, "PersistCore %p: a round completed with none open",
             static_cast<void*>(this));
  --open_;
  if (!round.writes_done_) writing_ = false;
  return !ec;
}

std::array<PersistCore::OwnedWrite, 2> PersistCore::stale_mark_requests() {
  const Geometry& geo = image_.geometry();
  const std::uint32_t bs = geo.block_bytes();
  std::array<OwnedWrite, 2> w{
      OwnedWrite{0, std::vector<std::byte>(bs)},
      OwnedWrite{geo.checksum_table_offset(), std::vector<std::byte>(bs, std::byte{0})}};
  image_.mark_superblock_and_snapshot(kSbStale | kSbWriteError, w[0].bytes);
  crc_[0] = block_crc(0, image_.uuid(), w[0].bytes);
  for (std::uint64_t e = 0; e < bs / 4 && e < geo.blocks(); ++e)
    store_le32(std::span<std::byte, 4>(w[1].bytes.data() + e * 4, 4), crc_[e]);
  return w;
}

}  // namespace llbitmap
