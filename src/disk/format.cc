// SPDX-License-Identifier: LGPL-2.1-or-later
#include <llbitmap/error.h>
#include <llbitmap/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace llbitmap {

// ---------------------------------------------------------------------------------------
// CRC32C

namespace {

constexpr std::uint32_t kCrc32cPoly = 0x82F63B78;  // Castagnoli, reflected

// Slicing-by-8 tables: kTables[0] is the classic byte table; kTables[k][b] is the CRC of
// byte b followed by k zero bytes.
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1) != 0 ? (c >> 1) ^ kCrc32cPoly : c >> 1;
    t[0][b] = c;
  }
  for (std::size_t k = 1; k < 8; ++k)
    for (std::size_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  return t;
}

constexpr auto kCrcTables = make_crc_tables();

std::uint32_t crc_raw_software(std::uint32_t c, const unsigned char* p, std::size_t n) noexcept {
  while (n >= 8) {
    std::uint64_t w = 0;
    for (int i = 7; i >= 0; --i) w = (w << 8) | p[i];  // little-endian word
    w ^= c;
    c = kCrcTables[7][w & 0xff] ^ kCrcTables[6][(w >> 8) & 0xff] ^ kCrcTables[5][(w >> 16) & 0xff] ^
        kCrcTables[4][(w >> 24) & 0xff] ^ kCrcTables[3][(w >> 32) & 0xff] ^
        kCrcTables[2][(w >> 40) & 0xff] ^ kCrcTables[1][(w >> 48) & 0xff] ^ kCrcTables[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ kCrcTables[0][(c ^ *p++) & 0xff];
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t crc_raw_hardware(std::uint32_t c,
                                                                 const unsigned char* p,
                                                                 std::size_t n) noexcept {
  std::uint64_t c64 = c;
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);  // x86 is little-endian
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c64);
  while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

const unsigned char* bytes_of(std::span<const std::byte> s) noexcept {
  return reinterpret_cast<const unsigned char*>(s.data());
}

using CrcFn = std::uint32_t (*)(std::uint32_t, const unsigned char*, std::size_t) noexcept;

CrcFn pick_crc() noexcept {
#if defined(__x86_64__)
  if (detail::crc32c_hardware_available()) return &crc_raw_hardware;
#endif
  return &crc_raw_software;
}

}  // namespace

namespace detail {

bool crc32c_hardware_available() noexcept {
#if defined(__x86_64__)
  return __builtin_cpu_supports("sse4.2") != 0;
#else
  return false;
#endif
}

std::uint32_t crc32c_extend_software(std::uint32_t crc, std::span<const std::byte> data) noexcept {
  return ~crc_raw_software(~crc, bytes_of(data), data.size());
}

std::uint32_t crc32c_extend_hardware(std::uint32_t crc, std::span<const std::byte> data) noexcept {
#if defined(__x86_64__)
  LLBM_CHECK(crc32c_hardware_available(), "crc32c: no SSE4.2 on this CPU");
  return ~crc_raw_hardware(~crc, bytes_of(data), data.size());
#else
  LLBM_CHECK(false, "crc32c: no hardware CRC32C on this architecture");
  (void)crc;
  (void)data;
  return 0;
#endif
}

}  // namespace detail

std::uint32_t crc32c_extend(std::uint32_t crc, std::span<const std::byte> data) noexcept {
  // Chosen once; a function-local static is initialised thread-safely.
  static const CrcFn fn = pick_crc();
  return ~fn(~crc, bytes_of(data), data.size());
}

// ---------------------------------------------------------------------------------------
// Geometry

namespace {

bool valid_block_bytes(std::uint64_t b) noexcept {
  return b == 512 || b == 1024 || b == 2048 || b == 4096;
}

bool valid_space_bytes(std::uint64_t s) noexcept {
  return s >= kMinSpaceBytes && s <= kMaxSpaceBytes && s % kPageBytes == 0;
}

std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) noexcept {
  return a / b + (a % b != 0 ? 1 : 0);
}

// chunks + 1024 <= space, without overflow.
bool chunks_fit(std::uint64_t chunks, std::uint64_t space) noexcept {
  return space >= kDataOffset && chunks <= space - kDataOffset;
}

}  // namespace

