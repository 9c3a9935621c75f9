"""What the checks of passes 2 and 3 share: a problem found (a path in lab.yaml), the names lab.yaml
declares and the parts that failed pass 1, and the "did you mean" of a name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ..source import NO_PATHS, PathSet
from .models import Container, Lab


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


COMPARED = 100_000  # names the "did you mean" of unknown containers may compare, per pass


class Found(NamedTuple):
    """A problem found in the lab: where (a path in lab.yaml) and what."""

    path: tuple
    message: str
    at_key: bool = False  # locate at the mapping key (a bad name) rather than at its value
    line: int = 0  # a line inside the value (a template's), 1-based


@dataclass(frozen=True)
class Declared:
    """Every name lab.yaml declares, valid or not, by table (None where a table could not be read), and
    the parts of entries that failed pass 1 (left out, or stood in for: see `salvage_entry`).  One
    mapping for every table, so a kind's new table needs nothing here."""

    names: Mapping[str, frozenset[str] | None]
    failed: PathSet = NO_PATHS

    def of(self, table: str) -> frozenset[str] | None:
        return self.names.get(table)

    @property
    def networks(self) -> frozenset[str] | None:
        return self.of("networks")

    @property
    def profiles(self) -> frozenset[str] | None:
        return self.of("profiles")

    @property
    def containers(self) -> frozenset[str] | None:
        return self.of("containers")

    @property
    def acls(self) -> frozenset[str] | None:
        return self.of("acls")

    @property
    def haproxy(self) -> frozenset[str] | None:
        return self.of("haproxy")

    def broken_profiles(self, lab: Lab) -> frozenset[str]:
        """Declared profiles whose devices are unknown: they failed validation, or some of their devices did."""
        return (self.profiles or frozenset()) - {p for p in lab.profiles if not self.failed.within(("profiles", p, "devices"))}


def complete(lab: Lab, declared: Declared, container: Container) -> bool:
    """Whether all of a container's lab profiles passed validation (else its devices are unknown)."""
    return not set(container.profiles) & declared.broken_profiles(lab)


def profiles_known(declared: Declared, cname: str) -> bool:
    """Whether a container's list of profiles passed pass 1 (else the list is the default's, not lab.yaml's)."""
    return not declared.failed.at(("containers", cname, "profiles"))


def devices_everywhere(lab: Lab) -> Iterator[tuple[tuple, Mapping[str, str]]]:
    """(location, device) of every device in lab.yaml: the profiles', then the containers'."""
    for pname, profile in lab.profiles.items():
        for dname, device in profile.devices.items():
            yield ("profiles", pname, "devices", dname), device
    for cname, container in lab.containers.items():
        for dname, device in container.devices.items():
            yield ("containers", cname, "devices", dname), device
