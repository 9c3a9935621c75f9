"""What a kind's apply function may use while a step runs: the face of apply's StepRunner, so that
kinds need nothing from apply (which dispatches to them through the registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..address import Address
    from ..facts import Facts
    from ..lxd import Lxd
    from ..plan import Change


class Runner(Protocol):
    lxd: Lxd
    lab_name: str
    changed: set[Address]  # things inside containers that this run wrote

    def fresh(self, change: Change) -> tuple[dict, str]:
        """The object as LXD has it now, with its ETag; StaleState if it moved since the plan."""
        ...

    def exec(self, container: str, argv: list[str], what: str) -> str:
        """The command's stdout; a step error naming `what` if it fails."""
        ...

    def facts(self, container: str, fresh: bool = False) -> Facts:
        ...

    def read(self, container: str, **only: Any) -> Facts:
        """A fresh read of just these files, packages or services."""
        ...

    def ids(self, container: str, owner: str, group: str) -> tuple[int, int]:
        ...

    def check_unmoved(self, change: Change) -> None:
        """StaleState if the file is no longer as the plan saw it."""
        ...

    def file_bytes(self, change: Change) -> bytes:
        ...

    def nic_address(self, container: str, nic: str) -> str:
        """The container's IPv4 on `nic` (its interface inside), waiting (bounded) for one just started."""
        ...

    def warn(self, message: str) -> None:
        """Said in the report: something apply did beyond the plan, and why."""
        ...

    def step_error(self, message: str) -> Exception:
        ...

    def last_lines(self, out: str, err: str) -> str:
        ...
