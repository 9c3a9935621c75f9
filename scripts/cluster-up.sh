#!/usr/bin/env bash
# A real three-member LXD cluster on this one machine, registered as the lxc remote `labcluster`:
#   - outer LXD project reconciler-cluster (images from the default project, own profiles);
#   - managed bridge lcbr0, 10.203.90.1/24, no NAT, no IPv6, no default route handed out, DHCP
#     for .100-.254: the members' shared L2 segment, reached directly from the host;
#   - system containers lxdm1..3 (image reconciler-lxd-member, nesting + privileged) at the fixed
#     addresses 10.203.90.11..13 (static DHCP on the outer NIC), each running LXD 5.0;
#   - inside: one LXD cluster (LXD's own clustering), storage pool `default` (dir) and a root disk
#     on the default profile, cluster groups g1..g3 (one member each, plus `default`);
#   - the host's reconciler-tiny and reconciler-debian images copied in with the same aliases.
# Lab containers in the cluster use macvlan NICs with parent lan0 (a second NIC of each member,
# bridged to lcbr0, made here) and get 10.203.90.100+ from lcbr0's dnsmasq; `--check` proves that on every member.
# Idempotent: every step says what it did or why it was skipped; the last line says whether
# anything changed. Builds the images it needs if their aliases are missing.
# Usage: cluster-up.sh [--check]     Undo: scripts/cluster-down.sh
set -euo pipefail

PROJECT=reconciler-cluster
BRIDGE=lcbr0
NET=10.203.90              # a /24 no host route and no other LXD network uses
REMOTE=labcluster
MEMBER_IMAGE=reconciler-lxd-member
MEMBERS=(lxdm1 lxdm2 lxdm3)
LAN_PORT=lan0              # each member's second NIC, bridged to lcbr0, for the lab's macvlan NICs (step 4b)
PORT=8443
COPY_IMAGES=(reconciler-tiny reconciler-debian)
CHECK_PROJECT=cluster-selfcheck
HERE=$(cd "$(dirname "$0")" && pwd)

CHECK=0
for a in "$@"; do
  case $a in
    --check) CHECK=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) printf 'cluster-up: ERROR: unknown argument %s (try --help)\n' "$a" >&2; exit 2 ;;
  esac
done

T0=$SECONDS
CHANGED=0
say() { printf 'cluster-up: %s\n' "$*"; }
die() { printf 'cluster-up: ERROR: %s\n' "$*" >&2; exit 1; }
changed() { CHANGED=$((CHANGED + 1)); say "$*"; }
[ "$(id -u)" -eq 0 ] || die "must run as root"

addr() { echo "$NET.1${1#lxdm}"; }              # lxdm1 -> 10.203.90.11
outer() { lxc "$1" --project "$PROJECT" "${@:2}"; }
# Run a command inside a member (bounded: a wedged member must not hang the script).
in_m() { local m=$1; shift; timeout 300 lxc exec --project "$PROJECT" "$m" -- "$@"; }
# `lxc query PATH` inside member M. LXD 5.0's exec now and then fails to attach to a running member
# ("Failed to retrieve PID of executing child process"), and its client now and then drops a short
# command's output: that error and an empty answer, and only they, are tried again, so that a flake is
# never read as "not clustered" or "not a member".
query_in() {
  local m=$1 path=$2 try out errf rc=0
  errf=$(mktemp)
  for try in 1 2 3 4 5; do
    rc=0; out=$(in_m "$m" lxc query "$path" 2>"$errf") || rc=$?
    if [ "$rc" -eq 0 ] && [ -n "$out" ]; then rm -f "$errf"; printf '%s\n' "$out"; return 0; fi
    [ "$rc" -eq 0 ] || grep -q "Failed to retrieve PID" "$errf" || break
    sleep "$try"
  done
  cat "$errf" >&2; rm -f "$errf"; return "$rc"
}
# Wait until CMD succeeds, at most SECS seconds: wait_for SECS WHAT CMD...
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
    sleep 1
  done
}

# 0. Tools and the host's LXD.
if command -v jq >/dev/null && command -v curl >/dev/null; then :; else
  say "installing jq curl (apt)"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq curl >/dev/null \
    || die "apt-get install jq curl failed"
