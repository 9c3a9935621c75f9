"""What can go wrong talking to LXD, as types the rest of the program catches without importing
pylxd (lxd.py raises them; validate and plan's pure parts never load the client)."""

from __future__ import annotations


class LxdError(Exception):
    """LXD refused or failed something; the message is LXD's own."""


class LxdUnreachable(LxdError):
    """No LXD daemon answered."""


class StaleState(LxdError):
    """The object changed between the plan and this step."""


class LxdNotFound(LxdError):
    """LXD has no such object."""
