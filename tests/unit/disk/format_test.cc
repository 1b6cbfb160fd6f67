// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The on-disk format: CRC32C, error codes, geometry, superblock validation, block
// checksums and the fresh-file builder.
#include <llbitmap/error.h>
#include <llbitmap/format.h>

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace llbitmap {
namespace {

using std::chrono::milliseconds;

std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

Uuid test_uuid(std::uint8_t seed) {
  Uuid u{};
  for (std::size_t i = 0; i < u.size(); ++i) u[i] = static_cast<std::byte>(seed + i * 7);
  return u;
}

Geometry geometry_or_die(const GeometryOptions& opts) {
  std::error_code ec;
  std::optional<Geometry> g = Geometry::compute(opts, ec);
  EXPECT_FALSE(ec) << ec.message();
  if (!g) ADD_FAILURE() << "geometry rejected";
  return g.value_or(Geometry{});
}

std::error_code geometry_error(const GeometryOptions& opts) {
  std::error_code ec;
  const std::optional<Geometry> g = Geometry::compute(opts, ec);
  EXPECT_EQ(g.has_value(), !ec);
  return ec;
}

// ------------------------------------------------------------------------- CRC32C

TEST(Crc32c, CheckValue) {
  EXPECT_EQ(crc32c(as_bytes("123456789")), 0xE3069283u);
  EXPECT_EQ(detail::crc32c_extend_software(0, as_bytes("123456789")), 0xE3069283u);
  if (detail::crc32c_hardware_available()) {
    EXPECT_EQ(detail::crc32c_extend_hardware(0, as_bytes("123456789")), 0xE3069283u);
  }
  EXPECT_EQ(crc32c({}), 0u);
}

TEST(Crc32c, Rfc3720Vectors) {
  std::vector<std::byte> buf(32, std::byte{0});
  EXPECT_EQ(crc32c(buf), 0x8A9136AAu);
  std::fill(buf.begin(), buf.end(), std::byte{0xff});
  EXPECT_EQ(crc32c(buf), 0x62A8AB43u);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<std::byte>(i);
  EXPECT_EQ(crc32c(buf), 0x46DD794Eu);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<std::byte>(31 - i);
  EXPECT_EQ(crc32c(buf), 0x113FDB5Cu);
}

TEST(Crc32c, ExtendEqualsWhole) {
  const std::string s = "The quick brown fox jumps over the lazy dog, twice over.";
  const std::uint32_t whole = crc32c(as_bytes(s));
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    const std::uint32_t head = crc32c(as_bytes(std::string_view(s).substr(0, cut)));
    EXPECT_EQ(crc32c_extend(head, as_bytes(std::string_view(s).substr(cut))), whole) << cut;
  }
}

TEST(Crc32c, SoftwareAndHardwareAgreeOnEveryLengthAndAlignment) {
  if (!detail::crc32c_hardware_available()) GTEST_SKIP() << "no SSE4.2";
  std::mt19937_64 rng(42);
  std::vector<std::byte> buf(4200);
  for (auto& b : buf) b = static_cast<std::byte>(rng());
  for (std::size_t start = 0; start < 9; ++start) {
    for (std::size_t len : {0u, 1u, 7u, 8u, 9u, 63u, 64u, 65u, 511u, 4096u, 4191u}) {
      const std::span<const std::byte> s = std::span<const std::byte>(buf).subspan(start, len);
      EXPECT_EQ(detail::crc32c_extend_software(0x12345678, s),
                detail::crc32c_extend_hardware(0x12345678, s))
          << start << "+" << len;
    }
  }
}

// ------------------------------------------------------------------------- errors

TEST(Errc, CategoryCodesAndMessages) {
  const std::vector<Errc> all = {Errc::not_a_bitmap,   Errc::unsupported_version,
                                 Errc::bad_superblock, Errc::bad_geometry,
                                 Errc::size_mismatch,  Errc::busy,
                                 Errc::bitmap_failed,  Errc::short_io,
                                 Errc::bitmap_in_use,  Errc::bitmap_closed,
                                 Errc::foreign_bitmap};
  std::set<std::string> messages;
  std::set<int> values;
  for (Errc e : all) {
    const std::error_code ec = e;  // is_error_code_enum lets this convert implicitly
    EXPECT_TRUE(ec);
    EXPECT_STREQ(ec.category().name(), "llbitmap");
    EXPECT_EQ(ec, make_error_code(e));
    EXPECT_FALSE(ec.message().empty());
    messages.insert(ec.message());
    values.insert(ec.value());
  }
  EXPECT_EQ(messages.size(), all.size());
  EXPECT_EQ(values.size(), all.size());
  EXPECT_NE(std::error_code(Errc::busy), std::errc::device_or_resource_busy);
  EXPECT_NE(std::error_code(Errc::bad_geometry), std::errc::invalid_argument);
  EXPECT_NE(make_error_code(Errc::bad_geometry), std::make_error_code(std::errc::invalid_argument));
}

// ------------------------------------------------------------------------- little endian

TEST(Endian, StoreLoadRoundTripIsLittleEndian) {
  std::array<std::byte, 8> b{};
  store_le32(std::span<std::byte, 4>(b.data(), 4), 0x11223344u);
  EXPECT_EQ(b[0], std::byte{0x44});
  EXPECT_EQ(b[3], std::byte{0x11});
  EXPECT_EQ(load_le32(std::span<const std::byte, 4>(b.data(), 4)), 0x11223344u);
  store_le64(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], std::byte{0x08});
  EXPECT_EQ(b[7], std::byte{0x01});
  EXPECT_EQ(load_le64(b), 0x0102030405060708ull);
}

