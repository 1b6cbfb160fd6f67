// SPDX-License-Identifier: LGPL-2.1-or-later
//
// persist_core.h: PersistCore, the planning half of write-ahead persistence with group
// commit (docs/design.md#group-commit): the queue of changed blocks, the plan of one
// round, the checksum state and the durable change numbers a completed round publishes.
// It does no IO: a driver executes the requests it hands out on a Storage and reports
// the result. The Persister is the blocking driver (persister.h).
//
// Contract:
//   - enqueue / enqueue_target: called by whoever changed a block, once its stripe lock
//     is dropped. Take qmu_ briefly. Queuing is idempotent.
//   - begin_round(): takes every queued block (ascending) into a new round; std::nullopt
//     while another round is writing (opened, and writes_done not yet called for it), so
//     two snapshots of one block are never in flight together (S3). A block queued while
//     a round is writing goes to the next round.
//   - next_request(round): the round's requests, one per call, in the order they must be
//     issued: one kBlock write per block (the snapshot through ChunkImage::snapshot_block
//     is taken by this call, so a block's copy is as new as the moment its write is
//     asked for), then one kChecksums write per checksum-table block that holds an entry
//     of a written block, then one kSync. Every write must have completed before the
//     sync is issued, and the sync before complete_round(round, {}). A driver whose
//     write failed stops asking and completes the round with the error.
//   - writes_done(round): optional; says that the round's sync was planned and every
//     write of it has completed. The next round may then begin while this one's sync is
//     outstanding (pipelined rounds, docs/design.md#pipelined-rounds). A driver that never
//     calls it runs one round at a time (the round stays writing until completed).
//   - complete_round(round, ec): closes the round. On success (ec empty) publishes each
//     block's durable change number (the snapshot's; a number is only ever raised, so
//     rounds may complete in any order) and returns true; on failure
//     publishes nothing and returns false: the caller enters the failed state
//     (docs/design.md#failure-rule), whose stale mark is stale_mark_requests().
//   - stale_mark_requests(): sets kSbStale | kSbWriteError in the superblock and returns
//     the two writes that make it durable (block 0, then the checksum-table block that
//     holds its entry); the caller writes both in order and then syncs, best effort.
//   - Never blocks, sleeps, waits on a condition or does IO. Locks: qmu_ (the queue and
//     the open flag), held for a few loads and stores; the stripe locks inside
//     snapshot_block and mark_superblock_and_snapshot. qmu_ is never held while another
//     lock is taken, so it may be taken under any lock that is not a stripe lock.
//   - The round itself, and the checksum state (crc_), belong to the one driver thread
//     that holds the writing round: next_request, writes_done, complete_round and
//     stale_mark_requests are called by it only (the writing flag under qmu_ orders one
//     round's driver before the next one's). A round that is no longer writing touches
//     neither (complete_round only publishes).
#pragma once

#include <llbitmap/detail/cacheline.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <system_error>
#include <vector>

#include "chunk_image.h"
#include "spin_lock.h"

namespace llbitmap {

class PersistCore {
 public:
  // One request of a round. `bytes` points into the round and stays valid until the next
  // next_request on that round or its completion.
  struct Request {
    enum class Kind : std::uint8_t {
      kBlock,      // write the snapshot of a bitmap block at `offset`
      kChecksums,  // write a checksum-table block at `offset`
      kSync,       // make every write of the round durable (no offset, no bytes)
    };
    Kind kind = Kind::kSync;
    std::uint64_t offset = 0;
    std::span<const std::byte> bytes;
  };

  // A write whose bytes it owns (the stale mark).
  struct OwnedWrite {
    std::uint64_t offset = 0;
    std::vector<std::byte> bytes;
  };

  // One planned round. Move-only; handed back to complete_round.
  class Round {
   public:
    Round(Round&&) noexcept = default;
    Round& operator=(Round&&) noexcept = default;
    Round(const Round&) = delete;
    Round& operator=(const Round&) = delete;
    ~Round() = default;

    // The blocks the round writes, ascending.
    [[nodiscard]] const std::vector<std::uint64_t>& blocks() const noexcept { return blocks_; }
    // The change number of block blocks()[i]'s snapshot; 0 until its kBlock request was
    // handed out.
    [[nodiscard]] std::uint64_t snapshot_seq(std::size_t i) const noexcept { return seqs_[i]; }
    // True once next_request returned the round's kSync: every write was handed out.
    [[nodiscard]] bool sync_planned() const noexcept { return sync_planned_; }

   private:
    friend class PersistCore;
    Round(std::vector<std::uint64_t> blocks, std::uint32_t block_bytes);

    std::vector<std::uint64_t> blocks_;
    std::vector<std::uint64_t> seqs_;
    std::vector<std::byte> buf_;  // the bytes of the last request handed out
    std::size_t next_block_ = 0;  // blocks_ snapshotted so far
    std::size_t next_entry_ = 0;  // blocks_ whose table block is planned
    std::uint64_t last_table_block_ = UINT64_MAX;
    bool sync_planned_ = false;
    bool writes_done_ = false;  // writes_done() was called: no longer the writing round
  };

  // `crc` holds the checksum the file stores for every block. Every block is queued: the
  // first round rewrites the whole image and a fresh checksum table.
  PersistCore(ChunkImage& image, std::vector<std::uint32_t> crc);
  PersistCore(const PersistCore&) = delete;
  PersistCore& operator=(const PersistCore&) = delete;
  PersistCore(PersistCore&&) = delete;
  PersistCore& operator=(PersistCore&&) = delete;
  ~PersistCore() = default;

  void enqueue(std::uint64_t block) noexcept LLBM_EXCLUDES(qmu_);
  // Queues the target's block unless its change number `seq` is durable already.
  void enqueue_target(const Target& target) noexcept LLBM_EXCLUDES(qmu_);
  [[nodiscard]] bool has_queued() const noexcept LLBM_EXCLUDES(qmu_);

  [[nodiscard]] std::optional<Round> begin_round() LLBM_EXCLUDES(qmu_);
  [[nodiscard]] Request next_request(Round& round) noexcept;
  void writes_done(Round& round) LLBM_EXCLUDES(qmu_);
  bool complete_round(Round round, std::error_code ec) LLBM_EXCLUDES(qmu_);

  [[nodiscard]] std::array<OwnedWrite, 2> stale_mark_requests();

 private:
  ChunkImage& image_;
  // Per block, the checksum of its last planned snapshot. Only the driver of the open
  // round reads or writes it (see the contract); the analysis cannot express "the
  // driver of the open round", so it is not annotated.
  std::vector<std::uint32_t> crc_;

  // Taken by every change of a block (enqueue): on a line of its own.
  alignas(detail::kCacheLine) mutable detail::SpinLock qmu_;
  bool writing_ LLBM_GUARDED_BY(qmu_) = false;                // a round is writing
  std::size_t open_ LLBM_GUARDED_BY(qmu_) = 0;                // rounds not completed
  std::vector<std::uint64_t> pending_ LLBM_GUARDED_BY(qmu_);  // queued blocks
  std::vector<bool> queued_ LLBM_GUARDED_BY(qmu_);            // per block: in pending_
};

}  // namespace llbitmap
