// SPDX-License-Identifier: LGPL-2.1-or-later
//
// format.h: the on-disk format of a bitmap file and its geometry: CRC32C, the
// superblock (modelled on the kernel's bitmap_super_t), the chunk -> byte -> page ->
// block mapping, the per-block checksum table, and the builder of a fresh file.
// docs/format.md is the byte-level description; this header is its implementation.
//
// Layer 3. A file is
//
//   [ image: space_bytes ][ checksum table: one u32 CRC32C per image block, zero-padded
//                           to a multiple of block_bytes ]
//
// and the image is the kernel's bitmap image: bytes [0, 1024) hold the 256-byte
// superblock (the rest zero), the state byte of chunk c is at byte c + 1024, and the
// bytes after the last chunk are zero. A page is 4096 bytes of the image (page = byte
// >> 12); a block is block_bytes of the image (512, 1024, 2048 or 4096), the unit that
// is written and checksummed. A block whose checksum does not match is "unverifiable":
// the bitmap treats every chunk in it as NeedSync, never as Unwritten or Clean.
//
// Everything here is pure: no IO, no clock, no global state (random_uuid() is the one
// exception: it reads the system's random source). Tests and the fuzzer call it
// directly. Environmental problems (a foreign or corrupt superblock, sizes that do not
// fit) are returned as error codes (see error.h); breaking a documented precondition
// (a chunk index past the end, a span of the wrong size) is a programming error caught
// by LLBM_CHECK, or by LLBM_DCHECK in the inline mapping helpers the write path uses.
//
// Threads: every function is reentrant; Geometry and Superblock are values, safe to
// read from any number of threads. Nothing blocks.
#pragma once

#include <llbitmap/detail/check.h>

#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <system_error>
#include <vector>

