// SPDX-License-Identifier: LGPL-2.1-or-later
//
// mirror_test.cc: tests of the RAID-1 mirror component (mirror/, llbitmap_mirror):
// IO round trips, FUA, trim, resync after a real crash (a writer process killed with
// SIGKILL), failed and re-added legs (also across a reopen, and after an IO error), a
// resync and a re-add racing with writers on the chunks being copied, and the kNone and
// kClassic modes after an unclean shutdown.
//
// How a test proves that a resync copied exactly the chunks it should: after the crash
// it scribbles on the secondary leg in every NeedSync chunk and in one chunk the bitmap
// says is in sync; the resync must repair the first and leave the second alone.
//
// No test sleeps: a crash is triggered once the child reports (through a pipe) that it
// has done a number of writes, and racing threads start behind a StartGate.
#include "mirror.h"

#include <llbitmap/bitmap.h>
#include <llbitmap/error.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "leg_io.h"
#include "start_gate.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace llbitmap::mirror {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kChunk = 64 << 10;

#if defined(__SANITIZE_THREAD__)
constexpr bool kTsan = true;  // TSan cannot follow threads in a forked child
#else
constexpr bool kTsan = false;
#endif

using Runs = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

std::vector<std::byte> random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::byte> v(n);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  for (; i < n; ++i) v[i] = static_cast<std::byte>(rng());
  return v;
}

std::uint64_t chunks_in(const Runs& runs, std::uint64_t chunk = kChunk) {
  std::uint64_t n = 0;
  for (const auto& [off, len] : runs) n += (len + chunk - 1) / chunk;
  return n;
}

std::set<std::uint64_t> chunk_set(const Runs& runs, std::uint64_t chunk = kChunk) {
  std::set<std::uint64_t> s;
  for (const auto& [off, len] : runs)
    for (std::uint64_t o = off; o < off + len; o += chunk) s.insert(o / chunk);
  return s;
}

// Writers that hammer the chunk a copy pass is about to copy and the one after it
// (aim() follows the pass's progress callback): random data, 4 or 8 KiB inside the
// chunk. Without the copy's exclusion, a write landing between the copy's read of the
// source and its write of the target would be undone on the target; the race tests use
// 1 MiB chunks so that this window is wide enough for such writes to fall into it. Writer t keeps
// to its own part of the chunk: concurrent writes to the same bytes may land in different orders on
// the two legs (as with md raid1), which is not what is tested here.
class RacingWriters {
 public:
  RacingWriters(Mirror& m, std::uint64_t first_target, unsigned threads = 2)
      : m_(m), n_(threads), gate_(static_cast<int>(threads)), target_(first_target) {
    for (unsigned t = 0; t < threads; ++t) threads_.emplace_back([this, t] { run(t); });
    gate_.open_when_ready();
  }
  ~RacingWriters() { stop(); }
  void aim(std::uint64_t chunk) noexcept { target_.store(chunk, std::memory_order_relaxed); }
  // Stops and joins the writers; returns how many writes they did.
  std::uint64_t stop() {
    stop_.store(true, std::memory_order_relaxed);
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    return writes_.load();
  }
  [[nodiscard]] bool failed() const noexcept { return failed_.load(); }

