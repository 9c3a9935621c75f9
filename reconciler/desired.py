"""lab.yaml (a Lab) -> the desired LabState.  Pure, but for reading `source:` files and rendering
templates (in a bounded child process: templates.py).

HAProxy sections become ordinary packages, files and services of their container here, so
the diff, plan and apply treat them like anything a user wrote by hand.  A file whose content
needs live addresses is planned as "known after apply", with the containers it waits for; apply
renders it from the lab with the addresses it then has (`render_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .address import file, instance, service
from .haproxy.runtime import SERVICE as HAPROXY
from .inside import Provisioning, provisioning_of, render_file, waits_for
from .kinds import OBJECT_KINDS, with_what_devices_name
from .kinds import file as file_kind
from .kinds import package as package_kind
from .kinds import project as project_kind
from .kinds import service as service_kind
from .kinds.contract import Wanted
from .plan import PlanError
from .source import field_path
from .spec import Lab, has_root_disk
from .state import LabState, Meta, Resource, add

UNKNOWN = file_kind.UNKNOWN
Rendered = Mapping[tuple[str, str], bytes]  # (container, path) -> a template's bytes, rendered ahead


def desired_state(lab: Lab, base_dir: Path, addresses: Mapping[str, str],
                  live_profiles: Mapping[str, Mapping[str, Any]],
                  nics: Mapping[str, Mapping[str, str]] | None = None) -> LabState:
    """The whole desired state.  `addresses`: container -> IPv4 where live state knows it;
    `live_profiles`: LXD's profiles, for what existing ones bring to a container; `nics`: container ->
    {NIC device: IPv4}, likewise (a forward's target)."""
    state: LabState = {}
    wanted = Wanted(live_profiles, nics or {})
    for kind in OBJECT_KINDS:
        for res in kind.desired(lab, wanted):
            add(state, with_what_devices_name(res, lab))
    rendered = render_templates(lab, addresses)
    for name, container in lab.containers.items():
        if container.state == "running":
            for res in inside(lab, name, provisioning_of(lab, name), base_dir, addresses, rendered):
                add(state, res)
    return project_kind.within(state, lab.lxd.project) if lab.project else state


# --- Inside a container ---------------------------------------------------------------------

def inside(lab: Lab, cname: str, want: Provisioning, base_dir: Path, addresses: Mapping[str, str],
           rendered: Rendered | None = None) -> list[Resource]:
    """Packages, then files, then services: each waits for what comes before it in the container."""
    packages = package_kind.desired(cname, want.packages)
    after_packages = (instance(cname),) + tuple(r.address for r in packages)
    files = _files(lab, cname, want, base_dir, addresses, after_packages, rendered or {})
    services = _services(cname, want, after_packages + tuple(r.address for r in files))
    return packages + files + services


def _files(lab: Lab, cname: str, want: Provisioning, base_dir: Path, addresses: Mapping[str, str],
           deps: tuple, rendered: Rendered) -> list[Resource]:
    plain = tuple(file(cname, p) for p, spec in sorted(want.files.items()) if not spec.check)
    checked = tuple(file(cname, p) for p, spec in sorted(want.files.items()) if spec.check and p not in want.generated)
    out = []
    for path, spec in sorted(want.files.items()):
        extra = _parents(cname, path, want)
        if spec.check:
            extra += plain  # checked against the others (haproxy.cfg names the error pages)
        if path in want.generated:
            extra += checked  # and after the user's checked files (one may make the TLS certificate it names)
        waits = sorted(waits_for(lab, cname, path, want))
        extra += tuple(instance(c) for c in waits if c != cname)
        data = rendered.get((cname, path))
        if data is None and spec.type == "file" and not (set(waits) - set(addresses)):
            data = render_file(lab, base_dir, cname, path, addresses)
        meta = Meta(waits_for=tuple(waits), secret=spec.secret, payload={"check": spec.check})
        out.append(Resource(file(cname, path), file_kind.body(spec, data), deps + extra, meta=meta))
    return out


def _services(cname: str, want: Provisioning, deps: tuple) -> list[Resource]:
    # Services to stop go first: one may hold what another needs (a port, a lock).
    stopped = tuple(service(cname, s) for s, spec in sorted(want.services.items()) if not spec.running)
    out = []
    for name, spec in sorted(want.services.items()):
        after = tuple(service(cname, s) for s in spec.after if s in want.services)
        out.append(Resource(service(cname, name), service_kind.body(spec),
                            deps + (stopped if spec.running else ()) + after,
                            meta=service_kind.meta(spec, want.admin_socket if name == HAPROXY else "")))
    return out


def _parents(cname: str, path: str, want: Provisioning) -> tuple:
    parents = []
    parent = path.rstrip("/").rsplit("/", 1)[0]
    while parent:
        if parent in want.files:
            parents.append(file(cname, parent))
        parent = parent.rsplit("/", 1)[0]
    return tuple(parents)


# --- Content -----------------------------------------------------------------------------------

def render_templates(lab: Lab, addresses: Mapping[str, str]) -> dict[tuple[str, str], bytes]:
    """Every template whose addresses are known, rendered at once (one bounded child process);
    PlanError naming each that fails."""
    jobs = []
    for cname, c in lab.containers.items():
        want = provisioning_of(lab, cname)
        jobs += [(cname, path, spec.template) for path, spec in sorted(c.files.items())
                 if spec.template is not None and c.state == "running"
                 and not waits_for(lab, cname, path, want) - set(addresses)]
    if not jobs:
        return {}
    from . import templates
    results = templates.render_many([(text, templates.context(lab, cname, addresses)) for cname, _, text in jobs])
    failed = [f'{field_path(("containers", cname, "files", path, "template"))}: {result}'
              for (cname, path, _), result in zip(jobs, results) if isinstance(result, templates.TemplateProblem)]
    if failed:
        raise PlanError("\n".join(failed))
    return {(cname, path): str(result).encode() for (cname, path, _), result in zip(jobs, results)}


def root_disk_problems(lab: Lab, existing_profiles: Mapping[str, Mapping]) -> list[str]:
    """Containers with no root disk once existing profiles' live devices are known."""
    out = []
    for cname, c in lab.containers.items():
        devices: dict = {}
        for p in c.profiles:
            devices.update(lab.profiles[p].devices if p in lab.profiles else existing_profiles.get(p, {}))
        devices.update(c.devices)
        if not has_root_disk(devices):
            out.append(f"{field_path(('containers', cname))}: no root disk in its profiles {c.profiles} or its devices")
    return out

