"""The property that matters, on a real LXD: for random labs and random live states, apply and
then plan is empty.  Hypothesis draws a lab, hand edits made behind reconcile's back, and a second
lab; the real apply code runs against the real daemon (tiny busybox containers, a project of its
own), so the number of examples is kept small."""

from __future__ import annotations

import json

import pytest
from conftest import LabDir, drop_project, new_project, next_tag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = ["c0", "c1", "c2"]


def render(tag: str, lab: dict) -> str:
    lines = [f"lab: {tag}", f"lxd: {{project: {tag}}}", "networks:", f"  {tag}p:",
             "    config: {ipv4.address: 10.203.34.1/24, ipv4.nat: false, ipv6.address: none}", "profiles:",
             "  net:", f"    devices: {{eth0: {{type: nic, network: {tag}p, name: eth0}}}}",
             "  extra:", f"    config: {{user.p: \"{lab['extra']}\"}}", "containers:" if lab["containers"] else "containers: {}"]
    for name, c in sorted(lab["containers"].items()):
        lines += [f"  {name}:", "    image: reconciler-tiny", f"    state: {c['state']}",
                  f"    profiles: [default, net{', extra' if c['extra'] else ''}]",
                  f"    config: {{user.a: \"{c['a']}\", limits.memory: {c['memory']}}}"]
        if c["proxy"]:
            port = 18340 + NAMES.index(name)
            lines.append(f"    devices: {{http: {{type: proxy, listen: \"tcp:127.0.0.1:{port}\","
                         " connect: \"tcp:127.0.0.1:80\"}}")
        if c["files"]:
            lines.append("    files:")
            lines += [f"      {path}: {{content: \"{text}\\n\", mode: \"{mode}\"}}" for path, (text, mode) in
                      sorted(c["files"].items())]
    return "\n".join(lines) + "\n"


words = st.sampled_from(["one", "two", "three"])
containers = st.fixed_dictionaries({
    "state": st.sampled_from(["running", "stopped"]), "a": words, "memory": st.sampled_from(["64MB", "96MB"]),
    "extra": st.booleans(), "proxy": st.booleans(),
    "files": st.dictionaries(st.sampled_from(["/etc/a.txt", "/etc/b.txt"]),
                             st.tuples(words, st.sampled_from(["0644", "0600"])), max_size=2)})
labs = st.fixed_dictionaries({"extra": words, "containers": st.dictionaries(st.sampled_from(NAMES), containers,
                                                                             max_size=3)})
edits = st.lists(st.tuples(st.sampled_from(["config", "stop", "start", "rm", "device", "profile"]),
                           st.sampled_from(NAMES)), max_size=3)


@pytest.fixture(scope="module")
def prop_lab(lxd_ready, tmp_path_factory):
    tag = next_tag()
    new_project(tag)
    yield LabDir(tmp_path_factory.mktemp("prop"), tag, tag)
    drop_project(tag)


def by_hand(lab: LabDir, edits_: list[tuple[str, str]]) -> None:
    """Edits behind reconcile's back; those that make no sense for the live state fail and are ignored."""
    for what, name in edits_:
        argv = {"config": ("config", "set", name, "user.a", "by-hand"), "stop": ("stop", "--force", name),
                "start": ("start", name), "rm": ("exec", name, "--", "rm", "-f", "/etc/a.txt"),
                "device": ("config", "device", "remove", name, "http"),
                "profile": ("profile", "set", "extra", "user.p", "by-hand")}[what]
        lab.lxc(*argv, check=False)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(first=labs, hand=edits, second=labs)
def test_apply_then_plan_is_empty_whatever_the_lab_and_the_live_state(prop_lab, first, hand, second):
    for lab, then in ((first, hand), (second, [])):
        prop_lab.write(render(prop_lab.tag, lab))
        result = prop_lab.run("apply", "--yes", "--force")
        assert result.code == 0, result.out[-3000:] + result.err
        plan = prop_lab.run("plan", "--detailed-exitcode")
        assert plan.code == 0, f"not converged:\n{plan.out}"
        by_hand(prop_lab, then)
    live = {i["name"] for i in json.loads(prop_lab.lxc("list", "--format=json"))}
    assert live == set(second["containers"])
