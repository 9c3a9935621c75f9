"""Checkpoints and rollback on a real LXD: snapshots and the record kept in LXD, rollback of hand edits
inside a container, of a container added since and of a profile changed since, the next plan empty;
names validated; list and delete; the apply lock; a rollback killed midway converges when run again;
custom volumes snapshotted and restored (a file written after is gone, one written before is back), a
forward changed by hand put back; retention of automatic checkpoints from lab.yaml."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, sh
from test_lxd_core import applied, no_changes
from test_storage_lxd import store  # noqa: F401  (the fixture that deletes a test's pools after it)

from reconciler.lock import Lock
from reconciler.lxd import Lxd

LAB = """\
lab: @TAG@
lxd: {project: @PROJECT@}
networks:
  @TAG@b:
    config: {ipv4.address: 10.203.118.1/24, ipv4.nat: false, ipv6.address: none}
profiles:
  net:
    description: the lab's bridge
    config: {user.note: first, snapshots.expiry: 1d}
    devices:
      eth0: {type: nic, network: @TAG@b, name: eth0}
containers:
  c1:
    image: reconciler-tiny
    profiles: [default, net]
    files:
      /etc/kept.txt: {content: "from lab.yaml\\n"}
  c2:
    image: reconciler-tiny
    profiles: [default, net]
    state: stopped
