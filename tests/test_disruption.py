"""Changes without downtime, the pure parts: which HAProxy servers a container backs, which steps drain
them, the one-at-a-time order, the warning for a backend left without a server, each change's cost, and
what reaches HAProxy's admin socket.  No LXD (the drains themselves: tests/test_no_downtime.py)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from reconciler import disruption
from reconciler.address import Address, Kind, file, instance, profile, service
from reconciler.haproxy import HAProxy
from reconciler.haproxy.runtime import (
    Delta,
    UnsafeValue,
    add_server,
    client_argv,
    force_down,
    parse_stat,
    server_deltas,
    set_address,
    set_field,
    set_state,
    stand_ins,
)
from reconciler.markdown import plan_markdown
from reconciler.plan import Action, Change, Code, Cost, Plan, Reason, Step, make_plan, plan_from_json
from reconciler.render import plan_text
from reconciler.spec import load_lab

ROOT = Path(__file__).resolve().parent.parent
GUIDE = load_lab(ROOT / "lab.yaml", {})[0].haproxy


def change(address: Address, *actions: Action, code: Code = Code.DRIFT, depends_on: tuple = ()) -> Change:
    return Change(address, actions, tuple(Reason(code, "why") for _ in actions), {"state": "running"},
                  {"state": "running"}, depends_on=depends_on)


def restarts(*names: str) -> list[Change]:
    return [change(profile("shared"), Action.UPDATE)] + [
        change(instance(n), Action.RESTART, code=Code.RESTART_SETTINGS, depends_on=(profile("shared"),))
        for n in names]


def planned(changes: list[Change], haproxy=GUIDE) -> Plan:
    return disruption.planned(make_plan("lab", changes, {}), haproxy)


def test_a_container_backs_every_server_that_names_it_in_every_backend():
    served = disruption.served_by(GUIDE)
    assert {c: [str(d) for d in ds] for c, ds in served.items()} == {
        "web1": ["subdomain1/site1", "subdomain2/site1"], "web2": ["subdomain1/site2", "subdomain2/site2"]}
    one = served["web1"][0]
    assert (one.proxy, one.socket, one.port, one.checked) == ("proxyha", "/run/haproxy/admin.sock", 80, True)
    assert (one.drain_seconds, one.ready_seconds) == (10.0, 60.0)  # the defaults


def test_the_waits_are_the_backends_own():
    spec = HAProxy.model_validate({"backends": {"b": {
        "drain_timeout": 2500, "ready_timeout": "2m", "health_check": False,
        "servers": [{"container": "w", "name": "s", "port": 8080}]}}})
    (d,) = disruption.served_by({"p": spec})["w"]
    assert (d.drain_seconds, d.ready_seconds, d.checked, d.port, d.server) == (2.5, 120.0, False, 8080, "s")
    with pytest.raises(ValueError, match="over 60 minutes"):
        HAProxy.model_validate({"backends": {"b": {"drain_timeout": "2h"}}})


def test_restarts_stops_moves_and_replaces_drain_and_only_they():
    steps = [Step(instance("web1"), a) for a in Action] + [Step(service("web2", "apache2"), Action.RESTART),
                                                           Step(service("web2", "apache2"), Action.RELOAD),
                                                           Step(instance("proxyha"), Action.RESTART)]
    drained = disruption.drains(steps, disruption.served_by(GUIDE))
    assert {str(s): [d.then for d in ds] for s, ds in drained.items()} == {
        "instance.web1#restart": ["ready", "ready"], "instance.web1#move": ["ready", "ready"],
        "instance.web1#stop": ["away", "away"], "instance.web1#replace": ["checks", "checks"],
        "service.web2:apache2#restart": ["ready", "ready"]}


def test_a_package_installed_where_a_server_serves_drains_it_and_one_a_new_container_gets_does_not():
    from reconciler.address import package
    mod = Step(package("web1", "libapache2-mod-php"), Action.CREATE)
    served = disruption.served_by(GUIDE)
    assert {str(s): [str(d) for d in ds] for s, ds in disruption.drains([mod], served).items()} == {
        "package.web1:libapache2-mod-php#create": ["subdomain1/site1", "subdomain2/site1"]}
    for new in (Action.CREATE, Action.REPLACE):  # nothing to drain: it serves nothing before its packages
        assert disruption.drains([Step(instance("web1"), new), mod], served).keys() == {Step(instance("web1"), new)} - {
            Step(instance("web1"), Action.CREATE)}
    spec = HAProxy.model_validate({"backends": {"solo": {"servers": [{"container": "web1"}]}}})
    warned = planned([change(package("web1", "libapache2-mod-php"), Action.CREATE)], {"proxyha": spec})
    assert warned.warnings == ("solo has no other server: requests fail while web1's libapache2-mod-php is installed",)


def test_two_servers_of_one_backend_restart_one_after_the_other_in_every_order():
    plan = planned(restarts("web1", "web2"))
    web1, web2 = Step(instance("web1"), Action.RESTART), Step(instance("web2"), Action.RESTART)
    assert web1 in plan.graph[web2]
    for seed in range(20):  # fixed seeds: every order the graph allows keeps one of them up
        order = plan.order(random.Random(seed))
        assert order.index(web1) < order.index(web2)
    assert plan.warnings == ()


def test_an_order_the_graph_has_already_is_kept_and_no_cycle_is_made():
    changes = restarts("web1", "web2")
    changes[2] = change(instance("web2"), Action.RESTART, depends_on=(profile("shared"), instance("web1")))
    changes[1] = change(instance("web1"), Action.RESTART, depends_on=(profile("shared"),))
    plan = make_plan("lab", changes, {})
    reversed_graph = {s: w for s, w in plan.graph.items()}
    web1, web2 = Step(instance("web1"), Action.RESTART), Step(instance("web2"), Action.RESTART)
    reversed_graph[web1] = frozenset(reversed_graph[web1] | {web2})  # web1 waits for web2 already
    reversed_graph[web2] = frozenset(reversed_graph[web2] - {web1})
    out = disruption.one_at_a_time(reversed_graph, disruption.drains(list(reversed_graph), disruption.served_by(GUIDE)))
    assert web2 in out[web1] and web1 not in out[web2]


def test_containers_behind_different_backends_still_restart_together():
    spec = HAProxy.model_validate({"backends": {
        "a": {"servers": [{"container": "web1"}, {"container": "web3"}]},
        "b": {"servers": [{"container": "web2"}, {"container": "web4"}]}}})
    plan = planned(restarts("web1", "web2"), {"proxyha": spec})
    assert Step(instance("web1"), Action.RESTART) not in plan.graph[Step(instance("web2"), Action.RESTART)]
    assert Step(instance("web2"), Action.RESTART) not in plan.graph[Step(instance("web1"), Action.RESTART)]


def test_a_backend_whose_only_server_goes_away_is_a_warning():
    spec = HAProxy.model_validate({"backends": {
        "subdomain1": {"servers": [{"container": "web1"}, {"container": "web2"}]},
        "subdomain2": {"servers": [{"container": "web2"}]}}})
    plan = planned(restarts("web2") + [change(service("web1", "apache2"), Action.RESTART)], {"proxyha": spec})
    assert plan.warnings == ("subdomain2 has no other server: requests fail while web2 restarts",)
    text = plan_text(plan)
    assert "Warning: subdomain2 has no other server: requests fail while web2 restarts\n" in text
    assert "> **Warning:** subdomain2 has no other server" in plan_markdown(plan)


def test_the_plan_shows_the_drains_and_keeps_them_through_json():
    plan = planned(restarts("web1", "web2"))
    text = plan_text(plan)
    assert ("<> instance.web1 will be restarted (why) [cost: restart]\n"
            "      drains subdomain1/site1, subdomain2/site1 first\n") in text
    again = plan_from_json(json.loads(json.dumps(plan.as_json())))
    assert again.drains == plan.drains and again.graph == plan.graph and again.fingerprint() == plan.fingerprint()
    assert "drains subdomain1/site2, subdomain2/site2 first" in plan_markdown(plan)
    targeted = plan.targeted([instance("web1")], {instance("web1"), instance("web2")})
    assert list(targeted.drains) == [Step(instance("web1"), Action.RESTART)]


def test_each_change_kind_has_its_cost():
    watched = file("proxyha", "/etc/haproxy/haproxy.cfg")
    plain = file("web1", "/var/www/html/index.html")
    changes = [change(instance("a"), Action.CREATE), change(instance("b"), Action.UPDATE, Action.RESTART),
               change(instance("c"), Action.REPLACE), change(instance("d"), Action.DELETE),
               change(instance("e"), Action.STOP), change(instance("f"), Action.MOVE),
               change(instance("g"), Action.START), change(profile("p"), Action.UPDATE),
               change(watched, Action.UPDATE), change(plain, Action.UPDATE),
               change(service("proxyha", "haproxy"), Action.RELOAD, code=Code.WATCHED_FILE, depends_on=(watched,)),
               change(service("web1", "apache2"), Action.RESTART)]
    plan = make_plan("lab", changes, {})
    costs = {str(c.address): plan.cost(c).value for c in plan.changes}
    assert costs == {"instance.a": "live", "instance.b": "restart", "instance.c": "recreate",
                     "instance.d": "recreate", "instance.e": "restart", "instance.f": "restart",
                     "instance.g": "live", "profile.p": "live", "file.proxyha:/etc/haproxy/haproxy.cfg": "reload",
                     "file.web1:/var/www/html/index.html": "live", "service.proxyha:haproxy": "reload",
                     "service.web1:apache2": "restart"}
    assert [c["cost"] for c in plan.as_json()["changes"]] == [costs[str(c.address)] for c in plan.changes]
    assert "| restart |" in plan_markdown(plan) and Cost.RUNTIME.value == "runtime"
    assert Kind.FILE.inside


def test_what_reaches_the_admin_socket_is_one_checked_command():
    assert set_state("subdomain1", "site1", "drain") == "set server subdomain1/site1 state drain"
    assert force_down("b", "s") == "set server b/s health down"
    assert set_address("b", "s", "10.203.7.5", 80) == "set server b/s addr 10.203.7.5 port 80"
    argv = client_argv("/run/haproxy/admin.sock", "show stat")
    assert argv[:2] == ["perl", "-e"] and argv[3:] == ["/run/haproxy/admin.sock", "show stat"]
    for bad in (lambda: set_state("b;shutdown", "s", "drain"), lambda: set_state("b", "s\nx", "ready"),
                lambda: set_state("b", "s", "gone"), lambda: set_address("b", "s", "10.0.0.1; x", 80),
                lambda: client_argv("run/x", "show stat"), lambda: client_argv("/x", "show stat; shutdown frontend f")):
        with pytest.raises(ValueError):
            bad()
    assert issubclass(UnsafeValue, ValueError)


STAT = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,check_status,check_desc,last_chk
http_frontend,FRONTEND,,,1,3,,9,OPEN,,,
subdomain1,site1,0,0,2,3,,9,DRAIN,L7OK,Layer7 check passed,
subdomain1,site2,0,0,0,1,,4,DOWN,L4CON,"Layer4 connection problem","Connection refused"
subdomain1,BACKEND,0,0,2,3,,13,UP,,,
"""


