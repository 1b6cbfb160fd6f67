// SPDX-License-Identifier: LGPL-2.1-or-later
//
// FileStorage: create/open/read/write/sync on real files in a temporary directory, the
// atomic and non-replacing create, that a failed create leaves nothing behind, the
// exclusive lock (one open per file, in this process or another), and the lock-free
// read-only open.
#include <llbitmap/error.h>
#include <llbitmap/storage.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "start_gate.h"
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace llbitmap {
namespace {

namespace fs = std::filesystem;

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  return v;
}

std::vector<std::byte> slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  std::transform(chars.begin(), chars.end(), out.begin(),
                 [](char c) { return static_cast<std::byte>(c); });
  return out;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class FileStorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/llbm-storage-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path path(const char* name = "bitmap") const { return dir_ / name; }

  fs::path dir_;
};

TEST_F(FileStorageTest, CreateReadWriteSyncReopen) {
  const auto contents = pattern(3 * 4096 + 100, 1);
  std::error_code ec;
  std::unique_ptr<FileStorage> s = FileStorage::create(path(), contents, ec);
  ASSERT_TRUE(s) << ec.message();
  EXPECT_FALSE(ec);
  EXPECT_EQ(s->path(), path());

  std::uint64_t size = 0;
  ASSERT_FALSE(s->size(size));
  EXPECT_EQ(size, contents.size());
  std::vector<std::byte> back(contents.size());
  ASSERT_FALSE(s->read(0, back));
  EXPECT_EQ(back, contents);
  EXPECT_EQ(slurp(path()), contents);

  const auto update = pattern(700, 2);
  ASSERT_FALSE(s->write(4000, update));
  ASSERT_FALSE(s->sync());
  std::vector<std::byte> part(700);
  ASSERT_FALSE(s->read(4000, part));
  EXPECT_EQ(part, update);

  // Writing past the end extends the file.
  ASSERT_FALSE(s->write(contents.size() + 10, update));
  ASSERT_FALSE(s->size(size));
  EXPECT_EQ(size, contents.size() + 10 + update.size());
  ASSERT_FALSE(s->sync());
  s.reset();

  std::unique_ptr<FileStorage> r = FileStorage::open(path(), ec);
  ASSERT_TRUE(r) << ec.message();
  EXPECT_FALSE(ec);
  ASSERT_FALSE(r->read(4000, part));
  EXPECT_EQ(part, update);
  std::vector<std::byte> head(4000);
  ASSERT_FALSE(r->read(0, head));
  EXPECT_TRUE(std::equal(head.begin(), head.end(), contents.begin()));
  // Nothing but the file in the directory: no temporary left behind.
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"bitmap"});
}

TEST_F(FileStorageTest, ReadPastTheEndIsAShortReadError) {
  std::error_code ec;
  auto s = FileStorage::create(path(), pattern(1000, 3), ec);
  ASSERT_TRUE(s) << ec.message();
  std::vector<std::byte> buf(100);
  EXPECT_EQ(s->read(950, buf), Errc::short_io);  // straddles the end
  EXPECT_EQ(s->read(1000, buf), Errc::short_io);
  EXPECT_EQ(s->read(1 << 20, buf), Errc::short_io);
  EXPECT_FALSE(s->read(900, buf));
  EXPECT_FALSE(s->read(1000, std::span<std::byte>()));  // empty read at the end is fine
  EXPECT_EQ(s->read(~std::uint64_t{0} - 10, buf), std::errc::invalid_argument);
}

TEST_F(FileStorageTest, CreateEmptyFile) {
  std::error_code ec;
  auto s = FileStorage::create(path(), {}, ec);
  ASSERT_TRUE(s) << ec.message();
  std::uint64_t size = 1;
  ASSERT_FALSE(s->size(size));
  EXPECT_EQ(size, 0u);
}

TEST_F(FileStorageTest, CreateRefusesAnExistingPathAndLeavesItUntouched) {
  const auto original = pattern(5000, 4);
  std::error_code ec;
  ASSERT_TRUE(FileStorage::create(path(), original, ec)) << ec.message();

  auto again = FileStorage::create(path(), pattern(8192, 5), ec);
  EXPECT_FALSE(again);
  EXPECT_EQ(ec, std::errc::file_exists);
  EXPECT_EQ(slurp(path()), original);
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"bitmap"});

  // A dangling symlink counts as existing and is not followed.
  fs::create_symlink(dir_ / "nowhere", path("link"));
  EXPECT_FALSE(FileStorage::create(path("link"), original, ec));
  EXPECT_EQ(ec, std::errc::file_exists);
  EXPECT_FALSE(fs::exists(dir_ / "nowhere"));
  EXPECT_TRUE(fs::is_symlink(path("link")));
  // So does a directory.
  fs::create_directory(path("sub"));
  EXPECT_FALSE(FileStorage::create(path("sub"), original, ec));
  EXPECT_EQ(ec, std::errc::file_exists);
}