"""
ADDED = "  c3:\n    image: reconciler-tiny\n    profiles: [default, net]\n"


def changed_lab() -> str:
    return LAB.replace("user.note: first", "user.note: second") + ADDED


def query(path: str) -> str:
    return sh("lxc", "query", path).stdout


def snapshots(lab, name: str) -> list[str]:
    found = json.loads(query(f"/1.0/instances/{name}/snapshots?project={lab.project}"))
    return sorted(s.split("?")[0].rsplit("/", 1)[-1] for s in found)


def profile_config(lab, name: str) -> dict:
    return json.loads(query(f"/1.0/profiles/{name}?project={lab.project}"))["config"]


def profile_names(lab) -> list[str]:
    """The project's profiles but reconciler's own (checkpoint records, the lock)."""
    found = json.loads(query(f"/1.0/profiles?project={lab.project}"))
    return sorted(n for p in found if not (n := p.split("?")[0].rsplit("/", 1)[-1]).startswith("reconciler-"))


def checkpoints(lab) -> list[dict]:
    result = lab.run("checkpoints", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


OLD_PROFILE = '  old:\n    config: {user.kept: "yes"}\n'  # dropped from lab.yaml after the checkpoint
LATER_PROFILE = "  later:\n    config: {user.added: later}\n"  # added after it, for c3


def test_rollback_undoes_hand_edits_a_new_container_and_profile_changes(lab):
    before = LAB.replace("profiles:\n", "profiles:\n" + OLD_PROFILE, 1)
    applied(lab, before)
    lab.lxc("exec", "c1", "--", "sh", "-c", "echo before > /root/before.txt")
    taken = lab.run("checkpoint", "first")
    assert taken.code == 0, taken.out + taken.err
    assert "Checkpoint first: 2 containers" in taken.out
    assert snapshots(lab, "c1") == snapshots(lab, "c2") == ["rc-first"]
    expiry = json.loads(query(f"/1.0/instances/c1/snapshots/rc-first?project={lab.project}"))["expires_at"]
    assert expiry.startswith("0001-01-01"), expiry  # not the day the profile's snapshots.expiry gives
    assert lab.instance("c2")["status"] == "Stopped"  # snapshotted where it stands
    [listed] = checkpoints(lab)
    assert listed["name"] == "first" and listed["complete"] and not listed["auto"]
    assert listed["objects"] == {"acl": [], "network": [f"{lab.tag}b"], "pool": [], "volume": [], "profile": ["net", "old"],
                                 "forward": []}  # every kind of the registry but the project's and the containers
    assert listed["volumes"] == {}

    lab.lxc("exec", "c1", "--", "sh", "-c", "echo after > /root/after.txt; rm /root/before.txt")
    applied(lab, changed_lab().replace("profiles:\n", "profiles:\n" + LATER_PROFILE, 1)
            .replace("  c3:\n    image: reconciler-tiny\n    profiles: [default, net]",
                     "  c3:\n    image: reconciler-tiny\n    profiles: [default, net, later]"))
    assert profile_names(lab) == ["default", "later", "net"]
    assert profile_config(lab, "net")["user.note"] == "second"
    assert lab.instance("c3")["status"] == "Running"

    result = lab.run("rollback", "first", "--yes")
    assert result.code == 0, result.out + result.err
    assert "delete   instance.c3: created after the checkpoint" in result.out
    assert "put      profile.net: config changed since the checkpoint" in result.out
    assert "create   profile.old: deleted since the checkpoint" in result.out
    assert "delete   profile.later: created after the checkpoint" in result.out
    assert "the working lab.yaml differs from the one this checkpoint recorded" in result.out
    assert '+    "user.note": "second"' in result.out

    assert lab.lxc("list", "-c", "n", "--format=csv").split() == ["c1", "c2"]
    assert profile_config(lab, "net")["user.note"] == "first"
    assert profile_names(lab) == ["default", "net", "old"] and profile_config(lab, "old")["user.kept"] == "yes"
    assert lab.lxc("exec", "c1", "--", "cat", "/root/before.txt") == "before\n"
    assert lab.lxc("exec", "c1", "--", "ls", "/root/after.txt", check=False) == ""
    assert lab.instance("c1")["status"] == "Running" and lab.instance("c2")["status"] == "Stopped"
    lab.write(before)
    assert no_changes(lab)


def test_names_are_validated_and_checkpoints_are_listed_and_deleted(lab):
    applied(lab, LAB)
    bad = lab.run("checkpoint", "Not_Valid")
    assert bad.code == 1 and "'Not_Valid' is not a checkpoint name" in bad.err, bad.err
    assert lab.run("rollback", "../x").code == 1
    assert lab.run("checkpoint", "one").code == 0
    assert lab.run("checkpoint", "two", "--json").code == 0
    again = lab.run("checkpoint", "one")
    assert again.code == 1 and "already has a checkpoint 'one'" in again.err
    text = lab.run("checkpoints")
    assert [line.split()[0] for line in text.out.splitlines()] == ["one", "two"], text.out
    assert snapshots(lab, "c1") == ["rc-one", "rc-two"]

    deleted = lab.run("checkpoint", "--delete", "one")
    assert deleted.code == 0, deleted.err
    assert [c["name"] for c in checkpoints(lab)] == ["two"]
    assert snapshots(lab, "c1") == snapshots(lab, "c2") == ["rc-two"]
    missing = lab.run("rollback", "one", "--yes")
    assert missing.code == 1 and "has no checkpoint 'one' (its checkpoints: two)" in missing.err
    assert no_changes(lab)  # the record is not the lab's: plan leaves it alone

    lab.lxc("delete", "--force", "c2")  # and its snapshot with it
    lab.lxc("exec", "c1", "--", "sh", "-c", "echo after > /root/after.txt")
    refused = lab.run("rollback", "two", "--yes")
    assert refused.code == 1 and "rollback refused, nothing was done:\n  container c2 was deleted since the" \
        " checkpoint, and its snapshot rc-two with it: it cannot be restored" in refused.err, refused.err
    assert lab.lxc("exec", "c1", "--", "cat", "/root/after.txt") == "after\n"


def test_a_users_own_snapshot_is_never_taken_over(lab):
    applied(lab, LAB)
    lab.lxc("snapshot", "c1", "rc-mine")
    refused = lab.run("checkpoint", "mine")
    assert refused.code == 1 and "c1 already has a snapshot 'rc-mine' that no checkpoint of this lab made" in refused.err
    assert snapshots(lab, "c1") == ["rc-mine"]


def test_a_checkpoint_waits_for_or_is_refused_by_the_apply_lock(lab):
    applied(lab, LAB)
    with Lock(Lxd(None, lab.project), lab.tag, 0, "apply"):
        held = lab.run("checkpoint", "busy")
        assert held.code == 1 and f"lab {lab.tag!r} is locked: apply by process" in held.err, held.err
    assert checkpoints(lab) == []
    assert lab.run("checkpoint", "busy").code == 0


@pytest.mark.parametrize("killed_at", ["put      profile.net", "restore  instance.c1", "delete   instance.c3"])
def test_a_rollback_killed_midway_converges_when_run_again(lab, killed_at):
    applied(lab, LAB)
    assert lab.run("checkpoint", "base").code == 0
    applied(lab, changed_lab())
    lab.lxc("exec", "c1", "--", "sh", "-c", "echo after > /root/after.txt")
    argv = [sys.executable, "-m", "reconciler.cli", "rollback", "base", "--yes", "-f", str(lab.file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as run:
        assert run.stdout is not None
        for line in run.stdout:  # killed once it has started that step (its line is said before it)
            if line.startswith(killed_at):
                run.send_signal(signal.SIGKILL)
                break
        run.wait(timeout=120)
    assert run.returncode == -signal.SIGKILL
    query(f"/1.0/profiles/reconciler-lock-{lab.tag}?project={lab.project}")  # a killed holder's lock
    again = lab.run("rollback", "base", "--yes")
    assert again.code == 0, again.out + again.err
    assert f"Took over the lock of lab {lab.tag!r}" in again.err
    assert lab.lxc("list", "-c", "n", "--format=csv").split() == ["c1", "c2"]
    assert lab.lxc("exec", "c1", "--", "ls", "/root/after.txt", check=False) == ""
    lab.write(LAB)
    assert no_changes(lab)



def test_a_checkpoint_killed_midway_is_incomplete_until_taken_again(lab):
    applied(lab, LAB)
    argv = [sys.executable, "-m", "reconciler.cli", "checkpoint", "cut", "-f", str(lab.file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as run:
        assert run.stdout is not None
        for line in run.stdout:  # the record is written before the first snapshot is said
            if line.startswith("snapshot "):
                run.send_signal(signal.SIGKILL)
                break
        run.wait(timeout=120)
    assert run.returncode == -signal.SIGKILL
    [cut] = checkpoints(lab)
    assert cut["name"] == "cut" and not cut["complete"]
    assert "INCOMPLETE" in lab.run("checkpoints").out
    refused = lab.run("rollback", "cut", "--yes")
    assert refused.code == 1 and "checkpoint 'cut' is incomplete" in refused.err, refused.err
    again = lab.run("checkpoint", "cut")
    assert again.code == 0, again.out + again.err
    assert [c["complete"] for c in checkpoints(lab)] == [True]
    assert snapshots(lab, "c1") == snapshots(lab, "c2") == ["rc-cut"]
    assert lab.run("rollback", "cut", "--yes").code == 0

def test_apply_takes_a_checkpoint_before_a_risky_plan_and_keeps_the_last_automatic_ones(lab):
    applied(lab, LAB)
    assert lab.run("checkpoint", "by-hand").code == 0
    added = lab.run("apply", "--yes", "--checkpoint", "auto", "-f", str(lab.write(LAB + ADDED)))  # adds: none
    assert added.code == 0 and "Taking checkpoint" not in added.err, added.err
    restart = LAB.replace("    files:", '    config: {security.privileged: "false"}\n    files:', 1)
    lab.write(restart)
    result = lab.run("apply", "--yes", "--checkpoint", "auto")
    assert result.code == 0, result.out + result.err
    auto = [c for c in checkpoints(lab) if c["auto"]]
    assert len(auto) == 1 and auto[0]["name"].startswith("auto-"), checkpoints(lab)
    why = "instance.c1 (update, restart), instance.c3 (delete)"
    assert f"Taking checkpoint {auto[0]['name']} before applying: {why}" in result.err
    assert sorted(auto[0]["containers"]) == ["c1", "c2", "c3"]  # the lab as it was before the apply

    for note in ("second", "third"):
        lab.write(restart.replace("user.note: first", f"user.note: {note}"))
        assert lab.run("apply", "--yes", "--checkpoint", "never").code == 0
        assert lab.run("apply", "--yes", "--checkpoint", "always", "--keep-checkpoints", "2", "-f", str(
            lab.write(restart.replace("user.note: first", f"user.note: {note}-again")))).code == 0
    listed = checkpoints(lab)
    assert [c["name"] for c in listed][0] == "by-hand" and len(listed) == 3, listed  # autos pruned to 2
    assert [c["auto"] for c in listed] == [False, True, True]

    back = lab.run("rollback", auto[0]["name"], "--yes")
    assert back.code == 1 and "has no checkpoint" in back.err  # the oldest automatic one was pruned
    last = listed[-1]["name"]
    back = lab.run("rollback", last, "--yes")
    assert back.code == 0, back.out + back.err
    assert "taken automatically before an apply: the lab is as it was before that apply" in back.out
    lab.write(restart.replace("user.note: first", "user.note: third"))  # the lab.yaml applied before it
    assert no_changes(lab)


def test_a_failed_apply_names_the_checkpoint_to_roll_back_to(lab):
    applied(lab, LAB)
    broken = LAB.replace('/etc/kept.txt: {content: "from lab.yaml\\n"}',
                         '/etc/kept.txt: {content: "changed\\n", check: [/bin/false, "{}"]}')
    assert broken != LAB
    lab.write(broken)
    result = lab.run("apply", "--yes", "--checkpoint", "auto")
    assert result.code == 1, result.out + result.err
    [auto] = checkpoints(lab)
    assert f"`reconcile rollback {auto['name']}` puts it back" in result.err.splitlines()[-1]


VOLUME_LAB = """\
lab: @TAG@
lxd: {project: @PROJECT@}
storage_pools:
  @TAG@p: {driver: dir}