namespace llbitmap {

// --- constants (kernel names in comments)

inline constexpr std::uint32_t kBitmapMagic = 0x6d746962;  // BITMAP_MAGIC, "bitm" in LE
inline constexpr std::uint32_t kBitmapVersion = 6;         // BITMAP_MAJOR_LOCKLESS
inline constexpr std::uint32_t kFormatRevision = 1;        // our extension's revision
inline constexpr std::size_t kSuperblockBytes = 256;       // sizeof(bitmap_super_t)
inline constexpr std::size_t kSuperblockCrcOffset = 252;   // sb_crc covers [0, 252)
inline constexpr std::uint64_t kDataOffset = 1024;         // BITMAP_DATA_OFFSET
inline constexpr unsigned kPageShift = 12;
inline constexpr std::uint64_t kPageBytes = std::uint64_t{1} << kPageShift;
inline constexpr std::uint64_t kSectorBytes = 512;
inline constexpr std::uint64_t kMinChunkBytes = kSectorBytes;
// chunksize is a u32 count of sectors and a power of two: at most 2^31 sectors.
inline constexpr std::uint64_t kMaxChunkBytes = std::uint64_t{1} << 40;
inline constexpr std::uint64_t kAutoChunkBytes = 64 << 10;  // MIN_CHUNK_SIZE, 128 sectors
inline constexpr std::uint64_t kDefaultSpaceBytes = 128 << 10;
inline constexpr std::uint64_t kMinSpaceBytes = kPageBytes;
// The whole image is held in memory; 1 GiB is about 10^9 chunks.
inline constexpr std::uint64_t kMaxSpaceBytes = std::uint64_t{1} << 30;
inline constexpr std::uint32_t kDefaultBlockBytes = 4096;
inline constexpr std::chrono::milliseconds kMinInterval{1};
inline constexpr std::chrono::milliseconds kMaxInterval{24 * 60 * 60 * 1000};
inline constexpr std::chrono::milliseconds kDefaultDaemonSleep{30000};  // kernel: 30 s
inline constexpr std::chrono::milliseconds kDefaultBarrierIdle{5000};   // kernel: 5 s

// Superblock `state` flag masks, with the kernel's bit numbers.
inline constexpr std::uint32_t kSbStale = 1u << 1;       // BITMAP_STALE
inline constexpr std::uint32_t kSbWriteError = 1u << 2;  // BITMAP_WRITE_ERROR
inline constexpr std::uint32_t kSbFirstUse = 1u << 3;    // BITMAP_FIRST_USE
inline constexpr std::uint32_t kSbClean = 1u << 4;       // BITMAP_CLEAN (assume_clean)
inline constexpr std::uint32_t kSbDaemonBusy = 1u << 5;  // BITMAP_DAEMON_BUSY
inline constexpr std::uint32_t kSbKnownState =
    kSbStale | kSbWriteError | kSbFirstUse | kSbClean | kSbDaemonBusy;

using Uuid = std::array<std::byte, 16>;

// --- little-endian integers

[[nodiscard]] constexpr std::uint32_t load_le32(std::span<const std::byte, 4> in) noexcept {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint32_t>(in[i]);
  return v;
}
[[nodiscard]] constexpr std::uint64_t load_le64(std::span<const std::byte, 8> in) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint64_t>(in[i]);
  return v;
}
constexpr void store_le32(std::span<std::byte, 4> out, std::uint32_t v) noexcept {
  for (auto& b : out) {
    b = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
}
constexpr void store_le64(std::span<std::byte, 8> out, std::uint64_t v) noexcept {
  for (auto& b : out) {
    b = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
}

// --- CRC32C (Castagnoli, reflected polynomial 0x82F63B78, init and final xor ~0)

// The CRC of `previous` data followed by `data`, given crc == crc32c(previous)
// (0 for no previous data). crc32c("123456789") == 0xE3069283. Uses SSE4.2 when the
// CPU has it, else a slicing-by-8 table.
[[nodiscard]] std::uint32_t crc32c_extend(std::uint32_t crc,
                                          std::span<const std::byte> data) noexcept;
[[nodiscard]] inline std::uint32_t crc32c(std::span<const std::byte> data) noexcept {
  return crc32c_extend(0, data);
}

namespace detail {
// The two implementations behind crc32c_extend(), for tests.
[[nodiscard]] std::uint32_t crc32c_extend_software(std::uint32_t crc,
                                                   std::span<const std::byte> data) noexcept;
[[nodiscard]] bool crc32c_hardware_available() noexcept;
// Requires: crc32c_hardware_available().
[[nodiscard]] std::uint32_t crc32c_extend_hardware(std::uint32_t crc,
                                                   std::span<const std::byte> data) noexcept;
}  // namespace detail

// --- geometry

// The sizes a geometry is computed from (BitmapOptions' fields of the same names).
struct GeometryOptions {
  std::uint64_t device_bytes = 0;                  // required, > 0
  std::uint64_t chunk_bytes = 0;                   // 0 = auto
  std::uint64_t space_bytes = kDefaultSpaceBytes;  // image size, superblock area included
  std::uint32_t block_bytes = kDefaultBlockBytes;  // write and checksum unit
};

// A half-open range of chunk indices [first, end).
struct ChunkRange {
  std::uint64_t first = 0;
  std::uint64_t end = 0;
  [[nodiscard]] constexpr bool empty() const noexcept { return first >= end; }
  [[nodiscard]] constexpr std::uint64_t size() const noexcept { return empty() ? 0 : end - first; }
  friend constexpr bool operator==(const ChunkRange&, const ChunkRange&) = default;
};

// How a device maps onto chunks, and chunks onto the image, its pages and blocks.
// A default-constructed Geometry is empty (valid() false); compute() makes valid ones.
// The mapping helpers require a valid geometry and an index in range (LLBM_DCHECK).
class Geometry {
 public:
  Geometry() = default;

  // Validates `opts` and derives the rest (docs/format.md#4-geometry-rules):
  //   block_bytes  512, 1024, 2048 or 4096;
  //   space_bytes  a multiple of 4096 (hence of block_bytes), 4096 .. kMaxSpaceBytes;
  //   device_bytes > 0;
  //   chunk_bytes  0: 64 KiB, doubled until chunks + 1024 <= space_bytes;
  //                else a power of two in [512, kMaxChunkBytes] with chunks + 1024 <=
  //                space_bytes.
  //   chunks = ceil(device_bytes / chunk_bytes), pages = ceil((chunks + 1024) / 4096).
  // Any violation: Errc::bad_geometry and std::nullopt.
  [[nodiscard]] static std::optional<Geometry> compute(const GeometryOptions& opts,
                                                       std::error_code& ec);

  [[nodiscard]] bool valid() const noexcept { return chunks_ != 0; }
  [[nodiscard]] std::uint64_t device_bytes() const noexcept { return device_bytes_; }
  [[nodiscard]] std::uint64_t chunk_bytes() const noexcept {
    return std::uint64_t{1} << chunk_shift_;
  }
  [[nodiscard]] unsigned chunk_shift() const noexcept { return chunk_shift_; }
  [[nodiscard]] std::uint64_t chunk_sectors() const noexcept {
    return chunk_bytes() / kSectorBytes;
  }
  [[nodiscard]] std::uint64_t chunks() const noexcept { return chunks_; }
  [[nodiscard]] std::uint64_t space_bytes() const noexcept { return space_bytes_; }
  [[nodiscard]] std::uint32_t block_bytes() const noexcept { return block_bytes_; }
  // Pages that hold the superblock or a chunk: ceil((chunks + 1024) / 4096).
  [[nodiscard]] std::uint64_t pages() const noexcept { return pages_; }
  // Blocks in the whole image: space_bytes / block_bytes.
  [[nodiscard]] std::uint64_t blocks() const noexcept { return space_bytes_ / block_bytes_; }
  [[nodiscard]] std::uint64_t blocks_per_page() const noexcept { return kPageBytes / block_bytes_; }
  // The device size in sectors, rounded up (the superblock's sync_size).
  [[nodiscard]] std::uint64_t sync_sectors() const noexcept {
    return device_bytes_ / kSectorBytes + (device_bytes_ % kSectorBytes != 0 ? 1 : 0);
  }

  // Device byte offset -> chunk. Requires: offset < device_bytes().
  [[nodiscard]] std::uint64_t chunk_of(std::uint64_t offset) const noexcept {
    LLBM_DCHECK(offset < device_bytes_, "Geometry: offset %llu past the device (%llu bytes)",
                static_cast<unsigned long long>(offset),
                static_cast<unsigned long long>(device_bytes_));
    return offset >> chunk_shift_;
  }
  // Chunk -> its first device byte. Requires: chunk < chunks().
  [[nodiscard]] std::uint64_t chunk_offset(std::uint64_t chunk) const noexcept {
    check_chunk(chunk);
    return chunk << chunk_shift_;
  }
  // Chunk -> the image byte that holds its state (chunk + 1024).
  [[nodiscard]] std::uint64_t chunk_pos(std::uint64_t chunk) const noexcept {
    check_chunk(chunk);
    return chunk + kDataOffset;
  }
  [[nodiscard]] std::uint64_t page_of_chunk(std::uint64_t chunk) const noexcept {
    return chunk_pos(chunk) >> kPageShift;
  }
  // A shift, not a division: block_bytes() is a power of two (512 .. 4096), never 0
  // in a valid geometry, so the count is one instruction with no zero case.
  [[nodiscard]] std::uint64_t block_of_chunk(std::uint64_t chunk) const noexcept {
    return chunk_pos(chunk) >> __builtin_ctz(block_bytes_);
  }

  // The chunks whose state bytes lie in page p (never empty). Requires: p < pages().
  [[nodiscard]] ChunkRange chunks_in_page(std::uint64_t page) const noexcept;
  [[nodiscard]] std::uint64_t first_chunk_of_page(std::uint64_t page) const noexcept {
    return chunks_in_page(page).first;
  }
  [[nodiscard]] std::uint64_t last_chunk_of_page(std::uint64_t page) const noexcept {
    return chunks_in_page(page).end - 1;
  }
  // The chunks whose state bytes lie in block b; empty for a block that holds only
  // superblock area or only the zero tail. Requires: b < blocks().
  [[nodiscard]] ChunkRange chunks_in_block(std::uint64_t block) const noexcept;
  // Requires: chunks_in_block(block) is not empty.
  [[nodiscard]] std::uint64_t first_chunk_of_block(std::uint64_t block) const noexcept;
  [[nodiscard]] std::uint64_t last_chunk_of_block(std::uint64_t block) const noexcept;
  [[nodiscard]] std::uint64_t first_block_of_page(std::uint64_t page) const noexcept {
    return page * blocks_per_page();
  }

  // File layout.
  [[nodiscard]] std::uint64_t image_bytes() const noexcept { return space_bytes_; }
  [[nodiscard]] std::uint64_t checksum_table_offset() const noexcept { return space_bytes_; }
  // blocks() * 4 rounded up to a multiple of block_bytes().
  [[nodiscard]] std::uint64_t checksum_table_bytes() const noexcept {
    const std::uint64_t raw = blocks() * 4;
    return (raw + block_bytes_ - 1) / block_bytes_ * block_bytes_;
  }
  // File offset of block b's 4-byte checksum entry.
  [[nodiscard]] std::uint64_t checksum_offset(std::uint64_t block) const noexcept {
    LLBM_DCHECK(block < blocks(), "Geometry: block %llu past the image",
                static_cast<unsigned long long>(block));
    return checksum_table_offset() + block * 4;
  }
  [[nodiscard]] std::uint64_t file_bytes() const noexcept {
    return space_bytes_ + checksum_table_bytes();
  }

  friend bool operator==(const Geometry&, const Geometry&) = default;

 private:
  void check_chunk(std::uint64_t chunk) const noexcept {
    LLBM_DCHECK(chunk < chunks_, "Geometry: chunk %llu past the end (%llu chunks)",
                static_cast<unsigned long long>(chunk), static_cast<unsigned long long>(chunks_));
    (void)chunk;
  }

  std::uint64_t device_bytes_ = 0;
  std::uint64_t chunks_ = 0;
  std::uint64_t space_bytes_ = 0;
  std::uint64_t pages_ = 0;
  std::uint32_t block_bytes_ = kDefaultBlockBytes;
  unsigned chunk_shift_ = 0;
};

// True for 1 ms .. 24 h, the range daemon_sleep and barrier_idle accept.
[[nodiscard]] constexpr bool interval_in_range(std::chrono::milliseconds d) noexcept {
  return d >= kMinInterval && d <= kMaxInterval;
}

// --- superblock

// The decoded superblock. Fields the format fixes (magic, version, format_revision,
// write_behind, nodes, cluster_name, the reserved bytes) and fields derived from the
// geometry (sync_size, chunksize, sectors_reserved, chunks, ...) are not stored here:
// encode() writes them and decode() checks them.
struct Superblock {
  Uuid uuid{};
  std::uint64_t events = 0;
  std::uint64_t events_cleared = 0;
  std::uint32_t state = 0;  // kSb* flags
  std::chrono::milliseconds daemon_sleep = kDefaultDaemonSleep;
  std::chrono::milliseconds barrier_idle = kDefaultBarrierIdle;
  Geometry geometry;
  // The device this bitmap belongs to (bytes [176, 192), docs/format.md): all zero for a
  // file that is not bound to a device, as every file written before the field existed.
  // Not to be confused with `uuid`, the bitmap's own identity that the block checksums
  // mix in.
  Uuid device_uuid{};

  // Writes the 256 bytes, sb_crc included. Requires: geometry.valid(), both intervals
  // in range, no unknown state bits (LLBM_CHECK).
  void encode(std::span<std::byte, kSuperblockBytes> out) const noexcept;

  // Parses and validates, in this order (the first failure wins):
  //   fewer than 4 bytes or magic != kBitmapMagic          -> Errc::not_a_bitmap
  //   version != 6 (a classic md bitmap is 4 or 5)          -> Errc::unsupported_version
  //   fewer than 256 bytes, or sb_crc mismatch              -> Errc::bad_superblock
  //   format_revision != 1                                  -> Errc::unsupported_version
  //   unknown state bits, non-zero write_behind, nodes,
  //   cluster_name, flags2 or reserved bytes [192, 252)     -> Errc::bad_superblock
  //   block size, space, chunk size, device size, chunks,
  //   sync_size, sectors_reserved that do not agree, or
  //   daemon_sleep / barrier_idle outside 1 ms .. 24 h      -> Errc::bad_geometry
  //   file_bytes given and != geometry.file_bytes()         -> Errc::size_mismatch
  // Only the first 256 bytes of `bytes` are read.
  [[nodiscard]] static std::optional<Superblock> decode(
      std::span<const std::byte> bytes, std::error_code& ec,
      std::optional<std::uint64_t> file_bytes = std::nullopt);

  friend bool operator==(const Superblock&, const Superblock&) = default;
};

// Recomputes sb_crc over bytes [0, 252) of an encoded superblock (for tools and tests
// that edit fields in place).
void update_superblock_crc(std::span<std::byte, kSuperblockBytes> sb) noexcept;

// What a new bitmap file is made from (BitmapOptions' fields, plus the identity).
struct FormatOptions {
  std::uint64_t device_bytes = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t space_bytes = kDefaultSpaceBytes;
  std::uint32_t block_bytes = kDefaultBlockBytes;
  std::chrono::milliseconds daemon_sleep = kDefaultDaemonSleep;
  std::chrono::milliseconds barrier_idle = kDefaultBarrierIdle;
  bool assume_clean = false;  // sets kSbClean
  Uuid uuid{};
  Uuid device_uuid{};  // Superblock::device_uuid; all zero: not bound
};

// The superblock of a new bitmap: events 0, state kSbClean or 0. daemon_sleep or
// barrier_idle outside 1 ms .. 24 h -> std::errc::invalid_argument; sizes that do not
// fit -> Errc::bad_geometry (as Geometry::compute).
[[nodiscard]] std::optional<Superblock> make_superblock(const FormatOptions& opts,
                                                        std::error_code& ec);

// A random (version 4) UUID from the system's random source.
[[nodiscard]] Uuid random_uuid();

// --- blocks and the checksum table

// crc32c over (block index as u64 LE, the 16 uuid bytes, the block's bytes).
[[nodiscard]] std::uint32_t block_crc(std::uint64_t block, const Uuid& uuid,
                                      std::span<const std::byte> block_data) noexcept;

// The checksum stored for block b in an encoded table. Requires: b < geometry.blocks(),
// table.size() == geometry.checksum_table_bytes().
[[nodiscard]] std::uint32_t stored_block_crc(const Geometry& geometry,
                                             std::span<const std::byte> table,
                                             std::uint64_t block) noexcept;

// Fills `table` (checksum_table_bytes()) with the checksum of every block of `image`
// (image_bytes()), zero padding included.
void fill_checksum_table(const Geometry& geometry, const Uuid& uuid,
                         std::span<const std::byte> image, std::span<std::byte> table) noexcept;

// True if block b of `image` matches its entry in `table`.
[[nodiscard]] bool verify_block(const Geometry& geometry, const Uuid& uuid,
                                std::span<const std::byte> image, std::span<const std::byte> table,
                                std::uint64_t block) noexcept;

// The indices of the blocks of `image` whose checksum does not match (ascending).
// Every chunk in them must be treated as NeedSync.
[[nodiscard]] std::vector<std::uint64_t> unverifiable_blocks(const Geometry& geometry,
                                                             const Uuid& uuid,
                                                             std::span<const std::byte> image,
                                                             std::span<const std::byte> table);

// The full contents of a new file for `sb`: the superblock, every chunk's state byte set
// to `chunk_fill` (0 = Unwritten, 1 = Clean), zeros elsewhere in the image, then the
// checksum table. Size: sb.geometry.file_bytes(). Requires: sb encodable.
[[nodiscard]] std::vector<std::byte> build_fresh_file(const Superblock& sb,
                                                      std::uint8_t chunk_fill);

}  // namespace llbitmap
