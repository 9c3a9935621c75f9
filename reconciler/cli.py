"""`reconcile validate | plan | apply | destroy | check | import | graph | checkpoint | checkpoints | rollback`.

Exit codes mean one thing each: 0 success, 1 any error (bad input, usage, LXD, a failed step,
a refusal), 2 only for `plan --detailed-exitcode` with changes pending.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from . import __version__
from .source import Location, Problem, SourceError, overridden, override_path

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
EPILOG = """\
exit codes: 0 success; 1 error (invalid lab.yaml, usage, LXD, a failed or refused step);
            2 only with `plan --detailed-exitcode`: changes are pending.
See docs/cli.md (every command and option) and docs/lab-yaml.md (the file) in the repository."""
UNSAFE_SHARE = 0.3


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1 (2 means "changes pending"), with the subcommand's own usage."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


class Refused(Exception):
    """A command will not go on; the message says why and what to do."""


def main(argv: list[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    if extra:  # said by the subcommand, with its own usage
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.run(args)
    except SourceError as err:
        print(err, file=sys.stderr)
    except Refused as err:
        print(f"Error: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
    return EXIT_ERROR


def _at_least(low: float, kind: type = int, most: Callable[[], int] | None = None):
    """A number of at least `low` (and at most `most()`): anything else is a usage error, never changed."""
    def check(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        if most is not None and value > most():
            raise argparse.ArgumentTypeError(f"must be at most {most()}, not {value}")
        return value
    return check


def _check_requests_bound() -> int:
    from .check import MAX_REQUESTS  # imported only when --requests is given: check is a heavy import
    return MAX_REQUESTS


COMMANDS = {
    "validate": "check lab.yaml without contacting LXD",
    "plan": "show what apply would change, and why",
    "apply": "make LXD match lab.yaml (or apply a saved plan exactly)",
    "destroy": "delete everything the lab owns, nothing else",
    "check": "send HTTP through each HAProxy frontend and show which server answered",
    "import": "write a lab.yaml that adopts containers built by hand, as they are",
    "graph": "the lab's dependency graph: DOT, or SVG/PNG with Graphviz (no LXD needed)",
    "checkpoint": "snapshot every container and volume of the lab and record its other objects, in LXD"
                  " (or --delete one)",
    "checkpoints": "list the lab's checkpoints",
    "rollback": "put the whole lab back to a checkpoint: snapshots restored, objects put back, newer ones deleted",
}


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="reconcile", description="Declarative desired state for LXD labs.", epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"reconcile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(run=globals()[f"cmd_{name}"], parser=p)
        if name != "import":
            p.add_argument("-f", "--file", default=None, help="the lab file (default ./lab.yaml);"
                           " NAME.override.yaml beside it is merged in")
        if name not in ("validate", "import", "graph"):
            p.add_argument("--remote", metavar="NAME", help="the lxc remote to use (as `lxc remote add` stored it;"
                           " its certificate pinned), over lab.yaml's lxd.remote; `local`: the unix socket")
        _options(name, p)
    return parser


def _options(name: str, p: argparse.ArgumentParser) -> None:
    if name in ("plan", "apply"):
        p.add_argument("--target", action="append", default=[], metavar="ADDRESS",
                       help="only this address (repeatable), a container with what runs inside it, and what it"
                       " depends on")
    if name == "plan":
        shape = p.add_mutually_exclusive_group()
        shape.add_argument("--json", action="store_true", help="print the plan as JSON")
        shape.add_argument("--markdown", action="store_true", help="print the plan as markdown for a pull-request"
                           " comment (secrets never shown)")
        p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when changes are pending")
        p.add_argument("-o", "--out", metavar="PLANFILE", help="also save the plan to PLANFILE, for"
                       " `reconcile apply PLANFILE`")
    if name == "apply":
        p.add_argument("planfile", nargs="?", metavar="PLANFILE", help="a plan saved by `plan -o`: applied exactly,"
                       " or refused")
    if name in ("checkpoint", "rollback"):
        p.add_argument("name", nargs="?" if name == "checkpoint" else None, metavar="NAME",
                       help="the checkpoint's name: 1 to 40 lowercase letters, digits and '-'"
                       + (" (default: the time, YYYYMMDD-HHMMSS)" if name == "checkpoint" else ""))
        p.add_argument("--lock-timeout", type=_at_least(0, float), default=0.0, metavar="SECONDS",
                       help="wait this long for an apply of the lab to finish (default: refuse at once)")
    if name == "checkpoint":
        p.add_argument("--delete", action="store_true", help="delete checkpoint NAME (its snapshots and record)")
    if name in ("checkpoint", "checkpoints"):
        p.add_argument("--json", action="store_true", help="print JSON")
    if name == "rollback":
        p.add_argument("--yes", "--auto-approve", action="store_true", dest="yes", help="do not ask")
        p.add_argument("--force", action="store_true", help="delete even a storage volume made after the checkpoint"
                       " (its data is lost)")
    if name in ("apply", "destroy"):
        p.add_argument("--yes", "--auto-approve", action="store_true", dest="yes", help="do not ask")
        p.add_argument("--parallelism", type=_at_least(1), default=4, metavar="N", help="steps at once (default 4)")
        p.add_argument("--fingerprint", metavar="FINGERPRINT", help="apply only if the plan is still the one reviewed"
                       " (the fingerprint plan printed); refuse a plan that moved on")
        p.add_argument("--lock-timeout", type=_at_least(0, float), default=0.0, metavar="SECONDS",
                       help="wait this long for another apply of the lab to finish (default: refuse at once)")
    if name == "apply":
        p.add_argument("--force", action="store_true", help=f"apply even a plan that deletes or replaces over"
                       f" {UNSAFE_SHARE:.0%} of the lab's objects, a container that serves a frontend, or a"
                       " storage volume (its data)")
        p.add_argument("--allow-restart", action="store_true", help="apply even a plan that moves running"
                       " containers to another cluster member (each is stopped and started again)")
        p.add_argument("--checkpoint", choices=("auto", "always", "never"), default="never",
                       help="take a checkpoint before applying: auto when the plan replaces, restarts, stops, moves or"
                       " deletes anything or changes what is inside a container; always; never (the default: on a dir"
                       " pool a snapshot copies every root filesystem, which stalls the lab's traffic)")
        p.add_argument("--keep-checkpoints", type=_at_least(1), default=None, metavar="N",
                       help="automatic checkpoints kept, the oldest pruned (default: lab.yaml's checkpoints.keep, else"
                       " 3); one taken by hand is never pruned")
    if name == "validate":
        p.add_argument("files", nargs="*", metavar="FILE", help="lab files to validate (instead of -f); an"
                       " override (NAME.override.yaml, NAME.override.SOMETHING.yaml) is validated merged onto its"
                       " base: NAME.yaml beside it, else --base")
        p.add_argument("--base", metavar="FILE", help="the lab file an override is merged onto when its NAME.yaml"
                       " is not beside it")
    if name == "graph":
        p.add_argument("--format", choices=("dot", "svg", "png"), default="dot", help="default dot")
        p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to this file (default: standard output)")
    if name == "check":
        p.add_argument("--requests", type=_at_least(1, most=_check_requests_bound), default=6, metavar="N",
                       help="requests per host (default 6, at most 100; at least one round of the servers)")
    if name == "import":
        p.add_argument("names", nargs="*", metavar="NAME", help="instances to import (default: every instance"
                       " no lab owns)")
        p.add_argument("--project", default="default", metavar="P", help="the LXD project (default: default)")
        p.add_argument("--lab", metavar="NAME", help="the lab's name (default: the project's)")
        p.add_argument("-o", "--out", metavar="FILE", help="write the lab there (default: print it)")


# --- loading --------------------------------------------------------------------------------------

def _lab_path(args) -> Path:
    return Path(args.file or "lab.yaml")


def _load(args) -> tuple[Any, Path]:
    from .spec import load_lab
    path = _lab_path(args)
    if not path.exists() and not path.is_symlink():
        hint = " (run in the lab's folder, or name the file with -f FILE)" if args.file is None else ""
        raise SourceError([Problem(Location(str(path), 1, 1), (), f"no such file{hint}")])
    lab, _ = load_lab(path)
    return lab, path.resolve().parent


def _lab_file(args) -> str:
    """The lab file's name for messages, with the override when one was merged."""
    from .source import override_path
    path = _lab_path(args)
    extra = override_path(path)
    return str(path) + (f" (with {extra.name} merged)" if extra.exists() else "")


