"""Network forwards without LXD: lab.yaml's `forwards:` validated (each problem at its line, naming its
field), the desired forward with its targets resolved from lab.yaml or from the live address plan read
("(known after apply)" while there is none), LXD's JSON read back, a diff per port, and the order of
steps around its network and target."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler import address as a
from reconciler.desired import desired_state
from reconciler.diff import diff_states
from reconciler.engine import _check_foreign_children, needs_addresses
from reconciler.kinds import forward as forward_kind
from reconciler.kinds import nested_reads
from reconciler.kinds.file import UNKNOWN
from reconciler.live import live_from_raw, nic_devices, users_of
from reconciler.lxd import RawState
from reconciler.plan import Action, PlanError, Step, make_plan
from reconciler.source import SourceError
from reconciler.spec import load_lab
from reconciler.state import Resource

LAB = """\
lab: fwd
networks:
  lan:
    config: {ipv4.address: 10.203.117.1/24, ipv4.nat: false, ipv6.address: none,
             ipv4.dhcp.ranges: 10.203.117.100-10.203.117.200}
profiles:
  onlan:
    devices:
      root: {type: disk, path: /, pool: default}
      eth0: {type: nic, network: lan, name: eth0}
containers:
  web1:
    image: reconciler-tiny
    profiles: [onlan]
    devices: {eth0: {type: nic, network: lan, name: eth0, ipv4.address: 10.203.117.10}}
  web2:
    image: reconciler-tiny
    profiles: [onlan]
forwards:
  "10.203.117.250":
    network: lan
    description: the web front
    target_address: 10.203.117.20
    ports:
      - {protocol: tcp, listen_port: 80, target: web1, description: HTTP}
      - {protocol: udp, listen_port: "5000-5001,6000", target_port: "7000-7002", target_address: 10.203.117.11}
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return load_lab(path, {})[0]


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SourceError) as caught:
        load(tmp_path, text)
    return [str(p).removeprefix(f"{tmp_path}/") for p in caught.value.problems]


LIVE = LAB.replace("    target_address: 10.203.117.20\n", "    target: web2\n")  # web2: no fixed address
PORT_80 = {"description": "HTTP", "listen_port": "80", "protocol": "tcp", "target_address": "10.203.117.10"}
PORTS_UDP = {"listen_port": "5000-5001,6000", "protocol": "udp", "target_address": "10.203.117.11",
             "target_port": "7000-7002"}


def test_the_desired_forward_resolves_its_targets_from_lab_yaml_and_waits_for_them(tmp_path):
    lab = load(tmp_path, LAB)
    state = desired_state(lab, tmp_path, {}, {})
    fwd = state[forward_kind.forward("lan", "10.203.117.250")]
    assert fwd.body == {"description": "the web front", "config": {"target_address": "10.203.117.20"},
                        "ports": {"tcp:80": PORT_80, "udp:5000-5001,6000": PORTS_UDP}}
    assert fwd.depends_on == (a.network("lan"), a.instance("web1"))
    assert str(fwd.address) == "forward.lan/10.203.117.250"
    assert a.Address.parse("forward.lan/10.203.117.250") == fwd.address


def test_a_container_with_no_fixed_address_is_targeted_by_its_live_one(tmp_path):
    """web2's NIC on lan (its profile's eth0) has no ipv4.address: the address plan read is the body's; the
    forward waits for web2, whose address it needs, and the fixed web1 is resolved from lab.yaml as before."""
    lab = load(tmp_path, LIVE)
    assert needs_addresses(lab) and not needs_addresses(load(tmp_path, LAB))
    nics = {"web1": {"eth0": "10.203.117.99"}, "web2": {"eth0": "10.203.117.150"}}
    fwd = desired_state(lab, tmp_path, {}, {}, nics)[forward_kind.forward("lan", "10.203.117.250")]
    assert fwd.body == {"description": "the web front", "config": {"target_address": "10.203.117.150"},
                        "ports": {"tcp:80": PORT_80, "udp:5000-5001,6000": PORTS_UDP}}
    assert fwd.meta.waits_for == ("web2",) and fwd.meta.payload == {}
    assert fwd.depends_on == (a.network("lan"), a.instance("web2"), a.instance("web1"))