 private:
  void run(unsigned t) {
    std::mt19937_64 rng(100 + t);
    gate_.arrive_and_wait();
    const std::uint64_t chunk = m_.chunk_bytes();
    const std::uint64_t chunks = (m_.size() + chunk - 1) / chunk;
    while (!stop_.load(std::memory_order_relaxed)) {
      const std::uint64_t c =
          std::min(target_.load(std::memory_order_relaxed) + rng() % 2, chunks - 1);
      const std::uint64_t part = chunk / n_;
      const std::uint64_t len = std::min<std::uint64_t>((1 + rng() % 2) * 4096, part);
      const std::uint64_t off = c * chunk + t * part + rng() % ((part - len) / 4096 + 1) * 4096;
      if (off + len > m_.size()) continue;
      if (m_.write(off, random_bytes(rng, len))) failed_.store(true);
      writes_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  Mirror& m_;
  const unsigned n_;
  test::StartGate gate_;
  std::atomic<std::uint64_t> target_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<std::uint64_t> writes_{0};
  std::vector<std::thread> threads_;
};

class MirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string t =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/llmirror-test.XXXXXX";
    ASSERT_NE(::mkdtemp(t.data()), nullptr) << std::strerror(errno);
    dir_ = t;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  MirrorOptions options(std::uint64_t size, Mode mode = Mode::kLlbitmap, bool create = true,
                        std::uint64_t chunk = kChunk) const {
    MirrorOptions o;
    o.primary = dir_ / "primary";
    o.secondary = dir_ / "secondary";
    o.bitmap = dir_ / "bitmap";
    o.size = size;
    o.create = create;
    o.mode = mode;
    o.chunk_bytes = chunk;
    // The daemon stays out of the way unless a test wants it: it would clean chunks
    // (and sync the legs) at moments the test does not choose.
    o.daemon_sleep = std::chrono::hours(1);
    o.barrier_idle = std::chrono::hours(1);
    return o;
  }

  std::unique_ptr<Mirror> open(const MirrorOptions& o) {
    std::error_code ec;
    auto m = Mirror::open(o, ec);
    EXPECT_TRUE(m) << ec.message();
    return m;
  }

  std::vector<std::byte> read_leg(const fs::path& p, std::uint64_t off, std::size_t n) const {
    std::vector<std::byte> v(n);
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_FALSE(pread_all(fd, v.data(), n, off));
    ::close(fd);
    return v;
  }
  void write_leg(const fs::path& p, std::uint64_t off, const std::vector<std::byte>& data) const {
    const int fd = ::open(p.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    EXPECT_FALSE(pwrite_all(fd, data.data(), data.size(), off));
    ::close(fd);
  }
  // Makes the secondary's copy of a chunk differ from the primary's.
  void scribble_secondary(std::uint64_t chunk, std::uint64_t chunk_bytes = kChunk) const {
    auto data = read_leg(dir_ / "primary", chunk * chunk_bytes, 4096);
    for (auto& b : data) b = ~b;
    write_leg(dir_ / "secondary", chunk * chunk_bytes, data);
  }
  CompareResult compare(std::uint64_t size) const {
    CompareResult r;
    EXPECT_FALSE(compare_legs(dir_ / "primary", dir_ / "secondary", size, r));
    return r;
  }

  // Runs `threads` writer threads in a child process over [hot_off, hot_off + hot_len)
  // (every `cold_every`-th write of a thread anywhere, 0 = never), and kills the child
  // with SIGKILL once it reports `writes_before_kill` writes. Thread t writes only into
  // its own slice of the hot region and of the device: no two writes in flight overlap.
  void crash_writer(const MirrorOptions& o, std::uint64_t hot_off, std::uint64_t hot_len,
                    std::uint64_t writes_before_kill, unsigned cold_every = 0,
                    unsigned threads = 2) {
    int pfd[2];
    ASSERT_EQ(::pipe2(pfd, O_CLOEXEC), 0);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(pfd[0]);
      MirrorOptions co = o;
      co.create = false;
      co.size = 0;
      std::error_code ec;
      auto m = Mirror::open(co, ec);
      if (!m) ::_exit(10);
      std::atomic<std::uint64_t> done{0};
      std::atomic<bool> told{false};
      std::vector<std::thread> ts;
      for (unsigned t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
          std::mt19937_64 rng(1000 + t);
          std::vector<std::byte> buf(64 << 10);
          for (std::uint64_t i = 1;; ++i) {
            const std::uint64_t len = (1 + rng() % 16) * 4096;
            const bool cold = cold_every != 0 && i % cold_every == 0;
            const std::uint64_t span = (cold ? m->size() : hot_len) / threads / 4096 * 4096;
            const std::uint64_t base = (cold ? 0 : hot_off) + t * span;
            const std::uint64_t l = std::min(len, span);
            const std::uint64_t off = base + rng() % ((span - l) / 4096 + 1) * 4096;
            for (std::uint64_t k = 0; k < l; k += 8) {
              const std::uint64_t v = rng();
              std::memcpy(buf.data() + k, &v, 8);
            }
            if (m->write(off, std::span<const std::byte>(buf.data(), l))) ::_exit(11);
            if (done.fetch_add(1) + 1 == writes_before_kill && !told.exchange(true)) {
              const char c = 'k';
              if (::write(pfd[1], &c, 1) != 1) ::_exit(12);
            }
          }
        });
      }
      for (auto& th : ts) th.join();
      ::_exit(13);
    }
    ::close(pfd[1]);
    char c = 0;
    ssize_t r;
    while ((r = ::read(pfd[0], &c, 1)) < 0 && errno == EINTR) {
    }
    ::close(pfd[0]);
    ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    ASSERT_EQ(r, 1) << "the writer child died early, status " << status;
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  }

  fs::path dir_;
};

// ------------------------------------------------------------------ IO

TEST_F(MirrorTest, WriteReadRoundTripReachesBothLegs) {
  constexpr std::uint64_t kSize = 4 << 20;
  auto m = open(options(kSize));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->size(), kSize);
  EXPECT_EQ(m->chunk_bytes(), kChunk);
  ASSERT_NE(m->bitmap(), nullptr);
  std::mt19937_64 rng(1);
  struct W {
    std::uint64_t off;
    std::vector<std::byte> data;
  };
  // Unaligned, chunk-straddling, first and last bytes of the device.
  std::vector<W> ws = {{0, random_bytes(rng, 1)},
                       {kChunk - 100, random_bytes(rng, 300)},
                       {3 * kChunk + 17, random_bytes(rng, 2 * kChunk + 5)},
                       {kSize - 4096, random_bytes(rng, 4096)},
                       {kSize - 1, random_bytes(rng, 1)}};
  for (const W& w : ws) {
    ASSERT_FALSE(m->write(w.off, w.data)) << w.off;
  }
  for (const W& w : ws) {
    if (&w == &ws[3]) continue;  // overwritten in part by ws[4]
    std::vector<std::byte> got(w.data.size());
    ASSERT_FALSE(m->read(w.off, got));
    EXPECT_EQ(got, w.data) << w.off;
    EXPECT_EQ(read_leg(dir_ / "primary", w.off, w.data.size()), w.data);
    EXPECT_EQ(read_leg(dir_ / "secondary", w.off, w.data.size()), w.data);
  }
  // Every written chunk is Dirty; the others untouched.
  EXPECT_EQ(m->bitmap()->state(0), ChunkState::kDirty);
  EXPECT_EQ(m->bitmap()->state(4), ChunkState::kDirty);
  EXPECT_EQ(m->bitmap()->state(2), ChunkState::kUnwritten);
  const MirrorStats s = m->stats();
  EXPECT_EQ(s.writes, ws.size());

  // Ranges past the device are refused; empty ones are no-ops.
  std::vector<std::byte> two(2);
  EXPECT_EQ(m->write(kSize - 1, two), std::errc::invalid_argument);
  EXPECT_EQ(m->read(kSize - 1, two), std::errc::invalid_argument);
  EXPECT_EQ(m->write(kSize, std::span<const std::byte>()), std::error_code{});
  EXPECT_EQ(m->trim(kSize, 1), std::errc::invalid_argument);
  EXPECT_FALSE(m->flush());
  EXPECT_TRUE(m->needs_sync().empty());
  ASSERT_FALSE(m->close());
  m.reset();

  // A clean close needs no resync, and the data is still there.
  m = open(options(0, Mode::kLlbitmap, false));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->size(), kSize);
  EXPECT_TRUE(m->needs_sync().empty());
  std::vector<std::byte> got(ws[2].data.size());
  ASSERT_FALSE(m->read(ws[2].off, got));
  EXPECT_EQ(got, ws[2].data);
  EXPECT_TRUE(compare(kSize).identical);
}

