"""Placement, the pure parts: where a container goes in a cluster, when it moves, what an evacuated
member means, and what lab.yaml may say of targets.  No LXD (tests/test_cluster_lab.py uses a real
cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import address as a
from reconciler import placement
from reconciler.plan import Action, Change, Code, FieldChange, Origin, Plan, Reason, make_plan
from reconciler.source import SourceError
from reconciler.spec import load_lab
from reconciler.state import Meta, Resource

MEMBERS = [{"server_name": "lxdm1", "status": "Online", "groups": ["default", "g1"]},
           {"server_name": "lxdm2", "status": "Online", "groups": ["default", "g2", "pair"]},
           {"server_name": "lxdm3", "status": "Online", "groups": ["default", "g3", "pair"]}]


def cluster(evacuated: tuple[str, ...] = ()) -> placement.Cluster:
    return placement.cluster_from_raw({**m, "status": "Evacuated" if m["server_name"] in evacuated else m["status"]}
                                      for m in MEMBERS)


def lab(tmp_path: Path, containers: str, head: str = ""):
    path = tmp_path / "lab.yaml"
    path.write_text(f"lab: t\nlxd: {{project: p}}\n{head}containers:\n{containers}")
    return load_lab(path, {})[0]


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    with pytest.raises(SourceError) as err:
        load_lab(path, {})
    return str(err.value).splitlines()


def live(name: str, location: str, state: str = "running", placed: str | None = None) -> Resource:
    body = {"type": "container", "image": "img", "description": "", "profiles": ["default"], "config": {},
            "devices": {}, "state": state}
    return Resource(a.instance(name), body, meta=Meta(location=location, placed=placed or ""))


def owned(*resources: Resource) -> dict:
    return {r.address: r for r in resources}


THREE = """\
  web1: {image: img, target: lxdm1}
  web2: {image: img, target: lxdm2}
  any: {image: img, target: "@pair"}