std::optional<Geometry> Geometry::compute(const GeometryOptions& opts, std::error_code& ec) {
  ec = make_error_code(Errc::bad_geometry);
  if (opts.device_bytes == 0 || !valid_block_bytes(opts.block_bytes) ||
      !valid_space_bytes(opts.space_bytes))
    return std::nullopt;

  std::uint64_t chunk = opts.chunk_bytes;
  if (chunk == 0) {
    // docs/format.md#4-geometry-rules: 64 KiB doubled until the chunks and the
    // superblock area fit in the space (the kernel compares chunks with the whole space
    // and can overrun it by a page).
    chunk = kAutoChunkBytes;
    while (!chunks_fit(ceil_div(opts.device_bytes, chunk), opts.space_bytes)) {
      if (chunk >= kMaxChunkBytes) return std::nullopt;
      chunk <<= 1;
    }
  } else if (!std::has_single_bit(chunk) || chunk < kMinChunkBytes || chunk > kMaxChunkBytes ||
             !chunks_fit(ceil_div(opts.device_bytes, chunk), opts.space_bytes)) {
    return std::nullopt;
  }

  Geometry g;
  g.device_bytes_ = opts.device_bytes;
  g.chunk_shift_ = static_cast<unsigned>(std::countr_zero(chunk));
  g.chunks_ = ceil_div(opts.device_bytes, chunk);
  g.space_bytes_ = opts.space_bytes;
  g.block_bytes_ = opts.block_bytes;
  g.pages_ = ceil_div(g.chunks_ + kDataOffset, kPageBytes);
  ec.clear();
  return g;
}

ChunkRange Geometry::chunks_in_page(std::uint64_t page) const noexcept {
  LLBM_DCHECK(page < pages_, "Geometry: page %llu past the end (%llu pages)",
              static_cast<unsigned long long>(page), static_cast<unsigned long long>(pages_));
  const std::uint64_t begin_pos = std::max(page * kPageBytes, kDataOffset);
  const std::uint64_t end_pos = std::min((page + 1) * kPageBytes, chunks_ + kDataOffset);
  return {begin_pos - kDataOffset, end_pos - kDataOffset};
}

ChunkRange Geometry::chunks_in_block(std::uint64_t block) const noexcept {
  LLBM_DCHECK(block < blocks(), "Geometry: block %llu past the end (%llu blocks)",
              static_cast<unsigned long long>(block), static_cast<unsigned long long>(blocks()));
  const std::uint64_t begin_pos = std::max(block * block_bytes_, kDataOffset);
  const std::uint64_t end_pos = std::min((block + 1) * block_bytes_, chunks_ + kDataOffset);
  if (begin_pos >= end_pos) return {};
  return {begin_pos - kDataOffset, end_pos - kDataOffset};
}

std::uint64_t Geometry::first_chunk_of_block(std::uint64_t block) const noexcept {
  const ChunkRange r = chunks_in_block(block);
  LLBM_CHECK(!r.empty(), "Geometry: block %llu holds no chunk",
             static_cast<unsigned long long>(block));
  return r.first;
}

std::uint64_t Geometry::last_chunk_of_block(std::uint64_t block) const noexcept {
  const ChunkRange r = chunks_in_block(block);
  LLBM_CHECK(!r.empty(), "Geometry: block %llu holds no chunk",
             static_cast<unsigned long long>(block));
  return r.end - 1;
}

// ---------------------------------------------------------------------------------------
// Superblock

