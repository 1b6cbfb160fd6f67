#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh), builds the demo program in release mode (CMake
# preset "release", target llbitmap_demo, examples/demo) and runs its crash-and-recover
# demo:
#
#   bash scripts/demo.sh [arguments...]     runs `llbitmap-demo crash [arguments...]`
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
say "building llbitmap_demo (examples/demo)"
cmake --build --preset release --target llbitmap_demo --parallel "$jobs"

demo=$build/examples/demo/llbitmap-demo
if [[ ! -x "$demo" ]]; then
  say "built llbitmap_demo, but found no executable at $demo" >&2
  exit 1
fi

run_dir="$build/demo-run"
rm -rf "$run_dir"
mkdir -p "$run_dir"
cd "$run_dir"
say "running: $demo crash $* (in $run_dir)"
echo
"$demo" crash "$@"