def test_show_stat_is_read_for_servers_only_with_haproxys_words():
    stats = parse_stat(STAT)
    assert set(stats) == {("subdomain1", "site1"), ("subdomain1", "site2")}
    site1, site2 = stats[("subdomain1", "site1")], stats[("subdomain1", "site2")]
    assert (site1.sessions, site1.up, site2.up) == (2, False, False)
    assert site2.said() == "DOWN, L4CON, Layer4 connection problem, Connection refused"
    with pytest.raises(ValueError, match="Unknown command"):
        parse_stat("Unknown command: 'show stat'\n")


CFG = """\
global
    stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners

backend subdomain1
    balance roundrobin
    server site1 10.203.7.11:80 check inter 1s rise 2 fall 2{one}
    server site2 10.203.7.12:80 check inter 1s rise 2 fall 2{two}
"""


def test_only_server_lines_go_through_the_runtime_api():
    before = CFG.format(one="", two=" maxconn 50")
    assert server_deltas(before, CFG.format(one=" weight 3", two=" maxconn 80")) == [
        Delta("subdomain1", "site1", "weight", 3), Delta("subdomain1", "site2", "maxconn", 80)]
    assert server_deltas(CFG.format(one=" weight 3", two=""), CFG.format(one="", two="")) == [
        Delta("subdomain1", "site1", "weight", 1)]  # HAProxy's default weight
    assert server_deltas(before, CFG.format(one="", two="")) is None  # no runtime value means "no maxconn"
    assert server_deltas(before, before.replace("10.203.7.11", "10.203.7.13")) == [
        Delta("subdomain1", "site1", "addr", "10.203.7.13")]
    assert server_deltas(before, before.replace("roundrobin", "leastconn")) is None
    assert set_field("b", "s", "weight", 0) == "set weight b/s 0"
    assert set_field("b", "s", "maxconn", 9) == "set maxconn server b/s 9"
    with pytest.raises(ValueError):
        set_field("b", "s", "weight", 257)


