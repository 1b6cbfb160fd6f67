// SPDX-License-Identifier: LGPL-2.1-or-later
//
// cmd_create.cc: `llbitmap create FILE --size BYTES [...]`: creates a bitmap file with
// Bitmap::create (no daemon), closes it, and prints its geometry. The file is created
// atomically and never replaces an existing one.
#include <llbitmap/bitmap.h>
#include <llbitmap/error.h>
#include <llbitmap/format.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <system_error>

#include "cli.h"

namespace llbitmap::tool {
namespace {

// The message for a failed create: the error's own, plus the accepted range when the
// library only says "invalid argument" (an interval out of range).
std::string create_message(const std::error_code& ec) {
  std::string m = ec.message();
  if (ec == std::errc::invalid_argument)
    m += " (--daemon-sleep and --barrier-idle must be 1 .. 86400000 ms)";
  else if (ec == Errc::bad_geometry)
    m += " (--chunk: a power of two, 512 B .. 1 TiB; --space: a multiple of 4 KiB, "
         "4 KiB .. 1 GiB, with room for 1024 + chunks bytes; --block: 512, 1024, 2048 "
         "or 4096)";
  return m;
}

void print_geometry(const std::filesystem::path& path, const Geometry& g,
                    std::chrono::milliseconds daemon_sleep, std::chrono::milliseconds idle,
                    bool assume_clean) {
  std::printf("created %s\n", path.c_str());
  std::printf("  device size      %s (%llu bytes)\n", format_size(g.device_bytes()).c_str(),
              static_cast<unsigned long long>(g.device_bytes()));
  std::printf("  chunk size       %s (%llu bytes)\n", format_size(g.chunk_bytes()).c_str(),
              static_cast<unsigned long long>(g.chunk_bytes()));
  std::printf("  chunks           %llu\n", static_cast<unsigned long long>(g.chunks()));
  std::printf("  space            %s (%llu bytes)\n", format_size(g.space_bytes()).c_str(),
              static_cast<unsigned long long>(g.space_bytes()));
  std::printf("  block size       %u bytes\n", g.block_bytes());
  std::printf("  pages            %llu\n", static_cast<unsigned long long>(g.pages()));
  std::printf("  blocks           %llu\n", static_cast<unsigned long long>(g.blocks()));
  std::printf("  file size        %llu bytes\n", static_cast<unsigned long long>(g.file_bytes()));
  std::printf("  daemon sleep     %lld ms\n", static_cast<long long>(daemon_sleep.count()));
  std::printf("  barrier idle     %lld ms\n", static_cast<long long>(idle.count()));
  std::printf("  initial state    %s\n", assume_clean ? "clean (assume-clean)" : "unwritten");
}

}  // namespace

int cmd_create(std::span<char* const> args) {
  std::optional<std::string> file;
  BitmapOptions opt;
  opt.start_daemon = false;
  bool have_size = false;

  ArgCursor cur(args);
  while (!cur.done()) {
    std::string v;
    bool missing = false;
    const std::string arg(cur.peek());
    if (cur.flag("--assume-clean")) {
      opt.assume_clean = true;
    } else if (cur.option("--size", v, missing) || cur.option("--chunk", v, missing) ||
               cur.option("--space", v, missing) || cur.option("--block", v, missing)) {
      const std::string name = arg.substr(0, arg.find('='));
      if (missing) return usage_error("create: " + name + " needs a value");
      const auto bytes = parse_size(v);
      if (!bytes) return usage_error("create: " + name + ": '" + v + "' is not a size");
      if (name == "--size") {
        opt.device_bytes = *bytes;
        have_size = true;
      } else if (name == "--chunk") {
        opt.chunk_bytes = *bytes;
      } else if (name == "--space") {
        opt.space_bytes = *bytes;
      } else {
        if (*bytes > std::numeric_limits<std::uint32_t>::max())
          return usage_error("create: --block: '" + v + "' is too large");
        opt.block_bytes = static_cast<std::uint32_t>(*bytes);
      }
    } else if (cur.option("--daemon-sleep", v, missing) ||
               cur.option("--barrier-idle", v, missing)) {
      const std::string name = arg.substr(0, arg.find('='));
      if (missing) return usage_error("create: " + name + " needs a value");
      const auto ms = parse_uint(v);
      if (!ms || *ms > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return usage_error("create: " + name + ": '" + v + "' is not a number of milliseconds");
      const std::chrono::milliseconds d(static_cast<std::int64_t>(*ms));
      (name == "--daemon-sleep" ? opt.daemon_sleep : opt.barrier_idle) = d;
    } else if (cur.positional(v)) {
      if (file) return usage_error("create: more than one FILE given");
      file = v;
    } else {
      return usage_error("create: unknown option '" + arg + "'");
    }
  }
  if (!file) return usage_error("create: missing FILE");
  if (!have_size) return usage_error("create: missing --size BYTES");

  std::error_code ec;
  const std::filesystem::path path(*file);
  std::unique_ptr<Bitmap> bm = Bitmap::create(path, opt, ec);
  if (!bm) {
    std::fprintf(stderr, "llbitmap: create %s: %s\n", file->c_str(), create_message(ec).c_str());
    return kExitError;
  }
  const Geometry geo = bm->geometry();
  const auto daemon_sleep = bm->daemon_sleep();
  const auto idle = bm->barrier_idle();
  if ((ec = bm->close())) {
    std::fprintf(stderr, "llbitmap: create %s: %s\n", file->c_str(), ec.message().c_str());
    return kExitError;
  }
  bm.reset();
  print_geometry(path, geo, daemon_sleep, idle, opt.assume_clean);
  return kExitOk;
}

}  // namespace llbitmap::tool
