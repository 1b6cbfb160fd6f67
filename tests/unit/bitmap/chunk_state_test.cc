// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Chunk states (docs/testing.md#state-table): the transition table and apply_action() against an
// independent transcription of Linux 6.18's md-llbitmap state machine, exhaustively over every byte
// value, every action and every context; plus the properties the bitmap relies on. Where the
// function is constexpr, the same checks also run at compile time.
#include <llbitmap/chunk_state.h>

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llbitmap {
namespace {

// ---------------------------------------------------------------------------------
// Independent reference, written from the kernel source without using the header's
// table: plain byte values, and the table in the kernel's designated-initialiser form
// (only the entries that are not BitNone).

namespace ref {

constexpr std::uint8_t kUnwritten = 0, kClean = 1, kDirty = 2, kNeedSync = 3, kSyncing = 4,
                       kStateCount = 5, kNone = 0xff;
constexpr std::uint8_t kStartwrite = 0, kStartsync = 1, kEndsync = 2, kAbortsync = 3, kReload = 4,
                       kDaemon = 5, kDiscard = 6, kStale = 7, kActionCount = 8, kInit = 9;

struct Entry {
  std::uint8_t state, action, next;
};

// state_machine[][] of drivers/md/md-llbitmap.c, Linux 6.18: every entry that is not
// BitNone.
constexpr Entry kEntries[] = {
    {kUnwritten, kStartwrite, kDirty},

    {kClean, kStartwrite, kDirty},     {kClean, kDiscard, kUnwritten},
    {kClean, kStale, kNeedSync},

    {kDirty, kReload, kNeedSync},      {kDirty, kDaemon, kClean},
    {kDirty, kDiscard, kUnwritten},    {kDirty, kStale, kNeedSync},

    {kNeedSync, kStartsync, kSyncing}, {kNeedSync, kDiscard, kUnwritten},

    {kSyncing, kStartsync, kSyncing},  {kSyncing, kEndsync, kDirty},
    {kSyncing, kAbortsync, kNeedSync}, {kSyncing, kReload, kNeedSync},
    {kSyncing, kDiscard, kUnwritten},  {kSyncing, kStale, kNeedSync},
};

constexpr std::uint8_t table(std::uint8_t state, std::uint8_t action) {
  for (const Entry& e : kEntries)
    if (e.state == state && e.action == action) return e.next;
  return kNone;
}

struct Result {
  std::uint8_t next;
  bool invalid;
};

// llbitmap_state_machine() for one chunk, in the kernel's own control flow, plus the
// documented port rule "degraded: Daemon changes nothing" (the kernel's daemon does not
// run while degraded).
constexpr Result state_machine(std::uint8_t c, std::uint8_t action, bool degraded, bool level_456,
                               bool assume_clean, bool write_error) {
  if (write_error) return {kNone, false};
  if (action == kInit) return {assume_clean ? kClean : kUnwritten, false};

  std::uint8_t state = kNone;
  bool invalid = false;
  if (c >= kStateCount) {
    state = kNeedSync;
    invalid = true;
  } else {
    state = table(c, action);
  }
  if (degraded) {
    if (state == kDirty && action == kStartwrite)
      state = kNeedSync;
    else if (c == kDirty && action == kStartsync)
      state = kSyncing;
    else if (!invalid && action == kDaemon)
      state = kNone;
  } else if (c == kUnwritten && state == kDirty && action == kStartwrite && level_456) {
    state = kNeedSync;
  }
  return {state, invalid};
}

}  // namespace ref

constexpr std::array<Action, ref::kActionCount> kTableActions = {
    Action::kStartwrite, Action::kStartsync, Action::kEndsync, Action::kAbortsync,
    Action::kReload,     Action::kDaemon,    Action::kDiscard, Action::kStale};

constexpr std::array<Action, ref::kActionCount + 1> kAllActions = {
    Action::kStartwrite, Action::kStartsync, Action::kEndsync, Action::kAbortsync, Action::kReload,
    Action::kDaemon,     Action::kDiscard,   Action::kStale,   Action::kInit};

constexpr TransitionContext context_from_bits(unsigned bits) {
  return TransitionContext{.degraded = (bits & 1U) != 0,
                           .parity = (bits & 2U) != 0,
                           .assume_clean = (bits & 4U) != 0,
                           .write_error = (bits & 8U) != 0};
}
constexpr unsigned kContextCount = 16;

constexpr std::uint8_t byte_of(Action a) {
  return static_cast<std::uint8_t>(a);
}

constexpr bool matches_reference(std::uint8_t raw, Action action, const TransitionContext& ctx) {
  const ref::Result want = ref::state_machine(raw, byte_of(action), ctx.degraded, ctx.parity,
                                              ctx.assume_clean, ctx.write_error);
  const Transition got = apply_action(raw, action, ctx);
  return to_byte(got.next) == want.next && got.invalid == want.invalid;
}

// Every valid state x every action (table actions and Init) x every context.
constexpr bool all_valid_states_match_reference() {
  for (unsigned bits = 0; bits < kContextCount; ++bits)
    for (std::uint8_t raw = 0; raw < ref::kStateCount; ++raw)
      for (Action a : kAllActions)
        if (!matches_reference(raw, a, context_from_bits(bits))) return false;
  return true;
}

constexpr bool table_matches_reference() {
  for (std::uint8_t s = 0; s < ref::kStateCount; ++s)
    for (std::uint8_t a = 0; a < ref::kActionCount; ++a)
      if (to_byte(kStateMachine[s][a]) != ref::table(s, a)) return false;
  return true;
}

// ---------------------------------------------------------------------------------
// Compile-time checks.

static_assert(to_byte(ChunkState::kUnwritten) == 0 && to_byte(ChunkState::kClean) == 1 &&
              to_byte(ChunkState::kDirty) == 2 && to_byte(ChunkState::kNeedSync) == 3 &&
              to_byte(ChunkState::kSyncing) == 4 && to_byte(ChunkState::kNone) == 0xff);
static_assert(kChunkStateCount == 5 && kActionCount == 8);
static_assert(byte_of(Action::kStartwrite) == 0 && byte_of(Action::kStartsync) == 1 &&
              byte_of(Action::kEndsync) == 2 && byte_of(Action::kAbortsync) == 3 &&
              byte_of(Action::kReload) == 4 && byte_of(Action::kDaemon) == 5 &&
              byte_of(Action::kDiscard) == 6 && byte_of(Action::kStale) == 7 &&
              byte_of(Action::kCount) == 8 && byte_of(Action::kInit) == 9);
static_assert(table_matches_reference());
static_assert(all_valid_states_match_reference());

static_assert(apply_action(ChunkState::kClean, Action::kStartwrite).next == ChunkState::kDirty);
static_assert(apply_action(ChunkState::kDirty, Action::kDaemon).next == ChunkState::kClean);
static_assert(apply_action(ChunkState::kDirty, Action::kReload).next == ChunkState::kNeedSync);
static_assert(apply_action(ChunkState::kSyncing, Action::kReload).next == ChunkState::kNeedSync);
static_assert(apply_action(std::uint8_t{5}, Action::kDaemon) ==
              Transition{ChunkState::kNeedSync, true});
static_assert(apply_action(ChunkState::kNone, Action::kStartwrite) ==
              Transition{ChunkState::kNeedSync, true});
static_assert(apply_action(ChunkState::kUnwritten, Action::kStartwrite, {.degraded = true}).next ==
              ChunkState::kNeedSync);
static_assert(apply_action(ChunkState::kDirty, Action::kStartsync, {.degraded = true}).next ==
              ChunkState::kSyncing);
static_assert(apply_action(ChunkState::kUnwritten, Action::kStartwrite, {.parity = true}).next ==
              ChunkState::kNeedSync);
static_assert(apply_action(ChunkState::kDirty, Action::kInit).next == ChunkState::kUnwritten);
static_assert(apply_action(ChunkState::kDirty, Action::kInit, {.assume_clean = true}).next ==
              ChunkState::kClean);
static_assert(!apply_action(ChunkState::kDirty, Action::kStartwrite).changed());
static_assert(to_string(ChunkState::kNeedSync) == "need sync");
static_assert(needs_sync(ChunkState::kSyncing) && !needs_sync(ChunkState::kDirty));

// ---------------------------------------------------------------------------------
// Run-time checks (the same ones, reported per case, and the exhaustive invalid range).

std::string describe(unsigned raw, Action a, const TransitionContext& ctx) {
  return "byte " + std::to_string(raw) + " action " + std::string(to_string(a)) +
         " degraded=" + std::to_string(ctx.degraded) + " parity=" + std::to_string(ctx.parity) +
         " assume_clean=" + std::to_string(ctx.assume_clean) +
         " write_error=" + std::to_string(ctx.write_error);
}

TEST(ChunkStateTest, TableIsTheKernelTable) {
  for (std::uint8_t s = 0; s < ref::kStateCount; ++s)
    for (std::uint8_t a = 0; a < ref::kActionCount; ++a)
      EXPECT_EQ(to_byte(kStateMachine[s][a]), ref::table(s, a))
          << "state " << int{s} << " action " << int{a};
}

TEST(ChunkStateTest, EveryStateAndActionWithoutOverridesFollowsTheTable) {
  for (std::uint8_t s = 0; s < ref::kStateCount; ++s) {
    for (Action a : kTableActions) {
      const Transition t = apply_action(s, a);
      EXPECT_EQ(to_byte(t.next), ref::table(s, byte_of(a))) << describe(s, a, {});
      EXPECT_FALSE(t.invalid) << describe(s, a, {});
      EXPECT_EQ(t.changed(), ref::table(s, byte_of(a)) != ref::kNone) << describe(s, a, {});
      // The ChunkState overload is the same function.
      EXPECT_EQ(apply_action(static_cast<ChunkState>(s), a), t) << describe(s, a, {});
    }
  }
}

TEST(ChunkStateTest, EveryByteActionAndContextMatchesTheKernelStateMachine) {
  for (unsigned bits = 0; bits < kContextCount; ++bits) {
    const TransitionContext ctx = context_from_bits(bits);
    for (unsigned raw = 0; raw <= 0xff; ++raw)
      for (Action a : kAllActions)
        EXPECT_TRUE(matches_reference(static_cast<std::uint8_t>(raw), a, ctx))
            << describe(raw, a, ctx);
  }
}

TEST(ChunkStateTest, InvalidByteReadsAsNeedSyncForEveryAction) {
  for (unsigned bits = 0; bits < kContextCount; ++bits) {
    const TransitionContext ctx = context_from_bits(bits);
    if (ctx.write_error) continue;
    for (unsigned raw = ref::kStateCount; raw <= 0xff; ++raw) {
      const auto b = static_cast<std::uint8_t>(raw);
      EXPECT_FALSE(is_valid_state(b));
      EXPECT_EQ(decode_state(b), ChunkState::kNeedSync) << raw;
      for (Action a : kTableActions) {
        const Transition t = apply_action(b, a, ctx);
        EXPECT_EQ(t.next, ChunkState::kNeedSync) << describe(raw, a, ctx);
        EXPECT_TRUE(t.invalid) << describe(raw, a, ctx);
      }
    }
  }
  for (std::uint8_t raw = 0; raw < ref::kStateCount; ++raw) {
    EXPECT_TRUE(is_valid_state(raw));
    EXPECT_EQ(decode_state(raw), static_cast<ChunkState>(raw));
  }
}

TEST(ChunkStateTest, StartwriteNeverGivesCleanOrUnwritten) {
  for (unsigned bits = 0; bits < kContextCount; ++bits) {
    const TransitionContext ctx = context_from_bits(bits);
    for (unsigned raw = 0; raw <= 0xff; ++raw) {
      const auto b = static_cast<std::uint8_t>(raw);
      const ChunkState next = apply_action(b, Action::kStartwrite, ctx).next;
      EXPECT_NE(next, ChunkState::kClean) << describe(raw, Action::kStartwrite, ctx);
      EXPECT_NE(next, ChunkState::kUnwritten) << describe(raw, Action::kStartwrite, ctx);
      // After Startwrite the chunk is dirty-like: whatever it becomes (or stays) makes
      // a crash resync it.
      const ChunkState after = next == ChunkState::kNone ? decode_state(b) : next;
      if (!ctx.write_error) {
        EXPECT_TRUE(is_dirty_like(after)) << describe(raw, Action::kStartwrite, ctx);
      }
    }
  }
}

TEST(ChunkStateTest, DaemonOnlyTurnsDirtyIntoClean) {
  for (unsigned bits = 0; bits < kContextCount; ++bits) {
    const TransitionContext ctx = context_from_bits(bits);
    for (ChunkState s : kChunkStates) {
      const ChunkState next = apply_action(s, Action::kDaemon, ctx).next;
      const bool cleans = s == ChunkState::kDirty && !ctx.degraded && !ctx.write_error;
      EXPECT_EQ(next, cleans ? ChunkState::kClean : ChunkState::kNone)
          << describe(to_byte(s), Action::kDaemon, ctx);
    }
  }
}

TEST(ChunkStateTest, ReloadTurnsDirtyAndSyncingIntoNeedSyncOnly) {
  for (unsigned bits = 0; bits < kContextCount; ++bits) {
    const TransitionContext ctx = context_from_bits(bits);
    if (ctx.write_error) continue;
    for (ChunkState s : kChunkStates) {
      const ChunkState next = apply_action(s, Action::kReload, ctx).next;
      const bool resync = s == ChunkState::kDirty || s == ChunkState::kSyncing;
      EXPECT_EQ(next, resync ? ChunkState::kNeedSync : ChunkState::kNone)
          << describe(to_byte(s), Action::kReload, ctx);
    }
  }
}

TEST(ChunkStateTest, DegradedOverrides) {
  const TransitionContext degraded{.degraded = true};
  // New data on a degraded device needs sync, with or without parity.
  for (bool parity : {false, true}) {
    const TransitionContext ctx{.degraded = true, .parity = parity};
    EXPECT_EQ(apply_action(ChunkState::kUnwritten, Action::kStartwrite, ctx).next,
              ChunkState::kNeedSync);
    EXPECT_EQ(apply_action(ChunkState::kClean, Action::kStartwrite, ctx).next,
              ChunkState::kNeedSync);
  }
  // States the table leaves alone on Startwrite stay alone.
  EXPECT_EQ(apply_action(ChunkState::kDirty, Action::kStartwrite, degraded).next,
            ChunkState::kNone);
  EXPECT_EQ(apply_action(ChunkState::kNeedSync, Action::kStartwrite, degraded).next,
            ChunkState::kNone);
  EXPECT_EQ(apply_action(ChunkState::kSyncing, Action::kStartwrite, degraded).next,
            ChunkState::kNone);
  // Dirty chunks are resynced too; without degraded, Dirty + Startsync is no change.
  EXPECT_EQ(apply_action(ChunkState::kDirty, Action::kStartsync, degraded).next,
            ChunkState::kSyncing);
  EXPECT_EQ(apply_action(ChunkState::kDirty, Action::kStartsync).next, ChunkState::kNone);
  EXPECT_EQ(apply_action(ChunkState::kClean, Action::kStartsync, degraded).next, ChunkState::kNone);
  EXPECT_EQ(apply_action(ChunkState::kNeedSync, Action::kStartsync, degraded).next,
            ChunkState::kSyncing);
  // The daemon cleans nothing.
  EXPECT_EQ(apply_action(ChunkState::kDirty, Action::kDaemon, degraded).next, ChunkState::kNone);
  // Everything else is the table.
  for (ChunkState s : kChunkStates)
    for (Action a :
         {Action::kEndsync, Action::kAbortsync, Action::kReload, Action::kDiscard, Action::kStale})
      EXPECT_EQ(apply_action(s, a, degraded), apply_action(s, a))
          << describe(to_byte(s), a, degraded);
}

TEST(ChunkStateTest, ParityDelaysTheInitialBuildToTheFirstWrite) {
  const TransitionContext parity{.parity = true};
  EXPECT_EQ(apply_action(ChunkState::kUnwritten, Action::kStartwrite, parity).next,
            ChunkState::kNeedSync);
  EXPECT_EQ(apply_action(ChunkState::kUnwritten, Action::kStartwrite).next, ChunkState::kDirty);
  // Only Unwritten is affected: Clean has consistent parity already.
  EXPECT_EQ(apply_action(ChunkState::kClean, Action::kStartwrite, parity).next, ChunkState::kDirty);
  for (ChunkState s : kChunkStates)
    for (Action a : kTableActions) {
      if (s == ChunkState::kUnwritten && a == Action::kStartwrite) continue;
      EXPECT_EQ(apply_action(s, a, parity), apply_action(s, a)) << describe(to_byte(s), a, parity);
    }
}

TEST(ChunkStateTest, InitGivesUnwrittenOrCleanWithAssumeClean) {
  for (unsigned bits = 0; bits < kContextCount; ++bits) {
    const TransitionContext ctx = context_from_bits(bits);
    if (ctx.write_error) continue;
    const ChunkState want = ctx.assume_clean ? ChunkState::kClean : ChunkState::kUnwritten;
    for (unsigned raw = 0; raw <= 0xff; ++raw) {
      const Transition t = apply_action(static_cast<std::uint8_t>(raw), Action::kInit, ctx);
      EXPECT_EQ(t.next, want) << describe(raw, Action::kInit, ctx);
      EXPECT_FALSE(t.invalid) << describe(raw, Action::kInit, ctx);
    }
  }
}

TEST(ChunkStateTest, WriteErrorChangesNothing) {
  const TransitionContext failed{.write_error = true};
  for (unsigned raw = 0; raw <= 0xff; ++raw)
    for (Action a : kAllActions) {
      const Transition t = apply_action(static_cast<std::uint8_t>(raw), a, failed);
      EXPECT_FALSE(t.changed()) << describe(raw, a, failed);
      EXPECT_FALSE(t.invalid) << describe(raw, a, failed);
    }
}

TEST(ChunkStateTest, ResyncCycle) {
  // NeedSync --Startsync--> Syncing --Endsync--> Dirty --Daemon--> Clean; Abortsync
  // puts it back; Startsync again on Syncing reports Syncing (start_sync relies on it).
  ChunkState s = ChunkState::kNeedSync;
  s = apply_action(s, Action::kStartsync).next;
  EXPECT_EQ(s, ChunkState::kSyncing);
  EXPECT_EQ(apply_action(s, Action::kStartsync).next, ChunkState::kSyncing);
  EXPECT_EQ(apply_action(s, Action::kAbortsync).next, ChunkState::kNeedSync);
  s = apply_action(s, Action::kEndsync).next;
  EXPECT_EQ(s, ChunkState::kDirty);
  s = apply_action(s, Action::kDaemon).next;
  EXPECT_EQ(s, ChunkState::kClean);
}

TEST(ChunkStateTest, DiscardAndStale) {
  for (ChunkState s : kChunkStates) {
    const ChunkState discarded = apply_action(s, Action::kDiscard).next;
    EXPECT_EQ(discarded, s == ChunkState::kUnwritten ? ChunkState::kNone : ChunkState::kUnwritten)
        << to_string(s);
    // Stale: everything that may hold data needs sync afterwards, Unwritten stays.
    const Transition stale = apply_action(s, Action::kStale);
    const ChunkState after = stale.changed() ? stale.next : s;
    EXPECT_EQ(after, s == ChunkState::kUnwritten ? ChunkState::kUnwritten : ChunkState::kNeedSync)
        << to_string(s);
  }
}

TEST(ChunkStateTest, Predicates) {
  struct Row {
    ChunkState state;
    bool needs_sync, dirty_like;
  };
  const Row rows[] = {
      {ChunkState::kUnwritten, false, false}, {ChunkState::kClean, false, false},
      {ChunkState::kDirty, false, true},      {ChunkState::kNeedSync, true, true},
      {ChunkState::kSyncing, true, true},     {ChunkState::kNone, true, true},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(needs_sync(r.state), r.needs_sync) << to_string(r.state);
    EXPECT_EQ(is_dirty_like(r.state), r.dirty_like) << to_string(r.state);
    EXPECT_EQ(is_clean_like(r.state), !r.dirty_like) << to_string(r.state);
  }
  for (unsigned raw = ref::kStateCount; raw <= 0xff; ++raw) {
    const ChunkState s{static_cast<std::uint8_t>(raw)};
    EXPECT_TRUE(needs_sync(s)) << raw;
    EXPECT_TRUE(is_dirty_like(s)) << raw;
    EXPECT_FALSE(is_clean_like(s)) << raw;
  }
}

TEST(ChunkStateTest, Names) {
  EXPECT_EQ(to_string(ChunkState::kUnwritten), "unwritten");
  EXPECT_EQ(to_string(ChunkState::kClean), "clean");
  EXPECT_EQ(to_string(ChunkState::kDirty), "dirty");
  EXPECT_EQ(to_string(ChunkState::kNeedSync), "need sync");
  EXPECT_EQ(to_string(ChunkState::kSyncing), "syncing");
  EXPECT_EQ(to_string(ChunkState::kNone), "none");
  EXPECT_EQ(to_string(ChunkState{7}), "invalid");
  const std::vector<std::string_view> actions = {"startwrite", "startsync", "endsync",
                                                 "abortsync",  "reload",    "daemon",
                                                 "discard",    "stale",     "init"};
  for (std::size_t i = 0; i < kAllActions.size(); ++i)
    EXPECT_EQ(to_string(kAllActions[i]), actions[i]);
  EXPECT_EQ(to_string(Action::kCount), "invalid");
}

TEST(ChunkStateDeathTest, CountIsNotAnAction) {
  EXPECT_DEATH((void)apply_action(ChunkState::kClean, Action::kCount),
               "action 8 is not a table action");
}

}  // namespace
}  // namespace llbitmap