def cmd_validate(args) -> int:
    """Each file given, every problem of each, an override merged onto its base; 1 if any is invalid."""
    names = args.files or ([args.file] if args.file else [])
    checks = [_check_of(Path(name), args.base) for name in names] or [_Check(None)]  # None: ./lab.yaml
    invalid = 0
    for check in dict.fromkeys(checks):  # an override beside its lab is checked with the lab: once
        try:
            lab, shown = check.run()
        except SourceError as err:
            print(err, file=sys.stderr)
            invalid += 1
            continue
        print(f"{shown}: valid (lab {lab.lab!r}: {', '.join(_declared_counts(lab))})")
    return EXIT_ERROR if invalid else EXIT_OK


class _Check(NamedTuple):
    """What validate checks for one file: a lab file (None: ./lab.yaml) with the override beside it, or
    an `override` merged onto `lab`, its base, instead of that one (`lab` None: no base is known)."""

    lab: str | None
    override: Path | None = None

    def run(self) -> tuple[Any, str]:
        """The valid Lab and how to name what was checked; SourceError with every problem."""
        from .spec import load_lab
        one = argparse.Namespace(file=self.lab)
        if self.override is None:
            return _load(one)[0], _lab_file(one)
        if not os.path.lexists(self.override):
            raise SourceError([Problem(Location(str(self.override), 1, 1), (), "no such file")])
        if self.lab is None:
            raise SourceError([Problem(Location(str(self.override), 1, 1), (), (
                f"an override of {overridden(self.override)}, which is not beside it: pass --base FILE, the lab"
                " file it overrides"))])
        if not os.path.lexists(self.lab):
            raise SourceError([Problem(Location(self.lab, 1, 1), (), f"no such file (the base of {self.override},"
                                       " given with --base)")])
        return load_lab(self.lab, override=self.override)[0], f"{self.override} (merged onto {self.lab})"


