"""Changes without downtime, proven under load on the guide's lab (real LXD, real Debian containers,
real HTTP through the proxy device): a steady stream of requests through HAProxy while apply restarts
both web servers, then while it replaces one (its new address made live through the admin socket, no
reload), and not one request fails.  The drains and the one-at-a-time order are planned in
tests/test_disruption.py (no LXD); here they are carried out.  Last, a server changed by hand through
HAProxy's admin socket is drift, put back without a reload (the pure parts: tests/test_runtime_drift.py)."""

from __future__ import annotations

import threading
import time

import pytest
from test_guide_lab import Guide, guide_lab, until

from reconciler.check import ask
from reconciler.haproxy.runtime import SHOW_INFO, ServerState, client_argv, parse_servers_state, parse_stat, worker_pid

MAX_REQUESTS = 6000  # bounded: at 20 a second, five minutes
INTERVAL = 0.05  # seconds between two requests (an Event's wait: the apply's end cuts it short)
HOSTS = ("site1.testdomain.com", "site2.testdomain.com")
NOFILE = """\
  web1:
    config: {limits.kernel.nofile: "16384"}
  web2:
    config: {limits.kernel.nofile: "16384"}
"""


class NoDowntimeGuide(Guide):
    lan_host, http_port = "10.203.44.1", 18520  # its own LAN and ports: it may run beside test_guide_lab


@pytest.fixture(scope="module")
def steady(lxd_ready, tmp_path_factory):
    with guide_lab(tmp_path_factory, "nodowntime", NoDowntimeGuide) as lab:
        lab.apply()
        assert until(lab.serving, 60), [(a.status, a.marker) for a in lab.answers("site1.testdomain.com")]
        yield lab


def under_load(lab: Guide, *argv: str):
    """Run `reconcile ARGV` while requests flow through the proxy device, alternating both sites:
    (its result, how many requests were sent, the failed ones, seconds)."""
    results: list = []
    done = threading.Event()

    def applying() -> None:
        try:
            results.append(lab.run(*argv))
        finally:
            done.set()

    applier = threading.Thread(target=applying)
    started = time.monotonic()
    applier.start()
    sent, failed = 0, []
    while not done.is_set() and sent < MAX_REQUESTS:
        host = HOSTS[sent % 2]
        answer = ask("127.0.0.1", lab.http_port, host)
        sent += 1
        if answer.status != 200:
            failed.append((round(time.monotonic() - started, 1), host, answer.status, answer.server, answer.marker))
        done.wait(INTERVAL)
    applier.join(timeout=600)
    assert results, "apply did not end"
    return results[0], sent, failed, time.monotonic() - started


WEIGHT = """\
haproxy:
  proxyha:
    backends:
      subdomain1:
        servers:
          - {name: site1, container: web1, port: 80, weight: 3}
          - {name: site2, container: web2, port: 80, maxconn: 50}
"""


def haproxy_says(lab: Guide, command: str) -> str:
    return lab.lxc("exec", "proxyha", "--", *client_argv("/run/haproxy/admin.sock", command))


def worker(lab: Guide) -> int:
    """HAProxy's worker process: a reload starts another."""
    info = haproxy_says(lab, SHOW_INFO)
    pid = worker_pid(info)
    assert pid is not None, info
    return pid


def diagnosis(lab: Guide) -> str:
    """What HAProxy says of its servers, and where haproxy.cfg points them, for a failure's message."""
    stat = lab.lxc("exec", "proxyha", "--", "sh", "-c", "echo 'show servers state' | perl -MIO::Socket::UNIX -e"
                   " '$s=IO::Socket::UNIX->new(Peer=>\"/run/haproxy/admin.sock\");print $s <STDIN>;print <$s>'",
                   check=False)
    cfg = lab.lxc("exec", "proxyha", "--", "grep", "server ", "/etc/haproxy/haproxy.cfg", check=False)
    return f"{stat}\n{cfg}\nweb2 at {lab.lan_address('web2')}\n"


def booted(lab: Guide, container: str) -> float:
    """When the container's init started, in seconds since the host booted (containers share its clock)."""
    stat = lab.lxc("exec", container, "--", "cat", "/proc/1/stat")
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime; the name in () may hold spaces
    hz = int(lab.lxc("exec", container, "--", "getconf", "CLK_TCK"))
    return ticks / hz


