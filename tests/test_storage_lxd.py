"""Storage pools and custom volumes on a real LXD (dir driver): created, drift-checked and repaired,
replaced, deleted and destroyed; a pool the lab does not own is never touched; and the point of it all,
a file on a volume outlives the container that wrote it being replaced. A btrfs pool on the loop file
LXD makes for it as well: there a volume's size is a quota (grown in place, shrunk when its data fits).

Pools are server-wide: each test names its pools with its project's tag (two runs never clash) and its
fixture deletes every pool so named, after the containers and volumes on them."""

from __future__ import annotations

import json
import os

import pytest
from conftest import sh, until

from reconciler.daemon import TITLES

pytestmark = pytest.mark.daemons("lxd", "incus")

LAB = """\
lab: @TAG@
lxd: {project: @PROJECT@}
storage_pools:
  @TAG@data:
    driver: dir
    description: the lab's data
volumes:
  site:
    pool: @TAG@data
    description: the web site
    config: {size: 64MiB}
  scratch:
    pool: @TAG@data
containers:
  web1:
    image: reconciler-tiny
    devices:
      site: {type: disk, pool: @TAG@data, source: site, path: /srv/site}
"""


@pytest.fixture
def store(lab):
    """The lab, and afterwards its containers, then the volumes on its pools, then the pools deleted."""
    yield lab
    for inst in json.loads(lab.lxc("list", "--format=json")):
        lab.lxc("delete", "--force", inst["name"], check=False)
    for pool in json.loads(sh(lab.client, "storage", "list", "--format=json").stdout):
        if pool["name"].startswith(lab.tag):
            for vol in json.loads(lab.lxc("storage", "volume", "list", pool["name"], "--format=json")):
                if vol["type"] == "custom":
                    lab.lxc("storage", "volume", "delete", pool["name"], vol["name"], check=False)
            sh(lab.client, "storage", "delete", pool["name"], check=False)


def run(lab, *args: str) -> str:
    result = lab.run(*args)
    assert result.code == 0, result.out + result.err
    return result.out


def tiny_fingerprint(lab) -> str:
    return json.loads(sh(lab.client, "image", "list", "reconciler-tiny", "--format=json").stdout)[0]["fingerprint"]


SHARED = LAB + """\
  web2:
    image: reconciler-tiny
    devices:
      site: {type: disk, pool: @TAG@data, source: site, path: /srv/site, readonly: true}
"""


def test_a_file_on_the_volume_outlives_its_container_being_replaced_and_is_shared(store):
    lab = store
    lab.write(SHARED)
    shown = run(lab, "plan")
    assert f"+ pool.{lab.tag}data will be created" in shown and f"+ volume.{lab.tag}data/site will be created" in shown
    done = run(lab, "apply", "--yes")
    assert done.index(f"pool.{lab.tag}data: created") < done.index(f"volume.{lab.tag}data/site: created") \
        < done.index("instance.web1: created")
    assert lab.query(f"/1.0/storage-pools/{lab.tag}data")["config"]["user.reconciler.lab"] == lab.tag
    volume = lab.query(f"/1.0/storage-pools/{lab.tag}data/volumes/custom/site?project={lab.project}")
    assert volume["config"]["user.reconciler.lab"] == lab.tag and volume["config"]["size"] == "64MiB"
    assert "No changes." in run(lab, "plan")
    lab.lxc("exec", "web1", "--", "sh", "-c", "echo kept > /srv/site/index.html")
    assert lab.lxc("exec", "web2", "--", "cat", "/srv/site/index.html") == "kept\n"  # one volume, two containers
    lab.write(SHARED.replace("image: reconciler-tiny", f"image: {tiny_fingerprint(lab)}", 1))
    assert "-/+ instance.web1 will be replaced" in run(lab, "plan")
    before = lab.instance("web1")["created_at"]
    assert "instance.web1: replaced" in run(lab, "apply", "--yes")
    assert lab.instance("web1")["created_at"] != before  # a new container...
    assert lab.lxc("exec", "web1", "--", "cat", "/srv/site/index.html") == "kept\n"  # ...and the same data
    refused = lab.lxc("exec", "web2", "--", "sh", "-c", "(echo no > /srv/site/x) 2>/dev/null && echo wrote || echo refused")
    assert refused == "refused\n"  # web2 mounts it read-only