def _check_of(path: Path, base: str | None) -> _Check:
    """A file named NAME.override.yaml or NAME.override.SOMETHING.yaml is an override: checked merged
    onto NAME.yaml beside it when there is one, else onto `base` (--base); any other is a lab file."""
    named_for = overridden(path)
    if named_for is None:
        return _Check(str(path))
    if named_for.exists():
        # the override that loading NAME.yaml merges anyway: checking the lab checks it
        return _Check(str(named_for)) if path.name == override_path(named_for).name else _Check(str(named_for), path)
    return _Check(base, path)


def _declared_counts(lab) -> list[str]:
    """What the lab declares, kind by kind in plan order: networks, profiles and containers always, every
    other kind (ACLs, pools, volumes, forwards, ...) when it has any."""
    from .address import Kind
    from .kinds import OBJECT_KINDS
    always = {Kind.NETWORK, Kind.PROFILE, Kind.INSTANCE}
    counts = [(kind, len(getattr(lab, kind.TABLE))) for kind in sorted(OBJECT_KINDS, key=lambda k: k.RANK)
              if kind.TABLE and hasattr(lab, kind.TABLE)]
    return [_count(n, kind.NOUN) for kind, n in counts if n or kind.KIND in always]


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _connect(lab, remote_flag: str | None = None, project: str | None = None, absent_ok: bool = False):
    """LXD through lab.yaml's socket or remote (or --remote), in the lab's project; one the lab owns
    (`project:`) may be absent where `absent_ok` (plan and apply create it)."""
    from .lxd import Lxd, LxdError
    project = project or lab.lxd.project
    try:
        lxd = Lxd(lab.lxd.socket if lab else None, project, _remote(lab, remote_flag),
                  lab.lxd.daemon if lab else None)
        if not (absent_ok and lab.project) and not lxd.project_exists():
            raise LxdError(_no_project(lab, project))
        if lxd.remote and not lxd.remote.insecure:  # which server this is about, before anyone types yes
            print(f"{lxd.daemon.title}: {lxd.remote}, its certificate as pinned in {lxd.remote.server_cert}", file=sys.stderr)
        return lxd
    except LxdError as err:
        raise Refused(str(err)) from None


