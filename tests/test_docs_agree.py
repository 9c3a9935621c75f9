"""The docs and the program agree: every option docs/cli.md's usage lists (and README.md's table
shows) is the parser's, with the same arguments, and every parser option is listed; the exit-code
table is what the documented steps exit with; the command outputs that need no LXD are what the
commands print; the counts in the prose are those of the generated outputs; every YAML block that
presents itself as a whole lab validates; the tutorial's picture is lab.yaml's graph.  No LXD (the
guide's steps on LXD: tests/test_guide_lab.py)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml
from docs_scenario import (
    CLI,
    GUIDE,
    OFFLINE,
    README,
    ROOT,
    TUTORIAL,
    documented,
    exit_codes,
    masked,
    run_scenario,
    shown_in_docs,
    wrong_exit_codes,
)

from reconciler.cli import _parser

LAB_YAML_DOC = ROOT / "docs" / "lab-yaml.md"
FILES_NAMED = ROOT / "tests" / "docs-files"  # the files the docs' labs name (`source:`), as a lab's folder holds them


# --- the parser as the docs describe it -------------------------------------------------------------

@dataclass(frozen=True)
class Group:
    """One bracketed group of a usage line (`[-f FILE]`, `[--json | --markdown]`, `[FILE...]`), or a bare one."""

    alternatives: tuple[tuple[str, ...], ...]  # each: an option and its argument, or a positional
    optional: bool
    repeated: bool  # `[--target ADDRESS]...`
    text: str


GROUP = re.compile(r"\[(?P<inner>[^\[\]]+)\](?P<more>\.\.\.)?|(?P<bare>-\S+(?: [A-Z][A-Z_|]*(?!\S))?|[A-Z]\S*)")


def groups(usage: str) -> list[Group]:
    out = []
    for m in GROUP.finditer(usage):
        inner = m["inner"] if m["inner"] is not None else m["bare"]
        alternatives = tuple(tuple(alt.split()) for alt in inner.split(" | "))
        out.append(Group(alternatives, m["inner"] is not None, bool(m["more"]), m.group(0)))
    return out


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def argument_name(action: argparse.Action) -> str:
    if action.choices and not action.metavar:
        return "|".join(action.choices)
    return str(action.metavar or (action.dest.upper() if action.option_strings else action.dest))


def problems_of(command: str, group: Group, parser: argparse.ArgumentParser) -> tuple[list[str], set[str]]:
    """What is wrong with one documented group of `command`, and the parser's destinations it names."""
    problems, named, actions = [], set(), []
    for alternative in group.alternatives:
        first, rest = alternative[0], alternative[1:]
        if first.startswith("-"):
            action = next((a for a in arguments(parser) if first in a.option_strings), None)
            if action is None:
                problems.append(f"{command} {group.text}: the parser has no {first}")
                continue
            takes = action.nargs != 0
            if (rest[0] if rest else None) != (argument_name(action) if takes else None):
                problems.append(f"{command} {group.text}: the parser's {first} takes "
                                f"{argument_name(action) if takes else 'no argument'}")
            if group.repeated != isinstance(action, argparse._AppendAction):
                problems.append(f"{command} {group.text}: repeatable in the parser is"
                                f" {isinstance(action, argparse._AppendAction)}")
            if group.optional == action.required:
                problems.append(f"{command} {group.text}: required in the parser is {action.required}")
        else:
            name, many = first.removesuffix("..."), first.endswith("...")
            action = next((a for a in arguments(parser) if not a.option_strings and argument_name(a) == name), None)
            if action is None:
                problems.append(f"{command} {group.text}: the parser has no positional {name}")
                continue
            nargs = ("*" if group.optional else "+") if many else ("?" if group.optional else None)
            if action.nargs != nargs:
                problems.append(f"{command} {group.text}: the parser's {name} has nargs {action.nargs!r}")
        actions.append(action)
        named.add(action.dest)
    exclusive = {id(g) for g in parser._mutually_exclusive_groups if set(actions) <= set(g._group_actions)}
    if len(set(map(id, actions))) > 1 and not exclusive:
        problems.append(f"{command} {group.text}: the parser lets them be given together")
    return problems, named