SITE3 = "    server site3 10.203.7.14:80 check inter 1s rise 2 fall 2 weight 2\n"


def test_a_server_added_or_removed_goes_through_the_runtime_api_where_haproxy_allows_it():
    before = CFG.format(one="", two="")
    added = before + SITE3
    assert server_deltas(before, added) == [
        Delta("subdomain1", "site3", "add", "10.203.7.14:80 check inter 1s rise 2 fall 2 weight 2")]
    assert server_deltas(added, before) == [Delta("subdomain1", "site3", "del")]
    # Removed, changed and added in one: each server's own delta, removals first.
    site2 = "    server site2 10.203.7.12:80 check inter 1s rise 2 fall 2\n"
    mixed = added.replace(site2, "").replace("10.203.7.11:80 check inter 1s rise 2 fall 2",
                                              "10.203.7.21:80 check inter 1s rise 2 fall 2 weight 5")
    assert server_deltas(before, mixed) == [
        Delta("subdomain1", "site2", "del"), Delta("subdomain1", "site1", "addr", "10.203.7.21"),
        Delta("subdomain1", "site1", "weight", 5), Delta("subdomain1", "site3", "add",
                                                         "10.203.7.14:80 check inter 1s rise 2 fall 2 weight 2")]
    # HAProxy adds servers at runtime only where the algorithm is dynamic; it removes them anywhere.
    hashed = before.replace("roundrobin", "source")
    assert server_deltas(hashed, hashed + SITE3) is None and server_deltas(hashed + SITE3, hashed) == [
        Delta("subdomain1", "site3", "del")]
    reordered = before.replace(site2, "").replace("    server site1", site2 + "    server site1")
    refused = {"servers reordered": reordered,
               "a word that is not data": before + "    server site3 10.203.7.14:80 check;show\n",
               "a host name": before + "    server site3 web3.lan:80 check\n",
               "a port": before.replace("10.203.7.11:80", "10.203.7.11:8080"),
               "a check setting": before.replace("rise 2 fall 2\n    server site2", "rise 3 fall 2\n    server site2"),
               "a server named twice": before + site2}
    for what, after in refused.items():
        assert after != before and server_deltas(before, after) is None, what
    assert server_deltas(before + site2, before) is None  # nor a live file that names one twice
    assert add_server("b", "s", ["10.0.0.1:80", "check"]) == "add server b/s 10.0.0.1:80 check"
    with pytest.raises(UnsafeValue):
        add_server("b", "s", ["10.0.0.1:80", "check", "\nshow"])


