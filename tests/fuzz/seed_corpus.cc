// SPDX-License-Identifier: LGPL-2.1-or-later
//
// seed_corpus.cc: the seed corpus of the open() fuzz target (docs/testing.md#fuzzing):
// valid bitmap images, fresh and used, made by the library itself over a FaultStorage
// (create, writes left in flight, ended writes cleaned by the daemon, resync states,
// discards, degraded and parity writes, a failed sync that leaves the superblock stale),
// then given a fixed uuid so that the corpus is reproducible byte for byte. Two more are
// damaged on purpose: one block whose checksum fails, one invalid state byte (with its
// checksum fixed), and one used image is bound to a device uuid. Every one of them must open (the
// regression runner checks it), so a format change that the seeds no longer follow is caught.
#include <llbitmap/bitmap.h>
#include <llbitmap/format.h>
#include <llbitmap/testing/fault_storage.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_open.h"

namespace llbitmap::fuzz {

namespace {

using Bytes = std::vector<std::byte>;
using Corpus = std::vector<std::pair<std::string, Bytes>>;

[[noreturn]] void die(const std::string& what, const std::error_code& ec) {
  std::fprintf(stderr, "seed corpus: %s: %s\n", what.c_str(), ec.message().c_str());
  std::abort();
}

void check(const std::error_code& ec, const std::string& what) {
  if (ec) die(what, ec);
}

struct Shape {
  const char* name;
  std::uint64_t device_bytes;
  std::uint64_t chunk_bytes;  // 0 = auto
  std::uint64_t space_bytes;
  std::uint32_t block_bytes;
};

// Small images (4-16 KiB of space) with one to four pages, sector and page blocks,
// auto and explicit chunk sizes, a device size that is not a multiple of the chunk.
constexpr Shape kShapes[] = {
    {"s4k-b512-tiny", (1ull << 20) - 4096, 0, 4096, 512},    // 16 chunks, cheap to fuzz
    {"s4k-b512", 100ull << 20, 0, 4096, 512},                // 1600 chunks, 1 page
    {"s8k-b4096", (1ull << 30) + 12345, 0, 8192, 4096},      // 4097 chunks, 2 pages
    {"s16k-b512", 48ull << 20, 4096, 16384, 512},            // 12288 chunks, 4 pages
    {"s12k-b4096", (10ull << 20) + 511, 1024, 12288, 4096},  // 10241 chunks, 3 pages
};

// Gives the image a fixed uuid (the library picks a random one): re-encodes the
// superblock and recomputes every block checksum.
void set_uuid(Bytes& img, std::uint8_t tag) {
  std::error_code ec;
  std::optional<Superblock> sb = Superblock::decode(img, ec, img.size());
  if (!sb) die("decode of a generated image", ec);
  for (std::size_t i = 0; i < sb->uuid.size(); ++i)
    sb->uuid[i] = static_cast<std::byte>(0x11 * (i + 1) + tag);
  const std::span<std::byte> all(img);
  sb->encode(all.first<kSuperblockBytes>());
  const Geometry& g = sb->geometry;
  fill_checksum_table(g, sb->uuid, all.first(g.image_bytes()),
                      all.subspan(g.checksum_table_offset(), g.checksum_table_bytes()));
}

// Runs `use` on a new bitmap of `shape` over a FaultStorage and returns the durable
// image at the moment `use` returns (a crash image: writes in flight stay Dirty). `use`
// returns a clean-up to run before close (ending those writes).
Bytes make_image(const Shape& shape, bool assume_clean, bool parity,
                 const std::function<std::function<void()>(Bitmap&, FaultStorage&)>& use) {
  auto storage = std::make_unique<FaultStorage>();
  FaultStorage* fs = storage.get();
  BitmapOptions o;
  o.device_bytes = shape.device_bytes;
  o.chunk_bytes = shape.chunk_bytes;
  o.space_bytes = shape.space_bytes;
  o.block_bytes = shape.block_bytes;
  o.daemon_sleep = std::chrono::milliseconds(1000);
  o.barrier_idle = std::chrono::milliseconds(1);
  o.assume_clean = assume_clean;
  o.parity = parity;
  o.start_daemon = false;
  std::error_code ec;
  std::unique_ptr<Bitmap> bm = Bitmap::create(std::move(storage), o, ec);
  if (!bm) die(std::string("create ") + shape.name, ec);
  std::function<void()> cleanup;
  if (use) cleanup = use(*bm, *fs);
  Bytes img = fs->durable_image();
  if (cleanup) cleanup();
  if (!bm->failed()) check(bm->close(), std::string("close ") + shape.name);
  return img;
}

}  // namespace

Corpus make_seed_corpus() {
  Corpus out;
  std::uint8_t tag = 0;
  auto add = [&](std::string name, Bytes img) {
    set_uuid(img, tag++);
    out.emplace_back("seed-" + std::move(name), std::move(img));
  };

  for (const Shape& s : kShapes) {
    std::error_code gec;
    const std::optional<Geometry> geo =
        Geometry::compute({s.device_bytes, s.chunk_bytes, s.space_bytes, s.block_bytes}, gec);
    check(gec, "geometry");
    const std::uint64_t cb = geo->chunk_bytes(), n = geo->chunks(), dev = s.device_bytes;
    // Chunk positions that fit every shape (n >= 16).
    const std::uint64_t ended[] = {0, n / 3 * cb, 2 * n / 3 * cb};
    const std::uint64_t resync = (n - 3) * cb;

    // Fresh: Unwritten (and Clean for assume_clean on two shapes).
    add(std::string(s.name) + "-fresh", make_image(s, false, false, nullptr));
    if (s.block_bytes == 4096 || n > 1024)
      add(std::string(s.name) + "-fresh-clean", make_image(s, true, false, nullptr));

    // Used: writes ended and cleaned by the daemon (Clean), writes still in flight at the
    // crash (Dirty, on several pages and the last chunk), a resync in progress
    // (Syncing), an aborted one (NeedSync), a discard (Unwritten again).
    add(std::string(s.name) + "-used", make_image(s, false, false, [&](Bitmap& bm, FaultStorage&) {
          for (std::uint64_t off : ended) check(bm.start_write(off, 3 * cb), "start_write");
          for (std::uint64_t off : ended) bm.end_write(off, 3 * cb);
          check(bm.flush(), "flush");  // Clean, durable
          check(bm.start_discard(0, 2 * cb), "start_discard");
          bm.end_discard(0, 2 * cb);
          bm.close_sync();
          check(bm.flush(), "flush");
          // Resync states.
          bm.set_degraded(true);
          check(bm.start_write(resync, cb), "start_write degraded");  // NeedSync
          bm.end_write(resync, cb);
          bm.set_degraded(false);
          (void)bm.start_sync(resync);  // Syncing; persisted with the writes below
          // In flight at the crash: Dirty on disk.
          const std::uint64_t w1 = (n / 3 + 4) * cb, w2 = dev - 1, w3 = n / 2 * cb;
          check(bm.start_write(w1, 2 * cb), "start_write");
          check(bm.start_write(w2, 1), "start_write");
          check(bm.start_write(w3, cb + 1), "start_write");
          return std::function<void()>([&bm, w1, w2, w3, cb, resync] {
            bm.end_write(w1, 2 * cb);
            bm.end_write(w2, 1);
            bm.end_write(w3, cb + 1);
            bm.abort_sync(resync);
          });
        }));
  }

  // Parity (raid456): Unwritten + Startwrite gives NeedSync.
  add("s4k-b512-parity", make_image(kShapes[1], false, true, [](Bitmap& bm, FaultStorage&) {
        check(bm.start_write(0, 4 << 20), "start_write parity");
        bm.end_write(0, 4 << 20);
        return std::function<void()>();
      }));

  // A failed sync: the bitmap fails and marks the superblock stale (the next open
  // treats every written chunk as NeedSync).
  add("s8k-b4096-stale", make_image(kShapes[2], true, false, [](Bitmap& bm, FaultStorage& fs) {
        check(bm.start_write(0, 1 << 20), "start_write");
        bm.end_write(0, 1 << 20);
        check(bm.flush(), "flush");
        fs.fail_sync(1);
        if (!bm.start_write(100 << 20, 1)) {
          std::fprintf(stderr, "seed corpus: an injected sync failure did not fail start_write\n");
          std::abort();
        }
        return std::function<void()>();
      }));

  auto find = [&out](const std::string& name) {
    for (const auto& [n, img] : out)
      if (n == name) return img;
    std::fprintf(stderr, "seed corpus: no seed %s\n", name.c_str());
    std::abort();
  };

  // Damaged on purpose (after the uuid is fixed): a state byte flipped without its
  // block checksum, and an invalid state byte with its checksum recomputed.
  {
    Bytes img = find("seed-s4k-b512-used");
    img[kDataOffset + 600] ^= std::byte{0x01};
    out.emplace_back("seed-s4k-b512-bad-block", std::move(img));
  }
  {
    Bytes img = find("seed-s4k-b512-used");
    img[kDataOffset + 9] = std::byte{0x07};
    std::error_code ec;
    const std::optional<Superblock> sb = Superblock::decode(img, ec, img.size());
    if (!sb) die("decode", ec);
    const std::span<std::byte> all(img);
    const Geometry& g = sb->geometry;
    fill_checksum_table(g, sb->uuid, all.first(g.image_bytes()),
                        all.subspan(g.checksum_table_offset(), g.checksum_table_bytes()));
    out.emplace_back("seed-s4k-b512-invalid-byte", std::move(img));
  }
  // Bound to a device (superblock bytes 176..191, docs/format.md §2.2).
  {
    Bytes img = find("seed-s4k-b512-used");
    std::error_code ec;
    std::optional<Superblock> sb = Superblock::decode(img, ec, img.size());
    if (!sb) die("decode", ec);
    for (std::size_t i = 0; i < sb->device_uuid.size(); ++i)
      sb->device_uuid[i] = static_cast<std::byte>(0xd0 + i);
    const std::span<std::byte> all(img);
    sb->encode(all.first<kSuperblockBytes>());
    const Geometry& g = sb->geometry;
    fill_checksum_table(g, sb->uuid, all.first(g.image_bytes()),
                        all.subspan(g.checksum_table_offset(), g.checksum_table_bytes()));
    out.emplace_back("seed-s4k-b512-bound", std::move(img));
  }
  return out;
}

}  // namespace llbitmap::fuzz
