// SPDX-License-Identifier: LGPL-2.1-or-later
//
// fuzz_open.cc: the libFuzzer target for opening arbitrary bytes as a bitmap file
// (docs/testing.md#fuzzing). It proves, for every input the fuzzer (or the regression
// runner) gives it, the properties listed in fuzz_open.h: decode and open refuse with a
// typed error and write nothing, or accept and recover exactly what S4 demands (docs/design.md#s4)
// (bad block -> NeedSync, Reload/Stale on the rest, no Clean or Unwritten invented),
// with consistent counts, needs_sync() runs and durable image, and a clean close after
// which a second open changes nothing. Sanitizers (ASan, UBSan) catch the rest: reads
// past the image when geometry fields disagree with the file, overflow in the
// chunk -> page -> block arithmetic.
#include "fuzz_open.h"

#include <llbitmap/bitmap.h>
#include <llbitmap/chunk_state.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/testing/fault_storage.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace llbitmap::fuzz {

namespace {

int g_report_fd = 2;

[[noreturn]] __attribute__((format(printf, 2, 3))) void violated(int line, const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  char out[1200];
  const int n = std::snprintf(out, sizeof out,
                              "fuzz_open: property violated (fuzz_open.cc:%d): %s\n", line, msg);
  if (n > 0) {
    const std::size_t len = std::min(static_cast<std::size_t>(n), sizeof out - 1);
    ssize_t ignored = ::write(g_report_fd, out, len);
    (void)ignored;
  }
  std::abort();
}

#define FUZZ_REQUIRE(cond, ...)                   \
  do {                                            \
    if (!(cond)) violated(__LINE__, __VA_ARGS__); \
  } while (0)

using Bytes = std::vector<std::byte>;
using ull = unsigned long long;

// A Storage that forwards to a FaultStorage the caller keeps, so that the caller can
// still look at it after open() destroyed the Storage it was given (a refused file).
class SharedStorage final : public Storage {
 public:
  explicit SharedStorage(std::shared_ptr<FaultStorage> s) : s_(std::move(s)) {}
  std::error_code read(std::uint64_t offset, std::span<std::byte> out) override {
    return s_->read(offset, out);
  }
  std::error_code write(std::uint64_t offset, std::span<const std::byte> data) override {
    return s_->write(offset, data);
  }
  std::error_code sync() override { return s_->sync(); }
  std::error_code size(std::uint64_t& bytes) override { return s_->size(bytes); }