// ------------------------------------------------------------------------- geometry

TEST(Geometry, AutoChunkSizeStartsAt64KiB) {
  const Geometry g = geometry_or_die({.device_bytes = 1 << 20});
  EXPECT_EQ(g.chunk_bytes(), 64u << 10);
  EXPECT_EQ(g.chunks(), 16u);
  EXPECT_EQ(g.pages(), 1u);
  EXPECT_EQ(g.space_bytes(), kDefaultSpaceBytes);
  EXPECT_EQ(g.block_bytes(), kDefaultBlockBytes);
}

TEST(Geometry, AutoChunkSizeDoublesUntilTheChunksFit) {
  // Default space 128 KiB: at most 131072 - 1024 = 130048 chunks.
  const std::uint64_t max_chunks = kDefaultSpaceBytes - kDataOffset;
  Geometry g = geometry_or_die({.device_bytes = max_chunks * (64 << 10)});
  EXPECT_EQ(g.chunk_bytes(), 64u << 10);
  EXPECT_EQ(g.chunks(), max_chunks);
  EXPECT_EQ(g.pages(), kDefaultSpaceBytes / kPageBytes);

  g = geometry_or_die({.device_bytes = max_chunks * (64 << 10) + 1});
  EXPECT_EQ(g.chunk_bytes(), 128u << 10);
  EXPECT_EQ(g.chunks(), max_chunks / 2 + 1);

  // 1 TiB: 2^40 / 2^23 = 131072 > 130048, 2^40 / 2^24 = 65536 fits.
  g = geometry_or_die({.device_bytes = std::uint64_t{1} << 40});
  EXPECT_EQ(g.chunk_bytes(), std::uint64_t{1} << 24);
  EXPECT_EQ(g.chunks(), 65536u);
  EXPECT_EQ(g.pages(), 17u);  // the worked example of docs/format.md
  EXPECT_EQ(g.blocks(), 32u);
  EXPECT_EQ(g.file_bytes(), 135168u);
}

TEST(Geometry, ExactBoundaryAcceptedAndOneMoreChunkRejected) {
  // space 4096: chunks + 1024 <= 4096, so 3072 chunks fit and 3073 do not.
  Geometry g =
      geometry_or_die({.device_bytes = 3072 * 512, .chunk_bytes = 512, .space_bytes = 4096});
  EXPECT_EQ(g.chunks(), 3072u);
  EXPECT_EQ(g.chunks() + kDataOffset, g.space_bytes());
  EXPECT_EQ(g.pages(), 1u);
  EXPECT_EQ(
      geometry_error({.device_bytes = 3072 * 512 + 1, .chunk_bytes = 512, .space_bytes = 4096}),
      Errc::bad_geometry);

  // The same boundary with the automatic size: 64 KiB fits exactly, one byte more doubles.
  g = geometry_or_die({.device_bytes = 3072ull * (64 << 10), .space_bytes = 4096});
  EXPECT_EQ(g.chunk_bytes(), 64u << 10);
  g = geometry_or_die({.device_bytes = 3072ull * (64 << 10) + 1, .space_bytes = 4096});
  EXPECT_EQ(g.chunk_bytes(), 128u << 10);
  EXPECT_EQ(g.chunks(), 1537u);
}

