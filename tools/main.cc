// SPDX-License-Identifier: LGPL-2.1-or-later
//
// main.cc: the `llbitmap` command-line tool: dispatches to the subcommands (create,
// examine, barrier-demo, demo), prints the help and the version. No exception leaves
// main: anything thrown is reported as "llbitmap: ..." with exit status 1.
#include <cstdio>
#include <exception>
#include <new>
#include <span>
#include <string_view>

#include "cli.h"

#ifndef LLBITMAP_TOOL_VERSION
#define LLBITMAP_TOOL_VERSION "unknown"
#endif

namespace llbitmap::tool {

// cmd_demo.cc (built on the mirror example, examples/mirror).
int cmd_demo(std::span<char* const> args);

namespace {

constexpr const char* kUsage = R"(Usage: llbitmap COMMAND [ARGS]

Commands:
  create FILE --size BYTES [--chunk BYTES] [--space BYTES] [--block BYTES]
         [--daemon-sleep MS] [--barrier-idle MS] [--assume-clean]
      Create a new bitmap file for a device of --size bytes (the file must not
      exist) and print its geometry. --chunk 0 or no --chunk: automatic (64 KiB,
      doubled until the chunks fit in --space, default 128K). --block: 512, 1024,
      2048 or 4096 (default). --daemon-sleep (default 30000) and --barrier-idle
      (default 5000): 1 ms .. 24 h. --assume-clean: chunks start Clean, not Unwritten.

  examine FILE [--json] [--all]
      Print the superblock, the chunk states as stored, the blocks whose checksum
      fails, and what a reopen would resynchronise (as byte ranges of the device).
      Read-only: the file is never modified. --json: one JSON object.
      --all: list every range and block (default: the first 20).

  barrier-demo [--threads N] [--pages P] [--seconds S] [--idle MS]
      Writer threads raise and release page barriers while a daemon thread
      suspends and resumes the idle pages; prints progress once per second and a
      summary. Defaults: 2 threads, 8 pages, 5 s, idle 20 ms.

  demo [--size BYTES] [--seconds S] [--seed N] [--keep] [--dir DIR]
      Crash and recover a RAID-1 mirror of two sparse files (default 1G each) with
      a write-intent bitmap: writer threads in a child process are killed with
      SIGKILL at a random moment between S/3 and S seconds (default 3), the mirror
      is reopened and resynced, a leg is failed and re-added; prints the chunks
      and bytes resynced against a full copy of the device and checks that the
      legs are identical (exit status 1 if not). Runs in a new directory under
      --dir (default $TMPDIR or /tmp), removed at the end unless --keep.

  help, --help, -h     Show this help.
  --version            Show the version.

Sizes take an optional binary unit: 4096, 64K, 1M, 1G, 2T (K = 1024).
Exit status: 0 success, 1 the operation failed, 2 bad command line.
)";

int run(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return kExitUsage;
  }
  const std::string_view cmd = argv[1];
  const std::span<char* const> rest(argv + 2, static_cast<std::size_t>(argc - 2));
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (cmd == "--version" || cmd == "version") {
    std::printf("llbitmap %s\n", LLBITMAP_TOOL_VERSION);
    return kExitOk;
  }
  if (cmd == "create") return cmd_create(rest);
  if (cmd == "examine") return cmd_examine(rest);
  if (cmd == "barrier-demo") return cmd_barrier_demo(rest);
  if (cmd == "demo") return cmd_demo(rest);
  return usage_error("unknown command '" + std::string(cmd) + "'");
}

}  // namespace
}  // namespace llbitmap::tool

int main(int argc, char** argv) {
  try {
    const int rc = llbitmap::tool::run(argc, argv);
    if (std::fflush(stdout) != 0) {
      std::fputs("llbitmap: error writing the output\n", stderr);
      return llbitmap::tool::kExitError;
    }
    return rc;
  } catch (const std::bad_alloc&) {
    std::fputs("llbitmap: out of memory\n", stderr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llbitmap: %s\n", e.what());
  } catch (...) {
    std::fputs("llbitmap: unexpected error\n", stderr);
  }
  return llbitmap::tool::kExitError;
}