TEST_F(FileStorageTest, ConcurrentCreatesOfOnePathHaveExactlyOneWinner) {
  for (int round = 0; round < 20; ++round) {
    const fs::path p = dir_ / ("race" + std::to_string(round));
    const auto a = pattern(64 << 10, 6), b = pattern(64 << 10, 7);
    std::error_code ea, eb;
    std::unique_ptr<FileStorage> sa, sb;
    test::StartGate gate(2);
    std::thread ta([&] {
      gate.arrive_and_wait();
      sa = FileStorage::create(p, a, ea);
    });
    std::thread tb([&] {
      gate.arrive_and_wait();
      sb = FileStorage::create(p, b, eb);
    });
    gate.open_when_ready();
    ta.join();
    tb.join();
    ASSERT_NE(static_cast<bool>(sa), static_cast<bool>(sb)) << "round " << round;
    const std::error_code& loser = sa ? eb : ea;
    EXPECT_EQ(loser, std::errc::file_exists);
    EXPECT_EQ(slurp(p), sa ? a : b);  // the winner's contents, whole
  }
  EXPECT_EQ(entries(dir_).size(), 20u);  // no temporaries
}

TEST_F(FileStorageTest, CreateInAMissingDirectoryFails) {
  std::error_code ec;
  EXPECT_FALSE(FileStorage::create(dir_ / "missing" / "bitmap", pattern(10, 0), ec));
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  EXPECT_TRUE(entries(dir_).empty());
  EXPECT_FALSE(FileStorage::create(dir_ / "", pattern(10, 0), ec));
  EXPECT_EQ(ec, std::errc::invalid_argument);
}

TEST_F(FileStorageTest, OpenMissingFileOrDirectory) {
  std::error_code ec;
  EXPECT_FALSE(FileStorage::open(path(), ec));
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  EXPECT_FALSE(fs::exists(path()));  // open never creates
  EXPECT_FALSE(FileStorage::open(dir_, ec));
  EXPECT_EQ(ec, std::errc::is_a_directory);
}

TEST_F(FileStorageTest, StepsRunInOrder) {
  std::vector<CreateStep> seen;
  std::error_code ec;
  auto s = FileStorage::create(path(), pattern(100, 0), ec, [&](CreateStep step) {
    seen.push_back(step);
    return std::error_code{};
  });
  ASSERT_TRUE(s) << ec.message();
  EXPECT_EQ(seen, (std::vector<CreateStep>{CreateStep::kOpenTemp, CreateStep::kAllocate,
                                           CreateStep::kWrite, CreateStep::kSyncFile,
                                           CreateStep::kLink, CreateStep::kSyncDir}));
}

TEST_F(FileStorageTest, NamedTemporaryWhenTheFileSystemHasNoTmpfile) {
  std::vector<CreateStep> seen;
  std::error_code ec;
  const auto contents = pattern(9000, 8);
  auto s = FileStorage::create(path(), contents, ec, [&](CreateStep step) {
    seen.push_back(step);
    if (seen.size() == 1) return std::make_error_code(std::errc::operation_not_supported);
    return std::error_code{};
  });
  ASSERT_TRUE(s) << ec.message();
  EXPECT_EQ(seen, (std::vector<CreateStep>{CreateStep::kOpenTemp, CreateStep::kOpenTemp,
                                           CreateStep::kAllocate, CreateStep::kWrite,
                                           CreateStep::kSyncFile, CreateStep::kLink,
                                           CreateStep::kSyncDir}));
  EXPECT_EQ(slurp(path()), contents);
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"bitmap"});
}

// Every step of both create paths, failed in turn: the error comes back and nothing is
// left at the path or in the directory.
TEST_F(FileStorageTest, AFailureAtAnyStepLeavesNothing) {
  const std::vector<CreateStep> steps = {CreateStep::kOpenTemp, CreateStep::kAllocate,
                                         CreateStep::kWrite,    CreateStep::kSyncFile,
                                         CreateStep::kLink,     CreateStep::kSyncDir};
  const auto contents = pattern(20000, 9);
  for (bool named : {false, true}) {
    for (CreateStep fail_at : steps) {
      for (std::errc err : {std::errc::io_error, std::errc::no_space_on_device}) {
        bool first = true;
        std::error_code ec;
        auto s = FileStorage::create(path(), contents, ec, [&](CreateStep step) {
          if (named && first) {
            first = false;
            return std::make_error_code(std::errc::operation_not_supported);
          }
          first = false;
          return step == fail_at ? std::make_error_code(err) : std::error_code{};
        });
        EXPECT_FALSE(s);
        EXPECT_EQ(ec, err) << "named " << named << " step " << static_cast<int>(fail_at);
        EXPECT_FALSE(fs::exists(fs::symlink_status(path())));
        EXPECT_TRUE(entries(dir_).empty())
            << "named " << named << " step " << static_cast<int>(fail_at);
      }
    }
  }
  // And afterwards the path can be created normally.
  std::error_code ec;
  EXPECT_TRUE(FileStorage::create(path(), contents, ec)) << ec.message();
}

