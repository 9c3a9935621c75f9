"""The kind registry: every kind is one module that keeps the whole contract, and every layer iterates
the registry, so a module that forgets a part fails at import, never silently at destroy."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler import kinds
from reconciler.address import Kind
from reconciler.engine import _nothing
from reconciler.graph import SHAPES
from reconciler.kinds import INSIDE_KINDS, OBJECT_KINDS, REGISTRY, tables
from reconciler.kinds.contract import Scope
from reconciler.spec import TABLES, Lab


def test_every_kind_has_one_module_and_every_module_its_kind():
    assert set(REGISTRY) == set(Kind)
    assert len(OBJECT_KINDS) + len(INSIDE_KINDS) == len(Kind)
    assert {k for k in Kind if k.inside} == {m.KIND for m in INSIDE_KINDS}


def test_plan_order_is_what_each_kind_declares_and_a_parent_comes_first():
    ranks = [m.RANK for m in REGISTRY.values()]
    assert len(set(ranks)) == len(ranks), "two kinds at one place in plan order"
    assert [k.rank for k in sorted(Kind, key=lambda k: k.rank)] == sorted(ranks)
    for module in OBJECT_KINDS:
        if module.PARENT is not None:
            assert REGISTRY[module.PARENT].RANK < module.RANK
    assert max(m.RANK for m in OBJECT_KINDS) < min(m.RANK for m in INSIDE_KINDS)  # containers exist first


def test_every_object_kinds_table_is_in_lab_yaml_and_destroy_empties_them_all():
    assert set(tables()) <= set(TABLES)
    lab = Lab.model_validate({"lab": "t", "networks": {"n": {}}, "profiles": {"p": {}},
                              "acls": {"a": {}}, "containers": {"c": {"image": "i"}}})
    emptied = _nothing(lab)
    assert all(getattr(emptied, table) == {} for table in tables())
    assert emptied.project is None


def test_the_graph_draws_every_kind():
    assert set(SHAPES) == set(Kind)


def test_only_the_project_is_read_on_its_own():
    assert [m.KIND for m in OBJECT_KINDS if m.SCOPE == Scope.OWN] == [Kind.PROJECT]


@pytest.mark.parametrize("part", ["RANK", "SHAPE", "ABSENT", "deletable", "from_lxd", "comparable", "TABLE", "apply",
                                  "imported", "named_by_devices"])
def test_a_kind_module_that_lacks_a_part_fails_the_registry_check(monkeypatch, part):
    network = REGISTRY[Kind.NETWORK]
    monkeypatch.delattr(network, part)
    with pytest.raises(ImportError, match=f"lacks {part}"):
        kinds._check()


def test_a_kind_without_a_module_fails_the_registry_check(monkeypatch):
    monkeypatch.setattr(kinds, "INSIDE_KINDS", kinds.INSIDE_KINDS[:-1])
    with pytest.raises(ImportError, match="no kind module for service"):
        kinds._check()


def test_a_table_lab_yaml_lacks_fails_the_registry_check(monkeypatch):
    monkeypatch.setattr(REGISTRY[Kind.ACL], "TABLE", "network_acls")
    with pytest.raises(ImportError, match="lab.yaml has no table 'network_acls'"):
        kinds.check_tables(Lab.model_fields)  # what spec runs once it has built Lab from the registry


DEVICES = {"eth0": {"type": "nic", "network": "lan", "security.acls": "web-only"},
           "root": {"type": "disk", "pool": "fast", "path": "/"},
           "site": {"type": "disk", "pool": "fast", "source": "site", "path": "/srv"},
           "other": {"type": "disk", "pool": "fast", "source": "theirs", "path": "/mnt"}}


def test_what_devices_name_is_a_dependency_each_kind_declares_for_itself():
    """Containers and profiles depend on the network, ACL, pool and volume their devices name, added from
    the registry (`named_by_devices`), not by the container or profile kind naming the others."""
    from reconciler import address as a
    from reconciler.desired import desired_state
    from reconciler.kinds import with_what_devices_name
    from reconciler.state import Resource
    lab = Lab.model_validate({"lab": "t", "networks": {"lan": {}}, "acls": {"web-only": {}},
                              "storage_pools": {"fast": {"driver": "dir"}},
                              "volumes": {"site": {"pool": "fast"}},
                              "profiles": {"p": {"devices": DEVICES}},
                              "containers": {"c": {"image": "i", "devices": DEVICES}}})
    owned = {a.network("lan"), a.acl("web-only"), a.Address(Kind("pool"), "fast"), a.Address(Kind("volume"), "fast/site")}
    desired = desired_state(lab, Path("."), {}, {})
    for address in (a.instance("c"), a.profile("p")):
        assert owned <= set(desired[address].depends_on)
        assert a.Address(Kind("volume"), "fast/theirs") not in desired[address].depends_on  # not the lab's
    live = with_what_devices_name(Resource(a.profile("p"), {"devices": DEVICES}), None)
    assert set(live.depends_on) == owned | {a.Address(Kind("volume"), "fast/theirs")}  # live: all it names


# --- A kind is one module ------------------------------------------------------------------------
# For each kind added on the registry (issue 16), what names it: its address word as a Kind (Kind.POOL,
# Kind("pool")), its module imported, its lab.yaml model, table or table's helpers.  Nothing under reconciler/
# may name it but its own module (or package), the registry line (kinds/__init__.py), and the few modules
# ALLOWED below, each a feature built on that kind, which adding the kind did not have to touch.

RECONCILER = Path(__file__).resolve().parent.parent / "reconciler"


@dataclass(frozen=True)
class NewKind:
    word: str  # its address word
    own: str  # its module, or its package's folder, under reconciler/
    module: str  # its module's name, as an import names it
    names: frozenset[str]  # its lab.yaml model, table and their helpers


NEW_KINDS = (
    NewKind("pool", "kinds/storage_pool.py", "storage_pool",
            frozenset({"StoragePool", "storage_pools", "PoolRef", "POOL_NAME", "StorageConfig", "SIZE_KEYS"})),
    NewKind("volume", "kinds/storage_volume.py", "storage_volume", frozenset({"Volume", "volumes", "VOLUME_NAME"})),
    NewKind("forward", "kinds/forward/", "forward",
            frozenset({"Forward", "ForwardPort", "Targeted", "forwards", "LISTEN_ADDRESS", "live_targeted",
                       "forward_refs", "Targets"})),
)
ALLOWED = {
    "kinds/__init__.py": "the registry: its one line per kind",
    # A volume lives on a pool: its PARENT is the pool kind, its model's `pool` a PoolRef, and it checks the
    # pool a volume names with the pool module's `known`/`unknown` (the volume kind was added after the pool).
    ("pool", "kinds/storage_volume.py"): "the volume kind, built on pools",
    # Checkpoints snapshot every volume of the lab (and restore them): a feature built on the volume kind.
    ("volume", "checkpoint.py"): "checkpoints snapshot volumes",
}


def names_of_kind(source: str, kind: NewKind) -> list[str]:
    """What in `source` (a module's text) names `kind`, as `line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Attribute) and node.attr == kind.word.upper() and \
                isinstance(node.value, ast.Name) and node.value.id == "Kind":
            what = f"Kind.{node.attr}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
                isinstance(t, ast.Name) and t.id == kind.word.upper()
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            what = f"{kind.word.upper()} defined"  # a member of a closed Kind
        elif isinstance(node, ast.Call) and "Kind" in ast.unparse(node.func) and \
                any(isinstance(a, ast.Constant) and a.value == kind.word for a in node.args):
            what = ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            path = (node.module or "").split(".")
            imported = {a.name for a in node.names}
            if kind.module in path or (kind.module in imported and "kinds" in path + [""] * (node.level > 0)):
                what = f"import of {kind.module}"
            elif imported & kind.names:
                what = f"import of {', '.join(sorted(imported & kind.names))}"
        elif isinstance(node, ast.Import) and any(kind.module in a.name.split(".") for a in node.names):
            what = f"import of {kind.module}"
        elif isinstance(node, ast.Name) and node.id in kind.names:
            what = node.id
        elif isinstance(node, ast.Attribute) and node.attr in kind.names:
            what = f".{node.attr}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in kind.names:
            what = repr(node.value)
        if what:
            found.append(f"{getattr(node, 'lineno', 0)}: {what}")
    return found


@pytest.mark.parametrize("kind", NEW_KINDS, ids=lambda k: k.word)
def test_a_kind_added_on_the_registry_is_named_only_by_its_own_module(kind):
    """Issue 16's contract: adding the kind touched reconciler/ only in its module and the registry line."""
    assert (RECONCILER / kind.own).exists()
    named = {}
    for path in sorted(RECONCILER.rglob("*.py")):
        rel = path.relative_to(RECONCILER).as_posix()
        if rel.startswith(kind.own) or rel in ALLOWED or (kind.word, rel) in ALLOWED:
            continue
        found = names_of_kind(path.read_text(), kind)
        if found:
            named[rel] = found
    assert named == {}, f"only reconciler/{kind.own} and the registry may name the {kind.word} kind"


@pytest.mark.parametrize("text, kind", [
    ("from .address import Kind\nx = Kind.VOLUME", "volume"),
    ("x = Kind('pool')", "pool"),
    ("class Kind(StrEnum):\n    FORWARD = 'forward'", "forward"),
    ("from .kinds import storage_volume", "volume"),
    ("from .kinds.forward import keyed", "forward"),
    ("from .spec.models import StoragePool", "pool"),
    ("def f(lab):\n    return lab.forwards", "forward"),
    ("t = {'volumes': 1}", "volume"),
])
def test_the_scan_finds_each_way_of_naming_a_kind(text, kind):
    """The scan above can fail: each way a module could name a kind is found."""
    assert names_of_kind(text, next(k for k in NEW_KINDS if k.word == kind))


def test_the_kinds_the_scan_checks_are_registered_by_their_own_modules():
    for kind in NEW_KINDS:
        assert REGISTRY[Kind(kind.word)].__name__ == f"reconciler.kinds.{kind.module}"
        assert kind.word not in {k.value for k in (Kind.PROJECT, Kind.ACL, Kind.NETWORK, Kind.PROFILE, Kind.INSTANCE,
                                                     Kind.PACKAGE, Kind.FILE, Kind.SERVICE, Kind.SERVER)}
