"""`reconcile import` of pools, custom volumes and network forwards, without LXD: each kind module's
`imported` on LXD's own JSON, the lab.yaml written validated, and what it declares the same as what
LXD has (so plan shows adoptions only).  The real daemon's side is in test_import_lxd.py.

The JSON below is what LXD 5.0 answered on this machine (trimmed of `used_by` lists and image keys
import does not read) for a project `rximpjson` where, by hand: `lxc network create rximpjn
ipv4.address=10.203.241.1/24 ipv4.nat=false ipv6.address=none`, `lxc storage create rximpjp dir`,
`lxc storage volume create rximpjp site size=64MiB`, a container web1 with a NIC on rximpjn
(ipv4.address=10.203.241.10) and the volume as disk `site`, and `lxc network forward create rximpjn
10.203.241.250` with `port add ... tcp 80 10.203.241.10 8080`."""

from __future__ import annotations

import copy

import pytest
import yaml

from reconciler.address import Kind
from reconciler.adopt import choose, import_lab, named_parents
from reconciler.kinds import INSIDE_KINDS, OBJECT_KINDS, object_kind
from reconciler.kinds.contract import Wanted
from reconciler.lxd import RawState
from reconciler.source import SourceError
from reconciler.spec import load_lab
from reconciler.state import OWNER_KEY

# GET /1.0/instances?recursion=1&project=rximpjson (web1's entry)
WEB1 = {
    "name": "web1", "type": "container", "profiles": ["default"], "status": "Stopped", "description": "",
    "devices": {"eth0": {"ipv4.address": "10.203.241.10", "name": "eth0", "network": "rximpjn", "type": "nic"},
                "site": {"path": "/srv/site", "pool": "rximpjp", "source": "site", "type": "disk"}},
    "expanded_devices": {
        "eth0": {"ipv4.address": "10.203.241.10", "name": "eth0", "network": "rximpjn", "type": "nic"},
        "root": {"path": "/", "pool": "default", "type": "disk"},
        "site": {"path": "/srv/site", "pool": "rximpjp", "source": "site", "type": "disk"}},
    "config": {
        "image.description": "reconciler tiny busybox httpd image", "image.os": "busybox",
        "image.release": "1.35.0", "volatile.apply_template": "create",
        "volatile.base_image": "6b9ef359e924fd0ac717194ed8c6a4e8f35e1b24fc32d4ef31ed50abcd670e82",
        "volatile.eth0.hwaddr": "00:16:3e:9c:e9:02", "volatile.idmap.base": "0", "volatile.last_state.idmap": "[]",
        "volatile.uuid": "3beba44a-680f-4045-b695-563cfcb4ef53"},
}
# GET /1.0/profiles?recursion=1&project=rximpjson
DEFAULT_PROFILE = {"name": "default", "description": "Default LXD profile for project rximpjson", "config": {},
                   "devices": {"root": {"path": "/", "pool": "default", "type": "disk"}}}
# GET /1.0/networks?recursion=1&project=rximpjson (rximpjn's entry)
NETWORK = {"config": {"ipv4.address": "10.203.241.1/24", "ipv4.nat": "false", "ipv6.address": "none"},
           "description": "", "locations": ["none"], "managed": True, "name": "rximpjn", "status": "Created",
           "type": "bridge"}
# GET /1.0/storage-pools?recursion=1
POOLS = [{"config": {"source": "/var/lib/lxd/storage-pools/default"}, "description": "", "driver": "dir",
          "locations": ["none"], "name": "default", "status": "Created"},
         {"config": {"source": "/var/lib/lxd/storage-pools/rximpjp"}, "description": "", "driver": "dir",
          "locations": ["none"], "name": "rximpjp", "status": "Created"}]
# GET /1.0/storage-pools/rximpjp/volumes/custom?recursion=1&project=rximpjson, with `parent` as read() adds it
VOLUME = {"config": {"size": "64MiB"}, "content_type": "filesystem", "created_at": "0001-01-01T00:00:00Z",
          "description": "", "location": "none", "name": "site", "project": "rximpjson", "type": "custom",
          "parent": "rximpjp"}
