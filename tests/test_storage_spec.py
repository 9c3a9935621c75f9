"""Storage pools and custom volumes without LXD: lab.yaml's `storage_pools:` and `volumes:` validated (each
problem at its line), their desired state, LXD's JSON read back, and the order of steps: a pool before its
volumes, a volume before the containers that mount it; deleted the other way round."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler import address as a
from reconciler import kinds
from reconciler.desired import desired_state
from reconciler.diff import diff_states
from reconciler.kinds import storage_pool, storage_volume
from reconciler.live import as_comparable, live_from_raw, users_of
from reconciler.lxd import RawState
from reconciler.plan import Action, make_plan
from reconciler.render import plan_text
from reconciler.source import SourceError
from reconciler.spec import load_lab

LAB = """\
lab: store
storage_pools:
  labdata:
    driver: dir
    description: the lab's data
volumes:
  site:
    pool: labdata
    description: the web site, shared by both servers
    config: {size: 64MiB}
profiles:
  onlab:
    devices:
      root: {type: disk, path: /, pool: labdata}
containers:
  web1:
    image: reconciler-tiny
    devices:
      site: {type: disk, pool: labdata, source: site, path: /var/www/html}
  web2:
    image: reconciler-tiny
    profiles: [default, onlab]
    devices:
      site: {type: disk, pool: labdata, source: site, path: /var/www/html, readonly: true}
