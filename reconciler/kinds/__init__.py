"""One module per kind of resource: how it is desired, read, compared and applied.

Each module defines `KIND`, `REPLACE_FIELDS` (fields whose change means delete and create
again), and `apply(run, change, action)`.  LXD objects also define `desired(...)` and
`from_lxd(raw)`; things inside a container `from_facts(...)`.  Adding a kind means a module here
and a line in REGISTRY.
"""

from __future__ import annotations

from types import ModuleType

from ..address import Kind
from . import acl, file, instance, network, package, profile, project, service, storage_pool, storage_volume

REGISTRY: dict[Kind, ModuleType] = {m.KIND: m for m in (project, acl, network, profile, instance, package, file,
                                                        service, storage_pool, storage_volume)}


def rules(kind: Kind) -> ModuleType:
    return REGISTRY[kind]