TEST_F(MirrorTest, OpenRefusesWhatItCannotUse) {
  std::error_code ec;
  MirrorOptions o = options(1 << 20);
  o.create = false;
  EXPECT_FALSE(Mirror::open(o, ec));  // nothing exists
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  o.create = true;
  o.size = 0;
  EXPECT_FALSE(Mirror::open(o, ec));  // new legs need a size
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_FALSE(fs::exists(o.primary));  // nothing half-created left behind
  o.size = 1 << 20;
  auto m = Mirror::open(o, ec);
  ASSERT_TRUE(m) << ec.message();
  ASSERT_FALSE(m->close());
  m.reset();
  o.size = 2 << 20;  // the bitmap says 1 MiB
  EXPECT_FALSE(Mirror::open(o, ec));
  EXPECT_EQ(ec, std::errc::invalid_argument);
}

TEST_F(MirrorTest, NewBitmapOverOldLegsResyncsEverything) {
  constexpr std::uint64_t kSize = 2 << 20;
  {
    auto m = open(options(kSize, Mode::kNone));  // legs without a bitmap
    ASSERT_TRUE(m);
    ASSERT_FALSE(m->close());
  }
  scribble_secondary(7);
  // Nothing says the legs agree: the new bitmap marks every chunk NeedSync, durably.
  auto m = open(options(0));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->size(), kSize);
  EXPECT_EQ(chunks_in(m->needs_sync()), kSize / kChunk);
  ASSERT_FALSE(m->close());
  m.reset();  // the old Mirror holds the bitmap file's lock until it is destroyed
  m = open(options(0, Mode::kLlbitmap, false));
  ASSERT_TRUE(m);
  EXPECT_EQ(chunks_in(m->needs_sync()), kSize / kChunk) << "kept across a reopen";
  ASSERT_FALSE(m->resync());
  EXPECT_TRUE(m->needs_sync().empty());
  EXPECT_TRUE(compare(kSize).identical);
}

TEST_F(MirrorTest, FuaSyncsBothLegsBeforeReturning) {
  auto m = open(options(1 << 20));
  ASSERT_TRUE(m);
  std::mt19937_64 rng(2);
  const auto data = random_bytes(rng, 8192);
  const std::uint64_t before = m->stats().leg_syncs;
  ASSERT_FALSE(m->write(4096, data));
  EXPECT_EQ(m->stats().leg_syncs, before) << "a plain write syncs nothing";
  ASSERT_FALSE(m->write(65536, data, /*fua=*/true));
  EXPECT_EQ(m->stats().leg_syncs, before + 2) << "FUA: one fdatasync per leg";
  EXPECT_EQ(m->stats().fua_writes, 1u);
  ASSERT_FALSE(m->flush());
  EXPECT_EQ(m->stats().leg_syncs, before + 4);
  // With a leg failed, FUA syncs the one that remains.
  m->fail_leg(1);
  const std::uint64_t degraded = m->stats().leg_syncs;
  ASSERT_FALSE(m->write(65536, data, true));
  EXPECT_EQ(m->stats().leg_syncs, degraded + 1);
  std::vector<std::byte> got(data.size());
  ASSERT_FALSE(m->read(65536, got));
  EXPECT_EQ(got, data);
}

