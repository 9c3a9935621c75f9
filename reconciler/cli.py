"""`reconcile validate | plan | apply | destroy | check`.

Exit codes mean one thing each: 0 success, 1 any error (bad input, usage, LXD, a failed step,
a refusal), 2 only for `plan --detailed-exitcode` with changes pending.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .source import Location, Problem, SourceError

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
EPILOG = """\
exit codes: 0 success; 1 error (invalid lab.yaml, usage, LXD, a failed or refused step);
            2 only with `plan --detailed-exitcode`: changes are pending.
See docs/cli.md (every command and option) and docs/lab-yaml.md (the file) in the repository."""


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1 (2 means "changes pending"), with the subcommand's own usage."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if extra:  # said by the subcommand, with its own usage
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args)
    except SourceError as err:
        print(err, file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_ERROR


def _at_least(low: int):
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value
    return check


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="reconcile", description="Declarative desired state for LXD labs.", epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"reconcile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    cmds = {
        "validate": (cmd_validate, "check lab.yaml without contacting LXD"),
        "plan": (cmd_plan, "show what apply would change, and why"),
        "apply": (cmd_apply, "make LXD match lab.yaml"),
        "destroy": (cmd_destroy, "delete everything the lab owns, nothing else"),
        "check": (cmd_check, "send HTTP through each HAProxy frontend and show which server answered"),
        "graph": (cmd_graph, "the lab's dependency graph: DOT, or SVG/PNG with Graphviz (no LXD needed)"),
    }
    for name, (run, text) in cmds.items():
        p = sub.add_parser(name, help=text, description=text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("-f", "--file", default="lab.yaml", help="the lab file (default ./lab.yaml);"
                       " NAME.override.yaml beside it is merged in")
        p.set_defaults(run=run, parser=p)
        if name == "plan":
            shape = p.add_mutually_exclusive_group()
            shape.add_argument("--json", action="store_true", help="print the plan as JSON")
            shape.add_argument("--markdown", action="store_true", help="print the plan as markdown for a"
                               " pull-request comment (secrets never shown)")
            p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when changes are pending")
        if name in ("apply", "destroy"):
            p.add_argument("--yes", "--auto-approve", action="store_true", dest="yes", help="do not ask")
            p.add_argument("--parallelism", type=_at_least(1), default=4, help="steps at once (default 4)")
            p.add_argument("--fingerprint", help="apply only if the plan is still the one reviewed"
                           " (the fingerprint plan printed); refuse a plan that moved on")
        if name == "validate":
            p.add_argument("files", nargs="*", metavar="FILE", help="lab files to validate (instead of -f);"
                           " NAME.override.yaml validates NAME.yaml with it merged")
        if name == "graph":
            p.add_argument("--format", choices=("dot", "svg", "png"), default="dot", help="default dot")
            p.add_argument("-o", "--output", type=Path, help="write to this file (default: standard output)")
        if name == "check":
            p.add_argument("--requests", type=_at_least(1), default=6,
                           help="requests per host (default 6, at most 100; at least one per server)")
    return parser


def _load(args) -> tuple[Any, Path]:
    return _load_file(args.file)


def _load_file(name: str) -> tuple[Any, Path]:
    from .spec import load_lab
    path = Path(name)
    if not path.exists() and not path.is_symlink():
        hint = " (run in the lab's folder, or name the file with -f FILE)" if name == "lab.yaml" else ""
        raise SourceError([Problem(Location(str(path), 1, 1), (), f"no such file{hint}")])
    lab, _ = load_lab(path)
    return lab, path.resolve().parent


def _lab_file(args) -> str:
    return _merged_name(args.file)


def _merged_name(name: str) -> str:
    """The lab file's name for messages, with the override when one was merged."""
    from .source import override_path
    extra = override_path(Path(name))
    return name + (f" (with {extra.name} merged)" if extra.exists() else "")


def cmd_validate(args) -> int:
    """Each file given (an override as its base, once), every problem of each; 1 if any is invalid."""
    from .source import base_path
    names = list(dict.fromkeys(base_path(name) for name in args.files)) if args.files else [args.file]
    invalid = 0
    for name in names:
        try:
            lab, _ = _load_file(name)
        except SourceError as err:
            print(err, file=sys.stderr)
            invalid += 1
            continue
        counts = [_count(len(lab.networks), "network"), _count(len(lab.profiles), "profile"),
                  _count(len(lab.containers), "container")]
        print(f"{_merged_name(name)}: valid (lab {lab.lab!r}: {', '.join(counts)})")
    return EXIT_ERROR if invalid else EXIT_OK


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _connect(lab):
    from .lxd import Lxd, LxdError
    try:
        lxd = Lxd(lab.lxd.socket, lab.lxd.project)
        if not lxd.project_exists():
            raise LxdError(f"LXD project {lab.lxd.project!r} does not exist (lxc project create"
                           f" {lab.lxd.project})")
        return lxd
    except LxdError as err:
        print(f"Error: {err}", file=sys.stderr)
        return None


