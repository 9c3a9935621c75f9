"""File templates: Jinja2, sandboxed, strict about names, bounded in time and memory.

A template may come from a lab.yaml nobody has reviewed, so:
- it is read statically (its syntax tree) to find unknown names and what addresses it needs,
  without rendering it: `validate` talks to nothing and runs nothing;
- it is rendered in a child process with a memory limit, a time limit per template and an output
  cap, in Jinja's SandboxedEnvironment (no attribute tricks reach Python's internals), with
  undefined names as errors, `range()` and `*`/`**` bounded, no loading of other templates
  and nothing random (a template must render the same bytes each time, or it drifts forever).

Names a template sees: `lab.name`; `container.name`, `.address`, `.state`; `vars.NAME` (this
container's vars); `containers.NAME.name`, `.address`, `.state`, `.vars` (every lab container,
in lab.yaml's order); `haproxy.HOST.frontends` and `.backends` (each backend's `servers` with
their `name`, `container`, `port` and `address`).

jinja2 is imported only where a template is read or rendered: a plan without templates never
pays for it.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment

    from .spec.models import Lab

NAMES = ("lab", "container", "containers", "vars", "haproxy")
FIELDS = {"lab": ("name",), "container": ("name", "address", "state"),
          "containers.*": ("name", "address", "state", "vars")}
WITHOUT_ADDRESS = ("name", "state", "vars")  # fields of a container that need no live address
MAPPING_METHODS = frozenset(m for m in dir(dict) if not m.startswith("_"))  # containers.items(), .values(), ...: every container

MAX_OUTPUT = 1024 * 1024  # characters a template may render
MAX_RANGE = 10_000  # items range() may make
MAX_REPEAT = 1024 * 1024  # the size of what `*` may make (a string or list times a number)
MAX_POWER_BITS = 4096  # the size of what `**` may make
RENDER_SECONDS = 2.0  # per template
CHILD_MEMORY = 512 * 1024 * 1024  # address space of the rendering process
CHILD_CPU_SECONDS = 15  # the last resort: a process that outlives its alarms is killed (SIGXCPU)
NOT_HERE = ("lipsum",)  # globals that are random: a template must render the same bytes each time
NOT_FILTERS = ("random",)


class TemplateProblem(ValueError):
    """A template that cannot be read or rendered; `line` is the template's own line (1-based, 0 unknown)."""

    def __init__(self, message: str, line: int = 0):
        super().__init__(message)
        self.message, self.line = message, line

    def __str__(self) -> str:
        return f"template line {self.line}: {self.message}" if self.line else self.message


# --- The environment ---------------------------------------------------------------------------

def environment() -> SandboxedEnvironment:
    """The sandboxed, strict environment templates are read and rendered in."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    class Bounded(SandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                _check_repeat(left, right)
                _check_product(left, right)
            elif operator == "**":
                _check_power(left, right)
            return super().call_binop(context, operator, left, right)

    env = Bounded(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, trim_blocks=True)
    for name in NOT_HERE:
        env.globals.pop(name, None)
    for name in NOT_FILTERS:
        env.filters.pop(name, None)
    env.globals["range"] = bounded_range
    return env


def bounded_range(*args: int) -> range:
    found = range(*args)
    if len(found) > MAX_RANGE:
        from jinja2.exceptions import SecurityError
        raise SecurityError(f"range() of {len(found)} items: at most {MAX_RANGE}")
    return found


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_REPEAT:
            from jinja2.exceptions import SecurityError
            raise SecurityError(f"`*` would make {len(seq) * times} items: at most {MAX_REPEAT}")


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_POWER_BITS:
        from jinja2.exceptions import SecurityError
        raise SecurityError(f"`*` would make a number of more than {MAX_POWER_BITS} bits")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and \
            exponent * max(abs(base).bit_length(), 1) > MAX_POWER_BITS:
        from jinja2.exceptions import SecurityError
        raise SecurityError(f"`**` would make a number of more than {MAX_POWER_BITS} bits")


@lru_cache(maxsize=1)
def _shared_environment() -> SandboxedEnvironment:
    return environment()


# --- Reading a template: what it names and what it needs -----------------------------------------

@dataclass(frozen=True)
class Use:
    """One use of a lab name: `containers.web1.address` is Use('containers', ('web1', 'address'), line)."""

    root: str
    chain: tuple[str, ...]  # constant attribute or item names after the root, as far as they are known
    line: int


@dataclass(frozen=True)
class Reading:
    """What a template's syntax tree says."""

    unknown: tuple[tuple[str, int], ...]  # names that are none of NAMES nor a global, with a line
    uses: tuple[Use, ...]
    loads: tuple[int, ...]  # lines of include/import/extends: a template cannot load files