namespace {

// Byte offsets of the superblock fields (docs/format.md).
constexpr std::size_t kOffMagic = 0;
constexpr std::size_t kOffVersion = 4;
constexpr std::size_t kOffUuid = 8;
constexpr std::size_t kOffEvents = 24;
constexpr std::size_t kOffEventsCleared = 32;
constexpr std::size_t kOffSyncSize = 40;
constexpr std::size_t kOffState = 48;
constexpr std::size_t kOffChunksize = 52;
constexpr std::size_t kOffDaemonSleep = 56;
constexpr std::size_t kOffWriteBehind = 60;
constexpr std::size_t kOffSectorsReserved = 64;
constexpr std::size_t kOffNodes = 68;
constexpr std::size_t kOffClusterName = 72;
constexpr std::size_t kClusterNameBytes = 64;
constexpr std::size_t kOffBarrierIdle = 136;
constexpr std::size_t kOffBlockBytes = 140;
constexpr std::size_t kOffDeviceBytes = 144;
constexpr std::size_t kOffChunks = 152;
constexpr std::size_t kOffSpaceBytes = 160;
constexpr std::size_t kOffFormatRevision = 168;
constexpr std::size_t kOffFlags2 = 172;
constexpr std::size_t kOffDeviceUuid = 176;  // 16 bytes, zero = not bound
constexpr std::size_t kOffReserved = 192;
static_assert(kOffDeviceUuid + 16 == kOffReserved);
static_assert(kOffClusterName + kClusterNameBytes == kOffBarrierIdle);
static_assert(kSuperblockCrcOffset + 4 == kSuperblockBytes);

std::uint32_t get32(std::span<const std::byte> b, std::size_t off) noexcept {
  return load_le32(std::span<const std::byte, 4>(b.data() + off, 4));
}
std::uint64_t get64(std::span<const std::byte> b, std::size_t off) noexcept {
  return load_le64(std::span<const std::byte, 8>(b.data() + off, 8));
}
void put32(std::span<std::byte> b, std::size_t off, std::uint32_t v) noexcept {
  store_le32(std::span<std::byte, 4>(b.data() + off, 4), v);
}
void put64(std::span<std::byte> b, std::size_t off, std::uint64_t v) noexcept {
  store_le64(std::span<std::byte, 8>(b.data() + off, 8), v);
}

bool all_zero(std::span<const std::byte> b) noexcept {
  return std::all_of(b.begin(), b.end(), [](std::byte x) { return x == std::byte{0}; });
}

std::uint32_t superblock_crc(std::span<const std::byte> sb) noexcept {
  return crc32c(sb.first(kSuperblockCrcOffset));
}

}  // namespace

void Superblock::encode(std::span<std::byte, kSuperblockBytes> out) const noexcept {
  LLBM_CHECK(geometry.valid(), "Superblock::encode: empty geometry");
  LLBM_CHECK(interval_in_range(daemon_sleep) && interval_in_range(barrier_idle),
             "Superblock::encode: daemon_sleep %lld ms / barrier_idle %lld ms outside 1 ms..24 h",
             static_cast<long long>(daemon_sleep.count()),
             static_cast<long long>(barrier_idle.count()));
  LLBM_CHECK((state & ~kSbKnownState) == 0, "Superblock::encode: unknown state bits %#x",
             state & ~kSbKnownState);

  std::span<std::byte> b(out);
  std::fill(b.begin(), b.end(), std::byte{0});
  put32(b, kOffMagic, kBitmapMagic);
  put32(b, kOffVersion, kBitmapVersion);
  std::copy(uuid.begin(), uuid.end(), b.begin() + kOffUuid);
  put64(b, kOffEvents, events);
  put64(b, kOffEventsCleared, events_cleared);
  put64(b, kOffSyncSize, geometry.sync_sectors());
  put32(b, kOffState, state);
  put32(b, kOffChunksize, static_cast<std::uint32_t>(geometry.chunk_sectors()));
  put32(b, kOffDaemonSleep, static_cast<std::uint32_t>(daemon_sleep.count()));
  // write_behind, nodes, cluster_name: zero (unused by llbitmap).
  put32(b, kOffSectorsReserved, static_cast<std::uint32_t>(geometry.space_bytes() / kSectorBytes));
  put32(b, kOffBarrierIdle, static_cast<std::uint32_t>(barrier_idle.count()));
  put32(b, kOffBlockBytes, geometry.block_bytes());
  put64(b, kOffDeviceBytes, geometry.device_bytes());
  put64(b, kOffChunks, geometry.chunks());
  put64(b, kOffSpaceBytes, geometry.space_bytes());
  put32(b, kOffFormatRevision, kFormatRevision);
  std::copy(device_uuid.begin(), device_uuid.end(), b.begin() + kOffDeviceUuid);
  // flags2 and [192, 252): zero.
  put32(b, kSuperblockCrcOffset, superblock_crc(b));
}

void update_superblock_crc(std::span<std::byte, kSuperblockBytes> sb) noexcept {
  std::span<std::byte> b(sb);
  put32(b, kSuperblockCrcOffset, superblock_crc(b));
}

