// SPDX-License-Identifier: LGPL-2.1-or-later
//
// cmd_examine.cc: `llbitmap examine FILE [--json] [--all]`, the counterpart of
// `mdadm -X`: prints a bitmap file's superblock, its chunk states as stored, the blocks
// whose checksum fails, and what a reopen would resynchronise, as byte ranges of the
// protected device.
//
// Strictly read-only: it never constructs a Bitmap (whose open() rewrites the file); it
// reads the file through FileStorage::open_read_only (no lock, so a bitmap that is open
// elsewhere can be examined too; no write ever reaches the file) and decodes it with the
// format functions.
//
// "What a reopen would resync" is recover_chunk_states (recovery.h), the very rule
// Bitmap::open applies, run on a copy of the stored image: every chunk it leaves
// NeedSync is resynchronised.
#include <llbitmap/chunk_state.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>
#include <llbitmap/recovery.h>
#include <llbitmap/storage.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "cli.h"
#include "json_writer.h"

namespace llbitmap::tool {
namespace {

// Ranges and blocks listed without --all.
constexpr std::uint64_t kListLimit = 20;

std::string uuid_string(const Uuid& u) {
  std::string s;
  char buf[3];
  for (std::size_t i = 0; i < u.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    std::snprintf(buf, sizeof buf, "%02x", std::to_integer<unsigned>(u[i]));
    s += buf;
  }
  return s;
}

// Names of the state flags, in bit order; unknown bits as "0x...".
std::vector<std::string> state_flag_names(std::uint32_t state) {
  static constexpr std::array<std::pair<std::uint32_t, const char*>, 5> kFlags = {{
      {kSbStale, "stale"},
      {kSbWriteError, "write-error"},
      {kSbFirstUse, "first-use"},
      {kSbClean, "clean"},
      {kSbDaemonBusy, "daemon-busy"},
  }};
  std::vector<std::string> names;
  for (const auto& [mask, name] : kFlags)
    if ((state & mask) != 0) names.emplace_back(name);
  if (const std::uint32_t unknown = state & ~kSbKnownState; unknown != 0) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%x", unknown);
    names.emplace_back(buf);
  }
  return names;
}

std::string percent_string(std::uint64_t part, std::uint64_t whole) {
  if (whole == 0) return "0%";
  const double p = 100.0 * static_cast<double>(part) / static_cast<double>(whole);
  if (part != 0 && p < 0.01) return "<0.01%";
  if (part != whole && p > 99.99) return ">99.99%";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", p);
  return buf;
}

unsigned long long ull(std::uint64_t v) {
  return static_cast<unsigned long long>(v);
}

// Everything examine reads and derives from one file.
struct Examined {
  std::string file;
  std::uint64_t file_bytes = 0;
  Superblock sb;
  // Stored byte counts: the five states, then "invalid" (any other byte).
  std::array<std::uint64_t, kChunkStateCount + 1> counts{};
  // The image as a reopen would recover it, and what recovery found.
  std::vector<std::byte> recovered;
  RecoveryReport found;
  bool stale = false;  // a reopen applies Stale, not Reload
  // Resync on reopen.
  std::uint64_t resync_chunks = 0;
  std::uint64_t resync_bytes = 0;
  std::uint64_t resync_runs = 0;
};

// Calls f(first_chunk, end_chunk) for every maximal run of chunks a reopen would make
// NeedSync, in ascending order.
template <class F>
void for_each_resync_run(const Examined& ex, F&& f) {
  const Geometry& g = ex.sb.geometry;
  constexpr std::uint64_t kNone = ~std::uint64_t{0};
  std::uint64_t start = kNone;
  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    const auto byte = std::to_integer<std::uint8_t>(ex.recovered[g.chunk_pos(c)]);
    if (byte == to_byte(ChunkState::kNeedSync)) {
      if (start == kNone) start = c;
    } else if (start != kNone) {
      f(start, c);
      start = kNone;
    }
  }
  if (start != kNone) f(start, g.chunks());
}