def test_both_web_servers_restart_one_at_a_time_under_load_without_one_request_failing(steady):
    steady.set_override(NOFILE)
    plan = steady.run("plan")
    assert "drains subdomain1/site1, subdomain2/site1 first" in plan.out, plan.out
    assert "drains subdomain1/site2, subdomain2/site2 first" in plan.out, plan.out
    assert 'will be restarted (config["limits.kernel.nofile"] (the container) take effect only after a restart)' \
        " [cost: restart]" in plan.out, plan.out
    assert "Warning:" not in plan.out  # both backends keep a server
    result, sent, failed, seconds = under_load(steady, "apply", "--yes", "--parallelism", "4")
    assert result.code == 0, result.out[-3000:] + result.err
    for name in ("web1", "web2"):
        nofile = steady.lxc("exec", name, "--", "sh", "-c", "grep 'open files' /proc/1/limits")
        assert "16384" in nofile, nofile  # the restart did happen
    # One at a time, although four steps could run at once: the second container's init started only
    # after the first one's restart was done, its health check passed again included (rise 2 at 1 s).
    apart = abs(booted(steady, "web2") - booted(steady, "web1"))
    print(f"\nrestart of web1 and web2 under load: {sent} requests in {seconds:.1f}s, {len(failed)} failed;"
          f" their inits started {apart:.1f}s apart")
    assert apart >= 2.0, f"web1 and web2 started {apart:.2f}s apart: they restarted together"
    assert sent > 40 and failed == [], f"{len(failed)} of {sent} failed: {failed[:5]}"
    both = lambda: {a.server for a in steady.answers("site1.testdomain.com")} == {"site1", "site2"}
    assert until(both, 20)  # both back in rotation: ready, not left drained
    assert steady.run("plan", "--detailed-exitcode").code == 0


def addresses_in_haproxy(lab: Guide) -> dict[tuple[str, str], str]:
    """(backend, server) -> the address HAProxy's running worker sends it requests at (`show servers state`)."""
    lines = haproxy_says(lab, "show servers state").splitlines()
    header = lines[1][2:].split()
    rows = [dict(zip(header, line.split())) for line in lines[2:] if line.strip()]
    return {(r["be_name"], r["srv_name"]): r["srv_addr"] for r in rows}


def test_a_web_server_replaced_under_load_fails_no_request(steady):
    """Its new address goes live through HAProxy's runtime API: haproxy.cfg is written, HAProxy not reloaded."""
    fingerprint = steady.instance("web2")["config"]["volatile.base_image"][:12]
    steady.set_override(NOFILE + f"    image: {fingerprint}\n")  # the same image, written otherwise: a replace
    plan = steady.run("plan")
    assert "-/+ instance.web2 will be replaced" in plan.out and "[cost: recreate]" in plan.out, plan.out
    assert "drains subdomain1/site2, subdomain2/site2 first" in plan.out, plan.out
    assert "through HAProxy's runtime API, no reload: subdomain1/site2 addr web2's new address port 80," \
        " subdomain2/site2 addr web2's new address port 80" in plan.out, plan.out
    assert "service.proxyha:haproxy will be reloaded" not in plan.out, plan.out
    old_address, before = steady.lan_address("web2"), worker(steady)
    result, sent, failed, seconds = under_load(steady, "apply", "--yes", "--force")
    assert result.code == 0, result.out[-3000:] + result.err
    new_address = steady.lan_address("web2")
    print(f"\nreplace of web2 under load: {sent} requests in {seconds:.1f}s, {len(failed)} failed,"
          f" web2 {old_address} -> {new_address}, worker {before} -> {worker(steady)}")
    assert sent > 40 and failed == [], f"{len(failed)} of {sent} failed: {failed[:5]}"
    assert worker(steady) == before  # no reload
    live = addresses_in_haproxy(steady)
    assert live[("subdomain1", "site2")] == live[("subdomain2", "site2")] == new_address, (live, new_address)
    cfg = steady.lxc("exec", "proxyha", "--", "cat", "/etc/haproxy/haproxy.cfg")
    assert f"server site2 {new_address}:80 " in cfg, cfg  # a restart finds the same
    site2 = lambda: "site2" in {a.server for a in steady.answers("site1.testdomain.com")}
    assert until(site2, 30), diagnosis(steady) + result.out[-3000:]
    assert until(lambda: steady.run("check").code == 0, 30), steady.run("check").out
    assert steady.run("plan", "--detailed-exitcode").code == 0