# GET /1.0/networks/rximpjn/forwards?recursion=1&project=rximpjson, with `parent` as read() adds it
FORWARD = {"config": {}, "description": "", "listen_address": "10.203.241.250", "location": "none",
           "ports": [{"description": "", "listen_port": "80", "protocol": "tcp", "target_address": "10.203.241.10",
                      "target_port": "8080"}], "parent": "rximpjn"}
# GET /1.0/images?recursion=1
IMAGES = [{"fingerprint": "6b9ef359e924fd0ac717194ed8c6a4e8f35e1b24fc32d4ef31ed50abcd670e82",
           "aliases": [{"description": "", "name": "reconciler-tiny"}], "type": "container"}]


def raw_state(**changed) -> RawState:
    objects = {Kind.INSTANCE: [WEB1], Kind.PROFILE: [DEFAULT_PROFILE], Kind.NETWORK: [NETWORK], Kind("pool"): POOLS,
               Kind("volume"): [VOLUME], Kind("forward"): [FORWARD]}
    objects.update({Kind(k): v for k, v in changed.items()})
    return RawState(copy.deepcopy(objects), copy.deepcopy(IMAGES))


def imported(raw: RawState) -> dict:
    return yaml.safe_load(import_lab(raw, ["web1"], "imp", "rximpjson"))


def test_the_volume_its_pool_and_the_forward_to_the_container_are_declared_and_adopted():
    lab = imported(raw_state())
    assert lab["adopt"] == {"networks": ["rximpjn"], "storage_pools": ["rximpjp"], "volumes": ["site"],
                            "containers": ["web1"], "forwards": ["10.203.241.250"]}
    assert lab["storage_pools"] == {"rximpjp": {"driver": "dir",
                                                "config": {"source": "/var/lib/lxd/storage-pools/rximpjp"}}}
    assert lab["volumes"] == {"site": {"pool": "rximpjp", "config": {"size": "64MiB"}}}
    assert lab["forwards"] == {"10.203.241.250": {"network": "rximpjn", "ports": [
        {"protocol": "tcp", "listen_port": "80", "target": "web1", "target_port": "8080"}]}}
    assert lab["existing"] == {"profiles": ["default"]}  # the root disk's pool is LXD's default: [default] as unwritten


