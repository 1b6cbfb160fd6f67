// SPDX-License-Identifier: LGPL-2.1-or-later
//
// chunk_state.h: the state of one chunk (one byte of the bitmap image), the actions
// that change it, and the transition function: the port of md-llbitmap's
// `enum llbitmap_state`, `enum llbitmap_action`, `state_machine[][]` and the
// per-chunk part of `llbitmap_state_machine()` (Linux 6.18).
//
// Layer 3. Pure: no threads, no IO, no allocation, no global state. Everything here
// is constexpr and may be called from any thread at any time; serialising the writes
// of the resulting bytes into a page is the caller's business.
//
// States (the byte values are the on-disk format and never change):
//
//   | byte | state     | meaning                                                      |
//   |------|-----------|--------------------------------------------------------------|
//   | 0    | Unwritten | no valid data; the state after creation                      |
//   | 1    | Clean     | the copies agree                                             |
//   | 2    | Dirty     | the copies agree once the writes in flight have completed    |
//   | 3    | NeedSync  | the copies must be resynchronised                            |
//   | 4    | Syncing   | a resync of the chunk is in progress                         |
//   | 5-254| (invalid) | read as NeedSync                                             |
//   | 255  | (kNone)   | not a state: "no change" in the table and in results; as a   |
//   |      |           | byte it is invalid like 5-254, so it reads as NeedSync       |
//
// ChunkState::kNone is an enumerator (as BitNone is in the kernel's enum) so that the
// table is a plain ChunkState[5][8]; it is never stored as a state.
//
// Transition table, kStateMachine[state][action] (x = kNone, no change):
//
//   | state \ action | Startwrite | Startsync | Endsync | Abortsync |
//   |----------------|------------|-----------|---------|-----------|
//   | Unwritten      | Dirty      | x         | x       | x         |
//   | Clean          | Dirty      | x         | x       | x         |
//   | Dirty          | x          | x         | x       | x         |
//   | NeedSync       | x          | Syncing   | x       | x         |
//   | Syncing        | x          | Syncing   | Dirty   | NeedSync  |
//
//   | state \ action | Reload     | Daemon    | Discard   | Stale     |
//   |----------------|------------|-----------|-----------|-----------|
//   | Unwritten      | x          | x         | x         | x         |
//   | Clean          | x          | x         | Unwritten | NeedSync  |
//   | Dirty          | NeedSync   | Clean     | Unwritten | NeedSync  |
//   | NeedSync       | x          | x         | Unwritten | x         |
//   | Syncing        | NeedSync   | x         | Unwritten | NeedSync  |
//
// apply_action(byte, action, context) applies the table plus these overrides, in
// this order (the kernel's order):
//
//   1. write_error (the bitmap failed to persist): every action, Init included, gives
//      kNone. Nothing changes any more.
//   2. Init does not use the table: it gives Unwritten, or Clean with assume_clean,
//      whatever the byte holds.
//   3. A byte outside [0, 5) is reported as invalid and gives NeedSync for every
//      action (the caller logs it; the chunk is resynchronised).
//   4. degraded:
//        - Startwrite that would give Dirty gives NeedSync (new data on a degraded
//          device must be copied to the member that comes back);
//        - Dirty + Startsync gives Syncing (resync Dirty chunks too);
//        - Daemon gives kNone: Dirty is never cleaned while degraded. The kernel
//          gets the same effect by not running its daemon at all while degraded
//          (md_llbitmap_daemon_fn returns early); keeping it here means no caller
//          (daemon pass, flush) can forget it.
//   5. not degraded, parity (raid456): Unwritten + Startwrite gives NeedSync (the
//      initial parity build is delayed to the first write).
//
// Consequences every consumer may rely on (tested): Startwrite never gives Clean or
// Unwritten; Daemon only ever turns Dirty into Clean; Reload turns Dirty and Syncing
// into NeedSync and leaves every other state alone; an invalid byte always gives
// NeedSync (unless write_error).
//
// Side effects of the kernel's llbitmap_state_machine (arming the daemon timer when a
// chunk becomes Dirty, requesting a resync when one becomes NeedSync, marking the
// block for writeback) belong to the bitmap, not here.
#pragma once

#include <llbitmap/detail/check.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace llbitmap {