TEST(Geometry, BadInputsAreBadGeometry) {
  EXPECT_EQ(geometry_error({.device_bytes = 0}), Errc::bad_geometry);
  // Chunk size: not a power of two, too small, too large.
  EXPECT_EQ(geometry_error({.device_bytes = 1 << 20, .chunk_bytes = 3 * 512}), Errc::bad_geometry);
  EXPECT_EQ(geometry_error({.device_bytes = 1 << 20, .chunk_bytes = 256}), Errc::bad_geometry);
  EXPECT_EQ(geometry_error({.device_bytes = 1 << 20, .chunk_bytes = kMaxChunkBytes * 2}),
            Errc::bad_geometry);
  // Space: too small, not a multiple of 4096, too large.
  for (std::uint64_t space :
       std::initializer_list<std::uint64_t>{0, 512, 4095, 6144, 4097, kMaxSpaceBytes * 2})
    EXPECT_EQ(geometry_error({.device_bytes = 1 << 20, .space_bytes = space}), Errc::bad_geometry)
        << space;
  // Block size.
  for (std::uint32_t block : {0u, 100u, 256u, 768u, 8192u})
    EXPECT_EQ(geometry_error({.device_bytes = 1 << 20, .block_bytes = block}), Errc::bad_geometry)
        << block;
  // Nothing fits: even the largest chunk gives too many chunks.
  EXPECT_EQ(geometry_error({.device_bytes = ~std::uint64_t{0}, .space_bytes = 4096}),
            Errc::bad_geometry);
  // The same device fits in a larger space.
  EXPECT_FALSE(geometry_error({.device_bytes = ~std::uint64_t{0}, .space_bytes = 32 << 20}));
}

TEST(Geometry, ValidBlockSizes) {
  for (std::uint32_t block : {512u, 1024u, 2048u, 4096u}) {
    const Geometry g = geometry_or_die({.device_bytes = 1 << 30, .block_bytes = block});
    EXPECT_EQ(g.blocks(), kDefaultSpaceBytes / block);
    EXPECT_EQ(g.blocks_per_page(), 4096u / block);
  }
}

TEST(Geometry, ChunkPageAndBlockMapping) {
  // 64 KiB chunks, 10000 chunks: pages 0..2.
  const Geometry g =
      geometry_or_die({.device_bytes = 10000ull * (64 << 10), .chunk_bytes = 64 << 10});
  EXPECT_EQ(g.chunks(), 10000u);
  EXPECT_EQ(g.pages(), 3u);  // ceil((10000 + 1024) / 4096)

  EXPECT_EQ(g.chunk_of(0), 0u);
  EXPECT_EQ(g.chunk_of((64 << 10) - 1), 0u);
  EXPECT_EQ(g.chunk_of(64 << 10), 1u);
  EXPECT_EQ(g.chunk_offset(3), 3u * (64 << 10));

  EXPECT_EQ(g.chunk_pos(0), 1024u);
  EXPECT_EQ(g.page_of_chunk(0), 0u);
  EXPECT_EQ(g.block_of_chunk(0), 0u);
  EXPECT_EQ(g.chunk_pos(3071), 4095u);
  EXPECT_EQ(g.page_of_chunk(3071), 0u);
  EXPECT_EQ(g.block_of_chunk(3071), 0u);
  EXPECT_EQ(g.chunk_pos(3072), 4096u);
  EXPECT_EQ(g.page_of_chunk(3072), 1u);
  EXPECT_EQ(g.block_of_chunk(3072), 1u);

  EXPECT_EQ(g.chunks_in_page(0), (ChunkRange{0, 3072}));
  EXPECT_EQ(g.first_chunk_of_page(1), 3072u);
  EXPECT_EQ(g.last_chunk_of_page(1), 7167u);
  EXPECT_EQ(g.first_chunk_of_page(2), 7168u);
  EXPECT_EQ(g.last_chunk_of_page(2), 9999u);  // the last page is partial
  EXPECT_EQ(g.first_block_of_page(2), 2u);

  // Blocks of 4096 coincide with pages; blocks after the last chunk hold none.
  EXPECT_EQ(g.chunks_in_block(1), (ChunkRange{3072, 7168}));
  EXPECT_TRUE(g.chunks_in_block(3).empty());
  EXPECT_EQ(g.blocks(), 32u);
}

TEST(Geometry, SmallBlockMapping) {
  const Geometry g = geometry_or_die(
      {.device_bytes = 10000ull * (64 << 10), .chunk_bytes = 64 << 10, .block_bytes = 512});
  // Blocks 0 and 1 are the superblock area.
  EXPECT_TRUE(g.chunks_in_block(0).empty());
  EXPECT_TRUE(g.chunks_in_block(1).empty());
  EXPECT_EQ(g.block_of_chunk(0), 2u);
  EXPECT_EQ(g.first_chunk_of_block(2), 0u);
  EXPECT_EQ(g.last_chunk_of_block(2), 511u);
  EXPECT_EQ(g.block_of_chunk(3071), 7u);
  EXPECT_EQ(g.block_of_chunk(3072), 8u);
  EXPECT_EQ(g.page_of_chunk(3072), 1u);
  EXPECT_EQ(g.first_block_of_page(1), 8u);
  // The block holding the last chunk is partial.
  EXPECT_EQ(g.chunks_in_block(g.block_of_chunk(9999)), (ChunkRange{9728, 10000}));
}