@lru_cache(maxsize=512)
def read(text: str) -> Reading:
    """The syntax tree's names (TemplateProblem on a syntax error).  Cached: plan asks more than once."""
    from jinja2 import meta, nodes
    from jinja2.exceptions import TemplateSyntaxError
    env = _shared_environment()
    try:
        tree = env.parse(text)
        undeclared = meta.find_undeclared_variables(tree)  # compiles it: unknown filters and tests are found too
    except TemplateSyntaxError as err:
        raise TemplateProblem(f"syntax error: {err.message}", err.lineno or 0) from None
    except RecursionError:
        raise TemplateProblem("nested too deeply to read") from None
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    first_line: dict[str, int] = {}
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load":
            first_line.setdefault(name.name, name.lineno)
    unknown = tuple(sorted(((n, first_line.get(n, 0)) for n in undeclared
                            if n not in NAMES and n not in env.globals), key=lambda u: (u[1], u[0])))
    roots = {n for n in undeclared if n in NAMES and n not in assigned}
    loads = tuple(n.lineno for n in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)))
    return Reading(unknown, tuple(_uses(tree, roots)), loads)


def _uses(tree: nodes.Template, roots: set[str]) -> list[Use]:
    """Every load of a root name, with the constant attributes and items that follow it."""
    from jinja2 import nodes
    parents: dict[int, nodes.Node] = {}
    for each in tree.find_all(nodes.Node):
        for child in each.iter_child_nodes():
            parents[id(child)] = each
    out = []
    for name in tree.find_all(nodes.Name):
        if name.ctx != "load" or name.name not in roots:
            continue
        chain: list[str] = []
        node: nodes.Node | None = name
        while node is not None:
            parent = parents.get(id(node))
            key = _constant_key(parent, node)
            if key is None:
                break
            chain.append(key)
            node = parent
        out.append(Use(name.name, tuple(chain), name.lineno))
    return out


def _constant_key(parent: Any, child: Any) -> str | None:
    """`x.NAME` or `x["NAME"]` with `child` as x: NAME; anything else None."""
    from jinja2 import nodes
    if isinstance(parent, nodes.Getattr) and parent.node is child:
        return parent.attr
    if isinstance(parent, nodes.Getitem) and parent.node is child and isinstance(parent.arg, nodes.Const) \
            and isinstance(parent.arg.value, str):
        return parent.arg.value
    return None


@dataclass(frozen=True)
class Known:
    """What a template may name in one container's file."""

    containers: frozenset[str] | None  # None: not known (containers: had problems of its own)
    vars: frozenset[str] | None  # None: not known (the container's vars: had problems of their own)
    haproxy: frozenset[str] | None


def problems(text: str, known: Known) -> list[TemplateProblem]:
    """Every unknown name, attribute or loaded file, with its line; a syntax error alone."""
    try:
        found = read(text)
    except TemplateProblem as err:
        return [err]
    out = [TemplateProblem(f"unknown template value {{{{ {name} }}}}{_suggest(name, NAMES)} (known: "
                           f"{', '.join(NAMES)})", line) for name, line in found.unknown]
    out += [TemplateProblem("a template cannot include, import or extend other templates", line)
            for line in found.loads]
    for use in found.uses:
        message = _use_problem(use, known)
        if message:
            out.append(TemplateProblem(message, use.line))
    return out


