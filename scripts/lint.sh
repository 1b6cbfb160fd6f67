#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Static checks of the sources (docs/testing.md#static-checks), three of them:
#
#   clang-format   `clang-format --dry-run --Werror` over every tracked .h and .cc file
#                  (the repository's .clang-format)
#   clang-tidy     the repository's .clang-tidy over the library sources (src/) changed
#                  since a base commit (default), or over all of them (--all), with the
#                  compile commands of build/debug (configured if missing). Tests, tools,
#                  examples and benchmarks are not held to it.
#   ShellCheck     `shellcheck` over every tracked *.sh file and .ci/run
#
#   bash scripts/lint.sh [--base REF | --all] [-j N] [--skip CHECK]...
#
# Options: --base REF   clang-tidy checks the library sources that differ between the
#                       working tree and the merge-base of REF and HEAD (default REF:
#                       origin/main if it exists, else main), and those that include a
#                       changed library header. Nothing changed: nothing to check.
#          --all        clang-tidy checks every library source (src/**/*.cc)
#          -j N         parallel clang-tidy processes (default 2, or $LLBITMAP_JOBS)
#          --skip CHECK skip clang-format, clang-tidy or shellcheck (repeatable)
# Every check runs even if an earlier one failed. The output ends with one line per
# check; the exit status is 0 only if every check that ran passed. Needs clang-format and
# clang-tidy (14) and shellcheck: scripts/setup.sh installs them.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2

