# Sourced by image-debian.sh and image-lxd-member.sh: what building a Debian container image with
# debootstrap and importing it into LXD or Incus takes, whatever goes inside. The caller sets NAME (for
# its messages), ALIAS, KIND (the cache folder's prefix), INCLUDE (packages beyond minbase) and
# DESCRIPTION, defines customize_rootfs (run with the rootfs in $R), then calls:
#   image_prepare   - mirror, recipe, the daemon; exits 0 when the image is up to date
#   image_build     - debootstrap, DHCP on eth0, customize_rootfs, the tarballs (unless cached)
#   image_import    - import, move the alias, delete the image it replaced
# Tarballs are cached in $IMAGE_CACHE (default /var/cache/reconciler/images) under a hash of the
# caller, this file, the mirror and the suite; the image records it as properties.recipe.
# The daemon is the client's: IMAGE_CLIENT=lxc (LXD, started by scripts/lxd-up.sh if down) or incus
# (Incus, scripts/incus-up.sh); by default lxc, or incus on a machine with Incus and no LXD
# (scripts/lab-daemon.sh), so LXD is never installed there. The same tarballs make the same
# fingerprint in either daemon.
# Env: DEBIAN_MIRROR, DEBIAN_SUITE (bookworm), IMAGE_CACHE, IMAGE_CLIENT

SUITE=${DEBIAN_SUITE:-bookworm}
CACHE=${IMAGE_CACHE:-/var/cache/reconciler/images}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T=$SECONDS
say() { printf '%s: %s\n' "$NAME" "$*"; }
die() { printf '%s: ERROR: %s\n' "$NAME" "$*" >&2; exit 1; }
step() { say "$* ($((SECONDS - T))s)"; T=$SECONDS; }

if [ -z "${IMAGE_CLIENT:-}" ]; then
  case $(bash "$HERE/lab-daemon.sh") in incus) IMAGE_CLIENT=incus ;; *) IMAGE_CLIENT=lxc ;; esac
fi
case $IMAGE_CLIENT in
  lxc) DAEMON_NAME=LXD UP=lxd-up.sh ;;
  incus) DAEMON_NAME=Incus UP=incus-up.sh ;;
  *) die "IMAGE_CLIENT is lxc or incus, not '$IMAGE_CLIENT'" ;;
esac
client() { "$IMAGE_CLIENT" "$@"; }

# The mirror is never written down here: take the system's first non-security apt source.
mirror() {
  [ -z "${DEBIAN_MIRROR:-}" ] || { echo "$DEBIAN_MIRROR"; return; }
  { awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/debian.sources 2>/dev/null
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' /etc/apt/sources.list 2>/dev/null
    awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null
  } | grep -v security | head -n 1 || true
}

image_prepare() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  MIRROR=$(mirror)
  case $MIRROR in http://*|https://*|file:/*) ;; *) die "no usable Debian mirror ('$MIRROR') in apt sources: set DEBIAN_MIRROR" ;; esac
  RECIPE=$({ cat "$HERE/$(basename "$0")" "${BASH_SOURCE[0]}"; echo "$MIRROR"; echo "$SUITE"; } | sha256sum | cut -d' ' -f1)
  DIR=$CACHE/$KIND-$SUITE-${RECIPE:0:16}
  # INCUS_IMAGES=none: incus-up.sh copies no image from LXD (there may be none).
  client info >/dev/null 2>&1 || INCUS_IMAGES=none bash "$HERE/$UP" || die "no $DAEMON_NAME daemon (scripts/$UP failed)"
  if [ "$(client image show "$ALIAS" 2>/dev/null | sed -n 's/^  recipe: //p' || true)" = "$RECIPE" ]; then
    step "image $ALIAS is up to date (recipe ${RECIPE:0:12}): skipped"; exit 0
  fi
}

