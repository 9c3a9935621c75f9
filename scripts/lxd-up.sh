#!/usr/bin/env bash
# Make sure a local LXD is installed, running and initialised (storage pool
# "default" + a root disk on the "default" profile). Idempotent; creates no network.
# Env: LXD_DIR (an extra socket dir to try first), LXD_LOG_DIR (default /var/log/reconciler).
set -euo pipefail

LOG_DIR=${LXD_LOG_DIR:-/var/log/reconciler}
say() { printf 'lxd-up: %s\n' "$*"; }
die() { printf 'lxd-up: ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

# 1. Packages. iptables/nftables: without them LXD cannot create bridges; dnsmasq-base (only
# recommended by the lxd package) is the DHCP server of every LXD bridge, the lab's LAN among them;
# btrfs-progs (only suggested) lets LXD make a btrfs pool (mkfs.btrfs on its loop file, btrfs for the rest).
if command -v lxd >/dev/null && command -v lxc >/dev/null && command -v dnsmasq >/dev/null \
    && command -v mkfs.btrfs >/dev/null; then
  say "lxd, lxc, dnsmasq and mkfs.btrfs present: install skipped"
else
  say "installing lxd lxd-client nftables iptables dnsmasq-base btrfs-progs (apt)"
  apt-get update -q >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q lxd lxd-client nftables iptables dnsmasq-base btrfs-progs \
    >/dev/null || die "apt-get install lxd failed"
fi

# 2. Find a responding daemon. `lxc` talks to $LXD_DIR/unix.socket; a stale socket
# file (no daemon behind it) just fails to connect, so it is skipped.
responds() { LXD_DIR=$1 timeout 20 lxc info >/dev/null 2>&1; }
found=""
for d in ${LXD_DIR:+"$LXD_DIR"} /var/lib/lxd /var/snap/lxd/common/lxd; do
  if [ -S "$d/unix.socket" ] && responds "$d"; then found=$d; break; fi
done

if [ -n "$found" ]; then
  say "daemon already running on $found/unix.socket: start skipped"
else
  found=${LXD_DIR:-/var/lib/lxd}
  mkdir -p "$LOG_DIR"
  say "starting lxd (log: $LOG_DIR/lxd.log)"
  # PID 1 may not be systemd: start it ourselves, in its own session (setsid) and
  # immune to SIGHUP (nohup), so it outlives this script and any make target.
  # lxd opens its --logfile in append mode, so stdout/stderr can share it. Started from /: the daemon
  # (and every rsync it runs for a snapshot) keeps its working directory, which must outlive the caller's
  # (a test's clone deleted later left every snapshot failing with "getcwd(): No such file or directory").
  # shellcheck disable=SC2094
  (cd / && LXD_DIR=$found exec setsid nohup lxd --group root --logfile "$LOG_DIR/lxd.log" \
    >>"$LOG_DIR/lxd.log" 2>&1 </dev/null) &
  if ! LXD_DIR=$found lxd waitready --timeout 60; then
    tail -n 20 "$LOG_DIR/lxd.log" >&2 || true
    die "lxd did not become ready within 60 s (see $LOG_DIR/lxd.log)"
  fi
  say "daemon ready"
fi
export LXD_DIR=$found

# 3. Initialise by hand: `lxd init --auto` fails here (it wants to pick a subnet).
if lxc storage show default >/dev/null 2>&1; then
  say "storage pool default exists: skipped"
else
  lxc storage create default dir >/dev/null || die "cannot create storage pool default"
  say "storage pool default (dir) created"
fi

# Any disk device mounted at / counts as the root disk, whatever its name.
if lxc profile show default | awk '/^devices:/{d=1} d && /^    path: \/$/{f=1} END{exit !f}'; then
  say "default profile has a root disk: skipped"
else
  lxc profile device add default root disk path=/ pool=default >/dev/null \
    || die "cannot add root disk to the default profile"
  say "root disk (pool default) added to the default profile"
fi

say "using socket $LXD_DIR/unix.socket"
