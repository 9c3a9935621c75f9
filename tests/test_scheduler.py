"""apply's orchestration in milliseconds, through a recording fake of our LXD client (fake_lxd.py):
a failed step skips its dependants and only them, every order the graph allows is followed,
parallelism is bounded, Ctrl-C is honoured wherever it lands, and the record inside a container is
written after its steps.  What LXD itself does is tested against the real daemon elsewhere."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from pathlib import Path

import pytest
from fake_lxd import Call, FakeLxd

from reconciler.address import file, instance, network, profile
from reconciler.apply import Report, apply_plan
from reconciler.context import Context
from reconciler.facts import parse_record, record_path
from reconciler.kinds import file as file_kind
from reconciler.plan import Action, Change, Code, Plan, Reason, Step, make_plan, plan_from_json
from reconciler.spec import Lab
from reconciler.state import Meta

LAB = "t"
ABSENT = (Reason(Code.ABSENT, "not in LXD"),)


def net(name: str) -> Change:
    return Change(network(name), (Action.CREATE,), ABSENT, None, {"type": "bridge", "description": "", "config": {}})


def prof(name: str, *networks: str) -> Change:
    return Change(profile(name), (Action.CREATE,), ABSENT, None, {"description": "", "config": {}, "devices": {}},
                  depends_on=tuple(network(n) for n in networks))


def inst(name: str, *profiles: str) -> Change:
    body = {"type": "container", "image": "img", "description": "", "profiles": list(profiles), "config": {},
            "devices": {}, "state": "running"}
    return Change(instance(name), (Action.CREATE,), ABSENT, None, body,
                  meta=Meta(payload={"source": {"type": "image", "alias": "img"}, "boot": "b"}),
                  depends_on=tuple(profile(p) for p in profiles))


def a_file(container: str, path: str, text: str = "hi\n") -> Change:
    body = {"type": "file", "mode": "0644", "owner": "root", "group": "root",
            "sha256": file_kind.sha256(text.encode()), "content": text}
    return Change(file(container, path), (Action.CREATE,), (Reason(Code.ABSENT, "absent"),), None, body)


def run(changes: list[Change], fake: FakeLxd, parallelism: int = 4, progress=None,
        shuffle: random.Random | None = None, live_users=None) -> tuple[Plan, Report]:
    plan = make_plan(LAB, changes, live_users or {})
    ctx = Context(Lab.model_construct(lab=LAB), Path("."), frozenset(), {})
    return plan, apply_plan(plan, ctx, fake, parallelism, progress, shuffle)  # type: ignore[arg-type]


def statuses(report: Report) -> dict[str, str]:
    return {str(o.step): o.status for o in report.outcomes}


THE_LAB = [net("n1"), prof("p1", "n1"), inst("c1", "p1"), a_file("c1", "/etc/x"), prof("p2")]


def test_a_failed_step_skips_its_dependants_and_only_them():
    fake = FakeLxd(fail={("create", "network", "n1"): "Failed to create the bridge"})
    _, report = run(THE_LAB, fake)
    assert statuses(report) == {"network.n1#create": "failed", "profile.p1#create": "skipped",
                                "instance.c1#create": "skipped", "file.c1:/etc/x#create": "skipped",
                                "profile.p2#create": "done"}
    skipped = {str(o.step): o.message for o in report.with_status("skipped")}
    assert skipped["profile.p1#create"] == "network.n1#create did not succeed"
    assert skipped["instance.c1#create"] == "profile.p1#create did not succeed"
    assert fake.did("create") == ["create network n1", "create profile p2"]  # nothing skipped reached LXD
    assert not fake.did("push")  # nothing done inside c1: no record written either
    assert not report.ok


def test_steps_follow_the_graph_in_every_order_it_allows():
    """Whatever a seeded shuffle picks among ready steps, creates go network -> profile -> instance ->
    its file, and a delete waits for the live users of what it deletes."""
    deletes = [Change(instance("old"), (Action.DELETE,), (Reason(Code.NOT_IN_LAB, "not in lab.yaml"),),
                      {"state": "stopped"}, None, depends_on=(profile("gone"),)),
               Change(profile("gone"), (Action.DELETE,), (Reason(Code.NOT_IN_LAB, "not in lab.yaml"),),
                      {"description": "", "config": {}, "devices": {}}, None)]
    orders = set()
    for seed in range(25):
        fake = FakeLxd(objects={("instance", "old"): {"name": "old", "status": "Stopped", "config": {}},
                                ("profile", "gone"): {"name": "gone", "config": {}}})
        _, report = run(THE_LAB + deletes, fake, parallelism=1, shuffle=random.Random(seed),
                        live_users={profile("gone"): {instance("old")}})
        assert report.ok, statuses(report)
        done = [c for c in fake.did() if c.split()[0] in ("create", "delete", "push")]
        at = {c: i for i, c in enumerate(done)}
        assert at["create network n1"] < at["create profile p1"] < at["create instance c1"] \
            < at["push file c1:/etc/x.reconciler-new"], done
        assert at["delete instance old"] < at["delete profile gone"], done
        orders.add(tuple(done))
    assert len(orders) > 1  # the shuffle did explore different orders


def test_no_more_steps_run_at_once_than_parallelism_allows():
    both = threading.Barrier(2, timeout=10)  # each create waits for a second one to be running with it

    def pair_up(call: Call) -> None:
        if call.verb == "create":
            both.wait()

    fake = FakeLxd(on_call=pair_up)
    _, report = run([prof(f"p{i}") for i in range(6)], fake, parallelism=2)
    assert report.ok and fake.most_at_once == 2


@pytest.fixture(autouse=True)
def python_sigint():
    """Python's own Ctrl-C handler, whatever this process inherited: a run started in the background of a
    script inherits SIGINT ignored, which apply keeps (test below)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fake = FakeLxd(on_call=_interrupt_during("create", "network", "n1"))
    _, report = run(THE_LAB, fake, parallelism=1)
    assert report.ok and not report.interrupted and set(statuses(report).values()) == {"done"}, statuses(report)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def _interrupt_during(verb: str, kind: str, name: str):
    def hook(call: Call) -> None:
        if (call.verb, call.kind, call.name) == (verb, kind, name):
            os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C: delivered to the main thread
    return hook