// A real (not injected) failure: a file-size limit makes preallocation fail with EFBIG.
TEST_F(FileStorageTest, RealAllocationFailureLeavesNothing) {
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  struct rlimit small = old;
  small.rlim_cur = 64 << 10;
  if (old.rlim_max != RLIM_INFINITY && old.rlim_max < small.rlim_cur) GTEST_SKIP();
  // Exceeding the limit also raises SIGXFSZ, whose default action kills the process.
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::error_code ec;
  auto s = FileStorage::create(path(), pattern(1 << 20, 10), ec);
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_FALSE(s);
  EXPECT_EQ(ec, std::errc::file_too_large) << ec.message();
  EXPECT_FALSE(fs::exists(path()));
  EXPECT_TRUE(entries(dir_).empty());
}

TEST_F(FileStorageTest, ConcurrentWritersToDisjointRanges) {
  constexpr int kThreads = 2, kWritesPerThread = 200;
  std::error_code ec;
  auto s =
      FileStorage::create(path(), std::vector<std::byte>(kThreads * kWritesPerThread * 16), ec);
  ASSERT_TRUE(s) << ec.message();
  test::StartGate gate(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      gate.arrive_and_wait();
      for (int i = 0; i < kWritesPerThread; ++i) {
        const auto data = pattern(16, static_cast<unsigned>(t * 1000 + i));
        ASSERT_FALSE(s->write(static_cast<std::uint64_t>((i * kThreads + t) * 16), data));
      }
      ASSERT_FALSE(s->sync());
    });
  }
  gate.open_when_ready();
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kWritesPerThread; ++i) {
      std::vector<std::byte> got(16);
      ASSERT_FALSE(s->read(static_cast<std::uint64_t>((i * kThreads + t) * 16), got));
      EXPECT_EQ(got, pattern(16, static_cast<unsigned>(t * 1000 + i)));
    }
  }
}

// --- one open per file: the exclusive lock

TEST_F(FileStorageTest, SecondOpenInTheSameProcessIsRefusedUntilTheFirstIsGone) {
  const auto contents = pattern(8192, 4);
  std::error_code ec;
  auto first = FileStorage::create(path(), contents, ec);  // create holds the lock too
  ASSERT_TRUE(first) << ec.message();
  fs::create_symlink(path(), path("symlink"));
  fs::create_hard_link(path(), path("hardlink"));
  const fs::path dotted = dir_ / "." / "bitmap";
  for (const fs::path& p : {path(), path("symlink"), path("hardlink"), dotted}) {
    EXPECT_FALSE(FileStorage::open(p, ec)) << p;
    EXPECT_EQ(ec, Errc::bitmap_in_use) << p << ": " << ec.message();
  }
  EXPECT_EQ(slurp(path()), contents) << "a refused open touched the file";
  first.reset();

  auto second = FileStorage::open(path("hardlink"), ec);
  ASSERT_TRUE(second) << ec.message();
  EXPECT_FALSE(FileStorage::open(path(), ec));
  EXPECT_EQ(ec, Errc::bitmap_in_use);
  second.reset();
  EXPECT_TRUE(FileStorage::open(path(), ec)) << ec.message();
}

TEST_F(FileStorageTest, CreateWithANamedTemporaryHoldsTheLockToo) {
  std::error_code ec;
  bool first_open = true;
  auto s = FileStorage::create(path(), pattern(100, 0), ec, [&](CreateStep step) {
    // No O_TMPFILE: create starts over with a named temporary.
    if (step == CreateStep::kOpenTemp && std::exchange(first_open, false))
      return std::make_error_code(std::errc::operation_not_supported);
    return std::error_code{};
  });
  ASSERT_TRUE(s) << ec.message();
  ASSERT_FALSE(first_open) << "the O_TMPFILE attempt was not made";
  EXPECT_FALSE(FileStorage::open(path(), ec));
  EXPECT_EQ(ec, Errc::bitmap_in_use);
  s.reset();
  EXPECT_TRUE(FileStorage::open(path(), ec)) << ec.message();
}

