"""What the checks of passes 2 and 3 share: a problem found (a path in lab.yaml), the names lab.yaml
declares and the parts that failed pass 1, and the "did you mean" of a name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
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
    """Every name lab.yaml declares, valid or not (None where a section could not be read), and the
    parts of entries that failed pass 1 (left out, or stood in for: see `salvage_entry`)."""

    networks: frozenset[str] | None
    profiles: frozenset[str] | None
    containers: frozenset[str] | None
    acls: frozenset[str] | None = None
    haproxy: frozenset[str] | None = None
    storage_pools: frozenset[str] | None = None
    volumes: frozenset[str] | None = None
    failed: PathSet = NO_PATHS

    def broken_profiles(self, lab: Lab) -> frozenset[str]:
        """Declared profiles whose devices are unknown: they failed validation, or some of their devices did."""
        return (self.profiles or frozenset()) - {p for p in lab.profiles if not self.failed.within(("profiles", p, "devices"))}


def complete(lab: Lab, declared: Declared, container: Container) -> bool:
    """Whether all of a container's lab profiles passed validation (else its devices are unknown)."""
    return not set(container.profiles) & declared.broken_profiles(lab)


def profiles_known(declared: Declared, cname: str) -> bool:
    """Whether a container's list of profiles passed pass 1 (else the list is the default's, not lab.yaml's)."""
    return not declared.failed.at(("containers", cname, "profiles"))
