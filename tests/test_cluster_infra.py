"""The three-member LXD cluster that scripts/cluster-up.sh builds in system containers (lxdm1..3 on
the bridge lcbr0, registered as the lxc remote `labcluster`).

The cluster is deliberately NOT torn down at the end: later tests reuse it, and bringing it up
again costs half a minute. `make cluster-down` (scripts/cluster-down.sh) removes it.
"""

from __future__ import annotations

import json
import subprocess

from conftest import ROOT

UP = ROOT / "scripts" / "cluster-up.sh"
MEMBERS = {"lxdm1": "10.203.90.11", "lxdm2": "10.203.90.12", "lxdm3": "10.203.90.13"}


def cluster_up() -> subprocess.CompletedProcess:
    # Cold (member image missing) it builds the image too: a few minutes at most.
    done = subprocess.run(["bash", str(UP)], text=True, capture_output=True, timeout=1200,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"cluster-up.sh failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_cluster_up_is_idempotent_and_online(lxd_ready):
    cluster_up()

    listed = subprocess.run(["lxc", "cluster", "list", "labcluster:", "--format=json"],
                            text=True, capture_output=True, timeout=60, check=True)
    members = {m["server_name"]: m for m in json.loads(listed.stdout)}
    assert sorted(members) == sorted(MEMBERS)
    for name, address in MEMBERS.items():
        assert members[name]["status"] == "Online", members[name]
        assert members[name]["url"] == f"https://{address}:8443"

    again = cluster_up()
    assert again.stdout.rstrip().splitlines()[-1].startswith("cluster-up: nothing changed"), again.stdout