TEST(Geometry, FileLayout) {
  Geometry g = geometry_or_die({.device_bytes = 1 << 30});
  EXPECT_EQ(g.image_bytes(), kDefaultSpaceBytes);
  EXPECT_EQ(g.checksum_table_offset(), kDefaultSpaceBytes);
  EXPECT_EQ(g.checksum_table_bytes(), 4096u);  // 32 entries, padded to one block
  EXPECT_EQ(g.file_bytes(), kDefaultSpaceBytes + 4096);
  EXPECT_EQ(g.checksum_offset(5), kDefaultSpaceBytes + 20);

  g = geometry_or_die({.device_bytes = 1 << 30, .block_bytes = 512});
  EXPECT_EQ(g.checksum_table_bytes(), 1024u);  // 256 entries
  g = geometry_or_die({.device_bytes = 1 << 30, .space_bytes = 8 << 20, .block_bytes = 512});
  EXPECT_EQ(g.checksum_table_bytes(), 65536u);  // 16384 entries
  g = geometry_or_die({.device_bytes = 1 << 30, .space_bytes = 4096, .block_bytes = 1024});
  EXPECT_EQ(g.checksum_table_bytes(), 1024u);  // 4 entries, padded to one block
}

TEST(Interval, Range) {
  EXPECT_FALSE(interval_in_range(milliseconds(0)));
  EXPECT_TRUE(interval_in_range(milliseconds(1)));
  EXPECT_TRUE(interval_in_range(milliseconds(24 * 3600 * 1000)));
  EXPECT_FALSE(interval_in_range(milliseconds(24 * 3600 * 1000 + 1)));
  EXPECT_FALSE(interval_in_range(milliseconds(-5)));
}

// ------------------------------------------------------------------------- superblock

Superblock sample_superblock() {
  std::error_code ec;
  std::optional<Superblock> sb = make_superblock({.device_bytes = 3ull << 30,
                                                  .chunk_bytes = 0,
                                                  .space_bytes = 256 << 10,
                                                  .block_bytes = 1024,
                                                  .daemon_sleep = milliseconds(1500),
                                                  .barrier_idle = milliseconds(250),
                                                  .assume_clean = true,
                                                  .uuid = test_uuid(3)},
                                                 ec);
  EXPECT_FALSE(ec) << ec.message();
  sb->events = 0x1122334455667788ull;
  sb->events_cleared = 77;
  sb->state |= kSbStale | kSbDaemonBusy;
  return *sb;
}

std::array<std::byte, kSuperblockBytes> encoded(const Superblock& sb) {
  std::array<std::byte, kSuperblockBytes> b{};
  sb.encode(b);
  return b;
}

std::uint32_t field32(const std::array<std::byte, kSuperblockBytes>& b, std::size_t off) {
  return load_le32(std::span<const std::byte, 4>(b.data() + off, 4));
}
std::uint64_t field64(const std::array<std::byte, kSuperblockBytes>& b, std::size_t off) {
  return load_le64(std::span<const std::byte, 8>(b.data() + off, 8));
}
void set32(std::array<std::byte, kSuperblockBytes>& b, std::size_t off, std::uint32_t v) {
  store_le32(std::span<std::byte, 4>(b.data() + off, 4), v);
}
void set64(std::array<std::byte, kSuperblockBytes>& b, std::size_t off, std::uint64_t v) {
  store_le64(std::span<std::byte, 8>(b.data() + off, 8), v);
}

std::error_code decode_error(std::span<const std::byte> bytes,
                             std::optional<std::uint64_t> file_bytes = std::nullopt) {
  std::error_code ec;
  const std::optional<Superblock> sb = Superblock::decode(bytes, ec, file_bytes);
  EXPECT_EQ(sb.has_value(), !ec);
  return ec;
}

TEST(Superblock, RoundTrip) {
  const Superblock sb = sample_superblock();
  const auto b = encoded(sb);
  std::error_code ec = make_error_code(Errc::busy);  // decode must clear it
  const std::optional<Superblock> back = Superblock::decode(b, ec, sb.geometry.file_bytes());
  ASSERT_TRUE(back.has_value()) << ec.message();
  EXPECT_FALSE(ec);
  EXPECT_EQ(*back, sb);
  EXPECT_EQ(back->geometry, sb.geometry);
  EXPECT_EQ(back->daemon_sleep, milliseconds(1500));
  EXPECT_EQ(back->barrier_idle, milliseconds(250));
}