TEST_F(MirrorTest, TrimPunchesBothLegsAndMarksCoveredChunksUnwritten) {
  constexpr std::uint64_t kSize = 16 * kChunk;
  auto m = open(options(kSize));
  ASSERT_TRUE(m);
  const std::vector<std::byte> ones(kSize, std::byte{0xaa});
  ASSERT_FALSE(m->write(0, ones));
  ASSERT_FALSE(m->bitmap()->flush());  // everything Clean
  EXPECT_EQ(m->bitmap()->state(1), ChunkState::kClean);

  // Chunk 1 from 4 KiB on, chunk 2 whole, chunk 3 up to 4 KiB.
  const std::uint64_t off = kChunk + 4096, len = 2 * kChunk;
  ASSERT_FALSE(m->trim(off, len));
  EXPECT_EQ(m->stats().trims, 1u);
  std::vector<std::byte> got(kSize);
  ASSERT_FALSE(m->read(0, got));
  for (std::uint64_t i = 0; i < kSize; ++i) {
    const bool trimmed = i >= off && i < off + len;
    ASSERT_EQ(got[i], trimmed ? std::byte{0} : std::byte{0xaa}) << "byte " << i;
  }
  EXPECT_TRUE(compare(kSize).identical);
  // Fully covered: Unwritten (Discard). Partly covered: written, so Dirty.
  EXPECT_EQ(m->bitmap()->state(0), ChunkState::kClean);
  EXPECT_EQ(m->bitmap()->state(1), ChunkState::kDirty);
  EXPECT_EQ(m->bitmap()->state(2), ChunkState::kUnwritten);
  EXPECT_EQ(m->bitmap()->state(3), ChunkState::kDirty);
  EXPECT_EQ(m->bitmap()->state(4), ChunkState::kClean);
  // The space was given back where the file system can punch holes.
  for (const char* leg : {"primary", "secondary"}) {
    const int fd = ::open((dir_ / leg).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    const off_t hole = ::lseek(fd, static_cast<off_t>(2 * kChunk), SEEK_HOLE);
    ::close(fd);
    if (hole >= 0 && hole != static_cast<off_t>(kSize)) {  // kSize: no hole support
      EXPECT_EQ(hole, static_cast<off_t>(2 * kChunk)) << leg;
    }
  }
  // A trim inside one chunk only writes it.
  ASSERT_FALSE(m->trim(5 * kChunk + 100, 200));
  EXPECT_EQ(m->bitmap()->state(5), ChunkState::kDirty);
  ASSERT_FALSE(m->read(5 * kChunk, std::span<std::byte>(got.data(), 512)));
  EXPECT_EQ(got[99], std::byte{0xaa});
  EXPECT_EQ(got[100], std::byte{0});
  EXPECT_EQ(got[299], std::byte{0});
  EXPECT_EQ(got[300], std::byte{0xaa});
}

// ------------------------------------------------------------------ crash and resync

TEST_F(MirrorTest, ResyncAfterCrashCopiesExactlyTheNeedSyncChunks) {
  if (kTsan) GTEST_SKIP() << "ThreadSanitizer cannot follow threads in a forked child";
  constexpr std::uint64_t kSize = 64 << 20;  // 1024 chunks
  const std::uint64_t chunks = kSize / kChunk;
  {
    auto m = open(options(kSize));
    ASSERT_TRUE(m);
    ASSERT_FALSE(m->close());
  }
  // A hot region of 16 chunks, and one write in 400 anywhere.
  crash_writer(options(kSize), 10 << 20, 16 * kChunk, 3000, 400);

  auto m = open(options(0, Mode::kLlbitmap, false));
  ASSERT_TRUE(m);
  const Runs runs = m->needs_sync();
  const std::set<std::uint64_t> need = chunk_set(runs);
  EXPECT_EQ(need.size(), m->bitmap()->counts().need_sync);
  ASSERT_GT(need.size(), 0u) << "writes were in flight: their chunks must be NeedSync";
  EXPECT_LT(need.size(), chunks / 8) << "only the written chunks, not the device";
  for (std::uint64_t c = 160; c < 176; ++c) EXPECT_TRUE(need.count(c)) << "hot chunk " << c;

  // Make every NeedSync chunk differ, and one chunk the bitmap says is in sync.
  std::uint64_t in_sync = 0;
  while (need.count(in_sync)) ++in_sync;
  for (const std::uint64_t c : need) scribble_secondary(c);
  scribble_secondary(in_sync);

  ResyncProgress last;
  std::uint64_t calls = 0;
  ASSERT_FALSE(m->resync([&](const ResyncProgress& p) {
    EXPECT_GE(p.chunks_done, last.chunks_done);
    last = p;
    ++calls;
  }));
  EXPECT_EQ(last.chunks_total, need.size());
  EXPECT_EQ(last.chunks_done, need.size());
  EXPECT_EQ(last.bytes_copied, need.size() * kChunk);
  EXPECT_EQ(m->stats().chunks_copied, need.size());
  EXPECT_GT(calls, need.size());
  EXPECT_TRUE(m->needs_sync().empty());

  // Everything the bitmap flagged was repaired; the chunk it did not flag was not copied.
  CompareResult r = compare(kSize);
  ASSERT_FALSE(r.identical);
  EXPECT_EQ(r.first_difference / kChunk, in_sync);
  write_leg(dir_ / "secondary", in_sync * kChunk,
            read_leg(dir_ / "primary", in_sync * kChunk, 4096));
  r = compare(kSize);
  EXPECT_TRUE(r.identical) << "first difference at " << r.first_difference;
  ASSERT_FALSE(m->close());
}

TEST_F(MirrorTest, ResyncRacesWritersOnTheChunksItCopies) {
  if (kTsan) GTEST_SKIP() << "ThreadSanitizer cannot follow threads in a forked child";
  constexpr std::uint64_t kSize = 64 << 20, kBig = 1 << 20;
  const std::uint64_t hot_off = 4 << 20, hot_len = 48 << 20;  // 48 chunks
  {
    auto m = open(options(kSize, Mode::kLlbitmap, true, kBig));
    ASSERT_TRUE(m);
    ASSERT_FALSE(m->close());
  }
  crash_writer(options(kSize, Mode::kLlbitmap, true, kBig), hot_off, hot_len, 4000);
  auto m = open(options(0, Mode::kLlbitmap, false, kBig));
  ASSERT_TRUE(m);
  ASSERT_EQ(m->chunk_bytes(), kBig);
  const std::set<std::uint64_t> need = chunk_set(m->needs_sync(), kBig);
  ASSERT_GE(need.size(), 48u);
  for (const std::uint64_t c : need) scribble_secondary(c, kBig);

  // Two writers hammer the chunk being copied while the resync runs.
  const std::vector<std::uint64_t> hot(need.begin(), need.end());
  RacingWriters writers(*m, hot[0]);
  ResyncProgress last;
  const std::error_code ec = m->resync([&](const ResyncProgress& p) {
    last = p;
    writers.aim(hot[std::min<std::uint64_t>(p.chunks_done, hot.size() - 1)]);
  });
  const std::uint64_t writes = writers.stop();
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_FALSE(writers.failed());
  EXPECT_EQ(last.chunks_done, need.size());
  EXPECT_GT(writes, 0u);
  const CompareResult r = compare(kSize);
  EXPECT_TRUE(r.identical) << "first difference at " << r.first_difference << " after " << writes
                           << " racing writes";
  ASSERT_FALSE(m->close());
}

// ------------------------------------------------------------------ failed legs

class DegradedTest : public MirrorTest, public ::testing::WithParamInterface<int> {};

TEST_P(DegradedTest, ReaddCopiesExactlyTheChunksWrittenWhileDegraded) {
  const int failed = GetParam();
  const int good = 1 - failed;
  const fs::path legs[2] = {dir_ / "primary", dir_ / "secondary"};
  constexpr std::uint64_t kSize = 32 << 20;  // 512 chunks
  auto m = open(options(kSize));
  ASSERT_TRUE(m);
  std::mt19937_64 rng(3 + failed);
  // Dirty chunks before the failure: fail_leg must not count them as changed.
  for (int i = 0; i < 50; ++i) {
    ASSERT_FALSE(m->write(rng() % (kSize / 4096 - 16) * 4096, random_bytes(rng, 16 * 4096)));
  }
  ASSERT_GT(m->bitmap()->counts().dirty, 0u);

  m->fail_leg(failed);
  EXPECT_TRUE(m->leg_failed(failed));
  EXPECT_FALSE(m->leg_failed(good));
  EXPECT_TRUE(m->bitmap()->degraded());
  m->fail_leg(good);  // the last working leg is never failed
  EXPECT_FALSE(m->leg_failed(good));

  std::set<std::uint64_t> written;
  std::vector<std::pair<std::uint64_t, std::vector<std::byte>>> last_writes;
  for (int i = 0; i < 40; ++i) {
    const std::uint64_t len = (1 + rng() % 16) * 4096;
    const std::uint64_t off = rng() % ((kSize - len) / 4096) * 4096;
    auto data = random_bytes(rng, len);
    ASSERT_FALSE(m->write(off, data));
    for (std::uint64_t c = off / kChunk; c <= (off + len - 1) / kChunk; ++c) written.insert(c);
    last_writes.emplace_back(off, std::move(data));
  }
  // Reads come from the good leg; the failed one did not get the writes.
  const auto& [w_off, w_data] = last_writes.back();
  std::vector<std::byte> got(w_data.size());
  ASSERT_FALSE(m->read(w_off, got));
  EXPECT_EQ(got, w_data);
  EXPECT_EQ(read_leg(legs[good], w_off, w_data.size()), w_data);
  EXPECT_NE(read_leg(legs[failed], w_off, w_data.size()), w_data);
  EXPECT_FALSE(compare(kSize).identical);
  EXPECT_EQ(chunk_set(m->needs_sync()), written) << "degraded writes give NeedSync";
  EXPECT_TRUE(fs::exists(dir_ / "primary.llmirror-degraded"));

  ResyncProgress last;
  ASSERT_FALSE(m->readd_leg(failed, [&](const ResyncProgress& p) { last = p; }));
  EXPECT_EQ(last.chunks_total, written.size());
  EXPECT_EQ(last.chunks_done, written.size());
  EXPECT_EQ(m->stats().chunks_copied, written.size());
  EXPECT_FALSE(m->leg_failed(failed));
  EXPECT_FALSE(m->bitmap()->degraded());
  EXPECT_TRUE(m->needs_sync().empty());
  EXPECT_FALSE(fs::exists(dir_ / "primary.llmirror-degraded"));
  const CompareResult r = compare(kSize);
  EXPECT_TRUE(r.identical) << "first difference at " << r.first_difference;
  // Both legs take writes again.
  const auto data = random_bytes(rng, 4096);
  ASSERT_FALSE(m->write(0, data));
  EXPECT_EQ(read_leg(legs[failed], 0, 4096), data);
  ASSERT_FALSE(m->close());
}

INSTANTIATE_TEST_SUITE_P(Leg, DegradedTest, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return i.param == 0 ? std::string("Primary") : std::string("Secondary");
                         });