fi
timeout 30 lxc info >/dev/null 2>&1 || bash "$HERE/lxd-up.sh" || die "no LXD daemon (scripts/lxd-up.sh failed)"

# 1. Images on the host (built only when the alias is missing; `make cluster` refreshes them).
for pair in "$MEMBER_IMAGE:image-lxd-member.sh" "reconciler-tiny:image-tiny.sh" "reconciler-debian:image-debian.sh"; do
  img=${pair%%:*} script=${pair#*:}
  if lxc image info "$img" >/dev/null 2>&1; then
    say "image $img present: build skipped"
  else
    bash "$HERE/$script" || die "$script failed"
    changed "image $img built"
  fi
done

# 2. The bridge. Refuse a subnet that something else on this host already routes.
clash=$(ip -4 route show | awk -v n="$NET." -v b="$BRIDGE" 'index($1, n) == 1 && $0 !~ (" dev " b " ") {print}')
[ -z "$clash" ] || die "$NET.0/24 is already routed on this host ($clash): refusing to create $BRIDGE"
clash=$(lxc network list --format json | jq -r --arg n "$NET." --arg b "$BRIDGE" \
  '.[] | select(.managed and .name != $b and ((.config["ipv4.address"] // "") | startswith($n))) | .name')
[ -z "$clash" ] || die "LXD network(s) $clash already use $NET.0/24"
# no-resolv: dnsmasq answers only its own names (never forwards to the host's resolver);
# dhcp-option=3 (empty): no default route, so members and lab containers stay on this segment.
# ipv4.routing must stay true: with false LXD adds "iifname/oifname lcbr0 reject" to its nft
# forward chain, and as br_netfilter is loaded here that also rejects traffic *between* ports
# of the bridge (member to member: "connection refused" on 8443, the join fails).
declare -A BR=(
  [ipv4.address]=$NET.1/24 [ipv4.nat]=false [ipv4.routing]=true [ipv4.dhcp]=true
  [ipv4.dhcp.ranges]=$NET.100-$NET.254 [ipv6.address]=none
  [raw.dnsmasq]=$'no-resolv\ndhcp-option=3'
)
if ! lxc network show "$BRIDGE" >/dev/null 2>&1; then
  args=(); for k in "${!BR[@]}"; do args+=("$k=${BR[$k]}"); done
  lxc network create "$BRIDGE" "${args[@]}" >/dev/null || die "cannot create bridge $BRIDGE"
  lxc network set "$BRIDGE" user.reconciler-cluster=true
  changed "bridge $BRIDGE ($NET.1/24, no NAT, no IPv6) created"
else
  [ "$(lxc network get "$BRIDGE" user.reconciler-cluster)" = true ] \
    || die "network $BRIDGE exists but was not made by this script (no user.reconciler-cluster=true)"
  fixed=""
  for k in "${!BR[@]}"; do
    [ "$(lxc network get "$BRIDGE" "$k")" = "${BR[$k]}" ] && continue
    lxc network set "$BRIDGE" "$k=${BR[$k]}" || die "cannot set $k on $BRIDGE"; fixed="$fixed $k"
  done
  if [ -n "$fixed" ]; then changed "bridge $BRIDGE: set$fixed"; else say "bridge $BRIDGE exists: skipped"; fi
fi

# 3. The outer project: the members never mix with other labs.
if lxc project show "$PROJECT" >/dev/null 2>&1; then
  say "project $PROJECT exists: skipped"
else
  lxc project create "$PROJECT" -c features.images=false -c features.profiles=true >/dev/null \
    || die "cannot create project $PROJECT"
  lxc project set "$PROJECT" user.reconciler-cluster=true
  changed "project $PROJECT created"
fi
if outer profile show default | awk '/^devices:/{d=1} d && /^    path: \/$/{f=1} END{exit !f}'; then
  say "project $PROJECT: default profile has a root disk: skipped"
else
  outer profile device add default root disk path=/ pool=default >/dev/null \
    || die "cannot add a root disk to $PROJECT's default profile"
  changed "project $PROJECT: root disk (pool default) added to the default profile"
fi

# 4. The members. Their settings are not edited in place (that needs a restart and can break
# the cluster): a member that differs is an error; cluster-down.sh + cluster-up.sh rebuild.
for m in "${MEMBERS[@]}"; do
  a=$(addr "$m")
  if ! outer info "$m" >/dev/null 2>&1; then
    # (its stderr note "doesn't have any network attached" is expected: the NIC comes next)
    out=$(outer init "$MEMBER_IMAGE" "$m" -c security.nesting=true -c security.privileged=true \
      -c user.reconciler-cluster=true 2>&1) || die "cannot create member $m: $out"
    outer config device add "$m" eth0 nic nictype=bridged parent="$BRIDGE" name=eth0 \
      ipv4.address="$a" >/dev/null || die "cannot add eth0 to $m"
    changed "member $m created (eth0 on $BRIDGE, $a)"
  else
    j=$(lxc query "/1.0/instances/$m?project=$PROJECT")
    want="true true $BRIDGE $a"
    have=$(jq -r '[.config["security.nesting"], .config["security.privileged"],
      .devices.eth0.parent, .devices.eth0["ipv4.address"]] | map(. // "-") | join(" ")' <<<"$j")
    [ "$have" = "$want" ] || die "member $m exists with different settings (nesting privileged parent address: '$have', want '$want'); run scripts/cluster-down.sh first"
    say "member $m exists: skipped"
  fi
done
for m in "${MEMBERS[@]}"; do
  if [ "$(lxc query "/1.0/instances/$m?project=$PROJECT" | jq -r .status)" = Running ]; then
    say "member $m running: skipped"
  else
    outer start --quiet "$m" || die "cannot start member $m"
    changed "member $m started"
  fi
done
# An address on eth0 (ifupdown's dhclient) and a ready LXD (socket-activated by systemd).
for m in "${MEMBERS[@]}"; do
  a=$(addr "$m")
  wait_for 90 "$m to get $a on eth0" in_m "$m" sh -c "ip -4 -o addr show dev eth0 | grep -q ' $a/'"
  wait_for 30 "systemd in $m to start the LXD socket" in_m "$m" test -S /var/lib/lxd/unix.socket
  in_m "$m" lxd waitready --timeout 120 || die "LXD in $m not ready within 120 s"
done
say "members have their addresses, their LXD answers ($((SECONDS - T0))s)"

# 4b. The LAN port: a second NIC of each member, $LAN_PORT inside, up and without an address, whose
# host end (lcp-MEMBER, a veth pair LXD makes: nictype p2p) is a port of lcbr0. Lab containers hang
# their macvlan NICs on it (parent: $LAN_PORT), never on the member's eth0, which carries the member's
# own address and the cluster's traffic. (A second NIC on lcbr0 itself LXD refuses: "Instance DNS
# name already used on network".) LXD makes the host end again at each member start, outside the
# bridge: this step puts it back; ifupdown brings $LAN_PORT up inside at boot.
LAN_PORT_CONF="auto $LAN_PORT
iface $LAN_PORT inet manual"
for m in "${MEMBERS[@]}"; do
  port=lcp-$m
  if [ "$(lxc query "/1.0/instances/$m?project=$PROJECT" | jq -r --arg d "$LAN_PORT" '.devices[$d]["host_name"] // ""')" = "$port" ]; then
    say "member $m: $LAN_PORT exists: skipped"
  else
    outer config device add "$m" "$LAN_PORT" nic nictype=p2p name="$LAN_PORT" host_name="$port" >/dev/null \
      || die "cannot add $LAN_PORT to $m"
    changed "member $m: $LAN_PORT added (host end $port)"
  fi
  wait_for 30 "$port on the host" ip link show dev "$port"
  if ip -o link show dev "$port" | grep -q "master $BRIDGE .*state UP\|master $BRIDGE state UP"; then
    say "member $m: $port is a port of $BRIDGE: skipped"
  else
    ip link set dev "$port" master "$BRIDGE" up || die "cannot make $port a port of $BRIDGE"
    changed "member $m: $port made a port of $BRIDGE"
  fi
  # Compared inside, by exit status: LXD 5.0's client now and then drops a short command's output.
  if in_m "$m" sh -c 'printf "%s\n" "$1" | cmp -s - "$2"' _ "$LAN_PORT_CONF" "/etc/network/interfaces.d/$LAN_PORT"; then
    say "member $m: $LAN_PORT in ifupdown: skipped"
  else
    printf '%s\n' "$LAN_PORT_CONF" | in_m "$m" sh -c "cat > /etc/network/interfaces.d/$LAN_PORT" \
      || die "cannot write $m's /etc/network/interfaces.d/$LAN_PORT"
    changed "member $m: $LAN_PORT in ifupdown"
  fi
  wait_for 30 "$LAN_PORT to appear in $m" in_m "$m" ip link show dev "$LAN_PORT"
  if in_m "$m" ip -o link show dev "$LAN_PORT" | grep -q '[<,]UP[,>]'; then
    say "member $m: $LAN_PORT up: skipped"
  else
    in_m "$m" ip link set dev "$LAN_PORT" up || die "cannot bring $LAN_PORT up in $m"
    changed "member $m: $LAN_PORT up"
  fi
done

# 5. The cluster: bootstrapped on the first member, the others join with tokens.
# (stderr dropped: the member's lxc prints a first-run banner on its first call)
clustered() { [ "$(query_in "$1" /1.0/cluster 2>/dev/null | jq -r .enabled)" = true ]; }
first=${MEMBERS[0]}
if clustered "$first"; then
  say "cluster on $first exists: bootstrap skipped"
else
  # Never bootstrap a second cluster beside a live one (lxdm1 re-created on its own).
  for m in "${MEMBERS[@]:1}"; do
    ! clustered "$m" || die "$first is not clustered but $m is ($first re-created?): run scripts/cluster-down.sh, then this again"
  done
  in_m "$first" lxd init --preseed >/dev/null <<EOF || die "lxd init --preseed (bootstrap) on $first failed"
config:
  core.https_address: $(addr "$first"):$PORT
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root: {type: disk, path: /, pool: default}
cluster:
  server_name: $first
  enabled: true
EOF
  changed "cluster bootstrapped on $first ($(addr "$first"):$PORT)"
fi
members_json() { query_in "$first" /1.0/cluster/members?recursion=1; }
for m in "${MEMBERS[@]:1}"; do
  if clustered "$m"; then
    members_json | jq -e --arg m "$m" 'any(.[]; .server_name == $m)' >/dev/null \
      || die "$m is clustered but not a member of $first's cluster; run scripts/cluster-down.sh first"
    say "member $m already in the cluster: join skipped"
    continue
  fi
  # A member re-created from scratch is still listed under its name: drop the stale entry.
  if members_json | jq -e --arg m "$m" 'any(.[]; .server_name == $m)' >/dev/null; then
    in_m "$first" lxc cluster remove "$m" --force --yes >/dev/null || die "cannot remove stale $m"
    changed "stale cluster entry $m removed"
  fi
  # At most one join token per name: revoke an unused one left by an interrupted run.
  if in_m "$first" lxc cluster list-tokens --format csv | cut -d, -f1 | grep -qx "$m"; then
    in_m "$first" lxc cluster revoke-token "$m" >/dev/null || die "cannot revoke $m's old join token"
  fi
  token=$(in_m "$first" lxc cluster add "$m" | tail -n 1)
  [ -n "$token" ] || die "no join token for $m"
  # The token carries the cluster's addresses and certificate fingerprint; lxd init fills in
  # cluster_address and cluster_certificate from it. member_config: the pool's per-member key.
  in_m "$m" lxd init --preseed >/dev/null <<EOF || die "lxd init --preseed (join) on $m failed"
cluster:
  enabled: true
  server_name: $m
  server_address: $(addr "$m"):$PORT
  cluster_token: $token
  member_config:
  - entity: storage-pool
    name: default
    key: source
    value: ""
EOF
  changed "member $m joined the cluster"
done
wait_for 60 "all ${#MEMBERS[@]} members Online" sh -c \
  "timeout 30 lxc exec --project $PROJECT $first -- lxc query /1.0/cluster/members?recursion=1 |
   jq -e '[.[] | select(.status == \"Online\")] | length == ${#MEMBERS[@]}'"
say "cluster: ${#MEMBERS[@]} members Online"

# 6. Cluster groups g1..gN, one member each (each stays in `default` too).
i=0
for m in "${MEMBERS[@]}"; do
  i=$((i + 1)); g=g$i
  if query_in "$first" "/1.0/cluster/groups/$g" >/dev/null 2>&1; then :; else
    in_m "$first" lxc cluster group create "$g" >/dev/null || die "cannot create cluster group $g"
    changed "cluster group $g created"
  fi
  if query_in "$first" "/1.0/cluster/members/$m" | jq -e --arg g "$g" \
    '(.groups | index($g)) and (.groups | index("default"))' >/dev/null; then
    say "member $m in groups default,$g: skipped"
  else
    in_m "$first" lxc cluster group assign "$m" "default,$g" >/dev/null || die "cannot put $m in $g"
    changed "member $m put in groups default,$g"
  fi
done

# 7. The remote on the host (the default lxc client config, or $LXD_CONF).
remote_url() { lxc remote list --format csv | awk -F, -v r="$REMOTE" '$1 == r {print $2}'; }
remote_ok() { timeout 20 lxc query "$REMOTE:/1.0" 2>/dev/null | jq -e '.auth == "trusted"' >/dev/null; }
if lxc remote list --format csv | cut -d, -f1 | sed 's/ (current)$//' | grep -qx "$REMOTE"; then
  if remote_ok; then
    say "remote $REMOTE answers, trusted: skipped"
  else
    lxc remote remove "$REMOTE" || die "cannot remove broken remote $REMOTE"
    changed "remote $REMOTE did not answer as trusted: removed, adding again"
  fi
fi
if ! remote_ok; then
  crt=${LXD_CONF:-$HOME/.config/lxc}/client.crt
  fp=""
  [ -s "$crt" ] && command -v openssl >/dev/null && fp=$(openssl x509 -in "$crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f)
  if [ -n "$fp" ] && query_in "$first" "/1.0/certificates/$fp" >/dev/null 2>&1; then
    # The cluster already trusts this client (its config was lost): no token needed.
    lxc remote add "$REMOTE" "https://$(addr "$first"):$PORT" --accept-certificate >/dev/null \
      || die "cannot add remote $REMOTE"
  else
    # LXD 5.0: the trust token goes where the address would (no --token flag).
    token=$(in_m "$first" lxc config trust add --name "reconciler-$(hostname -s)" | tail -n 1)
    [ -n "$token" ] || die "no trust token from the cluster"
    lxc remote add "$REMOTE" "$token" --accept-certificate >/dev/null || die "cannot add remote $REMOTE"
  fi
  remote_ok || die "remote $REMOTE added but does not answer as trusted"
  changed "remote $REMOTE added ($(remote_url))"
fi

# 8. Images: the host's, same aliases, skipped when the alias already names the same fingerprint.
target() { { lxc query "$1/1.0/images/aliases/$2" 2>/dev/null || true; } | jq -r '.target // empty'; }
for img in "${COPY_IMAGES[@]}"; do
  fp=$(target "" "$img"); [ -n "$fp" ] || die "no image $img on the host"
  old=$(target "$REMOTE:" "$img")
  if [ "$old" = "$fp" ]; then say "image $img in the cluster (${fp:0:12}): copy skipped"; continue; fi
  if ! lxc query "$REMOTE:/1.0/images/$fp" >/dev/null 2>&1; then
    # Not `lxc image copy local:...`: LXD 5.0 refuses it ("The source server isn't listening on
    # the network") while the host's LXD has no core.https_address. Export + import keeps the
    # fingerprint (a split image's is sha256 of meta + rootfs) and the properties.
    tmp=$(mktemp -d /var/tmp/cluster-image.XXXXXX)
    lxc image export "local:$fp" "$tmp/" >/dev/null || { rm -rf "$tmp"; die "cannot export image $img"; }
    files=()
    for f in "$tmp"/meta-*; do [ -e "$f" ] && files+=("$f"); done
    for f in "$tmp"/*; do case $f in "$tmp"/meta-*) ;; *) files+=("$f") ;; esac; done
    lxc image import "${files[@]}" "$REMOTE:" --quiet >/dev/null || { rm -rf "$tmp"; die "cannot import image $img into $REMOTE"; }
    rm -rf "$tmp"
  fi
  [ -z "$old" ] || lxc image alias delete "$REMOTE:$img"
  lxc image alias create "$REMOTE:$img" "$fp" >/dev/null || die "cannot create alias $img on $REMOTE"
  if [ -n "$old" ] && lxc query "$REMOTE:/1.0/images/$old" | jq -e '.aliases == []' >/dev/null; then
    lxc image delete "$REMOTE:$old" || true
  fi
  changed "image $img copied to the cluster (${fp:0:12})"
done

say "members: $(for m in "${MEMBERS[@]}"; do printf '%s=%s ' "$m" "$(addr "$m")"; done)remote: $REMOTE ($(remote_url))"

# 9. Optional self-check: on every member a tiny container with a macvlan NIC on the member's
# $LAN_PORT, an address from lcbr0's DHCP, and its busybox httpd reached from the host over lcbr0.
if [ "$CHECK" = 1 ]; then
  R=$REMOTE
  cleanup_check() {
    lxc query "$R:/1.0/projects/$CHECK_PROJECT" >/dev/null 2>&1 || return 0
    for i in $(lxc query "$R:/1.0/instances?project=$CHECK_PROJECT" | jq -r '.[] | sub(".*/"; "") | sub("\\?.*"; "")'); do
      lxc delete --force --project "$CHECK_PROJECT" "$R:$i" >/dev/null 2>&1 || true
    done
    lxc project delete "$R:$CHECK_PROJECT" >/dev/null 2>&1 || true
  }
  cleanup_check   # leftovers of an interrupted check
  trap cleanup_check EXIT
  lxc project create "$R:$CHECK_PROJECT" -c features.images=false -c features.profiles=true >/dev/null
  lxc profile device add --project "$CHECK_PROJECT" "$R:default" root disk path=/ pool=default >/dev/null
  t=$SECONDS
  for m in "${MEMBERS[@]}"; do
    out=$(lxc init --project "$CHECK_PROJECT" "$R:reconciler-tiny" "$R:chk-$m" --target "$m" 2>&1) \
      || die "check: cannot create chk-$m on $m: $out"
    lxc config device add --project "$CHECK_PROJECT" "$R:chk-$m" eth0 nic nictype=macvlan parent="$LAN_PORT" \
      name=eth0 >/dev/null || die "check: cannot add a macvlan NIC to chk-$m"
    lxc start --quiet --project "$CHECK_PROJECT" "$R:chk-$m" || die "check: chk-$m does not start on $m"
  done
  for m in "${MEMBERS[@]}"; do
    ip=""; end=$((SECONDS + 60))
    while [ -z "$ip" ]; do
      [ "$SECONDS" -lt "$end" ] || die "check: chk-$m got no $NET.x address in 60 s"
      sleep 1
      ip=$(lxc query "$R:/1.0/instances/chk-$m/state?project=$CHECK_PROJECT" | jq -r --arg n "$NET." \
        '.network.eth0.addresses[]? | select(.family == "inet" and (.address | startswith($n))) | .address' | head -n 1)
    done
    loc=$(lxc query "$R:/1.0/instances/chk-$m?project=$CHECK_PROJECT" | jq -r .location)
    [ "$loc" = "$m" ] || die "check: chk-$m runs on $loc, not $m"
    wait_for 30 "http://$ip/ (chk-$m on $m)" sh -c "curl -fsS --max-time 3 http://$ip/ | grep -q reconciler-tiny"
    say "check: chk-$m on $m has $ip (macvlan on $LAN_PORT), host GET http://$ip/ -> 200"
  done
  cleanup_check; trap - EXIT
  say "check passed: macvlan containers on all ${#MEMBERS[@]} members reachable from the host ($((SECONDS - t))s)"
fi

if [ "$CHANGED" = 0 ]; then
  say "nothing changed ($((SECONDS - T0))s)"
else
  say "done: $CHANGED change(s) ($((SECONDS - T0))s)"
fi
