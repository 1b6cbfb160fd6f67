#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bad_params.sh: every bad plugin parameter makes nbdkit exit non-zero with the plugin's
# own message, and a good command line (the control) starts and serves. Each case runs
# `nbdkit -U SOCK PLUGIN ... --run true` (foreground; exits when `true` does) under a
# 30 s timeout.
#
# Usage: bad_params.sh PLUGIN TOOL
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

# expect_error MESSAGE PARAM...: nbdkit must fail and print MESSAGE (a fixed string).
expect_error() {
  local msg=$1 rc=0 out
  shift
  rm -f "$sock"
  out=$(timeout 30 nbdkit -U "$sock" "$PLUGIN" "$@" --run true 2>&1) || rc=$?
  if [[ $rc -eq 0 ]]; then
    fail "nbdkit accepted: $* (expected: $msg)"
  fi
  if [[ $rc -eq 124 ]]; then
    fail "nbdkit hung with: $*"
  fi
  if ! grep -qF -- "$msg" <<<"$out"; then
    echo "$out" >&2
    fail "nbdkit failed without the message '$msg' for: $*"
  fi
  echo "ok: exit $rc, '$msg'   <- $*"
}

d=$work
step "missing or bad parameters"
expect_error "primary= is required" secondary="$d/s" bitmap="$d/b" size=1M
expect_error "secondary= is required" primary="$d/p" bitmap="$d/b" size=1M
expect_error "bitmap= is required with mode=llbitmap" primary="$d/p" secondary="$d/s" size=1M
expect_error "unknown mode=raid5" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=1M mode=raid5
expect_error "size=12Q: not a size" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=12Q
expect_error "size=-1: not a size" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=-1
expect_error "size=0: not a size" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=0
expect_error "size= is required to create a new mirror" primary="$d/p" secondary="$d/s" bitmap="$d/b"
expect_error "chunk=3000: the chunk size must be a power of two" \
  primary="$d/p" secondary="$d/s" bitmap="$d/b" size=1M chunk=3000
expect_error "unknown resync=later" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=1M resync=later
expect_error "unknown fail=sideways" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=1M fail=sideways
expect_error "fail= needs an existing mirror" \
  primary="$d/p" secondary="$d/s" bitmap="$d/b" size=1M fail=secondary
expect_error "unknown parameter 'colour'" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=1M colour=red
expect_error "name the same file" primary="$d/p" secondary="$d/p" bitmap="$d/b" size=1M
# The same file spelled differently, before it exists (compared by path once the
# directories are resolved) ...
dd=$d/../$(basename "$d")
expect_error "name the same file" primary="$d/p" secondary="$d/./p" bitmap="$d/b" size=1M
expect_error "name the same file" primary="$d/p" secondary="$dd/p" bitmap="$d/b" size=1M
expect_error "the bitmap needs a file of its own" \
  primary="$d/p" secondary="$d/s" bitmap="$d/./s" size=1M
[[ ! -e $d/p && ! -e $d/s && ! -e $d/b ]] || fail "a refused command line created files"

step "control: a good command line creates the mirror and serves"
rm -f "$sock"
# shellcheck disable=SC2016  # $uri is nbdkit's, expanded by the --run shell
timeout 30 nbdkit -U "$sock" "$PLUGIN" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=1M \
  --run 'nbdinfo --size "$uri"' >"$d/control.out" 2>&1 || {
  cat "$d/control.out" >&2
  fail "the control command line failed"
}
grep -qx 1048576 "$d/control.out" || fail "the control served the wrong size: $(cat "$d/control.out")"
[[ -e $d/p && -e $d/s && -e $d/b ]] || fail "the control did not create the files"

step "one file named twice: refused by device and inode, whatever the spelling"
ln -s p "$d/p-symlink"
ln "$d/p" "$d/p-hardlink"
ln -s "$d" "$d/dir-symlink"
sums_before=$(sha256sum "$d/p" "$d/s" "$d/b")
for spelling in "$d/./p" "$dd/p" "$d/p-symlink" "$d/p-hardlink" "$d/dir-symlink/p"; do
  expect_error "name the same file (the same device and inode)" \
    primary="$d/p" secondary="$spelling" bitmap="$d/b"
  expect_error "name the same file (the same device and inode)" \
    primary="$spelling" secondary="$d/p" bitmap="$d/b"
done
# The bitmap may not be one of the legs either.
for spelling in "$d/./p" "$dd/s" "$d/p-symlink" "$d/p-hardlink"; do
  expect_error "the bitmap needs a file of its own" primary="$d/p" secondary="$d/s" bitmap="$spelling"
done
# With mode=none the bitmap is unused, so it is not checked.
expect_error "name the same file" primary="$d/p" secondary="$d/p-hardlink" mode=none
[[ $(sha256sum "$d/p" "$d/s" "$d/b") == "$sums_before" ]] || fail "a refused command line changed a file"
rm -f "$d/p-symlink" "$d/p-hardlink" "$d/dir-symlink"

step "bad files"
expect_error "missing files" primary="$d/p" secondary="$d/s" bitmap="$d/other-bitmap"
expect_error "missing files" primary="$d/p" secondary="$d/new-secondary" bitmap="$d/b"
expect_error "does not match the bitmap" primary="$d/p" secondary="$d/s" bitmap="$d/b" size=2M
head -c 65536 /dev/urandom >"$d/garbage"
expect_error "not an llbitmap file" primary="$d/p" secondary="$d/s" bitmap="$d/garbage"
# A bitmap whose superblock checksum fails: flip one byte of a real one.
cp "$d/b" "$d/corrupt"
printf '\xff' | dd of="$d/corrupt" bs=1 seek=100 conv=notrunc status=none
expect_error "corrupt bitmap superblock" primary="$d/p" secondary="$d/s" bitmap="$d/corrupt"
cmp -s "$d/b" "$d/corrupt" && fail "the corrupt copy equals the original"
echo "PASS"
