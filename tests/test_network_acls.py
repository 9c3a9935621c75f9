"""Network ACLs without LXD: lab.yaml's `acls:` validated as LXD 5.0 would judge it (each problem at its
line), their desired state, a diff per rule, and the order of steps around the networks naming them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler import address as a
from reconciler.desired import desired_state
from reconciler.diff import diff_states
from reconciler.kinds import acl as acl_kind
from reconciler.kinds import network as network_kind
from reconciler.live import as_comparable, live_from_raw, users_of
from reconciler.lxd import RawState
from reconciler.network_acl import AclRule, lxd_rule
from reconciler.plan import Action, Step, make_plan
from reconciler.render import plan_text
from reconciler.source import SourceError
from reconciler.spec import load_lab

LAB = """\
lab: acls
acls:
  web-only:
    description: HTTP from the clients' bridge
    ingress:
      - {action: allow, source: 10.203.61.0/24, protocol: tcp, destination_port: 80}
      - {action: allow, protocol: icmp4, icmp_type: 8, description: ping}
    egress:
      - {action: reject, destination: "10.203.62.0/24, 10.203.63.5-10.203.63.9"}
networks:
  servers:
    config: {ipv4.address: 10.203.62.1/24, ipv4.nat: false, ipv6.address: none, security.acls: web-only,
             security.acls.default.egress.action: allow}
profiles:
  base:
    devices:
      root: {type: disk, path: /, pool: default}
      eth0: {type: nic, network: servers, name: eth0}
containers:
  server:
    image: reconciler-tiny
    profiles: [base]
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return load_lab(path, {})[0]


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SourceError) as caught:
        load(tmp_path, text)
    return [str(p) for p in caught.value.problems]


def test_a_lab_with_acls_loads_and_rules_take_lxds_form(tmp_path):
    lab = load(tmp_path, LAB)
    rules = lab.acls["web-only"]
    assert [lxd_rule(r) for r in rules.ingress] == [
        {"action": "allow", "destination_port": "80", "protocol": "tcp", "source": "10.203.61.0/24",
         "state": "enabled"},
        {"action": "allow", "description": "ping", "icmp_type": "8", "protocol": "icmp4", "state": "enabled"}]
    assert lxd_rule(rules.egress[0])["destination"] == "10.203.62.0/24,10.203.63.5-10.203.63.9"
    as_list = AclRule.model_validate({"action": "reject", "destination": ["10.203.62.0/24", "10.203.63.5-10.203.63.9"]})
    assert lxd_rule(as_list) == lxd_rule(rules.egress[0])  # a YAML list or LXD's commas: one rule