TEST_F(MirrorTest, FailedLegIsRememberedAcrossReopen) {
  constexpr std::uint64_t kSize = 8 << 20;
  std::mt19937_64 rng(4);
  std::set<std::uint64_t> written;
  std::vector<std::byte> data = random_bytes(rng, 3 * kChunk);
  {
    auto m = open(options(kSize));
    ASSERT_TRUE(m);
    m->fail_leg(0);
    ASSERT_FALSE(m->write(5 * kChunk, data));
    ASSERT_FALSE(m->close());
  }
  auto m = open(options(0, Mode::kLlbitmap, false));
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->leg_failed(0));
  EXPECT_TRUE(m->bitmap()->degraded());
  std::vector<std::byte> got(data.size());
  ASSERT_FALSE(m->read(5 * kChunk, got));  // from the secondary
  EXPECT_EQ(got, data);
  // A resync has nothing to copy to while a leg is failed.
  ASSERT_FALSE(m->resync());
  EXPECT_EQ(m->stats().chunks_copied, 0u);
  ResyncProgress last;
  ASSERT_FALSE(m->readd_leg(0, [&](const ResyncProgress& p) { last = p; }));
  EXPECT_EQ(last.chunks_done, 3u);
  EXPECT_TRUE(compare(kSize).identical);
  ASSERT_FALSE(m->close());
  m.reset();  // the old Mirror holds the bitmap file's lock until it is destroyed
  m = open(options(0, Mode::kLlbitmap, false));
  ASSERT_TRUE(m);
  EXPECT_FALSE(m->leg_failed(0));
  EXPECT_TRUE(m->needs_sync().empty());
}

