"""`reconcile check` on labs with weights, backups, access rules and PROXY protocol: what it asks and what
it expects.  No LXD (the traffic itself is in test_guide_examples.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from reconciler.check import Answer, EntryPoint, check_client, cycle, entry_points, targets
from reconciler.spec import load_lab

LAB = """\
lab: chk
profiles:
  base: {devices: {root: {type: disk, path: /, pool: default}}}
containers:
  web1: {image: reconciler-tiny, profiles: [base]}
  web2: {image: reconciler-tiny, profiles: [base]}
  web3: {image: reconciler-tiny, profiles: [base]}
  proxyha:
    image: reconciler-tiny
    profiles: [base]
    devices:
      http: {type: proxy, listen: "tcp:127.0.0.1:18620", connect: "tcp:127.0.0.1:80", proxy_protocol: true}
      lan: {type: proxy, listen: "tcp:10.203.60.1:18621", connect: "tcp:127.0.0.1:80", proxy_protocol: true}
haproxy:
  proxyha:
    conditions:
      from_lan: {src: 10.203.60.1}
      local: {src: 127.0.0.2}
    frontends:
      http_frontend:
        bind: "*:80"
        accept_proxy: true
        access:
          - {action: deny, if: from_lan, status: 403}
        routes:
          - {host: weighted.test, backend: weighted}
          - {host: spare.test, backend: spare}
          - {host: closed.test, if: local, backend: spare}
    backends:
      weighted:
        servers: [{container: web1, weight: 3}, {container: web2, weight: 1}, {container: web3, weight: 0}]
      spare:
        servers: [{container: web1}, {container: web2, backup: true}]
"""


def lab(tmp_path: Path, text: str = LAB):
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent(text))
    return load_lab(path, {})[0]


def test_check_asks_from_the_address_the_device_passes_on(tmp_path):
    spec = lab(tmp_path)
    assert entry_points(spec, "proxyha", 80) == [  # on loopback, from an address that is not the device's own
        EntryPoint("127.0.0.1", 18620, "127.0.0.2", "http", True, "127.0.0.2"),
        EntryPoint("10.203.60.1", 18621, "10.203.60.1", "lan", True, None)]
    plain = lab(tmp_path, LAB.replace(", proxy_protocol: true}", "}").replace("        accept_proxy: true\n", ""))
    assert [p.src for p in entry_points(plain, "proxyha", 80)] == ["127.0.0.1", "127.0.0.1"]  # HAProxy sees the device


def test_check_expects_round_robin_by_weight_and_backups_only_when_needed(tmp_path):
    found, skipped = targets(lab(tmp_path))
    by_host = {t.host: t for t in found}
    assert cycle(by_host["weighted.test"].backend) == 4  # 3 + 1: a round takes four requests
    assert by_host["weighted.test"].serving({"web1", "web2", "web3"}) == {"web1", "web2"}  # weight 0 serves none
    assert by_host["spare.test"].serving({"web1", "web2"}) == {"web1"}
    assert by_host["spare.test"].serving({"web2"}) == {"web2"}  # the backup, once the other is down
    assert by_host["closed.test"].backend_name == "spare"  # its `if` holds for check's requests from 127.0.0.2
    assert skipped == []


def test_check_says_when_an_access_rule_denies_its_own_requests(tmp_path):
    http, lan = (line for line in LAB.splitlines(keepends=True) if line.startswith(("      http:", "      lan:")))
    found, skipped = targets(lab(tmp_path, LAB.replace(http + lan, lan + http)))  # check asks through lan now
    assert found == [] and skipped[0] == ("proxyha/http_frontend: access rule 0 denies weighted.test from 10.203.60.1"
                                          " (403): check cannot ask it")


def test_check_judges_whom_haproxy_saw_where_it_chose_its_own_address(tmp_path, capsys):
    found, _ = targets(lab(tmp_path))
    through_http = next(t for t in found if t.point == ("127.0.0.1", 18620))  # PROXY protocol, check from 127.0.0.2
    kept, lost = (Answer(200, "web1", "", seen=seen, sent_from="127.0.0.2") for seen in ("127.0.0.2", "127.0.0.1"))
    assert check_client(through_http, [kept, kept])
    assert capsys.readouterr().out == ("client 127.0.0.2 via 127.0.0.1:18620: HAProxy saw 127.0.0.2 (proxy device"
                                       " http passes the client on)\n")
    assert not check_client(through_http, [kept, lost])
    assert "HAProxy saw 127.0.0.1, 127.0.0.2, not 127.0.0.2: proxy device http should pass" in capsys.readouterr().out
    plain = lab(tmp_path, LAB.replace(", proxy_protocol: true}", "}").replace("        accept_proxy: true\n", ""))
    without = next(t for t in targets(plain)[0] if t.point == ("127.0.0.1", 18620))
    lost_anyway = Answer(200, "web1", "", seen="127.0.0.1", sent_from="127.0.0.2")
    assert check_client(without, [lost_anyway])  # said, not failed: the lab does not ask for the client's address
    assert "HAProxy saw 127.0.0.1 (proxy device http connects from inside proxyha" in capsys.readouterr().out
