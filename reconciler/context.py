"""What a plan was made from, handed to apply: the lab, its folder, what was read from LXD."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .address import Address

if TYPE_CHECKING:  # the shapes only: apply reads these without importing the planner
    from .facts import Facts
    from .spec import Lab


@dataclass
class Context:
    """What a plan was made from; apply needs it again."""

    lab: Lab
    base_dir: Path
    recorded: frozenset[str]  # containers that already carry the record tag
    facts: dict[str, Facts]
    addresses: frozenset[Address] = frozenset()  # what lab.yaml declares and what the lab has in LXD