// A leg lost on an IO error is not flushed first: a chunk written just before is Dirty
// when the bitmap goes degraded, stays Dirty when written again while degraded, and no
// daemon pass cleans it. The re-add must copy it (Bitmap::needs_recovery), not only the
// NeedSync chunks (Bitmap::needs_sync), or the leg silently keeps the old data. The
// secondary is a symlink: to /dev/full while the leg fails (every write ENOSPC), to the
// real file when it is re-added.
TEST_F(MirrorTest, ReaddCopiesAChunkThatWasDirtyWhenTheLegFailed) {
  const int probe = ::open("/dev/full", O_RDWR | O_CLOEXEC);
  if (probe < 0) GTEST_SKIP() << "/dev/full is not available";
  ::close(probe);
  constexpr std::uint64_t kSize = 4 << 20;  // 64 chunks
  {
    auto m = open(options(kSize));
    ASSERT_TRUE(m);
    ASSERT_FALSE(m->close());
  }
  const fs::path leg = dir_ / "secondary", real = dir_ / "secondary.real";
  fs::rename(leg, real);
  fs::create_symlink("/dev/full", leg);
  auto m = open(options(0, Mode::kLlbitmap, false));
  ASSERT_TRUE(m);
  std::mt19937_64 rng(8);
  ASSERT_FALSE(m->write(3 * kChunk, random_bytes(rng, 8192))) << "the primary took it";
  ASSERT_TRUE(m->leg_failed(1));
  EXPECT_EQ(m->bitmap()->state(3), ChunkState::kDirty) << "Dirty when the bitmap went degraded";
  ASSERT_FALSE(m->write(3 * kChunk + 4096, random_bytes(rng, 4096)));  // again, degraded
  ASSERT_FALSE(m->write(5 * kChunk, random_bytes(rng, 4096)));
  ASSERT_FALSE(m->bitmap()->flush());  // a daemon pass: nothing is cleaned while degraded
  EXPECT_EQ(m->bitmap()->state(3), ChunkState::kDirty);
  EXPECT_EQ(m->bitmap()->state(5), ChunkState::kNeedSync);
  EXPECT_EQ(chunk_set(m->bitmap()->needs_sync()), (std::set<std::uint64_t>{5}));
  EXPECT_EQ(chunk_set(m->bitmap()->needs_recovery()), (std::set<std::uint64_t>{3, 5}));

  fs::remove(leg);
  fs::create_symlink(real, leg);  // the disk is back
  ResyncProgress last;
  ASSERT_FALSE(m->readd_leg(1, [&](const ResyncProgress& p) { last = p; }));
  EXPECT_EQ(last.chunks_done, 2u);
  EXPECT_FALSE(m->leg_failed(1));
  const CompareResult r = compare(kSize);
  EXPECT_TRUE(r.identical) << "first difference at " << r.first_difference << " (chunk "
                           << r.first_difference / kChunk << ")";
  EXPECT_TRUE(m->needs_sync().empty());
  ASSERT_FALSE(m->bitmap()->flush());  // the copied chunks are Dirty until cleaned
  EXPECT_TRUE(m->bitmap()->needs_recovery().empty());
  ASSERT_FALSE(m->close());
}

// A leg file that is missing at open is created blank; the bitmap says which chunks hold
// data (needs_rebuild: everything not Unwritten), and only those are copied.
TEST_F(MirrorTest, NewBlankLegIsRebuiltFromTheWrittenChunksOnly) {
  constexpr std::uint64_t kSize = 4 << 20;  // 64 chunks
  std::mt19937_64 rng(9);
  {
    auto m = open(options(kSize));
    ASSERT_TRUE(m);
    ASSERT_FALSE(m->write(2 * kChunk + 100, random_bytes(rng, kChunk)));  // chunks 2, 3
    ASSERT_FALSE(m->write(10 * kChunk, random_bytes(rng, 4096)));
    ASSERT_FALSE(m->close());  // everything Clean
  }
  ASSERT_TRUE(fs::remove(dir_ / "secondary"));  // the disk was replaced
  auto m = open(options(0));                    // create: a new blank secondary
  ASSERT_TRUE(m);
  EXPECT_EQ(chunk_set(m->needs_sync()), (std::set<std::uint64_t>{2, 3, 10}))
      << "the written chunks, not the whole device";
  EXPECT_FALSE(compare(kSize).identical);
  ASSERT_FALSE(m->resync());
  EXPECT_EQ(m->stats().chunks_copied, 3u);
  const CompareResult r = compare(kSize);
  EXPECT_TRUE(r.identical) << "first difference at " << r.first_difference;
  ASSERT_FALSE(m->close());
}