enum class ChunkState : std::uint8_t {
  kUnwritten = 0,
  kClean = 1,
  kDirty = 2,
  kNeedSync = 3,
  kSyncing = 4,
  // Not a state: "no change". Never stored on purpose; if it is, it reads as NeedSync.
  kNone = 0xff,
};

// Number of real states: bytes [0, kChunkStateCount) are states.
inline constexpr std::size_t kChunkStateCount = 5;

// The real states, in byte order (for counting, iterating in tests and tools).
inline constexpr std::array<ChunkState, kChunkStateCount> kChunkStates = {
    ChunkState::kUnwritten, ChunkState::kClean, ChunkState::kDirty, ChunkState::kNeedSync,
    ChunkState::kSyncing};

enum class Action : std::uint8_t {
  kStartwrite = 0,  // a write is about to be issued (the only action on the IO fast path)
  kStartsync,       // resync of the chunk starts
  kEndsync,         // resync of the chunk finished
  kAbortsync,       // resync failed or was interrupted
  kReload,          // the bitmap is opened again (after a clean close or a crash)
  kDaemon,          // the daemon cleans an idle page
  kDiscard,         // the data of the chunk was discarded
  kStale,           // the bitmap is out of date: everything written must be resynced
  kCount,           // number of table actions; not an action
  kInit,            // creation: outside the table
};

// Number of table columns; Action values below this index the table.
inline constexpr std::size_t kActionCount = static_cast<std::size_t>(Action::kCount);

// The kernel's state_machine[BitStateCount][BitmapActionCount] (Linux 6.18), indexed
// [byte of the current state][action]. kNone = no change.
inline constexpr std::array<std::array<ChunkState, kActionCount>, kChunkStateCount> kStateMachine =
    [] {
      // One-letter names, so that the rows below read like the kernel's table.
      // NOLINTBEGIN(readability-identifier-naming)
      constexpr ChunkState U = ChunkState::kUnwritten, C = ChunkState::kClean,
                           D = ChunkState::kDirty, N = ChunkState::kNeedSync,
                           Y = ChunkState::kSyncing, x = ChunkState::kNone;
      // NOLINTEND(readability-identifier-naming)
      return std::array<std::array<ChunkState, kActionCount>, kChunkStateCount>{{
          // Startwrite Startsync Endsync Abortsync Reload Daemon Discard Stale
          {D, x, x, x, x, x, x, x},  // Unwritten
          {D, x, x, x, x, x, U, N},  // Clean
          {x, x, x, x, N, C, U, N},  // Dirty
          {x, Y, x, x, x, x, U, x},  // NeedSync
          {x, Y, D, N, N, x, U, N},  // Syncing
      }};
    }();

// What the bitmap knows when it applies an action. Aggregate: use designated
// initialisers, e.g. TransitionContext{.degraded = true}.
struct TransitionContext {
  bool degraded = false;      // a member is missing (md: mddev->degraded)
  bool parity = false;        // parity layout: the raid456 first-write rule
  bool assume_clean = false;  // Init gives Clean instead of Unwritten
  bool write_error = false;   // the bitmap failed (BITMAP_WRITE_ERROR): nothing changes
};

// Result of applying one action to one byte.
struct Transition {
  // The new state, or ChunkState::kNone when the byte must be left as it is. A result
  // equal to the current state (Syncing + Startsync) is still returned as that state,
  // as in the kernel: start_sync tests for it.
  ChunkState next = ChunkState::kNone;
  // The byte was read and was not a state; `next` is NeedSync. The caller should log
  // it (the kernel prints "invalid bit ... forcing resync"). False for Init and under
  // write_error, which do not read the byte.
  bool invalid = false;

  [[nodiscard]] constexpr bool changed() const noexcept { return next != ChunkState::kNone; }
  friend constexpr bool operator==(const Transition&, const Transition&) = default;
};

// True if `raw` is one of the five states.
[[nodiscard]] constexpr bool is_valid_state(std::uint8_t raw) noexcept {
  return raw < kChunkStateCount;
}

// The state a byte of the image stands for: itself, or NeedSync if it is not a state.
[[nodiscard]] constexpr ChunkState decode_state(std::uint8_t raw) noexcept {
  return is_valid_state(raw) ? static_cast<ChunkState>(raw) : ChunkState::kNeedSync;
}

[[nodiscard]] constexpr std::uint8_t to_byte(ChunkState state) noexcept {
  return static_cast<std::uint8_t>(state);
}