std::optional<Superblock> Superblock::decode(std::span<const std::byte> bytes, std::error_code& ec,
                                             std::optional<std::uint64_t> file_bytes) {
  auto fail = [&ec](Errc e) {
    ec = make_error_code(e);
    return std::nullopt;
  };
  if (bytes.size() < 4 || get32(bytes, kOffMagic) != kBitmapMagic) return fail(Errc::not_a_bitmap);
  if (bytes.size() < 8) return fail(Errc::bad_superblock);
  if (get32(bytes, kOffVersion) != kBitmapVersion) return fail(Errc::unsupported_version);
  if (bytes.size() < kSuperblockBytes) return fail(Errc::bad_superblock);
  const std::span<const std::byte> b = bytes.first(kSuperblockBytes);
  if (get32(b, kSuperblockCrcOffset) != superblock_crc(b)) return fail(Errc::bad_superblock);
  if (get32(b, kOffFormatRevision) != kFormatRevision) return fail(Errc::unsupported_version);

  const std::uint32_t state = get32(b, kOffState);
  if ((state & ~kSbKnownState) != 0 || get32(b, kOffWriteBehind) != 0 || get32(b, kOffNodes) != 0 ||
      !all_zero(b.subspan(kOffClusterName, kClusterNameBytes)) || get32(b, kOffFlags2) != 0 ||
      !all_zero(b.subspan(kOffReserved, kSuperblockCrcOffset - kOffReserved)))
    return fail(Errc::bad_superblock);

  // Geometry: recompute from the primary sizes, then demand that every derived field
  // agrees with the recomputation.
  const std::uint64_t chunk_sectors = get32(b, kOffChunksize);
  if (chunk_sectors == 0 || !std::has_single_bit(chunk_sectors)) return fail(Errc::bad_geometry);
  std::error_code gec;
  const std::optional<Geometry> g =
      Geometry::compute(GeometryOptions{.device_bytes = get64(b, kOffDeviceBytes),
                                        .chunk_bytes = chunk_sectors * kSectorBytes,
                                        .space_bytes = get64(b, kOffSpaceBytes),
                                        .block_bytes = get32(b, kOffBlockBytes)},
                        gec);
  if (!g || g->chunks() != get64(b, kOffChunks) || g->sync_sectors() != get64(b, kOffSyncSize) ||
      g->space_bytes() / kSectorBytes != get32(b, kOffSectorsReserved))
    return fail(Errc::bad_geometry);
  const std::chrono::milliseconds daemon_sleep{get32(b, kOffDaemonSleep)};
  const std::chrono::milliseconds barrier_idle{get32(b, kOffBarrierIdle)};
  if (!interval_in_range(daemon_sleep) || !interval_in_range(barrier_idle))
    return fail(Errc::bad_geometry);

  if (file_bytes && *file_bytes != g->file_bytes()) return fail(Errc::size_mismatch);

  Superblock sb;
  std::copy_n(b.begin() + kOffUuid, sb.uuid.size(), sb.uuid.begin());
  sb.events = get64(b, kOffEvents);
  sb.events_cleared = get64(b, kOffEventsCleared);
  sb.state = state;
  sb.daemon_sleep = daemon_sleep;
  sb.barrier_idle = barrier_idle;
  sb.geometry = *g;
  std::copy_n(b.begin() + kOffDeviceUuid, sb.device_uuid.size(), sb.device_uuid.begin());
  ec.clear();
  return sb;
}

std::optional<Superblock> make_superblock(const FormatOptions& opts, std::error_code& ec) {
  if (!interval_in_range(opts.daemon_sleep) || !interval_in_range(opts.barrier_idle)) {
    ec = std::make_error_code(std::errc::invalid_argument);
    return std::nullopt;
  }
  std::optional<Geometry> g = Geometry::compute(GeometryOptions{.device_bytes = opts.device_bytes,
                                                                .chunk_bytes = opts.chunk_bytes,
                                                                .space_bytes = opts.space_bytes,
                                                                .block_bytes = opts.block_bytes},
                                                ec);
  if (!g) return std::nullopt;
  Superblock sb;
  sb.uuid = opts.uuid;
  sb.device_uuid = opts.device_uuid;
  sb.state = opts.assume_clean ? kSbClean : 0;
  sb.daemon_sleep = opts.daemon_sleep;
  sb.barrier_idle = opts.barrier_idle;
  sb.geometry = *g;
  return sb;
}

