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


def asked_again_while(transient: str | Callable[[LxdError], bool], ask: Callable[[], Any],
                      again: Callable[[], None] = lambda: None, pause: Callable[[float], None] = time.sleep) -> Any:
    """`ask()` again while LXD fails it with `transient` in its words, or as `transient(error)` says (a
    request safe to repeat: a read, a whole-file push, a write LXD undid itself), at most TRANSIENT_ATTEMPTS
    in all, calling `again()` before each repeat; any other failure at once."""
    passing = transient if callable(transient) else (lambda err: transient in str(err))
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            return ask()
        except LxdError as err:
            if not passing(err) or attempt == TRANSIENT_ATTEMPTS:
                raise
        again()
        pause(PAUSE * attempt)
    raise AssertionError("unreachable")


# Incus 6.0 sets a bridge up, and tears it down, by listing the host's interfaces and asking `ip` about
# each, and fails when one vanishes meanwhile (fixed in Incus 6.12). `ip` words it by the moment the
# interface went: 'Device "veth9acabc83" does not exist.' (a container stopping, the lab's own on destroy)
# or "RTNETLINK answers: No such device" (another bridge of the lab deleted at the same time). The daemon
# fails before it changes anything, or undoes an update; tried again, at most TRANSIENT_ATTEMPTS in all.
INTERFACE_LISTING = "bridge children interfaces"
INTERFACE_GONE = ("does not exist", "No such device", "Cannot find device")


def interface_vanished(err: LxdError) -> bool:
    """The daemon listed the host's interfaces while setting up or tearing down a bridge, and one went away
    meanwhile (another container stopping, another bridge going): nothing of the lab's caused it."""
    return INTERFACE_LISTING in str(err) and any(text in str(err) for text in INTERFACE_GONE)