def test_drift_is_shown_and_repaired_a_content_type_replaces_and_removal_deletes(store):
    lab = store
    lab.write(LAB)
    run(lab, "apply", "--yes")
    lab.lxc("storage", "volume", "set", f"{lab.tag}data", "site", "size=32MiB")
    sh(lab.client, "storage", "set", f"{lab.tag}data", "user.note=by hand")
    shown = run(lab, "plan")
    assert f"~ volume.{lab.tag}data/site will be updated in place (differs: config.size) [changed outside" \
           " lab.yaml]" in shown, shown
    assert 'config.size: "32MiB" -> "64MiB"' in shown
    assert f"~ pool.{lab.tag}data will be updated in place" in shown and "user.note" in shown
    run(lab, "apply", "--yes")
    assert "No changes." in run(lab, "plan")
    assert "user.note" not in lab.query(f"/1.0/storage-pools/{lab.tag}data")["config"]
    lab.write(LAB.replace("size: 64MiB", "size: 16MiB"))
    shrunk = lab.run("apply", "--yes")
    assert shrunk.code == 1 and f"volume.{lab.tag}data/site: size 64MiB -> 16MiB would shrink the volume" in \
        shrunk.out + shrunk.err, shrunk.out + shrunk.err
    site = f"/1.0/storage-pools/{lab.tag}data/volumes/custom/site?project={lab.project}"
    assert lab.query(site)["config"]["size"] == "64MiB"
    block = LAB.replace("  scratch:\n    pool: @TAG@data\n", "  scratch:\n    pool: @TAG@data\n    content_type: block\n")
    lab.write(block)
    shown = run(lab, "plan")
    assert f"-/+ volume.{lab.tag}data/scratch will be replaced (replace because content_type 'filesystem' ->" \
           " 'block')" in shown and "the data on it is lost" in shown
    refused = lab.run("apply", "--yes")
    assert refused.code == 1 and f"it replaces volume.{lab.tag}data/scratch: the data on it is lost" in refused.err
    run(lab, "apply", "--yes", "--force")
    scratch = f"/1.0/storage-pools/{lab.tag}data/volumes/custom/scratch?project={lab.project}"
    assert lab.query(scratch)["content_type"] == "block"
    lab.write(block.replace("  scratch:\n    pool: @TAG@data\n    content_type: block\n", ""))
    assert lab.run("apply", "--yes").code == 1  # without --force: the data on it is lost
    assert f"volume.{lab.tag}data/scratch: deleted" in run(lab, "apply", "--yes", "--force")
    assert sh(lab.client, "query", scratch, check=False).returncode != 0
    destroyed = run(lab, "destroy", "--yes")
    assert destroyed.index("instance.web1: deleted") < destroyed.index(f"volume.{lab.tag}data/site: deleted") \
        < destroyed.index(f"pool.{lab.tag}data: deleted")
    assert f"{lab.tag}data" not in sh(lab.client, "storage", "list", "--format=csv").stdout


def test_a_pool_the_lab_does_not_own_is_never_touched(store):
    lab = store
    sh(lab.client, "storage", "create", f"{lab.tag}data", "dir")  # made by hand: no lab's tag
    lab.write(LAB)
    refused = lab.run("plan")
    assert refused.code == 1 and f"pool.{lab.tag}data already exists in {TITLES[lab.daemon]} and belongs to no lab" in refused.err
    sh(lab.client, "storage", "create", f"{lab.tag}other", "dir", "user.reconciler.lab=someone-else")
    lab.write(LAB.replace("@TAG@data", "@TAG@mine"))
    run(lab, "apply", "--yes")
    run(lab, "destroy", "--yes")
    names = sh(lab.client, "storage", "list", "--format=csv").stdout
    assert f"{lab.tag}data," in names and f"{lab.tag}other," in names and f"{lab.tag}mine," not in names


def test_a_volume_dropped_with_the_disk_that_mounts_it_is_let_go_of_first(store):
    lab = store
    lab.write(LAB)
    run(lab, "apply", "--yes")
    lab.write(LAB.replace("  site:\n    pool: @TAG@data\n    description: the web site\n    config: {size: 64MiB}\n", "")
              .replace("    devices:\n      site: {type: disk, pool: @TAG@data, source: site, path: /srv/site}\n", ""))
    done = run(lab, "apply", "--yes", "--force")
    assert done.index("instance.web1: updated") < done.index(f"volume.{lab.tag}data/site: deleted")
    assert lab.instance("web1")["devices"] == {} and "No changes." in run(lab, "plan")