def _no_project(lab, project: str) -> str:
    if lab and lab.project:
        return f"LXD project {project!r} does not exist yet: lab.yaml owns it (project:), and `reconcile apply` creates it"
    owned = " (or declare a project: section in lab.yaml: the lab then owns it, and apply creates it)" if lab else ""
    return f"LXD project {project!r} does not exist (lxc project create {project}){owned}"


def _remote(lab, flag: str | None):
    """The lxc remote to reach LXD through (--remote, else lab.yaml's), or None for the unix socket."""
    from .errors import LxdError
    from .remote import RemoteError, choose
    try:
        remote = choose(flag, lab.lxd.remote if lab else None, lab.lxd.insecure_skip_verify if lab else False,
                        lab.lxd.daemon if lab else None)
    except RemoteError as err:
        raise LxdError(str(err)) from None
    if remote is not None and remote.insecure:
        print(f"WARNING: TLS verification is OFF for {remote} (lxd.insecure_skip_verify in lab.yaml): the"
              " server is not authenticated; anyone on the way can read and change what reconcile sends",
              file=sys.stderr)
    return remote


def _plan(lab, base: Path, lxd, targets: list[str], destroy: bool = False):
    from .address import Address
    from .engine import build_plan
    from .errors import LxdError
    from .plan import PlanError
    _served(lab, lxd, destroy)
    try:
        plan, ctx = build_plan(lab, base, lxd, destroy=destroy)
    except (PlanError, LxdError) as err:
        raise Refused(str(err)) from None
    if targets:
        try:
            plan = plan.targeted([Address.parse(t) for t in targets], ctx.addresses)
        except ValueError as err:
            raise Refused(f"--target {err}") from None
    _stats(lxd)
    return dataclasses.replace(plan, daemon=lxd.daemon), ctx


def _served(lab, lxd, destroy: bool) -> None:
    """A lab that needs what the daemon's API lacks is refused before anything is read or done."""
    from .daemon import missing_extensions
    missing = [] if destroy else missing_extensions(lab, lxd.daemon.extensions)
    if missing:
        raise Refused(f"{lxd.daemon} at {lxd.where} cannot serve this lab: " + "; ".join(missing))


def _stats(lxd) -> None:
    if os.environ.get("RECONCILER_STATS"):
        print(f"lxd api calls: {lxd.calls}", file=sys.stderr)


# --- plan ------------------------------------------------------------------------------------------

def cmd_plan(args) -> int:
    from .render import plan_json, plan_text, use_colour
    lab, base = _load(args)
    plan, _ = _plan(lab, base, _connect(lab, args.remote, absent_ok=True), args.target)
    if args.markdown:
        from .markdown import plan_markdown
        sys.stdout.write(plan_markdown(plan, str(_lab_path(args))))
    else:
        sys.stdout.write(plan_json(plan) if args.json else plan_text(plan, use_colour(sys.stdout), _lab_file(args)))
    if args.out:
        from . import planfile
        planfile.write(Path(args.out), plan, str(_lab_path(args)), planfile.lab_digest(lab, base))
        print(f"Saved the plan to {args.out}: `reconcile apply {args.out}` applies exactly it, or refuses.",
              file=sys.stderr)
    return EXIT_CHANGES if args.detailed_exitcode and not plan.empty else EXIT_OK