// The predicates below are defined for every byte value (a ChunkState made from any
// std::uint8_t, kNone included): a value that is not a state counts as NeedSync.

// The chunk must be copied by a resync: NeedSync, Syncing, or not a state.
[[nodiscard]] constexpr bool needs_sync(ChunkState state) noexcept {
  const ChunkState s = decode_state(to_byte(state));
  return s == ChunkState::kNeedSync || s == ChunkState::kSyncing;
}

// A crash with this byte on disk leads to a resync of the chunk (Reload turns Dirty
// and Syncing into NeedSync): everything except Unwritten and Clean. A chunk with a
// write in flight must be durably dirty-like (docs/design.md#s1, docs/design.md#s2).
[[nodiscard]] constexpr bool is_dirty_like(ChunkState state) noexcept {
  return state != ChunkState::kUnwritten && state != ChunkState::kClean;
}

// A resync may skip the chunk after a crash: Unwritten or Clean. Never durable for a
// chunk with a write in flight (docs/design.md#s1).
[[nodiscard]] constexpr bool is_clean_like(ChunkState state) noexcept {
  return !is_dirty_like(state);
}

// Applies `action` to the chunk whose byte is `raw`, with the overrides listed at the
// top of this file. Requires: action is a table action or Action::kInit (kCount, or
// any other value, aborts).
[[nodiscard]] constexpr Transition apply_action(std::uint8_t raw, Action action,
                                                const TransitionContext& ctx = {}) noexcept {
  if (ctx.write_error) return {};
  if (action == Action::kInit)
    return {ctx.assume_clean ? ChunkState::kClean : ChunkState::kUnwritten, false};
  const auto column = static_cast<std::size_t>(action);
  LLBM_CHECK(column < kActionCount, "chunk state: action %u is not a table action",
             static_cast<unsigned>(column));
  if (!is_valid_state(raw)) return {ChunkState::kNeedSync, true};

  const auto current = static_cast<ChunkState>(raw);
  ChunkState next = kStateMachine[raw][column];
  if (ctx.degraded) {
    if (action == Action::kStartwrite && next == ChunkState::kDirty)
      next = ChunkState::kNeedSync;
    else if (action == Action::kStartsync && current == ChunkState::kDirty)
      next = ChunkState::kSyncing;
    else if (action == Action::kDaemon)
      next = ChunkState::kNone;
  } else if (ctx.parity && action == Action::kStartwrite && current == ChunkState::kUnwritten &&
             next == ChunkState::kDirty) {
    next = ChunkState::kNeedSync;
  }
  return {next, false};
}

// Same, for a state already decoded (or kNone, which reads as NeedSync).
[[nodiscard]] constexpr Transition apply_action(ChunkState state, Action action,
                                                const TransitionContext& ctx = {}) noexcept {
  return apply_action(to_byte(state), action, ctx);
}

// Names as in the kernel's sysfs `bits` file: "unwritten", "clean", "dirty",
// "need sync", "syncing"; "none" for kNone and "invalid" for any other byte.
[[nodiscard]] constexpr std::string_view to_string(ChunkState state) noexcept {
  switch (state) {
    case ChunkState::kUnwritten:
      return "unwritten";
    case ChunkState::kClean:
      return "clean";
    case ChunkState::kDirty:
      return "dirty";
    case ChunkState::kNeedSync:
      return "need sync";
    case ChunkState::kSyncing:
      return "syncing";
    case ChunkState::kNone:
      return "none";
  }
  return "invalid";
}

// Action names for messages: "startwrite", "startsync", "endsync", "abortsync",
// "reload", "daemon", "discard", "stale", "init"; "invalid" otherwise.
[[nodiscard]] constexpr std::string_view to_string(Action action) noexcept {
  switch (action) {
    case Action::kStartwrite:
      return "startwrite";
    case Action::kStartsync:
      return "startsync";
    case Action::kEndsync:
      return "endsync";
    case Action::kAbortsync:
      return "abortsync";
    case Action::kReload:
      return "reload";
    case Action::kDaemon:
      return "daemon";
    case Action::kDiscard:
      return "discard";
    case Action::kStale:
      return "stale";
    case Action::kInit:
      return "init";
    case Action::kCount:
      break;
  }
  return "invalid";
}

}  // namespace llbitmap
