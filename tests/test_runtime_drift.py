"""HAProxy's runtime state as drift, the pure parts: `show servers state` parsed, the facts script asking
the admin socket (here, on the host's own sh and perl, through a Unix socket a thread answers), the servers
that differ from lab.yaml, and what the plan puts back anyway.  No LXD (the real HAProxy:
tests/test_no_downtime.py)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from fake_haproxy import ReloadingHaproxy
from test_facts import facts_here

from reconciler import runtime_drift
from reconciler.address import Kind, file, instance, server, service
from reconciler.facts import Facts
from reconciler.haproxy import CONFIG_PATH
from reconciler.haproxy.runtime import SHOW_SERVERS_STATE, ServerState, client_argv, parse_servers_state
from reconciler.inside import provisioning_of, runtime_question
from reconciler.kinds import server as server_kind
from reconciler.plan import (
    Action,
    Change,
    Code,
    Cost,
    Drain,
    Plan,
    Reason,
    RuntimeSet,
    Step,
    make_plan,
    plan_from_json,
)
from reconciler.render import plan_text
from reconciler.spec import Lab, load_lab

ROOT = Path(__file__).resolve().parent.parent
LAB = load_lab(ROOT / "lab.yaml", {})[0]

# HAProxy 2.6.12 (Debian 12, the reconciler-debian image), two backends of two servers, after
#   set server subdomain2/site1 state maint; set weight subdomain1/site2 7; set server subdomain2/site2 state drain
# through the admin socket: the answer to `show servers state`, as
#   lxc exec CONTAINER -- perl -e "$CLIENT" /run/haproxy/admin.sock 'show servers state'
# printed it (CLIENT: reconciler/haproxy/runtime.py's).
CAPTURED = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight"
    " srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state"
    " srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port"
    " srv_check_addr srv_agent_addr srv_agent_port\n"
    "2 subdomain1 1 site1 127.0.0.1 0 0 3 3 4 8 2 0 6 0 0 0 - 8081 - 0 0 - - 0\n"
    "2 subdomain1 2 site2 127.0.0.1 2 0 7 1 4 1 0 2 0 0 0 0 - 8082 - 0 0 - - 0\n"
    "3 subdomain2 1 site1 127.0.0.1 0 1 1 1 1 1 0 0 0 0 0 0 - 8081 - 0 0 - - 0\n"
    "3 subdomain2 2 site2 127.0.0.1 2 8 1 1 1 1 0 2 0 0 0 0 - 8082 - 0 0 - - 0\n\n")


def test_show_servers_state_gives_each_servers_weight_and_admin_state():
    assert parse_servers_state(CAPTURED) == {
        ("subdomain1", "site1"): ServerState("ready", 3), ("subdomain1", "site2"): ServerState("ready", 7),
        ("subdomain2", "site1"): ServerState("maint", 1), ("subdomain2", "site2"): ServerState("drain", 1)}


@pytest.mark.parametrize("answer, words", [
    ("", "answered: nothing"), ("Unknown command: 'show servers state'\n", "answered: Unknown command"),
    ("1\n# be_id be_name srv_id\n", "no srv_name, srv_admin_state, srv_uweight column"),
    (CAPTURED.replace(" 0 7 1 4", " 0 x 1 4"), "a line it does not describe"),
    (CAPTURED.replace("- 8082 - 0 0 - - 0\n3", "- 8082\n3"), "a line it does not describe")])
def test_an_answer_that_is_not_the_servers_state_is_said_not_guessed(answer, words):
    with pytest.raises(ValueError, match=words):
        parse_servers_state(answer)


@pytest.fixture
def admin_socket(tmp_path):
    """A Unix socket that answers one command with CAPTURED, as HAProxy's would; it records the command."""
    path = tmp_path / "admin.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    asked: list[str] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            asked.append(conn.makefile().readline())
            conn.sendall(CAPTURED.encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield str(path), asked
    thread.join(timeout=10)
    listener.close()


def test_the_facts_exec_asks_the_admin_socket_through_the_drains_own_client(admin_socket):
    path, asked = admin_socket
    argv = client_argv(path, SHOW_SERVERS_STATE)
    facts = facts_here(runtime=(argv[2], path, SHOW_SERVERS_STATE))
    assert asked == ["show servers state\n"]
    assert facts.runtime == CAPTURED.rstrip("\n") and facts.no_runtime == ""  # $(...) drops the last newlines
    assert parse_servers_state(facts.runtime)[("subdomain2", "site1")].state == "maint"


def test_without_an_admin_socket_the_facts_say_so_and_the_rest_is_read(tmp_path):
    (tmp_path / "a").write_text("x")
    client = client_argv("/run/haproxy/admin.sock", SHOW_SERVERS_STATE)[2]
    facts = facts_here(files=[str(tmp_path / "a")], runtime=(client, str(tmp_path / "admin.sock"), SHOW_SERVERS_STATE))
    assert facts.runtime is None and facts.no_runtime == f"no admin socket at {tmp_path}/admin.sock"
    assert facts.files[str(tmp_path / "a")]["type"] == "file"
    assert facts_here().no_runtime == "" and facts_here().runtime is None  # not asked: nothing said


def test_the_haproxy_container_is_asked_with_the_socket_lab_yaml_gives_and_the_others_are_not():
    client, sock, command = runtime_question(provisioning_of(LAB, "proxyha")) or ("", "", "")
    assert (sock, command) == ("/run/haproxy/admin.sock", "show servers state") and "IO::Socket::UNIX" in client
    assert runtime_question(provisioning_of(LAB, "web1")) is None


def states(**changed: ServerState) -> dict:
    out = {(b, s): ServerState("ready", 1) for b in ("subdomain1", "subdomain2") for s in ("site1", "site2")}
    return {"proxyha": {**out, **{tuple(k.split("__")): v for k, v in changed.items()}}}


def test_a_server_set_to_maint_or_reweighted_by_hand_is_drift():
    found = states(subdomain2__site1=ServerState("maint", 1), subdomain1__site2=ServerState("ready", 7))
    changes = {str(c.address): c for c in runtime_drift.drifted(LAB, found)}
    assert set(changes) == {"server.proxyha:subdomain2/site1", "server.proxyha:subdomain1/site2"}
    maint = changes["server.proxyha:subdomain2/site1"]
    assert (maint.before, maint.after) == ({"weight": 1, "state": "maint"}, {"weight": 1, "state": "ready"})
    assert [(f.path, f.before, f.after) for f in maint.diff] == [("state", "maint", "ready")]
    assert maint.origin.phrase == "changed outside lab.yaml" and maint.reasons[0].code == Code.DRIFT
    assert server_kind.commands(maint) == ["set server subdomain2/site1 state ready"]
    assert server_kind.commands(changes["server.proxyha:subdomain1/site2"]) == ["set weight subdomain1/site2 1"]
    assert runtime_drift.drifted(LAB, states()) == []


def test_lab_yamls_weight_is_the_one_compared_and_a_stopped_containers_servers_may_stay_drained():
    lab = Lab.model_validate(_with(LAB, weight=3, web2_state="stopped"))
    found = states(subdomain1__site1=ServerState("ready", 3), subdomain1__site2=ServerState("drain", 1),
                   subdomain2__site2=ServerState("maint", 5))
    changes = {str(c.address): c for c in runtime_drift.drifted(lab, found)}
    assert set(changes) == {"server.proxyha:subdomain2/site2"}  # web2 is to be stopped: only its weight counts
    assert changes["server.proxyha:subdomain2/site2"].after == {"weight": 1}


def _with(lab: Lab, weight: int, web2_state: str) -> dict:
    data = lab.model_dump(by_alias=True, exclude_unset=True)
    data["haproxy"]["proxyha"]["backends"]["subdomain1"]["servers"][0]["weight"] = weight
    data["containers"]["web2"]["state"] = web2_state
    return data


def plan_with(*others: Change, **changed: ServerState) -> Plan:
    return make_plan("lab", [*others, *runtime_drift.drifted(LAB, states(**changed))], {})


def test_the_plan_shows_the_drift_as_a_runtime_change_after_haproxys_own_steps():
    reload = Change(service("proxyha", "haproxy"), (Action.RELOAD,), (Reason(Code.WATCHED_FILE, "x changed"),),
                    None, {"running": True})
    plan = runtime_drift.settled(plan_with(subdomain2__site1=ServerState("maint", 1)))
    (c,) = plan.changes
    assert plan.cost(c) == Cost.RUNTIME
    text = plan_text(plan)
    assert ("~ server.proxyha:subdomain2/site1 will be updated in place (HAProxy's runtime state differs: state)"
            " [changed outside lab.yaml] [cost: runtime]") in text, text
    assert '      state: "maint" -> "ready"' in text
    assert c.depends_on == (file("proxyha", CONFIG_PATH), service("proxyha", "haproxy"))
    unsettled = plan_with(reload, subdomain2__site1=ServerState("maint", 1))
    assert unsettled.graph[Step(c.address, Action.UPDATE)] == {Step(reload.address, Action.RELOAD)}


def test_what_the_plan_puts_back_anyway_is_not_drift():
    drifting = {"subdomain1__site1": ServerState("maint", 4), "subdomain2__site2": ServerState("drain", 1)}
    reload = Change(service("proxyha", "haproxy"), (Action.RELOAD,), (Reason(Code.WATCHED_FILE, "x changed"),),
                    None, {"running": True})
    assert runtime_drift.settled(plan_with(reload, **drifting)).changes == (reload,)  # a reload starts afresh
    restart = Change(instance("proxyha"), (Action.RESTART,), (Reason(Code.RESTART_SETTINGS, "x"),), {}, {})
    assert runtime_drift.settled(plan_with(restart, **drifting)).changes == (restart,)
    plan = plan_with(**drifting)
    web1 = Step(instance("web1"), Action.RESTART)
    drain = Drain("proxyha", "/run/haproxy/admin.sock", "subdomain1", "site1", 80, True, 10, 60)
    weight = RuntimeSet("proxyha", "/run/haproxy/admin.sock", "subdomain1", "site1", "weight", 4)
    settled = runtime_drift.settled(Plan(plan.lab, plan.changes, plan.graph, drains={web1: (drain,)},
                                         runtime={Step(file("proxyha", CONFIG_PATH), Action.UPDATE): (weight,)}))
    assert [str(c.address) for c in settled.changes] == ["server.proxyha:subdomain2/site2"]  # site1: both put back
    settled = runtime_drift.settled(Plan(plan.lab, plan.changes, plan.graph, drains={web1: (drain,)}))
    site1 = settled.change_at(server("proxyha", "subdomain1", "site1"))
    assert site1 is not None and site1.after == {"weight": 1} and [f.path for f in site1.diff] == ["weight"]
    assert server_kind.commands(site1) == ["set weight subdomain1/site1 1"]  # the drain sets it ready itself
    assert Step(site1.address, Action.UPDATE) in settled.graph


def test_an_unreadable_runtime_state_is_a_note_and_the_plan_goes_on():
    found, notes = runtime_drift.read(LAB, {"proxyha": Facts(no_runtime="no admin socket at /run/haproxy/admin.sock"),
                                            "web1": Facts()})
    assert found == {} and notes == ["proxyha: HAProxy's runtime state could not be read (no admin socket at"
                                     " /run/haproxy/admin.sock); servers changed by hand through its admin socket"
                                     " are not seen"]
    found, notes = runtime_drift.read(LAB, {"proxyha": Facts(runtime="Permission denied.\n")})
    assert found == {} and "answered: Permission denied." in notes[0]
    found, notes = runtime_drift.read(LAB, {"proxyha": Facts(runtime=CAPTURED)})
    assert notes == [] and found["proxyha"][("subdomain2", "site2")].state == "drain"


def test_a_server_address_names_its_proxy_backend_and_server():
    addr = server("proxyha", "subdomain1", "site1")
    assert str(addr) == "server.proxyha:subdomain1/site1" and addr.kind == Kind.SERVER and addr.kind.inside


def test_a_saved_plan_keeps_the_server_change_its_socket_and_its_cost():
    plan = runtime_drift.settled(plan_with(subdomain2__site1=ServerState("maint", 1)))
    data = json.loads(json.dumps(plan.as_json()))
    (shown,) = data["changes"]
    assert (shown["address"], shown["cost"], shown["origin"]) == ("server.proxyha:subdomain2/site1", "runtime", "outside")
    again = plan_from_json(data)
    assert again.changes == plan.changes and again.fingerprint() == plan.fingerprint()
    assert again.changes[0].meta.payload == {"socket": "/run/haproxy/admin.sock"}


def test_a_server_haproxy_runs_without_or_with_against_lab_yaml_is_drift_a_reload_puts_right():
    found = states()
    del found["proxyha"][("subdomain1", "site2")]  # `del server` by hand, or an apply cut short
    found["proxyha"][("subdomain2", "site9")] = ServerState("ready", 1)  # `add server` by hand
    changes = {str(c.address): c for c in runtime_drift.drifted(LAB, found)}
    assert set(changes) == {"server.proxyha:subdomain1/site2", "server.proxyha:subdomain2/site9"}
    missing, extra = changes["server.proxyha:subdomain1/site2"], changes["server.proxyha:subdomain2/site9"]
    assert (missing.before, missing.after) == ({"in_haproxy": False}, {"in_haproxy": True})
    assert (extra.before, extra.after) == ({"in_haproxy": True}, {"in_haproxy": False})

    run = ReloadingHaproxy(old=1, looks=((2, False),))
    assert server_kind.apply(run, missing, Action.UPDATE) is True  # type: ignore[arg-type]
    assert run.said == ["ask show info", "exec systemctl reload -- haproxy", "ask show info", "alive? /proc/1"]
    # A reload or a runtime add/remove the plan makes anyway puts them right: no drift left.
    reload = Change(service("proxyha", "haproxy"), (Action.RELOAD,), (Reason(Code.WATCHED_FILE, "x changed"),),
                    None, {"running": True})
    with_reload = make_plan("lab", [reload, *runtime_drift.drifted(LAB, found)], {})
    assert runtime_drift.settled(with_reload).changes == (reload,)
    plan = make_plan("lab", runtime_drift.drifted(LAB, found), {})
    cfg = Step(file("proxyha", CONFIG_PATH), Action.UPDATE)
    sock = "/run/haproxy/admin.sock"
    added = RuntimeSet("proxyha", sock, "subdomain1", "site2", "add", 80, "web2")
    settled = runtime_drift.settled(Plan(plan.lab, plan.changes, plan.graph, runtime={cfg: (added,)}))
    assert [str(c.address) for c in settled.changes] == ["server.proxyha:subdomain2/site9"]