# --- apply and destroy -------------------------------------------------------------------------------

def cmd_apply(args, destroy: bool = False) -> int:
    from .lock import Lock, LockHeld
    from .render import plan_text, use_colour
    saved = _saved(args) if not destroy else None
    lab, base = _load(args)
    if saved is not None:
        _same_lab(saved, lab, base)
    lxd = _connect(lab, args.remote, absent_ok=True)
    if saved is not None:
        _same_daemon(saved.plan, lxd, args.planfile)
    colour = use_colour(sys.stdout)
    try:
        with Lock(_lock_place(lxd, lab), lab.lab, args.lock_timeout, "destroy" if destroy else "apply", _say):
            _settle(lxd, lab)
            plan, ctx = _plan(lab, base, lxd, getattr(args, "target", []), destroy)
            if saved is not None:
                _unmoved(saved.plan, plan, args.planfile)
            sys.stdout.write(plan_text(plan, colour, _lab_file(args), destroy))
            _reviewed(args, plan)
            if plan.empty:
                return EXIT_OK
            if not destroy:
                _safe(args, plan)
                _restarts_allowed(args, plan)
            if not _confirmed(args, "destroy" if destroy else "apply"):
                return EXIT_ERROR
            taken = None if destroy else _checkpoint_before(args, plan, lab, base, lxd)
            code = _run(plan, ctx, lxd, args.parallelism, colour, "Destroy" if destroy else "Apply")
            if code != EXIT_OK and taken:
                print(f"The lab as it was before this apply is checkpoint {taken}: `reconcile rollback {taken}`"
                      " puts it back.", file=sys.stderr)
            return code
    except LockHeld as err:
        raise Refused(str(err)) from None


def _checkpoint_before(args, plan, lab, base: Path, lxd) -> str | None:
    """An automatic checkpoint, named from the plan's fingerprint, when --checkpoint asks for one;
    then the oldest automatic ones beyond --keep-checkpoints pruned. Its name, or None."""
    from . import checkpoint
    from .kinds import nested_reads
    from .planfile import lab_digest, lab_model
    why = checkpoint.risky(plan)
    if args.checkpoint == "never" or (args.checkpoint == "auto" and not why):
        return None
    name = checkpoint.auto_name(plan.fingerprint())
    place = _lock_place(lxd, lab)
    with _checkpoint_errors():
        if any(c.name == name and c.complete for c in checkpoint.listed(place, lab.lab)):
            _say(f"Checkpoint {name} (of this very plan) is already taken.")
            return name
        _say(f"Taking checkpoint {name} before applying" + (f": {', '.join(why[:5])}"
                                                             f"{' ...' if len(why) > 5 else ''}" if why else "") + ".")
        checkpoint.take(lxd, place, lab.lab, name, lab_digest(lab, base), plan.fingerprint(), lab_model(lab),
                        nested_reads(lab), auto=True, said=_say)
        checkpoint.prune(lxd, place, lab.lab, args.keep_checkpoints or lab.checkpoints.keep, said=_say)
    return name


def _lock_place(lxd, lab):
    """The lock lives in the lab's project, or in the default one when the lab owns its project (it may
    not exist yet, and destroy deletes it)."""
    from .errors import LxdError
    if not lab.project:
        return lxd
    try:
        return lxd.in_project("default")
    except LxdError as err:
        raise Refused(str(err)) from None


