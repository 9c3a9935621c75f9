#!/usr/bin/env bash
# Make sure a local Incus runs beside LXD, initialised like scripts/lxd-up.sh does LXD (storage pool
# "default" + a root disk on the "default" profile, no network: `incus admin init --auto` would make
# incusbr0 with NAT and IPv6), and holds LXD's reconciler-tiny image (and reconciler-debian, the
# guide's, when LXD has it). Idempotent. On a machine without LXD (no lxc) it copies nothing by
# default, and never installs LXD: scripts/image-debian.sh builds the guide's image straight into Incus.
# Debian's incus-base (containers only) comes from bookworm-backports on Debian 12, from main on 13.
# Env: INCUS_DIR (default /var/lib/incus), INCUS_LOG_DIR (default /var/log/reconciler), INCUS_IMAGES
# (the LXD image aliases to copy over; default reconciler-tiny, and reconciler-debian if LXD has it;
# `none`: no image, LXD not asked, as `make lab` on Incus does; without LXD only reconciler-debian,
# built by image-debian.sh).
set -euo pipefail

export INCUS_DIR=${INCUS_DIR:-/var/lib/incus}
LOG_DIR=${INCUS_LOG_DIR:-/var/log/reconciler}
IMAGES=${INCUS_IMAGES:-reconciler-tiny}
HERE=$(cd "$(dirname "$0")" && pwd)
INCUSD=/usr/libexec/incus/incusd
say() { printf 'incus-up: %s\n' "$*"; }
die() { printf 'incus-up: ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

# 1. Packages. On bookworm incus is only in backports: a deb822 source beside the machine's own,
# same mirror and keyring (read from debian.sources), written once.
backports_source() {
  local list=/etc/apt/sources.list.d/bookworm-backports.sources mirror
  [ -e "$list" ] && return 0
  mirror=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
  mirror=${mirror:-http://deb.debian.org/debian}
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
    "$mirror" /usr/share/keyrings/debian-archive-keyring.gpg >"$list"
  say "added bookworm-backports ($mirror) in $list"
}

if [ -x "$INCUSD" ] && command -v incus >/dev/null; then
  say "incusd and incus present: install skipped"
else
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  release=()
  if [ "$codename" = bookworm ]; then backports_source; release=(-t bookworm-backports); fi
  say "installing incus-base (apt${release:+, ${release[*]}})"
  apt-get update -q >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${release[@]}" incus-base >/dev/null \
    || die "apt-get install incus-base failed"
fi

# 2. The daemon. A stale socket file (no daemon behind it) just fails to answer.
if [ -S "$INCUS_DIR/unix.socket" ] && timeout 20 incus info >/dev/null 2>&1; then
  say "daemon already running on $INCUS_DIR/unix.socket: start skipped"
else
  mkdir -p "$LOG_DIR"
  say "starting incusd (log: $LOG_DIR/incus.log)"
  # As for LXD: PID 1 may not be systemd; its own session, immune to SIGHUP, outlives make; started from /
  # (its working directory must outlive the caller's).
  # shellcheck disable=SC2094
  (cd / && exec setsid nohup "$INCUSD" --group root --logfile "$LOG_DIR/incus.log" >>"$LOG_DIR/incus.log" 2>&1 </dev/null) &
  if ! incus admin waitready --timeout 60; then
    tail -n 20 "$LOG_DIR/incus.log" >&2 || true
    die "incusd did not become ready within 60 s (see $LOG_DIR/incus.log)"
  fi
  say "daemon ready"
fi

# 3. Initialise by hand (never `incus admin init --auto`: it makes incusbr0).
if incus storage show default >/dev/null 2>&1; then
  say "storage pool default exists: skipped"
else
  incus storage create default dir >/dev/null || die "cannot create storage pool default"
  say "storage pool default (dir) created"
fi
if incus profile show default | awk '/^devices:/{d=1} d && /^    path: \/$/{f=1} END{exit !f}'; then
  say "default profile has a root disk: skipped"
else
  incus profile device add default root disk path=/ pool=default >/dev/null \
    || die "cannot add root disk to the default profile"
  say "root disk (pool default) added to the default profile"
fi

# 4. Images. Without LXD: only the guide's, built straight into Incus (nothing to copy from).
if [ "$IMAGES" = none ]; then
  say "images: none asked (INCUS_IMAGES=none): LXD not asked"
  say "using socket $INCUS_DIR/unix.socket"
  exit 0
fi
if ! command -v lxc >/dev/null; then
  [ -n "${INCUS_IMAGES:-}" ] || { say "no LXD beside Incus: no image to copy"; IMAGES=""; }
  for alias in $IMAGES; do
    [ "$alias" = reconciler-debian ] || die "no LXD to copy $alias from (only reconciler-debian is built here)"
    IMAGE_CLIENT=incus bash "$HERE/image-debian.sh" "$alias" || die "image-debian.sh into Incus failed"
  done
  say "using socket $INCUS_DIR/unix.socket"
  exit 0
fi

# With LXD: LXD's, exported and imported as they are (same files, so the same fingerprint: an alias
# already naming LXD's fingerprint is up to date).
if [ -z "${INCUS_IMAGES:-}" ] && lxc image show reconciler-debian >/dev/null 2>&1; then
  IMAGES="$IMAGES reconciler-debian"
fi
fingerprint() { { "$1" query "/1.0/images/aliases/$2" 2>/dev/null || true; } | sed -n 's/.*"target": *"\([0-9a-f]*\)".*/\1/p'; }
for alias in $IMAGES; do
  want=$(fingerprint lxc "$alias")
  if [ -z "$want" ] && [ "$alias" = reconciler-tiny ]; then
    bash "$HERE/image-tiny.sh" "$alias" >/dev/null
    want=$(fingerprint lxc "$alias")
  fi
  [ -n "$want" ] || die "LXD has no image $alias to copy (make image-tiny / make image-debian builds them)"
  have=$(fingerprint incus "$alias")
  if [ "$have" = "$want" ]; then
    say "image $alias is LXD's (${want:0:12}): import skipped"
    continue
  fi
  work=$(mktemp -d /tmp/incus-up.XXXXXX)
  lxc image export "$alias" "$work/image" >/dev/null || { rm -rf "$work"; die "lxc image export $alias failed"; }
  files=("$work"/image*)  # meta (image.tar.*) first, then the rootfs of a split image
  out=$(incus image import "${files[@]}" 2>&1) || { rm -rf "$work"; die "incus image import $alias: $out"; }
  rm -rf "$work"
  got=$(sed -n 's/.*fingerprint: *//p' <<<"$out")
  [ "$got" = "$want" ] || die "incus imported $alias as ${got:-nothing}, not LXD's $want"
  [ -z "$have" ] || incus image alias delete "$alias"
  incus image alias create "$alias" "$want" >/dev/null || die "cannot create alias $alias in Incus"
  if [ -n "$have" ] && incus query "/1.0/images/$have" | grep -q '"aliases": \[\]'; then
    incus image delete "$have" && say "deleted replaced image ${have:0:12}"
  fi
  say "imported $alias from LXD (fingerprint ${want:0:12})"
done

say "using socket $INCUS_DIR/unix.socket"
