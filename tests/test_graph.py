"""`reconcile graph`: the dependency graph from the desired state, without LXD, as DOT parsed back
with pydot, and rendered by Graphviz's dot (installed by `make setup`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydot
import pytest

from reconciler.address import Address
from reconciler.cli import main
from reconciler.desired import desired_state
from reconciler.spec import load_lab

ROOT = Path(__file__).resolve().parent.parent
NO_LXD = "lxd: {socket: /nonexistent/unix.socket, project: default}\n"  # the graph never connects


def guide_lab(tmp_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text((ROOT / "lab.yaml").read_text().replace("lxd:\n  project: ${LAB_PROJECT:-default}\n", NO_LXD))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def parsed(dot: str) -> tuple[set[str], dict[tuple[str, str], dict]]:
    """The nodes and edges of DOT text, names unquoted, clusters included."""
    graph = pydot.graph_from_dot_data(dot)[0]
    unquote = lambda name: name.strip('"').replace('\\"', '"').replace("\\\\", "\\")
    nodes: set[str] = set()
    todo = [graph]
    while todo:
        g = todo.pop()
        nodes |= {unquote(n.get_name()) for n in g.get_nodes() if n.get_name() not in ("node", "edge", "graph")}
        todo += g.get_subgraphs()
    edges = {(unquote(e.get_source()), unquote(e.get_destination())): e.get_attributes() for e in graph.get_edges()}
    return nodes, edges


def reaches(edges, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        here = todo.pop()
        for (a, b) in edges:
            if a == here and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def test_the_guide_labs_graph_is_every_resource_with_the_order_apply_follows(tmp_path, capsys):
    path = guide_lab(tmp_path)
    code, dot, err = run(capsys, "graph", "-f", str(path))
    assert code == 0, err
    nodes, edges = parsed(dot)
    lab, _ = load_lab(path)
    desired = desired_state(lab, tmp_path, {}, {})
    assert nodes == {str(a) for a in desired}
    for addr, resource in desired.items():  # nothing the plan orders is lost by leaving implied edges out
        for dep in resource.depends_on:
            assert str(addr) in reaches(edges, str(dep)), (dep, addr)
    cfg = "file.proxyha:/etc/haproxy/haproxy.cfg"
    for web in ("instance.web1", "instance.web2"):  # HAProxy's servers: the containers they resolve
        assert edges[(web, cfg)]["style"] == "dashed" and edges[(web, cfg)]["label"] == '"address"'
    assert ("network.lan0", "instance.web1") in edges and ("profile.macvlan", "instance.web1") in edges
    assert ("instance.web1", "service.web1:apache2") not in edges  # implied through the package and files
    assert "service.proxyha:haproxy" in reaches(edges, cfg) and "subgraph \"cluster_web1\"" in dot


def test_svg_and_png_come_from_graphviz(tmp_path, capsys):
    path = guide_lab(tmp_path)
    assert run(capsys, "graph", "-f", str(path), "--format", "svg", "-o", str(tmp_path / "g.svg"))[0] == 0
    svg = (tmp_path / "g.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<title>instance.web1&#45;&gt;file.proxyha:/etc/haproxy/haproxy.cfg" \
        "</title>" in svg
    assert run(capsys, "graph", "-f", str(path), "--format", "png", "-o", str(tmp_path / "g.png"))[0] == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_graphviz_the_message_names_the_package(tmp_path, capsys, monkeypatch):
    assert shutil.which("dot"), "make setup installs graphviz"
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder without dot
    code, out, err = run(capsys, "graph", "-f", str(guide_lab(tmp_path)), "--format", "svg")
    assert code == 1 and out == ""
    assert err == ("Error: --format svg needs Graphviz's `dot`, which is not installed: install the graphviz"
                   " package (apt-get install graphviz), or use --format dot\n")


def test_names_with_quotes_and_backslashes_survive_dot(tmp_path, capsys):
    path = tmp_path / "lab.yaml"
    path.write_text(NO_LXD + 'lab: odd\ncontainers:\n  c1:\n    image: x\n    files:\n'
                    '      "/srv/a\\"b\\\\c": {content: "x"}\n      /srv/peer: {template: "{{ containers.c2.address }}"}\n'
                    "  c2:\n    image: x\n")
    code, dot, err = run(capsys, "graph", "-f", str(path))
    assert code == 0, err
    nodes, edges = parsed(dot)
    assert 'file.c1:/srv/a"b\\c' in nodes
    assert edges[("instance.c2", "file.c1:/srv/peer")]["style"] == "dashed"  # a template's address edge
    assert str(Address.parse('file.c1:/srv/a"b\\c')) in nodes


def test_an_invalid_lab_is_one_validation_line_per_problem(tmp_path, capsys):
    path = tmp_path / "lab.yaml"
    path.write_text("lab: x\ncontainers:\n  c1: {image: x, imgae: y}\n")
    code, out, err = run(capsys, "graph", "-f", str(path))
    assert code == 1 and out == "" and err == f"{path}:3:18: containers.c1.imgae: unknown field; did you mean 'image'?\n"


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_pictures_go_to_standard_output_without_o(tmp_path, capfdbinary, fmt):
    assert main(["graph", "-f", str(guide_lab(tmp_path)), "--format", fmt]) == 0
    out = capfdbinary.readouterr().out
    assert out.startswith(b"<?xml" if fmt == "svg" else b"\x89PNG")


def test_network_acls_and_an_owned_project_are_drawn_the_project_first(tmp_path, capsys):
    path = guide_lab(tmp_path)
    acls = (ROOT / "examples" / "network-acls.override.yaml").read_text()
    (tmp_path / "lab.override.yaml").write_text(acls + "lxd: {project: guide}\nproject: {}\n")
    code, out, err = run(capsys, "graph", "-f", str(path))
    assert code == 0, err
    nodes, edges = parsed(out)
    assert any(n.startswith("acl.") for n in nodes) and "project.guide" in nodes
    assert any(first == "project.guide" for first, _ in edges)  # everything else comes after it
