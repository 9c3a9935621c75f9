"""From lab.yaml and LXD to a Plan: read, build both states, check conflicts, diff, order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from .desired import Provisioning, desired_state, provisioning_of, root_disk_problems
from .diff import diff_states
from .live import Live, forgive_network_defaults, live_from_raw, provisioned, users_of
from .lxd import Lxd, LxdError
from .plan import Change, Plan, PlanError, make_plan
from .provision import Facts, facts_argv, manifest_path, parse_facts
from .spec import Lab
from .state import LabState, address, split_address

PARALLEL_READS = 8


@dataclass
class Context:
    """What a plan was made from; apply needs it again."""

    lab: Lab
    base_dir: Path
    live: Live
    desired: LabState
    facts: dict[str, Facts]


def build_plan(lab: Lab, base_dir: Path, lxd: Lxd, destroy: bool = False) -> tuple[Plan, Context]:
    live = live_from_raw(lxd.read(with_addresses=needs_addresses(lab)), lab.lab)
    wanted = Lab.model_construct(**{**dict(lab), "networks": {}, "profiles": {}, "containers": {},
                                    "haproxy": {}}) if destroy else lab
    _check_existing(wanted, live)
    facts = {} if destroy else read_facts(lxd, lab, live)
    desired = desired_state(wanted, base_dir, live.addresses())
    _check_conflicts(desired, live)
    owned = dict(live.owned)
    forgive_network_defaults(desired, owned)
    for cname, found in facts.items():
        owned.update(provisioned(cname, found, provisioning_of(lab, cname), manifest_path(lab.lab)))
    changes = manifest_last(explain_unseen(diff_states(desired, owned), set(facts)), manifest_path(lab.lab))
    plan = make_plan(lab.lab, changes, users_of(live.owned))
    return plan, Context(lab, base_dir, live, desired, facts)


def explain_unseen(changes: list[Change], seen: set[str]) -> list[Change]:
    """Inside a container that is not running (or not there yet) nothing can be read: say so."""
    out = []
    for change in changes:
        kind, name = split_address(change.address)
        container = name.split(":", 1)[0]
        if kind in ("package", "file", "service") and container not in seen:
            change = replace(change, reason=f"{container} is not running yet: set up once it runs")
        out.append(change)
    return out


def manifest_last(changes: list[Change], manifest: str) -> list[Change]:
    """A container's manifest is rewritten after its other files' changes, deletes included (the
    desired state alone cannot know those): if one fails, the next run still knows about it."""
    out = []
    for change in changes:
        if change.address.endswith(f":{manifest}"):
            prefix = change.address[: -len(manifest)]
            others = tuple(c.address for c in changes if c.address.startswith(prefix) and c is not change)
            change = replace(change, depends_on=change.depends_on + others)
        out.append(change)
    return out


def needs_addresses(lab: Lab) -> bool:
    """Addresses cost a deeper read; only labs whose files need them pay for it."""
    return bool(lab.haproxy) or any(f.template for c in lab.containers.values() for f in c.files.values())


def _check_existing(lab: Lab, live: Live) -> None:
    problems = [f"existing.profiles: profile {p!r} does not exist in LXD project" for p in lab.existing.profiles
                if address("profile", p) not in live.foreign and address("profile", p) not in live.owned
                and _used_profile(lab, p)]
    problems += root_disk_problems(lab, live.profile_devices) if not problems else []
    if problems:
        raise PlanError("\n".join(problems))


def _used_profile(lab: Lab, name: str) -> bool:
    return any(name in c.profiles for c in lab.containers.values())


def _check_conflicts(desired: LabState, live: Live) -> None:
    """Refuse to take over an object the lab does not own."""
    problems = []
    for addr in sorted(desired.keys() & live.foreign.keys()):
        owner = live.foreign[addr]
        whose = f"lab {owner!r}" if owner else "no lab (it has no user.reconciler.lab tag)"
        problems.append(f"{addr} already exists in LXD and belongs to {whose}; reconciler will not"
                        " take it over: rename it in lab.yaml, or delete it by hand")
    if problems:
        raise PlanError("\n".join(problems))


def read_facts(lxd: Lxd, lab: Lab, live: Live) -> dict[str, Facts]:
    """One exec per running owned container with something to provision, in parallel."""
    jobs = {}
    for cname in lab.containers:
        want = provisioning_of(lab, cname)
        res = live.owned.get(address("instance", cname))
        if _has_any(want) and res is not None and res.body["state"] == "running":
            jobs[cname] = want
    if not jobs:
        return {}
    with ThreadPoolExecutor(PARALLEL_READS) as pool:
        results = dict(zip(jobs, pool.map(lambda c: container_facts(lxd, c, jobs[c], manifest_path(lab.lab)), jobs)))
    return results


def _has_any(want: Provisioning) -> bool:
    return bool(want.packages or want.files or want.services)


def container_facts(lxd: Lxd, cname: str, want: Provisioning, manifest: str | None = None) -> Facts:
    argv = facts_argv(sorted(want.files), list(want.packages), sorted(want.services),
                      manifest if manifest in want.files else None,
                      {name: spec.listens for name, spec in want.services.items() if spec.listens})
    code, out, err = lxd.execute(cname, argv)
    if code != 0:
        raise LxdError(f"instance {cname}: reading its files, packages and services failed: {err.strip()}")
    return parse_facts(out)