 private:
  std::shared_ptr<FaultStorage> s_;
};

// A refusal must be typed: an llbitmap::Errc, or a std::errc (generic category).
void require_typed_error(const std::error_code& ec, const char* what) {
  FUZZ_REQUIRE(ec, "%s refused without an error code", what);
  FUZZ_REQUIRE(ec.category() == llbitmap_category() || ec.category() == std::generic_category(),
               "%s refused with an untyped error: category %s, value %d (%s)", what,
               ec.category().name(), ec.value(), ec.message().c_str());
}

const char* state_name(ChunkState s) {
  switch (s) {
    case ChunkState::kUnwritten:
      return "Unwritten";
    case ChunkState::kClean:
      return "Clean";
    case ChunkState::kDirty:
      return "Dirty";
    case ChunkState::kNeedSync:
      return "NeedSync";
    case ChunkState::kSyncing:
      return "Syncing";
    case ChunkState::kNone:
      return "None";
  }
  return "?";
}

std::uint8_t byte_at(std::span<const std::byte> b, std::uint64_t pos) {
  return std::to_integer<std::uint8_t>(b[pos]);
}

// decode() on its own: refusals are typed, acceptances round-trip, and the size check
// only ever adds size_mismatch.
std::optional<Superblock> check_decode(std::span<const std::byte> img) {
  std::error_code ec_any;
  const std::optional<Superblock> any = Superblock::decode(img, ec_any);
  if (any) {
    FUZZ_REQUIRE(!ec_any, "decode accepted but left an error (%s)", ec_any.message().c_str());
    FUZZ_REQUIRE(any->geometry.valid(), "decode accepted an empty geometry");
    FUZZ_REQUIRE(img.size() >= kSuperblockBytes, "decode accepted %zu bytes", img.size());
    std::array<std::byte, kSuperblockBytes> again{};
    any->encode(again);
    FUZZ_REQUIRE(std::equal(again.begin(), again.end(), img.begin()),
                 "decode accepted a superblock that does not re-encode to the same bytes");
  } else {
    require_typed_error(ec_any, "Superblock::decode");
  }
  std::error_code ec;
  std::optional<Superblock> sb = Superblock::decode(img, ec, img.size());
  if (!any) {
    FUZZ_REQUIRE(!sb && ec == ec_any,
                 "decode with the file size disagrees with decode without it (%s vs %s)",
                 ec.message().c_str(), ec_any.message().c_str());
  } else if (!sb) {
    FUZZ_REQUIRE(ec == Errc::size_mismatch,
                 "decode refused a valid superblock with %s, not size_mismatch",
                 ec.message().c_str());
    FUZZ_REQUIRE(any->geometry.file_bytes() != img.size(), "size_mismatch for a matching size");
  } else {
    FUZZ_REQUIRE(*sb == *any, "decode with the file size gave another superblock");
    FUZZ_REQUIRE(sb->geometry.file_bytes() == img.size(),
                 "decode accepted a file of %zu bytes "
                 "for a geometry of %llu",
                 img.size(), static_cast<ull>(sb->geometry.file_bytes()));
  }
  return sb;
}

// What open() must have recovered for every chunk of `img`, whose superblock is `sb`.
std::vector<ChunkState> expected_states(const Superblock& sb, std::span<const std::byte> img,
                                        std::uint64_t& invalid, std::uint64_t& bad_blocks) {
  const Geometry& g = sb.geometry;
  const std::span<const std::byte> image = img.first(g.image_bytes());
  const std::span<const std::byte> table =
      img.subspan(g.checksum_table_offset(), g.checksum_table_bytes());
  const std::vector<std::uint64_t> bad = unverifiable_blocks(g, sb.uuid, image, table);
  bad_blocks = bad.size();
  std::vector<bool> is_bad(g.blocks(), false);
  for (std::size_t i = 0; i < bad.size(); ++i) {
    FUZZ_REQUIRE(bad[i] < g.blocks(), "unverifiable block %llu past the image",
                 static_cast<ull>(bad[i]));
    FUZZ_REQUIRE(i == 0 || bad[i - 1] < bad[i], "unverifiable_blocks not ascending");
    is_bad[bad[i]] = true;
  }
  for (std::uint64_t b = 0; b < g.blocks(); ++b)
    FUZZ_REQUIRE(verify_block(g, sb.uuid, image, table, b) == !is_bad[b],
                 "verify_block and unverifiable_blocks disagree on block %llu",
                 static_cast<ull>(b));

  std::vector<ChunkState> want(g.chunks());
  invalid = 0;
  // Rule 0 (recovery.h): never initialised. Every chunk is Init's state, nothing stored
  // is read (no invalid byte, no bad block counted), whatever else the state says.
  if ((sb.state & kSbFirstUse) != 0) {
    bad_blocks = 0;
    std::fill(want.begin(), want.end(),
              (sb.state & kSbClean) != 0 ? ChunkState::kClean : ChunkState::kUnwritten);
    return want;
  }
  const bool stale = (sb.state & (kSbStale | kSbWriteError)) != 0;
  const Action action = stale ? Action::kStale : Action::kReload;
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    const std::uint8_t raw = byte_at(image, g.chunk_pos(c));
    if (!is_valid_state(raw)) ++invalid;
    if (is_bad[g.block_of_chunk(c)]) {
      want[c] = ChunkState::kNeedSync;
      continue;
    }
    const Transition t = apply_action(raw, action);
    want[c] = t.changed() ? t.next : decode_state(raw);
  }
  return want;
}

void check_counts(const Bitmap& bm, const std::vector<ChunkState>& states) {
  const StateCounts n = bm.counts();
  const std::uint64_t sum = n.unwritten + n.clean + n.dirty + n.need_sync + n.syncing;
  FUZZ_REQUIRE(sum == bm.chunks(), "counts sum to %llu, chunks() is %llu", static_cast<ull>(sum),
               static_cast<ull>(bm.chunks()));
  StateCounts t{0, 0, 0, 0, 0};
  for (ChunkState s : states) {
    switch (s) {
      case ChunkState::kUnwritten:
        ++t.unwritten;
        break;
      case ChunkState::kClean:
        ++t.clean;
        break;
      case ChunkState::kDirty:
        ++t.dirty;
        break;
      case ChunkState::kNeedSync:
        ++t.need_sync;
        break;
      case ChunkState::kSyncing:
        ++t.syncing;
        break;
      case ChunkState::kNone:
        FUZZ_REQUIRE(false, "state() returned kNone");
    }
  }
  FUZZ_REQUIRE(t.unwritten == n.unwritten && t.clean == n.clean && t.dirty == n.dirty &&
                   t.need_sync == n.need_sync && t.syncing == n.syncing,
               "counts() (%llu U, %llu C, %llu D, %llu N, %llu S) disagree with state()",
               static_cast<ull>(n.unwritten), static_cast<ull>(n.clean), static_cast<ull>(n.dirty),
               static_cast<ull>(n.need_sync), static_cast<ull>(n.syncing));
}