def test_the_written_lab_validates_and_declares_what_lxd_has(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(import_lab(raw_state(), ["web1"], "imp", "rximpjson"))
    lab, _ = load_lab(path, {})
    for kind, live in ((Kind("pool"), POOLS[1]), (Kind("volume"), VOLUME), (Kind("forward"), FORWARD), (Kind.NETWORK, NETWORK)):
        rules = object_kind(kind)
        [want] = rules.desired(lab, Wanted())
        have = rules.from_lxd(live)
        assert have is not None and have.address == want.address
        assert rules.comparable(have, want).body == want.body, kind  # adopting it changes nothing but its tag


def test_what_another_lab_owns_is_existing_never_adopted():
    theirs = {"user.reconciler.lab": "other"}
    pools = [POOLS[0], {**POOLS[1], "config": {**POOLS[1]["config"], **theirs}}]
    lab = imported(raw_state(pool=pools, volume=[{**VOLUME, "config": {**VOLUME["config"], **theirs}}],
                             forward=[{**FORWARD, "config": theirs}]))
    assert lab["existing"]["storage_pools"] == ["default", "rximpjp"]  # written: [default] kept in it
    assert lab["existing"]["volumes"] == ["rximpjp/site"]
    assert "storage_pools" not in lab["adopt"] and "volumes" not in lab["adopt"] and "forwards" not in lab
    assert "storage_pools" not in lab and "volumes" not in lab


def test_an_untagged_volume_on_another_labs_pool_is_adopted_and_the_pool_used():
    pools = [POOLS[0], {**POOLS[1], "config": {**POOLS[1]["config"], OWNER_KEY: "other"}}]
    lab = imported(raw_state(pool=pools))
    assert lab["adopt"]["volumes"] == ["site"] and lab["existing"]["storage_pools"] == ["default", "rximpjp"]


def test_a_volume_lxd_does_not_list_is_existing():
    lab = imported(raw_state(volume=[]))
    assert lab["existing"]["volumes"] == ["rximpjp/site"] and "volumes" not in lab


@pytest.mark.parametrize("forward", [
    {**FORWARD, "ports": [{**FORWARD["ports"][0], "target_address": "10.203.241.99"}]},  # to no chosen container
    {**FORWARD, "config": {"target_address": "10.203.241.99"}},  # a default target elsewhere
    {**FORWARD, "config": {"user.note": "by hand"}},  # a key lab.yaml has no place for
    {**FORWARD, "ports": []},  # leads nowhere
    {**FORWARD, "parent": "lxdbr0"},  # on a network the container is not on
])
def test_a_forward_that_is_not_only_the_chosen_containers_is_left_out(forward):
    lab = imported(raw_state(forward=[forward]))
    assert "forwards" not in lab and "forwards" not in lab["adopt"]


def test_a_default_target_is_the_container_by_name(tmp_path):
    fwd = {**FORWARD, "config": {"target_address": "10.203.241.10"}, "ports": [], "description": "to web1"}
    text = import_lab(raw_state(forward=[fwd]), ["web1"], "imp", "rximpjson")
    assert yaml.safe_load(text)["forwards"] == {"10.203.241.250": {"network": "rximpjn", "description": "to web1",
                                                                   "target": "web1"}}
    (tmp_path / "lab.yaml").write_text(text)
    lab, _ = load_lab(tmp_path / "lab.yaml", {})
    [want] = object_kind(Kind("forward")).desired(lab, Wanted())
    assert want.body == object_kind(Kind("forward")).from_lxd(fwd).body


def test_import_reads_nested_kinds_only_under_what_the_chosen_containers_name():
    under = named_parents(raw_state(), ["web1"])
    pool, forward = object_kind(Kind("volume")), object_kind(Kind("forward"))
    assert under(pool, POOLS[1]) and under(pool, POOLS[0])  # its volume's pool, its root disk's
    assert under(forward, NETWORK) and not under(forward, {**NETWORK, "name": "lxdbr0"})


def test_every_kind_says_what_it_imports():
    chosen = choose(raw_state(), ["web1"])
    for kind in (*OBJECT_KINDS, *INSIDE_KINDS):
        part = kind.imported(raw_state(), chosen)
        table = getattr(kind, "TABLE", "")
        assert set(part) <= {"existing", "adopt"} | ({table} if table else set()), kind
        assert set(part.get("adopt", {})) <= {table}


def test_adopting_a_volume_or_forward_lab_yaml_does_not_declare_is_a_located_error(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(import_lab(raw_state(), ["web1"], "imp", "rximpjson").replace(
        "  - site\n", "  - sight\n").replace("  - 10.203.241.250\n", "  - 10.203.241.251\n"))
    with pytest.raises(SourceError) as err:
        load_lab(path, {})
    said = str(err.value)
    assert "adopt.volumes[0]: 'sight' is not one of the lab's volumes; did you mean 'site'?" in said, said
    assert "adopt.forwards[0]: '10.203.241.251' is not one of the lab's forwards" in said, said
    assert str(path) in said


def test_the_header_names_the_daemon_it_was_read_from():
    assert import_lab(raw_state(), ["web1"], "imp", "p1").startswith("# Written by `reconcile import` from LXD project 'p1'")
    assert import_lab(raw_state(), ["web1"], "imp", "p1", "Incus").startswith(
        "# Written by `reconcile import` from Incus project 'p1'")