// The mirror records its uuid and the bitmap's events next to the primary: a bitmap file
// restored from an older copy is caught at open (out of date: every chunk copied), and
// the re-add repairs the chunks written after the copy, which the copy says nothing of.
TEST_F(MirrorTest, ARestoredOlderBitmapIsCaughtAndTheReaddCopiesEverything) {
  constexpr std::uint64_t kSize = 4 << 20;  // 64 chunks
  std::mt19937_64 rng(10);
  const fs::path backup = dir_ / "bitmap.backup";
  {
    auto m = open(options(kSize));
    ASSERT_TRUE(m);
    ASSERT_FALSE(m->write(1 * kChunk, random_bytes(rng, 4096)));
    fs::copy_file(dir_ / "bitmap", backup);  // the copy, taken while open
    m->fail_leg(1);
    ASSERT_FALSE(m->write(20 * kChunk, random_bytes(rng, 2 * kChunk)));  // 20, 21
    ASSERT_FALSE(m->write(40 * kChunk, random_bytes(rng, 4096)));
    EXPECT_EQ(chunk_set(m->needs_sync()), (std::set<std::uint64_t>{20, 21, 40}));
    ASSERT_FALSE(m->close());
  }
  EXPECT_TRUE(fs::exists(dir_ / "primary.llmirror-id"));
  fs::copy_file(backup, dir_ / "bitmap", fs::copy_options::overwrite_existing);
  auto m = open(options(0, Mode::kLlbitmap, false));
  ASSERT_TRUE(m);
  ASSERT_TRUE(m->leg_failed(1));
  EXPECT_TRUE(m->bitmap()->out_of_date());
  const std::set<std::uint64_t> need = chunk_set(m->bitmap()->needs_recovery());
  for (const std::uint64_t c : {20, 21, 40}) EXPECT_TRUE(need.count(c)) << "chunk " << c;
  ASSERT_FALSE(m->readd_leg(1));
  const CompareResult r = compare(kSize);
  EXPECT_TRUE(r.identical) << "first difference at " << r.first_difference << " (chunk "
                           << r.first_difference / kChunk << ")";
  ASSERT_FALSE(m->close());
  m.reset();
  // The record follows the bitmap: the next open is not out of date.
  m = open(options(0, Mode::kLlbitmap, false));
  ASSERT_TRUE(m);
  EXPECT_FALSE(m->bitmap()->out_of_date());
  EXPECT_TRUE(m->needs_sync().empty());
}

// Two mirrors of the same size: each bitmap is bound to its own mirror's uuid, and a
// bitmap file swapped in from the other mirror is refused, and left as it is.
TEST_F(MirrorTest, AnotherMirrorsBitmapIsRefused) {
  constexpr std::uint64_t kSize = 2 << 20;
  MirrorOptions other = options(kSize);
  other.primary = dir_ / "other-primary";
  other.secondary = dir_ / "other-secondary";
  other.bitmap = dir_ / "other-bitmap";
  for (const MirrorOptions& o : {options(kSize), other}) {
    auto m = open(o);
    ASSERT_TRUE(m);
    ASSERT_FALSE(m->close());
  }
  fs::copy_file(other.bitmap, dir_ / "bitmap", fs::copy_options::overwrite_existing);
  const std::vector<std::byte> before =
      read_leg(dir_ / "bitmap", 0, fs::file_size(dir_ / "bitmap"));
  std::error_code ec;
  EXPECT_FALSE(Mirror::open(options(0, Mode::kLlbitmap, false), ec));
  EXPECT_EQ(ec, Errc::foreign_bitmap) << ec.message();
  EXPECT_EQ(read_leg(dir_ / "bitmap", 0, before.size()), before);
}

TEST_F(MirrorTest, ReaddRacesWritersOnTheChunksItCopies) {
  constexpr std::uint64_t kSize = 64 << 20, kBig = 1 << 20;  // 64 chunks
  auto m = open(options(kSize, Mode::kLlbitmap, true, kBig));
  ASSERT_TRUE(m);
  m->fail_leg(1);
  std::mt19937_64 rng(5);
  ASSERT_FALSE(m->write(0, random_bytes(rng, kSize)));  // every chunk NeedSync
  ASSERT_EQ(m->bitmap()->counts().need_sync, kSize / kBig);

  RacingWriters writers(*m, 0);
  const std::error_code ec =
      m->readd_leg(1, [&](const ResyncProgress& p) { writers.aim(p.chunks_done); });
  const std::uint64_t writes = writers.stop();
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_FALSE(writers.failed());
  EXPECT_GT(writes, 0u);
  EXPECT_FALSE(m->leg_failed(1));
  const CompareResult r = compare(kSize);
  EXPECT_TRUE(r.identical) << "first difference at " << r.first_difference;
  EXPECT_TRUE(m->needs_sync().empty());
  ASSERT_FALSE(m->close());
}

TEST_F(MirrorTest, WriteErrorFailsTheLegAndKeepsTheChunksForTheReadd) {
  // /dev/full: every write fails with ENOSPC, as a dying disk would fail it.
  const int probe = ::open("/dev/full", O_RDWR | O_CLOEXEC);
  if (probe < 0) GTEST_SKIP() << "/dev/full is not available";
  ::close(probe);
  MirrorOptions o = options(1 << 20);
  o.secondary = "/dev/full";
  auto m = open(o);
  ASSERT_TRUE(m);
  // A new primary next to an old secondary: everything needs a copy.
  EXPECT_EQ(chunks_in(m->needs_sync()), (1u << 20) / kChunk);
  std::mt19937_64 rng(6);
  const auto data = random_bytes(rng, 8192);
  ASSERT_FALSE(m->write(4096, data)) << "the primary took the write";
  EXPECT_TRUE(m->leg_failed(1));
  EXPECT_EQ(m->stats().leg_errors, 1u);
  EXPECT_TRUE(m->bitmap()->degraded()) << "nothing may be cleaned now";
  EXPECT_TRUE(fs::exists(dir_ / "primary.llmirror-degraded"));
  std::vector<std::byte> got(data.size());
  ASSERT_FALSE(m->read(4096, got));
  EXPECT_EQ(got, data);
  ASSERT_FALSE(m->write(4096, data, true));  // FUA with one leg
  ASSERT_FALSE(m->close());
}

