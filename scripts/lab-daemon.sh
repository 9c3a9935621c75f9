#!/usr/bin/env bash
# Which daemon `make lab` brings the guide's lab up on, printed as `lxd` or `incus`: Incus on a
# machine that has it (incusd and the incus client) and no LXD (neither lxd nor lxc), else LXD,
# which scripts/lxd-up.sh installs on a fresh machine. Installs, starts and asks nothing.
# Env: INCUSD (default /usr/libexec/incus/incusd, where Debian's incus packages put the daemon).
set -euo pipefail

INCUSD=${INCUSD:-/usr/libexec/incus/incusd}
has() { command -v "$1" >/dev/null 2>&1; }

if { [ -x "$INCUSD" ] || has incusd; } && has incus && ! has lxd && ! has lxc; then
  echo incus
else
  echo lxd
fi
