#!/usr/bin/env bash
# Build (debootstrap) and import a Debian container image, default alias reconciler-debian:
# systemd, ifupdown+dhclient on eth0, apache2 and haproxy enabled, apt lists + the
# downloaded .debs kept so `apt-get install --no-download PKG` works offline.
# The build, its cache and the import are scripts/debian-image.sh's.
# Usage: image-debian.sh [ALIAS]   Env: DEBIAN_MIRROR, DEBIAN_SUITE (bookworm), IMAGE_CACHE
set -euo pipefail

NAME=image-debian
ALIAS=${1:-reconciler-debian}
KIND=debian
INCLUDE=systemd,systemd-sysv,ifupdown,isc-dhcp-client,iproute2,apache2,haproxy,rsyslog,curl,procps,cron,ca-certificates
# shellcheck source=debian-image.sh
. "$(dirname "$0")/debian-image.sh"
DESCRIPTION="reconciler Debian $SUITE (systemd, apache2, haproxy)"

customize_rootfs() {
  # Only the suite debootstrap used: the candidates then match the cached .debs.
  echo "deb $MIRROR $SUITE main" >"$R/etc/apt/sources.list"
  chroot "$R" apt-get update -q >/dev/null || die "apt-get update in the rootfs failed"
  chroot "$R" systemctl enable apache2 haproxy >/dev/null 2>&1 || die "cannot enable apache2/haproxy"
  echo debian >"$R/etc/hostname"
  step "rootfs configured ($(find "$R/var/cache/apt/archives" -name '*.deb' | wc -l) .debs kept)"
}

image_prepare
image_build
image_import
