"""Saved plans: `reconcile plan -o FILE` writes one, `reconcile apply FILE` applies exactly it or refuses.

A plan file holds the plan (data: every change's before and after, reasons, the step graph), the
lab file it was made from, and a digest of what was computed from the lab (the validated lab, its
non-secret source files).  It holds no secret content and no digest of one.  Apply refuses when the
lab changed since, or when LXD moved: it plans again and names every object whose plan differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .plan import Change, Plan, plan_from_json
from .spec import Lab, read_source

KIND = "reconciler-plan"
VERSION = 1
MAX_BYTES = 64 * 2**20


class PlanFileError(Exception):
    """The file is not a plan this version can apply, or it no longer applies."""


@dataclass(frozen=True)
class Saved:
    plan: Plan
    lab_file: str
    lab_digest: str


def lab_digest(lab: Lab, base_dir: Path) -> str:
    """What the plan was computed from: the lab as validated (environment filled in), secrets left
    out, and the bytes of every non-secret `source:` file."""
    data = lab_model(lab)
    sources = []
    for cname, container in lab.containers.items():
        for path, spec in container.files.items():
            if spec.source is not None and not spec.secret:
                sources.append((cname, path, hashlib.sha256(read_source(base_dir.resolve(), spec.source)).hexdigest()))
    text = json.dumps([data, sources], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def lab_model(lab: Lab) -> dict:
    """The lab as validated (environment filled in), secret files' content, template and source left out."""
    data = lab.model_dump(mode="json", by_alias=True)
    for cname, container in lab.containers.items():
        for path, spec in container.files.items():
            if spec.secret:
                data["containers"][cname]["files"][path].update(content=None, template=None, source=None)
    return data


def write(path: Path, plan: Plan, lab_file: str, digest: str) -> None:
    data = {"kind": KIND, "version": VERSION, "lab_file": lab_file, "lab_digest": digest,
            "reads": {str(c.address): _read_digest(c) for c in plan.changes if c.before is not None},
            "plan": plan.as_json()}
    path.write_text(json.dumps(data, indent=1) + "\n")


def _read_digest(change: Change) -> str:
    """A digest of the object as plan read it (secrets redacted), for whoever inspects the file."""
    before = change.as_json()["before"]
    return hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]


def read(path: Path) -> Saved:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise PlanFileError(f"{path}: cannot read: {err.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise PlanFileError(f"{path}: over {MAX_BYTES // 2**20} MiB: not a plan file")
    try:
        data = json.loads(raw)
        if data.get("kind") != KIND:
            raise ValueError("not a reconciler plan file (no \"kind\": \"reconciler-plan\")")
        if data.get("version") != VERSION:
            raise ValueError(f"plan file version {data.get('version')!r}; this reconcile reads version {VERSION}")
        plan = plan_from_json(data["plan"])
        if plan.fingerprint() != data["plan"]["fingerprint"]:
            raise ValueError("its fingerprint does not match its changes: it was edited")
        return Saved(plan, str(data["lab_file"]), str(data["lab_digest"]))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise PlanFileError(f"{path}: {err}") from None


def moved(saved: Plan, fresh: Plan) -> list[str]:
    """What differs between the saved plan and one made now, object by object."""
    old = {c.address: c for c in saved.changes}
    new = {c.address: c for c in fresh.changes}
    out = []
    for addr in sorted(old.keys() | new.keys()):
        a, b = old.get(addr), new.get(addr)
        if a is None and b is not None:
            out.append(f"{addr}: now needs {', '.join(x.word for x in b.actions)} ({b.reasons[0].text})")
        elif b is None and a is not None:
            out.append(f"{addr}: no longer needs {', '.join(x.word for x in a.actions)}: it is already as lab.yaml says")
        elif a is not None and b is not None and a.as_json() != b.as_json():
            out.append(f"{addr}: {_how(a, b)}")
    return out


def _how(a: Change, b: Change) -> str:
    if a.actions != b.actions:
        return f"{'/'.join(x.word for x in a.actions)} became {'/'.join(x.word for x in b.actions)}"
    ja, jb = a.as_json(), b.as_json()
    fields = sorted(k for k in set(ja["before"] or {}) | set(jb["before"] or {})
                    if (ja["before"] or {}).get(k) != (jb["before"] or {}).get(k))
    if fields:
        return f"moved since the plan was saved ({', '.join(fields)})"
    return "its planned change differs"