def _config_and_reload(before: str, after: str, also: tuple[Action, ...] = ()) -> list[Change]:
    cfg = file("proxyha", "/etc/haproxy/haproxy.cfg")
    return [Change(cfg, (Action.UPDATE,), (Reason(Code.DRIFT, "differs: content"),), {"content": before},
                   {"content": after}),
            Change(service("proxyha", "haproxy"), also + (Action.RELOAD,),
                   tuple(Reason(Code.DRIFT, "differs: running") for _ in also)
                   + (Reason(Code.WATCHED_FILE, "/etc/haproxy/haproxy.cfg changed"),), None, {"running": True},
                   depends_on=(cfg,))]


def test_a_weight_change_is_written_and_made_live_without_a_reload():
    plan = planned(_config_and_reload(CFG.format(one="", two=""), CFG.format(one=" weight 3", two="")))
    cfg_step = Step(file("proxyha", "/etc/haproxy/haproxy.cfg"), Action.UPDATE)
    assert [str(r) for r in plan.runtime[cfg_step]] == ["subdomain1/site1 weight 3"]
    assert [str(c.address) for c in plan.changes] == ["file.proxyha:/etc/haproxy/haproxy.cfg"]
    assert list(plan.graph) == [cfg_step] and plan.cost(plan.changes[0]) == Cost.RUNTIME
    assert "through HAProxy's runtime API, no reload: subdomain1/site1 weight 3" in plan_text(plan)
    again = plan_from_json(json.loads(json.dumps(plan.as_json())))
    assert again.runtime == plan.runtime and again.fingerprint() == plan.fingerprint()
    # The service's other actions stay; an address goes live too, with the address apply reads then;
    # anything else reloads.
    kept = planned(_config_and_reload(CFG.format(one="", two=""), CFG.format(one=" weight 3", two=""),
                                      (Action.UPDATE,)))
    assert kept.changes[1].actions == (Action.UPDATE,)
    moved = planned(_config_and_reload(CFG.format(one="", two=""), CFG.format(one="", two="").replace(".11", ".13")))
    assert [str(r) for r in moved.runtime[cfg_step]] == ["subdomain1/site1 addr web1's new address port 80"]
    checks = planned(_config_and_reload(CFG.format(one="", two=""), CFG.format(one="", two="").replace("1s", "2s")))
    assert checks.runtime == {} and Action.RELOAD in checks.changes[1].actions