def test_a_live_target_with_no_address_yet_is_known_after_apply_which_resolves_it(tmp_path):
    """web2 to be created (or replaced, or started): plan cannot know its address; apply finds it from the
    NIC kept in the change (device and interface), once web2, which the forward waits for, has one."""
    lab = load(tmp_path, LIVE)
    fwd = desired_state(lab, tmp_path, {}, {}, {"web1": {"eth0": "10.203.117.10"}})[forward_kind.forward("lan", "10.203.117.250")]
    assert fwd.body["config"] == {"target_address": UNKNOWN}
    assert fwd.body["ports"]["tcp:80"] == PORT_80  # web1's fixed address: no live read needed
    assert fwd.meta.waits_for == ("web2",)
    assert fwd.meta.payload == {forward_kind.PENDING: {"": ["web2", "eth0", "eth0"]}}
    [change] = diff_states({fwd.address: fwd}, {fwd.address: forward_kind.from_lxd(RAW)})
    assert change.actions == (Action.UPDATE,) and change.meta.payload == fwd.meta.payload
    assert [(f.path, f.before, f.after) for f in change.diff] == [("config.target_address", "10.203.117.20", UNKNOWN)]
    plan = make_plan("fwd", diff_states({fwd.address: fwd, a.instance("web2"): Resource(a.instance("web2"), {})}, {}), {})
    assert Step(a.instance("web2"), Action.CREATE) in plan.graph[Step(fwd.address, Action.CREATE)]


def test_a_live_target_on_each_port_is_pending_by_the_ports_key(tmp_path):
    text = LIVE.replace("    target: web2\n", "").replace(
        'target_port: "7000-7002", target_address: 10.203.117.11', 'target_port: "7000-7002", target: web2')
    fwd = desired_state(load(tmp_path, text), tmp_path, {}, {})[forward_kind.forward("lan", "10.203.117.250")]
    assert fwd.body["config"] == {} and fwd.body["ports"]["udp:5000-5001,6000"]["target_address"] == UNKNOWN
    assert fwd.meta.payload == {forward_kind.PENDING: {"udp:5000-5001,6000": ["web2", "eth0", "eth0"]}}


def test_a_nics_live_address_is_found_by_its_device_whatever_lxd_named_its_interface():
    """lab.yaml names a NIC by its device; inside it is its `name`, or the one LXD gave it (volatile)."""
    raw = {"name": "web2", "expanded_config": {"volatile.lan.name": "eth1"},
           "expanded_devices": {"eth0": {"type": "nic", "network": "other", "name": "eth0"},
                                "lan": {"type": "nic", "network": "lan"}, "root": {"type": "disk", "path": "/"}},
           "state": {"network": {"eth0": {"addresses": [{"family": "inet", "scope": "global", "address": "10.0.0.5"}]},
                                 "eth1": {"addresses": [{"family": "inet6", "scope": "global", "address": "fd00::5"},
                                                        {"family": "inet", "scope": "global", "address": "10.203.117.150"}]},
                                 "lo": {"addresses": [{"family": "inet", "scope": "local", "address": "127.0.0.1"}]}}}}
    assert nic_devices(raw) == {"eth0": "10.0.0.5", "lan": "10.203.117.150"}
    assert live_from_raw(RawState({a.Kind.INSTANCE: [raw]}), "fwd").devices == {"web2": nic_devices(raw)}