// A child process holds the file; the parent is refused until the child lets go.
TEST_F(FileStorageTest, AnotherProcessCannotOpenWhileTheFileIsHeld) {
  const auto contents = pattern(4096, 6);
  std::error_code ec;
  ASSERT_TRUE(FileStorage::create(path(), contents, ec)) << ec.message();  // released at once
  int ready[2], release[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(release), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::error_code cec;
    auto held = FileStorage::open(path(), cec);
    const char ok = held ? '1' : '0';
    if (::write(ready[1], &ok, 1) != 1) ::_exit(2);
    char c;
    if (::read(release[0], &c, 1) != 1) ::_exit(3);
    held.reset();
    ::_exit(held == nullptr && ok == '1' ? 0 : 4);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ASSERT_EQ(ok, '1') << "the child could not open the file";

  EXPECT_FALSE(FileStorage::open(path(), ec));
  EXPECT_EQ(ec, Errc::bitmap_in_use) << ec.message();
  // The read-only open takes no lock: it works while the child holds the file.
  auto ro = FileStorage::open_read_only(path(), ec);
  EXPECT_TRUE(ro) << ec.message();

  ASSERT_EQ(::write(release[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  ::close(ready[0]);
  ::close(release[1]);
  EXPECT_TRUE(FileStorage::open(path(), ec)) << ec.message();
  EXPECT_EQ(slurp(path()), contents);
}

// The parent holds the file; a child process is refused (and touches nothing).
TEST_F(FileStorageTest, AFileHeldHereIsRefusedToAnotherProcess) {
  const auto contents = pattern(4096, 7);
  std::error_code ec;
  auto held = FileStorage::create(path(), contents, ec);
  ASSERT_TRUE(held) << ec.message();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::error_code cec;
    const bool opened = FileStorage::open(path(), cec) != nullptr;
    ::_exit(opened ? 1 : cec == Errc::bitmap_in_use ? 0 : 2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the child opened the file; 2: another error";
  EXPECT_EQ(slurp(path()), contents);
}

// --- the read-only open

TEST_F(FileStorageTest, ReadOnlyOpenReadsWithoutLockingAndNeverWrites) {
  const auto contents = pattern(3 * 4096, 8);
  std::error_code ec;
  auto held = FileStorage::create(path(), contents, ec);
  ASSERT_TRUE(held) << ec.message();
  EXPECT_FALSE(held->read_only());

  auto ro = FileStorage::open_read_only(path(), ec);
  ASSERT_TRUE(ro) << ec.message();
  EXPECT_FALSE(ec);
  EXPECT_TRUE(ro->read_only());
  std::uint64_t size = 0;
  ASSERT_FALSE(ro->size(size));
  EXPECT_EQ(size, contents.size());
  std::vector<std::byte> back(contents.size());
  ASSERT_FALSE(ro->read(0, back));
  EXPECT_EQ(back, contents);
  // It sees the writer's writes.
  const auto update = pattern(100, 9);
  ASSERT_FALSE(held->write(50, update));
  std::vector<std::byte> part(100);
  ASSERT_FALSE(ro->read(50, part));
  EXPECT_EQ(part, update);

  EXPECT_EQ(ro->write(0, pattern(10, 1)), std::errc::bad_file_descriptor);
  EXPECT_EQ(ro->write(contents.size(), pattern(10, 1)), std::errc::bad_file_descriptor);
  EXPECT_EQ(ro->sync(), std::errc::bad_file_descriptor);
  ASSERT_FALSE(ro->size(size));
  EXPECT_EQ(size, contents.size()) << "a refused write past the end grew the file";

  // It holds no lock: with the writer gone, an exclusive open succeeds beside it.
  held.reset();
  auto rw = FileStorage::open(path(), ec);
  EXPECT_TRUE(rw) << ec.message();
  std::vector<std::byte> want = contents;
  std::copy(update.begin(), update.end(), want.begin() + 50);
  EXPECT_EQ(slurp(path()), want);
}

TEST_F(FileStorageTest, ReadOnlyOpenOfAFileThatCannotBeWritten) {
  const auto contents = pattern(4096, 10);
  std::error_code ec;
  ASSERT_TRUE(FileStorage::create(path(), contents, ec)) << ec.message();
  fs::permissions(path(), fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  if (::geteuid() != 0) {  // root writes anyway
    EXPECT_FALSE(FileStorage::open(path(), ec));
    EXPECT_EQ(ec, std::errc::permission_denied);
  }
  auto ro = FileStorage::open_read_only(path(), ec);
  ASSERT_TRUE(ro) << ec.message();
  std::vector<std::byte> back(contents.size());
  ASSERT_FALSE(ro->read(0, back));
  EXPECT_EQ(back, contents);
}

TEST_F(FileStorageTest, ReadOnlyOpenRefusesWhatOpenRefuses) {
  std::error_code ec;
  EXPECT_FALSE(FileStorage::open_read_only(path(), ec));
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  EXPECT_FALSE(fs::exists(path()));
  EXPECT_FALSE(FileStorage::open_read_only(dir_, ec));
  EXPECT_EQ(ec, std::errc::invalid_argument);  // O_RDONLY opens a directory; fstat refuses it
}

}  // namespace
}  // namespace llbitmap
