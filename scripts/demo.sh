#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh), builds the `llbitmap` command-line tool in release
# mode (CMake preset "release", target llbitmap_tool) and runs its crash-and-recover demo:
#
#   bash scripts/demo.sh [demo arguments...]     runs `llbitmap demo [demo arguments...]`
#
# The demo runs in build/release/demo-run/ (recreated each time), so any files it writes
# stay out of the source tree. Set LLBITMAP_JOBS to change the build's parallelism (2).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=${LLBITMAP_JOBS:-2}
build="$root/build/release"

say() { echo "demo: $*"; }

bash "$root/scripts/setup.sh"

say "configuring (preset release)"
cmake --preset release >/dev/null
# CMake creates <target>.dir for every target it generates, whatever the generator.
if [[ ! -d "$build/tools/CMakeFiles/llbitmap_tool.dir" ]]; then
  say "this tree has no llbitmap_tool target yet (tools/CMakeLists.txt): nothing to demo" >&2
  exit 1
fi
say "building llbitmap_tool"
cmake --build --preset release --target llbitmap_tool --parallel "$jobs"

tool=$(find "$build/tools" -type f -name llbitmap -perm -u+x -print -quit)
if [[ -z "$tool" ]]; then
  say "built llbitmap_tool, but found no 'llbitmap' executable under $build/tools" >&2
  exit 1
fi

run_dir="$build/demo-run"
rm -rf "$run_dir"
mkdir -p "$run_dir"
cd "$run_dir"
say "running: $tool demo $* (in $run_dir)"
echo
"$tool" demo "$@"