BTRFS = """\
lab: @TAG@
lxd: {project: @PROJECT@}
storage_pools:
  @TAG@bt:
    driver: btrfs
    description: on a loop file the daemon makes
    config: {size: 1GiB}
volumes:
  data:
    pool: @TAG@bt
    config: {size: 64MiB}
containers:
  box:
    image: reconciler-tiny
    devices:
      data: {type: disk, pool: @TAG@bt, source: data, path: /srv/data}
"""
MIB = 2 ** 20


def test_a_btrfs_pool_on_a_loop_file_its_volume_grows_in_place_never_shrinks_and_drift_is_put_back(store):
    lab = store
    bt = f"{lab.tag}bt"
    lab.write(BTRFS)
    done = run(lab, "apply", "--yes")
    assert done.index(f"pool.{bt}: created") < done.index(f"volume.{bt}/data: created") < done.index("instance.box: created")
    made = lab.query(f"/1.0/storage-pools/{bt}")
    loop = made["config"]["source"]  # filled in by the daemon: the loop file it made, no drift
    assert made["driver"] == "btrfs" and made["config"]["size"] == "1GiB" and loop.endswith(f"/disks/{bt}.img")
    assert os.path.isfile(loop) and "No changes." in run(lab, "plan")
    site = f"/1.0/storage-pools/{bt}/volumes/custom/data?project={lab.project}"
    state = f"/1.0/storage-pools/{bt}/volumes/custom/data/state?project={lab.project}"

    lab.lxc("storage", "volume", "set", bt, "data", "size=32MiB")  # by hand, while it holds next to nothing
    shown = run(lab, "plan")
    assert f"~ volume.{bt}/data will be updated in place (differs: config.size) [changed outside lab.yaml]" in shown
    assert 'config.size: "32MiB" -> "64MiB"' in shown, shown
    run(lab, "apply", "--yes")
    assert lab.query(site)["config"]["size"] == "64MiB" and "No changes." in run(lab, "plan")

    lab.lxc("exec", "box", "--", "sh", "-c", "echo kept > /srv/data/note && dd if=/dev/zero of=/srv/data/a bs=1M count=40")
    assert "No changes." in run(lab, "apply", "--yes")
    assert lab.lxc("exec", "box", "--", "cat", "/srv/data/note") == "kept\n"

    lab.write(BTRFS.replace("size: 64MiB", "size: 128MiB"))  # grows in place: its quota group's limit
    shown = run(lab, "plan")
    assert f"~ volume.{bt}/data will be updated in place (differs: config.size)" in shown, shown
    assert f"volume.{bt}/data: updated" in run(lab, "apply", "--yes")
    lab.lxc("exec", "box", "--", "sh", "-c", "dd if=/dev/zero of=/srv/data/b bs=1M count=40 && sync")  # 80MiB > 64MiB
    # LXD counts what btrfs has committed (the sync); LXD 5.0 gives the quota as the total, Incus 6.0 gives 0
    assert until(lambda: lab.query(state)["usage"]["used"] >= 80 * MIB, 30, step=0.5), lab.query(state)
    assert lab.query(site)["config"]["size"] == "128MiB"
    assert lab.daemon != "lxd" or lab.query(state)["usage"]["total"] == 128 * MIB

    lab.write(BTRFS)  # 64MiB again: refused before the daemon is asked, saying why
    refused = lab.run("apply", "--yes")
    assert refused.code == 1 and f"volume.{bt}/data: size 128MiB -> 64MiB would shrink the volume, on btrfs its size" \
        " is a quota" in refused.out + refused.err, refused.out + refused.err
    assert lab.query(site)["config"]["size"] == "128MiB"
    lab.lxc("exec", "box", "--", "sh", "-c", "echo more >> /srv/data/note")  # and it still takes writes
    assert lab.lxc("exec", "box", "--", "sh", "-c", "cat /srv/data/note; wc -c < /srv/data/a") == \
        f"kept\nmore\n{40 * MIB}\n"

    destroyed = run(lab, "destroy", "--yes")
    assert destroyed.index("instance.box: deleted") < destroyed.index(f"volume.{bt}/data: deleted") \
        < destroyed.index(f"pool.{bt}: deleted")
    assert f"{bt}," not in sh(lab.client, "storage", "list", "--format=csv").stdout and not os.path.exists(loop)
