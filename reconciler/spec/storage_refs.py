"""Pass 3 for storage: the pools and volumes that volumes and disk devices name are the lab's or listed
under `existing:`, never calling "unknown" a name that is declared but invalid."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .declared import Declared, Found, suggest
from .models import Lab

Devices = Iterator[tuple[tuple, Mapping[str, str]]]


def storage_problems(lab: Lab, declared: Declared, devices: Devices) -> list[Found]:
    """`devices`: (location, device) of every device in lab.yaml."""
    declared_pools, declared_volumes = declared.of("storage_pools"), declared.of("volumes")
    if declared_pools is None or declared_volumes is None or declared.failed.at(("existing",)):
        return []
    pools = declared_pools | set(lab.existing.storage_pools)
    out = [_unknown_pool(("volumes", name, "pool"), spec.pool, pools) for name, spec in lab.volumes.items()
           if spec.pool not in pools]
    for where, device in devices:
        pool, source = device.get("pool"), device.get("source", "")
        if device.get("type") != "disk" or not pool:
            continue
        if pool not in pools:
            out.append(_unknown_pool(where + ("pool",), pool, pools))
        elif source and not _volume_known(lab, declared, pool, source):
            out.append(Found(where + ("source",), f"unknown volume {source!r} on pool {pool!r}"
                             f"{suggest(source, declared_volumes)} (declare it under volumes: with pool: {pool},"
                             f" or list {pool}/{source} under existing.volumes)"))
    return out + _owned_and_existing(lab, declared)


def _unknown_pool(where: tuple, pool: str, known: set[str] | frozenset[str]) -> Found:
    return Found(where, f"unknown storage pool {pool!r}{suggest(pool, known)} (declare it under storage_pools:,"
                 " or list it under existing.storage_pools)")


def _volume_known(lab: Lab, declared: Declared, pool: str, source: str) -> bool:
    if f"{pool}/{source}" in lab.existing.volumes:
        return True
    if source not in (declared.of("volumes") or ()):
        return False
    return source not in lab.volumes or lab.volumes[source].pool == pool  # an invalid entry's pool is unknown


def _owned_and_existing(lab: Lab, declared: Declared) -> list[Found]:
    """A pool both owned and existing: plan would take over what the lab says it only uses."""
    return [Found(("storage_pools", name), f"{name!r} is declared here and listed under existing.storage_pools"
                  " (which is [default] unless written): the lab cannot own what it only uses; remove one of the"
                  " two", True)
            for name in sorted((declared.of("storage_pools") or set()) & set(lab.existing.storage_pools))]
