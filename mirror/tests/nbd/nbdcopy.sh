#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# nbdcopy.sh: the plugin under nbdcopy (libnbd's parallel copier: several connections,
# large requests, a flush at the end).
#
#   1. A 48 MiB image of random data is copied into a new 48 MiB mirror; nbdkit is killed
#      with SIGKILL right after the copy, and the secondary is overwritten with random
#      bytes wherever the bitmap says a reopen must resync (as in kill_resync.sh); the
#      restart resyncs; the image is copied back
#      out and compared (cmp) with the original, and after a clean stop both legs are
#      compared with the image.
#   2. A second image is copied in while nbdkit is killed under the copy (after 0.3 s;
#      the copy may or may not have finished); after the restart the copy is redone
#      completely, and the legs must equal the second image.
#
# Usage: nbdcopy.sh PLUGIN TOOL
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

size=$((48 << 20))
p=$work/p s=$work/s b=$work/b
files=(primary="$p" secondary="$s" bitmap="$b")
head -c $size /dev/urandom >"$work/image1"
head -c $size /dev/urandom >"$work/image2"

step "copy image1 in, SIGKILL nbdkit at once"
nbd_start "${files[@]}" size=48M
timeout 60 nbdcopy "$work/image1" "$uri"
nbd_crash
read -r chunks bytes < <(examine_resync "$b")
echo "bitmap after the kill: $chunks chunks ($bytes bytes) to resync"
((chunks > 0)) || fail "nothing to resync right after the copy: the bitmap lost its Dirty chunks"
# What a write that reached the primary only would leave behind (see kill_resync.sh).
nranges=$(scribble_resync_ranges "$b" "$s")
echo "damaged the secondary in $nranges ranges"

step "restart, copy out, compare"
nbd_start "${files[@]}"
cat "$log"
timeout 60 nbdcopy "$uri" "$work/out1"
cmp "$work/image1" "$work/out1" || fail "the copy read back differs from image1"
nbd_stop
cmp "$work/image1" "$p" || fail "the primary differs from image1"
cmp "$work/image1" "$s" || fail "the secondary differs from image1"

step "copy image2 in, SIGKILL nbdkit under the copy"
nbd_start "${files[@]}"
timeout 60 nbdcopy "$work/image2" "$uri" 2>"$work/nbdcopy.err" &
copy_pid=$!
sleep 0.3
nbd_crash
wait "$copy_pid" || echo "(nbdcopy failed under the kill, as expected)"
read -r chunks bytes < <(examine_resync "$b")
echo "bitmap after the kill: $chunks chunks ($bytes bytes) to resync"

step "restart, copy image2 in again, compare the legs"
nbd_start "${files[@]}"
cat "$log"
timeout 60 nbdcopy "$work/image2" "$uri"
nbd_stop
cmp "$work/image2" "$p" || fail "the primary differs from image2"
cmp "$work/image2" "$s" || fail "the secondary differs from image2"
echo "PASS"
