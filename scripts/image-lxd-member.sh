#!/usr/bin/env bash
# Build (debootstrap) and import the image of an LXD cluster member (a system container that
# runs its own LXD; scripts/cluster-up.sh makes three), default alias reconciler-lxd-member:
# Debian with systemd, LXD 5.0 (Debian's packages), ifupdown+dhclient on eth0, and a oneshot
# unit that splits the co-mounted cgroup v1 cpu,cpuacct hierarchy again at every boot, before
# LXD starts (without it nested containers fail: "Failed to open 6/cpuacct - Not a directory").
# Tarballs are cached in $IMAGE_CACHE (default /var/cache/reconciler/images) under a hash
# of this script + mirror + suite; the image records it as properties.recipe.
# Usage: image-lxd-member.sh [ALIAS]   Env: DEBIAN_MIRROR, DEBIAN_SUITE (bookworm), IMAGE_CACHE
set -euo pipefail

ALIAS=${1:-reconciler-lxd-member}
SUITE=${DEBIAN_SUITE:-bookworm}
CACHE=${IMAGE_CACHE:-/var/cache/reconciler/images}
INCLUDE=systemd,systemd-sysv,lxd,lxd-client,iproute2,ifupdown,isc-dhcp-client,nftables,iptables,dnsmasq-base,procps,ca-certificates
HERE=$(cd "$(dirname "$0")" && pwd)
T=$SECONDS
say() { printf 'image-lxd-member: %s\n' "$*"; }
die() { printf 'image-lxd-member: ERROR: %s\n' "$*" >&2; exit 1; }
step() { say "$* ($((SECONDS - T))s)"; T=$SECONDS; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

# The mirror is never written down here: take the system's first non-security apt source.
mirror() {
  [ -z "${DEBIAN_MIRROR:-}" ] || { echo "$DEBIAN_MIRROR"; return; }
  { awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/debian.sources 2>/dev/null
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' /etc/apt/sources.list 2>/dev/null
    awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null
  } | grep -v security | head -n 1 || true
}
MIRROR=$(mirror)
case $MIRROR in http://*|https://*|file:/*) ;; *) die "no usable Debian mirror ('$MIRROR') in apt sources: set DEBIAN_MIRROR" ;; esac
RECIPE=$({ cat "$HERE/$(basename "$0")"; echo "$MIRROR"; echo "$SUITE"; } | sha256sum | cut -d' ' -f1)
DIR=$CACHE/lxd-member-$SUITE-${RECIPE:0:16}

lxc info >/dev/null 2>&1 || bash "$HERE/lxd-up.sh" || die "no LXD daemon (scripts/lxd-up.sh failed)"
if [ "$(lxc image show "$ALIAS" 2>/dev/null | sed -n 's/^  recipe: //p' || true)" = "$RECIPE" ]; then
  step "image $ALIAS is up to date (recipe ${RECIPE:0:12}): skipped"; exit 0
fi

if [ -s "$DIR/meta.tar.gz" ] && [ -s "$DIR/rootfs.tar.gz" ]; then
  step "cached tarballs in $DIR: build skipped"
else
  command -v debootstrap >/dev/null || { apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; } \
    || die "cannot install debootstrap"
  mkdir -p "$CACHE"
  WORK=$(mktemp -d "$CACHE/build.XXXXXX"); R=$WORK/rootfs
  # Unmount anything left inside the rootfs before deleting it, and never cross mounts.
  cleanup() { awk -v r="$R/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done; rm -rf --one-file-system "$WORK"; }
  trap cleanup EXIT
  say "debootstrap $SUITE (minbase + $INCLUDE)"
  # One line per debootstrap stage: how many items it handled and how long it took.
  if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$R" "$MIRROR" 2>&1 |
    tee "$WORK/debootstrap.log" | awk '
      function now(  s) { "date +%s" | getline s; close("date +%s"); return s }
      function done() { if (st != "") printf "  %-11s %4d  (%ds)\n", st, n, now() - t0; fflush() }
      BEGIN { t0 = now() }
      /^I: Validating / { next }   # interleaved with Retrieving, one per package
      /^I: (Retrieving|Extracting|Unpacking|Configuring) / {
        if ($2 != st) { done(); st = $2; n = 0; t0 = now() } n++; next }
      /^[WE]: / { print "  " $0; fflush() }
      END { done() }'; then
    tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"
  fi
  step "debootstrap done, $(du -sm "$R" | cut -f1) MB"

  cat >"$R/etc/network/interfaces" <<'EOF'
# ifupdown + dhclient: DHCP on eth0 at every boot (systemd-networkd gets no lease here).
# The outer bridge hands each member a fixed address (static DHCP in the outer LXD).
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet dhcp
EOF
  # Without a NIC `ifup eth0` fails; don't let that mark the whole system degraded.
  mkdir -p "$R/etc/systemd/system/networking.service.d"
  cat >"$R/etc/systemd/system/networking.service.d/no-nic-ok.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/ifup -a --read-environment
ExecStart=-/bin/sh -c 'if [ -f /run/network/restart-hotplug ]; then /sbin/ifup -a --read-environment --allow=hotplug; fi'
EOF

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
  : >"$R/etc/machine-id"; rm -f "$R/var/lib/dbus/machine-id"
  : >"$R/etc/resolv.conf"; echo lxd-member >"$R/etc/hostname"
  rm -rf "$R/var/lib/lxd/database" "$R"/var/lib/lxd/server.* "$R"/var/lib/lxd/cluster.*
  step "rootfs configured, $(du -sm "$R" | cut -f1) MB"

  mkdir -p "$WORK/meta/templates"
  cat >"$WORK/meta/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: reconciler LXD cluster member, Debian $SUITE (systemd, LXD $(chroot "$R" dpkg-query -W -f='${Version}' lxd))
  os: debian
  release: $SUITE
  recipe: $RECIPE
templates:
  /etc/hostname: {when: [create, copy, rename], template: hostname.tpl}
  /etc/hosts: {when: [create, copy, rename], template: hosts.tpl}
EOF
  printf '{{ container.name }}\n' >"$WORK/meta/templates/hostname.tpl"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t{{ container.name }}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' \
    >"$WORK/meta/templates/hosts.tpl"
  tar -C "$WORK/meta" -czf "$WORK/meta.tar.gz" .
  tar -C "$R" --numeric-owner -czf "$WORK/rootfs.tar.gz" .
  rm -rf "${CACHE:?}"/lxd-member-*   # older recipes' tarballs
  mkdir -p "$DIR" && mv "$WORK/rootfs.tar.gz" "$WORK/meta.tar.gz" "$DIR/"
  step "tarballs cached in $DIR ($(du -sm "$DIR" | cut -f1) MB)"
fi

# Import without an alias, then move the alias, so a failed import keeps the old image.
# A split image's fingerprint is sha256(meta + rootfs): reuse it if already imported.
fp=$(cat "$DIR/meta.tar.gz" "$DIR/rootfs.tar.gz" | sha256sum | cut -d' ' -f1)
if lxc image info "$fp" >/dev/null 2>&1; then
  say "image ${fp:0:12} already in LXD: import skipped"
else
  out=$(lxc image import "$DIR/meta.tar.gz" "$DIR/rootfs.tar.gz" 2>&1) || die "lxc image import: $out"
  step "imported image ${fp:0:12}"
fi
old=$(lxc query "/1.0/images/aliases/$ALIAS" 2>/dev/null | sed -n 's/.*"target": *"\([0-9a-f]*\)".*/\1/p' || true)
[ -z "$old" ] || lxc image alias delete "$ALIAS"
lxc image alias create "$ALIAS" "$fp" >/dev/null || die "cannot create alias $ALIAS"
if [ -n "$old" ] && [ "$old" != "$fp" ] && lxc query "/1.0/images/$old" | grep -q '"aliases": \[\]'; then
  lxc image delete "$old" && say "deleted replaced image ${old:0:12}"
fi
say "alias $ALIAS -> ${fp:0:12} (recipe ${RECIPE:0:12})"