"""

POOL = a.Address(a.Kind("pool"), "labdata")
VOLUME = a.Address(a.Kind("volume"), "labdata/site")

# `lxc query /1.0/storage-pools/rk-probe-x` on LXD 5.0.2, after `lxc storage create rk-probe-x dir
# user.reconciler.lab=probe` (name and lab changed to this test's)
RAW_POOL = {"config": {"source": "/var/lib/lxd/storage-pools/labdata", "user.reconciler.lab": "store"},
            "description": "", "driver": "dir", "locations": ["none"], "name": "labdata", "status": "Created",
            "used_by": []}
# `lxc query "/1.0/storage-pools/rk-probe-x/volumes/custom?recursion=1&project=rkprobe"` on LXD 5.0.2, after
# `lxc storage volume create rk-probe-x site --project rkprobe user.reconciler.lab=probe size=10MiB` (one item;
# pool and lab changed), with `parent` added as lxd.read adds it
RAW_VOLUME = {"config": {"size": "10MiB", "user.reconciler.lab": "store"}, "content_type": "filesystem",
              "created_at": "0001-01-01T00:00:00Z", "description": "", "location": "none", "name": "site",
              "project": "rkprobe", "type": "custom", "used_by": [], "parent": "labdata"}


def load(tmp_path: Path, text: str = LAB):
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return load_lab(path, {})[0]


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SourceError) as caught:
        load(tmp_path, text)
    return [str(p) for p in caught.value.problems]


def test_pools_and_volumes_load_and_wait_for_each_other(tmp_path):
    desired = desired_state(load(tmp_path), tmp_path, {}, {})
    assert desired[POOL].body == {"driver": "dir", "description": "the lab's data", "config": {}}
    assert desired[VOLUME].body == {"pool": "labdata", "content_type": "filesystem",
                                    "description": "the web site, shared by both servers", "config": {"size": "64MiB"}}
    assert desired[VOLUME].depends_on == (POOL,)
    assert VOLUME in desired[a.instance("web1")].depends_on and VOLUME in desired[a.instance("web2")].depends_on
    assert POOL in desired[a.profile("onlab")].depends_on  # its root disk is on the pool


def test_what_lab_yaml_does_not_own_is_no_dependency(tmp_path):
    """A disk on an existing pool or volume (the default pool's root disk) waits for nothing."""
    lab = load(tmp_path, LAB.replace("lab: store\n", "lab: store\nexisting: {volumes: [default/old]}\n")
               + "  web3:\n    image: reconciler-tiny\n    devices:\n"
               "      old: {type: disk, pool: default, source: old, path: /old}\n")
    deps = desired_state(lab, tmp_path, {}, {})[a.instance("web3")].depends_on
    assert [d for d in deps if d.kind in (a.Kind("pool"), a.Kind("volume"))] == []


BAD = [
    # (id, old text, new text, expected problem)
    ("driver", "driver: dir", "driver: nfs",
     "lab.yaml:4:13: storage_pools.labdata.driver: Input should be 'dir', 'btrfs', 'lvm' or 'zfs'"),
    ("content-type", "pool: labdata\n    description: the web", "pool: labdata\n    content_type: iso\n"
     "    description: the web", "volumes.site.content_type: Input should be 'filesystem' or 'block'"),
    ("unknown-pool", "    pool: labdata\n", "    pool: labdat\n",
     "lab.yaml:8:11: volumes.site.pool: unknown storage pool 'labdat'; did you mean 'labdata'? (declare it under"
     " storage_pools:, or list it under existing.storage_pools)"),
    ("unknown-volume", "pool: labdata, source: site, path: /var/www/html}", "pool: labdata, source: sit, path: /x}",
     "lab.yaml:19:49: containers.web1.devices.site.source: unknown volume 'sit' on pool 'labdata'; did you mean"
     " 'site'?"),
    ("disk-on-unknown-pool", "root: {type: disk, path: /, pool: labdata}", "root: {type: disk, path: /, pool: other}",
     "lab.yaml:14:41: profiles.onlab.devices.root.pool: unknown storage pool 'other'"),
    ("reserved-key", "config: {size: 64MiB}", "config: {size: 64MiB, user.reconciler.lab: x}",
     "volumes.site.config: 'user.reconciler.lab': volatile.*, image.* and user.reconciler.* keys belong to LXD"),
    ("volume-size", "config: {size: 64MiB}", "config: {size: -5MiB}",
     "volumes.site.config: size: '-5MiB' is not a size LXD takes, such as 64MiB, 1GB or 1073741824"),
    ("pool-size", "    driver: dir\n", "    driver: dir\n    config: {volume.size: lots}\n",
     "storage_pools.labdata.config: volume.size: 'lots' is not a size LXD takes"),
    ("pool-name", "  labdata:\n    driver", "  -labdata:\n    driver",
     "lab.yaml:3:3: storage_pools.-labdata: '-labdata' is not a valid storage pool name"),
    ("owned-and-existing", "lab: store\n", "lab: store\nexisting: {storage_pools: [labdata]}\n",
     "storage_pools.labdata: 'labdata' is declared here and listed under existing.storage_pools"),
    ("implicit-default", "  labdata:\n    driver", "  default:\n    driver",
     "storage_pools.default: 'default' is declared here and listed under existing.storage_pools (which is"
     " [default] unless written)"),
]


@pytest.mark.parametrize("old, new, expected", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_what_lxd_would_refuse_is_a_problem_at_its_line(tmp_path, old, new, expected):
    assert old in LAB
    found = problems(tmp_path, LAB.replace(old, new, 1))
    assert any(expected in line for line in found), found


def test_a_volume_named_on_another_pool_than_its_own_is_unknown(tmp_path):
    text = LAB.replace("storage_pools:\n", "storage_pools:\n  other: {driver: dir}\n").replace(
        "pool: labdata, source: site, path: /var/www/html}", "pool: other, source: site, path: /var/www/html}")
    assert any("containers.web1.devices.site.source: unknown volume 'site' on pool 'other'" in p
               for p in problems(tmp_path, text))


def test_lxds_json_reads_back_as_the_lab_wrote_it(tmp_path):
    have = storage_pool.from_lxd(RAW_POOL)
    assert have.owner == "store" and have.body["config"] == {"source": "/var/lib/lxd/storage-pools/labdata"}
    want = desired_state(load(tmp_path), tmp_path, {}, {})
    assert storage_pool.comparable(have, want[POOL]).body == {**want[POOL].body, "description": ""}
    volume = storage_volume.from_lxd(RAW_VOLUME)
    assert volume is not None and volume.address == VOLUME and volume.depends_on == (POOL,)
    assert volume.body == {"pool": "labdata", "content_type": "filesystem", "description": "",
                           "config": {"size": "10MiB"}}
    assert storage_volume.from_lxd({**RAW_VOLUME, "type": "container"}) is None  # a container's own volume


def test_a_source_set_in_lab_yaml_is_compared(tmp_path):
    lab = load(tmp_path, LAB.replace("driver: dir\n", "driver: dir\n    config: {source: /srv/pool}\n"))
    want = desired_state(lab, tmp_path, {}, {})[POOL]
    assert storage_pool.comparable(storage_pool.from_lxd(RAW_POOL), want).body["config"] == {
        "source": "/var/lib/lxd/storage-pools/labdata"}


def live(pools: list[dict], volumes: list[dict], instances: list[dict] = ()):
    raw = {a.Kind.INSTANCE: list(instances), a.Kind("pool"): list(pools), a.Kind("volume"): list(volumes)}
    return live_from_raw(RawState(raw), "store")


def test_a_size_changed_by_hand_is_drift_and_a_new_content_type_replaces(tmp_path):
    desired = desired_state(load(tmp_path), tmp_path, {}, {})
    found = live([RAW_POOL], [RAW_VOLUME])
    owned = {k: v for k, v in found.owned.items()}
    as_comparable(desired, owned)
    changes = {c.address: c for c in diff_states({POOL: desired[POOL], VOLUME: desired[VOLUME]}, owned)}
    assert changes[VOLUME].actions == (Action.UPDATE,)
    assert [f.path for f in changes[VOLUME].diff] == ["config.size", "description"]
    assert changes[POOL].actions == (Action.UPDATE,)  # only its description: the source LXD chose is no drift
    block = {**RAW_VOLUME, "content_type": "block"}
    changes = {c.address: c for c in diff_states({VOLUME: desired[VOLUME]}, live([RAW_POOL], [block]).owned)}
    assert changes[VOLUME].actions == (Action.REPLACE,)


def test_destroy_deletes_the_container_then_the_volume_then_the_pool():
    web1 = {"name": "web1", "type": "container", "status": "Running", "profiles": ["default"],
            "config": {"user.reconciler.lab": "store"},
            "devices": {"site": {"type": "disk", "pool": "labdata", "source": "site", "path": "/var/www/html"}}}
    found = live([RAW_POOL], [RAW_VOLUME], [web1])
    assert VOLUME in found.owned[a.instance("web1")].depends_on
    plan = make_plan("store", diff_states({}, found.owned), users_of(found.owned))
    assert [str(s) for s in plan.order()] == ["instance.web1#delete", "volume.labdata/site#delete",
                                              "pool.labdata#delete"]


def test_another_labs_pool_and_volume_are_foreign():
    other = {**RAW_POOL, "config": {"user.reconciler.lab": "other"}}
    found = live([other], [{**RAW_VOLUME, "config": {}}])
    assert found.foreign == {POOL: "other", VOLUME: None} and not found.owned


def test_create_order_is_pool_volume_container(tmp_path):
    desired = desired_state(load(tmp_path), tmp_path, {}, {})
    plan = make_plan("store", diff_states(desired, {}), {})
    order = [str(s) for s in plan.order()]
    assert order.index("pool.labdata#create") < order.index("volume.labdata/site#create") < order.index(
        "instance.web1#create")


def test_the_graph_draws_pool_then_volume_then_the_containers_that_mount_it(tmp_path):
    from reconciler.graph import lab_graph, to_dot
    dot = to_dot(lab_graph("store", desired_state(load(tmp_path), tmp_path, {}, {})))
    assert '"pool.labdata" [label="pool\\nlabdata", shape=cylinder' in dot
    assert '"pool.labdata" -> "volume.labdata/site";' in dot
    assert '"volume.labdata/site" -> "instance.web1";' in dot and '"volume.labdata/site" -> "instance.web2";' in dot


def test_a_volume_deleted_or_replaced_is_named_as_data_loss(tmp_path):
    desired = desired_state(load(tmp_path), tmp_path, {}, {})
    block = {**RAW_VOLUME, "content_type": "block", "config": {"size": "64MiB", "user.reconciler.lab": "store"},
             "description": "the web site, shared by both servers"}
    replaced = diff_states({VOLUME: desired[VOLUME]}, live([RAW_POOL], [block]).owned)
    gone = diff_states({}, live([RAW_POOL], [RAW_VOLUME]).owned)
    assert kinds.data_losses(replaced) == ["it replaces volume.labdata/site: the data on it is lost"]
    assert kinds.data_losses(gone) == ["it deletes volume.labdata/site: the data on it is lost"]
    assert kinds.data_losses(diff_states({}, live([RAW_POOL], []).owned)) == []  # a pool alone: no data
    text = plan_text(make_plan("store", gone, {}), colour=False, lab_file="lab.yaml")
    assert "- volume.labdata/site will be deleted" in text and "      the data on it is lost" in text


@pytest.mark.parametrize("text, expected", [("64MiB", 64 * 2**20), ("1GB", 10**9), ("1073741824", 2**30),
                                            ("2 GiB", 2 * 2**30), ("10MB", 10**7), ("", None), (None, None),
                                            ("lots", None), ("1ZiB", None), ("9" * 5000, None)])
def test_sizes_read_as_lxd_writes_them(text, expected):
    assert storage_volume.size_bytes(text) == expected


def test_a_volume_grows_and_never_shrinks():
    assert storage_volume.shrinks("64MiB", "1GiB") is None and storage_volume.shrinks(None, "1GiB") is None
    assert storage_volume.shrinks("1GiB", "1073741824") is None  # the same size, another unit
    assert "size 1GiB -> 64MiB would shrink the volume" in storage_volume.shrinks("1GiB", "64MiB")



def test_on_btrfs_a_shrink_is_refused_too_saying_why():
    refused = storage_volume.shrinks("128MiB", "100MiB", "btrfs")
    assert refused and refused.startswith("size 128MiB -> 100MiB would shrink the volume, on btrfs its size is a quota")
    assert "data beyond the new size would be lost" not in refused and "a volume only grows" in refused
    assert "data beyond the new size would be lost" in storage_volume.shrinks("128MiB", "100MiB", "dir")
    assert storage_volume.shrinks("64MiB", "128MiB", "btrfs") is None