void check_needs_sync(const Bitmap& bm, const std::vector<ChunkState>& states) {
  const Geometry& g = bm.geometry();
  const std::uint64_t dev = g.device_bytes();
  std::uint64_t want = 0;
  for (ChunkState s : states) want += needs_sync(s) ? 1 : 0;
  std::uint64_t covered = 0, prev_end = 0;
  bool first = true;
  for (const auto& [off, len] : bm.needs_sync()) {
    FUZZ_REQUIRE(len > 0, "empty needs_sync run at %llu", static_cast<ull>(off));
    FUZZ_REQUIRE(off < dev && len <= dev - off,
                 "needs_sync run (%llu, %llu) past the device (%llu)", static_cast<ull>(off),
                 static_cast<ull>(len), static_cast<ull>(dev));
    FUZZ_REQUIRE(first || off >= prev_end, "needs_sync runs unsorted or overlapping at %llu",
                 static_cast<ull>(off));
    FUZZ_REQUIRE(off % g.chunk_bytes() == 0, "needs_sync run at %llu not chunk-aligned",
                 static_cast<ull>(off));
    const std::uint64_t end = off + len;
    FUZZ_REQUIRE(end == dev || end % g.chunk_bytes() == 0,
                 "needs_sync run ends at %llu, neither a chunk boundary nor the device end",
                 static_cast<ull>(end));
    for (std::uint64_t c = g.chunk_of(off); c <= g.chunk_of(end - 1); ++c) {
      FUZZ_REQUIRE(needs_sync(states[c]), "needs_sync covers chunk %llu, which is %s",
                   static_cast<ull>(c), state_name(states[c]));
      ++covered;
    }
    prev_end = end;
    first = false;
  }
  FUZZ_REQUIRE(covered == want, "needs_sync covers %llu chunks, %llu need a resync",
               static_cast<ull>(covered), static_cast<ull>(want));
}

// The durable image must decode as `sb` with `events`, not stale, verify everywhere, and
// hold exactly `states`.
void check_durable(const Bytes& durable, std::size_t file_bytes, const Superblock& sb,
                   std::uint64_t events, const std::vector<ChunkState>& states, const char* when) {
  FUZZ_REQUIRE(durable.size() == file_bytes, "%s: the file changed size (%zu -> %zu)", when,
               file_bytes, durable.size());
  std::error_code ec;
  const std::optional<Superblock> d = Superblock::decode(durable, ec, durable.size());
  FUZZ_REQUIRE(d.has_value(), "%s: the durable superblock does not decode (%s)", when,
               ec.message().c_str());
  FUZZ_REQUIRE(d->geometry == sb.geometry && d->uuid == sb.uuid,
               "%s: the durable superblock changed geometry or uuid", when);
  FUZZ_REQUIRE((d->state & (kSbStale | kSbWriteError)) == 0, "%s: still stale (state %#x)", when,
               d->state);
  FUZZ_REQUIRE(d->events == events, "%s: events %llu, want %llu", when, static_cast<ull>(d->events),
               static_cast<ull>(events));
  const Geometry& g = sb.geometry;
  const std::span<const std::byte> all(durable);
  const std::vector<std::uint64_t> bad =
      unverifiable_blocks(g, d->uuid, all.first(g.image_bytes()),
                          all.subspan(g.checksum_table_offset(), g.checksum_table_bytes()));
  FUZZ_REQUIRE(bad.empty(), "%s: %zu durable blocks fail their checksum (first %llu)", when,
               bad.size(), static_cast<ull>(bad.empty() ? 0 : bad.front()));
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    const std::uint8_t raw = byte_at(all, g.chunk_pos(c));
    FUZZ_REQUIRE(is_valid_state(raw), "%s: durable byte %#x of chunk %llu is not a state", when,
                 raw, static_cast<ull>(c));
    FUZZ_REQUIRE(raw == to_byte(states[c]), "%s: chunk %llu is durably %s, in memory %s", when,
                 static_cast<ull>(c), state_name(static_cast<ChunkState>(raw)),
                 state_name(states[c]));
  }
}

