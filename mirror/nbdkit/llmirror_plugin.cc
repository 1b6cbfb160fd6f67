// SPDX-License-Identifier: LGPL-2.1-or-later
//
// llmirror_plugin.cc: nbdkit-llmirror-plugin.so, an nbdkit plugin that serves a Mirror
// (mirror/mirror.h: a RAID-1 of two files whose write-intent bitmap is an
// llbitmap Bitmap) as an NBD export, so that real clients (fio's nbd engine, nbdcopy,
// qemu, nbd-client) drive the library.
//
//   nbdkit ./nbdkit-llmirror-plugin.so primary=A secondary=B bitmap=C size=1G
//          [mode=llbitmap|none|classic] [chunk=64K] [resync=wait|background|off]
//          [fail=primary|secondary] [daemon_sleep=MS] [barrier_idle=MS]
//
// Parameters:
//   primary=, secondary=  the two legs (files or block devices). Required.
//   bitmap=               the bitmap file. Required with mode=llbitmap, unused otherwise.
//                         The three must be distinct files, however they are spelled:
//                         compared by device and inode, not by name (same_file).
//   size=                 device size in bytes, with an optional K, M, G or T suffix
//                         (powers of 1024). Required when the files do not exist yet: they
//                         are then created (sparse). Optional otherwise (it must then match).
//                         Either every file exists or none does: the plugin refuses to
//                         create one leg next to an existing one, because the start-up
//                         resync copies primary -> secondary and a new, empty primary would
//                         overwrite the data on the secondary.
//   mode=                 llbitmap (default), none (no bitmap: a crash needs a full
//                         resync) or classic (the mutex-and-counter bitmap of
//                         mirror/classic_bitmap.h).
//   chunk=                bitmap chunk size when the bitmap is created (default: automatic).
//   resync=               what to do at start-up when the legs need resynchronising
//                         (after a crash, or a re-add after a run with fail=):
//                           wait (default)  resync before serving the first request;
//                           background      serve at once and resync in a thread, as md
//                                           does (reads come from the primary meanwhile);
//                           off             do not resync (the chunks stay NeedSync).
//                         Either way the plugin logs to stderr one line
//                           llmirror: resync: <chunks> chunks, <bytes> bytes copied in <s> s
//                         (chunks and bytes actually copied, from MirrorStats), or
//                         "llmirror: resync: nothing to copy"; bench/e2e and
//                         mirror/tests/nbd read it.
//   fail=primary|secondary  run degraded: that leg is marked failed before serving (the
//                         Mirror records it durably, next to the primary), writes go to the
//                         other leg only and, with mode=llbitmap, leave their chunks
//                         NeedSync. Restarting without fail= re-adds the leg
//                         (Mirror::readd_leg, under the resync= policy): with mode=llbitmap
//                         it copies exactly the chunks written meanwhile, from the working
//                         leg; without a bitmap it copies the whole device.
//   daemon_sleep=, barrier_idle=  the bitmap daemon's intervals in milliseconds
//                         (defaults: MirrorOptions'), for tests.
//
// Life cycle: config/config_complete check the parameters, get_ready checks the files
// (existence, and the bitmap's superblock, read-only: an unusable bitmap is refused here
// with the library's own error message, while nbdkit can still print it and exit
// non-zero). The Mirror is opened in after_fork, because the library starts threads (the
// bitmap daemon, liburcu's) and threads do not survive nbdkit's fork into the background;
// an error there is also reported and makes nbdkit exit non-zero. One Mirror serves every
// connection (thread model PARALLEL, can_multi_conn): a flush on one connection covers
// writes completed on all of them. cleanup/unload close the Mirror cleanly (the legs are
// synced and the bitmap is made durable); a background resync still running then is
// finished first.
//
// Request mapping: pread -> Mirror::read; pwrite -> Mirror::write (FUA native: the legs are
// fdatasynced before the reply); flush -> Mirror::flush; trim -> Mirror::trim (+ flush with
// FUA). Zeroing is left to nbdkit, which emulates it with pwrite.
#define NBDKIT_API_VERSION 2
#include <llbitmap/detail/mutex.h>
#include <llbitmap/format.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "mirror.h"
#include <fcntl.h>
#include <nbdkit-plugin.h>
#include <sys/stat.h>
#include <unistd.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

