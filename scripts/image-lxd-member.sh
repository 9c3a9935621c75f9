#!/usr/bin/env bash
# Build (debootstrap) and import the image of an LXD cluster member (a system container that
# runs its own LXD; scripts/cluster-up.sh makes three), default alias reconciler-lxd-member:
# Debian with systemd, LXD 5.0 (Debian's packages), ifupdown+dhclient on eth0, and a oneshot
# unit that splits the co-mounted cgroup v1 cpu,cpuacct hierarchy again at every boot, before
# LXD starts (without it nested containers fail: "Failed to open 6/cpuacct - Not a directory").
# The build, its cache and the import are scripts/debian-image.sh's.
# Usage: image-lxd-member.sh [ALIAS]   Env: DEBIAN_MIRROR, DEBIAN_SUITE (bookworm), IMAGE_CACHE
set -euo pipefail

NAME=image-lxd-member
ALIAS=${1:-reconciler-lxd-member}
KIND=lxd-member
INCLUDE=systemd,systemd-sysv,lxd,lxd-client,iproute2,ifupdown,isc-dhcp-client,nftables,iptables,dnsmasq-base,procps,ca-certificates
# shellcheck source=debian-image.sh
. "$(dirname "$0")/debian-image.sh"

customize_rootfs() {
  # cgroup v1: the host kernel has cpu and cpuacct as two hierarchies, the member's systemd
  # replaces /sys/fs/cgroup/{cpu,cpuacct} by symlinks to a "cpu,cpuacct" directory, and the
  # nested LXC then fails on the cpuacct path. Undo that at every boot before LXD starts.
  cat >"$R/usr/local/sbin/cgroup-split-cpu" <<'EOF'
#!/bin/sh
# Mount cgroup v1 cpu and cpuacct as two real directories under /sys/fs/cgroup (idempotent).
set -u
C=/sys/fs/cgroup
[ -d "$C" ] || exit 0
mounted() { awk -v p="$1" '$2 == p {f = 1} END {exit !f}' /proc/self/mounts; }
want=""
for c in cpu cpuacct; do
  grep -qw "$c" /proc/cgroups || continue      # controller not in this kernel
  [ -d "$C/$c" ] && [ ! -L "$C/$c" ] && mounted "$C/$c" || want="$want $c"
done
[ -n "$want" ] || { echo "cgroup-split-cpu: cpu and cpuacct already separate"; exit 0; }
ro=0; awk -v p="$C" '$2 == p && $4 ~ /(^|,)ro(,|$)/ {f = 1} END {exit !f}' /proc/self/mounts && ro=1
[ "$ro" = 0 ] || mount -o remount,rw "$C" || exit 1
for d in "$C/cpu,cpuacct" "$C/cpuacct,cpu"; do
  while mounted "$d"; do umount "$d" || umount -l "$d" || break; done
  [ -L "$d" ] && rm -f "$d"
  [ -d "$d" ] && rmdir "$d" 2>/dev/null
done
for c in $want; do
  [ -L "$C/$c" ] && rm -f "$C/$c"
  mkdir -p "$C/$c"
  mounted "$C/$c" || mount -t cgroup -o "$c" cgroup "$C/$c" || exit 1
done
[ "$ro" = 0 ] || mount -o remount,ro "$C"
echo "cgroup-split-cpu: mounted$want separately"
EOF
  chmod 755 "$R/usr/local/sbin/cgroup-split-cpu"
  cat >"$R/etc/systemd/system/cgroup-split-cpu.service" <<'EOF'
[Unit]
Description=Separate cgroup v1 cpu and cpuacct for nested LXD
DefaultDependencies=no
After=systemd-remount-fs.service
Before=sysinit.target lxd.socket lxd.service lxcfs.service lxd-containers.service
ConditionPathIsDirectory=/sys/fs/cgroup

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/cgroup-split-cpu

[Install]
WantedBy=sysinit.target
EOF
  chroot "$R" systemctl enable cgroup-split-cpu.service lxd.socket lxd.service lxd-containers.service \
    >/dev/null 2>&1 || die "cannot enable units in the rootfs"

  echo "deb $MIRROR $SUITE main" >"$R/etc/apt/sources.list"
  chroot "$R" apt-get clean
  rm -rf "$R"/var/lib/apt/lists/* "$R"/var/log/*.log "$R"/var/log/apt/*
  # Per-member identity (machine-id, LXD's server certificate) is made at first boot.
  echo lxd-member >"$R/etc/hostname"
  rm -rf "$R/var/lib/lxd/database" "$R"/var/lib/lxd/server.* "$R"/var/lib/lxd/cluster.*
  DESCRIPTION="reconciler LXD cluster member, Debian $SUITE (systemd, LXD $(chroot "$R" dpkg-query -W -f='${Version}' lxd))"
  step "rootfs configured, $(du -sm "$R" | cut -f1) MB"
}

image_prepare
image_build
image_import
