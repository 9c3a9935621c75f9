#!/usr/bin/env bash
# Create the veth pair that stands in for the guide's LAN (idempotent):
#   PARENT (default labnet0): the macvlan parent for instances' LAN NICs;
#   PEER   (default labnet1): the LAN side, later enslaved to an LXD bridge by LXD
#                             itself (bridge.external_interfaces), so not touched here.
# Usage: lan-up.sh [PARENT [PEER]]   (or env LAN_PARENT / LAN_PEER)
set -euo pipefail

PARENT=${1:-${LAN_PARENT:-labnet0}}
PEER=${2:-${LAN_PEER:-labnet1}}
say() { printf 'lan-up: %s\n' "$*"; }
die() { printf 'lan-up: ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
# Never touch the host's real interfaces.
for n in "$PARENT" "$PEER"; do
  case $n in eth*|en*|lo|wl*) die "refusing to use host interface name '$n'" ;; esac
done
[ "$PARENT" != "$PEER" ] || die "parent and peer must differ"

if command -v ip >/dev/null; then
  say "iproute2 present: install skipped"
else
  say "installing iproute2 (apt)"
  apt-get update -q >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 >/dev/null \
    || die "apt-get install iproute2 failed"
fi

exists() { ip link show dev "$1" >/dev/null 2>&1; }
if exists "$PARENT"; then
  # `ip -o link` prints "N: labnet0@labnet1: ..." for a veth whose peer is labnet1.
  ip -o link show dev "$PARENT" | grep -q "^[0-9]*: $PARENT@$PEER:" \
    || die "$PARENT exists but is not a veth peered with $PEER; delete it first"
  say "veth $PARENT <-> $PEER exists: skipped"
elif exists "$PEER"; then
  die "$PEER exists without $PARENT; delete it first (ip link del $PEER)"
else
  ip link add "$PARENT" type veth peer name "$PEER" || die "cannot create veth $PARENT/$PEER"
  say "veth $PARENT <-> $PEER created"
fi

for n in "$PARENT" "$PEER"; do
  if ip -o link show dev "$n" | grep -q '[<,]UP[,>]'; then
    say "$n is up: skipped"
  else
    ip link set dev "$n" up || die "cannot set $n up"
    say "$n set up"
  fi
done