TEST(Superblock, FieldOffsetsMatchTheDocumentedLayout) {
  const Superblock sb = sample_superblock();
  const Geometry& g = sb.geometry;
  const auto b = encoded(sb);
  EXPECT_EQ(std::memcmp(b.data(), "bitm", 4), 0);  // magic 0x6d746962 little-endian
  EXPECT_EQ(field32(b, 0), kBitmapMagic);
  EXPECT_EQ(field32(b, 4), 6u);
  EXPECT_EQ(std::memcmp(b.data() + 8, sb.uuid.data(), 16), 0);
  EXPECT_EQ(field64(b, 24), 0x1122334455667788ull);
  EXPECT_EQ(field64(b, 32), 77u);
  EXPECT_EQ(field64(b, 40), (3ull << 30) / 512);  // sync_size, sectors
  EXPECT_EQ(field32(b, 48), kSbClean | kSbStale | kSbDaemonBusy);
  EXPECT_EQ(field32(b, 52), g.chunk_bytes() / 512);  // chunksize, sectors
  EXPECT_EQ(field32(b, 56), 1500u);                  // daemon_sleep, ms
  EXPECT_EQ(field32(b, 60), 0u);                     // write_behind
  EXPECT_EQ(field32(b, 64), (256u << 10) / 512);     // sectors_reserved
  EXPECT_EQ(field32(b, 68), 0u);                     // nodes
  EXPECT_EQ(field32(b, 136), 250u);                  // barrier_idle, ms
  EXPECT_EQ(field32(b, 140), 1024u);                 // block_bytes
  EXPECT_EQ(field64(b, 144), 3ull << 30);            // device_bytes
  EXPECT_EQ(field64(b, 152), g.chunks());
  EXPECT_EQ(field64(b, 160), 256u << 10);                                      // space_bytes
  EXPECT_EQ(field32(b, 168), 1u);                                              // format_revision
  EXPECT_EQ(field32(b, 172), 0u);                                              // flags2
  for (std::size_t i = 72; i < 136; ++i) EXPECT_EQ(b[i], std::byte{0}) << i;   // cluster_name
  for (std::size_t i = 176; i < 252; ++i) EXPECT_EQ(b[i], std::byte{0}) << i;  // reserved
  EXPECT_EQ(field32(b, 252), crc32c(std::span<const std::byte>(b.data(), 252)));
  // The kernel's state bit numbers.
  EXPECT_EQ(kSbStale, 1u << 1);
  EXPECT_EQ(kSbWriteError, 1u << 2);
  EXPECT_EQ(kSbFirstUse, 1u << 3);
  EXPECT_EQ(kSbClean, 1u << 4);
  EXPECT_EQ(kSbDaemonBusy, 1u << 5);
}

// The device uuid lives at [176, 192), in bytes older files hold as zero (unbound).
TEST(Superblock, DeviceUuidIsStoredAtOffset176AndZeroMeansUnbound) {
  Superblock sb = sample_superblock();
  EXPECT_EQ(sb.device_uuid, Uuid{}) << "not bound unless asked";
  for (std::size_t i = 0; i < sb.device_uuid.size(); ++i) sb.device_uuid[i] = std::byte(0xa0 + i);
  const auto b = encoded(sb);
  EXPECT_EQ(std::memcmp(b.data() + 176, sb.device_uuid.data(), 16), 0);
  for (std::size_t i = 192; i < 252; ++i) EXPECT_EQ(b[i], std::byte{0}) << i;  // reserved
  std::error_code ec;
  const auto back = Superblock::decode(b, ec);
  ASSERT_TRUE(back) << ec.message();
  EXPECT_EQ(back->device_uuid, sb.device_uuid);
  EXPECT_EQ(*back, sb);
  // A file written before the field existed (zeros there) decodes as unbound.
  const auto old = encoded(sample_superblock());
  const auto unbound = Superblock::decode(old, ec);
  ASSERT_TRUE(unbound) << ec.message();
  EXPECT_EQ(unbound->device_uuid, Uuid{});
  // make_superblock carries it from FormatOptions.
  FormatOptions fo;
  fo.device_bytes = 1 << 30;
  fo.device_uuid = sb.device_uuid;
  const auto made = make_superblock(fo, ec);
  ASSERT_TRUE(made) << ec.message();
  EXPECT_EQ(made->device_uuid, sb.device_uuid);
}

TEST(Superblock, BadMagicIsNotABitmap) {
  auto b = encoded(sample_superblock());
  b[0] ^= std::byte{1};
  EXPECT_EQ(decode_error(b), Errc::not_a_bitmap);
  EXPECT_EQ(decode_error(std::span<const std::byte>(b.data(), 3)), Errc::not_a_bitmap);
  EXPECT_EQ(decode_error({}), Errc::not_a_bitmap);
  const std::vector<std::byte> zeros(4096, std::byte{0});
  EXPECT_EQ(decode_error(zeros), Errc::not_a_bitmap);
}