BAD = [
    # (id, old text, new text, expected problem)
    ("subject", "source: 10.203.61.0/24", "source: 10.203.61.0/33",
     "lab.yaml:6:33: acls.web-only.ingress[0].source: '10.203.61.0/33' is not an address, a network"),
    ("backwards-range", "10.203.63.5-10.203.63.9", "10.203.63.9-10.203.63.5",
     "acls.web-only.egress[0].destination: '10.203.63.9-10.203.63.5' is not an address"),
    ("port-range", "destination_port: 80}", "destination_port: 90-80}",
     "lab.yaml:6:82: acls.web-only.ingress[0].destination_port: port range 90-80: LXD wants the first"),
    ("port", "destination_port: 80}", "destination_port: 65536}", "port 65536 is not 1 to 65535"),
    ("icmp-with-tcp", "protocol: icmp4, icmp_type: 8", "protocol: tcp, icmp_type: 8",
     "lab.yaml:7:51: acls.web-only.ingress[1].icmp_type: goes with protocol icmp4 or icmp6, not tcp"),
    ("port-without-protocol", "protocol: tcp, destination_port: 80", "destination_port: 80",
     "acls.web-only.ingress[0].destination_port: needs a protocol: tcp or udp for ports"),
    ("icmp-type-range", "icmp_type: 8", "icmp_type: 300",
     "lab.yaml:7:53: acls.web-only.ingress[1].icmp_type: 300 is not 0 to 255"),
    ("icmp4-on-ipv6", "{action: allow, protocol: icmp4, icmp_type: 8",
     "{action: allow, protocol: icmp4, source: 'fd00::/8', icmp_type: 8",
     "acls.web-only.ingress[1].source: protocol icmp4 cannot match IPv6 addresses"),
    ("families", "destination: \"10.203.62.0/24, 10.203.63.5-10.203.63.9\"}",
     "source: 10.0.0.1, destination: \"fd00::1\"}", "egress[0].destination: source and destination mix IPv4 and IPv6"),
    ("duplicate", "      - {action: allow, protocol: icmp4",
     "      - {action: allow, source: 10.203.61.0/24, protocol: tcp, destination_port: \"80\"}\n"
     "      - {action: allow, protocol: icmp4", "acls.web-only.ingress[1]: the same rule as ingress rule 0"),
    ("name-wrong-side", "destination: \"10.203.62.0/24, 10.203.63.5-10.203.63.9\"}", "source: web-only}",
     "acls.web-only.egress[0].source: 'web-only': an ACL name or @internal/@external goes in the destination"),
    ("name-on-a-bridge", "source: 10.203.61.0/24, protocol", "source: \"@internal\", protocol",
     "acls.web-only.ingress[0].source: '@internal': a bridge network takes addresses, networks and ranges only"),
    ("unknown-acl", "security.acls: web-only,", "security.acls: web-onyl,",
     "lab.yaml:12:96: networks.servers.config[\"security.acls\"]: unknown network ACL 'web-onyl'; did you mean"
     " 'web-only'?"),
    ("default-action", "egress.action: allow", "egress.action: deny",
     "networks.servers.config[\"security.acls.default.egress.action\"]: 'deny' is not one of allow, drop, reject"),
    ("nic-on-a-bridge", "network: servers, name: eth0}", "network: servers, name: eth0, security.acls: web-only}",
     "profiles.base.devices.eth0[\"security.acls\"]: LXD 5.0 takes security.acls only on OVN NICs: for a NIC on a"
     " bridge, set it on network 'servers'"),
    ("acl-name", "  web-only:\n", "  9web:\n", "lab.yaml:3:3: acls.9web: '9web' is not a valid network ACL name"),
    ("owned-and-existing", "lab: acls\n", "lab: acls\nexisting: {acls: [web-only]}\n",
     "acls.web-only: 'web-only' is declared here and listed under existing.acls"),
    ("unknown-rule-field", "description: ping}", "descripton: ping}",
     "acls.web-only.ingress[1].descripton: unknown field; did you mean 'description'?"),
]


