#!/usr/bin/env bash
# An lxc remote `bench-https` that reaches this machine's own LXD over HTTPS on 127.0.0.1:8443,
# in an lxc client configuration of its own (default /var/lib/reconciler/bench-lxc; the user's
# ~/.config/lxc is never read or changed). scripts/benchmark.py --where remote uses it:
#   LXD_CONF=/var/lib/reconciler/bench-lxc lxc list bench-https:
#   LXD_CONF=/var/lib/reconciler/bench-lxc reconcile plan   (lab.yaml: lxd: {remote: bench-https})
# Steps, each skipped when already done (a second run changes nothing):
#   - core.https_address set to 127.0.0.1:8443 if unset (refused if set to anything else);
#   - the remote added with a trust token named bench-https (`lxc config trust add --name`);
#     if the daemon already trusts the directory's client certificate, without a token;
#   - trust entries named bench-https for another certificate (a directory deleted since) removed,
#     and an unused bench-https token revoked: only those; no other trust entry is touched.
# Progress goes to stderr; the last line on stdout is the lxc configuration directory.
# Usage: remote-local.sh [DIR]        Undo: lxc config trust remove FINGERPRINT; rm -r DIR
#        (and `lxc config unset core.https_address` if nothing else uses it)
set -euo pipefail

REMOTE=bench-https
ADDRESS=127.0.0.1:8443
DIR=${1:-/var/lib/reconciler/bench-lxc}

case ${1:-} in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac

CHANGED=0
say() { printf 'remote-local: %s\n' "$*" >&2; }
die() { printf 'remote-local: ERROR: %s\n' "$*" >&2; exit 1; }
changed() { CHANGED=$((CHANGED + 1)); say "$*"; }
# Every lxc call is bounded and never waits on a prompt.
host_lxc() { timeout 60 lxc "$@" </dev/null; }
own_lxc() { LXD_CONF=$DIR timeout 60 lxc "$@" </dev/null; }

command -v jq >/dev/null || die "jq is needed"
command -v openssl >/dev/null || die "openssl is needed"
host_lxc info >/dev/null 2>&1 || die "no local LXD answers (scripts/lxd-up.sh)"

# 1. LXD listens on loopback only.
have=$(host_lxc config get core.https_address)
if [ -z "$have" ]; then
  host_lxc config set core.https_address "$ADDRESS" || die "cannot set core.https_address"
  changed "core.https_address set to $ADDRESS"
elif [ "$have" = "$ADDRESS" ]; then
  say "core.https_address is $ADDRESS: skipped"
else
  die "core.https_address is '$have', not $ADDRESS: refusing to change it (unset it, or set it to $ADDRESS, and run this again)"
fi

# 2. The lxc configuration directory (it holds a client key).
if [ -d "$DIR" ]; then
  say "directory $DIR exists: skipped"
else
  mkdir -p -m 700 "$DIR" || die "cannot create $DIR"
  own_lxc remote list >/dev/null 2>&1 || true   # lxc's first-run banner, once, out of the way
  changed "directory $DIR created"
fi

# 3. The remote, trusted.
remote_url() { own_lxc remote list --format csv | awk -F, -v r="$REMOTE" '$1 == r {print $2}'; }
remote_ok() { own_lxc query "$REMOTE:/1.0" 2>/dev/null | jq -e '.auth == "trusted"' >/dev/null; }
fingerprint() {
  [ -s "$DIR/client.crt" ] || return 0
  openssl x509 -in "$DIR/client.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f
}
url=$(remote_url)
if [ -n "$url" ] && [ "$url" = "https://$ADDRESS" ] && remote_ok; then
  say "remote $REMOTE ($url) answers, trusted: skipped"
else
  if [ -n "$url" ]; then
    own_lxc remote remove "$REMOTE" || die "cannot remove the broken remote $REMOTE from $DIR"
    changed "remote $REMOTE ($url) did not answer as trusted on https://$ADDRESS: removed from $DIR, adding again"
  fi
  fp=$(fingerprint)
  if [ -n "$fp" ] && host_lxc query "/1.0/certificates/$fp" >/dev/null 2>&1; then
    # The daemon trusts this directory's certificate already: no token needed.
    own_lxc remote add "$REMOTE" "https://$ADDRESS" --accept-certificate >/dev/null \
      || die "cannot add remote $REMOTE"
    changed "remote $REMOTE added (https://$ADDRESS, client certificate already trusted)"
  else
    # An unused token of an interrupted run goes first: at most one per name.
    if host_lxc config trust list-tokens --format json | jq -e --arg n "$REMOTE" 'any(.[]?; .ClientName == $n)' >/dev/null; then
      host_lxc config trust revoke-token "$REMOTE" >/dev/null || die "cannot revoke the unused $REMOTE token"
      changed "unused trust token $REMOTE revoked"
    fi
    # LXD 5.0: the token goes where the address would (there is no --token flag).
    token=$(host_lxc config trust add --name "$REMOTE" | tail -n 1)
    [ -n "$token" ] || die "no trust token from the local LXD"
    if ! out=$(own_lxc remote add "$REMOTE" "$token" --accept-certificate 2>&1); then
      host_lxc config trust revoke-token "$REMOTE" >/dev/null 2>&1 || true
      die "cannot add remote $REMOTE with the token: $out"
    fi
    changed "remote $REMOTE added with a trust token (https://$ADDRESS)"
  fi
  remote_ok || die "remote $REMOTE added but does not answer as trusted"
fi

# 4. Trust entries named bench-https that are not this directory's certificate: left by a
# directory deleted since. Only entries with this exact name are looked at.
fp=$(fingerprint)
[ -n "$fp" ] || die "no client certificate in $DIR"
for old in $(host_lxc query /1.0/certificates?recursion=1 |
             jq -r --arg n "$REMOTE" --arg fp "$fp" '.[] | select(.name == $n and .fingerprint != $fp) | .fingerprint'); do
  host_lxc config trust remove "$old" || die "cannot remove the stale trust entry $REMOTE (${old:0:12})"
  changed "stale trust entry $REMOTE (${old:0:12}) removed"
done

if [ "$CHANGED" = 0 ]; then say "nothing changed"; else say "done: $CHANGED change(s)"; fi
say "use: LXD_CONF=$DIR lxc list $REMOTE:"
echo "$DIR"
