"""The pure core: diff, plan order, rendering.  Table-driven cases plus properties.  No LXD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from reconciler.desired import desired_state
from reconciler.diff import diff_states
from reconciler.plan import Action, Change, PlanError, make_plan
from reconciler.render import plan_json, plan_text
from reconciler.spec import Lab
from reconciler.state import Resource, instance_from_lxd


def instance(name="web1", **over) -> Resource:
    body = {"type": "container", "image": "img", "description": "", "profiles": ["default"],
            "config": {}, "devices": {}, "state": "running"}
    body.update(over)
    deps = tuple(f"profile.{p}" for p in body["profiles"])
    return Resource("instance", name, body, deps)


def profile(name="p", **over) -> Resource:
    body = {"description": "", "config": {}, "devices": {}}
    body.update(over)
    return Resource("profile", name, body)


def state(*resources):
    return {r.address: r for r in resources}


def actions(desired, live):
    return [(c.action, c.address) for c in diff_states(state(*desired), state(*live))]


CASES = [
    ("nothing differs", [instance()], [instance()], []),
    ("absent is created", [instance()], [], [(Action.CREATE, "instance.web1")]),
    ("owned but not in lab.yaml is deleted", [], [instance()], [(Action.DELETE, "instance.web1")]),
    ("config drift is an update", [instance(config={"a": "1"})], [instance(config={"a": "2"})],
     [(Action.UPDATE, "instance.web1")]),
    ("image change is a replace", [instance(image="new")], [instance(image="old")],
     [(Action.REPLACE, "instance.web1")]),
    ("stopped by hand is started", [instance()], [instance(state="stopped")], [(Action.START, "instance.web1")]),
    ("stopped in lab.yaml is stopped", [instance(state="stopped")], [instance()], [(Action.STOP, "instance.web1")]),
    ("a live-update-no key restarts", [instance(config={"security.privileged": "true"})], [instance()],
     [(Action.UPDATE, "instance.web1"), (Action.RESTART, "instance.web1")]),
    ("a NIC change restarts", [instance(devices={"eth0": {"type": "nic", "network": "b"}})], [instance()],
     [(Action.UPDATE, "instance.web1"), (Action.RESTART, "instance.web1")]),
    ("a proxy change is live", [instance(devices={"h": {"type": "proxy"}})], [instance()],
     [(Action.UPDATE, "instance.web1")]),
    ("profile order matters", [instance(profiles=["a", "b"])], [instance(profiles=["b", "a"])],
     [(Action.UPDATE, "instance.web1")]),
]


@pytest.mark.parametrize("name, desired, live, expected", CASES, ids=[c[0] for c in CASES])
def test_diff_cases(name, desired, live, expected):
    assert actions(desired, live) == expected


def test_field_level_diff_and_reason():
    [change] = diff_states(state(instance(config={"limits.cpu": "2"})), state(instance(config={"limits.cpu": "1",
                                                                                                 "user.x": "y"})))
    assert [(f.path, f.before, f.after) for f in change.diff] == [
        ('config["limits.cpu"]', "1", "2"), ('config["user.x"]', "y", None)]
    assert change.reason == 'drift: config["limits.cpu"], config["user.x"]'


def test_lxd_owned_keys_never_show_as_drift():
    raw = {"name": "web1", "type": "container", "status": "Running", "profiles": ["default"], "description": "",
           "config": {"volatile.eth0.hwaddr": "00:16:3e:00:00:01", "image.os": "debian", "user.reconciler.lab": "l",
                      "user.reconciler.image": "img"},
           "devices": {}}
    assert instance_from_lxd(raw).body == instance().body


def test_creates_follow_dependencies_and_deletes_go_in_reverse():
    desired = state(profile("p"), instance(profiles=["p"]))
    plan = make_plan("l", diff_states(desired, {}), {})
    assert [c.address for c in plan.changes] == ["profile.p", "instance.web1"]
    live = state(profile("p"), instance(profiles=["p"]))
    plan = make_plan("l", diff_states({}, live), {"profile.p": {"instance.web1"}})
    assert [c.address for c in plan.changes] == ["instance.web1", "profile.p"]
    assert plan.graph["profile.p#delete"] == frozenset({"instance.web1#delete"})


def test_a_dependency_cycle_is_a_plan_error():
    a = Change(Action.CREATE, "profile.a", None, {}, depends_on=("profile.b",))
    b = Change(Action.CREATE, "profile.b", None, {}, depends_on=("profile.a",))
    with pytest.raises(PlanError, match="cycle"):
        make_plan("l", [a, b], {})


def test_a_changed_file_reloads_the_service_that_watches_it():
    svc = Resource("service", "p:haproxy", {"enabled": True, "running": True},
                   meta={"watches": ["/etc/haproxy/haproxy.cfg"], "on_change": "reload"})
    new = Resource("file", "p:/etc/haproxy/haproxy.cfg", {"type": "file", "sha256": "b", "content": "b"})
    old = Resource("file", "p:/etc/haproxy/haproxy.cfg", {"type": "file", "sha256": "a", "content": "a"})
    changes = diff_states(state(svc, new), state(svc, old))
    assert [(c.action, c.address) for c in changes] == [(Action.UPDATE, "file.p:/etc/haproxy/haproxy.cfg"),
                                                        (Action.RELOAD, "service.p:haproxy")]
    plan = make_plan("l", changes, {})
    assert plan.graph["service.p:haproxy#reload"] == frozenset({"file.p:/etc/haproxy/haproxy.cfg#update"})


def test_text_rendering_has_symbols_fields_summary_and_no_colour_by_default():
    changes = diff_states(state(instance(config={"a": "2"}), instance("web2")), state(instance(config={"a": "1"})))
    text = plan_text(make_plan("l", changes, {}))
    assert '  ~ instance.web1 will be updated in place' in text and 'config.a: "1" -> "2"' in text
    assert "  + instance.web2 will be created" in text
    assert "Plan: 1 to create, 1 to update." in text and "\033[" not in text
    assert "\033[" in plan_text(make_plan("l", changes, {}), colour=True)


def test_json_rendering_is_deterministic():
    changes = diff_states(state(instance(), profile()), {})
    one, two = plan_json(make_plan("l", changes, {})), plan_json(make_plan("l", list(reversed(changes)), {}))
    assert one == two and json.loads(one)["summary"]["create"] == 2


def test_secret_file_content_is_never_rendered(tmp_path: Path):
    lab = Lab.model_validate({"lab": "l", "containers": {"c": {"image": "i", "files": {
        "/etc/key": {"content": "hunter2", "secret": True}}}}})
    desired = desired_state(lab, tmp_path, {})
    plan = make_plan("l", diff_states(desired, {}), {})
    assert "hunter2" not in plan_text(plan) and "hunter2" not in plan_json(plan)
    assert "sensitive" in plan_text(plan)


# --- Properties -----------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c", "d"])
values = st.sampled_from(["1", "2", "true", ""])
configs = st.dictionaries(st.sampled_from(["limits.cpu", "user.x", "security.privileged"]), values, max_size=3)
devices = st.dictionaries(st.sampled_from(["eth0", "http"]),
                          st.fixed_dictionaries({"type": st.sampled_from(["nic", "proxy"]), "k": values}), max_size=2)
instances = st.builds(lambda n, img, cfg, dev, run, profs: instance(
    n, image=img, config=cfg, devices=dev, state=run, profiles=profs),
    names, st.sampled_from(["x", "y"]), configs, devices, st.sampled_from(["running", "stopped"]),
    st.lists(st.sampled_from(["default", "p"]), unique=True, max_size=2))
states = st.lists(instances, max_size=4).map(lambda rs: state(*rs))


def carry_out(live: dict, changes: list[Change], desired: dict) -> dict:
    """What each action does to LXD, modelled on resource bodies."""
    out = dict(live)
    for change in changes:
        if change.action == Action.DELETE:
            del out[change.address]
        elif change.action in (Action.CREATE, Action.REPLACE, Action.UPDATE):
            state_now = out[change.address].body["state"] if change.address in out else None
            body = dict(change.after)
            if change.action == Action.UPDATE and state_now:
                body["state"] = state_now  # an update does not start or stop
            out[change.address] = Resource("instance", change.address.split(".", 1)[1], body)
        elif change.action in (Action.START, Action.STOP):
            res = out[change.address]
            out[change.address] = Resource(res.kind, res.name, {**res.body, "state": change.after["state"]})
    return out


@settings(max_examples=200, deadline=None)
@given(desired=states, live=states)
def test_the_plan_applied_to_the_live_state_gives_the_desired_state(desired, live):
    plan = make_plan("l", diff_states(desired, live), {})
    result = carry_out(live, list(plan.changes), desired)
    assert {a: r.body for a, r in result.items()} == {a: r.body for a, r in desired.items()}


@settings(max_examples=200, deadline=None)
@given(any_state=states)
def test_a_state_diffed_with_itself_is_empty(any_state):
    assert diff_states(any_state, any_state) == []


def test_the_repository_lab_plans_without_a_cycle_from_empty(tmp_path):
    from reconciler.spec import load_lab
    lab, _ = load_lab(Path(__file__).resolve().parent.parent / "lab.yaml", {})
    plan = make_plan(lab.lab, diff_states(desired_state(lab, tmp_path, {}), {}), {})
    order = [c.address for c in plan.changes]
    cfg, manifest = "file.proxyha:/etc/haproxy/haproxy.cfg", "file.proxyha:/var/lib/reconciler/haproxy-lab.files"
    assert order.index("file.proxyha:/etc/haproxy/errors/503.http") < order.index(cfg) < order.index(manifest)
    assert order.index("instance.web1") < order.index("package.web1:apache2") < order.index("service.web1:apache2")
