#!/bin/sh
# A changer script in the Bareos/Bacula interface, for the tests (written for
# strongroom in the spirit of Bareos's disk-changer and file-autochanger):
#
#   file_changer.sh CTRL-DEVICE COMMAND SLOT ARCHIVE-DEVICE DRIVE
#
# CTRL-DEVICE is a folder holding `inventory` (the robot's state, in listall
# format: D:0:E, D:0:F:2:VOL, S:1:F:VOL, S:1:E, I:7:E) and `moves` (the count
# of cartridges moved, so tests can assert that listall moved nothing).
# Optionally, as Bareos's disk-changer: `slotN` files are the cartridges'
# files by slot; load points ARCHIVE-DEVICE at the slot's file (a symlink),
# unload removes the link (and moves the file when the slot changes).
# Slots from 1, drives from 0, transfer's destination in ARCHIVE-DEVICE's
# place; a refused move prints its reason on stderr and exits 1.
set -u
ctl=$1 cmd=$2 slot=${3:-0} archive=${4:-} drive=${5:-0}
inv="$ctl/inventory"

fail() { echo "$*" >&2; exit 1; }
slot_state() {  # F, E or nothing for a slot that does not exist
  awk -F: -v s="$1" '($1=="S"||$1=="I") && $2==s {print $3}' "$inv"
}
slot_vol() { awk -F: -v s="$1" '($1=="S"||$1=="I") && $2==s {print $4}' "$inv"; }
drive_field() { awk -F: -v d="$1" -v f="$2" '$1=="D" && $2==d {print $f}' "$inv"; }
rewrite() { awk -F: -v OFS=: "$@" "$inv" >"$inv.tmp" && mv "$inv.tmp" "$inv"; }
moved() { echo $(( $(cat "$ctl/moves" 2>/dev/null || echo 0) + 1 )) >"$ctl/moves"; }

case "$cmd" in
listall) cat "$inv" ;;
list)
  awk -F: '($1=="S"||$1=="I") && $3=="F" {print $2":"$4}
           $1=="D" && $3=="F" {print $4":"$5}' "$inv" ;;
slots) grep -c '^[SI]:' "$inv" ;;
loaded)
  state=$(drive_field "$drive" 3)
  [ -n "$state" ] || fail "drive $drive does not exist"
  if [ "$state" = F ]; then drive_field "$drive" 4; else echo 0; fi ;;
load)
  state=$(slot_state "$slot")
  [ -n "$state" ] || fail "slot $slot does not exist"
  [ "$state" = F ] || fail "slot $slot is empty"
  dstate=$(drive_field "$drive" 3)
  [ -n "$dstate" ] || fail "drive $drive does not exist"
  [ "$dstate" = E ] || fail "drive $drive is already loaded"
  vol=$(slot_vol "$slot")
  rewrite -v s="$slot" -v d="$drive" -v v="$vol" \
    '($1=="S"||$1=="I") && $2==s {print $1,$2,"E"; next}
     $1=="D" && $2==d {print "D",d,"F",s,v; next} {print}'
  if [ -n "$archive" ] && [ -e "$ctl/slot$slot" ]; then
    if [ -L "$archive" ]; then rm -f "$archive"; fi; ln -s "$ctl/slot$slot" "$archive"
  fi
  moved ;;
unload)
  dstate=$(drive_field "$drive" 3)
  [ -n "$dstate" ] || fail "drive $drive does not exist"
  [ "$dstate" = F ] || fail "drive $drive is empty"
  state=$(slot_state "$slot")
  [ -n "$state" ] || fail "slot $slot does not exist"
  [ "$state" = E ] || fail "slot $slot is already occupied"
  vol=$(drive_field "$drive" 5)
  from=$(drive_field "$drive" 4)
  if [ -e "$ctl/slot$from" ] && [ "$from" != "$slot" ]; then
    mv "$ctl/slot$from" "$ctl/slot$slot"
  fi
  if [ -L "$archive" ]; then rm -f "$archive"; fi
  rewrite -v s="$slot" -v d="$drive" -v v="$vol" \
    '($1=="S"||$1=="I") && $2==s {print $1,$2,"F",v; next}
     $1=="D" && $2==d {print "D",d,"E"; next} {print}'
  moved ;;
transfer)
  dest=$archive
  state=$(slot_state "$slot")
  [ -n "$state" ] || fail "slot $slot does not exist"
  [ "$state" = F ] || fail "slot $slot is empty"
  dstate=$(slot_state "$dest")
  [ -n "$dstate" ] || fail "slot $dest does not exist"
  [ "$dstate" = E ] || fail "slot $dest is already occupied"
  vol=$(slot_vol "$slot")
  [ ! -e "$ctl/slot$slot" ] || mv "$ctl/slot$slot" "$ctl/slot$dest"
  rewrite -v s="$slot" -v t="$dest" -v v="$vol" \
    '($1=="S"||$1=="I") && $2==s {print $1,$2,"E"; next}
     ($1=="S"||$1=="I") && $2==t {print $1,$2,"F",v; next} {print}'
  moved ;;
*) fail "unknown command $cmd" ;;
esac
