"""Labs that own their LXD project (`project:` in lab.yaml), on the real local daemon: plan on an absent
project, apply creating it first with its default profile, destroy deleting it last, and two labs in
two projects of one daemon that never see each other.  Tiny busybox containers, no network."""

from __future__ import annotations

import json
import os

import pytest
from conftest import RUN_KEY, LabDir, new_project, next_tag, sh

from reconciler.address import instance, network, profile, project
from reconciler.engine import build_plan
from reconciler.lxd import Lxd
from reconciler.plan import Action, Step
from reconciler.spec import load_lab

OWNED = """\
lab: @TAG@
lxd: {project: @PROJECT@}
project:
  description: owned by the lab
  config: {@RUN_KEY@: "@PID@"}
profiles:
  default:
    description: the project's own default
    devices:
      root: {type: disk, path: /, pool: default}
containers:
  c1: {image: reconciler-tiny, config: {user.note: "@TAG@"}}
"""


def owned_text(lab: LabDir) -> str:
    return OWNED.replace("@RUN_KEY@", RUN_KEY).replace("@PID@", str(os.getpid()))


def project_of(name: str) -> dict | None:
    done = sh("lxc", "query", f"/1.0/projects/{name}", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def default_profiles() -> set[str]:
    return {p["name"] for p in json.loads(sh("lxc", "query", "/1.0/profiles?recursion=1&project=default").stdout)}


def forget(tag: str) -> None:
    """What a failed test may leave: its project (with whatever is in it) and its lock in the default project."""
    if project_of(tag) is not None:
        for inst in json.loads(sh("lxc", "list", "--project", tag, "--format=json").stdout):
            sh("lxc", "delete", "--force", "--project", tag, inst["name"], check=False)
        sh("lxc", "project", "delete", tag, check=False)
    sh("lxc", "profile", "delete", f"reconciler-lock-{tag}", "--project", "default", check=False)


@pytest.fixture
def owned(lxd_ready, tmp_path):
    """A lab directory whose project does not exist yet: the lab makes it."""
    tag = next_tag()
    lab = LabDir(tmp_path / tag, tag, tag)
    lab.dir.mkdir()
    yield lab
    forget(tag)


@pytest.fixture
def other(lxd_ready, tmp_path):
    tag = next_tag()
    lab = LabDir(tmp_path / tag, tag, tag)
    lab.dir.mkdir()
    yield lab
    forget(tag)


def applied(lab: LabDir, *extra: str) -> str:
    done = lab.run("apply", "--yes", *extra)
    assert done.code == 0, done.out + done.err
    return done.out


def no_changes(lab: LabDir) -> bool:
    done = lab.run("plan", "--detailed-exitcode")
    assert done.code in (0, 2), done.err
    return done.code == 0


def test_a_missing_project_is_an_error_unless_the_lab_owns_it(owned, monkeypatch):
    text = owned_text(owned)
    owned.write(text.split("project:\n")[0] + "containers:\n  c1: {image: reconciler-tiny}\n")
    refused = owned.run("plan")
    assert refused.code == 1 and f"LXD project {owned.project!r} does not exist" in refused.err
    assert "declare a project: section" in refused.err

    owned.write(text)
    monkeypatch.setenv("RECONCILER_STATS", "1")
    plan = owned.run("plan", "--json")
    assert plan.code == 0, plan.err
    data = json.loads(plan.out)
    actions = {c["address"]: c["actions"] for c in data["changes"]}
    assert actions == {f"project.{owned.project}": ["create"], "profile.default": ["update"],
                       "instance.c1": ["create"]}
    profile = next(c for c in data["changes"] if c["address"] == "profile.default")
    assert profile["before"]["description"] == f"Default LXD profile for project {owned.project}"
    # GET /1.0, the project (404), networks, images, ACLs and storage pools in the default project: nothing
    # of its own
    assert "lxd api calls: 6" in plan.err, plan.err
    assert project_of(owned.project) is None  # plan changed nothing


def test_apply_creates_the_project_first_and_destroy_deletes_it_last(owned):
    owned.write(owned_text(owned))
    out = applied(owned)
    done = [ln for ln in out.splitlines() if ln.endswith("s]")]  # one line per finished step, in order
    assert done[0].startswith(f"project.{owned.project}: created") and len(done) == 3, out
    made = project_of(owned.project)
    assert made["config"]["user.reconciler.lab"] == owned.tag and made["description"] == "owned by the lab"
    assert made["config"]["features.images"] == "false" and made["config"]["features.profiles"] == "true"
    default = json.loads(sh("lxc", "query", f"/1.0/profiles/default?project={owned.project}").stdout)
    assert default["devices"]["root"]["pool"] == "default" and default["config"]["user.reconciler.lab"] == owned.tag
    assert owned.instance("c1")["status"] == "Running"
    assert f"reconciler-lock-{owned.tag}" not in default_profiles()  # held only while apply runs (outside the project)
    assert no_changes(owned)

    owned.write(owned_text(owned).replace("owned by the lab", "still the lab's"))
    plan = owned.run("plan")
    assert f"~ project.{owned.project} will be updated in place (differs: description)" in plan.out, plan.out
    applied(owned)
    assert project_of(owned.project)["description"] == "still the lab's" and no_changes(owned)

    gone = owned.run("destroy", "--yes")
    assert gone.code == 0, gone.out + gone.err
    assert "profile.default" not in gone.out  # it goes with the project: LXD never deletes a default profile
    lines = [ln for ln in gone.out.splitlines() if ": deleted" in ln]
    assert lines[-1].startswith(f"project.{owned.project}: deleted"), gone.out
    assert project_of(owned.project) is None and f"reconciler-lock-{owned.tag}" not in default_profiles()
    again = owned.run("plan", "--detailed-exitcode")
    assert again.code == 2 and f"+ project.{owned.project} will be created" in again.out


def test_two_labs_in_two_projects_never_see_each_other(owned, other):
    for lab in (owned, other):
        lab.write(owned_text(lab))
        applied(lab)
    assert owned.instance("c1")["config"]["user.note"] == owned.tag
    assert other.instance("c1")["config"]["user.note"] == other.tag

    other.lxc("config", "set", "c1", "user.note", "by hand")
    assert no_changes(owned)  # the other lab's drift is not this lab's
    assert 'config["user.note"]: "by hand" -> "' + other.tag + '"' in other.run("plan").out
    seen = json.loads(owned.run("plan", "--json").out)
    assert seen["changes"] == [] and seen["unchanged"] == 3

    gone = owned.run("destroy", "--yes")
    assert gone.code == 0 and other.tag not in gone.out, gone.out
    assert project_of(owned.project) is None and project_of(other.project) is not None
    assert other.instance("c1")["config"]["user.note"] == "by hand"
    applied(other)
    assert no_changes(other)


def test_destroy_leaves_a_project_that_holds_what_is_not_the_labs(owned):
    owned.write(owned_text(owned))
    applied(owned)
    owned.lxc("init", "reconciler-tiny", "handmade")
    gone = owned.run("destroy", "--yes")
    assert gone.code == 0, gone.out + gone.err
    assert (f"Note: project {owned.project} also holds instance.handmade, which the lab does not own: destroy"
            " leaves the project") in gone.out
    assert project_of(owned.project) is not None and owned.instance("handmade")["name"] == "handmade"
    assert owned.lxc("list", "--format=csv", "-c", "n").split() == ["handmade"]

    owned.lxc("delete", "handmade")
    again = owned.run("destroy", "--yes")
    assert again.code == 0 and f"project.{owned.project}: deleted" in again.out, again.out
    assert project_of(owned.project) is None


def test_a_project_that_exists_and_is_not_the_labs_is_refused(lxd_ready, tmp_path):
    tag = next_tag()
    new_project(tag)  # made by hand: no lab's tag
    try:
        lab = LabDir(tmp_path, tag, tag)
        lab.write(owned_text(lab))
        refused = lab.run("plan")
        assert refused.code == 1
        assert (f"project.{tag}: lab.yaml owns it (project:), but it exists in LXD and belongs to no lab"
                in refused.err), refused.err
        assert refused.err.count("\n") == 1
        assert lab.run("apply", "--yes").code == 1 and project_of(tag)["config"].get("user.reconciler.lab") is None
    finally:
        forget(tag)


def test_check_on_an_owned_project_not_made_yet_says_apply_makes_it(owned):
    owned.write(owned_text(owned))
    done = owned.run("check")
    assert done.code == 1 and done.err == (f"Error: LXD project {owned.project!r} does not exist yet: lab.yaml owns it"
                                           " (project:), and `reconcile apply` creates it\n")


BRIDGED = OWNED.replace("""profiles:
  default:
    description: the project's own default
    devices:
      root: {type: disk, path: /, pool: default}
""", """networks:
  @TAG@b:
    config: {ipv4.address: 10.203.57.1/24, ipv4.nat: false, ipv6.address: none}
profiles:
  default:
    description: the project's own default, with the lab's NIC
    devices:
      root: {type: disk, path: /, pool: default}
      eth0: {type: nic, network: @TAG@b, name: eth0}
""")


def destroy_plan(lab: LabDir):
    spec, _ = load_lab(lab.file)
    plan, _ = build_plan(spec, lab.dir, Lxd(None, lab.project), destroy=True)
    return plan


def network_exists(name: str) -> bool:
    return sh("lxc", "query", f"/1.0/networks/{name}", check=False).returncode == 0


def test_destroy_takes_the_labs_nic_out_of_the_default_profile_before_its_network_goes(owned):
    owned.write(BRIDGED.replace("@RUN_KEY@", RUN_KEY).replace("@PID@", str(os.getpid())))
    try:
        applied(owned)
        plan = owned.run("destroy")  # no --yes, no terminal: shows the plan, refuses
        assert plan.code == 1 and "refusing to destroy without --yes" in plan.err, plan.err
        heads = [line for line in plan.out.splitlines() if line[:4].strip() in ("-", "~")]
        assert heads == [
            f"  - project.{owned.project} will be deleted (destroy: lab {owned.tag!r} owns it) [cost: live]",
            f"  - network.{owned.tag}b will be deleted (destroy: lab {owned.tag!r} owns it) [cost: live]",
            "  ~ profile.default will be updated in place (destroy: the lab's devices leave it; LXD never deletes a"
            " default profile) [cost: live]",
            f"  - instance.c1 will be deleted (destroy: lab {owned.tag!r} owns it) [cost: recreate]"], plan.out
        assert f'      devices.eth0: {{"name": "eth0", "network": "{owned.tag}b", "type": "nic"}} -> (none)' in plan.out
        assert "devices.root" not in plan.out and "renamed_from" not in plan.out and "[your change]" not in plan.out
        assert "      it is RUNNING: its root filesystem is lost\n" in plan.out
        graph = destroy_plan(owned).graph  # the order is the graph's, not the luck of parallel steps
        emptied, bridge = Step(profile("default"), Action.UPDATE), Step(network(f"{owned.tag}b"), Action.DELETE)
        assert Step(instance("c1"), Action.DELETE) in graph[emptied] and emptied in graph[bridge]
        assert bridge in graph[Step(project(owned.project), Action.DELETE)]
        gone = owned.run("destroy", "--yes")
        assert gone.code == 0, gone.out + gone.err
        done = [line.split(":")[0] for line in gone.out.splitlines() if line.endswith("s]")]
        assert done.index("profile.default") < done.index(f"network.{owned.tag}b") < done.index(
            f"project.{owned.project}"), gone.out  # by the plan's graph: the NIC leaves, then its network goes
        assert gone.out.rstrip().endswith("Destroy complete! 4 done, 0 failed, 0 skipped.")
        assert project_of(owned.project) is None and not network_exists(f"{owned.tag}b")
        nothing = owned.run("destroy", "--yes")
        assert nothing.code == 0 and nothing.out.endswith(f"\nNothing to destroy: lab {owned.tag!r} owns nothing in LXD.\n")
        assert nothing.out.count("\n") == 2  # the daemon's line, and that
    finally:
        sh("lxc", "network", "delete", f"{owned.tag}b", check=False)
