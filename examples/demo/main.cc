// SPDX-License-Identifier: LGPL-2.1-or-later
//
// main.cc: `llbitmap-demo`, the demonstrations (not installed): `crash` crashes and
// recovers a RAID-1 mirror (crash_demo.cc; what scripts/demo.sh runs), `barrier` runs
// writers against the page barriers' daemon (barrier_demo.cc). No exception leaves main.
#include <cstdio>
#include <span>
#include <string>
#include <string_view>

#include "cli.h"

namespace llbitmap::tool {

int cmd_demo(std::span<char* const> args);
int cmd_barrier_demo(std::span<char* const> args);

namespace {

constexpr const char* kUsage = R"(Usage: llbitmap-demo COMMAND [ARGS]

Commands:
  crash [--size BYTES] [--seconds S] [--seed N] [--keep] [--dir DIR]
      Crash and recover a RAID-1 mirror of two sparse files (default 1G each) with
      a write-intent bitmap: writer threads in a child process are killed with
      SIGKILL at a random moment between S/3 and S seconds (default 3), the mirror
      is reopened and resynced, a leg is failed and re-added; prints the chunks
      and bytes resynced against a full copy of the device and checks that the
      legs are identical (exit status 1 if not). Runs in a new directory under
      --dir (default $TMPDIR or /tmp), removed at the end unless --keep.

  barrier [--threads N] [--pages P] [--seconds S] [--idle MS]
      Writer threads raise and release page barriers while a daemon thread
      suspends and resumes the idle pages; prints progress once per second and a
      summary. Defaults: 2 threads, 8 pages, 5 s, idle 20 ms.

  help, --help, -h     Show this help.

Sizes take an optional binary unit: 4096, 64K, 1M, 1G, 2T (K = 1024).
Exit status: 0 success, 1 the demonstration failed, 2 bad command line.
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
  if (cmd == "crash") return cmd_demo(rest);
  if (cmd == "barrier") return cmd_barrier_demo(rest);
  return usage_error("unknown command '" + std::string(cmd) + "'");
}

}  // namespace
}  // namespace llbitmap::tool

int main(int argc, char** argv) {
  llbitmap::tool::g_program = "llbitmap-demo";
  return llbitmap::tool::guarded_main(llbitmap::tool::run, argc, argv);
}
