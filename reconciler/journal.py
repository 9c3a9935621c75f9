"""A systemd unit's recent log lines inside a container, for the message of a step that failed because
of what the unit did (HAProxy's ALERT when it cannot bind, Apache's error)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kinds.runner import Runner


def log_of(run: Runner, container: str, unit: str) -> list[str]:
    """The unit's recent log lines, its alerts and errors first among them."""
    _, log, _ = run.lxd.execute(container, ["journalctl", "-u", unit, "-n", "30", "--no-pager", "-o", "cat"])
    lines = log.strip().splitlines()
    alerts = [line for line in lines if any(w in line for w in ("ALERT", "rror", "ailed"))]
    return (alerts or lines)[-8:]