volumes:
  data: {pool: @TAG@p}
  spare: {pool: @TAG@p, description: mounted by nobody}
networks:
  @TAG@v:
    config: {ipv4.address: 10.203.127.1/24, ipv4.nat: false, ipv6.address: none,
             ipv4.dhcp.ranges: 10.203.127.100-10.203.127.200}
containers:
  c1:
    image: reconciler-tiny
    devices:
      eth0: {type: nic, network: @TAG@v, name: eth0, ipv4.address: 10.203.127.10}
      data: {type: disk, pool: @TAG@p, source: data, path: /data}
forwards:
  "10.203.127.250":
    network: @TAG@v
    ports:
      - {protocol: tcp, listen_port: "8080", target_port: "80", target: c1}
"""
LATER_VOLUME = "  later: {pool: @TAG@p}\n"


def forward_ports(lab) -> list[dict]:
    return json.loads(query(f"/1.0/networks/{lab.tag}v/forwards/10.203.127.250?project={lab.project}"))["ports"]


@pytest.mark.usefixtures("store")
def test_rollback_restores_volumes_and_puts_back_a_forward_changed_by_hand(lab):
    applied(lab, VOLUME_LAB)
    lab.lxc("exec", "c1", "--", "sh", "-c", "echo before > /data/before.txt")
    taken = lab.run("checkpoint", "first")
    assert taken.code == 0, taken.out + taken.err
    assert "Checkpoint first: 1 container, 2 volumes snapshotted" in taken.out, taken.out
    volumes = [f"{lab.tag}p/data", f"{lab.tag}p/spare"]
    [listed] = checkpoints(lab)
    assert sorted(listed["volumes"]) == volumes and listed["size"] is None  # a dir pool reports no size
    assert listed["objects"]["pool"] == [f"{lab.tag}p"] and listed["objects"]["volume"] == volumes
    assert listed["objects"]["forward"] == [f"{lab.tag}v/10.203.127.250"]
    before_ports = forward_ports(lab)

    applied(lab, VOLUME_LAB.replace("volumes:\n", "volumes:\n" + LATER_VOLUME, 1))  # the snapshots are not volumes
    lab.lxc("exec", "c1", "--", "sh", "-c", "echo after > /data/after.txt; rm /data/before.txt")
    lab.lxc("network", "forward", "port", "remove", f"{lab.tag}v", "10.203.127.250", "tcp", "8080")
    lab.lxc("network", "forward", "port", "add", f"{lab.tag}v", "10.203.127.250", "tcp", "9090", "10.203.127.10", "81")
    lab.lxc("storage", "volume", "delete", f"{lab.tag}p", "spare")

    refused = lab.run("rollback", "first", "--yes")
    assert refused.code == 1 and f"volume.{lab.tag}p/later was created after the checkpoint: deleting it, the" \
        " data on it is lost (`reconcile rollback --force` deletes it)" in refused.err, refused.out + refused.err
    result = lab.run("rollback", "first", "--yes", "--force")
    assert result.code == 0, result.out + result.err
    out = result.out + result.err
    assert f"stop     instance.c1: it mounts volume.{lab.tag}p/data, which LXD restores only while no running" in out
    assert f"restore  volume.{lab.tag}p/data: to snapshot rc-first" in out
    assert f"create   volume.{lab.tag}p/spare: deleted since the checkpoint, and its snapshot with it: made" \
        " again empty" in out
    assert f"put      forward.{lab.tag}v/10.203.127.250: ports changed since the checkpoint" in out
    assert f"delete   volume.{lab.tag}p/later: created after the checkpoint" in out
    assert out.index("stop     instance.c1") < out.index("restore  volume.") < out.index("restore  instance.c1") \
        < out.index("put      forward.") < out.index("delete   volume.")

    assert lab.lxc("exec", "c1", "--", "cat", "/data/before.txt") == "before\n"
    assert lab.lxc("exec", "c1", "--", "ls", "/data/after.txt", check=False) == ""
    assert lab.instance("c1")["status"] == "Running"
    assert forward_ports(lab) == before_ports
    names = json.loads(lab.lxc("storage", "volume", "list", f"{lab.tag}p", "--format=json"))
    assert sorted(v["name"] for v in names if v["type"] == "custom" and "/" not in v["name"]) == ["data", "spare"]
    lab.write(VOLUME_LAB)
    assert no_changes(lab)


@pytest.mark.usefixtures("store")
def test_a_checkpoint_that_recorded_fewer_kinds_leaves_the_others_alone(lab):
    """A record taken before pools, volumes and forwards were recorded: rollback neither deletes the lab's
    pool, volumes and forward as made since, nor restores volumes it has no snapshot of."""
    from reconciler.checkpoint import Checkpoint, record_name
    applied(lab, VOLUME_LAB)
    assert lab.run("checkpoint", "older").code == 0
    place = Lxd(None, lab.project)
    raw, etag = place.get("profile", record_name(lab.tag, "older"))
    cp = Checkpoint.of(raw["config"])
    cp.objects = {k: v for k, v in cp.objects.items() if k in ("acl", "network", "profile")}
    cp.volumes = []
    place.put("profile", record_name(lab.tag, "older"), {**raw, "config": cp.config()}, etag)
    lab.lxc("exec", "c1", "--", "sh", "-c", "echo after > /data/after.txt")

    result = lab.run("rollback", "older", "--yes", "--force")
    assert result.code == 0, result.out + result.err
    assert "volume." not in result.out and "forward." not in result.out and "pool." not in result.out, result.out
    assert lab.lxc("exec", "c1", "--", "cat", "/data/after.txt") == "after\n"  # no snapshot of it: left as it is
    lab.write(VOLUME_LAB)
    assert no_changes(lab)


def test_retention_from_lab_yaml_prunes_the_oldest_automatic_checkpoint_and_keeps_a_manual_one(lab):
    kept = LAB.replace("lxd: {project: @PROJECT@}\n", "lxd: {project: @PROJECT@}\ncheckpoints: {keep: 1}\n")
    applied(lab, kept)
    assert lab.run("checkpoint", "by-hand").code == 0
    names = []
    for note in ("second", "third"):
        lab.write(kept.replace("user.note: first", f"user.note: {note}"))
        result = lab.run("apply", "--yes", "--checkpoint", "always")
        assert result.code == 0, result.out + result.err
        names.append(next(c["name"] for c in checkpoints(lab) if c["auto"] and c["name"] not in names))
    assert "pruning automatic checkpoint " + names[0] in result.err and "keeping the last 1" in result.err
    assert [(c["name"], c["auto"]) for c in checkpoints(lab)] == [("by-hand", False), (names[1], True)]
    assert snapshots(lab, "c1") == sorted(["rc-by-hand", "rc-" + names[1]])

    lab.write(kept.replace("user.note: first", "user.note: fourth"))  # the command line wins over lab.yaml
    assert lab.run("apply", "--yes", "--checkpoint", "always", "--keep-checkpoints", "2").code == 0
    assert [c["auto"] for c in checkpoints(lab)] == [False, True, True]


def test_lab_yaml_retention_is_validated(tmp_path):
    from reconciler.source import SourceError
    from reconciler.spec import load_lab
    path = tmp_path / "lab.yaml"
    for bad, said in (("0", "greater than or equal to 1"), ('"3"', "a valid integer"), ("101", "less than or equal")):
        path.write_text(f"lab: l1\ncheckpoints: {{keep: {bad}}}\n")
        with pytest.raises(SourceError, match=f"lab.yaml:2:.*checkpoints.keep: .*{said}"):
            load_lab(path)
    path.write_text("lab: l1\ncheckpoints: {keep: 5}\n")
    assert load_lab(path)[0].checkpoints.keep == 5
    path.write_text("lab: l1\n")
    assert load_lab(path)[0].checkpoints.keep == 3


# --- without LXD --------------------------------------------------------------------------------------

def test_checkpoint_names_are_checked_before_anything_else(tmp_path, capsys):
    from reconciler.checkpoint import CheckpointError, check_name
    from reconciler.cli import main
    assert check_name("pristine") == "pristine" and check_name("auto-0123456789ab") == "auto-0123456789ab"
    for bad in ("", "-x", "Upper", "a/b", "a.b", "x" * 41, "rc first"):
        with pytest.raises(CheckpointError, match=re.escape(repr(bad))):
            check_name(bad)
    assert main(["checkpoint", "a/b", "-f", str(tmp_path / "none.yaml")]) == 1
    assert "Error: 'a/b' is not a checkpoint name: 1 to 40 lowercase letters" in capsys.readouterr().err
    assert main(["checkpoint", "--delete", "-f", str(tmp_path / "none.yaml")]) == 1
    assert "--delete needs the NAME" in capsys.readouterr().err


def test_a_record_reads_back_as_written_and_is_bounded():
    from reconciler.checkpoint import MAX_DATA, Checkpoint, CheckpointError
    cp = Checkpoint("one", "lab1", "2026-01-01T00:00:00+00:00", "d" * 64, "f" * 16, True, True,
                    {"c1": "running"}, {"profile": {"p": {"config": {"user.x": "1"}}}}, {"lab": "lab1"})
    assert Checkpoint.of(cp.config()) == cp
    assert cp.holds() == "1 container, 1 profile"
    kinds = {"volume": {"p/v": {}}, "forward": {"n/10.0.0.1": {}}, "network": {"n": {}}, "pool": {"p": {}}, "acl": {}}
    held = Checkpoint("two", "lab1", "", "", "", False, True, {"c1": "running"}, kinds, None, ["p/v"])
    assert Checkpoint.of(held.config()) == held
    assert held.holds() == "1 container, 1 volume snapshotted, 1 network, 1 pool, 1 volume, 1 forward"  # plan order
    digests = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(MAX_DATA // 32))  # incompressible
    with pytest.raises(CheckpointError, match="over the 262144 kept in one LXD profile key"):
        Checkpoint("big", "lab1", "", "", "", False, True, {}, {}, digests).config()


def test_lab_yaml_cannot_declare_a_checkpoints_profile(tmp_path):
    from reconciler.source import SourceError
    from reconciler.spec import load_lab
    path = tmp_path / "lab.yaml"
    path.write_text("lab: l1\nprofiles:\n  reconciler-checkpoint-l1.x: {}\n")
    with pytest.raises(SourceError, match=re.escape("profile names starting with 'reconciler-checkpoint-' are"
                                                    " reconciler's own (a lab's checkpoint)")):
        load_lab(path)


def test_auto_takes_a_checkpoint_only_before_what_cannot_simply_be_undone():
    from types import SimpleNamespace

    from reconciler.address import Address
    from reconciler.checkpoint import risky
    from reconciler.plan import Action, Change, Code, Reason

    def change(address: str, *actions: Action, before: dict | None = None) -> Change:
        why = (Reason(Code.DESTROY, "test"),) * len(actions)
        return Change(Address.parse(address), actions, why, before, {"x": 1})

    adds = [change("instance.c1", Action.CREATE), change("file.c1:/etc/a", Action.CREATE),
            change("profile.p", Action.UPDATE, before={"x": 0})]
    assert risky(SimpleNamespace(changes=adds)) == []  # type: ignore[arg-type]
    for risk, shown in ((change("instance.c2", Action.UPDATE, Action.RESTART, before={}), "instance.c2 (update, restart)"),
                        (change("instance.c2", Action.REPLACE, before={}), "instance.c2 (replace)"),
                        (change("network.n", Action.DELETE, before={}), "network.n (delete)"),
                        (change("file.c1:/etc/a", Action.UPDATE, before={"x": 0}), "file.c1:/etc/a (update)")):
        assert risky(SimpleNamespace(changes=[*adds, risk])) == [shown]  # type: ignore[arg-type]