def _progress(args) -> Callable[[str], None]:
    """Where a command's progress goes: standard output, in order with what it prints before and after,
    unless that is JSON."""
    return _say if getattr(args, "json", False) else lambda text: _line(sys.stdout, text)


def _say(text: str) -> None:
    _line(sys.stderr, text)


_LINES = threading.Lock()  # steps run in threads: each line is written whole, never two run together


def _line(stream, text: str) -> None:
    with _LINES:
        stream.write(text + "\n")
        stream.flush()


def _saved(args):
    if not args.planfile:
        return None
    from . import planfile
    try:
        saved = planfile.read(Path(args.planfile))
    except planfile.PlanFileError as err:
        raise Refused(str(err)) from None
    if args.file is None:
        args.file = saved.lab_file
    return saved


def _same_lab(saved, lab, base: Path) -> None:
    from . import planfile
    if planfile.lab_digest(lab, base) != saved.lab_digest:
        raise Refused(f"the lab changed since the plan was saved ({_lab_file_name(saved.lab_file)} or its sources,"
                      " or the environment it reads): make the plan again")


def _same_daemon(saved, lxd, path: str) -> None:
    """A plan made against LXD is not applied on Incus, or the other way round (the same lab.yaml may
    reach either: $LXD_DIR, $INCUS_DIR, the first socket found)."""
    now = lxd.daemon
    if saved.daemon is not None and saved.daemon.name != now.name:
        raise Refused(f"the plan in {path} was made against {saved.daemon}, but {lxd.where} is {now}; nothing"
                      f" was done: make the plan again against this daemon")


def _lab_file_name(path: str) -> str:
    return path or "lab.yaml"


def _unmoved(saved, fresh, path: str) -> None:
    from . import planfile
    moved = planfile.moved(saved, fresh)
    if moved:
        daemon = saved.daemon.title if saved.daemon else "LXD"  # the same daemon as now (_same_daemon)
        raise Refused(f"{daemon} moved since the plan in {path} was saved; nothing was done:\n  " + "\n  ".join(moved)
                      + "\nMake the plan again and review it.")


def _reviewed(args, plan) -> None:
    if args.fingerprint and args.fingerprint != plan.fingerprint():
        raise Refused(f"the plan is no longer the one reviewed (fingerprint {plan.fingerprint()}, expected"
                      f" {args.fingerprint}): LXD or lab.yaml changed since; review the plan above")


def _safe(args, plan) -> None:
    from .kinds import data_losses
    problems = plan.unsafe(UNSAFE_SHARE) + data_losses(plan.changes)
    if problems and not args.force:
        raise Refused("this plan is refused without --force: " + "; ".join(problems))


def _restarts_allowed(args, plan) -> None:
    restarted = plan.restarted_by_moves()
    if restarted and not args.allow_restart:
        raise Refused(f"this plan moves {', '.join(restarted)} to another cluster member, which stops and starts"
                      " each (LXD moves containers between members stopped): apply with --allow-restart")


def _settle(lxd, lab) -> None:
    """Wait for LXD operations an earlier, killed run left on the lab's containers: planning and acting
    while LXD still creates or starts one would fail on "busy" or plan from a half-made state."""
    names = set(lab.containers) | {c.renamed_from for c in lab.containers.values() if c.renamed_from}
    for op in lxd.running_operations():
        touched = sorted(set(op.instances) & names)
        if touched:
            _say(f"Waiting for {lxd.daemon.title} to finish {op.description!r} on {', '.join(touched)} (left running by an"
                 " earlier run) ...")
            lxd.wait_operation(op.id)


def _run(plan, ctx, lxd, parallelism: int, colour: bool, verb: str) -> int:
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
    sys.stdout.write(report_text(report, colour, verb))
    _stats(lxd)
    return EXIT_OK if report.ok else EXIT_ERROR


def cmd_destroy(args) -> int:
    args.planfile = None
    return cmd_apply(args, destroy=True)