def usage_lines(text: str) -> dict[str, str]:
    """`reconcile COMMAND ...` lines (continuations joined) -> command: what follows it."""
    out: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if line.startswith("reconcile "):
            last, _, rest = line.removeprefix("reconcile ").partition(" ")
            out[last] = rest
        elif line.startswith(" ") and last:
            out[last] += " " + line.strip()
    return out


def cli_usage() -> str:
    return CLI.read_text().split("```\n", 2)[1]


def readme_usage() -> str:
    rows = [line.split("|")[1] for line in README.read_text().replace("\\|", "\x00").splitlines()
            if line.startswith("| `reconcile ")]
    return "\n".join(row.strip().strip("`").replace("\x00", "|") for row in rows)


def test_every_option_in_the_cli_usage_is_the_parsers_and_every_parser_option_is_there():
    documented_usage = usage_lines(cli_usage())
    commands = subcommands()
    assert documented_usage.pop("--version", None) == ""  # `reconcile --version`
    assert "--version" in _parser()._option_string_actions
    assert set(documented_usage) == set(commands), "docs/cli.md's usage and the parser name other commands"
    problems = []
    for command, usage in documented_usage.items():
        named: set[str] = set()
        for group in groups(usage):
            found, dests = problems_of(command, group, commands[command])
            problems += found
            named |= dests
        problems += [f"{command}: {a.option_strings or a.dest} is not in docs/cli.md's usage"
                     for a in arguments(commands[command]) if a.dest not in named]
    assert not problems, "\n".join(problems)


def test_every_option_in_the_readme_is_the_parsers():
    usage = usage_lines(readme_usage())
    commands = subcommands()
    assert set(usage) == set(commands), "README.md's table and the parser name other commands"
    problems = [p for command, text in usage.items() for group in groups(text)
                for p in problems_of(command, group, commands[command])[0]]
    assert not problems, "\n".join(problems)


def test_the_usage_checks_catch_what_they_are_for():
    commands = subcommands()
    for usage, wrong in ((" [--requests COUNT]", "takes N"), (" [--requests N]...", "repeatable"),
                         (" --requests N", "required"), (" [--request N]", "has no --request")):
        found = [p for g in groups(usage) for p in problems_of("check", g, commands["check"])[0]]
        assert any(wrong in p for p in found), (usage, found)
    found = [p for g in groups("[--yes | --force]") for p in problems_of("apply", g, commands["apply"])[0]]
    assert found == ["apply [--yes | --force]: the parser lets them be given together"]


# --- exit codes ------------------------------------------------------------------------------------

