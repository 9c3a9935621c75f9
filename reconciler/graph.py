"""`reconcile graph`: the lab's dependency graph in Graphviz's DOT, as `terraform graph` does.

Made from the desired state alone (each Resource's `depends_on`), without LXD: it works on any
lab.yaml, in CI or before anything exists, and shows the order apply follows.  An arrow goes from
what comes first to what waits for it; a dashed one from a container to a file whose content needs
its address (HAProxy's servers, templates naming other containers).  Edges implied by others are
left out (a transitive reduction), so the picture shows the order, not every pair.  Each container
is a box holding its packages, files and services.

SVG and PNG come from Graphviz's `dot`, run on the DOT text when it is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path

from .address import Address, Kind
from .kinds import storage_pool, storage_volume
from .render import safe
from .state import LabState

SHAPES = {Kind.PROJECT: ("tab", "#eeeeee"), Kind.ACL: ("octagon", "#f4cccc"),
          Kind.NETWORK: ("hexagon", "#d9ead3"), Kind.PROFILE: ("folder", "#fff2cc"),
          Kind.INSTANCE: ("box3d", "#cfe2f3"), Kind.PACKAGE: ("component", "#ead1dc"),
          Kind.FILE: ("note", "#ffffff"), Kind.SERVICE: ("ellipse", "#fce5cd"),
          Kind.POOL: storage_pool.SHAPE, Kind.VOLUME: storage_volume.SHAPE}
DOT_TIMEOUT = 60


@dataclass(frozen=True)
class Edge:
    first: Address  # done first
    then: Address  # waits for it
    address: bool = False  # `then` needs the live address of `first`'s container


@dataclass(frozen=True)
class Graph:
    lab: str
    nodes: tuple[Address, ...]
    edges: tuple[Edge, ...]


def lab_graph(lab_name: str, desired: LabState) -> Graph:
    """The desired state's dependencies, reduced to those no other path implies."""
    nodes = tuple(sorted(desired))
    waits = {a: {d for d in r.depends_on if d in desired and d != a} for a, r in desired.items()}
    by_address = {a: _address_deps(r.address, r.meta.waits_for) for a, r in desired.items()}
    kept = _reduced(waits)
    edges = {Edge(d, a, d in by_address[a]) for a in nodes for d in kept[a] | (by_address[a] & waits[a])}
    return Graph(lab_name, nodes, tuple(sorted(edges, key=lambda e: (e.then.sort_key(), e.first.sort_key()))))


def _address_deps(addr: Address, waits_for: tuple[str, ...]) -> set[Address]:
    """The instances whose address a file waits for (not its own container's)."""
    return {Address(Kind.INSTANCE, c) for c in waits_for if c != addr.name}


def _reduced(waits: Mapping[Address, set[Address]]) -> dict[Address, set[Address]]:
    """Each node's direct prerequisites that no other prerequisite already leads to (bitsets)."""
    order = list(TopologicalSorter(waits).static_order())  # prerequisites first
    bit = {a: 1 << i for i, a in enumerate(order)}
    before: dict[Address, int] = {}  # everything a node transitively waits for
    for a in order:
        mask = 0
        for d in waits[a]:
            mask |= bit[d] | before[d]
        before[a] = mask
    return {a: {d for d in waits[a] if not any(before[o] & bit[d] for o in waits[a] if o != d)} for a in order}


# --- DOT -----------------------------------------------------------------------------------------

def to_dot(graph: Graph) -> str:
    title = f"lab {graph.lab}: an arrow points from what apply does first to what waits for it (dashed: for its address)"
    lines = [f"digraph {_quote(graph.lab)} {{", "  rankdir=LR;", "  labelloc=t;", f"  label={_quote(title)};",
             '  fontname="Helvetica";',
             '  node [fontname="Helvetica", fontsize=11, style=filled];', '  edge [color="#555555"];']
    outside = [a for a in graph.nodes if a.container is None]
    lines += [f"  {_node(a)}" for a in outside]
    for container in sorted({a.name for a in graph.nodes if a.container is not None}):
        lines.append(f"  subgraph {_quote('cluster_' + container)} {{")
        lines += [f"    label={_quote(container)};", '    style=rounded; color="#999999";']
        lines += [f"    {_node(a)}" for a in graph.nodes if a.container == container]
        lines.append("  }")
    for edge in graph.edges:
        style = ' [style=dashed, color="#1f77b4", label="address"]' if edge.address else ""
        lines.append(f"  {_quote(str(edge.first))} -> {_quote(str(edge.then))}{style};")
    return "\n".join(lines + ["}"]) + "\n"


def _node(addr: Address) -> str:
    shape, fill = SHAPES[addr.kind]
    label = f"{addr.kind.value}\\n{_escaped(addr.key or addr.name)}"
    return f'{_quote(str(addr))} [label="{label}", shape={shape}, fillcolor="{fill}"];'


def _escaped(text: str) -> str:
    return safe(text).replace("\\", "\\\\").replace('"', '\\"')


def _quote(text: str) -> str:
    return f'"{_escaped(text)}"'


# --- Pictures --------------------------------------------------------------------------------------

class NoGraphviz(RuntimeError):
    """Graphviz's `dot` is not installed."""


def picture(dot_text: str, fmt: str) -> bytes:
    """SVG or PNG from DOT, by Graphviz's `dot`."""
    dot = shutil.which("dot")
    if dot is None:
        raise NoGraphviz(f"--format {fmt} needs Graphviz's `dot`, which is not installed: install the"
                         " graphviz package (apt-get install graphviz), or use --format dot")
    done = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=DOT_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"dot -T{fmt} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def write(data: bytes, out: Path | None, stream) -> None:
    if out is None:
        stream.buffer.write(data)
        stream.flush()
    else:
        out.write_bytes(data)