TEST(Superblock, OtherVersionsAreUnsupported) {
  for (std::uint32_t v : {4u, 5u, 7u, 0u}) {
    auto b = encoded(sample_superblock());
    set32(b, 4, v);
    EXPECT_EQ(decode_error(b), Errc::unsupported_version) << v;  // checked before the CRC
    update_superblock_crc(b);
    EXPECT_EQ(decode_error(b), Errc::unsupported_version) << v;
  }
  auto b = encoded(sample_superblock());
  set32(b, 168, 2);  // format_revision
  update_superblock_crc(b);
  EXPECT_EQ(decode_error(b), Errc::unsupported_version);
}

TEST(Superblock, ChecksumMismatchIsBadSuperblock) {
  const auto good = encoded(sample_superblock());
  // Flip every bit of the CRC-covered area and of the CRC itself, one at a time.
  for (std::size_t i = 8; i < kSuperblockBytes; ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto b = good;
      b[i] ^= static_cast<std::byte>(1 << bit);
      ASSERT_EQ(decode_error(b), Errc::bad_superblock) << "byte " << i << " bit " << bit;
    }
  }
  // Truncated after a valid magic and version.
  EXPECT_EQ(decode_error(std::span<const std::byte>(good.data(), 255)), Errc::bad_superblock);
  EXPECT_EQ(decode_error(std::span<const std::byte>(good.data(), 6)), Errc::bad_superblock);
}

TEST(Superblock, NonZeroReservedFieldsAreBadSuperblock) {
  struct Case {
    const char* name;
    std::size_t offset;
    std::uint32_t value;
  };
  for (const Case& c :
       {Case{"unknown state bit 0", 48, kSbClean | 1u}, Case{"HOSTENDIAN state bit", 48, 1u << 15},
        Case{"write_behind", 60, 1}, Case{"nodes", 68, 2}, Case{"cluster_name", 72, 0x41},
        Case{"cluster_name end", 132, 0x41}, Case{"flags2", 172, 1}, Case{"reserved", 200, 9},
        Case{"reserved end", 248, 1}}) {
    auto b = encoded(sample_superblock());
    set32(b, c.offset, c.value);
    update_superblock_crc(b);
    EXPECT_EQ(decode_error(b), Errc::bad_superblock) << c.name;
  }
}

TEST(Superblock, InconsistentGeometryIsBadGeometry) {
  const Superblock sb = sample_superblock();
  const std::uint64_t chunks = sb.geometry.chunks();
  struct Case {
    const char* name;
    std::size_t offset;
    std::uint64_t value;
    bool wide;
  };
  for (const Case& c : {
           Case{"chunksize 0", 52, 0, false},
           Case{"chunksize not a power of two", 52, 3, false},
           Case{"chunksize disagrees with chunks", 52, sb.geometry.chunk_sectors() * 2, false},
           Case{"chunks off by one", 152, chunks + 1, true},
           Case{"sync_size", 40, sb.geometry.sync_sectors() + 1, true},
           Case{"sectors_reserved", 64, 1, false},
           Case{"block_bytes", 140, 3000, false},
           Case{"block_bytes 8192", 140, 8192, false},
           Case{"space_bytes not a page multiple", 160, (256 << 10) + 512, true},
           Case{"space_bytes 0", 160, 0, true},
           Case{"device_bytes 0", 144, 0, true},
           Case{"daemon_sleep 0", 56, 0, false},
           Case{"daemon_sleep > 24h", 56, 24u * 3600 * 1000 + 1, false},
           Case{"barrier_idle 0", 136, 0, false},
           Case{"barrier_idle > 24h", 136, 24u * 3600 * 1000 + 1, false},
       }) {
    auto b = encoded(sb);
    if (c.wide)
      set64(b, c.offset, c.value);
    else
      set32(b, c.offset, static_cast<std::uint32_t>(c.value));
    update_superblock_crc(b);
    EXPECT_EQ(decode_error(b), Errc::bad_geometry) << c.name;
  }
}

TEST(Superblock, ChunksThatDoNotFitTheSpaceAreBadGeometry) {
  // A self-consistent superblock whose chunks overflow the space by one.
  auto b = encoded(sample_superblock());
  const std::uint64_t space = 4096, chunk_sectors = 1;
  const std::uint64_t device = (space - kDataOffset + 1) * 512;
  set32(b, 52, chunk_sectors);
  set64(b, 144, device);
  set64(b, 152, space - kDataOffset + 1);
  set64(b, 160, space);
  set32(b, 64, space / 512);
  set64(b, 40, device / 512);
  set32(b, 140, 4096);
  update_superblock_crc(b);
  EXPECT_EQ(decode_error(b), Errc::bad_geometry);
  // One chunk fewer fits exactly and decodes.
  set64(b, 144, device - 512);
  set64(b, 152, space - kDataOffset);
  set64(b, 40, device / 512 - 1);
  update_superblock_crc(b);
  EXPECT_FALSE(decode_error(b));
}