namespace {

using llbitmap::mirror::Mirror;
using llbitmap::mirror::MirrorOptions;
using llbitmap::mirror::Mode;

enum class ResyncPolicy { kWait, kBackground, kOff };

// Everything the command line sets. Written by config/config_complete/get_ready (one
// thread, before any connection), read-only afterwards.
struct Config {
  std::filesystem::path primary;
  std::filesystem::path secondary;
  std::filesystem::path bitmap;
  std::optional<std::uint64_t> size;
  std::optional<std::uint64_t> chunk;
  std::optional<std::chrono::milliseconds> daemon_sleep;
  std::optional<std::chrono::milliseconds> barrier_idle;
  Mode mode = Mode::kLlbitmap;
  ResyncPolicy resync = ResyncPolicy::kWait;
  int fail_leg = -1;    // fail=: 0 primary, 1 secondary
  bool create = false;  // decided by get_ready: no file exists yet
};

Config g_config;

// The one Mirror, opened in after_fork, closed in cleanup/unload. Connections only use
// it between those two, so the pointer itself needs no lock; g_close_mutex makes the
// close idempotent (cleanup and unload both call it).
std::unique_ptr<Mirror> g_mirror;
std::thread g_resync_thread;
llbitmap::detail::Mutex g_close_mutex;

// A std::error_code as an errno value for nbdkit_set_error: the system's own codes pass
// through, the library's (llbitmap category) become EIO.
int errno_of(const std::error_code& ec) {
  if (ec.category() == std::generic_category() || ec.category() == std::system_category()) {
    return ec.value() != 0 ? ec.value() : EIO;
  }
  return EIO;
}

// Reports a failed request: the message to nbdkit's log, the errno to the client.
int fail(const char* what, std::uint64_t offset, std::uint64_t count, const std::error_code& ec) {
  nbdkit_error("llmirror: %s of %llu bytes at offset %llu: %s", what,
               static_cast<unsigned long long>(count), static_cast<unsigned long long>(offset),
               ec.message().c_str());
  nbdkit_set_error(errno_of(ec));
  return -1;
}

// "123", "64K", "1G", ...: bytes with an optional K, M, G or T suffix (powers of 1024,
// either case). Nothing else is accepted: no sign, no spaces, no fraction, no overflow.
std::optional<std::uint64_t> parse_size(std::string_view s) {
  std::size_t i = 0;
  std::uint64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    const auto d = static_cast<std::uint64_t>(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return std::nullopt;
  unsigned shift = 0;
  if (i < s.size()) {
    switch (s[i]) {
      case 'k':
      case 'K':
        shift = 10;
        break;
      case 'm':
      case 'M':
        shift = 20;
        break;
      case 'g':
      case 'G':
        shift = 30;
        break;
      case 't':
      case 'T':
        shift = 40;
        break;
      default:
        return std::nullopt;
    }
    ++i;
  }
  if (i != s.size()) return std::nullopt;
  if (shift != 0 && v > (UINT64_MAX >> shift)) return std::nullopt;
  return v << shift;
}

std::optional<std::chrono::milliseconds> parse_ms(std::string_view s) {
  const std::optional<std::uint64_t> v = parse_size(s);
  if (!v || s.back() < '0' || s.back() > '9' || *v == 0 || *v > 24ull * 3600 * 1000) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(*v));
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kLlbitmap:
      return "llbitmap";
    case Mode::kNone:
      return "none";
    case Mode::kClassic:
      return "classic";
  }
  return "?";
}

// Absolute, because nbdkit changes directory to / when it forks into the background.
bool set_path(std::filesystem::path& out, const char* key, const char* value) {
  if (*value == '\0') {
    nbdkit_error("llmirror: %s= is empty", key);
    return false;
  }
  std::error_code ec;
  out = std::filesystem::absolute(value, ec);
  if (ec) {
    nbdkit_error("llmirror: %s=%s: %s", key, value, ec.message().c_str());
    return false;
  }
  return true;
}

