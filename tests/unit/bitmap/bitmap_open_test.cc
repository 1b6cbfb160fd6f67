// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Bitmap::create / Bitmap::open on real files: atomic creation, and a matrix of bad
// files (foreign, wrong version, corrupt superblock, truncated, grown, bad geometry),
// each refused with its own error code and left byte-for-byte unchanged
// (docs/format.md#7-validation-on-open-and-the-error-each-violation-gives).
#include <llbitmap/bitmap.h>
#include <llbitmap/format.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include <unistd.h>

namespace llbitmap {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::vector<char> slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void spit(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class BitmapOpenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("llbitmap-open-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = dir_ / "bitmap";
    BitmapOptions o;
    o.device_bytes = 1ull << 30;
    o.start_daemon = false;
    std::error_code ec;
    auto bm = Bitmap::create(path_, o, ec);
    ASSERT_TRUE(bm) << ec.message();
    ASSERT_FALSE(bm->start_write(0, 4096));
    bm->end_write(0, 4096);
    ASSERT_FALSE(bm->close());
    good_ = slurp(path_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `bytes` as the file, opens it, and checks the error and that the file is
  // exactly as it was.
  void expect_refused(const std::vector<char>& bytes, std::error_code want) {
    spit(path_, bytes);
    std::error_code ec;
    OpenOptions oo;
    oo.start_daemon = false;
    auto bm = Bitmap::open(path_, oo, ec);
    EXPECT_FALSE(bm);
    EXPECT_EQ(ec, want) << ec.message();
    EXPECT_EQ(slurp(path_), bytes) << "a refused file was modified";
  }
  std::vector<char> with_sb_field(std::size_t off, std::uint32_t v, bool fix_crc) {
    std::vector<char> b = good_;
    std::memcpy(b.data() + off, &v, 4);  // little-endian host
    if (fix_crc)
      update_superblock_crc(std::span<std::byte, kSuperblockBytes>(
          reinterpret_cast<std::byte*>(b.data()), kSuperblockBytes));
    return b;
  }

  fs::path dir_, path_;
  std::vector<char> good_;
};

TEST_F(BitmapOpenTest, CreateRefusesAnExistingFileAndLeavesIt) {
  BitmapOptions o;
  o.device_bytes = 1ull << 20;
  o.start_daemon = false;
  std::error_code ec;
  EXPECT_FALSE(Bitmap::create(path_, o, ec));
  EXPECT_EQ(ec, std::errc::file_exists);
  EXPECT_EQ(slurp(path_), good_);
}

TEST_F(BitmapOpenTest, BadOptionsCreateNothing) {
  BitmapOptions o;
  o.start_daemon = false;
  std::error_code ec;
  const fs::path p = dir_ / "new";
  o.device_bytes = 0;
  EXPECT_FALSE(Bitmap::create(p, o, ec));
  EXPECT_EQ(ec, Errc::bad_geometry);
  o.device_bytes = 1ull << 30;
  o.chunk_bytes = 3000;  // not a power of two
  EXPECT_FALSE(Bitmap::create(p, o, ec));
  EXPECT_EQ(ec, Errc::bad_geometry);
  o.chunk_bytes = 4096;  // 262144 chunks do not fit 128 KiB
  EXPECT_FALSE(Bitmap::create(p, o, ec));
  EXPECT_EQ(ec, Errc::bad_geometry);
  o.chunk_bytes = 0;
  o.barrier_idle = 0ms;
  EXPECT_FALSE(Bitmap::create(p, o, ec));
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(BitmapOpenTest, CleanCloseReopensWithNothingToResync) {
  std::error_code ec;
  OpenOptions oo;
  oo.start_daemon = false;
  auto bm = Bitmap::open(path_, oo, ec);
  ASSERT_TRUE(bm) << ec.message();
  EXPECT_TRUE(bm->needs_sync().empty());
  EXPECT_EQ(bm->state(0), ChunkState::kClean);
}

TEST_F(BitmapOpenTest, MissingFile) {
  std::error_code ec;
  EXPECT_FALSE(Bitmap::open(dir_ / "nope", ec));
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
}

TEST_F(BitmapOpenTest, ForeignFile) {
  std::vector<char> junk(good_.size());
  for (std::size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>(i * 131 + 7);
  expect_refused(junk, Errc::not_a_bitmap);
  expect_refused({}, Errc::not_a_bitmap);  // empty file
}

TEST_F(BitmapOpenTest, WrongVersion) {
  expect_refused(with_sb_field(4, 4, true), Errc::unsupported_version);    // classic md bitmap
  expect_refused(with_sb_field(168, 2, true), Errc::unsupported_version);  // format revision
}

TEST_F(BitmapOpenTest, CorruptSuperblock) {
  std::vector<char> b = good_;
  b[30] ^= 1;  // in events, CRC not fixed
  expect_refused(b, Errc::bad_superblock);
}

TEST_F(BitmapOpenTest, BadGeometryWithAValidChecksum) {
  expect_refused(with_sb_field(52, 100, true), Errc::bad_geometry);    // chunk size not 2^n
  expect_refused(with_sb_field(140, 3000, true), Errc::bad_geometry);  // block size
  expect_refused(with_sb_field(56, 0, true), Errc::bad_geometry);      // daemon_sleep 0
}

TEST_F(BitmapOpenTest, TruncatedOrGrownFile) {
  std::vector<char> b = good_;
  b.resize(b.size() - 4096);
  expect_refused(b, Errc::size_mismatch);
  b = good_;
  b.resize(b.size() + 512, 0);
  expect_refused(b, Errc::size_mismatch);
}

// ------------------------------------------------------------------ device identity

DeviceUuid device(std::uint8_t seed) {
  DeviceUuid d{};
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<std::uint8_t>(seed + 7 * i);
  return d;
}

// The device uuid as the superblock holds it.
DeviceUuid stored_device(const std::vector<char>& file) {
  std::error_code ec;
  auto sb = Superblock::decode(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(file.data()), file.size()), ec,
      file.size());
  EXPECT_TRUE(sb) << ec.message();
  DeviceUuid d{};
  if (sb)
    for (std::size_t i = 0; i < d.size(); ++i)
      d[i] = std::to_integer<std::uint8_t>(sb->device_uuid[i]);
  return d;
}

TEST_F(BitmapOpenTest, ABitmapBoundToAnotherDeviceIsRefusedAndLeftUntouched) {
  const fs::path p = dir_ / "bound";
  BitmapOptions o;
  o.device_bytes = 1ull << 30;
  o.start_daemon = false;
  o.device_uuid = device(1);
  std::error_code ec;
  {
    auto bm = Bitmap::create(p, o, ec);
    ASSERT_TRUE(bm) << ec.message();
    ASSERT_FALSE(bm->start_write(0, 4096));
    bm->end_write(0, 4096);
    ASSERT_FALSE(bm->close());
  }
  const std::vector<char> bytes = slurp(p);
  EXPECT_EQ(stored_device(bytes), device(1));
  OpenOptions oo;
  oo.start_daemon = false;
  oo.device_uuid = device(2);
  EXPECT_FALSE(Bitmap::open(p, oo, ec));
  EXPECT_EQ(ec, Errc::foreign_bitmap) << ec.message();
  EXPECT_EQ(slurp(p), bytes) << "a refused file was modified";
  // The right device opens it; so does an open that does not check (all zero), which
  // keeps the binding.
  for (const DeviceUuid& d : {device(1), DeviceUuid{}}) {
    oo.device_uuid = d;
    auto bm = Bitmap::open(p, oo, ec);
    ASSERT_TRUE(bm) << ec.message();
    ASSERT_FALSE(bm->close());
    bm.reset();
    EXPECT_EQ(stored_device(slurp(p)), device(1));
  }
}

TEST_F(BitmapOpenTest, AnUnboundFileOpensForAnyDeviceAndIsBoundToIt) {
  // good_ was made without a device uuid, as every file before the field existed.
  EXPECT_EQ(stored_device(good_), DeviceUuid{});
  OpenOptions oo;
  oo.start_daemon = false;
  std::error_code ec;
  {
    auto bm = Bitmap::open(path_, oo, ec);  // unchecked: stays unbound
    ASSERT_TRUE(bm) << ec.message();
    ASSERT_FALSE(bm->close());
  }
  EXPECT_EQ(stored_device(slurp(path_)), DeviceUuid{});
  oo.device_uuid = device(3);
  {
    auto bm = Bitmap::open(path_, oo, ec);
    ASSERT_TRUE(bm) << ec.message();
    EXPECT_EQ(bm->state(0), ChunkState::kClean) << "its states are kept";
    ASSERT_FALSE(bm->close());
  }
  EXPECT_EQ(stored_device(slurp(path_)), device(3));
  oo.device_uuid = device(4);
  EXPECT_FALSE(Bitmap::open(path_, oo, ec));
  EXPECT_EQ(ec, Errc::foreign_bitmap);
}

TEST_F(BitmapOpenTest, MinEventsOlderThanTheFileIsStaleAndNotOlderIsNot) {
  OpenOptions oo;
  oo.start_daemon = false;
  std::error_code ec;
  std::uint64_t events = 0;
  {
    auto bm = Bitmap::open(path_, oo, ec);
    ASSERT_TRUE(bm) << ec.message();
    events = bm->events();
    ASSERT_FALSE(bm->close());
    EXPECT_EQ(bm->events(), events + 1);
    events = bm->events();
  }
  oo.min_events = events;  // the file holds exactly this: up to date
  {
    auto bm = Bitmap::open(path_, oo, ec);
    ASSERT_TRUE(bm) << ec.message();
    EXPECT_FALSE(bm->out_of_date());
    EXPECT_EQ(bm->state(0), ChunkState::kClean);
    EXPECT_EQ(bm->state(1), ChunkState::kUnwritten);
    ASSERT_FALSE(bm->close());
    events = bm->events();
  }
  oo.min_events = events + 1;  // the engine has seen a later state than the file
  auto bm = Bitmap::open(path_, oo, ec);
  ASSERT_TRUE(bm) << ec.message();
  EXPECT_TRUE(bm->out_of_date());
  EXPECT_EQ(bm->counts().need_sync, bm->chunks());
  EXPECT_EQ(bm->events(), events + 2);
}

}  // namespace
}  // namespace llbitmap