// ------------------------------------------------------------------ kNone, kClassic

class UncleanTest : public MirrorTest, public ::testing::WithParamInterface<Mode> {};

TEST_P(UncleanTest, UncleanShutdownResyncsEverything) {
  if (kTsan) GTEST_SKIP() << "ThreadSanitizer cannot follow threads in a forked child";
  const Mode mode = GetParam();
  constexpr std::uint64_t kSize = 8 << 20;
  const std::uint64_t chunks = kSize / kChunk;
  std::mt19937_64 rng(7);
  {
    auto m = open(options(kSize, mode));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->bitmap(), nullptr);
    EXPECT_TRUE(m->needs_sync().empty()) << "two new legs agree";
    ASSERT_FALSE(m->write(kChunk, random_bytes(rng, 3 * kChunk)));
    ASSERT_FALSE(m->close());
  }
  EXPECT_TRUE(fs::exists(dir_ / "primary.llmirror-clean"));
  {
    auto m = open(options(0, mode, false));
    ASSERT_TRUE(m);
    EXPECT_EQ(m->size(), kSize);
    EXPECT_TRUE(m->needs_sync().empty()) << "a clean close needs no resync";
    EXPECT_FALSE(fs::exists(dir_ / "primary.llmirror-clean")) << "removed while open";
    ASSERT_FALSE(m->close());
  }
  crash_writer(options(kSize, mode), 2 * kChunk, 4 * kChunk, 500);
  EXPECT_FALSE(fs::exists(dir_ / "primary.llmirror-clean"));

  auto m = open(options(0, mode, false));
  ASSERT_TRUE(m);
  const Runs runs = m->needs_sync();
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0], (std::pair<std::uint64_t, std::uint64_t>(0, kSize)));
  scribble_secondary(chunks - 1);  // far from anything written
  ResyncProgress last;
  ASSERT_FALSE(m->resync([&](const ResyncProgress& p) { last = p; }));
  EXPECT_EQ(last.chunks_total, chunks);
  EXPECT_EQ(last.chunks_done, chunks);
  EXPECT_EQ(last.bytes_copied, kSize);
  EXPECT_TRUE(m->needs_sync().empty());
  EXPECT_TRUE(compare(kSize).identical);
  ASSERT_FALSE(m->close());
  m.reset();  // the old Mirror holds the bitmap file's lock until it is destroyed
  m = open(options(0, mode, false));
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->needs_sync().empty());
}

TEST_P(UncleanTest, FullResyncRacesWriters) {
  const Mode mode = GetParam();
  constexpr std::uint64_t kSize = 64 << 20, kBig = 1 << 20;
  std::mt19937_64 rng(8);
  {
    auto m = open(options(kSize, mode, true, kBig));
    ASSERT_TRUE(m);
    ASSERT_FALSE(m->write(0, random_bytes(rng, kSize)));
    ASSERT_FALSE(m->close());
  }
  // An unclean shutdown without a crash: the clean marker is gone.
  ASSERT_TRUE(fs::remove(dir_ / "primary.llmirror-clean"));
  for (std::uint64_t c = 0; c < kSize / kBig; c += 3) scribble_secondary(c, kBig);
  auto m = open(options(0, mode, false, kBig));
  ASSERT_TRUE(m);
  ASSERT_EQ(m->chunk_bytes(), kBig);
  RacingWriters writers(*m, 0);
  const std::error_code ec =
      m->resync([&](const ResyncProgress& p) { writers.aim(p.chunks_done); });
  const std::uint64_t writes = writers.stop();
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_FALSE(writers.failed());
  EXPECT_GT(writes, 0u);
  const CompareResult r = compare(kSize);
  EXPECT_TRUE(r.identical) << "first difference at " << r.first_difference;
  ASSERT_FALSE(m->close());
}

TEST_P(UncleanTest, ReaddCopiesTheWholeDevice) {
  const Mode mode = GetParam();
  constexpr std::uint64_t kSize = 4 << 20;
  auto m = open(options(kSize, mode));
  ASSERT_TRUE(m);
  m->fail_leg(1);
  EXPECT_TRUE(m->leg_failed(1));
  std::mt19937_64 rng(9);
  ASSERT_FALSE(m->write(kChunk, random_bytes(rng, 4096)));
  ResyncProgress last;
  ASSERT_FALSE(m->readd_leg(1, [&](const ResyncProgress& p) { last = p; }));
  EXPECT_EQ(last.chunks_done, kSize / kChunk) << "no bitmap: everything is copied";
  EXPECT_TRUE(compare(kSize).identical);
}

INSTANTIATE_TEST_SUITE_P(Mode, UncleanTest, ::testing::Values(Mode::kNone, Mode::kClassic),
                         [](const ::testing::TestParamInfo<Mode>& i) {
                           return i.param == Mode::kNone ? std::string("None")
                                                         : std::string("Classic");
                         });

}  // namespace
}  // namespace llbitmap::mirror