jobs=${LLBITMAP_JOBS:-2}
base=""
all=0
declare -A skip=()
usage() { awk 'NR > 3 && !/^#/ { exit } NR > 3 { sub(/^# ?/, ""); print }' "$0"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --base)
      [[ $# -ge 2 ]] || { echo "lint.sh: --base needs a git revision" >&2; exit 2; }
      base=$2
      shift
      ;;
    --all) all=1 ;;
    -j | --jobs)
      [[ $# -ge 2 ]] || { echo "lint.sh: $1 needs a number" >&2; exit 2; }
      jobs=$2
      shift
      ;;
    -j*) jobs=${1#-j} ;;
    --skip)
      [[ $# -ge 2 ]] || { echo "lint.sh: --skip needs a check name" >&2; exit 2; }
      case "$2" in
        clang-format | clang-tidy | shellcheck) skip[$2]=1 ;;
        *) echo "lint.sh: --skip wants clang-format, clang-tidy or shellcheck, got '$2'" >&2; exit 2 ;;
      esac
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "lint.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "lint.sh: -j wants a positive number, got '$jobs'" >&2; exit 2; }
if [[ $all -eq 1 && -n "$base" ]]; then
  echo "lint.sh: --all and --base exclude each other" >&2
  exit 2
fi

banner() { printf '\n==== %s ====\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
# The versioned binaries of Debian's clang-14 packages, or the unversioned ones.
tool() {
  if have "$1-14"; then echo "$1-14"; elif have "$1"; then echo "$1"; else return 1; fi
}

declare -A status=() detail=()
checks=(clang-format clang-tidy shellcheck)
failed=0

# Tracked files matching the patterns, NUL-separated.
tracked() { git -C "$root" ls-files -z -- "$@"; }

check_format() {
  local cf
  if ! cf=$(tool clang-format); then
    status[clang-format]=FAIL detail[clang-format]="clang-format is not installed (scripts/setup.sh)"
    return 1
  fi
  local files=()
  mapfile -d '' files < <(tracked '*.h' '*.cc')
  local bad=()
  local f
  for f in "${files[@]}"; do
    if ! "$cf" --dry-run --Werror "$f" >/dev/null 2>&1; then
      bad+=("$f")
      "$cf" --dry-run --Werror "$f" 2>&1 | head -n 20
    fi
  done
  if [[ ${#bad[@]} -gt 0 ]]; then
    status[clang-format]=FAIL
    detail[clang-format]="${#bad[@]} of ${#files[@]} files not formatted: ${bad[*]}"
    return 1
  fi
  status[clang-format]=PASS detail[clang-format]="${#files[@]} files formatted"
}

# The merge-base to diff against: --base REF, else origin/main, else main.
diff_base() {
  local ref=$base
  if [[ -z "$ref" ]]; then
    if git rev-parse -q --verify origin/main >/dev/null; then
      ref=origin/main
    else
      ref=main
    fi
  fi
  git merge-base "$ref" HEAD
}

check_tidy() {
  local ct
  if ! ct=$(tool clang-tidy); then
    status[clang-tidy]=FAIL detail[clang-tidy]="clang-tidy is not installed (scripts/setup.sh)"
    return 1
  fi
  local files=() scope tidy_args=()
  if [[ $all -eq 1 ]]; then
    mapfile -d '' files < <(tracked 'src/*.cc')
    scope="every library source"
  else
    local mb
    if ! mb=$(diff_base 2>/dev/null); then
      status[clang-tidy]=FAIL detail[clang-tidy]="no merge-base with '${base:-main}' (use --base REF or --all)"
      return 1
    fi
    scope="changed since ${mb:0:12}"
    local changed=() f
    mapfile -t changed < <(git diff --name-only --diff-filter=d "$mb" -- 'src/*' 'include/*')
    declare -A pick=()
    for f in "${changed[@]}"; do
      case "$f" in
        src/*.cc) pick[$f]=1 ;;
        *.h)
          # A header is checked through the library sources that include it (the
          # .clang-tidy HeaderFilterRegex reports what is found in it).
          local user name
          name=$(basename "$f")
          while IFS= read -r -d '' user; do pick[$user]=1; done < <(
            git ls-files -z -- 'src/*.cc' |
              xargs -0 grep -lZE "^#include [<\"](.*/)?${name//./\\.}[>\"]" -- 2>/dev/null)
          ;;
      esac
    done
    files=("${!pick[@]}")
    # Report only what is found in the changed files themselves (a source checked for a
    # header it includes keeps its own findings to itself).
    local json="" name
    for name in "${changed[@]}"; do json+="${json:+,}{\"name\":\"$name\"}"; done
    tidy_args=(--line-filter="[$json]")
  fi
  # Only files the debug build compiles have compile commands.
  local db="$root/build/debug/compile_commands.json"
  if [[ ${#files[@]} -gt 0 && ! -f "$db" ]]; then
    echo "lint.sh: configuring build/debug for its compile commands"
    cmake --preset debug >/dev/null || {
      status[clang-tidy]=FAIL detail[clang-tidy]="cmake --preset debug failed"
      return 1
    }
  fi
  local checked=()
  for f in "${files[@]}"; do
    if [[ -f "$db" ]] && grep -qF "\"file\": \"$root/$f\"" "$db"; then checked+=("$f"); fi
  done
  if [[ ${#checked[@]} -eq 0 ]]; then
    status[clang-tidy]=PASS detail[clang-tidy]="no C++ file to check ($scope)"
    return 0
  fi
  # The debug build uses g++: drop the flags clang does not know. And let the analysis see
  # liburcu's called read side, as the TSan build does (LLBM_RCU_CALLED, src/sync/rcu.h):
  # in the inlined one the static analyzer cannot see that urcu_bp_register() sets the
  # reader that liburcu's read lock then dereferences, and reports a null dereference in
  # liburcu's header.
  local tmp
  tmp=$(mktemp -d)
  sed -e 's/ -fno-extern-tls-init//g' "$db" >"$tmp/compile_commands.json"
  tidy_args+=(--extra-arg=-DLLBM_RCU_CALLED=1)
  echo "clang-tidy ($ct, $scope, -j $jobs): ${checked[*]}"
  local rc=0
  printf '%s\0' "${checked[@]}" |
    xargs -0 -n 1 -P "$jobs" "$ct" -p "$tmp" --quiet --config-file="$root/.clang-tidy" \
      "${tidy_args[@]}" || rc=$?
  rm -rf "$tmp"
  if [[ $rc -ne 0 ]]; then
    status[clang-tidy]=FAIL detail[clang-tidy]="findings in ${#checked[@]} file(s) checked ($scope)"
    return 1
  fi
  status[clang-tidy]=PASS detail[clang-tidy]="${#checked[@]} file(s) clean ($scope)"
}

check_shell() {
  if ! have shellcheck; then
    status[shellcheck]=FAIL detail[shellcheck]="shellcheck is not installed (scripts/setup.sh)"
    return 1
  fi
  local files=()
  mapfile -d '' files < <(tracked '*.sh' .ci/run)
  local bad=() f
  # -x: follow the files a script sources (its `# shellcheck source=` directives).
  for f in "${files[@]}"; do shellcheck -x "$f" || bad+=("$f"); done
  if [[ ${#bad[@]} -gt 0 ]]; then
    status[shellcheck]=FAIL
    detail[shellcheck]="findings in ${#bad[@]} of ${#files[@]} scripts: ${bad[*]}"
    return 1
  fi
  status[shellcheck]=PASS detail[shellcheck]="${#files[@]} scripts clean"
}

for c in "${checks[@]}"; do
  if [[ -n "${skip[$c]:-}" ]]; then
    status[$c]=SKIP detail[$c]="--skip"
    continue
  fi
  banner "$c"
  case "$c" in
    clang-format) check_format || failed=$((failed + 1)) ;;
    clang-tidy) check_tidy || failed=$((failed + 1)) ;;
    shellcheck) check_shell || failed=$((failed + 1)) ;;
  esac
done

banner "lint summary"
for c in "${checks[@]}"; do
  printf '  %-12s %-4s  %s\n' "$c" "${status[$c]}" "${detail[$c]}"
done
if [[ $failed -eq 0 ]]; then
  echo "lint: PASS"
else
  echo "lint: FAIL ($failed check(s) failed)"
fi
[[ $failed -eq 0 ]]
