"""The pure core: diff, plan graph and order, rendering, plan as data.  Table-driven cases plus
properties.  No LXD."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import address as a
from reconciler import engine, planfile
from reconciler.address import Address, Kind
from reconciler.desired import desired_state
from reconciler.diff import diff_states
from reconciler.kinds import instance as instance_kind
from reconciler.plan import Action, Change, Code, FieldChange, Origin, Plan, PlanError, Reason, Step, make_plan, plan_from_json
from reconciler.render import plan_json, plan_text, safe
from reconciler.spec import Lab
from reconciler.state import Meta, Resource, digest


def instance(name="web1", applied=None, live=False, **over) -> Resource:
    body = {"type": "container", "image": "img", "description": "", "profiles": ["default"],
            "config": {}, "devices": {}, "state": "running"}
    body.update(over)
    boot = instance_kind.boot_settings(body["config"], body["devices"])
    meta = Meta(payload={"boot_live": boot} if live else {"boot": digest(boot), "boot_settings": boot})
    return Resource(a.instance(name), body, tuple(a.profile(p) for p in body["profiles"]), applied=applied,
                    meta=meta)


def live(res: Resource, applied=None) -> Resource:
    return instance(res.address.name, applied=applied, live=True, **res.body)


def profile(name="p", **over) -> Resource:
    body = {"description": "", "config": {}, "devices": {}}
    body.update(over)
    return Resource(a.profile(name), body)


def state(*resources):
    return {r.address: r for r in resources}


def actions(desired, live_):
    return [(c.actions, str(c.address)) for c in diff_states(state(*desired), state(*live_))]


CASES = [
    ("nothing differs", [instance()], [live(instance())], []),
    ("absent is created", [instance()], [], [((Action.CREATE,), "instance.web1")]),
    ("owned but not in lab.yaml is deleted", [], [live(instance())], [((Action.DELETE,), "instance.web1")]),
    ("config drift is an update", [instance(config={"a": "1"})], [live(instance(config={"a": "2"}))],
     [((Action.UPDATE,), "instance.web1")]),
    ("image change is a replace", [instance(image="new")], [live(instance(image="old"))],
     [((Action.REPLACE,), "instance.web1")]),
    ("stopped by hand is started", [instance()], [live(instance(state="stopped"))],
     [((Action.START,), "instance.web1")]),
    ("stopped in lab.yaml is stopped", [instance(state="stopped")], [live(instance())],
     [((Action.STOP,), "instance.web1")]),
    ("a live-update-no key restarts", [instance(config={"security.privileged": "true"})], [live(instance())],
     [((Action.UPDATE, Action.RESTART), "instance.web1")]),
    ("a NIC change restarts", [instance(devices={"eth0": {"type": "nic", "network": "b"}})], [live(instance())],
     [((Action.UPDATE, Action.RESTART), "instance.web1")]),
    ("a proxy change is live", [instance(devices={"h": {"type": "proxy"}})], [live(instance())],
     [((Action.UPDATE,), "instance.web1")]),
    ("profile order matters", [instance(profiles=["a", "b"])], [live(instance(profiles=["b", "a"]))],
     [((Action.UPDATE,), "instance.web1")]),
]


@pytest.mark.parametrize("name, desired, live_, expected", CASES, ids=[c[0] for c in CASES])
def test_diff_cases(name, desired, live_, expected):
    assert actions(desired, live_) == expected


def test_a_create_says_which_daemon_lacks_the_object():
    want = instance()
    for daemon in ("LXD", "Incus"):
        [change] = diff_states({want.address: want}, {}, daemon)
        assert change.reasons[0].text == f"not in {daemon}"


def test_field_level_diff_and_reason():
    [change] = diff_states(state(instance(config={"limits.cpu": "2"})),
                           state(live(instance(config={"limits.cpu": "1", "user.x": "y"}))))
    assert [(f.path, f.before, f.after) for f in change.diff] == [
        ('config["limits.cpu"]', "1", "2"), ('config["user.x"]', "y", None)]
    assert change.reasons[0].text == 'differs: config["limits.cpu"], config["user.x"]'


def test_a_restart_key_brought_by_a_profile_restarts_the_running_container():
    want = instance()
    privileged = instance_kind.boot_settings({"security.privileged": "true"}, {})
    want = Resource(want.address, want.body, want.depends_on, meta=Meta(payload={
        "boot": digest(privileged), "boot_settings": privileged,
        "boot_sources": {'config["security.privileged"]': "profile priv"}}))
    [change] = diff_states(state(want), state(live(instance())))
    assert change.actions == (Action.RESTART,)
    assert 'config["security.privileged"] (profile priv) take effect only after a restart' in change.reasons[0].text


def test_a_restart_that_never_happened_is_planned_again():
    """The boot digest on the container says it still runs with older settings (a crash, a failed step)."""
    have = live(instance())
    have = Resource(have.address, have.body, have.depends_on, meta=have.meta.with_payload(boot_tag="0000000000000000"))
    [change] = diff_states(state(instance()), state(have))
    assert change.actions == (Action.RESTART,) and change.reasons[0].code == Code.RESTART_PENDING


@pytest.mark.parametrize("applied, origin", [
    ("live", Origin.LAB), ("desired", Origin.OUTSIDE), ("other", Origin.BOTH), (None, Origin.UNKNOWN)])
def test_each_change_says_who_moved(applied, origin):
    want, have = instance(config={"a": "2"}), live(instance(config={"a": "1"}))
    recorded = {"live": digest(have.body), "desired": digest(want.body), "other": "ffffffffffffffff", None: None}
    have = Resource(have.address, have.body, have.depends_on, applied=recorded[applied], meta=have.meta)
    [change] = diff_states(state(want), state(have))
    assert change.origin == origin
    assert json.loads(plan_json(make_plan("l", [change], {})))["changes"][0]["origin"] == origin.value


def test_lxd_owned_keys_never_show_as_drift():
    raw = {"name": "web1", "type": "container", "status": "Running", "profiles": ["default"], "description": "",
           "config": {"volatile.eth0.hwaddr": "00:16:3e:00:00:01", "image.os": "debian", "user.reconciler.lab": "l",
                      "user.reconciler.image": "img", "user.reconciler.applied": "x"},
           "devices": {}}
    assert instance_kind.from_lxd(raw).body == instance().body


def test_creates_follow_dependencies_and_deletes_go_in_reverse():
    desired = state(profile("p"), instance(profiles=["p"]))
    plan = make_plan("l", diff_states(desired, {}), {})
    assert [str(c.address) for c in plan.changes] == ["profile.p", "instance.web1"]
    assert plan.graph[Step(a.instance("web1"), Action.CREATE)] == {Step(a.profile("p"), Action.CREATE)}
    live_ = state(profile("p"), live(instance(profiles=["p"])))
    plan = make_plan("l", diff_states({}, live_), {a.profile("p"): {a.instance("web1")}})
    assert [str(s) for s in plan.order()] == ["instance.web1#delete", "profile.p#delete"]


def test_a_dependency_cycle_is_a_plan_error():
    reason = (Reason(Code.ABSENT, "absent"),)
    x = Change(a.profile("a"), (Action.CREATE,), reason, None, {}, depends_on=(a.profile("b"),))
    y = Change(a.profile("b"), (Action.CREATE,), reason, None, {}, depends_on=(a.profile("a"),))
    with pytest.raises(PlanError, match="cycle"):
        make_plan("l", [x, y], {})


def watcher() -> tuple[Resource, Resource, Resource]:
    svc = Resource(a.service("p", "haproxy"), {"enabled": True, "running": True},
                   meta=Meta(payload={"watches": ["/etc/haproxy/haproxy.cfg"], "on_change": "reload"}))
    new = Resource(a.file("p", "/etc/haproxy/haproxy.cfg"), {"type": "file", "sha256": "b", "content": "b"})
    old = Resource(a.file("p", "/etc/haproxy/haproxy.cfg"), {"type": "file", "sha256": "a", "content": "a"})
    return svc, new, old


def test_a_changed_file_reloads_the_service_that_watches_it():
    svc, new, old = watcher()
    changes = diff_states(state(svc, new), state(Resource(svc.address, svc.body), old))
    assert [(c.actions, str(c.address)) for c in changes] == [
        ((Action.UPDATE,), "file.p:/etc/haproxy/haproxy.cfg"), ((Action.RELOAD,), "service.p:haproxy")]
    plan = make_plan("l", changes, {})
    assert plan.graph[Step(svc.address, Action.RELOAD)] == {Step(new.address, Action.UPDATE)}


def test_an_address_appears_once_in_json_with_its_actions_in_order():
    svc, new, old = watcher()
    stopped = Resource(svc.address, {"enabled": True, "running": False})
    data = json.loads(plan_json(make_plan("l", diff_states(state(svc, new), state(stopped, old)), {})))
    addresses = [c["address"] for c in data["changes"]]
    assert len(addresses) == len(set(addresses))
    [service] = [c for c in data["changes"] if c["address"] == "service.p:haproxy"]
    assert service["actions"] == ["update", "reload"] and [r["code"] for r in service["reasons"]] == [
        "drift", "watched-file"]


def test_text_rendering_has_symbols_fields_summary_and_no_colour_by_default():
    changes = diff_states(state(instance(config={"a": "2"}), instance("web2")), state(live(instance(config={"a": "1"}))))
    text = plan_text(make_plan("l", changes, {}), lab_file="my-lab.yaml")
    assert '  ~ instance.web1 will be updated in place' in text and 'config.a: "1" -> "2"' in text
    assert "  + instance.web2 will be created" in text
    assert "Plan: 1 to create, 1 to update." in text and "\033[" not in text
    assert "\033[" in plan_text(make_plan("l", changes, {}), colour=True)
    assert "matches my-lab.yaml" in plan_text(make_plan("l", [], {}), lab_file="my-lab.yaml")


def test_control_characters_never_reach_the_terminal():
    assert safe("a\x1b[31mb\x07\u2028c\u202ed\n") == "a\\x1b[31mb\\x07\\u2028c\\u202ed\\x0a"
    assert safe("line\nnext", keep_newlines=True) == "line\nnext"


def test_on_a_terminal_each_first_line_is_coloured_and_only_what_came_from_outside_is_escaped():
    hostile = "/srv/a\x1bb"  # an escape in a path LXD or a container reported
    change = Change(Address(Kind.FILE, "c", hostile), (Action.UPDATE, Action.RESTART),
                    (Reason(Code.DRIFT, "differs: content\x07"), Reason(Code.RESTART_SETTINGS, "because\x1b[2J")),
                    {"content": "x\x1b[31m\n"},
                    {"content": "y\n"}, (FieldChange("content", "x\x1b[31m\n", "y\n"),), Origin.OUTSIDE)
    lines = plan_text(make_plan("l", [change], {}), colour=True).splitlines()
    assert lines[0] == ("\x1b[33m  ~ file.c:/srv/a\\x1bb\x1b[0m will be updated in place (differs: content\\x07)"
                        " [changed outside lab.yaml]")
    assert "\x1b[36m <> file.c:/srv/a\\x1bb\x1b[0m will be restarted (because\\x1b[2J) [cost: live]" in lines
    assert "      \x1b[31m-x\\x1b[31m\x1b[0m" in lines
    assert all(line.count("\x1b") == 2 * line.count("\x1b[0m") for line in lines)  # every code is one of ours
    plain = plan_text(make_plan("l", [change], {}), colour=False)
    assert "\x1b" not in plain and "  ~ file.c:/srv/a\\x1bb will be updated in place" in plain


def test_json_rendering_is_deterministic():
    changes = diff_states(state(instance(), profile()), {})
    one, two = plan_json(make_plan("l", changes, {})), plan_json(make_plan("l", list(reversed(changes)), {}))
    assert one == two and json.loads(one)["summary"]["create"] == 2


def secret_lab(value: str) -> Lab:
    return Lab.model_validate({"lab": "l", "containers": {"c": {"image": "i", "files": {
        "/etc/key": {"content": value, "secret": True}}}}})


def test_secret_file_content_and_digest_are_never_rendered(tmp_path: Path):
    import hashlib
    desired = desired_state(secret_lab("hunter2"), tmp_path, {}, {})
    plan = make_plan("l", diff_states(desired, {}), {})
    digest_ = hashlib.sha256(b"hunter2").hexdigest()
    for out in (plan_text(plan), plan_json(plan)):
        assert "hunter2" not in out and digest_ not in out and digest_[:16] not in out
    old = desired_state(secret_lab("letmein"), tmp_path, {}, {})
    changed = make_plan("l", diff_states(desired, old), {})
    assert "content: (secret changed)" in plan_text(changed)
    assert digest_ not in plan_json(changed) and "(secret changed)" in plan_json(changed)


def test_a_plan_is_data_that_survives_json():
    svc, new, old = watcher()
    plan = make_plan("l", diff_states(state(svc, new, instance(), profile()), state(svc, old)), {},
                     notes=["c1 is stopped"])
    again = plan_from_json(json.loads(plan_json(plan)))
    assert again.fingerprint() == plan.fingerprint() and again.graph == plan.graph
    assert again.changes == plan.changes and again.notes == plan.notes
    assert all(type(r.code) is Code for c in again.changes for r in c.reasons)


def test_reason_codes_are_plain_strings_in_json_and_an_unknown_one_is_refused_by_name():
    svc, new, old = watcher()
    plan = make_plan("l", diff_states(state(svc, new), state(Resource(svc.address, svc.body), old)), {})
    data = json.loads(plan_json(plan))
    assert [r["code"] for c in data["changes"] for r in c["reasons"]] == ["drift", "watched-file"]
    data["changes"][0]["reasons"][0]["code"] = "drfit"
    with pytest.raises(ValueError, match=r"unknown reason code 'drfit' \(known: absent, adopt, "):
        plan_from_json(data)


def test_a_saved_plan_with_an_unknown_reason_code_is_refused_with_one_line(tmp_path):
    svc, new, old = watcher()
    plan = make_plan("l", diff_states(state(svc, new), state(Resource(svc.address, svc.body), old)), {})
    saved = tmp_path / "plan.json"
    planfile.write(saved, plan, "lab.yaml", "d")
    assert planfile.read(saved).plan.changes == plan.changes
    saved.write_text(saved.read_text().replace('"code": "drift"', '"code": "dirft"'))
    with pytest.raises(planfile.PlanFileError, match=r"plan.json: unknown reason code 'dirft' \(known: absent,"):
        planfile.read(saved)


def test_addresses_parse_and_print_the_same():
    for text in ("network.lan0", "instance.web1", "file.proxyha:/etc/haproxy/haproxy.cfg",
                 "service.p:haproxy", "package.web1:apache2"):
        assert str(Address.parse(text)) == text
    assert Address.parse("file.c:/a:b").key == "/a:b"
    with pytest.raises(ValueError):
        Address.parse("bogus.x")
    with pytest.raises(ValueError):
        Address(Kind.FILE, "c")


# --- Properties -----------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c", "d"])
values = st.sampled_from(["1", "2", "true", ""])
configs = st.dictionaries(st.sampled_from(["limits.cpu", "user.x", "security.privileged"]), values, max_size=3)
devices = st.dictionaries(st.sampled_from(["eth0", "http"]),
                          st.fixed_dictionaries({"type": st.sampled_from(["nic", "proxy"]), "k": values}), max_size=2)
instance_bodies = st.fixed_dictionaries({
    "name": names, "image": st.sampled_from(["x", "y"]), "config": configs, "devices": devices,
    "state": st.sampled_from(["running", "stopped"]),
    "profiles": st.lists(st.sampled_from(["default", "p"]), unique=True, max_size=2)})
desired_states = st.lists(instance_bodies, max_size=4).map(lambda bs: state(*(instance(**b) for b in bs)))
live_states = st.lists(instance_bodies, max_size=4).map(lambda bs: state(*(live(instance(**b)) for b in bs)))


def carry_out(live_: dict, plan: Plan) -> dict:
    """What each step does to LXD, modelled on resource bodies."""
    out = {addr: res.body for addr, res in live_.items()}
    for step in plan.order():
        change = plan.steps()[step]
        if step.action == Action.DELETE:
            del out[step.address]
        elif step.action in (Action.CREATE, Action.REPLACE):
            out[step.address] = dict(change.after)
        elif step.action == Action.UPDATE:
            out[step.address] = {**change.after, "state": out[step.address]["state"]}  # no start or stop
        elif step.action in (Action.START, Action.STOP):
            out[step.address] = {**out[step.address], "state": change.after["state"]}
    return out


@settings(max_examples=200, deadline=None)
@given(desired=desired_states, live_=live_states)
def test_the_plan_applied_to_the_live_state_gives_the_desired_state(desired, live_):
    plan = make_plan("l", diff_states(desired, live_), {})
    assert carry_out(live_, plan) == {addr: r.body for addr, r in desired.items()}


@settings(max_examples=100, deadline=None)
@given(desired=desired_states, live_=live_states, seed=st.integers(0, 10**6))
def test_every_shuffled_order_respects_the_graph(desired, live_, seed):
    plan = make_plan("l", diff_states(desired, live_), {})
    order = plan.order(random.Random(seed))
    position = {step: i for i, step in enumerate(order)}
    assert set(order) == set(plan.graph)
    assert all(position[w] < position[s] for s, waits in plan.graph.items() for w in waits)


@settings(max_examples=200, deadline=None)
@given(any_state=desired_states)
def test_a_state_diffed_with_itself_is_empty(any_state):
    as_live = {addr: live(res) for addr, res in any_state.items()}
    assert diff_states(any_state, as_live) == []


def test_the_repository_lab_plans_without_a_cycle_and_haproxy_waits_for_rsyslog(tmp_path):
    from reconciler.spec import load_lab
    lab, _ = load_lab(Path(__file__).resolve().parent.parent / "lab.yaml", {})
    plan = make_plan(lab.lab, diff_states(desired_state(lab, tmp_path, {}, {}), {}), {})
    order = [str(s.address) for s in plan.order()]
    cfg = "file.proxyha:/etc/haproxy/haproxy.cfg"
    assert order.index("file.proxyha:/etc/haproxy/errors/503.http") < order.index(cfg)
    assert order.index("instance.web1") < order.index("package.web1:apache2") < order.index("service.web1:apache2")
    assert order.index("instance.web2") < order.index(cfg)  # its address is in the config
    haproxy, rsyslog = Step(a.service("proxyha", "haproxy"), Action.CREATE), Step(
        a.service("proxyha", "rsyslog"), Action.CREATE)
    assert rsyslog in plan.graph[haproxy]


def test_every_action_has_a_colour_and_a_past_tense():
    from reconciler.render import COLOURS, PAST
    assert set(COLOURS) == set(Action) and set(PAST) == set(Action)


def test_a_target_that_names_nothing_is_an_error_with_the_closest_addresses():
    plan = make_plan("l", diff_states(state(instance("web1"), instance("web2")), {}), {})
    known = {a.instance("web1"), a.instance("web2"), a.profile("p")}
    assert [str(c.address) for c in plan.targeted([a.instance("web1")], known).changes] == ["instance.web1"]
    with pytest.raises(ValueError, match=r"^instance\.web3 is neither in lab.yaml nor one of the lab's objects in LXD;"
                       r" did you mean instance\.web1 or instance\.web2\?$"):
        plan.targeted([a.instance("web3")], known)
    with pytest.raises(ValueError, match=r"the lab's addresses: profile\.p, instance\.web1, instance\.web2$"):
        plan.targeted([a.network("zzz")], known)


def test_docs_list_every_reason_code():
    listed = (Path(__file__).parent.parent / "docs" / "cli.md").read_text().split("The codes are a fixed set:")[1]
    listed = listed.split(";")[0].replace("\n", " ")
    assert [c.strip(" `") for c in listed.split(",")] == [c.value for c in Code]


def test_meta_keeps_its_typed_fields_apart_from_the_kinds_payload_through_json():
    meta = Meta(prev_address=a.instance("web0"), waits_for=("web1", "web2"), secret=True, payload={"check": ["true"]})
    change = Change(a.instance("web1"), (Action.RENAME,), (Reason(Code.RENAMED, "renamed"),), None, None, meta=meta)
    data = change.as_json()
    assert data["meta"] == {"check": ["true"], "prev_address": "instance.web0", "waits_for": ["web1", "web2"],
                            "secret": True}
    again = Change.from_json(json.loads(json.dumps(data)))
    assert again.meta == meta and again.meta.prev_address == a.instance("web0") and again.secret


def test_merged_meta_takes_each_typed_field_where_it_is_set():
    first = Meta(waits_for=("web1",), payload={"a": 1, "b": 1})
    other = Meta(secret=True, location="m1", payload={"b": 2, "c": 2})
    assert first.merged(other) == Meta(location="m1", waits_for=("web1",), secret=True, payload={"a": 1, "b": 1, "c": 2})


def test_a_plan_of_an_older_format_version_is_refused_by_name(tmp_path):
    svc, new, old = watcher()
    plan = make_plan("l", diff_states(state(svc, new), state(Resource(svc.address, svc.body), old)), {})
    data = json.loads(plan_json(plan))
    data["format_version"] = 2
    with pytest.raises(ValueError, match=r"^plan format_version 2; this reconcile reads format_version 3: make the plan"):
        plan_from_json(data)
    saved = tmp_path / "plan.json"
    planfile.write(saved, plan, "lab.yaml", "d")
    saved.write_text(saved.read_text().replace('"format_version": 3', '"format_version": 2'))
    with pytest.raises(planfile.PlanFileError, match=r"plan.json: plan format_version 2; this reconcile reads"):
        planfile.read(saved)


def test_a_container_declared_renamed_takes_over_its_previous_address():
    want = instance("web9")
    want = Resource(want.address, want.body, want.depends_on, meta=replace(want.meta, prev_address=a.instance("web0")))
    owned = {a.instance("web0"): live(instance("web0"))}
    [change] = engine._renames({want.address: want}, owned)
    assert change.actions == (Action.RENAME,) and change.reasons[0].text == "renamed from web0 in lab.yaml"
    assert change.meta.prev_address == a.instance("web0") and set(owned) == {a.instance("web9")}