def test_a_weight_and_a_maxconn_go_live_under_load_without_a_reload(steady):
    image = steady.instance("web2")["config"].get("user.reconciler.image", "reconciler-debian")
    steady.set_override(NOFILE + f"    image: {image}\n" + WEIGHT)  # what the tests above left, and weights
    plan = steady.run("plan")
    assert "through HAProxy's runtime API, no reload: subdomain1/site1 weight 3, subdomain1/site2 maxconn 50" \
        in plan.out, plan.out
    assert "[cost: runtime]" in plan.out and "will be reloaded" not in plan.out, plan.out
    before = worker(steady)
    result, sent, failed, seconds = under_load(steady, "apply", "--yes")
    assert result.code == 0, result.out[-3000:] + result.err
    print(f"\nweight and maxconn under load: {sent} requests in {seconds:.1f}s, {len(failed)} failed,"
          f" worker {before} -> {worker(steady)}")
    assert sent > 5 and failed == [], f"{len(failed)} of {sent} failed: {failed[:5]}"
    assert worker(steady) == before  # no reload
    stats = haproxy_says(steady, "show stat")
    rows = {(r.split(",")[0], r.split(",")[1]): r for r in stats.splitlines() if r and not r.startswith("#")}
    header = stats.splitlines()[0][2:].split(",")
    site1 = dict(zip(header, rows[("subdomain1", "site1")].split(",")))
    site2 = dict(zip(header, rows[("subdomain1", "site2")].split(",")))
    assert (site1["weight"], site2["slim"]) == ("3", "50"), (site1["weight"], site2["slim"])
    assert parse_stat(stats)[("subdomain1", "site1")].up
    assert "weight 3" in steady.lxc("exec", "proxyha", "--", "cat", "/etc/haproxy/haproxy.cfg")  # a restart finds it
    assert steady.run("plan", "--detailed-exitcode").code == 0


ADDED = WEIGHT + "          - {name: site3, container: web2, port: 80}\n"


def test_a_server_added_then_removed_under_load_fails_no_request_and_never_reloads(steady):
    """`add server` with haproxy.cfg's own line, in by its health checks; `del server` once drained."""
    image = steady.instance("web2")["config"].get("user.reconciler.image", "reconciler-debian")
    kept = NOFILE + f"    image: {image}\n"  # what the tests above left
    steady.set_override(kept + ADDED)
    plan = steady.run("plan")
    assert "through HAProxy's runtime API, no reload: subdomain1/site3 added (web2 port 80)" in plan.out, plan.out
    assert "will be reloaded" not in plan.out, plan.out
    before = worker(steady)
    result, sent, failed, seconds = under_load(steady, "apply", "--yes")
    assert result.code == 0, result.out[-3000:] + result.err
    assert ("subdomain1", "site3") in addresses_in_haproxy(steady), diagnosis(steady)
    site3 = lambda: "site3" in {a.server for a in steady.answers("site1.testdomain.com")}
    assert until(site3, 30), diagnosis(steady)  # in rotation once its checks pass
    added = f"a server added under load: {sent} requests in {seconds:.1f}s, {len(failed)} failed"
    assert sent > 5 and failed == [], f"{len(failed)} of {sent} failed: {failed[:5]}"
    assert steady.run("plan", "--detailed-exitcode").code == 0

    steady.set_override(kept + WEIGHT)
    plan = steady.run("plan")
    assert "subdomain1/site3 removed (drained first, at most 10s)" in plan.out, plan.out
    result, sent, failed, seconds = under_load(steady, "apply", "--yes")
    assert result.code == 0, result.out[-3000:] + result.err
    print(f"\n{added}; removed: {sent} requests in {seconds:.1f}s, {len(failed)} failed;"
          f" worker {before} -> {worker(steady)}")
    assert sent > 5 and failed == [], f"{len(failed)} of {sent} failed: {failed[:5]}"
    assert worker(steady) == before  # neither reloaded HAProxy
    assert ("subdomain1", "site3") not in addresses_in_haproxy(steady)
    assert "site3" not in steady.lxc("exec", "proxyha", "--", "cat", "/etc/haproxy/haproxy.cfg")
    assert steady.run("plan", "--detailed-exitcode").code == 0


