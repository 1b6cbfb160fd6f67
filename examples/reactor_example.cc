// SPDX-License-Identifier: LGPL-2.1-or-later
//
// reactor_example.cc: how an event-loop engine uses llbitmap's reactor API (reactor.h; the
// README's example). One loop does everything: it admits writes without waiting, issues
// the bitmap's metadata IO itself, runs the cleaning pass as a step, and closes.
//
// The engine's "asynchronous IO" here is a list of submitted requests that the loop
// performs (pwrite, fdatasync) one turn later and completes in reverse order, as an
// io_uring or SPDK engine gets its completions back later and in any order. The library
// itself never calls pwrite, pread or fdatasync and never blocks.
// Run: reactor_example DIR (creates DIR/data and DIR/bitmap).
#include <llbitmap/reactor.h>

#include <cstdio>
#include <deque>
#include <filesystem>
#include <random>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace {

// One submitted request: a data write of the engine, or a metadata IO of the bitmap.
struct Submitted {
  bool meta = false;
  llbitmap::MetaIo io;            // meta
  std::uint64_t offset = 0;       // data: where (4 KiB)
  llbitmap::ReactorWrite* write;  // data: the write it belongs to
};

struct Engine {
  int data_fd = -1, bitmap_fd = -1;
  llbitmap::ReactorBitmap* bitmap = nullptr;
  std::vector<Submitted> submitted;  // performed on the next turn
  std::uint64_t done = 0;
  std::vector<char> block = std::vector<char>(4096, 'x');

  std::error_code perform_meta(const llbitmap::MetaIo& io) const {
    using Kind = llbitmap::MetaIo::Kind;
    int rc = 0;
    if (io.kind == Kind::kWrite)
      rc = ::pwrite(bitmap_fd, io.bytes.data(), io.bytes.size(), static_cast<off_t>(io.offset)) ==
                   static_cast<ssize_t>(io.bytes.size())
               ? 0
               : -1;
    else if (io.kind == Kind::kSync)
      rc = ::fdatasync(bitmap_fd);
    else  // kDataFlush: make every ended data write durable before Clean is written
      rc = ::fdatasync(data_fd);
    return rc == 0 ? std::error_code() : std::error_code(errno, std::generic_category());
  }

  // One turn of the event loop.
  void turn(llbitmap::ReactorQueue& q) {
    std::vector<Submitted> now;
    now.swap(submitted);
    for (auto it = now.rbegin(); it != now.rend(); ++it) {  // completions in any order
      if (it->meta) {
        bitmap->complete(it->io.id, perform_meta(it->io));
      } else {
        if (::pwrite(data_fd, block.data(), block.size(), static_cast<off_t>(it->offset)) != 4096)
          std::perror("pwrite");
        bitmap->end_write(it->offset, 4096);  // durable after the pass's kDataFlush
        ++done;
      }
    }
    q.poll();  // callbacks of writes admitted meanwhile
    llbitmap::MetaIo io;
    while (bitmap->next_io(io)) submitted.push_back(Submitted{true, io, 0, nullptr});
    bitmap->step();  // the cleaning pass, as far as it goes without waiting
  }
};

Engine* g_engine = nullptr;