int llmirror_config(const char* key, const char* value) {
  const std::string_view k(key);
  if (k == "primary") return set_path(g_config.primary, key, value) ? 0 : -1;
  if (k == "secondary") return set_path(g_config.secondary, key, value) ? 0 : -1;
  if (k == "bitmap") return set_path(g_config.bitmap, key, value) ? 0 : -1;
  if (k == "size" || k == "chunk") {
    const std::optional<std::uint64_t> v = parse_size(value);
    if (!v || *v == 0) {
      nbdkit_error(
          "llmirror: %s=%s: not a size (a positive number of bytes with an "
          "optional K, M, G or T suffix, e.g. %s=1G)",
          key, value, key);
      return -1;
    }
    (k == "size" ? g_config.size : g_config.chunk) = *v;
    return 0;
  }
  if (k == "mode") {
    const std::string_view v(value);
    if (v == "llbitmap") {
      g_config.mode = Mode::kLlbitmap;
    } else if (v == "none") {
      g_config.mode = Mode::kNone;
    } else if (v == "classic") {
      g_config.mode = Mode::kClassic;
    } else {
      nbdkit_error("llmirror: unknown mode=%s (expected llbitmap, none or classic)", value);
      return -1;
    }
    return 0;
  }
  if (k == "resync") {
    const std::string_view v(value);
    if (v == "wait") {
      g_config.resync = ResyncPolicy::kWait;
    } else if (v == "background") {
      g_config.resync = ResyncPolicy::kBackground;
    } else if (v == "off") {
      g_config.resync = ResyncPolicy::kOff;
    } else {
      nbdkit_error("llmirror: unknown resync=%s (expected wait, background or off)", value);
      return -1;
    }
    return 0;
  }
  if (k == "fail") {
    const std::string_view v(value);
    if (v == "primary") {
      g_config.fail_leg = 0;
    } else if (v == "secondary") {
      g_config.fail_leg = 1;
    } else {
      nbdkit_error("llmirror: unknown fail=%s (expected primary or secondary)", value);
      return -1;
    }
    return 0;
  }
  if (k == "daemon_sleep" || k == "barrier_idle") {
    const std::optional<std::chrono::milliseconds> v = parse_ms(value);
    if (!v) {
      nbdkit_error("llmirror: %s=%s: expected milliseconds, 1 to 86400000", key, value);
      return -1;
    }
    (k == "daemon_sleep" ? g_config.daemon_sleep : g_config.barrier_idle) = *v;
    return 0;
  }
  nbdkit_error("llmirror: unknown parameter '%s' (see nbdkit llmirror --help)", key);
  return -1;
}

// Whether two of the configured files are one and the same, however they are spelled
// (dir/./f, dir/../dir/f, a symlink, a hard link): nullptr if not, else how they were
// found to be the same, for the message. Files that exist are compared by device and
// inode, block devices also by the device they stand for (two device nodes of one
// disk); files still to be created by their paths once every directory that exists is
// resolved. Overlapping partitions of one disk are not detected.
const char* same_file(const std::filesystem::path& a, const std::filesystem::path& b) {
  struct stat sa {};
  struct stat sb {};
  const bool a_exists = ::stat(a.c_str(), &sa) == 0;
  const bool b_exists = ::stat(b.c_str(), &sb) == 0;
  if (a_exists && b_exists) {
    if (sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino) return "the same device and inode";
    if (S_ISBLK(sa.st_mode) && S_ISBLK(sb.st_mode) && sa.st_rdev == sb.st_rdev)
      return "the same block device";
    return nullptr;
  }
  if (a_exists || b_exists) return nullptr;  // a file that exists is not one still to come
  std::error_code ea;
  std::error_code eb;
  const std::filesystem::path ca = std::filesystem::weakly_canonical(a, ea);
  const std::filesystem::path cb = std::filesystem::weakly_canonical(b, eb);
  if (!ea && !eb) return ca == cb ? "the same path" : nullptr;
  return a.lexically_normal() == b.lexically_normal() ? "the same path" : nullptr;
}

int llmirror_config_complete() {
  if (g_config.primary.empty()) {
    nbdkit_error("llmirror: primary= is required (the first leg of the mirror)");
    return -1;
  }
  if (g_config.secondary.empty()) {
    nbdkit_error("llmirror: secondary= is required (the second leg of the mirror)");
    return -1;
  }
  if (g_config.mode == Mode::kLlbitmap && g_config.bitmap.empty()) {
    nbdkit_error("llmirror: bitmap= is required with mode=llbitmap");
    return -1;
  }
  if (const char* how = same_file(g_config.primary, g_config.secondary)) {
    nbdkit_error(
        "llmirror: primary=%s and secondary=%s name the same file (%s): a mirror needs two "
        "distinct legs",
        g_config.primary.c_str(), g_config.secondary.c_str(), how);
    return -1;
  }
  if (g_config.mode == Mode::kLlbitmap) {
    for (const auto& [key, leg] :
         {std::pair{"primary", &g_config.primary}, std::pair{"secondary", &g_config.secondary}}) {
      if (const char* how = same_file(g_config.bitmap, *leg)) {
        nbdkit_error(
            "llmirror: bitmap=%s and %s=%s name the same file (%s): the bitmap needs a file "
            "of its own",
            g_config.bitmap.c_str(), key, leg->c_str(), how);
        return -1;
      }
    }
  }
  if (g_config.chunk && (*g_config.chunk & (*g_config.chunk - 1)) != 0) {
    nbdkit_error("llmirror: chunk=%llu: the chunk size must be a power of two",
                 static_cast<unsigned long long>(*g_config.chunk));
    return -1;
  }
  return 0;
}