def test_a_ctrl_c_while_a_step_runs_lets_it_finish_and_starts_nothing_more():
    fake = FakeLxd(on_call=_interrupt_during("create", "network", "n1"))
    _, report = run(THE_LAB, fake, parallelism=1)
    assert report.interrupted
    found = statuses(report)
    assert found["network.n1#create"] == "done"
    assert {s for s, status in found.items() if status == "not started"} == {
        "profile.p1#create", "instance.c1#create", "file.c1:/etc/x#create", "profile.p2#create"}
    assert fake.did("create") == ["create network n1"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's handler is back


def test_a_ctrl_c_between_steps_is_honoured_too():
    """The interrupt lands in the scheduler's own bookkeeping (here: the progress display's callback),
    not while it waits: it must still only stop new steps, never abandon the running ones."""
    def progress(event: str, step: Step, change: Change, outcome) -> None:
        if event == "end" and str(step) == "network.n1#create":
            os.kill(os.getpid(), signal.SIGINT)

    fake = FakeLxd()
    _, report = run(THE_LAB, fake, parallelism=1, progress=progress)
    assert report.interrupted and statuses(report)["network.n1#create"] == "done"
    assert fake.did("create") == ["create network n1"]


def test_a_second_ctrl_c_abandons_the_running_steps():
    """p1 and p2 run at once; a Ctrl-C during p1, a second one once p1 is reported: p2 is abandoned."""
    release = threading.Event()

    def progress(event: str, step: Step, change: Change, outcome) -> None:
        if event == "end" and str(step) == "profile.p1#create":
            os.kill(os.getpid(), signal.SIGINT)

    fake = FakeLxd(on_call=_interrupt_during("create", "profile", "p1"),
                   gates={("create", "profile", "p2"): release})
    try:
        with pytest.raises(KeyboardInterrupt):
            run([prof("p1"), prof("p2")], fake, parallelism=2, progress=progress)
    finally:
        release.set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_record_is_written_after_the_steps_inside_with_only_what_succeeded():
    fake = FakeLxd(fail={("push", "file", "c1:/etc/y.reconciler-new"): "disk full"})
    changes = [net("n1"), prof("p1", "n1"), inst("c1", "p1"), a_file("c1", "/etc/x"), a_file("c1", "/etc/y")]
    _, report = run(changes, fake)
    assert statuses(report)["file.c1:/etc/x#create"] == "done"
    assert statuses(report)["file.c1:/etc/y#create"] == "failed"
    record_at = fake.did("push").index(f"push file c1:{record_path(LAB)}")
    assert record_at == len(fake.did("push")) - 1  # after every step inside c1
    record = parse_record(fake.files[("c1", record_path(LAB))].decode())
    assert set(record) == {"file:/etc/x"}  # y failed: not recorded as the lab's
    assert fake.objects[("instance", "c1")]["config"]["user.reconciler.record"] == "true"


def test_an_interrupted_apply_still_records_what_it_did_inside():
    fake = FakeLxd(on_call=_interrupt_during("push", "file", "c1:/etc/x.reconciler-new"))
    changes = [inst("c1"), a_file("c1", "/etc/x"), a_file("c1", "/etc/y")]
    _, report = run(changes, fake, parallelism=1)
    assert report.interrupted and statuses(report)["file.c1:/etc/y#create"] == "not started"
    assert set(parse_record(fake.files[("c1", record_path(LAB))].decode())) == {"file:/etc/x"}


def test_a_rename_read_back_from_a_saved_plan_renames_its_previous_address():
    fake = FakeLxd()
    fake.objects[("instance", "c0")] = {"name": "c0", "status": "Stopped"}
    change = Change(instance("c9"), (Action.RENAME,), (Reason(Code.RENAMED, "renamed from c0 in lab.yaml"),),
                    None, None, meta=Meta(prev_address=instance("c0")))
    saved = plan_from_json(json.loads(json.dumps(make_plan(LAB, [change], {}).as_json())))
    ctx = Context(Lab.model_construct(lab=LAB), Path("."), frozenset(), {})
    report = apply_plan(saved, ctx, fake)  # type: ignore[arg-type]
    assert report.ok and fake.did("rename") == ["rename instance c0"]
    assert ("instance", "c9") in fake.objects and ("instance", "c0") not in fake.objects


def test_a_started_container_is_waited_for_to_hold_its_fixed_address_and_one_it_does_not_is_said(monkeypatch):
    """The forward example's proxyha once ran on a dynamic lease while its NIC's ipv4.address was the
    forward's target, and apply said nothing: now the step waits (bounded) and the report says it."""
    from types import SimpleNamespace

    from reconciler.kinds import instance as instance_kind
    lab = Lab.model_validate({"lab": "l", "networks": {"lan": {}, "off": {"config": {"ipv4.dhcp": "false"}}},
                              "profiles": {"p": {"devices": {"eth1": {"type": "nic", "network": "lan",
                                                                      "ipv4.address": "10.203.99.9"}}}},
                              "containers": {"c1": {"image": "i", "profiles": ["p"], "devices": {
                                  "eth0": {"type": "nic", "network": "lan", "name": "eth0", "ipv4.address": "10.203.99.2"},
                                  "eth2": {"type": "nic", "network": "off", "ipv4.address": "10.203.98.2"},
                                  "eth3": {"type": "nic", "nictype": "macvlan", "parent": "x"}}}}})
    assert instance_kind.fixed_addresses(lab, lab.containers["c1"]) == {"eth0": "10.203.99.2", "eth1": "10.203.99.9"}
    warned: list[str] = []
    fake = FakeLxd(objects={("instance", "c1"): {"name": "c1", "status": "Stopped", "config": {}}})
    run = SimpleNamespace(lxd=fake, lab_name="l", warn=warned.append)
    held = Change(instance("c1"), (Action.START,), (), None, {}, meta=Meta(payload={"fixed": {"eth0": "10.203.99.2"}}))
    instance_kind.holds_fixed_addresses(run, "c1", held)  # type: ignore[arg-type]
    assert warned == []  # the fake's eth0 holds 10.203.99.2
    reads = len(fake.calls)
    instance_kind.holds_fixed_addresses(run, "c1", Change(instance("c1"), (Action.START,), (), None, {}))  # type: ignore[arg-type]
    assert len(fake.calls) == reads  # no fixed address: no read of the container's state
    monkeypatch.setattr(instance_kind, "FIXED_WAIT", 0.6)
    missed = Change(instance("c1"), (Action.START,), (), None, {}, meta=Meta(payload={"fixed": {"eth0": "10.203.99.5"}}))
    instance_kind.holds_fixed_addresses(run, "c1", missed)  # type: ignore[arg-type]
    assert len(warned) == 1 and "instance.c1: eth0 holds 10.203.99.2, not its fixed 10.203.99.5" in warned[0], warned
