"""How each step of an apply ended, and the report of them all: data, read by render without apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .plan import Change, Step


class Status(StrEnum):
    """How a step ended."""

    DONE = "done"
    UNCHANGED = "unchanged"  # a converge step that found nothing to do
    FAILED = "failed"
    SKIPPED = "skipped"  # a step it waits for did not succeed
    NOT_STARTED = "not started"  # apply was interrupted first

    @property
    def succeeded(self) -> bool:
        return self in (Status.DONE, Status.UNCHANGED)


@dataclass
class Outcome:
    step: Step
    change: Change
    status: Status
    seconds: float = 0.0
    message: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)

    def with_status(self, *statuses: Status) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in statuses]

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.with_status(Status.FAILED, Status.SKIPPED, Status.NOT_STARTED)
