"""What can go wrong talking to LXD, as types the rest of the program catches without importing
pylxd (lxd.py raises them; validate and plan's pure parts never load the client), and how a request LXD
fails for a passing reason it names is asked again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

TRANSIENT_ATTEMPTS = 3
PAUSE = 0.5  # seconds before the first repeat; the next waits twice as long


class LxdError(Exception):
    """LXD refused or failed something; the message is LXD's own."""


class LxdUnreachable(LxdError):
    """No LXD daemon answered."""


class StaleState(LxdError):
    """The object changed between the plan and this step."""


class LxdNotFound(LxdError):
    """LXD has no such object."""


def asked_again_while(transient: str, ask: Callable[[], Any], again: Callable[[], None] = lambda: None,
                      pause: Callable[[float], None] = time.sleep) -> Any:
    """`ask()` again while LXD fails it with `transient` in its words (a request safe to repeat: a read, a
    whole-file push, a write LXD undid itself), at most TRANSIENT_ATTEMPTS in all, calling `again()` before each repeat; any other
    failure at once."""
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            return ask()
        except LxdError as err:
            if transient not in str(err) or attempt == TRANSIENT_ATTEMPTS:
                raise
        again()
        pause(PAUSE * attempt)
    raise AssertionError("unreachable")