TEST(Superblock, FileSizeMustMatch) {
  const Superblock sb = sample_superblock();
  const auto b = encoded(sb);
  const std::uint64_t want = sb.geometry.file_bytes();
  EXPECT_FALSE(decode_error(b, want));
  EXPECT_FALSE(decode_error(b));  // no size given: not checked
  EXPECT_EQ(decode_error(b, want - 1), Errc::size_mismatch);
  EXPECT_EQ(decode_error(b, want + 4096), Errc::size_mismatch);
  EXPECT_EQ(decode_error(b, sb.geometry.space_bytes()), Errc::size_mismatch);  // no table
  EXPECT_EQ(decode_error(b, 0), Errc::size_mismatch);
}

TEST(Superblock, EachViolationHasItsOwnCode) {
  const Superblock sb = sample_superblock();
  std::set<std::pair<std::string, int>> codes;
  auto record = [&](std::error_code ec) { codes.insert({ec.category().name(), ec.value()}); };
  auto b = encoded(sb);
  b[1] ^= std::byte{0x10};
  record(decode_error(b));  // magic
  b = encoded(sb);
  set32(b, 4, 5);
  record(decode_error(b));  // version
  b = encoded(sb);
  b[20] ^= std::byte{1};
  record(decode_error(b));  // crc
  b = encoded(sb);
  set32(b, 52, 3);
  update_superblock_crc(b);
  record(decode_error(b));  // geometry
  b = encoded(sb);
  record(decode_error(b, sb.geometry.file_bytes() + 1));  // size
  EXPECT_EQ(codes.size(), 5u);
  EXPECT_EQ(codes.count({"llbitmap", 0}), 0u);
}

TEST(Superblock, MakeSuperblockValidatesOptions) {
  std::error_code ec;
  EXPECT_FALSE(make_superblock({.device_bytes = 1 << 20, .daemon_sleep = milliseconds(0)}, ec));
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_FALSE(make_superblock(
      {.device_bytes = 1 << 20, .barrier_idle = milliseconds(24 * 3600 * 1000 + 1)}, ec));
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_FALSE(make_superblock({.device_bytes = 0}, ec));
  EXPECT_EQ(ec, Errc::bad_geometry);
  std::optional<Superblock> sb = make_superblock({.device_bytes = 1 << 20,
                                                  .daemon_sleep = milliseconds(1),
                                                  .barrier_idle = milliseconds(24 * 3600 * 1000)},
                                                 ec);
  ASSERT_TRUE(sb) << ec.message();
  EXPECT_FALSE(ec);
  EXPECT_EQ(sb->state, 0u);
  EXPECT_EQ(sb->events, 0u);
  sb = make_superblock({.device_bytes = 1 << 20, .assume_clean = true}, ec);
  ASSERT_TRUE(sb);
  EXPECT_EQ(sb->state, kSbClean);
}

TEST(Uuid, RandomUuidsAreVersion4AndDiffer) {
  const Uuid a = random_uuid(), b = random_uuid();
  EXPECT_NE(a, b);
  EXPECT_EQ(a[6] & std::byte{0xf0}, std::byte{0x40});
  EXPECT_EQ(a[8] & std::byte{0xc0}, std::byte{0x80});
}

// ------------------------------------------------------------------------- image

struct File {
  Superblock sb;
  std::vector<std::byte> bytes;
  std::span<std::byte> image() {
    return std::span<std::byte>(bytes).first(sb.geometry.image_bytes());
  }
  std::span<std::byte> table() {
    return std::span<std::byte>(bytes).subspan(sb.geometry.checksum_table_offset());
  }
  std::vector<std::uint64_t> bad() {
    return unverifiable_blocks(sb.geometry, sb.uuid, image(), table());
  }
};

File fresh(std::uint32_t block_bytes, std::uint8_t fill, std::uint8_t uuid_seed = 9) {
  std::error_code ec;
  std::optional<Superblock> sb = make_superblock({.device_bytes = 20000ull * (64 << 10),
                                                  .chunk_bytes = 64 << 10,
                                                  .space_bytes = 64 << 10,
                                                  .block_bytes = block_bytes,
                                                  .uuid = test_uuid(uuid_seed)},
                                                 ec);
  EXPECT_TRUE(sb) << ec.message();
  File f{*sb, build_fresh_file(*sb, fill)};
  return f;
}