def test_haproxys_answer_to_a_new_address_is_obeyed_and_an_error_is_not():
    """`set server addr` is answered even when obeyed (a moved container that kept its address: "no need to
    change"); any other answer is HAProxy refusing, in its own words."""
    from types import SimpleNamespace

    from reconciler.draining import order
    from reconciler.plan import Drain

    def run_answering(answer: str):
        lxd = SimpleNamespace(execute=lambda container, argv: (0, answer, ""))
        return SimpleNamespace(lxd=lxd, last_lines=lambda out, err: out, step_error=RuntimeError)

    d = Drain("proxyha", "/run/haproxy/admin.sock", "subdomain1", "site2", 80, True, 10, 60)
    command = "set server subdomain1/site2 addr 10.203.90.199 port 80"
    for obeyed in ("", "no need to change the addr, no need to change the port by 'stats socket command'\n",
                   "IP changed from '10.203.90.12' to '10.203.90.199', no need to change the port by 'stats socket"
                   " command'\n"):
        order(run_answering(obeyed), d, command)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="HAProxy refused .*: No such server."):
        order(run_answering("No such server.\n"), d, command)  # type: ignore[arg-type]


# --- a replaced server's new address, without a reload ---------------------------------------------

LAB = load_lab(ROOT / "lab.yaml", {})[0]
LIVE = {"web1": "10.203.90.11", "web2": "10.203.90.12", "proxyha": "10.203.90.10"}


def _guide_config(addresses: dict[str, str]) -> str:
    from reconciler.inside import render_file
    return render_file(LAB, ROOT, "proxyha", "/etc/haproxy/haproxy.cfg", addresses).decode()


def _replaced_web2(before: str) -> Plan:
    """web2 replaced: haproxy.cfg is known only after apply; the plan's decision from its stand-in rendering."""
    from reconciler.engine import _stand_ins
    stand_in = _stand_ins(LAB, ROOT, {c: a for c, a in LIVE.items() if c != "web2"})
    assert stand_in["proxyha"].addresses == {"web2": "192.0.2.1"}
    changes = [change(instance("web2"), Action.REPLACE, code=Code.REPLACE)] + _config_and_reload(
        before, "(known after apply)")
    return disruption.planned(make_plan("lab", changes, {}), LAB.haproxy, stand_in)