def _use_problem(use: Use, known: Known) -> str | None:
    shown = ".".join((use.root,) + use.chain)
    if use.chain and use.chain[0] in MAPPING_METHODS:
        return None  # vars.items(), containers.values(), ...
    if use.root == "vars" and use.chain and known.vars is not None and use.chain[0] not in known.vars:
        return (f"unknown template value {{{{ {shown} }}}}: this container has no vars.{use.chain[0]}"
                f"{_suggest(use.chain[0], known.vars)}")
    if use.root in ("lab", "container") and use.chain and use.chain[0] not in FIELDS[use.root]:
        return f"unknown template value {{{{ {shown} }}}} (known: {', '.join(f'{use.root}.{f}' for f in FIELDS[use.root])})"
    if use.root == "containers" and use.chain:
        name = use.chain[0]
        if known.containers is not None and name not in known.containers:
            return f"unknown template value {{{{ {shown} }}}}: {name!r} is not a lab container" + \
                _suggest(name, known.containers)
        if len(use.chain) > 1 and use.chain[1] not in FIELDS["containers.*"]:
            return (f"unknown template value {{{{ {shown} }}}} (a container has "
                    f"{', '.join(FIELDS['containers.*'])})")
    if use.root == "haproxy" and use.chain and known.haproxy is not None and use.chain[0] not in known.haproxy:
        return f"unknown template value {{{{ {shown} }}}}: no haproxy section for {use.chain[0]!r}" + \
            _suggest(use.chain[0], known.haproxy)
    return None


def _suggest(name: str, known: Iterable[str]) -> str:
    import difflib
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Needs:
    """Whose live addresses a template needs."""

    own: bool = False
    containers: frozenset[str] = frozenset()
    every_container: bool = False  # it uses `containers` as a whole (a loop)
    servers: bool = False  # it uses `haproxy`: the servers' addresses


def needs(text: str) -> Needs:
    """From the syntax tree: `container.address` needs its own, `containers.web1.address` web1's, a
    loop over `containers` every one, `haproxy` every server's.  A name used whole (passed on,
    iterated) is taken to need its addresses."""
    try:
        uses = read(text).uses
    except TemplateProblem:
        return Needs()
    own, every, servers = False, False, False
    named: set[str] = set()
    for use in uses:
        if use.root == "container":
            own |= not use.chain or use.chain[0] not in WITHOUT_ADDRESS
        elif use.root == "containers":
            if not use.chain or use.chain[0] in MAPPING_METHODS:
                every = True
            elif len(use.chain) == 1 or use.chain[1] not in WITHOUT_ADDRESS:
                named.add(use.chain[0])
        elif use.root == "haproxy":
            servers = True
    return Needs(own, frozenset(named), every, servers)


# --- What a template sees ------------------------------------------------------------------------

def context(lab: Lab, cname: str, addresses: Mapping[str, str]) -> dict[str, Any]:
    """The values a template of container `cname` renders with: plain data (JSON) only."""
    containers = {name: {"name": name, "address": addresses.get(name), "state": c.state, "vars": dict(c.vars)}
                  for name, c in lab.containers.items()}
    me = containers[cname]
    return {"lab": {"name": lab.lab},
            "container": {"name": cname, "address": me["address"], "state": me["state"]},
            "vars": dict(lab.containers[cname].vars), "containers": containers,
            "haproxy": {host: _haproxy_view(spec, addresses) for host, spec in lab.haproxy.items()}}


def _haproxy_view(spec: Any, addresses: Mapping[str, str]) -> dict[str, Any]:
    frontends = {name: {"bind": f.bind, "default_backend": f.default_backend,
                        "routes": [{"host": r.host, "path_prefix": r.path_prefix, "backend": r.backend}
                                   for r in f.routes]} for name, f in spec.frontends.items()}
    backends = {name: {"balance": b.balance, "servers": [
        {"name": s.label, "container": s.container, "port": s.port, "address": addresses.get(s.container)}
        for s in b.servers]} for name, b in spec.backends.items()}
    return {"frontends": frontends, "backends": backends}


# --- Rendering, in a child process -----------------------------------------------------------------

def render(text: str, values: Mapping[str, Any]) -> str:
    """One template's text; TemplateProblem if it fails or breaks a bound."""
    result = render_many([(text, values)])[0]
    if isinstance(result, TemplateProblem):
        raise result
    return result


@dataclass(frozen=True)
class Limits:
    seconds: float = RENDER_SECONDS  # each template's CPU time, by an alarm (the machine's load does not count)
    memory: int = CHILD_MEMORY  # the process's address space
    cpu_seconds: int = CHILD_CPU_SECONDS  # the process's CPU time, whatever happens to the alarms


def render_many(jobs: list[tuple[str, Mapping[str, Any]]], limits: Limits = Limits()) -> list[str | TemplateProblem]:
    """Each template's text or its problem, rendered in child processes under the bounds: a template
    that kills its process is charged with it, and the ones after it go on in a new one."""
    results: list[str | TemplateProblem] = []
    while len(results) < len(jobs):
        results += _render_in_child(jobs[len(results):], limits)
    return results