// The device byte range [offset, offset + length) of chunks [first, end).
std::pair<std::uint64_t, std::uint64_t> byte_range(const Geometry& g, std::uint64_t first,
                                                   std::uint64_t end) {
  const std::uint64_t off = g.chunk_offset(first);
  const std::uint64_t stop = end >= g.chunks() ? g.device_bytes() : g.chunk_offset(end);
  return {off, stop - off};
}

// Reads and decodes the file. On failure prints the one-line message and returns
// false.
bool load(const std::string& file, Examined& ex) {
  ex.file = file;
  std::error_code ec;
  const auto fail = [&](const std::error_code& e) {
    std::string m = e.message();
    if (e == Errc::bad_superblock || e == Errc::bad_geometry || e == Errc::size_mismatch ||
        e == Errc::short_io)
      m += "; the bitmap cannot be trusted: the whole device must be resynced";
    std::fprintf(stderr, "llbitmap: examine %s: %s\n", file.c_str(), m.c_str());
    return false;
  };
  const std::unique_ptr<Storage> st = FileStorage::open_read_only(file, ec);
  if (!st) return fail(ec);
  if ((ec = st->size(ex.file_bytes))) return fail(ec);
  std::vector<std::byte> head(std::min<std::uint64_t>(ex.file_bytes, kSuperblockBytes));
  if (!head.empty() && (ec = st->read(0, head))) return fail(ec);
  const std::optional<Superblock> sb = Superblock::decode(head, ec, ex.file_bytes);
  if (!sb) return fail(ec);
  ex.sb = *sb;
  const Geometry& g = ex.sb.geometry;
  ex.recovered.resize(g.image_bytes());
  std::vector<std::byte> table(g.checksum_table_bytes());
  if ((ec = st->read(0, ex.recovered))) return fail(ec);
  if ((ec = st->read(g.checksum_table_offset(), table))) return fail(ec);

  for (std::uint64_t c = 0; c < g.chunks(); ++c) {
    const auto byte = std::to_integer<std::uint8_t>(ex.recovered[g.chunk_pos(c)]);
    ++ex.counts[std::min<std::size_t>(byte, kChunkStateCount)];
  }
  ex.found = recover_chunk_states(ex.sb, ex.recovered, table);
  ex.stale = ex.found.action == Action::kStale;
  for_each_resync_run(ex, [&](std::uint64_t first, std::uint64_t end) {
    ex.resync_chunks += end - first;
    ex.resync_bytes += byte_range(g, first, end).second;
    ++ex.resync_runs;
  });
  return true;
}

constexpr std::array<const char*, kChunkStateCount + 1> kCountNames = {
    "unwritten", "clean", "dirty", "need sync", "syncing", "invalid"};
constexpr std::array<const char*, kChunkStateCount + 1> kCountKeys = {
    "unwritten", "clean", "dirty", "need_sync", "syncing", "invalid"};