@pytest.mark.parametrize("old, new, expected", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_what_lxd_would_refuse_is_a_problem_at_its_line(tmp_path, old, new, expected):
    assert old in LAB
    found = problems(tmp_path, LAB.replace(old, new, 1))
    assert any(expected in line for line in found), found


def test_a_rule_the_models_refuse_hides_no_other_rule_s_problem(tmp_path):
    """A bad port range in rule 0 (the models' check), ICMP with tcp in rule 1 (LXD's rules): one run says
    both; the rule that failed is judged no further (no "needs a protocol", no duplicate of it)."""
    text = LAB.replace("protocol: tcp, destination_port: 80}", "protocol: tcp, destination_port: 90-80}").replace(
        "protocol: icmp4, icmp_type: 8", "protocol: tcp, icmp_type: 8").replace(
        "    egress:\n", "      - {action: allow, source: 10.203.61.0/24, protocol: tcp}\n    egress:\n")
    assert [p.removeprefix(f"{tmp_path}/") for p in problems(tmp_path, text)] == [
        "lab.yaml:6:82: acls.web-only.ingress[0].destination_port: port range 90-80: LXD wants the first port lower"
        " than the last",
        "lab.yaml:7:51: acls.web-only.ingress[1].icmp_type: goes with protocol icmp4 or icmp6, not tcp"]


def test_an_acl_on_an_existing_network_may_name_acls_and_network_selectors(tmp_path):
    text = LAB.replace("lab: acls\n", "lab: acls\nexisting: {networks: [ovn0], acls: [ops]}\n").replace(
        "security.acls: web-only,", "security.acls: ops,").replace(
        "source: 10.203.61.0/24, protocol", "source: \"@internal, ops\", protocol")
    text = text.replace("      eth0: {type: nic, network: servers, name: eth0}",
                        "      eth0: {type: nic, network: ovn0, name: eth0, security.acls: web-only}")
    lab = load(tmp_path, text)  # an OVN network takes ACL names as subjects and ACLs on its NICs
    desired = desired_state(lab, tmp_path, {}, {})
    assert a.acl("web-only") in desired[a.instance("server")].depends_on or \
        a.acl("web-only") in desired[a.profile("base")].depends_on


def test_the_desired_acl_keys_rules_by_their_place_and_networks_wait_for_it(tmp_path):
    desired = desired_state(load(tmp_path, LAB), tmp_path, {}, {})
    body = desired[a.acl("web-only")].body
    assert sorted(body) == ["config", "description", "egress", "ingress"]
    assert body["ingress"]["1"]["icmp_type"] == "8" and body["egress"]["0"]["action"] == "reject"
    assert desired[a.network("servers")].depends_on == (a.acl("web-only"),)
    plan = make_plan("acls", diff_states(desired, {}), {})
    order = [str(s) for s in plan.order()]
    assert order[:3] == ["acl.web-only#create", "network.servers#create", "profile.base#create"]


def raw_acl(ingress: list[dict], name: str = "web-only", lab: str = "acls") -> dict:
    return {"name": name, "description": "HTTP from the clients' bridge", "config": {"user.reconciler.lab": lab},
            "ingress": ingress, "egress": [{"action": "reject", "destination": "10.203.62.0/24,10.203.63.5-10.203.63.9",
                                            "state": "enabled"}], "used_by": []}


HTTP = {"action": "allow", "source": "10.203.61.0/24", "protocol": "tcp", "destination_port": "80", "state": "enabled"}
PING = {"action": "allow", "protocol": "icmp4", "icmp_type": "8", "description": "ping", "state": "enabled"}


def acl_changes(tmp_path: Path, ingress: list[dict]):
    desired = {k: v for k, v in desired_state(load(tmp_path, LAB), tmp_path, {}, {}).items() if k.kind == a.Kind.ACL}
    live = {a.acl("web-only"): acl_kind.from_lxd(raw_acl(ingress))}
    as_comparable(desired, live)  # as the engine does before it diffs
    return diff_states(desired, live)


def test_the_same_rules_in_another_order_are_no_change(tmp_path):
    assert acl_changes(tmp_path, [HTTP, PING]) == []
    assert acl_changes(tmp_path, [PING, HTTP]) == []  # LXD sorts rules by action: order means nothing


@pytest.mark.parametrize("ingress, shown", [
    ([HTTP, PING | {"icmp_type": "0"}], ['ingress.1.icmp_type: "0" -> "8"']),
    ([HTTP | {"destination_port": "8080"}, PING], ['ingress.0.destination_port: "8080" -> "80"']),
    ([PING], ['ingress.0: (none) -> {"action": "allow", "destination_port": "80"']),
    ([HTTP, PING, HTTP | {"destination_port": "8080"}],
     ['ingress.2: {"action": "allow", "destination_port": "8080"', '-> (none)']),
    ([PING, HTTP | {"destination_port": "8080"}, HTTP], ['ingress.2: {"action": "allow", "destination_port": "8080"']),
])
def test_a_rule_changed_added_or_removed_by_hand_is_a_diff_of_that_rule(tmp_path, ingress, shown):
    [change] = acl_changes(tmp_path, ingress)
    assert change.actions == (Action.UPDATE,)
    text = plan_text(make_plan("acls", [change], {}))
    for words in shown:
        assert words in text, text
    assert "ingress: " not in text  # never "the rules changed" as a whole


def live_state(*raw_networks: dict, acls: list[dict]):
    raw = RawState({a.Kind.NETWORK: list(raw_networks), a.Kind.ACL: acls})
    return live_from_raw(raw, "acls")


def test_an_acl_is_deleted_after_the_networks_that_name_it(tmp_path):
    network = {"name": "servers", "managed": True, "type": "bridge", "description": "",
               "config": {"user.reconciler.lab": "acls", "security.acls": "web-only"}}
    live = live_state(network, acls=[raw_acl([HTTP, PING])])
    assert live.owned[a.network("servers")].depends_on == (a.acl("web-only"),)
    plan = make_plan("acls", diff_states({}, live.owned), users_of(live.owned))
    assert [str(s) for s in plan.order()] == ["network.servers#delete", "acl.web-only#delete"]
    # the network drops it and the ACL goes, in one plan: the network is updated first
    kept = network_kind.from_lxd({**network, "config": {}})  # as lab.yaml now has it: no security.acls
    plan = make_plan("acls", diff_states({kept.address: kept}, live.owned), users_of(live.owned))
    assert plan.graph[Step(a.acl("web-only"), Action.DELETE)] == {Step(a.network("servers"), Action.UPDATE)}


def test_another_labs_acl_of_the_same_name_is_foreign(tmp_path):
    live = live_state(acls=[raw_acl([HTTP], lab="other")])
    assert live.foreign == {a.acl("web-only"): "other"} and not live.owned
