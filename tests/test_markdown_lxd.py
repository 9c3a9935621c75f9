"""`reconcile plan --markdown` on a real lab drifted by hand, and a Jinja loop over every container
rendered at apply from live addresses.  Tiny busybox containers on a bridge of their own."""

from __future__ import annotations

import hashlib
import json
import re

LAB = """\
lab: @TAG@
lxd: {project: @PROJECT@}
networks:
  @TAG@b:
    config: {ipv4.address: 10.203.71.1/24, ipv4.nat: false, ipv6.address: none}
profiles:
  net:
    devices:
      eth0: {type: nic, network: @TAG@b, name: eth0}
containers:
  c1:
    image: reconciler-tiny
    profiles: [default, net]
    config: {user.note: first}
    files:
      /etc/motd: {content: "hello\\nworld\\n"}
      /etc/key: {content: "hunter2\\n", secret: true, mode: "0600"}
      /srv/peers:
        template: |
          {% for c in containers.values() %}
          {{ c.name }} {{ c.address }}
          {% endfor %}
  c2:
    image: reconciler-tiny
    profiles: [default, net]
"""


def address(lab, name: str) -> str:
    state = lab.instance(name, "/state")
    return [a["address"] for a in state["network"]["eth0"]["addresses"] if a["family"] == "inet"][0]


def test_a_drifted_lab_as_a_pull_request_comment(lab):
    lab.write(LAB)
    first = lab.run("apply", "--yes")
    assert first.code == 0, first.out + first.err
    peers = lab.lxc("exec", "c1", "--", "cat", "/srv/peers")
    assert peers == f"c1 {address(lab, 'c1')}\nc2 {address(lab, 'c2')}\n"

    lab.lxc("exec", "c1", "--", "sh", "-c", "echo changed > /etc/motd; echo letmein > /etc/key")
    lab.lxc("config", "set", "c1", "user.note", "second")
    text = lab.run("plan", "--markdown")
    assert text.code == 0, text.err
    comment = text.out
    as_json = json.loads(lab.run("plan", "--json").out)
    assert as_json["unchanged"] == 4  # the network, the profile, c2 and /srv/peers
    assert "**3 to update**, and 4 unchanged." in comment
    assert "| `~` | update | `instance.c1` | differs: config\\[\"user.note\"\\] | outside lab.yaml |" in comment
    assert "| `~` | update | `file.c1:/etc/key` | differs: sha256 | outside lab.yaml |" in comment
    assert re.search(r"\| `~` \| update \| `file.c1:/etc/motd` \| differs: content \| outside lab.yaml \|", comment)
    motd = comment.split("<summary><code>file.c1:/etc/motd</code>: update</summary>")[1].split("</details>")[0]
    assert "\n-changed\n+hello\n+world\n" in motd and motd.strip().startswith("```diff")
    key = comment.split("<summary><code>file.c1:/etc/key</code>: update</summary>")[1].split("</details>")[0]
    assert "~content: (secret changed)" in key
    for secret in (b"hunter2\n", b"letmein\n"):
        assert secret.decode().strip() not in comment
        assert hashlib.sha256(secret).hexdigest()[:12] not in comment
    assert f"Fingerprint `{as_json['fingerprint']}`" in comment

    applied = lab.run("apply", "--yes", "--fingerprint", as_json["fingerprint"])
    assert applied.code == 0, applied.out + applied.err
    assert lab.lxc("exec", "c1", "--", "cat", "/etc/key") == "hunter2\n"
    again = lab.run("plan", "--markdown").out
    assert "No changes: lab `" in again and f"({as_json['unchanged'] + 3} objects)" in again