TEST(FreshFile, LayoutAndContents) {
  for (std::uint8_t fill : {0, 1}) {
    File f = fresh(4096, fill);
    const Geometry& g = f.sb.geometry;
    ASSERT_EQ(f.bytes.size(), g.file_bytes());
    std::error_code ec;
    const std::optional<Superblock> back = Superblock::decode(f.bytes, ec, f.bytes.size());
    ASSERT_TRUE(back) << ec.message();
    EXPECT_EQ(*back, f.sb);
    for (std::size_t i = kSuperblockBytes; i < kDataOffset; ++i)
      ASSERT_EQ(f.bytes[i], std::byte{0}) << i;
    for (std::uint64_t c = 0; c < g.chunks(); ++c)
      ASSERT_EQ(f.bytes[g.chunk_pos(c)], std::byte{fill}) << c;
    for (std::uint64_t i = g.chunks() + kDataOffset; i < g.image_bytes(); ++i)
      ASSERT_EQ(f.bytes[i], std::byte{0}) << i;
    EXPECT_TRUE(f.bad().empty());
    // The table: one entry per block, then zeros.
    for (std::uint64_t blk = 0; blk < g.blocks(); ++blk)
      EXPECT_EQ(stored_block_crc(g, f.table(), blk),
                block_crc(blk, f.sb.uuid, f.image().subspan(blk * 4096, 4096)));
    for (std::uint64_t i = g.blocks() * 4; i < g.checksum_table_bytes(); ++i)
      ASSERT_EQ(f.table()[i], std::byte{0});
  }
}

TEST(BlockCrc, DetectsAFlippedBit) {
  for (std::uint32_t bb : {512u, 4096u}) {
    File f = fresh(bb, 1);
    const Geometry& g = f.sb.geometry;
    const std::uint64_t blk = g.block_of_chunk(5000);
    f.image()[g.chunk_pos(5000)] ^= std::byte{0x04};
    EXPECT_EQ(f.bad(), std::vector<std::uint64_t>{blk});
    EXPECT_FALSE(verify_block(g, f.sb.uuid, f.image(), f.table(), blk));
    EXPECT_TRUE(verify_block(g, f.sb.uuid, f.image(), f.table(), blk + 1));
    // A flipped bit in the table entry instead is detected as well.
    f.image()[g.chunk_pos(5000)] ^= std::byte{0x04};
    EXPECT_TRUE(f.bad().empty());
    f.table()[blk * 4 + 3] ^= std::byte{0x80};
    EXPECT_EQ(f.bad(), std::vector<std::uint64_t>{blk});
  }
}

TEST(BlockCrc, DetectsAZeroedBlock) {
  for (std::uint8_t fill : {0, 1}) {  // Unwritten chunks are zero bytes already
    File f = fresh(4096, fill);
    const Geometry& g = f.sb.geometry;
    std::fill_n(f.image().begin() + 4096, 4096, std::byte{0});
    std::vector<std::uint64_t> want;
    if (fill != 0) want.push_back(1);
    EXPECT_EQ(f.bad(), want);
    // Zeroing the checksum entry too (a hole, a lost write) is still detected.
    std::fill_n(f.table().begin() + 4, 4, std::byte{0});
    EXPECT_EQ(f.bad(), std::vector<std::uint64_t>{1});
    // A block with superblock and a zeroed entry: detected.
    std::fill_n(f.table().begin(), 4, std::byte{0});
    EXPECT_EQ(f.bad(), (std::vector<std::uint64_t>{0, 1}));
    // The whole file zeroed: every block fails, none reads as Unwritten.
    std::fill(f.bytes.begin(), f.bytes.end(), std::byte{0});
    EXPECT_EQ(f.bad().size(), g.blocks());
  }
}

TEST(BlockCrc, DetectsABlockFromAnotherIndexOrAnotherBitmap) {
  File f = fresh(4096, 1);
  const Geometry& g = f.sb.geometry;
  // Blocks 1 and 2 hold identical bytes (all Clean); only the index tells them apart.
  ASSERT_TRUE(
      std::equal(f.image().begin() + 4096, f.image().begin() + 8192, f.image().begin() + 8192));
  std::copy_n(f.table().begin() + 4, 4, f.table().begin() + 8);  // block 1's entry at 2
  EXPECT_EQ(f.bad(), std::vector<std::uint64_t>{2});

  // Block 1 and its entry copied from a bitmap with the same geometry and contents but
  // another uuid (a stale or foreign file): the bytes are identical, the uuid is not.
  File mine = fresh(4096, 1, 9);
  File other = fresh(4096, 1, 10);
  std::copy_n(other.image().begin() + 4096, 4096, mine.image().begin() + 4096);
  std::copy_n(other.table().begin() + 4, 4, mine.table().begin() + 4);
  EXPECT_EQ(mine.bad(), std::vector<std::uint64_t>{1});
  EXPECT_TRUE(verify_block(g, other.sb.uuid, mine.image(), mine.table(), 1));
}

}  // namespace
}  // namespace llbitmap