BAD = [
    ("listen-any", '"10.203.117.250":', '"0.0.0.0":',
     'lab.yaml:20:3: forwards["0.0.0.0"]: 0.0.0.0 cannot be a forward\'s listen address'),
    ("listen-loopback", '"10.203.117.250":', '"127.0.0.1":', "127.0.0.1 cannot be a forward's listen address"),
    ("listen-not-ipv4", '"10.203.117.250":', '"web.example":',
     "lab.yaml:20:3: forwards[\"web.example\"]: 'web.example' is not a valid forward listen address name"),
    ("listen-off-bridge", '"10.203.117.250":', '"10.203.118.250":',
     "10.203.118.250 is not a free address of network 'lan' (10.203.117.1/24)"),
    ("listen-the-bridge", '"10.203.117.250":', '"10.203.117.1":', "never the bridge's own"),
    ("unknown-network", "    network: lan\n", "    network: lna\n",
     "lab.yaml:21:14: forwards[\"10.203.117.250\"].network: unknown network 'lna'; did you mean 'lan'?"),
    ("protocol", "protocol: tcp, listen_port: 80", "protocol: sctp, listen_port: 80",
     "lab.yaml:25:20: forwards[\"10.203.117.250\"].ports[0].protocol: Input should be 'tcp' or 'udp'"),
    ("port-spaces", '"5000-5001,6000"', '"5000-5001, 6000"', "ports[1].listen_port: '5000-5001, 6000' is not a port,"
     " LOW-HIGH, or a comma-separated list of those (no spaces)"),
    ("port-too-high", "listen_port: 80,", "listen_port: 65536,", "ports[0].listen_port: 65536 is not a port"),
    ("port-backwards", '"5000-5001,6000"', '"5001-5000"', "'5001-5000': a range runs backwards"),
    ("port-counts", '"7000-7002"', '"7000-7001"', "ports[1]: target_port '7000-7001' has 2 ports and listen_port"
     " '5000-5001,6000' 3: LXD wants as many, or one"),
    ("port-overlap", 'udp, listen_port: "5000-5001,6000", target_port: "7000-7002"', 'tcp, listen_port: "79-81"',
     "forwards[\"10.203.117.250\"].ports[1].listen_port: tcp port 80 is listed twice (also in ports[0])"),
    ("port-twice", '"5000-5001,6000", target_port: "7000-7002"', '"5000-5001,5001"', "udp port 5001 is listed twice"),
    ("no-target", "target: web1, description: HTTP", "description: HTTP",
     "ports[0]: a port needs its target (a container) or target_address"),
    ("two-targets", "target: web1, description", "target: web1, target_address: 10.203.117.9, description",
     "ports[0]: target and target_address name two targets: keep one"),
    ("unknown-target", "target: web1", "target: web3", "ports[0].target: unknown container 'web3'"),
    ("same-as-default", "    target_address: 10.203.117.20\n", "    target: web1\n",
     "ports[0]: its target 10.203.117.10 is the forward's default target too, which LXD refuses"),
    ("unknown-field", "listen_port: 80,", "listen: 80, listen_port: 80,", "ports[0].listen: unknown field"),
]