def test_a_server_address_changes_alone_between_two_configs_and_nothing_else_does():
    before = _guide_config(LIVE)
    after = _guide_config({**LIVE, "web2": "10.203.90.77"})
    assert server_deltas(before, after) == [Delta("subdomain1", "site2", "addr", "10.203.90.77"),
                                            Delta("subdomain2", "site2", "addr", "10.203.90.77")]
    assert server_deltas(before, before) == []
    assert server_deltas(before, after.replace("10.203.90.77:80", "10.203.90.77:8080")) is None  # a port
    assert server_deltas(before, after.replace("balance roundrobin", "balance leastconn")) is None
    assert server_deltas(before, after.replace("rise 2", "rise 3")) is None  # the server line, beyond its address
    assert server_deltas(before, after.replace("10.203.90.77:80", "web2.lan:80")) is None  # not an IPv4
    assert stand_ins(["web2", "db"]) == {"db": "192.0.2.1", "web2": "192.0.2.2"}
    assert stand_ins([f"c{i}" for i in range(300)]) is None


def test_a_replaced_servers_new_address_is_written_and_made_live_without_a_reload():
    plan = _replaced_web2(_guide_config(LIVE))
    cfg = file("proxyha", "/etc/haproxy/haproxy.cfg")
    cfg_step = Step(cfg, Action.UPDATE)
    assert [str(r) for r in plan.runtime[cfg_step]] == [
        "subdomain1/site2 addr web2's new address port 80", "subdomain2/site2 addr web2's new address port 80"]
    assert service("proxyha", "haproxy") not in {c.address for c in plan.changes}
    assert plan.cost(plan.change_at(cfg)) == Cost.RUNTIME  # type: ignore[arg-type]
    shown = "through HAProxy's runtime API, no reload: subdomain1/site2 addr web2's new address port 80"
    assert shown in plan_text(plan) and shown in plan_markdown(plan, "lab.yaml")
    assert "| runtime |" in plan_markdown(plan, "lab.yaml")
    as_json = plan.as_json()
    assert as_json["runtime"][str(cfg_step)][0]["container"] == "web2"
    again = plan_from_json(json.loads(json.dumps(as_json)))
    assert again.runtime == plan.runtime and again.fingerprint() == plan.fingerprint()


def test_an_address_and_anything_but_server_lines_still_reload():
    live = _guide_config(LIVE)
    others = {"a balance": live.replace("balance roundrobin", "balance leastconn", 1),
              "a port": live.replace(f"{LIVE['web1']}:80", f"{LIVE['web1']}:8080"),
              "a frontend": live.replace("frontend ", "frontend old", 1)}
    for what, before in others.items():
        assert before != live, what
        plan = _replaced_web2(before)
        assert plan.runtime == {}, what
        assert Action.RELOAD in plan.change_at(service("proxyha", "haproxy")).actions, what  # type: ignore[union-attr]
    # Other server lines go live with the new address: a server the live file has and lab.yaml has not, and
    # an address lab.yaml's web1 has now.
    cfg_step = Step(file("proxyha", "/etc/haproxy/haproxy.cfg"), Action.UPDATE)
    extra = _replaced_web2(live.replace("    server site1 ", "    server site3 10.203.90.13:80\n    server site1 ", 1))
    assert [str(r) for r in extra.runtime[cfg_step]] == [
        "subdomain1/site3 removed (drained first, at most 10s)", "subdomain1/site2 addr web2's new address port 80",
        "subdomain2/site2 addr web2's new address port 80"]
    moved = _replaced_web2(live.replace(LIVE["web1"], "10.203.90.99"))
    assert [str(r) for r in moved.runtime[cfg_step]] == [
        "subdomain1/site1 addr web1's new address port 80", "subdomain1/site2 addr web2's new address port 80",
        "subdomain2/site2 addr web2's new address port 80", "subdomain2/site1 addr web1's new address port 80"]
    # Without a stand-in rendering (an address plan could not render), the reload stays.
    changes = _config_and_reload(live, "(known after apply)")
    assert disruption.planned(make_plan("lab", changes, {}), LAB.haproxy).runtime == {}