def test_a_server_deleted_by_hand_through_the_socket_is_drift_a_reload_puts_back(steady):
    assert haproxy_says(steady, "set server subdomain2/site2 state maint").strip() == ""
    assert "Server deleted." in haproxy_says(steady, "del server subdomain2/site2")
    before = worker(steady)
    plan = steady.run("plan")
    assert "~ server.proxyha:subdomain2/site2 will be updated in place (HAProxy's runtime state differs:" \
        " in_haproxy) [changed outside lab.yaml]" in plan.out, plan.out
    result = steady.run("apply", "--yes")
    assert result.code == 0, result.out[-3000:] + result.err
    assert ("subdomain2", "site2") in addresses_in_haproxy(steady) and worker(steady) != before  # reloaded
    assert steady.run("plan", "--detailed-exitcode").code == 0


def test_a_reload_no_new_worker_takes_over_fails_its_step_naming_the_old_worker_that_still_answers(steady):
    """`systemctl reload` returns once HAProxy's master is signalled, and until a new worker takes over the
    old one answers the admin socket with the runtime state it had: apply's step is done only once a new
    worker answers alone.  A master held stopped never starts one, so the step fails and says so."""
    assert haproxy_says(steady, "set server subdomain2/site2 state maint").strip() == ""
    assert "Server deleted." in haproxy_says(steady, "del server subdomain2/site2")  # drift a reload puts right
    before = worker(steady)
    master = steady.lxc("exec", "proxyha", "--", "systemctl", "show", "--property=MainPID", "--value", "haproxy").strip()
    steady.lxc("exec", "proxyha", "--", "kill", "-STOP", master)
    try:
        result = steady.run("apply", "--yes")
        assert worker(steady) == before  # the reload is waiting in the stopped master
    finally:
        steady.lxc("exec", "proxyha", "--", "kill", "-CONT", master)
    assert result.code == 1 and f"admin socket /run/haproxy/admin.sock is still answered by its old worker (pid" \
        f" {before}) 15s after the reload: no new worker took over" in result.out, result.out[-3000:] + result.err
    assert until(lambda: worker(steady) != before, 30)  # the master goes on: its reload starts a new worker
    assert until(lambda: ("subdomain2", "site2") in addresses_in_haproxy(steady), 30), diagnosis(steady)
    assert steady.run("plan", "--detailed-exitcode").code == 0


def test_a_server_disabled_and_one_reweighted_by_hand_are_drift_put_back_without_a_reload(steady):
    image = steady.instance("web2")["config"].get("user.reconciler.image", "reconciler-debian")
    steady.set_override(NOFILE + f"    image: {image}\n" + WEIGHT)  # what the tests above left
    steady.apply()  # nothing to do after them; run alone, their settings
    assert steady.run("plan", "--detailed-exitcode").code == 0
    assert haproxy_says(steady, "set server subdomain2/site1 state maint").strip() == ""
    assert haproxy_says(steady, "set weight subdomain1/site2 7").strip() == ""
    before = worker(steady)
    plan = steady.run("plan")
    for expected in ("~ server.proxyha:subdomain2/site1 will be updated in place (HAProxy's runtime state differs:"
                     " state) [changed outside lab.yaml] [cost: runtime]", '      state: "maint" -> "ready"',
                     "~ server.proxyha:subdomain1/site2 will be updated in place (HAProxy's runtime state differs:"
                     " weight) [changed outside lab.yaml] [cost: runtime]", "      weight: 7 -> 1",
                     "Plan: 2 to update, and "):
        assert expected in plan.out, f"{expected!r} not in:\n{plan.out}"
    assert "will be reloaded" not in plan.out, plan.out
    result = steady.run("apply", "--yes")
    assert result.code == 0, result.out[-3000:] + result.err
    state = parse_servers_state(haproxy_says(steady, "show servers state"))
    assert state[("subdomain2", "site1")] == ServerState("ready", 1), state
    assert state[("subdomain1", "site2")] == ServerState("ready", 1), state
    assert worker(steady) == before  # no reload
    assert steady.run("plan", "--detailed-exitcode").code == 0


def test_with_haproxy_down_plan_says_it_could_not_read_the_runtime_state_and_goes_on(steady):
    steady.lxc("exec", "proxyha", "--", "systemctl", "stop", "haproxy")
    plan = steady.run("plan")
    assert "Note: proxyha: HAProxy's runtime state could not be read (" in plan.out, plan.out
    assert "~ service.proxyha:haproxy will be updated" in plan.out and "running: false -> true" in plan.out, plan.out
    assert "server.proxyha" not in plan.out, plan.out
    steady.apply()
    assert until(steady.serving, 30)
    assert steady.run("plan", "--detailed-exitcode").code == 0


