#!/usr/bin/env bash
# Undo scripts/cluster-up.sh: the lxc remote labcluster, the members lxdm1..3, the outer project
# reconciler-cluster and the bridge lcbr0. Nothing else (images, the cached tarballs, the host's
# own storage pool and profiles stay). Idempotent.
# Usage: cluster-down.sh
set -euo pipefail

PROJECT=reconciler-cluster
BRIDGE=lcbr0
REMOTE=labcluster
MEMBERS=(lxdm1 lxdm2 lxdm3)
say() { printf 'cluster-down: %s\n' "$*"; }
die() { printf 'cluster-down: ERROR: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v lxc >/dev/null || { say "no lxc: nothing to do"; exit 0; }

# 1. The remote (the host's default lxc client config, or $LXD_CONF).
if lxc remote list --format csv | cut -d, -f1 | grep -q "^$REMOTE\( (current)\)\?$"; then
  if lxc remote list --format csv | cut -d, -f1 | grep -qx "$REMOTE (current)"; then
    lxc remote switch local
    say "default remote was $REMOTE: switched to local"
  fi
  lxc remote remove "$REMOTE" || die "cannot remove remote $REMOTE"
  say "remote $REMOTE removed"
else
  say "no remote $REMOTE: skipped"
fi

timeout 30 lxc info >/dev/null 2>&1 || die "the host's LXD does not answer (scripts/lxd-up.sh starts it)"

# 2. The members (only these names; a stopped one is deleted too).
if lxc project show "$PROJECT" >/dev/null 2>&1; then
  for m in "${MEMBERS[@]}"; do
    if lxc info --project "$PROJECT" "$m" >/dev/null 2>&1; then
      lxc delete --force --project "$PROJECT" "$m" || die "cannot delete member $m"
      say "member $m deleted"
    else
      say "no member $m: skipped"
    fi
  done
  # 3. The project, unless someone put other instances in it.
  left=$(lxc list --project "$PROJECT" --format csv -c n)
  [ -z "$left" ] || die "project $PROJECT holds instances this script did not make ($(echo $left)): not deleted"
  lxc project delete "$PROJECT" >/dev/null || die "cannot delete project $PROJECT"
  say "project $PROJECT deleted"
else
  say "no project $PROJECT (so no members): skipped"
fi

# 4. The bridge, if it is the one cluster-up.sh made.
if lxc network show "$BRIDGE" >/dev/null 2>&1; then
  [ "$(lxc network get "$BRIDGE" user.reconciler-cluster)" = true ] \
    || die "network $BRIDGE was not made by cluster-up.sh (no user.reconciler-cluster=true): not deleted"
  lxc network delete "$BRIDGE" >/dev/null || die "cannot delete bridge $BRIDGE"
  say "bridge $BRIDGE deleted"
else
  say "no bridge $BRIDGE: skipped"
fi