def _confirmed(args, verb: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise Refused(f"refusing to {verb} without --yes when standard input is not a terminal")
    question = {"destroy": "destroy everything above", "roll back": "roll the lab back as above"}.get(
        verb, f"{verb} these changes")
    try:
        answer = input(f"Do you want to {question}? Only 'yes' will be accepted: ")
    except (EOFError, KeyboardInterrupt):
        answer = ""
        print()
    if answer.strip() != "yes":
        print(f"{verb.capitalize()} cancelled.")
        return False
    return True


# --- checkpoints and rollback ---------------------------------------------------------------------

def cmd_checkpoint(args) -> int:
    import json
    from datetime import UTC, datetime

    from . import checkpoint
    from .kinds import nested_reads
    from .planfile import lab_digest, lab_model
    if args.delete and not args.name:
        raise Refused("--delete needs the NAME of the checkpoint to delete")
    name = _checkpoint_name(args.name or datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    lab, base = _load(args)
    lxd = _connect(lab, args.remote)
    place = _lock_place(lxd, lab)
    with _checkpoint_errors(), _locked(place, lab, args.lock_timeout, "checkpoint"):
        if args.delete:
            checkpoint.delete(lxd, place, checkpoint.find(place, lab.lab, name))
            print(json.dumps({"deleted": name}) if args.json else f"Deleted checkpoint {name}.")
            return EXIT_OK
        _settle(lxd, lab)  # a killed run's snapshot may still be running
        plan, _ = _plan(lab, base, lxd, [])
        taken = checkpoint.take(lxd, place, lab.lab, name, lab_digest(lab, base), plan.fingerprint(), lab_model(lab),
                                nested_reads(lab), said=_progress(args))
    if args.json:
        print(json.dumps(taken.summary(), indent=1))
    else:
        print(f"Checkpoint {name}: {taken.holds()} (snapshots {checkpoint.snapshot_name(name)}), lab.yaml digest"
              f" {taken.lab_digest[:12]}, plan fingerprint {taken.fingerprint}."
              f" `reconcile rollback {name}` puts the lab back to it.")
    return EXIT_OK


def cmd_checkpoints(args) -> int:
    import json

    from . import checkpoint
    lab, _ = _load(args)
    lxd = _connect(lab, args.remote)
    place = _lock_place(lxd, lab)
    with _checkpoint_errors():
        found = checkpoint.listed(place, lab.lab)
        sizes = checkpoint.sizes(lxd, found)
    if args.json:
        print(json.dumps([c.summary() | {"size": sizes[c.name]} for c in found], indent=1))
        return EXIT_OK
    if not found:
        print(f"Lab {lab.lab!r} has no checkpoints (`reconcile checkpoint NAME` takes one).")
    for c in found:
        flags = (" (automatic)" if c.auto else "") + ("" if c.complete else " (INCOMPLETE: take it again or delete it)")
        size = "size not reported by LXD" if sizes[c.name] is None else f"{sizes[c.name]} bytes"
        print(f"{c.name:<24} {c.created}  lab.yaml {c.lab_digest[:12]}  {c.holds()}; {size}{flags}")
    return EXIT_OK


def cmd_rollback(args) -> int:
    from . import checkpoint
    from .errors import LxdError
    from .kinds import nested_reads
    from .planfile import lab_digest, lab_model
    name = _checkpoint_name(args.name)
    lab, base = _load(args)
    lxd = _connect(lab, args.remote)
    place = _lock_place(lxd, lab)
    with _checkpoint_errors(), _locked(place, lab, args.lock_timeout, "rollback"):
        _settle(lxd, lab)  # a killed rollback's restore may still be running
        cp = checkpoint.find(place, lab.lab, name)
        rollback = checkpoint.plan_rollback(lxd, cp, nested_reads(lab), args.force)
        print(f"Rollback of lab {lab.lab!r} to checkpoint {name} (taken {cp.created}):")
        for step in rollback.steps:
            print(f"  {step.text()}")
        if rollback.refused:
            raise Refused("rollback refused, nothing was done:\n  " + "\n  ".join(rollback.refused))
        differs = lab_digest(lab, base) != cp.lab_digest
        if differs and not cp.auto:
            _say_lab_differs(cp, lab_model(lab))
        if not _confirmed(args, "roll back"):
            return EXIT_ERROR
        try:
            checkpoint.run_rollback(lxd, rollback, said=_progress(args))
        except LxdError as err:
            raise Refused(f"rollback stopped: {err}\nRun `reconcile rollback {name}` again: it takes up where it"
                          " stopped") from None
    print(f"Rolled back to checkpoint {name}. {_after_rollback(cp, differs)}")
    return EXIT_OK


def _after_rollback(cp, differs: bool) -> str:
    if cp.auto:
        return ("It was taken automatically before an apply: the lab is as it was before that apply, and"
                " `reconcile plan` shows what applying lab.yaml again would change.")
    if differs:
        return ("The working lab.yaml differs from the one it recorded (above): `reconcile plan` with it shows"
                " what apply would change again.")
    return "`reconcile plan` shows no changes."


def _say_lab_differs(cp, model) -> None:
    from .checkpoint import lab_differences
    diff = lab_differences(cp.lab_model, model) if cp.lab_model is not None else []
    print("Note: the working lab.yaml differs from the one this checkpoint recorded (as validated, secrets left"
          " out):")
    for line in diff[:200]:
        print(f"  {line}")


def _checkpoint_name(name: str) -> str:
    from .checkpoint import CheckpointError, check_name
    try:
        return check_name(name)
    except CheckpointError as err:
        raise Refused(str(err)) from None


class _checkpoint_errors:
    """A checkpoint's refusals and LXD's errors said as refusals, never a traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> None:
        from .checkpoint import CheckpointError
        from .errors import LxdError
        from .lock import LockHeld
        if isinstance(err, (CheckpointError, LxdError, LockHeld)):
            raise Refused(str(err)) from None


def _locked(place, lab, timeout: float, command: str):
    from .lock import Lock
    return Lock(place, lab.lab, timeout, command, _say)


# --- check and import --------------------------------------------------------------------------------

def cmd_check(args) -> int:
    from .check import run_check
    lab, _ = _load(args)
    return run_check(lab, _connect(lab, args.remote), args.requests)


def cmd_graph(args) -> int:
    from .desired import desired_state
    from .graph import NoGraphviz, lab_graph, picture, to_dot, write
    from .plan import PlanError
    lab, base = _load(args)
    try:
        dot = to_dot(lab_graph(lab.lab, desired_state(lab, base, {}, {})))
        write(dot.encode() if args.format == "dot" else picture(dot, args.format), args.output, sys.stdout)
    except (NoGraphviz, PlanError, RuntimeError, OSError) as err:
        raise Refused(str(err)) from None
    return EXIT_OK


def cmd_import(args) -> int:
    from .adopt import ImportError_, import_lab, named_parents
    from .spec import LAB_NAME
    name = args.lab or args.project
    if not re.fullmatch(LAB_NAME, name):
        raise Refused(f"{name!r} is not a lab name (lowercase letters, digits and '-'): give one with --lab")
    if args.out and Path(args.out).exists():
        raise Refused(f"{args.out} exists: import writes a new file, never over one")
    lxd = _connect(None, project=args.project)
    try:
        top = lxd.read(with_addresses=False)  # first the containers, to know which pools and bridges to look in
        text = import_lab(lxd.read(with_addresses=False, under=named_parents(top, args.names)), args.names, name,
                          args.project, lxd.daemon.title)
    except ImportError_ as err:
        raise Refused(str(err)) from None
    if args.out:
        Path(args.out).write_text(text)
        print(f"Wrote {args.out}: `reconcile plan -f {args.out}` shows only adoptions.", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
