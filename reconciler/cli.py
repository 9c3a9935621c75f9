"""`reconcile validate | plan | apply | destroy | check`: exit codes as Terraform's."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .source import SourceError

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except SourceError as err:
        print(err, file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reconcile", description="Declarative desired state for LXD labs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmds = {
        "validate": (cmd_validate, "check lab.yaml without contacting LXD"),
        "plan": (cmd_plan, "show what apply would change"),
        "apply": (cmd_apply, "make LXD match lab.yaml"),
        "destroy": (cmd_destroy, "delete everything the lab owns, nothing else"),
        "check": (cmd_check, "send HTTP through each HAProxy frontend and show which server answered"),
    }
    for name, (run, text) in cmds.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("-f", "--file", default="lab.yaml", help="the lab file (default ./lab.yaml);"
                       " FILE.override.yaml beside it is merged in")
        p.set_defaults(run=run)
        if name == "plan":
            p.add_argument("--json", action="store_true", help="print the plan as JSON")
            p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when changes are pending")
        if name in ("apply", "destroy"):
            p.add_argument("--yes", "--auto-approve", action="store_true", dest="yes", help="do not ask")
            p.add_argument("--parallelism", type=int, default=4, help="steps at once (default 4)")
            p.add_argument("--fingerprint", help="apply only if the plan is still the one reviewed"
                           " (the fingerprint plan printed); refuse a plan that moved on")
        if name == "check":
            p.add_argument("--requests", type=int, default=6, help="requests per host (default 6, max 100)")
    return parser


def _load(args):
    from .spec import load_lab
    lab, doc = load_lab(args.file)
    return lab, Path(args.file).resolve().parent


def cmd_validate(args) -> int:
    lab, _ = _load(args)
    print(f"{args.file}: valid (lab {lab.lab!r}: {len(lab.networks)} networks, {len(lab.profiles)} profiles,"
          f" {len(lab.containers)} containers)")
    return EXIT_OK


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
    sys.stdout.write(plan_json(plan) if args.json else plan_text(plan, use_colour(sys.stdout)))
    return EXIT_CHANGES if args.detailed_exitcode and not plan.empty else EXIT_OK


def cmd_apply(args, destroy: bool = False) -> int:
    from .apply import apply_plan
    from .render import plan_text, progress_line, report_text, use_colour
    made = _make_plan(args, destroy=destroy)
    if made is None:
        return EXIT_ERROR
    plan, ctx, lxd = made
    colour = use_colour(sys.stdout)
    sys.stdout.write(plan_text(plan, colour))
    if args.fingerprint and args.fingerprint != plan.fingerprint():
        print(f"Error: the plan is no longer the one reviewed (fingerprint {plan.fingerprint()}, expected"
              f" {args.fingerprint}): LXD or lab.yaml changed since; review the plan above", file=sys.stderr)
        return EXIT_ERROR
    if plan.empty:
        return EXIT_OK
    if not _confirmed(args, "destroy" if destroy else "apply"):
        return EXIT_ERROR

    def progress(event, outcome, change):
        if event == "end" or sys.stdout.isatty():
            print(progress_line(event, outcome, change, colour), flush=True)

    report = apply_plan(plan, ctx, lxd, args.parallelism, progress)
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
    answer = input(f"Do you want to {verb} these changes? Only 'yes' will be accepted: ")
    if answer.strip() != "yes":
        print(f"{verb.capitalize()} cancelled.")
        return False
    return True


def cmd_check(args) -> int:
    from .check import run_check
    lab, _ = _load(args)
    lxd = _connect(lab)
    if lxd is None:
        return EXIT_ERROR
    return run_check(lab, lxd, max(1, min(args.requests, 100)))


if __name__ == "__main__":
    sys.exit(main())
