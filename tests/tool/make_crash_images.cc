// SPDX-License-Identifier: LGPL-2.1-or-later
//
// make_crash_images.cc: builds the bitmap files tool_test.sh examines. It creates a
// bitmap with Bitmap, starts writes (durable Dirty on return), and copies the file while
// they are in flight: the copies are what a crash at that moment leaves on disk. Then it
// ends the writes and closes the bitmap cleanly.
//
//   make_crash_images DIR   writes into DIR (which must exist):
//     live.bm         1 GiB device, 64 KiB chunks, assume-clean, bound to device uuid
//                     00112233-4455-6677-8899-aabbccddeeff; closed cleanly
//     crash.bm        live.bm during the writes: chunks 0, 160..162 and 16383 Dirty,
//                     chunk 8192 NeedSync (written while degraded)
//     crash-stale.bm  crash.bm with the superblock's stale flag set (superblock CRC and
//                     block 0's checksum recomputed, so it validates)
//     many.bm         64 MiB device, 64 KiB chunks, not assume-clean: 30 single-chunk
//                     Dirty runs (chunks 0, 2, 4, ..., 58) copied during the writes
//
// The copies are read with FileStorage::open_read_only, which takes no lock: the open
// Bitmap holds the file's exclusive lock.
//
// Exit status 0 on success; anything unexpected prints a message and exits 1.
#include <llbitmap/bitmap.h>
#include <llbitmap/format.h>
#include <llbitmap/storage.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace {

using llbitmap::Bitmap;
using llbitmap::BitmapOptions;

[[noreturn]] void die(const std::string& what, const std::error_code& ec = {}) {
  std::fprintf(stderr, "make_crash_images: %s%s%s\n", what.c_str(), ec ? ": " : "",
               ec ? ec.message().c_str() : "");
  std::exit(1);
}

std::vector<std::byte> read_file(const std::filesystem::path& p) {
  std::error_code ec;
  auto st = llbitmap::FileStorage::open_read_only(p, ec);  // the bitmap holds the lock
  if (!st) die("open " + p.string(), ec);
  std::uint64_t n = 0;
  if ((ec = st->size(n))) die("size " + p.string(), ec);
  std::vector<std::byte> bytes(n);
  if ((ec = st->read(0, bytes))) die("read " + p.string(), ec);
  return bytes;
}

void write_new_file(const std::filesystem::path& p, std::span<const std::byte> bytes) {
  std::error_code ec;
  if (!llbitmap::FileStorage::create(p, bytes, ec)) die("create " + p.string(), ec);
}

// Sets `flags` in the superblock of an encoded file and fixes both checksums it affects.
std::vector<std::byte> with_state_flags(std::vector<std::byte> file, std::uint32_t flags) {
  std::error_code ec;
  auto sb = llbitmap::Superblock::decode(file, ec, file.size());
  if (!sb) die("decode", ec);
  sb->state |= flags;
  sb->encode(
      std::span<std::byte, llbitmap::kSuperblockBytes>(file.data(), llbitmap::kSuperblockBytes));
  const llbitmap::Geometry& g = sb->geometry;
  const std::uint32_t crc =
      llbitmap::block_crc(0, sb->uuid, std::span<const std::byte>(file.data(), g.block_bytes()));
  llbitmap::store_le32(std::span<std::byte, 4>(file.data() + g.checksum_offset(0), 4), crc);
  return file;
}

void start(Bitmap& bm, std::uint64_t off, std::uint64_t len) {
  if (const std::error_code ec = bm.start_write(off, len))
    die("start_write " + std::to_string(off), ec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) die("usage: make_crash_images DIR");
  const std::filesystem::path dir = argv[1];
  constexpr std::uint64_t kKiB = 1024, kMiB = kKiB * kKiB, kGiB = kMiB * kKiB;
  std::error_code ec;

  {
    BitmapOptions opt;
    opt.device_bytes = kGiB;
    opt.assume_clean = true;
    opt.start_daemon = false;
    for (std::size_t i = 0; i < opt.device_uuid.size(); ++i)  // bound: 00112233-...-ccddeeff
      opt.device_uuid[i] = static_cast<std::uint8_t>(0x11 * i);
    auto bm = Bitmap::create(dir / "live.bm", opt, ec);
    if (!bm) die("create live.bm", ec);
    if (bm->chunk_bytes() != 64 * kKiB) die("live.bm: unexpected chunk size");
    const std::vector<std::pair<std::uint64_t, std::uint64_t>> writes = {
        {0, 4096}, {10 * kMiB, 192 * kKiB}, {kGiB - 1, 1}};
    for (const auto& [off, len] : writes) start(*bm, off, len);
    bm->set_degraded(true);
    start(*bm, 512 * kMiB, 64 * kKiB);  // NeedSync: a write while degraded
    bm->set_degraded(false);

    const std::vector<std::byte> crash = read_file(dir / "live.bm");
    write_new_file(dir / "crash.bm", crash);
    write_new_file(dir / "crash-stale.bm", with_state_flags(crash, llbitmap::kSbStale));

    for (const auto& [off, len] : writes) bm->end_write(off, len);
    bm->end_write(512 * kMiB, 64 * kKiB);
    if ((ec = bm->close())) die("close live.bm", ec);
  }
  {
    BitmapOptions opt;
    opt.device_bytes = 64 * kMiB;
    opt.chunk_bytes = 64 * kKiB;
    opt.start_daemon = false;
    auto bm = Bitmap::create(dir / "many.tmp.bm", opt, ec);
    if (!bm) die("create many.tmp.bm", ec);
    for (std::uint64_t c = 0; c < 60; c += 2) start(*bm, c * 64 * kKiB, 1);
    write_new_file(dir / "many.bm", read_file(dir / "many.tmp.bm"));
    for (std::uint64_t c = 0; c < 60; c += 2) bm->end_write(c * 64 * kKiB, 1);
    if ((ec = bm->close())) die("close many.tmp.bm", ec);
  }
  return 0;
}
