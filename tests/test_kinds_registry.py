"""The kind registry: every kind is one module that keeps the whole contract, and every layer iterates
the registry, so a module that forgets a part fails at import, never silently at destroy."""

from __future__ import annotations

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