TUNED = """\
  web1:
    config: {limits.kernel.nofile: "16384"}
    profiles: [default, macvlan, webtune]
  web2:
    config: {limits.kernel.nofile: "16384"}
    profiles: [default, macvlan, webtune]
"""


def with_webtune(lab: Guide, nproc: int) -> None:
    """lab.override.yaml with a profile `webtune` (a restart-only key) beside the override's own profiles."""
    path = lab.dir / "lab.override.yaml"
    text = path.read_text()
    path.write_text(text.replace("profiles:\n", f'profiles:\n  webtune:\n    config: {{limits.kernel.nproc: "{nproc}"}}\n', 1))


def test_a_restart_only_key_of_a_profile_both_web_servers_share_restarts_them_one_at_a_time_under_load(steady):
    image = steady.instance("web2")["config"].get("user.reconciler.image", "reconciler-debian")
    for nproc in (8192, 16384):  # both join the profile (a restart each), then the profile alone changes
        steady.set_override(TUNED + f"    image: {image}\n" + WEIGHT)
        with_webtune(steady, nproc)
        plan = steady.run("plan")
        assert 'config["limits.kernel.nproc"] (profile webtune) take effect only after a restart' in plan.out, plan.out
        assert "drains subdomain1/site1, subdomain2/site1 first" in plan.out, plan.out
        assert "drains subdomain1/site2, subdomain2/site2 first" in plan.out and "Warning:" not in plan.out, plan.out
        result, sent, failed, seconds = under_load(steady, "apply", "--yes", "--parallelism", "4")
        assert result.code == 0, result.out[-3000:] + result.err
        for name in ("web1", "web2"):
            limits = steady.lxc("exec", name, "--", "sh", "-c", "grep 'processes' /proc/1/limits")
            assert str(nproc) in limits, limits  # the restart did happen
        apart = abs(booted(steady, "web2") - booted(steady, "web1"))
        print(f"\nprofile webtune nproc {nproc} under load: {sent} requests in {seconds:.1f}s, {len(failed)} failed;"
              f" their inits started {apart:.1f}s apart")
        assert apart >= 2.0, f"web1 and web2 started {apart:.2f}s apart: they restarted together"
        assert sent > 40 and failed == [], f"{len(failed)} of {sent} failed: {failed[:5]}"
        assert steady.run("plan", "--detailed-exitcode").code == 0


ALONE = """\
      subdomain2:
        servers:
          - {name: site2, container: web2, port: 80}
"""


def test_a_restart_of_a_backends_only_server_is_warned_and_its_failures_counted_the_other_backend_keeps_serving(steady):
    image = steady.instance("web2")["config"].get("user.reconciler.image", "reconciler-debian")
    kept = TUNED + f"    image: {image}\n" + WEIGHT
    steady.set_override(kept + ALONE)  # subdomain2 left with web2 alone: site1 removed through the runtime API
    with_webtune(steady, 16384)
    steady.apply()
    restarted_web2 = kept.replace('"16384"}\n    profiles: [default, macvlan, webtune]\n    image',
                                  '"8192"}\n    profiles: [default, macvlan, webtune]\n    image')
    steady.set_override(restarted_web2 + ALONE)
    with_webtune(steady, 16384)
    plan = steady.run("plan")
    assert "Warning: subdomain2 has no other server: requests fail while web2 restarts" in plan.out, plan.out
    result, sent, failed, seconds = under_load(steady, "apply", "--yes")
    assert result.code == 0, result.out[-3000:] + result.err
    hosts = sorted({host for _, host, *_ in failed})
    print(f"\nweb2, subdomain2's only server, restarted under load (warned): {sent} requests in {seconds:.1f}s,"
          f" {len(failed)} failed, all for {hosts}")
    assert hosts in ([], ["site2.testdomain.com"]), failed[:5]  # subdomain1 (site1's host) kept web1: none there
    steady.set_override(restarted_web2)
    with_webtune(steady, 16384)
    steady.apply()  # site1 back in subdomain2
    assert until(lambda: steady.run("check").code == 0, 30), steady.run("check").out
    assert steady.run("plan", "--detailed-exitcode").code == 0