// close() with no write in flight. close() gives the pages 100 ms to drain, counted from
// the kill, so a grace period slower than that (a loaded machine, or any thread sitting in
// a liburcu read-side section) makes it report Errc::busy although nothing is in flight;
// the bitmap then stays open and a later close() succeeds. That is tolerated here (with a
// note) so that the fuzz run does not fail on machine load; LLBITMAP_FUZZ_STRICT_CLOSE=1
// makes the first busy a violation. A reference that is really leaked fails every retry.
std::error_code close_idle(Bitmap& bm) {
  static const bool strict = std::getenv("LLBITMAP_FUZZ_STRICT_CLOSE") != nullptr;
  static bool noted = false;
  std::error_code ec = bm.close();
  for (int i = 0; ec == Errc::busy && !strict && i < 50; ++i) {
    if (!noted) {
      noted = true;
      static const char kNote[] =
          "fuzz_open: note: close() reported busy with no write in flight (slow grace "
          "period); retrying\n";
      ssize_t ignored = ::write(g_report_fd, kNote, sizeof kNote - 1);
      (void)ignored;
    }
    ec = bm.close();
  }
  return ec;
}

// Opens `img` with the invariants above. Returns true if it was accepted.
bool check_one(std::span<const std::byte> img, bool reopen) {
  const std::optional<Superblock> sb = check_decode(img);

  auto fs = std::make_shared<FaultStorage>(Bytes(img.begin(), img.end()));
  OpenOptions oo;
  oo.start_daemon = false;
  std::error_code ec;
  std::unique_ptr<Bitmap> bm = Bitmap::open(std::make_unique<SharedStorage>(fs), oo, ec);
  if (!sb) {
    FUZZ_REQUIRE(bm == nullptr, "open accepted what decode refuses");
    require_typed_error(ec, "Bitmap::open");
    std::error_code dec_ec;
    (void)Superblock::decode(img, dec_ec, img.size());
    FUZZ_REQUIRE(ec == dec_ec, "open refused with %s, decode with %s", ec.message().c_str(),
                 dec_ec.message().c_str());
    const FaultCounters n = fs->counters();
    FUZZ_REQUIRE(n.writes == 0 && n.syncs == 0,
                 "open wrote to a file it refused (%llu writes, "
                 "%llu syncs)",
                 static_cast<ull>(n.writes), static_cast<ull>(n.syncs));
    return false;
  }
  FUZZ_REQUIRE(bm != nullptr, "open refused a file decode accepts (%s)", ec.message().c_str());
  FUZZ_REQUIRE(!ec, "open succeeded but left an error (%s)", ec.message().c_str());
  FUZZ_REQUIRE(bm->geometry() == sb->geometry, "open's geometry differs from the superblock's");
  FUZZ_REQUIRE(
      bm->chunks() == sb->geometry.chunks() && bm->chunk_bytes() == sb->geometry.chunk_bytes(),
      "chunks()/chunk_bytes() differ from the superblock's");
  FUZZ_REQUIRE(!bm->failed(), "a fresh open is failed");

  std::uint64_t invalid = 0, bad_blocks = 0;
  const std::vector<ChunkState> want = expected_states(*sb, img, invalid, bad_blocks);
  const bool stale = (sb->state & (kSbStale | kSbWriteError)) != 0;
  const bool first_use = (sb->state & kSbFirstUse) != 0;
  const Geometry& g = sb->geometry;
  std::vector<ChunkState> got(g.chunks());
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    got[c] = bm->state(c);
    const std::uint8_t raw = byte_at(img, g.chunk_pos(c));
    FUZZ_REQUIRE(got[c] == want[c], "chunk %llu (byte %#x on disk%s%s) opened as %s, want %s",
                 static_cast<ull>(c), raw, stale ? ", stale" : "",
                 want[c] == ChunkState::kNeedSync && is_valid_state(raw) && raw != 3 && !stale
                     ? ", block checksum fails"
                     : "",
                 state_name(got[c]), state_name(want[c]));
    // The same, said without the transition table (docs/design.md#s4).
    FUZZ_REQUIRE(got[c] != ChunkState::kDirty && got[c] != ChunkState::kSyncing,
                 "chunk %llu is %s right after open", static_cast<ull>(c), state_name(got[c]));
    // (A first-use file is re-initialised instead: its bytes were never states.)
    if (is_clean_like(got[c]) && !first_use)
      FUZZ_REQUIRE(raw == to_byte(got[c]), "chunk %llu became %s from byte %#x",
                   static_cast<ull>(c), state_name(got[c]), raw);
  }
  const BitmapStats st = bm->stats();
  FUZZ_REQUIRE(st.invalid_bytes == invalid, "invalid_bytes %llu, the image has %llu",
               static_cast<ull>(st.invalid_bytes), static_cast<ull>(invalid));
  FUZZ_REQUIRE(st.bad_blocks == bad_blocks, "bad_blocks %llu, the image has %llu",
               static_cast<ull>(st.bad_blocks), static_cast<ull>(bad_blocks));
  check_counts(*bm, got);
  check_needs_sync(*bm, got);
  check_durable(fs->durable_image(), img.size(), *sb, sb->events + 1, got, "after open");

  ec = close_idle(*bm);
  FUZZ_REQUIRE(!ec, "close failed: %s", ec.message().c_str());
  bm.reset();
  const Bytes closed = fs->durable_image();
  // close() cleans Dirty chunks only; open left none.
  check_durable(closed, img.size(), *sb, sb->events + 2, got, "after close");

  if (reopen) {
    auto fs2 = std::make_shared<FaultStorage>(closed);
    std::unique_ptr<Bitmap> bm2 = Bitmap::open(std::make_unique<SharedStorage>(fs2), oo, ec);
    FUZZ_REQUIRE(bm2 != nullptr, "the closed image does not open again: %s", ec.message().c_str());
    for (std::uint64_t c = 0; c < g.chunks(); ++c)
      FUZZ_REQUIRE(bm2->state(c) == got[c], "reopen changed chunk %llu from %s to %s",
                   static_cast<ull>(c), state_name(got[c]), state_name(bm2->state(c)));
    FUZZ_REQUIRE(bm2->stats().bad_blocks == 0 && bm2->stats().invalid_bytes == 0,
                 "the closed image has bad blocks or invalid bytes");
    ec = close_idle(*bm2);
    FUZZ_REQUIRE(!ec, "close after reopen failed: %s", ec.message().c_str());
  }
  return true;
}

}  // namespace

