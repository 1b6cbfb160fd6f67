// SPDX-License-Identifier: LGPL-2.1-or-later
//
// recovery.h: the crash-recovery rule of open, as one pure function. Bitmap::open
// applies it to the image it has just read, and `llbitmap examine` applies it to a copy
// to show what a reopen would resynchronise; both get the same answer because there is
// only this one rule (docs/design.md#crash-recovery-on-open, docs/design.md#s4).
//
// Layer 3. The rule, chunk by chunk, for a file whose superblock decoded:
//
//   0. A superblock with kSbFirstUse says the state bytes were never initialised
//      (mdadm's BITMAP_FIRST_USE): every chunk becomes Unwritten, or Clean when
//      kSbClean is set too (the kernel's Init), and nothing stored is read, checksums
//      included; rules 1-3 do not apply. The caller clears the flag once the new states
//      are durable (Bitmap::open does, with its second sync).
//   1. The action is Stale when the superblock's state has kSbStale or kSbWriteError
//      (the bitmap was out of date or failed: every chunk ever written must be
//      resynchronised), Reload otherwise (a clean close or a crash).
//   2. A chunk whose state byte lies in a block that fails its checksum becomes
//      NeedSync, whatever the byte says: nothing in that block can be trusted, and a
//      zeroed block would otherwise read as Unwritten and skip the resync.
//   3. Every other chunk gets apply_action(byte, action) (chunk_state.h):
//        Reload: Dirty, Syncing -> NeedSync; Unwritten, Clean, NeedSync kept;
//        Stale:  Clean, Dirty, Syncing -> NeedSync; Unwritten, NeedSync kept;
//        a byte that is not a state -> NeedSync (counted in invalid_bytes).
//   Invalid bytes are counted in bad blocks too (the count is of the stored bytes).
//   4. Out of date: when the caller says the file is older than its device (its events
//      are below the engine's record, OpenOptions::min_events), every chunk becomes
//      NeedSync, Unwritten included: an old copy's Unwritten and Clean say nothing
//      about writes made after it (md's classic bitmap does a full recovery for an
//      out-of-date bitmap too). The counts above are still made.
//
// So after recovery every chunk is Unwritten, Clean or NeedSync, an Unwritten or Clean
// chunk held that very byte in a block that verifies, and a chunk with a write in
// flight at the crash (durably Dirty-like, docs/design.md#s1) is NeedSync.
//
// Pure: no IO, no clock, no global state, no logging (the caller reports what it
// found). Reentrant; nothing blocks.
#pragma once

#include <llbitmap/chunk_state.h>
#include <llbitmap/format.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace llbitmap {

// What recover_chunk_states found in a stored image.
struct RecoveryReport {
  Action action = Action::kReload;  // Action::kReload, or Action::kStale (rule 1)
  // Rule 0 applied: every chunk was re-initialised; `action` (rule 1's answer) was not
  // applied and the counts below stay zero.
  bool first_use = false;
  // Stored state bytes that were not a state (now NeedSync).
  std::uint64_t invalid_bytes = 0;
  // The first of them, for a message; meaningful when invalid_bytes != 0.
  std::uint64_t first_invalid_chunk = 0;
  std::uint8_t first_invalid_byte = 0;
  // Blocks whose checksum fails (ascending), as unverifiable_blocks() gives them,
  // superblock-only and tail-only blocks included.
  std::vector<std::uint64_t> bad_blocks;
  // Chunks whose state bytes lie in those blocks (all NeedSync now).
  std::uint64_t bad_block_chunks = 0;
  // Rule 4 was applied: every chunk is NeedSync.
  bool out_of_date = false;
};

// True if a superblock with this `state` is recovered with Action::kStale.
[[nodiscard]] constexpr bool recovers_as_stale(std::uint32_t sb_state) noexcept {
  return (sb_state & (kSbStale | kSbWriteError)) != 0;
}

// Applies the rule above to `image`, in place: it holds the stored image on entry
// (as read from the file, checksums not yet checked) and the recovered in-memory states
// on return. Only chunk state bytes change; the superblock area and the zero tail are
// left alone. Blocks are verified against `table` with sb.uuid (verify_block).
// `out_of_date` applies rule 4 on top. Requires (LLBM_CHECK): sb.geometry.valid(),
// image.size() == image_bytes(), table.size() == checksum_table_bytes().
[[nodiscard]] RecoveryReport recover_chunk_states(const Superblock& sb, std::span<std::byte> image,
                                                  std::span<const std::byte> table,
                                                  bool out_of_date = false);

}  // namespace llbitmap