def exit_code_table() -> set[tuple[str, int]]:
    section = CLI.read_text().split("## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    pairs = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("command", "---"):
            for command in cells[0].split(", "):
                pairs |= {(command, code) for code, cell in enumerate(cells[1:]) if cell}
    return pairs


def test_the_exit_code_table_is_what_the_documented_steps_exit_with():
    """Each cell of the table is a step the docs scenarios run and hold to its exit code (OFFLINE here,
    GUIDE in tests/test_guide_lab.py), and each such step's code is in the table."""
    table = exit_code_table()
    assert ("plan", 2) in table and ("apply", 1) in table and ("destroy", 0) in table  # the table was read
    assert table == exit_codes(GUIDE + OFFLINE)


# --- outputs -----------------------------------------------------------------------------------------

def test_every_output_block_in_the_docs_is_a_step_in_its_own_file():
    steps = shown_in_docs(GUIDE + OFFLINE)
    assert len(steps) == len([s for s in GUIDE + OFFLINE if s.doc]), "two steps with one block name"
    assert set(documented()) == set(steps), "an output block in the docs has no step, or the reverse"
    for name, step in steps.items():
        assert f"<!-- output: {name} -->" in step.doc.read_text(), f"{name} is not in {step.doc.name}"


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The OFFLINE steps, run in a folder holding a copy of the repository's lab.yaml."""
    folder = tmp_path_factory.mktemp("offline")
    shutil.copy(ROOT / "lab.yaml", folder)

    def reconcile(argv: list[str]) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", *argv], cwd=folder, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout + done.stderr

    return run_scenario(OFFLINE, reconcile, lambda command: subprocess.run(
        command, shell=True, cwd=folder, check=True, timeout=60))


def test_the_outputs_that_need_no_lxd_are_what_the_commands_print_and_exit_with(offline):
    assert not wrong_exit_codes(OFFLINE, offline)
    blocks = documented(OFFLINE)
    for name, step in shown_in_docs(OFFLINE).items():
        assert masked(offline[name].text) == masked(blocks[name]), (
            f"{step.doc.name} block {name!r} no longer matches what the command prints; run `make docs-outputs`."
            f" Printed now:\n{offline[name].text}")


COUNTED = re.compile(r"Plan: [^`\n]*?\.|(?:Apply|Destroy) complete! [^`\n]*?\.|\"unchanged\": \d+|\d+ unchanged")


def test_the_counts_in_the_prose_are_those_the_commands_print():
    """A count written in the prose (`Plan: 4 to update, ...`) appears in an output block of the docs,
    which the scenarios hold to what the commands print."""
    generated = "\n".join(masked(body) for body in documented().values())
    problems = []
    for doc in (README, TUTORIAL, CLI, LAB_YAML_DOC):
        prose = re.sub(r"<!-- output: .*?<!-- end output -->", "", doc.read_text(), flags=re.S)
        problems += [f"{doc.name}: {m.group(0)!r} is in no generated output" for m in COUNTED.finditer(prose)
                     if masked(m.group(0)) not in generated]
    assert not problems, "\n".join(problems)


# --- labs in the docs ---------------------------------------------------------------------------------

def whole_labs() -> list[tuple[str, str]]:
    """(where, text) of every YAML block in the docs that presents itself as a whole lab (a top-level lab:)."""
    out = []
    for doc in (README, *sorted((ROOT / "docs").glob("*.md"))):
        for n, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", doc.read_text(), re.S)):
            if re.search(r"^lab:", block, re.M):
                out.append((f"{doc.name}#{n + 1}", block))
    return out


def test_the_docs_show_whole_labs():
    assert [where for where, _ in whole_labs()][:2] == ["lab-yaml.md#1", "lab-yaml.md#2"]


@pytest.mark.parametrize("where,text", whole_labs(), ids=[w for w, _ in whole_labs()])
def test_every_whole_lab_in_the_docs_validates_as_it_stands(where, text, tmp_path):
    shutil.copytree(FILES_NAMED, tmp_path, dirs_exist_ok=True)
    (tmp_path / "lab.yaml").write_text(text)
    named = [f["source"] for c in (yaml.safe_load(text).get("containers") or {}).values()
             for f in (c.get("files") or {}).values() if "source" in f]
    assert all((FILES_NAMED / name).is_file() for name in named), f"{where} names {named}: not all in {FILES_NAMED}"
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "validate"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and ": valid (lab " in done.stdout, f"{where}:\n{done.stderr}"


def test_the_tutorials_picture_is_the_graph_lab_yaml_makes_now():
    """docs/lab-graph.svg (`make docs-graph`) has the nodes and arrows `reconcile graph` finds in lab.yaml."""
    import html

    import pydot
    dot = subprocess.run([sys.executable, "-m", "reconciler.cli", "graph", "-f", "lab.yaml"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    [graph] = pydot.graph_from_dot_data(dot)

    def names(g) -> set[str]:
        found = {g.get_name().strip('"')} | {n.get_name().strip('"') for n in g.get_nodes()
                                             if n.get_name() not in ("node", "edge", "graph")}
        found |= {f"{e.get_source().strip(chr(34))}->{e.get_destination().strip(chr(34))}" for e in g.get_edges()}
        return found.union(*(names(s) for s in g.get_subgraphs()))

    drawn = {html.unescape(t) for t in re.findall(r"<title>(.*?)</title>", (ROOT / "docs" / "lab-graph.svg").read_text())}
    assert names(graph) == drawn, "docs/lab-graph.svg is not lab.yaml's graph any more: run `make docs-graph`"