# One line per debootstrap stage: how many items it handled and how long it took; on a terminal,
# with the project's Python, also a live line (stage, package now, count, time elapsed).
stages() {
  local py=$HERE/../.venv/bin/python
  if [ -t 1 ] && "$py" -c 'import rich' 2>/dev/null; then "$py" -m reconciler.progress debootstrap; else plain_stages; fi
}
plain_stages() { awk '
    function now(  s) { "date +%s" | getline s; close("date +%s"); return s }
    function done() { if (st != "") printf "  %-11s %4d  (%ds)\n", st, n, now() - t0; fflush() }
    BEGIN { t0 = now() }
    /^I: Validating / { next }   # interleaved with Retrieving, one per package
    /^I: (Retrieving|Extracting|Unpacking|Configuring) / {
      if ($2 != st) { done(); st = $2; n = 0; t0 = now() } n++; next }
    /^[WE]: / { print "  " $0; fflush() }
    END { done() }'; }

# ifupdown + dhclient on eth0 at every boot; a container without a NIC still boots clean.
dhcp_on_eth0() {
  cat >"$R/etc/network/interfaces" <<'EOF'
# ifupdown + dhclient: DHCP on eth0 at every boot (systemd-networkd gets no lease here)
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
}

# The image's metadata (the recipe among its properties) and the per-container hostname/hosts templates.
write_metadata() {
  mkdir -p "$WORK/meta/templates"
  cat >"$WORK/meta/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: $DESCRIPTION
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
}

image_build() {
  if [ -s "$DIR/meta.tar.gz" ] && [ -s "$DIR/rootfs.tar.gz" ]; then
    step "cached tarballs in $DIR: build skipped"; return
  fi
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
  if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$R" "$MIRROR" 2>&1 |
    tee "$WORK/debootstrap.log" | stages; then
    tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"
  fi
  step "debootstrap done, $(du -sm "$R" | cut -f1) MB"
  dhcp_on_eth0
  customize_rootfs
  # Per-container identity comes at first boot / from the templates.
  : >"$R/etc/machine-id"; rm -f "$R/var/lib/dbus/machine-id"
  : >"$R/etc/resolv.conf"
  write_metadata
  tar -C "$WORK/meta" -czf "$WORK/meta.tar.gz" .
  tar -C "$R" --numeric-owner -czf "$WORK/rootfs.tar.gz" .
  rm -rf "${CACHE:?}/$KIND"-*   # older recipes' tarballs
  mkdir -p "$DIR" && mv "$WORK/rootfs.tar.gz" "$WORK/meta.tar.gz" "$DIR/"
  step "tarballs cached in $DIR ($(du -sm "$DIR" | cut -f1) MB)"
}

# Import without an alias, then move the alias, so a failed import keeps the old image.
# A split image's fingerprint is sha256(meta + rootfs): reuse it if already imported.
image_import() {
  local fp old out
  fp=$(cat "$DIR/meta.tar.gz" "$DIR/rootfs.tar.gz" | sha256sum | cut -d' ' -f1)
  if client image info "$fp" >/dev/null 2>&1; then
    say "image ${fp:0:12} already in $DAEMON_NAME: import skipped"
  else
    out=$(client image import "$DIR/meta.tar.gz" "$DIR/rootfs.tar.gz" 2>&1) || die "$IMAGE_CLIENT image import: $out"
    step "imported image ${fp:0:12} into $DAEMON_NAME"
  fi
  old=$(client query "/1.0/images/aliases/$ALIAS" 2>/dev/null | sed -n 's/.*"target": *"\([0-9a-f]*\)".*/\1/p' || true)
  [ -z "$old" ] || client image alias delete "$ALIAS"
  client image alias create "$ALIAS" "$fp" >/dev/null || die "cannot create alias $ALIAS"
  if [ -n "$old" ] && [ "$old" != "$fp" ] && client query "/1.0/images/$old" | grep -q '"aliases": \[\]'; then
    client image delete "$old" && say "deleted replaced image ${old:0:12}"
  fi
  say "alias $ALIAS -> ${fp:0:12} in $DAEMON_NAME (recipe ${RECIPE:0:12})"
}