// Reads an existing bitmap's superblock and validates it, without opening a Bitmap
// (that would start threads before nbdkit forks). Returns false after nbdkit_error.
bool check_bitmap_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    nbdkit_error("llmirror: bitmap=%s: %s", path.c_str(), std::strerror(errno));
    return false;
  }
  struct stat st {};
  std::array<std::byte, llbitmap::kSuperblockBytes> sb{};
  ssize_t got = -1;
  if (::fstat(fd, &st) == 0) got = ::pread(fd, sb.data(), sb.size(), 0);
  const int saved = errno;
  ::close(fd);
  if (got < 0) {
    nbdkit_error("llmirror: bitmap=%s: %s", path.c_str(), std::strerror(saved));
    return false;
  }
  std::error_code ec;
  const std::optional<llbitmap::Superblock> decoded = llbitmap::Superblock::decode(
      std::span<const std::byte>(sb.data(), static_cast<std::size_t>(got)), ec,
      static_cast<std::uint64_t>(st.st_size));
  if (!decoded) {
    nbdkit_error("llmirror: bitmap=%s: %s", path.c_str(), ec.message().c_str());
    return false;
  }
  const std::uint64_t device = decoded->geometry.device_bytes();
  if (g_config.size && *g_config.size != device) {
    nbdkit_error("llmirror: size=%llu does not match the bitmap %s, which protects %llu bytes",
                 static_cast<unsigned long long>(*g_config.size), path.c_str(),
                 static_cast<unsigned long long>(device));
    return false;
  }
  return true;
}

int llmirror_get_ready() {
  std::error_code ec;
  const bool p = std::filesystem::exists(g_config.primary, ec);
  const bool s = std::filesystem::exists(g_config.secondary, ec);
  const bool uses_bitmap = g_config.mode == Mode::kLlbitmap;
  const bool b = uses_bitmap && std::filesystem::exists(g_config.bitmap, ec);
  const bool all = p && s && (!uses_bitmap || b);
  const bool none = !p && !s && !b;
  if (!all && !none) {
    std::string have;
    std::string lack;
    int n_have = 0;
    int n_lack = 0;
    const auto note = [&](bool exists, const char* key, const std::filesystem::path& f) {
      std::string& list = exists ? have : lack;
      ++(exists ? n_have : n_lack);
      if (!list.empty()) list += ", ";
      list += std::string(key) + "=" + f.string();
    };
    note(p, "primary", g_config.primary);
    note(s, "secondary", g_config.secondary);
    if (uses_bitmap) note(b, "bitmap", g_config.bitmap);
    nbdkit_error(
        "llmirror: missing files: %s %s not exist but %s %s; either every file "
        "exists (an existing mirror) or none does (a new one, with size=)",
        lack.c_str(), n_lack == 1 ? "does" : "do", have.c_str(), n_have == 1 ? "exists" : "exist");
    return -1;
  }
  g_config.create = none;
  if (none && !g_config.size) {
    nbdkit_error(
        "llmirror: size= is required to create a new mirror (%s and %s do not "
        "exist)",
        g_config.primary.c_str(), g_config.secondary.c_str());
    return -1;
  }
  if (g_config.create && g_config.fail_leg >= 0) {
    nbdkit_error("llmirror: fail= needs an existing mirror");
    return -1;
  }
  if (b && !check_bitmap_file(g_config.bitmap)) return -1;
  return 0;
}

const char* leg_name(int leg) {
  return leg == 0 ? "primary" : "secondary";
}

// What the start-up does to bring the legs back in step.
enum class Repair { kNone, kResync, kReaddPrimary, kReaddSecondary };