void print_text(const Examined& ex, bool all) {
  const Superblock& sb = ex.sb;
  const Geometry& g = sb.geometry;
  std::printf("%s\n", ex.file.c_str());
  std::printf("  magic            0x%08x (llbitmap)\n", kBitmapMagic);
  std::printf("  version          %u (format revision %u)\n", kBitmapVersion, kFormatRevision);
  std::printf("  uuid             %s\n", uuid_string(sb.uuid).c_str());
  if (sb.device_uuid == Uuid{})
    std::printf("  device uuid      none (not bound to a device)\n");
  else
    std::printf("  device uuid      %s\n", uuid_string(sb.device_uuid).c_str());
  std::printf("  events           %llu\n", ull(sb.events));
  std::printf("  events cleared   %llu\n", ull(sb.events_cleared));
  std::string flags;
  for (const std::string& n : state_flag_names(sb.state)) flags += (flags.empty() ? "" : ", ") + n;
  std::printf("  state            0x%x (%s)\n", sb.state, flags.empty() ? "none" : flags.c_str());
  std::printf("  chunk size       %s (%llu bytes)\n", format_size(g.chunk_bytes()).c_str(),
              ull(g.chunk_bytes()));
  std::printf("  chunks           %llu\n", ull(g.chunks()));
  std::printf("  device size      %s (%llu bytes)\n", format_size(g.device_bytes()).c_str(),
              ull(g.device_bytes()));
  std::printf("  sync size        %llu sectors\n", ull(g.sync_sectors()));
  std::printf("  space            %s (%llu bytes)\n", format_size(g.space_bytes()).c_str(),
              ull(g.space_bytes()));
  std::printf("  block size       %u bytes\n", g.block_bytes());
  std::printf("  daemon sleep     %lld ms\n", static_cast<long long>(sb.daemon_sleep.count()));
  std::printf("  barrier idle     %lld ms\n", static_cast<long long>(sb.barrier_idle.count()));
  std::printf("  pages            %llu\n", ull(g.pages()));
  std::printf("  blocks           %llu\n", ull(g.blocks()));
  std::printf("  file size        %llu bytes\n", ull(ex.file_bytes));

  std::printf("\nchunk states as stored (%llu chunks):\n", ull(g.chunks()));
  for (std::size_t i = 0; i < ex.counts.size(); ++i)
    std::printf("  %-16s %llu (%s)\n", kCountNames[i], ull(ex.counts[i]),
                percent_string(ex.counts[i], g.chunks()).c_str());

  if (ex.found.bad_blocks.empty()) {
    std::printf("\nunverifiable blocks (checksum mismatch): none\n");
  } else {
    std::printf(
        "\nunverifiable blocks (checksum mismatch): %llu, holding %llu chunks; "
        "their chunks count as need sync\n",
        ull(ex.found.bad_blocks.size()), ull(ex.found.bad_block_chunks));
    std::uint64_t listed = 0;
    for (const std::uint64_t b : ex.found.bad_blocks) {
      if (!all && listed == kListLimit) break;
      ++listed;
      const ChunkRange r = g.chunks_in_block(b);
      if (r.empty())
        std::printf("  block %llu: no chunks (superblock area or tail)\n", ull(b));
      else
        std::printf("  block %llu: chunks %llu..%llu (%llu chunks)\n", ull(b), ull(r.first),
                    ull(r.end - 1), ull(r.size()));
    }
    if (listed < ex.found.bad_blocks.size())
      std::printf("  ... and %llu more blocks\n", ull(ex.found.bad_blocks.size() - listed));
  }

  std::printf("\nresync on reopen (%s): %llu chunk%s in %llu range%s\n",
              ex.stale ? "stale: every chunk that is not unwritten" : "reload",
              ull(ex.resync_chunks), ex.resync_chunks == 1 ? "" : "s", ull(ex.resync_runs),
              ex.resync_runs == 1 ? "" : "s");
  std::uint64_t listed = 0;
  for_each_resync_run(ex, [&](std::uint64_t first, std::uint64_t end) {
    if (!all && listed == kListLimit) return;
    ++listed;
    const auto [off, len] = byte_range(g, first, end);
    std::printf("  [%llu, %llu)  %s at %s (chunks %llu..%llu)\n", ull(off), ull(off + len),
                format_size(len).c_str(), format_size(off).c_str(), ull(first), ull(end - 1));
  });
  if (listed < ex.resync_runs)
    std::printf("  ... and %llu more ranges\n", ull(ex.resync_runs - listed));
  std::printf("total to resync: %llu bytes (%s), %s of the device\n", ull(ex.resync_bytes),
              format_size(ex.resync_bytes).c_str(),
              percent_string(ex.resync_bytes, g.device_bytes()).c_str());
}

