"""Checkpoints proven end to end on the guide's lab (real LXD, real Debian containers, real HTTP through
HAProxy): broken through lab.yaml (web1's Apache answers 500, the other server weighs 0, a third web
server added), applied with an automatic checkpoint, `check` fails; `reconcile rollback` to that
checkpoint, and `check` passes with round robin reaching both servers, hand edits made since are gone,
those made before are back, and the added container is gone.  The tiny-container cases (killed rollbacks,
volumes, retention) are in tests/test_checkpoint.py."""

from __future__ import annotations

import json
import re

import pytest
from test_guide_lab import Guide, guide_lab, until

BROKEN = """\
  web1:
    files:
      /etc/apache2/conf-enabled/broken.conf: {content: "Redirect 500 /\\n"}
    services:
      apache2:
        watches: [/etc/apache2/conf-enabled/client-ip.conf, /etc/apache2/conf-enabled/broken.conf]
        on_change: reload
  web3:
    image: reconciler-debian
    profiles: [default, macvlan]
    vars: {marker: SITE3}
    packages: [apache2]
    services: {apache2: {}}
    files:
      /etc/network/interfaces: {content: "auto lo\\niface lo inet loopback\\nauto eth0\\niface eth0 inet dhcp\\n"}
haproxy:
  proxyha:
    backends:
      subdomain1:
        servers:
          - {name: site1, container: web1, port: 80}
          - {name: site2, container: web2, port: 80, weight: 0}
          - {name: site3, container: web3, port: 80}
      subdomain2:
        servers:
          - {name: site2, container: web2, port: 80, weight: 0}
          - {name: site1, container: web1, port: 80}
"""


class CheckpointGuide(Guide):
    lan_host, http_port = "10.203.46.1", 18540  # its own LAN and ports: it may run beside the other guide labs


@pytest.fixture(scope="module")
def guide(lxd_ready, tmp_path_factory):
    with guide_lab(tmp_path_factory, "checkpoint", CheckpointGuide) as lab:
        lab.apply()
        assert until(lab.serving, 60), [(a.status, a.marker) for a in lab.answers("site1.testdomain.com")]
        yield lab


def in_web2(lab: Guide, command: str, check: bool = True) -> str:
    return lab.lxc("exec", "web2", "--", "sh", "-c", command, check=check)


def test_a_lab_broken_through_lab_yaml_is_rolled_back_to_its_automatic_checkpoint(guide):
    lab = guide
    in_web2(lab, "echo before > /root/before.txt")
    lab.set_override(BROKEN)
    broken = lab.run("apply", "--yes", "--checkpoint", "auto")
    assert broken.code == 0, broken.out[-3000:] + broken.err
    [auto] = json.loads(lab.run("checkpoints", "--json").out)
    assert auto["auto"] and f"Taking checkpoint {auto['name']} before applying" in broken.err, broken.err
    failed = lab.run("check")
    assert failed.code == 1, failed.out + failed.err
    in_web2(lab, "echo after > /root/after.txt; rm /root/before.txt")

    lab.set_override()  # the working lab.yaml, as the checkpoint recorded it
    back = lab.run("rollback", auto["name"], "--yes")
    assert back.code == 0, back.out[-3000:] + back.err
    assert "instance.web3" in back.out, back.out
    assert until(lambda: lab.run("check").code == 0, 60), lab.run("check").out
    checked = lab.run("check").out
    assert {"site1(SITE1)", "site2(SITE2)"} <= set(re.findall(r"site\d\(SITE\d\)", checked)), checked
    assert in_web2(lab, "cat /root/before.txt") == "before\n"
    assert in_web2(lab, "ls /root/after.txt", check=False) == ""
    assert "web3" not in [i["name"] for i in json.loads(lab.lxc("list", "--format=json"))]
    again = lab.run("plan", "--detailed-exitcode")
    assert again.code == 0 and "No changes." in again.out, again.out + again.err
