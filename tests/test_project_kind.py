"""Owned projects, the pure parts: the project kind's body, everything waiting for the project, the
default profile LXD makes with it, and what lab.yaml may say of `project:`.  No LXD
(tests/test_owned_projects.py uses a real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import address as a
from reconciler.desired import desired_state
from reconciler.diff import diff_states
from reconciler.kinds import project as project_kind
from reconciler.live import live_from_raw
from reconciler.lxd import RawState
from reconciler.plan import Action, PlanError, make_plan
from reconciler.source import SourceError
from reconciler.spec import load_lab
from reconciler.state import Resource


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(SourceError) as err:
        load_lab(path, {})
    return [line.removeprefix(f"{tmp_path}/") for line in str(err.value).splitlines()]


OWNED = """\
lab: t
lxd: {project: mine}
project:
  description: the lab's own
  features: {images: true, storage.volumes: false}
  config: {limits.instances: 4}
profiles:
  default:
    devices: {root: {type: disk, path: /, pool: default}}
containers:
  c1: {image: img}
"""


def test_an_owned_project_is_a_resource_everything_else_waits_for(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(OWNED)
    owned_lab = load_lab(path, {})[0]
    desired = desired_state(owned_lab, tmp_path, {}, {})
    here = a.project("mine")
    assert desired[here].body == {"description": "the lab's own", "config": {
        "features.images": "true", "features.profiles": "true", "features.storage.volumes": "false",
        "limits.instances": "4"}}
    assert all(here in r.depends_on for addr, r in desired.items() if addr != here)
    plan = make_plan("t", diff_states(desired, {}), {})
    first = plan.order()[0]
    assert first.address == here and first.action == Action.CREATE


def test_a_projects_default_profile_is_never_deleted_but_other_profiles_are():
    live_profiles = {a.profile(n): Resource(a.profile(n), {"description": "", "config": {}, "devices": {}})
                     for n in ("default", "extra")}
    assert [str(c.address) for c in diff_states({}, live_profiles)] == ["profile.extra"]


def test_the_default_profile_lxd_makes_with_a_project_is_read_as_lxd_makes_it():
    made = project_kind.made_with("p1")
    assert made["description"] == "Default LXD profile for project p1" and made["devices"] == {}
    found = project_kind.from_lxd({"name": "p1", "description": "", "config": {
        "features.images": "false", "user.reconciler.lab": "t", "user.reconciler.applied": "abc"}})
    assert found.owner == "t" and found.applied == "abc" and found.body["config"] == {"features.images": "false"}


@pytest.mark.parametrize("text, expected", [
    (OWNED.replace("project: mine", "project: default"),
     "lab.yaml:3:1: project: the default project is LXD's own: name the lab's project in lxd.project"),
    (OWNED.replace("limits.instances: 4", "features.images: true"),
     "lab.yaml:6:12: project.config[\"features.images\"]: set features under project.features"),
    (OWNED.replace("images: true", "profiles: false"),
     "lab.yaml:8:3: profiles.default: the project shares the default project's profiles"),
    (OWNED.replace("project:\n  description: the lab's own\n  features: {images: true, storage.volumes: false}\n"
                   "  config: {limits.instances: 4}\n", ""),
     "lab.yaml:4:3: profiles.default: 'default' is declared here and listed under existing.profiles"),
])
def test_what_lab_yaml_may_say_of_an_owned_project(tmp_path, text, expected):
    found = problems(tmp_path, text)
    assert any(line.startswith(expected) for line in found), found


def _live(*instances: str):
    raw = RawState({a.Kind.PROFILE: [project_kind.made_with("mine")],
                    a.Kind.INSTANCE: [{"name": n, "config": {}, "devices": {}, "profiles": []} for n in instances]})
    return live_from_raw(raw, "t")


def test_claim_takes_the_declared_default_profile_and_refuses_a_project_that_is_not_the_labs(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(OWNED)
    owned_lab = load_lab(path, {})[0]
    live = _live()
    assert project_kind.claim(live, owned_lab, None, destroy=False) == []
    assert live.owned[a.profile("default")].owner == "t" and a.profile("default") not in live.foreign
    mine = {"name": "mine", "config": {"user.reconciler.lab": "t"}}
    live = _live()
    project_kind.claim(live, owned_lab, mine, destroy=False)
    assert a.project("mine") in live.owned[a.profile("default")].depends_on  # deleted before the project
    with pytest.raises(PlanError, match="project.mine: lab.yaml owns it .project:., but it exists in LXD and belongs"
                                        " to lab 'other'"):
        project_kind.claim(_live(), owned_lab, {"name": "mine", "config": {"user.reconciler.lab": "other"}}, False)


def test_destroy_keeps_a_project_that_holds_what_is_not_the_labs(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(OWNED)
    owned_lab = load_lab(path, {})[0]
    mine = {"name": "mine", "config": {"user.reconciler.lab": "t"}}
    live = _live("handmade")
    notes = project_kind.claim(live, owned_lab, mine, destroy=True)
    assert a.project("mine") not in live.owned and notes[0].startswith("project mine also holds instance.handmade")
    live = _live()
    assert project_kind.claim(live, owned_lab, mine, destroy=True) == [] and a.project("mine") in live.owned