// The start-up resync or re-add, logged with its duration and what it copied (from
// MirrorStats, so that chunks found clean on the way are not counted).
void run_repair(Mirror& m, Repair what) {
  using Clock = std::chrono::steady_clock;
  const llbitmap::mirror::MirrorStats before = m.stats();
  const Clock::time_point t0 = Clock::now();
  std::error_code ec;
  const char* how = "";
  if (what == Repair::kResync) {
    ec = m.resync();
  } else {
    const int leg = what == Repair::kReaddPrimary ? 0 : 1;
    how = leg == 0 ? " (re-add of the primary)" : " (re-add of the secondary)";
    ec = m.readd_leg(leg);
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  const llbitmap::mirror::MirrorStats after = m.stats();
  if (ec) {
    std::fprintf(stderr, "llmirror: resync failed after %.6f s%s: %s\n", s, how,
                 ec.message().c_str());
    nbdkit_error("llmirror: resync failed%s: %s", how, ec.message().c_str());
  } else {
    std::fprintf(stderr, "llmirror: resync: %llu chunks, %llu bytes copied in %.6f s%s\n",
                 static_cast<unsigned long long>(after.chunks_copied - before.chunks_copied),
                 static_cast<unsigned long long>(after.bytes_copied - before.bytes_copied), s, how);
  }
  std::fflush(stderr);
}

int llmirror_after_fork() {
  MirrorOptions o;
  o.primary = g_config.primary;
  o.secondary = g_config.secondary;
  o.bitmap = g_config.bitmap;
  o.size = g_config.size.value_or(0);
  o.create = g_config.create;
  o.mode = g_config.mode;
  o.chunk_bytes = g_config.chunk.value_or(0);
  if (g_config.daemon_sleep) o.daemon_sleep = *g_config.daemon_sleep;
  if (g_config.barrier_idle) o.barrier_idle = *g_config.barrier_idle;
  std::error_code ec;
  std::unique_ptr<Mirror> m = Mirror::open(o, ec);
  if (!m) {
    nbdkit_error("llmirror: cannot open the mirror (primary=%s secondary=%s%s%s): %s",
                 o.primary.c_str(), o.secondary.c_str(),
                 g_config.mode == Mode::kLlbitmap ? " bitmap=" : "",
                 g_config.mode == Mode::kLlbitmap ? o.bitmap.c_str() : "",
                 ec ? ec.message().c_str() : "unknown error");
    return -1;
  }
  std::fprintf(stderr, "llmirror: serving %llu bytes, mode=%s, chunk %llu bytes%s\n",
               static_cast<unsigned long long>(m->size()), mode_name(g_config.mode),
               static_cast<unsigned long long>(m->chunk_bytes()), g_config.create ? " (new)" : "");

  Repair repair = Repair::kNone;
  if (g_config.fail_leg >= 0) {
    const int leg = g_config.fail_leg;
    m->fail_leg(leg);
    if (!m->leg_failed(leg)) {
      nbdkit_error(
          "llmirror: fail=%s refused: the %s is failed already (recorded by an "
          "earlier run), and the last working leg is never failed",
          leg_name(leg), leg_name(1 - leg));
      (void)m->close();
      return -1;
    }
    std::fprintf(stderr, "llmirror: %s marked failed: running degraded, no resync\n",
                 leg_name(leg));
  } else if (m->leg_failed(0) || m->leg_failed(1)) {
    const int leg = m->leg_failed(0) ? 0 : 1;
    std::fprintf(stderr, "llmirror: the %s was failed by an earlier run: re-adding it\n",
                 leg_name(leg));
    repair = leg == 0 ? Repair::kReaddPrimary : Repair::kReaddSecondary;
  } else if (!m->needs_sync().empty()) {
    repair = Repair::kResync;
  } else {
    std::fprintf(stderr, "llmirror: resync: nothing to copy\n");
  }
  if (repair != Repair::kNone) {
    if (g_config.resync == ResyncPolicy::kWait) {
      run_repair(*m, repair);
    } else if (g_config.resync == ResyncPolicy::kOff) {
      std::fprintf(stderr, "llmirror: resync=off: the legs are not in step\n");
    }
  }
  std::fflush(stderr);
  g_mirror = std::move(m);
  if (repair != Repair::kNone && g_config.resync == ResyncPolicy::kBackground) {
    std::fprintf(stderr, "llmirror: resync=background: serving while the resync runs\n");
    std::fflush(stderr);
    g_resync_thread = std::thread([repair] { run_repair(*g_mirror, repair); });
  }
  return 0;
}

void close_mirror() {
  const llbitmap::detail::MutexLock lock(g_close_mutex);
  if (g_resync_thread.joinable()) g_resync_thread.join();
  if (!g_mirror) return;
  const std::error_code ec = g_mirror->close();
  if (ec) nbdkit_error("llmirror: closing the mirror: %s", ec.message().c_str());
  g_mirror.reset();
}

void llmirror_cleanup() {
  close_mirror();
}
void llmirror_unload() {
  close_mirror();
}

// One Mirror for every connection: the handle carries nothing.
int g_handle;
void* llmirror_open(int /*readonly*/) {
  return &g_handle;
}
void llmirror_close(void* /*handle*/) {}

std::int64_t llmirror_get_size(void* /*handle*/) {
  return static_cast<std::int64_t>(g_mirror->size());
}

int llmirror_can_flush(void* /*handle*/) {
  return 1;
}
int llmirror_can_trim(void* /*handle*/) {
  return 1;
}
int llmirror_can_fua(void* /*handle*/) {
  return NBDKIT_FUA_NATIVE;
}
int llmirror_can_multi_conn(void* /*handle*/) {
  return 1;
}

int llmirror_pread(void* /*handle*/, void* buf, std::uint32_t count, std::uint64_t offset,
                   std::uint32_t /*flags*/) {
  const std::error_code ec =
      g_mirror->read(offset, std::span<std::byte>(static_cast<std::byte*>(buf), count));
  return ec ? fail("read", offset, count, ec) : 0;
}

int llmirror_pwrite(void* /*handle*/, const void* buf, std::uint32_t count, std::uint64_t offset,
                    std::uint32_t flags) {
  const std::error_code ec =
      g_mirror->write(offset, std::span<const std::byte>(static_cast<const std::byte*>(buf), count),
                      (flags & NBDKIT_FLAG_FUA) != 0);
  return ec ? fail("write", offset, count, ec) : 0;
}

int llmirror_flush(void* /*handle*/, std::uint32_t /*flags*/) {
  const std::error_code ec = g_mirror->flush();
  return ec ? fail("flush", 0, g_mirror->size(), ec) : 0;
}

int llmirror_trim(void* /*handle*/, std::uint32_t count, std::uint64_t offset,
                  std::uint32_t flags) {
  std::error_code ec = g_mirror->trim(offset, count);
  if (!ec && (flags & NBDKIT_FLAG_FUA) != 0) ec = g_mirror->flush();
  return ec ? fail("trim", offset, count, ec) : 0;
}

nbdkit_plugin create_plugin() {
  nbdkit_plugin p = nbdkit_plugin();
  p.name = "llmirror";
  p.longname = "llbitmap RAID-1 mirror";
  p.version = "0.1";
  p.description = "a RAID-1 of two files with an llbitmap write-intent bitmap";
  p.config = llmirror_config;
  p.config_complete = llmirror_config_complete;
  p.config_help =
      "primary=<FILE>      (required) first leg\n"
      "secondary=<FILE>    (required) second leg\n"
      "bitmap=<FILE>       bitmap file (required with mode=llbitmap)\n"
      "size=<SIZE>         device size, e.g. 1G (required when creating)\n"
      "mode=llbitmap|none|classic  write-intent tracking (default llbitmap)\n"
      "chunk=<SIZE>        bitmap chunk size when creating (default automatic)\n"
      "resync=wait|background|off  start-up resync (default wait)\n"
      "fail=primary|secondary  run degraded (restart without it to re-add)\n"
      "daemon_sleep=<MS>, barrier_idle=<MS>  bitmap daemon intervals";
  p.get_ready = llmirror_get_ready;
  p.after_fork = llmirror_after_fork;
  p.cleanup = llmirror_cleanup;
  p.unload = llmirror_unload;
  p.open = llmirror_open;
  p.close = llmirror_close;
  p.get_size = llmirror_get_size;
  p.can_flush = llmirror_can_flush;
  p.can_trim = llmirror_can_trim;
  p.can_fua = llmirror_can_fua;
  p.can_multi_conn = llmirror_can_multi_conn;
  p.pread = llmirror_pread;
  p.pwrite = llmirror_pwrite;
  p.flush = llmirror_flush;
  p.trim = llmirror_trim;
  p.errno_is_preserved = 0;
  return p;
}

nbdkit_plugin g_plugin = create_plugin();

}  // namespace

NBDKIT_REGISTER_PLUGIN(g_plugin)
