// SPDX-License-Identifier: LGPL-2.1-or-later
//
// main.cc: `llbitmap`, the administration tool: dispatches to the subcommands (create,
// examine), prints the help and the version. (The demonstrations are a separate program,
// examples/demo.) No exception leaves
// main: anything thrown is reported as "llbitmap: ..." with exit status 1.
#include <cstdio>
#include <span>
#include <string_view>

#include "cli.h"

#ifndef LLBITMAP_TOOL_VERSION
#define LLBITMAP_TOOL_VERSION "unknown"
#endif

namespace llbitmap::tool {

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
  return usage_error("unknown command '" + std::string(cmd) + "'");
}

}  // namespace
}  // namespace llbitmap::tool

int main(int argc, char** argv) {
  return llbitmap::tool::guarded_main(llbitmap::tool::run, argc, argv);
}