def _render_in_child(jobs: list[tuple[str, Mapping[str, Any]]], limits: Limits) -> list[str | TemplateProblem]:
    """A forked child renders (jinja is already loaded: no new interpreter to start) and writes one
    JSON line per template to a pipe; the parent reads, bounded in time, and kills it if it must."""
    environment()  # load Jinja here, once: the children inherit it
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        code = 0
        try:
            _child(jobs, limits, write_end)
        except BaseException:  # noqa: BLE001 - the parent counts what it got; nothing may escape a fork
            code = 1
        os._exit(code)
    os.close(write_end)
    output = _read_all(read_end, 5 + min(limits.cpu_seconds, limits.seconds * len(jobs)), pid)
    results: list[str | TemplateProblem] = []
    for line in output.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            break
        results.append(item["text"] if "text" in item else TemplateProblem(item["error"], item.get("line", 0)))
    if len(results) < len(jobs):  # the child died on this one
        results.append(TemplateProblem(f"rendering was stopped: it needs more than {limits.memory // 2**20} MiB"
                                       f" or {limits.seconds:g} s"))
    return results


def _read_all(fd: int, timeout: float, pid: int) -> bytes:
    """Everything the child writes before it ends or the time is up (then it is killed)."""
    import select
    import signal
    import time
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    return b"".join(chunks)


class _Timeout(BaseException):
    """The alarm: a BaseException, so that no `except Exception` on the way swallows it."""


def _child(jobs: list[tuple[str, Mapping[str, Any]]], limits: Limits, out: int) -> None:
    """The rendering process: bounded memory and time, one JSON line per template, written as each ends."""
    import resource
    import signal
    room = _address_space() + limits.memory  # a fork starts with its parent's: the bound is on top of it
    resource.setrlimit(resource.RLIMIT_AS, (room, room))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))

    def stop(signum: int, frame: Any) -> None:
        raise _Timeout

    signal.signal(signal.SIGPROF, stop)
    env = environment()
    for text, values in jobs:
        signal.setitimer(signal.ITIMER_PROF, limits.seconds)
        try:
            item: dict[str, Any] = {"text": _render_one(env, text, values)}
        except (Exception, _Timeout) as err:  # every failure is the template's: reported, never raised
            item = _failure(err, limits)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        data = (json.dumps(item) + "\n").encode()
        while data:
            data = data[os.write(out, data):]


def _address_space() -> int:
    """This process's virtual size, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _render_one(env: SandboxedEnvironment, text: str, values: Mapping[str, Any]) -> str:
    chunks, size = [], 0
    template = env.from_string(text)
    try:
        for chunk in template.generate(**values):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise _TooLarge
            chunks.append(chunk)
    except _Timeout as err:  # Jinja maps only Exceptions' lines back to the template: this one by hand
        lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == "<template>"]
        raise _Timeout(template.get_corresponding_lineno(lines[-1] or 0) if lines else 0) from None
    out = "".join(chunks)
    out.encode("utf-8")  # a lone surrogate cannot be written to a file
    return out


class _TooLarge(Exception):
    pass


def _failure(err: BaseException, limits: Limits) -> dict[str, Any]:
    from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
    line = _template_line(err)
    if isinstance(err, TemplateSyntaxError):
        return {"error": f"syntax error: {err.message}", "line": err.lineno or 0}
    if isinstance(err, _TooLarge):
        message = f"renders more than {MAX_OUTPUT} characters"
    elif isinstance(err, _Timeout):
        message = f"takes more than {limits.seconds:g} s of CPU to render"
    elif isinstance(err, MemoryError):
        message = f"needs more than {limits.memory // 2**20} MiB to render"
    elif isinstance(err, RecursionError):
        message = "recurses too deeply"
    elif isinstance(err, UnicodeEncodeError):
        message = "renders text that is not valid UTF-8 (a lone surrogate)"
    elif isinstance(err, SecurityError):
        message = f"refused by the sandbox: {err}"
    elif isinstance(err, UndefinedError):
        message = f"undefined value: {err}"
    else:
        message = f"{type(err).__name__}: {err}"
    return {"error": message[:500], "line": line}


def _template_line(err: BaseException) -> int:
    """The template line an error was raised at (Jinja rewrites tracebacks to point there)."""
    if isinstance(err, _Timeout):
        return err.args[0] if err.args else 0
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if f.filename == "<template>"]
    return (lines[-1] or 0) if lines else 0