void print_json(const Examined& ex, bool all) {
  const Superblock& sb = ex.sb;
  const Geometry& g = sb.geometry;
  JsonWriter j(stdout);
  j.begin_object();
  j.member("file", std::string_view(ex.file));
  j.member("file_bytes", ex.file_bytes);

  j.key("superblock");
  j.begin_object();
  char magic[16];
  std::snprintf(magic, sizeof magic, "0x%08x", kBitmapMagic);
  j.member("magic", std::string_view(magic));
  j.member("version", std::uint64_t{kBitmapVersion});
  j.member("format_revision", std::uint64_t{kFormatRevision});
  j.member("uuid", std::string_view(uuid_string(sb.uuid)));
  j.member("device_bound", sb.device_uuid != Uuid{});
  j.member("device_uuid", std::string_view(uuid_string(sb.device_uuid)));
  j.member("events", sb.events);
  j.member("events_cleared", sb.events_cleared);
  j.member("state", std::uint64_t{sb.state});
  j.key("state_flags");
  j.begin_array();
  for (const std::string& n : state_flag_names(sb.state)) j.value(std::string_view(n));
  j.end_array();
  j.member("chunk_bytes", g.chunk_bytes());
  j.member("chunks", g.chunks());
  j.member("device_bytes", g.device_bytes());
  j.member("sync_size_sectors", g.sync_sectors());
  j.member("space_bytes", g.space_bytes());
  j.member("block_bytes", std::uint64_t{g.block_bytes()});
  j.member("daemon_sleep_ms", static_cast<std::uint64_t>(sb.daemon_sleep.count()));
  j.member("barrier_idle_ms", static_cast<std::uint64_t>(sb.barrier_idle.count()));
  j.member("pages", g.pages());
  j.member("blocks", g.blocks());
  j.end_object();

  j.key("counts");
  j.begin_object();
  for (std::size_t i = 0; i < ex.counts.size(); ++i) j.member(kCountKeys[i], ex.counts[i]);
  j.end_object();

  j.key("unverifiable_blocks");
  j.begin_object();
  j.member("count", std::uint64_t{ex.found.bad_blocks.size()});
  j.member("chunks", ex.found.bad_block_chunks);
  j.key("blocks");
  j.begin_array();
  std::uint64_t listed = 0;
  for (const std::uint64_t b : ex.found.bad_blocks) {
    if (!all && listed == kListLimit) break;
    ++listed;
    const ChunkRange r = g.chunks_in_block(b);
    j.begin_object();
    j.member("block", b);
    j.member("first_chunk", r.first);
    j.member("chunks", r.size());
    j.end_object();
  }
  j.end_array();
  j.member("omitted", std::uint64_t{ex.found.bad_blocks.size() - listed});
  j.end_object();

  j.key("resync");
  j.begin_object();
  j.member("mode", std::string_view(ex.stale ? "stale" : "reload"));
  j.member("chunks", ex.resync_chunks);
  j.member("range_count", ex.resync_runs);
  j.key("ranges");
  j.begin_array();
  listed = 0;
  for_each_resync_run(ex, [&](std::uint64_t first, std::uint64_t end) {
    if (!all && listed == kListLimit) return;
    ++listed;
    const auto [off, len] = byte_range(g, first, end);
    j.begin_object();
    j.member("offset", off);
    j.member("length", len);
    j.member("first_chunk", first);
    j.member("chunks", end - first);
    j.end_object();
  });
  j.end_array();
  j.member("omitted_ranges", ex.resync_runs - listed);
  j.member("bytes", ex.resync_bytes);
  j.key("percent");
  j.value_fixed(
      100.0 * static_cast<double>(ex.resync_bytes) / static_cast<double>(g.device_bytes()), 4);
  j.end_object();

  j.end_object();
  j.finish();
}

}  // namespace

int cmd_examine(std::span<char* const> args) {
  std::optional<std::string> file;
  bool json = false;
  bool all = false;
  ArgCursor cur(args);
  while (!cur.done()) {
    std::string v;
    const std::string arg(cur.peek());
    if (cur.flag("--json")) {
      json = true;
    } else if (cur.flag("--all")) {
      all = true;
    } else if (cur.positional(v)) {
      if (file) return usage_error("examine: more than one FILE given");
      file = v;
    } else {
      return usage_error("examine: unknown option '" + arg + "'");
    }
  }
  if (!file) return usage_error("examine: missing FILE");

  Examined ex;
  if (!load(*file, ex)) return kExitError;
  if (json)
    print_json(ex, all);
  else
    print_text(ex, all);
  return kExitOk;
}

}  // namespace llbitmap::tool