def test_apply_writes_a_new_address_only_when_nothing_else_differs_and_sends_it_checked():
    from types import SimpleNamespace

    from reconciler.apply import StepRunner
    from reconciler.draining import made_live
    from reconciler.errors import StaleState

    live = _guide_config(LIVE)
    plan = _replaced_web2(live)
    cfg = plan.change_at(file("proxyha", "/etc/haproxy/haproxy.cfg"))
    runner = SimpleNamespace(plan=plan)
    StepRunner._only_planned_servers(runner, cfg, _guide_config({**LIVE, "web2": "10.203.90.77"}).encode())
    StepRunner._only_planned_servers(runner, cfg, live.encode())  # it got its old address back
    for beyond, said in ((_guide_config({**LIVE, "web1": "10.203.90.99"}), "subdomain1/site1 addr,"
                          " subdomain2/site1 addr"), (live.replace("roundrobin", "leastconn"), "other lines")):
        with pytest.raises(StaleState, match=f"differs from the live one in {said}, beyond what the plan makes"
                                             r" live without reloading HAProxy \(subdomain1/site2 addr web2's new"
                                             " address port 80, subdomain2/site2 .* nothing was written"):
            StepRunner._only_planned_servers(runner, cfg, beyond.encode())

    sent: list[str] = []

    def answering(answer: str):
        def execute(container, argv):
            sent.append(argv[-1])
            return 0, answer, ""
        return SimpleNamespace(lxd=SimpleNamespace(execute=execute), last_lines=lambda out, err: out,
                               step_error=RuntimeError)

    sets = plan.runtime[Step(cfg.address, Action.UPDATE)]  # type: ignore[union-attr]
    made_live(answering("IP changed from '10.203.90.12' to '10.203.90.77', no need to change the port by"
                        " 'stats socket command'\n"), sets, {"web2": "10.203.90.77"}.__getitem__, live)  # type: ignore[arg-type]
    assert sent == ["set server subdomain1/site2 addr 10.203.90.77 port 80",
                    "set server subdomain2/site2 addr 10.203.90.77 port 80"]
    with pytest.raises(RuntimeError, match="HAProxy refused .*No such server"):
        made_live(answering("No such server.\n"), sets, {"web2": "10.203.90.77"}.__getitem__, live)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="Only decimal digits permitted"):
        made_live(answering(""), sets, {"web2": "10.203.90.77; show info"}.__getitem__, live)  # type: ignore[arg-type]
    edited = (dataclasses.replace(sets[0], container="web2;x"),)
    with pytest.raises(RuntimeError, match="is not a container's name"):
        made_live(answering(""), edited, {"web2": "10.203.90.77"}.__getitem__, live)  # type: ignore[arg-type]


class _Socket:
    """A recording stand-in for the Runner that draining.py uses: HAProxy's answers in turn, every command
    sent through the admin socket, every other exec and warning."""

    def __init__(self, *answers: str):
        self.answers, self.sent, self.execs, self.warnings = list(answers), [], [], []
        from types import SimpleNamespace
        self.lxd = SimpleNamespace(execute=self._execute)

    def _execute(self, container: str, argv: list[str]) -> tuple[int, str, str]:
        self.sent.append(argv[-1])
        return 0, self.answers.pop(0) if self.answers else "", ""

    def exec(self, container: str, argv: list[str], what: str) -> str:
        self.execs.append(" ".join(argv))
        return ""

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    step_error = staticmethod(RuntimeError)
    last_lines = staticmethod(lambda out, err: out)


def _added_and_removed() -> tuple[str, tuple]:
    from reconciler.plan import RuntimeSet
    before = CFG.format(one="", two="") + SITE3
    after = before.replace(SITE3, "    server site4 10.203.7.15:80 check inter 1s rise 2 fall 2\n")
    sets = tuple(RuntimeSet("proxyha", "/run/haproxy/admin.sock", d.backend, d.server, d.field,
                            80 if d.field == "add" else 10, "web4" if d.field == "add" else "")
                 for d in server_deltas(before, after) or ())
    assert [str(r) for r in sets] == ["subdomain1/site3 removed (drained first, at most 10s)",
                                               "subdomain1/site4 added (web4 port 80)"]
    return after, sets