"""


# --- where a container goes ----------------------------------------------------------------------

def test_a_target_names_a_member_or_every_member_of_a_group():
    c = cluster(evacuated=("lxdm2",))
    assert c.named("lxdm1") == ["lxdm1"] and c.named("@pair") == ["lxdm2", "lxdm3"]
    assert c.named("lxdm9") == [] and c.named("@nogroup") == []
    assert c.open_for("@pair") == ["lxdm3"] and c.open_for("lxdm2") == []
    assert c.closed("lxdm2") == "lxdm2 is evacuated"
    assert c.closed("@g2") == "every member of @g2 is away (lxdm2 is evacuated)"


def test_new_containers_are_created_at_their_target_or_where_lxd_places_them_while_it_is_away(tmp_path):
    decisions = placement.decide(lab(tmp_path, THREE), {}, cluster(evacuated=("lxdm2",)))
    assert decisions["web1"].create_at == "lxdm1" and not decisions["web1"].note
    assert decisions["any"].create_at == "@pair"  # LXD picks the member of the group on creation
    assert decisions["web2"].create_at is None
    assert decisions["web2"].note == ("web2 is created where LXD places it, since lxdm2 is evacuated; a plan after"
                                      " `lxc cluster restore` moves it to lxdm2")


def test_a_container_found_elsewhere_moves_to_its_member_and_a_group_target_to_its_least_used_member(tmp_path):
    found = owned(live("web1", "lxdm2"), live("web2", "lxdm2"), live("any", "lxdm1"))
    decisions = placement.decide(lab(tmp_path, THREE), found, cluster())
    assert decisions["web1"].move_to == "lxdm1" and decisions["web1"].location == "lxdm2"
    assert decisions["web2"].move_to is None  # where it belongs
    assert decisions["any"].move_to == "lxdm3"  # lxdm2 already holds two of the lab's containers


def test_a_container_lxd_moved_away_from_an_evacuated_member_stays_where_it_is(tmp_path):
    decisions = placement.decide(lab(tmp_path, THREE), owned(live("web2", "lxdm3")), cluster(evacuated=("lxdm2",)))
    assert decisions["web2"].move_to is None and decisions["web2"].create_at is None
    assert decisions["web2"].note.startswith("web2 is on lxdm3, lab.yaml says lxdm2, but lxdm2 is evacuated: it"
                                             " stays where it is until then")


def test_a_container_stopped_on_an_evacuated_member_is_held_not_started(tmp_path):
    decisions = placement.decide(lab(tmp_path, THREE), owned(live("web2", "lxdm2", state="stopped")),
                                 cluster(evacuated=("lxdm2",)))
    assert decisions["web2"].held and "lxc cluster restore lxdm2" in decisions["web2"].note
    running = placement.decide(lab(tmp_path, THREE), owned(live("web2", "lxdm2")), cluster(evacuated=("lxdm2",)))
    assert not running["web2"].held  # it runs: nothing to hold
    wanted_stopped = lab(tmp_path, "  web2: {image: img, target: lxdm2, state: stopped}\n")
    assert not placement.decide(wanted_stopped, owned(live("web2", "lxdm2", state="stopped")),
                                cluster(evacuated=("lxdm2",)))["web2"].held


def test_no_targets_no_decisions(tmp_path):
    plain = lab(tmp_path, "  web1: {image: img}\n")
    assert not placement.uses_targets(plain) and placement.decide(plain, {}, None) == {}


def test_unknown_members_and_groups_are_named_with_a_hint(tmp_path):
    wrong = lab(tmp_path, "  web1: {image: img, target: lxdm11}\n  web2: {image: img, target: '@piar'}\n")
    assert placement.target_problems(wrong, cluster()) == [
        "containers.web1.target: no cluster member 'lxdm11'; did you mean 'lxdm1'? (members: lxdm1, lxdm2, lxdm3)",
        "containers.web2.target: no member of the cluster is in group 'piar'; did you mean 'pair'? (groups: default,"
        " g1, g2, g3, pair)"]


# --- into the plan ---------------------------------------------------------------------------------

def _want(name: str) -> Resource:
    have = live(name, "")
    return Resource(have.address, have.body, meta=Meta(payload={"boot": "b"}))


def test_a_move_is_its_own_action_with_the_reason_and_who_moved(tmp_path):
    found = owned(live("web1", "lxdm3", placed="lxdm1"), live("any", "lxdm1", placed="@g1"))
    decisions = placement.decide(lab(tmp_path, THREE), found, cluster())
    desired = owned(_want("web1"), _want("web2"), _want("any"))
    changes = {c.address.name: c for c in placement.placed([], decisions, desired, found)}
    web1 = changes["web1"]
    assert web1.actions == (Action.MOVE,) and web1.reasons[0].text == "on lxdm3, lab.yaml says lxdm1"
    assert web1.diff == (FieldChange("location", "lxdm3", "lxdm1"),) and web1.meta.payload["member"] == "lxdm1"
    assert web1.origin == Origin.OUTSIDE  # it was placed at lxdm1 by apply: someone moved it
    assert changes["any"].reasons[0].text == "on lxdm1, lab.yaml says @pair (lxdm2)"
    assert changes["any"].origin == Origin.LAB  # apply placed it by @g1: lab.yaml's target changed
    assert "web2" not in changes


def test_creates_carry_their_target_a_held_container_is_not_started_and_a_move_replaces_a_restart(tmp_path):
    found = owned(live("web1", "lxdm2"), live("web2", "lxdm2", state="stopped"))
    decisions = placement.decide(lab(tmp_path, THREE), found, cluster(evacuated=("lxdm2",)))
    desired = owned(_want("web1"), _want("web2"), _want("any"))
    restart = Change(a.instance("web1"), (Action.UPDATE, Action.RESTART),
                     (Reason(Code.DRIFT, "x"), Reason(Code.RESTART_SETTINGS, "y")), None, None)
    start = Change(a.instance("web2"), (Action.START,), (Reason(Code.STATE, "is stopped"),), None, None)
    create = Change(a.instance("any"), (Action.CREATE,), (Reason(Code.ABSENT, "not in LXD"),), None, None)
    changes = [(c.address.name, c.actions) for c in placement.placed([restart, start, create], decisions, desired,
                                                                      found)]
    # the move starts web1 again with its new settings: no restart of its own; web2 is held: its start is dropped
    assert changes == [("web1", (Action.UPDATE,)), ("any", (Action.CREATE,)), ("web1", (Action.MOVE,))]
    made = placement.placed([create], decisions, desired, found)[0]
    assert made.meta.payload["target"] == "@pair"


def test_a_plan_names_the_running_containers_a_move_restarts():
    def moved(name, before, after):
        return Change(a.instance(name), (Action.MOVE,), (Reason(Code.PLACEMENT, "x"),), {"state": before},
                      {"state": after})
    plan = make_plan("t", [moved("a", "running", "running"), moved("b", "stopped", "running"),
                           moved("c", "running", "stopped")], {})
    assert plan.restarted_by_moves() == ["a"]
    assert Plan("t", (), {}).restarted_by_moves() == []


def test_update_and_move_merge_into_one_change_with_both_field_diffs():
    update = Change(a.instance("a"), (Action.UPDATE,), (Reason(Code.DRIFT, "x"),), {}, {},
                    (FieldChange("config", 1, 2),))
    move = Change(a.instance("a"), (Action.MOVE,), (Reason(Code.PLACEMENT, "y"),), {}, {},
                  (FieldChange("location", "m1", "m2"),))
    merged = make_plan("t", [move, update], {}).changes[0]
    assert merged.actions == (Action.UPDATE, Action.MOVE)
    assert [f.path for f in merged.diff] == ["location", "config"]


def test_a_target_is_a_member_name_or_a_group(tmp_path):
    found = [line.removeprefix(f"{tmp_path}/") for line in problems(tmp_path, "lab: t\ncontainers:\n"
                                                                                 "  c1: {image: img, target: 'lxd m1'}\n")]
    assert found == ["lab.yaml:3:28: containers.c1.target: 'lxd m1' is not a cluster member name, or @GROUP"]