Uuid random_uuid() {
  std::random_device rd;
  Uuid u{};
  for (std::size_t i = 0; i < u.size(); i += 4) {
    const std::uint32_t r = rd();
    for (std::size_t j = 0; j < 4; ++j) u[i + j] = static_cast<std::byte>((r >> (8 * j)) & 0xff);
  }
  u[6] = (u[6] & std::byte{0x0f}) | std::byte{0x40};  // version 4
  u[8] = (u[8] & std::byte{0x3f}) | std::byte{0x80};  // RFC 4122 variant
  return u;
}

// ---------------------------------------------------------------------------------------
// Blocks and the checksum table

std::uint32_t block_crc(std::uint64_t block, const Uuid& uuid,
                        std::span<const std::byte> block_data) noexcept {
  std::array<std::byte, 8> index{};
  store_le64(index, block);
  std::uint32_t c = crc32c(index);
  c = crc32c_extend(c, uuid);
  return crc32c_extend(c, block_data);
}

namespace {

void check_image_and_table(const Geometry& g, std::span<const std::byte> image,
                           std::span<const std::byte> table) noexcept {
  LLBM_CHECK(g.valid(), "format: empty geometry");
  LLBM_CHECK(image.size() == g.image_bytes(), "format: image of %zu bytes, geometry wants %llu",
             image.size(), static_cast<unsigned long long>(g.image_bytes()));
  LLBM_CHECK(table.size() == g.checksum_table_bytes(),
             "format: checksum table of %zu bytes, geometry wants %llu", table.size(),
             static_cast<unsigned long long>(g.checksum_table_bytes()));
}

std::span<const std::byte> block_span(const Geometry& g, std::span<const std::byte> image,
                                      std::uint64_t block) noexcept {
  return image.subspan(block * g.block_bytes(), g.block_bytes());
}

}  // namespace

std::uint32_t stored_block_crc(const Geometry& g, std::span<const std::byte> table,
                               std::uint64_t block) noexcept {
  LLBM_CHECK(table.size() == g.checksum_table_bytes() && block < g.blocks(),
             "format: block %llu / table of %zu bytes do not match the geometry",
             static_cast<unsigned long long>(block), table.size());
  return get32(table, block * 4);
}

void fill_checksum_table(const Geometry& g, const Uuid& uuid, std::span<const std::byte> image,
                         std::span<std::byte> table) noexcept {
  check_image_and_table(g, image, table);
  std::fill(table.begin(), table.end(), std::byte{0});
  for (std::uint64_t blk = 0; blk < g.blocks(); ++blk)
    put32(table, blk * 4, block_crc(blk, uuid, block_span(g, image, blk)));
}

bool verify_block(const Geometry& g, const Uuid& uuid, std::span<const std::byte> image,
                  std::span<const std::byte> table, std::uint64_t block) noexcept {
  check_image_and_table(g, image, table);
  LLBM_CHECK(block < g.blocks(), "format: block %llu past the image",
             static_cast<unsigned long long>(block));
  return block_crc(block, uuid, block_span(g, image, block)) == get32(table, block * 4);
}

std::vector<std::uint64_t> unverifiable_blocks(const Geometry& g, const Uuid& uuid,
                                               std::span<const std::byte> image,
                                               std::span<const std::byte> table) {
  check_image_and_table(g, image, table);
  std::vector<std::uint64_t> bad;
  for (std::uint64_t blk = 0; blk < g.blocks(); ++blk)
    if (block_crc(blk, uuid, block_span(g, image, blk)) != get32(table, blk * 4))
      bad.push_back(blk);
  return bad;
}

std::vector<std::byte> build_fresh_file(const Superblock& sb, std::uint8_t chunk_fill) {
  const Geometry& g = sb.geometry;
  LLBM_CHECK(g.valid(), "build_fresh_file: empty geometry");
  std::vector<std::byte> file(g.file_bytes(), std::byte{0});
  const std::span<std::byte> all(file);
  sb.encode(all.first<kSuperblockBytes>());
  const auto fill_begin = file.begin() + static_cast<std::ptrdiff_t>(kDataOffset);
  std::fill(fill_begin, fill_begin + static_cast<std::ptrdiff_t>(g.chunks()),
            static_cast<std::byte>(chunk_fill));
  fill_checksum_table(g, sb.uuid, all.first(g.image_bytes()),
                      all.subspan(g.checksum_table_offset(), g.checksum_table_bytes()));
  return file;
}

}  // namespace llbitmap