def test_a_server_is_removed_once_its_sessions_end_and_added_as_its_line_says_healthy_by_its_checks():
    from reconciler.draining import made_live
    written, sets = _added_and_removed()
    run = _Socket("", "Server still has connections attached to it, cannot remove it.", "Server deleted.\n",
                  "New server registered.\n", "", "", "")
    made_live(run, sets, {}.__getitem__, written)  # type: ignore[arg-type]
    assert run.sent == ["set server subdomain1/site3 state maint", "del server subdomain1/site3",
                        "del server subdomain1/site3",
                        "add server subdomain1/site4 10.203.7.15:80 check inter 1s rise 2 fall 2",
                        "enable health subdomain1/site4", "set server subdomain1/site4 health down",
                        "set server subdomain1/site4 state ready"]
    assert run.execs == run.warnings == []


def test_an_haproxy_that_refuses_dynamic_servers_is_reloaded_instead_and_says_so():
    from reconciler.draining import made_live
    written, sets = _added_and_removed()
    refused = _Socket("", "Unknown command: 'del'\n")
    made_live(refused, sets, {}.__getitem__, written)  # type: ignore[arg-type]
    # Which worker answers is asked first (none here): the reload is done once another one answers alone.
    assert refused.sent == ["set server subdomain1/site3 state maint", "del server subdomain1/site3", "show info"]
    assert refused.execs == ["systemctl reload -- haproxy"]  # the file is written and checked: it has both
    assert refused.warnings == ["proxyha: HAProxy refused `del server subdomain1/site3`: Unknown command: 'del';"
                                " HAProxy was reloaded instead"]
    no_add = _Socket("", "Server deleted.", "This command is restricted to experimental mode only.\n")
    made_live(no_add, sets, {}.__getitem__, written)  # type: ignore[arg-type]
    assert no_add.execs == ["systemctl reload -- haproxy"] and "experimental mode" in no_add.warnings[0]
    # A server line that is not in the file written is an error, never a guess.
    with pytest.raises(RuntimeError, match="subdomain1/site4 is not in the haproxy.cfg just written"):
        made_live(_Socket("", "Server deleted."), sets, {}.__getitem__, CFG.format(one="", two=""))  # type: ignore[arg-type]


def _stat(status: str) -> str:
    return f"# pxname,svname,scur,status,check_status\nsubdomain1,site1,0,{status},L7OK\n"


def test_a_server_down_before_its_step_is_set_ready_after_it_but_not_waited_for():
    from reconciler.draining import drained
    from reconciler.plan import Drain
    step = Step(service("web1", "apache2"), Action.RESTART)
    d = Drain("proxyha", "/run/haproxy/admin.sock", "subdomain1", "site1", 80, True, 10, 60)
    for before, answers, waited in (("DOWN", (), False), ("UP", (_stat("DOWN 1/2"), _stat("UP")), True)):
        run = _Socket(_stat(before), "", _stat(before), "", "", *answers)
        with drained(run, step, (d,), {}.__getitem__):  # type: ignore[arg-type]
            run.sent.append("(the step)")
        assert run.sent[:6] == ["show stat", "set server subdomain1/site1 state drain", "show stat", "(the step)",
                                "set server subdomain1/site1 health down", "set server subdomain1/site1 state ready"]
        assert run.sent[6:] == (["show stat", "show stat"] if waited else []), before


def test_a_container_is_deleted_only_after_haproxy_lets_go_of_it():
    cfg = file("proxyha", "/etc/haproxy/haproxy.cfg")
    gone = Change(instance("web2"), (Action.DELETE,), (Reason(Code.NOT_IN_LAB, "not in lab.yaml"),), {"state": "running"},
                  None)
    plan = planned(_config_and_reload(CFG.format(one="", two=""), CFG.format(one=" weight 2", two="")) + [gone])
    delete = Step(instance("web2"), Action.DELETE)
    assert Step(cfg, Action.UPDATE) in plan.graph[delete]  # its servers removed (drained) first
    reloaded = planned(_config_and_reload(CFG.format(one="", two=""), CFG.format(one="", two="").replace("1s", "2s"))
                       + [gone])
    assert {Step(cfg, Action.UPDATE), Step(service("proxyha", "haproxy"), Action.RELOAD)} <= reloaded.graph[delete]
    # An order the graph has the other way is kept: never a cycle.
    graph = dict(plan.graph)
    graph[Step(cfg, Action.UPDATE)] = frozenset({delete})
    graph[delete] = frozenset()
    assert disruption.deleted_last(graph, GUIDE)[delete] == frozenset()
