"""Packages inside a container, installed with its own package manager (apt-get, dnf, yum, apk).

Packages dropped from lab.yaml are left installed: uninstalling what an image shipped would
surprise more than it helps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..address import Address, Kind, instance, package
from ..facts import Facts
from ..plan import Action, Change
from ..state import Resource

if TYPE_CHECKING:
    from ..lxd import RawState
    from .contract import Chosen
    from .runner import Runner

KIND = Kind.PACKAGE
RANK = 60  # plan order
SHAPE = ("component", "#ead1dc")
ABSENT = "not installed"  # why a create: what the plan says of one that is not there
REPLACE_FIELDS: tuple[str, ...] = ()


def deletable(address: Address) -> bool:
    """A package lab.yaml drops stays installed: removing one could take what others need with it."""
    return False


def desired(container: str, packages: tuple[str, ...]) -> list[Resource]:
    # One package manager per container takes one lock: installs go one after another.
    return [Resource(package(container, p), {"installed": True},
                     (instance(container),) + tuple(package(container, q) for q in packages[:i]))
            for i, p in enumerate(packages)]


def from_facts(container: str, facts: Facts, packages: tuple[str, ...]) -> list[Resource]:
    return [Resource(package(container, p), {"installed": True}) for p in packages if facts.packages.get(p)]


def install_argv(package_manager: str, packages: list[str]) -> list[str]:
    """argv installing packages with the container's own package manager."""
    if package_manager == "apt-get":
        return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--", *packages]
    if package_manager in ("dnf", "yum"):
        return [package_manager, "install", "-y", "-q", "--", *packages]
    if package_manager == "apk":
        return ["apk", "add", "-q", "--", *packages]
    raise ValueError("no known package manager (apt-get, dnf, apk) in this container")


def apply(run: Runner, change: Change, action: Action) -> bool:
    """Install unless already there; True if something was installed."""
    container, name = change.address.name, change.address.key
    if action == Action.CONVERGE and run.read(container, packages=(name,)).packages.get(name):
        return False
    manager = run.facts(container).package_manager
    run.exec(container, install_argv(manager, [name]), f"installing {name}")
    run.facts(container, fresh=True)  # a package may add the users and groups files need
    return True


def imported(raw: RawState, chosen: Chosen) -> dict[str, Any]:
    return {}  # what runs inside a container is not read by import