@pytest.mark.parametrize("old, new, expected", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_what_lxd_would_refuse_is_one_problem_at_its_line(tmp_path, old, new, expected):
    assert old in LAB
    found = problems(tmp_path, LAB.replace(old, new, 1))
    assert any(expected in line for line in found), found
    assert all(line.startswith("lab.yaml:") for line in found), found


NO_NIC = "    devices: {root: {type: disk, path: /, pool: default}}\nforwards:"


def test_a_target_with_no_nic_on_the_forwards_network_is_refused_at_its_line(tmp_path):
    text = LAB.replace("target: web1", "target: web2").replace("    profiles: [onlan]\nforwards:", NO_NIC)
    assert problems(tmp_path, text) == [
        "lab.yaml:25:50: forwards[\"10.203.117.250\"].ports[0].target: container 'web2' has no NIC on network"
        " 'lan': give it one (its address there is the target), or write target_address"]


def test_a_live_target_that_lab_yaml_stops_is_refused_a_fixed_one_is_not(tmp_path):
    stopped = "    profiles: [onlan]\n    state: stopped\nforwards:"
    text = LIVE.replace("    profiles: [onlan]\nforwards:", stopped)
    assert problems(tmp_path, text) == [
        "lab.yaml:24:13: forwards[\"10.203.117.250\"].target: container 'web2' is not running in lab.yaml, and its"
        " NIC on network 'lan' has no fixed ipv4.address: it has no address to forward to"]
    load(tmp_path, LAB.replace("  web2:\n", "  web2:\n    state: stopped\n"))


def test_a_live_target_named_twice_is_the_default_target_twice(tmp_path):
    text = LIVE.replace("target: web1", "target: web2")
    assert any("ports[0]: its target web2 is the forward's default target too" in p for p in problems(tmp_path, text))


def test_one_run_says_every_problem_of_a_forward_each_port_s_target_beside_its_bad_port(tmp_path):
    """A port that fails (a bad port, a bad protocol) keeps its place: its target is still checked, and
    two ports that failed never clash with each other as stand-ins."""
    text = LAB.replace("listen_port: 80, target: web1", 'listen_port: "80-", target: web9').replace(
        'protocol: udp, listen_port: "5000-5001,6000", target_port: "7000-7002", target_address: 10.203.117.11',
        'protocol: sctp, listen_port: x, target: web8')
    assert problems(tmp_path, text) == [
        "lab.yaml:25:38: forwards[\"10.203.117.250\"].ports[0].listen_port: '80-' is not a port, LOW-HIGH, or a"
        " comma-separated list of those (no spaces)",
        "lab.yaml:25:53: forwards[\"10.203.117.250\"].ports[0].target: unknown container 'web9'; did you mean 'web2'?",
        "lab.yaml:26:20: forwards[\"10.203.117.250\"].ports[1].protocol: Input should be 'tcp' or 'udp'",
        "lab.yaml:26:39: forwards[\"10.203.117.250\"].ports[1].listen_port: 'x' is not a port, LOW-HIGH, or a"
        " comma-separated list of those (no spaces)",
        "lab.yaml:26:50: forwards[\"10.203.117.250\"].ports[1].target: unknown container 'web8'; did you mean 'web2'?",
    ]


def test_a_forward_on_an_existing_network_is_checked_against_what_lab_yaml_knows(tmp_path):
    text = LAB.replace("networks:\n  lan:", "existing: {networks: [lan]}\nnetworks:\n  other:").replace(
        '"10.203.117.250":', '"192.0.2.77":').replace("target: web1", "target_address: 10.203.117.10")
    lab = load(tmp_path, text)  # the existing bridge's subnet is not known from lab.yaml: not judged
    assert list(lab.forwards) == ["192.0.2.77"]


# LXD 5.0.2: `lxc query /1.0/networks/NET/forwards?recursion=1` after POSTing this lab's forward as apply
# sends it (the network renamed lan); "parent" added, as the read adds it.
RAW = {"config": {"target_address": "10.203.117.20", "user.reconciler.applied": "3f1d2c0a9b8e7d6c",
                  "user.reconciler.lab": "fwd"},
       "description": "the web front", "listen_address": "10.203.117.250", "location": "none",
       "ports": [{"description": "HTTP", "listen_port": "80", "protocol": "tcp", "target_address": "10.203.117.10",
                  "target_port": ""},
                 {"description": "", "listen_port": "5000-5001,6000", "protocol": "udp",
                  "target_address": "10.203.117.11", "target_port": "7000-7002"}],
       "parent": "lan"}


def test_lxds_json_reads_back_as_the_desired_forward(tmp_path):
    have = forward_kind.from_lxd(RAW)
    want = desired_state(load(tmp_path, LAB), tmp_path, {}, {})[have.address]
    assert have.owner == "fwd" and have.applied == "3f1d2c0a9b8e7d6c"
    assert have.body == want.body
    assert have.depends_on == (a.network("lan"),)


def test_a_port_changed_by_hand_is_a_diff_of_that_port(tmp_path):
    want = desired_state(load(tmp_path, LAB), tmp_path, {}, {})
    ports = [dict(RAW["ports"][0], target_port="8080"), RAW["ports"][1],
             {"protocol": "tcp", "listen_port": "22", "target_address": "10.203.117.10"}]
    have = forward_kind.from_lxd({**RAW, "ports": ports})
    [change] = diff_states({have.address: want[have.address]}, {have.address: have})
    assert change.actions == (Action.UPDATE,)
    assert change.before is not None and change.after is not None
    assert change.before["ports"]["tcp:80"]["target_port"] == "8080" and "target_port" not in change.after["ports"]["tcp:80"]
    assert "tcp:22" in change.before["ports"] and "tcp:22" not in change.after["ports"]


def live_state(*forwards: dict, lab: str = "fwd"):
    network = {"name": "lan", "managed": True, "type": "bridge", "description": "",
               "config": {"user.reconciler.lab": "fwd", "ipv4.address": "10.203.117.1/24"}}
    raw = RawState({a.Kind.NETWORK: [network], a.Kind("forward"): list(forwards)})
    return live_from_raw(raw, lab)


def test_a_forward_is_deleted_before_its_network():
    live = live_state(RAW)
    plan = make_plan("fwd", diff_states({}, live.owned), users_of(live.owned))
    assert [str(s) for s in plan.order()] == ["forward.lan/10.203.117.250#delete", "network.lan#delete"]


def test_a_forward_the_lab_does_not_own_keeps_its_network(tmp_path):
    foreign = {**RAW, "config": {}, "listen_address": "10.203.117.251"}
    live = live_state(RAW, foreign)
    assert live.foreign == {forward_kind.forward("lan", "10.203.117.251"): None}
    changes = diff_states({}, live.owned)
    with pytest.raises(PlanError, match=r"network.lan holds forward.lan/10.203.117.251, which is not this lab's"):
        _check_foreign_children(changes, live.foreign)
    _check_foreign_children([c for c in changes if c.address.kind != a.Kind.NETWORK], live.foreign)


def test_a_forward_is_created_after_its_network_and_target(tmp_path):
    state = desired_state(load(tmp_path, LAB), tmp_path, {}, {})
    plan = make_plan("fwd", diff_states(state, {}), {})
    step = Step(forward_kind.forward("lan", "10.203.117.250"), Action.CREATE)
    assert {Step(a.network("lan"), Action.CREATE), Step(a.instance("web1"), Action.CREATE)} <= plan.graph[step]


def test_plan_reads_the_forwards_of_the_networks_it_owns_or_names(tmp_path):
    lab = load(tmp_path, LAB)
    nets = [{"name": "lan", "managed": True, "type": "bridge", "config": {}},
            {"name": "mine", "managed": True, "type": "bridge", "config": {"user.reconciler.lab": "fwd"}},
            {"name": "theirs", "managed": True, "type": "bridge", "config": {"user.reconciler.lab": "other"}},
            {"name": "eth0", "managed": False, "type": "physical"}]
    under = nested_reads(lab)
    assert [n["name"] for n in nets if n.get("managed") and under(forward_kind, n)] == ["lan", "mine"]


def test_graph_draws_a_forward_after_the_container_it_leads_to(tmp_path):
    from reconciler.graph import Edge, lab_graph, to_dot
    graph = lab_graph("fwd", desired_state(load(tmp_path, LAB), tmp_path, {}, {}))
    fwd = forward_kind.forward("lan", "10.203.117.250")
    assert Edge(a.instance("web1"), fwd) in graph.edges
    assert '"forward.lan/10.203.117.250" [label="forward\\nlan/10.203.117.250", shape=cds' in to_dot(graph)
