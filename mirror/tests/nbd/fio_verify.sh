#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# fio_verify.sh: data integrity through nbdkit-llmirror-plugin.so with fio's nbd engine.
# In each mode (llbitmap, none, classic): a new 32 MiB mirror; fio writes random 4 KiB
# blocks with crc32c verify headers from two jobs on disjoint halves (write phase);
# nbdkit is stopped cleanly and restarted on the same files; fio re-reads and checks every
# block (verify phase, verify_only); then, restarted behind nbdkit's fua filter
# (fuamode=force: every write and trim carries FUA), a trim of 1 MiB and verified writes
# next to it; after each clean stop both legs must be byte-for-byte identical (cmp) and
# the trimmed range reads as zeroes.
#
# Usage: fio_verify.sh PLUGIN TOOL
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

size=$((32 << 20))
half=$((size / 2))
for mode in llbitmap none classic; do
  p=$work/$mode.primary s=$work/$mode.secondary b=$work/$mode.bitmap
  files=(primary="$p" secondary="$s" bitmap="$b" mode="$mode")

  step "$mode: write phase (randwrite, verify=crc32c headers, 2 jobs)"
  nbd_start "${files[@]}" size=32M
  fio_job=(rw=randwrite bs=4k iodepth=16 numjobs=2 "size=$half" "offset_increment=$half"
           verify=crc32c do_verify=0 randrepeat=1)
  run_fio "${fio_job[@]}"
  nbd_stop
  cmp "$p" "$s" || fail "$mode: legs differ after a clean stop"

  step "$mode: verify phase (after a clean restart on the same files)"
  nbd_start "${files[@]}"
  grep -q 'resync: nothing to copy' "$log" || fail "$mode: a clean restart wanted a resync: $(cat "$log")"
  run_fio "${fio_job[@]}" verify_only=1
  grep -q 'verify: bad\|crc32c: verify failed' "$work/fio.out" && fail "$mode: fio verify errors"

  nbd_stop

  step "$mode: trim 1 MiB and write 256 KiB, all with FUA (fua filter, fuamode=force)"
  nbd_filters=(--filter=fua)
  nbd_start "${files[@]}" fuamode=force
  nbd_filters=()
  run_fio rw=trim bs=64k offset=0 size=1M
  run_fio rw=write bs=4k offset=1M size=256k verify=crc32c do_verify=1
  run_fio rw=randread bs=4k iodepth=16 numjobs=1 offset=$half size=$half
  nbd_stop
  cmp "$p" "$s" || fail "$mode: legs differ after trim and FUA writes"
  # The trimmed range reads back as zeroes from both legs.
  cmp -n $((1 << 20)) "$p" /dev/zero || fail "$mode: the trimmed range is not zero"
done
echo "PASS"