def _make_plan(args, destroy=False):
    from .engine import build_plan
    from .lxd import LxdError
    from .plan import PlanError
    lab, base = _load(args)
    lxd = _connect(lab)
    if lxd is None:
        return None
    try:
        plan, ctx = build_plan(lab, base, lxd, destroy=destroy)
    except (PlanError, LxdError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return None
    _stats(lxd)
    return plan, ctx, lxd


def _stats(lxd) -> None:
    if os.environ.get("RECONCILER_STATS"):
        print(f"lxd api calls: {lxd.calls}", file=sys.stderr)


def cmd_plan(args) -> int:
    from .render import plan_json, plan_text, use_colour
    made = _make_plan(args)
    if made is None:
        return EXIT_ERROR
    plan = made[0]
    if args.markdown:
        from .markdown import plan_markdown
        sys.stdout.write(plan_markdown(plan, args.file))
    else:
        sys.stdout.write(plan_json(plan) if args.json else plan_text(plan, use_colour(sys.stdout), _lab_file(args)))
    return EXIT_CHANGES if args.detailed_exitcode and not plan.empty else EXIT_OK


def cmd_apply(args, destroy: bool = False) -> int:
    from .render import plan_text, use_colour
    made = _make_plan(args, destroy=destroy)
    if made is None:
        return EXIT_ERROR
    plan, ctx, lxd = made
    colour = use_colour(sys.stdout)
    sys.stdout.write(plan_text(plan, colour, _lab_file(args)))
    if args.fingerprint and args.fingerprint != plan.fingerprint():
        print(f"Error: the plan is no longer the one reviewed (fingerprint {plan.fingerprint()}, expected"
              f" {args.fingerprint}): LXD or lab.yaml changed since; review the plan above", file=sys.stderr)
        return EXIT_ERROR
    if plan.empty:
        return EXIT_OK
    if not _confirmed(args, "destroy" if destroy else "apply"):
        return EXIT_ERROR
    return _run(plan, ctx, lxd, args.parallelism, colour)


def _run(plan, ctx, lxd, parallelism: int, colour: bool) -> int:
    from .apply import apply_plan
    from .progress import apply_progress
    from .render import report_text

    seed = os.environ.get("RECONCILER_SHUFFLE")
    shuffle = random.Random(seed) if seed else None
    try:
        with apply_progress(plan, colour) as progress:  # live on a terminal, plain lines elsewhere
            report = apply_plan(plan, ctx, lxd, parallelism, progress, shuffle)
    except KeyboardInterrupt:
        print("Interrupted again: abandoned the running steps; run plan to see where things stand.",
              file=sys.stderr)
        return EXIT_ERROR
    if report.interrupted:
        print("Interrupted: waited for the running steps; nothing else was started.", file=sys.stderr)
    sys.stdout.write(report_text(report, colour))
    _stats(lxd)
    return EXIT_OK if report.ok else EXIT_ERROR


def cmd_destroy(args) -> int:
    return cmd_apply(args, destroy=True)


def _confirmed(args, verb: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"Error: refusing to {verb} without --yes when standard input is not a terminal", file=sys.stderr)
        return False
    try:
        answer = input(f"Do you want to {verb} these changes? Only 'yes' will be accepted: ")
    except (EOFError, KeyboardInterrupt):
        answer = ""
        print()
    if answer.strip() != "yes":
        print(f"{verb.capitalize()} cancelled.")
        return False
    return True


def cmd_graph(args) -> int:
    from .desired import desired_state
    from .graph import NoGraphviz, lab_graph, picture, to_dot, write
    from .plan import PlanError
    lab, base = _load(args)
    try:
        dot = to_dot(lab_graph(lab.lab, desired_state(lab, base, {}, {})))
        write(dot.encode() if args.format == "dot" else picture(dot, args.format), args.output, sys.stdout)
    except (NoGraphviz, PlanError, RuntimeError, OSError) as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_check(args) -> int:
    from .check import run_check
    lab, _ = _load(args)
    lxd = _connect(lab)
    if lxd is None:
        return EXIT_ERROR
    return run_check(lab, lxd, args.requests)


if __name__ == "__main__":
    sys.exit(main())