void set_report_fd(int fd) {
  g_report_fd = fd;
}

CheckResult check_open_input(std::span<const std::byte> input) {
  CheckResult r;
  r.variants = 1;
  r.accepted = check_one(input, /*reopen=*/true);
  r.variants_accepted = r.accepted ? 1 : 0;
  if (input.size() < kSuperblockBytes) return r;

  // Variant 1: the superblock checksum recomputed, so that mutated fields reach the
  // checks behind it.
  Bytes fixed(input.begin(), input.end());
  update_superblock_crc(std::span<std::byte, kSuperblockBytes>(fixed.data(), kSuperblockBytes));
  const bool same_sb = std::equal(fixed.begin(), fixed.end(), input.begin());
  if (!same_sb) {
    ++r.variants;
    r.variants_accepted += check_one(fixed, /*reopen=*/false) ? 1 : 0;
  }

  // Variant 2: the checksum table recomputed too, so that mutated state bytes reach
  // recovery instead of being caught by their block's checksum.
  std::error_code ec;
  const std::optional<Superblock> sb = Superblock::decode(fixed, ec, fixed.size());
  if (!sb) return r;
  const Geometry& g = sb->geometry;
  const std::span<std::byte> all(fixed);
  fill_checksum_table(g, sb->uuid, all.first(g.image_bytes()),
                      all.subspan(g.checksum_table_offset(), g.checksum_table_bytes()));
  if (!std::equal(fixed.begin(), fixed.end(), input.begin())) {
    ++r.variants;
    r.variants_accepted += check_one(fixed, /*reopen=*/false) ? 1 : 0;
  }
  return r;
}

}  // namespace llbitmap::fuzz

// libFuzzer entry points (the regression runner calls check_open_input directly).
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // libFuzzer may close stderr (-close_fd_mask=2, to silence the library's per-open log
  // lines); keep a copy for violation messages. It redirects its own and the
  // sanitizers' reports to its copy the same way.
  const int fd = ::dup(2);
  if (fd >= 0) llbitmap::fuzz::set_report_fd(fd);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)llbitmap::fuzz::check_open_input(std::as_bytes(std::span<const std::uint8_t>(data, size)));
  return 0;
}