// A write that had to wait: admitted (or refused) later, from ReactorQueue::poll().
void on_admit(llbitmap::ReactorWrite& w, std::error_code ec) {
  if (ec) {
    std::fprintf(stderr, "write at %llu refused: %s\n", static_cast<unsigned long long>(w.offset()),
                 ec.message().c_str());
    return;
  }
  g_engine->submitted.push_back(Submitted{false, {}, w.offset(), &w});
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
  const std::uint64_t device_bytes = 64ull << 20;
  Engine engine;
  g_engine = &engine;
  engine.data_fd = ::open((dir / "data").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  engine.bitmap_fd = ::open((dir / "bitmap").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (engine.data_fd < 0 || engine.bitmap_fd < 0 ||
      ::ftruncate(engine.data_fd, static_cast<off_t>(device_bytes)) != 0)
    return 1;

  // 1. A new bitmap file: the library gives the bytes, the engine writes them (at startup,
  // before the loop runs; `llbitmap create` does the same from the shell).
  llbitmap::BitmapOptions opt;
  opt.device_bytes = device_bytes;
  opt.chunk_bytes = 1 << 20;
  opt.daemon_sleep = std::chrono::milliseconds(20);
  opt.barrier_idle = std::chrono::milliseconds(10);
  std::error_code ec;
  std::vector<std::byte> file = llbitmap::ReactorBitmap::format(opt, ec);
  if (ec ||
      ::pwrite(engine.bitmap_fd, file.data(), file.size(), 0) !=
          static_cast<ssize_t>(file.size()) ||
      ::fdatasync(engine.bitmap_fd) != 0)
    return 1;

  // 2. Open from the bytes the engine read (here: the same bytes). Writes are pending
  // until the recovered states are durable, which the loop's first turns do.
  llbitmap::ReactorOptions ro;
  ro.data_flush = true;  // end_write right after the data write; kDataFlush before Clean
  auto bitmap = llbitmap::ReactorBitmap::open(file, ro, ec);
  if (!bitmap) return 1;
  engine.bitmap = bitmap.get();
  std::uint64_t ready = 0, pending = 0;
  {
    llbitmap::ReactorQueue q(*bitmap);  // one per reactor thread

    // 3. The loop: 256 writes of 4 KiB, 8 in flight, over 16 chunks; nothing waits.
    std::mt19937_64 rng(7);
    std::deque<llbitmap::ReactorWrite> writes;  // in place until their callbacks ran
    std::uint64_t issued = 0;
    while (engine.done < 256) {
      while (issued < 256 && issued - engine.done < 8) {
        const std::uint64_t off = (rng() % 16) * (1 << 20) + (rng() % 256) * 4096;
        llbitmap::ReactorWrite& w = writes.emplace_back(on_admit);
        ++issued;
        switch (q.start_write(off, 4096, w, ec)) {
          case llbitmap::Admit::kReady:  // durably Dirty already: issue the data write
            engine.submitted.push_back(Submitted{false, {}, off, &w});
            ++ready;
            break;
          case llbitmap::Admit::kPending:  // on_admit runs from q.poll()
            ++pending;
            break;
          case llbitmap::Admit::kRefused:
            std::fprintf(stderr, "refused: %s\n", ec.message().c_str());
            return 1;
        }
      }
      engine.turn(q);
    }

    // 4. Close: the cleaning pass drains, flushes the data, persists Clean, moves events.
    bitmap->begin_close();
    while (bitmap->close_state(ec) != llbitmap::ReactorBitmap::CloseState::kClosed) engine.turn(q);
    if (ec) {
      std::fprintf(stderr, "close: %s\n", ec.message().c_str());
      return 1;
    }
  }
  const llbitmap::ReactorStats st = bitmap->stats();
  bitmap.reset();

  // 5. A reopen after the clean close needs no resync.
  std::vector<std::byte> again(file.size());
  if (::pread(engine.bitmap_fd, again.data(), again.size(), 0) !=
      static_cast<ssize_t>(again.size()))
    return 1;
  auto reopened = llbitmap::ReactorBitmap::open(again, ro, ec);
  if (!reopened) return 1;
  const std::size_t runs = reopened->needs_sync().size();
  std::printf(
      "256 writes: %llu admitted at once, %llu after a persist; %llu rounds, %llu passes; "
      "after close, %zu runs need a resync\n",
      static_cast<unsigned long long>(ready), static_cast<unsigned long long>(pending),
      static_cast<unsigned long long>(st.persist_rounds),
      static_cast<unsigned long long>(st.daemon_passes), runs);
  // Nothing outstanding on the reopened bitmap: its recovery round was never asked for.
  return runs == 0 && pending > 0 && ready > 0 ? 0 : 1;
}
