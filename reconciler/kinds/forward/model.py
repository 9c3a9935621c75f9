"""The forward kind's lab.yaml table, `forwards:`: LXD network forwards on the lab's bridges, keyed by listen address.

A target is a lab container (its NIC on the forward's network: that NIC's fixed `ipv4.address`, else the
address it has live) or an IPv4 address.  Ports are written as LXD takes them: a port,
LOW-HIGH, or a comma-separated list of those, with no spaces (LXD keeps the text as written).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from ... import values
from ...haproxy import CONTAINER_NAME
from ..contract import entries

if TYPE_CHECKING:
    from ...spec import Lab

TABLE = "forwards"

LISTEN_ADDRESS = values.IPV4  # the table's keys; checked further in pass 3 (not 0.0.0.0, inside its bridge)
PORT_ITEM = rf"{values.PORT}(?:-{values.PORT})?"
PORTS = rf"{PORT_ITEM}(?:,{PORT_ITEM})*"
MAX_PORTS = values.MAX_PORT_RANGE  # per port entry: LXD sets up one rule per port


def _ports(value: Any) -> str:
    """80 -> "80"; "80,8000-8002" as it is; anything else refused with what LXD takes."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(PORTS, text):
        raise ValueError(f"{value!r} is not a port, LOW-HIGH, or a comma-separated list of those (no spaces)")
    spans = [values.port_span(item) for item in text.split(",")]
    if any(low > high for low, high in spans):
        raise ValueError(f"{text!r}: a range runs backwards (write LOW-HIGH)")
    if port_count(text) > MAX_PORTS:
        raise ValueError(f"{text!r} has {port_count(text)} ports; at most {MAX_PORTS}")
    return text


def port_count(ports: str) -> int:
    return sum(high - low + 1 for low, high in (values.port_span(i) for i in ports.split(",")))


def port_numbers(ports: str) -> Iterator[int]:
    for low, high in (values.port_span(i) for i in ports.split(",")):
        yield from range(low, high + 1)


Ports = Annotated[str, BeforeValidator(_ports), WithJsonSchema(
    {"type": ["string", "integer"], "pattern": values.anchored(PORTS),
     "description": "a port, LOW-HIGH, or a comma-separated list of those"})]
ContainerRef = Annotated[str, values.Matching(CONTAINER_NAME, "a container name")]
Ipv4 = Annotated[str, values.Matching(values.IPV4, "an IPv4 address")]


class _Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class Targeted(_Strict):
    target: ContainerRef | None = Field(None, description="a lab container: the fixed ipv4.address of its NIC"
                                        " on the forward's network, else that NIC's live address")
    target_address: Ipv4 | None = Field(None, description="an IPv4 address, as it is")

    @model_validator(mode="after")
    def _one_target(self) -> Any:
        if self.target is not None and self.target_address is not None:
            raise ValueError("target and target_address name two targets: keep one")
        return self


class ForwardPort(Targeted):
    """Ports forwarded to one target (a port's own target: the forward's default one does not apply)."""

    protocol: Literal["tcp", "udp"]
    listen_port: Ports
    target_port: Ports | None = Field(None, description="as many ports as listen_port, or one; default:"
                                      " the same as listen_port")
    description: str = ""

    @model_validator(mode="after")
    def _port_target(self) -> ForwardPort:
        if self.target is None and self.target_address is None:
            raise ValueError("a port needs its target (a container) or target_address")
        if self.target_port is not None and port_count(self.target_port) not in (1, port_count(self.listen_port)):
            raise ValueError(f"target_port {self.target_port!r} has {port_count(self.target_port)} ports and"
                             f" listen_port {self.listen_port!r} {port_count(self.listen_port)}: LXD wants as"
                             " many, or one")
        return self


class Forward(Targeted):
    """An LXD network forward the lab owns: traffic to the listen address (the key) on its network goes
    to the ports' targets, and whatever no port names to the default target (target/target_address)."""

    network: str = Field(description="the bridge it listens on (declared under networks: or existing.networks)")
    description: str = ""
    ports: list[ForwardPort] = []


def forwards(lab: Lab) -> dict[str, Forward]:
    """lab.yaml's `forwards:`."""
    return entries(lab, TABLE)
