"""The only module that talks to LXD (through pylxd's low-level API node).

pylxd's managers hide N+1 lazy GETs, default to wait=False and never send ETags, so this
module uses `client.api` directly: one recursive GET per collection, every operation
waited on, If-Match on every PUT, and LXD's own keys sent back on every instance PUT.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pylxd
import requests
from pylxd import exceptions as lxd_errors

from .address import Kind
from .daemon import TITLES, Daemon
from .errors import (
    TRANSIENT_ATTEMPTS,
    LxdError,
    LxdNotFound,
    LxdUnreachable,
    StaleState,
    asked_again_while,
    interface_vanished,
)
from .kinds import OBJECT_KINDS, object_kind
from .kinds.contract import ObjectKind, Scope
from .state import ipv4_by_nic

if TYPE_CHECKING:  # the socket path never imports remote.py
    from .remote import Remote

# Each daemon's usual sockets, and the variable naming its directory (its socket is DIR/unix.socket).
SOCKETS: dict[str, tuple[str, ...]] = {
    "lxd": ("/var/lib/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket"),
    "incus": ("/var/lib/incus/unix.socket", "/run/incus/unix.socket"),
}
DIR_VARIABLES = {"lxd": "LXD_DIR", "incus": "INCUS_DIR"}
OPERATION_TIMEOUT = 300
NEVER = "0001-01-01T00:00:00Z"  # LXD's zero time: a snapshot that never expires
WAIT_SLICE = 30  # seconds of one operation wait (`Lxd.wait_slice`)
WAIT_TIMED_OUT = "context deadline exceeded"  # Incus's answer to a wait whose own timeout passed
# LXD 5.0 answers a wait at once, still "Running", for an operation on another cluster member than the one
# asked: the next wait is paced, from the first pause doubling up to the last.
POLL_PAUSES = (0.05, 1.0)
# LXD 5.0's exec sometimes fails with "Failed to retrieve PID of executing child process". Only that is
# tried again; and since the command may have started all the same (seen in the test suite), every exec
# goes through a guard that runs it once per mark, keeping its output and exit code in the container
# (/var/lib/reconciler/exec/MARK: not under /run, which systemd mounts afresh while the container boots,
# as the first exec may run): a second attempt with the same mark waits for the first and replays what
# it printed and how it exited. Records older than an hour are pruned (the mark starts with its time).
NEVER_STARTED = ("Failed to retrieve PID of executing child process",)
EXEC_ATTEMPTS = 3
# LXD 5.0 fails a whole listing with "Storage pool not found" (say) when one of its objects is deleted while
# it lists them (another lab's pool, seen in the test suite): a listing is read again, at most this often.
LISTING_ATTEMPTS = 3
# LXD 5.0 may still hold an instance for an operation whose wait has returned: its stop hook keeps the lock
# until the devices are cleaned up ('Failed to create instance start operation: Instance is busy running a
# "stop" operation', seen in the test suite; likewise an update, the applied-digest tag written right after
# a stop, and a delete right after). A write it refuses so, having done nothing, is asked again for a
# bounded time (`Lxd._written`).
BUSY = 'Instance is busy running a "'
BUSY_SECONDS = 30.0
BUSY_PAUSE = 0.5
# LXD's database gives up on a transaction it could not begin in time while the host is busy ("Failed to
# begin transaction: context deadline exceeded", seen under the parallel test suite). A GET changes nothing
# either way, so a read refused so is asked again (errors.asked_again_while); a write never is.
DB_BUSY = "Failed to begin transaction"
# LXD 5.0 reads and writes a container's files through a helper process of its own (forkfile), whose socket
# it may lose under load ("read unix @->/proc/self/fd/855/forkfile.sock: read: connection reset by peer",
# seen in the test suite). A file push overwrites the whole file and a read changes nothing: asked again.
FORKFILE_LOST = "forkfile.sock"
EXEC_GUARD = r"""
top=/var/lib/reconciler/exec; d=$top/$1; shift  # exit 199: the guard itself failed
mkdir -p "$top" || exit 199
now=$(date +%s)
for old in "$top"/*; do
    t=${old##*/}; t=${t%%-*}
    [ "$t" -lt $((now - 3600)) ] 2>/dev/null && rm -rf "$old"
done
if mkdir "$d" 2>/dev/null; then
    "$@" >"$d/out" 2>"$d/err"; echo $? >"$d/code.new"; mv "$d/code.new" "$d/code"
else
    i=0
    while [ -d "$d" ] && [ ! -e "$d/code" ] && [ "$i" -lt 600 ]; do i=$((i + 1)); sleep 1; done
    [ -e "$d/code" ] || { echo "reconciler: the first run of this command ($d) left no result" >&2; exit 199; }
fi
cat "$d/out"; cat "$d/err" >&2; exit "$(cat "$d/code")"
"""




@dataclass(frozen=True)
class Operation:
    """An LXD operation still running, and the instances it works on."""

    id: str
    description: str
    instances: tuple[str, ...]


def candidate_sockets(socket: str | None, daemon: str | None = None) -> list[str]:
    """lab.yaml's socket, else $LXD_DIR's or $INCUS_DIR's (honoured alone: never a silent fall-back),
    else the usual sockets of both; LXD's first (as before Incus), only one daemon's when lab.yaml names it."""
    if socket:
        return [socket]
    daemons = [daemon] if daemon else list(SOCKETS)
    for name in daemons:
        directory = os.environ.get(DIR_VARIABLES[name])
        if directory:
            return [os.path.join(directory, "unix.socket")]
    return [path for name in daemons for path in SOCKETS[name]]


Nested = Callable[[ObjectKind, Mapping[str, Any]], bool]  # (nested kind, parent's JSON) -> read under it?


def NO_NESTED(kind: ObjectKind, parent: Mapping[str, Any]) -> bool:
    return False  # `import` and `check` need no nested kind


@dataclass
class RawState:
    """LXD's own JSON for everything a plan needs: one GET per collection (per parent for a nested kind)."""

    objects: dict[Kind, list[dict]]  # every object kind of the registry but the project
    images: list[dict] = field(default_factory=list)

    def of(self, kind: Kind) -> list[dict]:
        return self.objects.setdefault(kind, [])

    @property
    def networks(self) -> list[dict]:
        return self.of(Kind.NETWORK)

    @property
    def profiles(self) -> list[dict]:
        return self.of(Kind.PROFILE)

    @property
    def instances(self) -> list[dict]:
        return self.of(Kind.INSTANCE)


class Lxd:
    """A connection to one LXD project, safe to share between threads (one client each)."""

    def __init__(self, socket: str | None = None, project: str = "default", remote: Remote | None = None,
                 daemon: str | None = None):
        """`daemon`: lab.yaml's `lxd.daemon` (lxd or incus), or None for the first socket found."""
        self.project = project
        self.remote = remote
        self.calls = 0
        self.read_again = 0  # reads asked again (an object went meanwhile, the database was busy): not needed
        self.wait_slice = WAIT_SLICE
        self._lock = threading.Lock()
        self._local = threading.local()
        self.socket: str | None = None
        self.where = str(remote)  # for messages
        if remote:
            self._client()  # fail early, in the caller's thread, if unreachable or not the pinned server
        else:
            self._first_present(candidate_sockets(socket, daemon), from_env=not socket)
        if daemon and self.daemon.name != daemon:
            raise LxdError(f"{self.where} is {self.daemon}, not {TITLES[daemon]}: lab.yaml says"
                           f" lxd.daemon: {daemon} (change it, or lxd.socket / lxd.remote)")

    def _first_present(self, tried: list[str], from_env: bool) -> None:
        """Connect to the first socket that exists. One that does not answer is an error, never skipped:
        a stopped (or killed) LXD must not send the lab to an Incus that happens to run beside it."""
        present = [path for path in tried if os.path.exists(path)]
        if not present:
            named = [v for v in DIR_VARIABLES.values() if os.environ.get(v)] if from_env else []
            where = f" (from ${named[0]})" if named and len(tried) == 1 else ""
            raise LxdUnreachable(f"no LXD or Incus socket at {', '.join(tried)}{where}: start one (e.g. `make lxd`"
                                 " or `make incus`), or set lxd.socket in lab.yaml, or $LXD_DIR / $INCUS_DIR")
        self.socket = self.where = present[0]
        self._client()

    def _client(self) -> pylxd.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            try:
                client = self._new_client()
            except (lxd_errors.ClientConnectionFailed, requests.RequestException, OSError) as err:
                raise self._unreachable(err) from None
            client.api.session.hooks["response"].append(self._count)
            self.calls += 1  # the GET /1.0 the constructor made before our hook existed
            self._local.client = client
        return client

    def _new_client(self) -> pylxd.Client:
        if self.remote is None:
            return pylxd.Client(endpoint=self.socket, project=self.project)
        # Our own session: pylxd's would take certificates from ~/.config/lxc by host name, not LXD_CONF's.
        client = pylxd.Client(endpoint=self.remote.url, project=self.project, session=self.remote.session(),
                              timeout=self.remote.timeout)
        if not client.trusted:
            raise LxdError(f"{self.remote} does not trust this client's certificate ({self.remote.client_cert}):"
                           f" add it there (lxc config trust add), then `lxc remote add` again")
        return client

    def _unreachable(self, err: Exception, lost: bool = False) -> LxdUnreachable:
        """LXD did not answer; or, for a remote, the server was not the pinned one (said as such)."""
        refused = self.remote.refusal(err) if self.remote else None
        if refused or lost:
            return LxdUnreachable(refused or f"lost the connection to LXD at {self.where}: {err}")
        hint = ("is core.https_address set there, and the address reachable?" if self.remote else
                "is the daemon running? (`make lxd` or `make incus` starts one)")
        return LxdUnreachable(f"LXD at {self.where} did not answer ({err}): {hint}")

    def _count(self, response, *args, **kwargs):
        with self._lock:
            self.calls += 1

    @property
    def local(self) -> bool:
        """LXD runs on this machine (its unix socket): the host's routes are its routes. Never said of a
        remote, even on 127.0.0.1: a loopback address may be a tunnel to another machine."""
        return self.remote is None

    @property
    def daemon(self) -> Daemon:
        """LXD or Incus, and its version (from the GET /1.0 every connection starts with: no extra call)."""
        return Daemon.from_host_info(self._client().host_info)

    @property
    def clustered(self) -> bool:
        """The server is a cluster member (from the GET /1.0 every connection starts with: no extra call)."""
        return bool(self._client().host_info.get("environment", {}).get("server_clustered"))

    @property
    def member(self) -> str:
        """This server's name in its cluster, or "" (not clustered)."""
        environment = self._client().host_info.get("environment", {})
        return str(environment.get("server_name") or "") if environment.get("server_clustered") else ""

    @property
    def api(self):
        return self._client().api

    # --- reading ------------------------------------------------------------------------

    def read(self, with_addresses: bool, under: Nested = NO_NESTED) -> RawState:
        """Everything in the project: one GET per kind however many objects it holds, all at once, then
        one per parent object `under` accepts for the nested kinds (a network's forwards)."""
        top = [k for k in OBJECT_KINDS if k.PARENT is None and k.SCOPE != Scope.OWN]
        return self._read_kinds(top, with_addresses, set(), True, under)

    def read_before_project(self, shared: set[Kind], shared_images: bool, under: Nested = NO_NESTED) -> RawState:
        """What a plan can read while the lab's own project does not exist yet (LXD refuses every read
        in a missing project): what is server-wide, and what the project will share with the default
        project (`shared`: networks and ACLs, profiles when it keeps none; images); nothing of its own."""
        def readable(kind: ObjectKind) -> bool:
            return kind.SCOPE == Scope.SERVER or kind.KIND in shared

        top = [k for k in OBJECT_KINDS if k.PARENT is None and readable(k)]
        return self._read_kinds(top, False, shared, shared_images, lambda k, raw: readable(k) and under(k, raw))

    def _read_kinds(self, top: list[ObjectKind], with_addresses: bool, shared: set[Kind],
                    images: bool, under: Nested) -> RawState:
        from concurrent.futures import ThreadPoolExecutor
        api = self.api  # one client's session for every GET (plain GETs: its connection pool is shared)

        def project_of(kind: ObjectKind) -> str | None:
            return "default" if kind.SCOPE == Scope.SERVER or kind.KIND in shared else None

        def get(node, project: str | None, level: int = 1) -> list[dict]:
            node = _in_project(node, project) if project else node
            for attempt in range(1, LISTING_ATTEMPTS + 1):
                try:
                    return self._call("get", node, params={"recursion": level}).json()["metadata"] or []
                except LxdNotFound:
                    if attempt == LISTING_ATTEMPTS:
                        raise
                    with self._lock:
                        self.read_again += 1
            raise AssertionError("unreachable")

        jobs = [(k, api[k.COLLECTION], project_of(k), 2 if with_addresses and k.DEEP_READ else 1) for k in top]
        with ThreadPoolExecutor(len(jobs) + 1) as pool:
            found_images = pool.submit(get, api.images, "default" if shared else None) if images else None
            found = dict(zip([j[0].KIND for j in jobs], pool.map(lambda j: get(*j[1:]), jobs)))
            nested = [(k, parent, raw["name"]) for k in OBJECT_KINDS if k.PARENT is not None and k.PARENT in found
                      for parent in [object_kind(k.PARENT)] for raw in found[parent.KIND]
                      if parent.from_lxd(raw) is not None and under(k, raw)]  # not under a host interface
            children = pool.map(lambda n: [{**c, "parent": n[2]} for c in get(
                api[n[1].COLLECTION][n[2]][n[0].COLLECTION], project_of(n[0]))], nested)  # where the child lives
            for (kind, _, _), listed in zip(nested, children):
                found.setdefault(kind.KIND, []).extend(listed)
            return RawState(found, found_images.result() if found_images else [])

    @property
    def needed_calls(self) -> int:
        """The requests sent, but for the reads asked again (another client deleted an object meanwhile, or
        LXD's database was too busy to begin a transaction)."""
        return self.calls - self.read_again

    def running_operations(self) -> list[Operation]:
        """Operations LXD is still running in this project (a killed run's create, start or exec)."""
        found = self._call("get", self.api.operations, params={"recursion": 1}).json()["metadata"] or {}
        out = []
        for op in found.get("running") or []:
            paths = (op.get("resources") or {}).get("instances") or []
            names = tuple(sorted({p.split("?")[0].rsplit("/", 1)[-1] for p in paths}))
            out.append(Operation(op["id"], op.get("description", ""), names))
        return out

    def wait_operation(self, op_id: str, timeout: int = OPERATION_TIMEOUT) -> None:
        """Wait for someone else's operation to end, however it ends."""
        deadline = time.monotonic() + timeout
        pace = _Pace()
        while time.monotonic() < deadline:
            try:
                meta = self._waited(op_id, max(1, int(deadline - time.monotonic())))
            except LxdNotFound:
                return  # already gone
            if meta.get("status") not in ("Running", "Pending", None):
                return
            pace.after_a_wait()
        raise LxdError(f"LXD operation {op_id} still running after {timeout}s")

    def get(self, kind: str, name: str) -> tuple[dict, str]:
        """One object and its ETag (a nested kind's with `parent` added, as `read` lists it)."""
        response = self._call("get", self._node(kind, name))
        found = response.json()["metadata"]
        if object_kind(Kind(kind)).PARENT is not None:
            found = {**found, "parent": name.rpartition("/")[0]}
        return found, response.headers.get("ETag", "")

    def project_exists(self) -> bool:
        if self.project == "default":
            return True
        try:
            self.api.projects[self.project].get(params={"project": "default"})
            return True
        except lxd_errors.NotFound:
            return False

    def project_info(self) -> dict | None:
        """The lab's project as LXD has it, or None while it does not exist."""
        try:
            return self.get("project", self.project)[0]
        except LxdNotFound:
            return None

    def cluster_members(self) -> list[dict]:
        """Every cluster member with its status and groups, in one GET (an LxdError if not clustered)."""
        return self._call("get", self.api.cluster.members, params={"recursion": 1}).json()["metadata"]

    def in_project(self, project: str) -> Lxd:
        """The same LXD, another project (the lock of a lab that owns its project lives in the default one)."""
        return Lxd(self.socket, project, self.remote)

    def addresses(self, name: str) -> dict[str, str]:
        return ipv4_by_nic(self._call("get", self.api.instances[name].state).json()["metadata"])

    # --- writing ------------------------------------------------------------------------

    def _collection(self, kind: str, parent: str = ""):
        """A kind's collection (`parent`: for a nested kind, the name of the object it lives under)."""
        rules = object_kind(Kind(kind))
        top = rules if rules.PARENT is None else object_kind(rules.PARENT)
        node = self.api[top.COLLECTION] if rules.PARENT is None else self.api[top.COLLECTION][parent][rules.COLLECTION]
        if rules.SCOPE == Scope.SERVER:
            node = _in_project(node, "default")  # one per server: not asked about in a project
        return node  # a nested kind in the project its own scope says (a pool's volumes: the lab's)

    def _node(self, kind: str, name: str):
        """An object; a nested kind's name is PARENT/NAME."""
        parent, _, own = name.rpartition("/") if object_kind(Kind(kind)).PARENT else ("", "", name)
        return self._collection(kind, parent)[own]

    def create(self, kind: str, body: dict, target: str | None = None, parent: str = "") -> None:
        """`target`: the cluster member (or @group) an instance is made on; `parent`: the object a nested
        kind is made under (a forward's network). Tried again only when the daemon failed on an interface
        of the host that vanished meanwhile (errors.interface_vanished) and made nothing."""
        asked_again_while(lambda err: interface_vanished(err) and not self._may_exist(kind, body, parent),
                          lambda: self._wait(self._call("post", self._collection(kind, parent), json=body, target=target)))

    def _may_exist(self, kind: str, body: dict, parent: str) -> bool:
        """The object a failed create was to make is there after all (or, nameless, cannot be looked up)."""
        if not body.get("name"):
            return True
        try:
            self._call("get", self._collection(kind, parent)[body["name"]])
            return True
        except LxdNotFound:
            return False

    def move(self, name: str, member: str) -> None:
        """Move a stopped instance to another cluster member (LXD 5.0 moves containers cold)."""
        body = {"name": name, "migration": True, "live": False}
        self._written("post", self.api.instances[name], json=body, target=member)

    def put(self, kind: str, name: str, body: dict, etag: str) -> None:
        headers = {"If-Match": etag} if etag else {}
        self._written("put", self._node(kind, name), json=body, headers=headers)

    def patch(self, kind: str, name: str, body: dict) -> None:
        self._written("patch", self._node(kind, name), json=body)

    def rename(self, kind: str, old: str, new: str) -> None:
        self._written("post", self._node(kind, old), json={"name": new})

    def delete(self, kind: str, name: str) -> None:
        """Tried again when the daemon failed on an interface of the host that vanished meanwhile (Incus
        deleting a bridge whose last container's veth was going away); gone by then is done."""
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                self._written("delete", self._node(kind, name))
                return
            except LxdNotFound:
                if attempt == 1:
                    raise
                return  # the failed attempt deleted it after all
            except LxdError as err:
                if attempt == TRANSIENT_ATTEMPTS or not interface_vanished(err):
                    raise

    def set_state(self, name: str, action: str, force: bool = False, timeout: int = 30) -> None:
        body = {"action": action, "force": force, "timeout": timeout}
        self._written("put", self.api.instances[name].state, json=body)

    def push_file(self, name: str, path: str, data: bytes, mode: str, uid: int, gid: int,
                  directory: bool = False) -> None:
        headers = {"X-LXD-mode": mode, "X-LXD-uid": str(uid), "X-LXD-gid": str(gid),
                   "X-LXD-type": "directory" if directory else "file", "X-LXD-write": "overwrite"}
        asked_again_while(FORKFILE_LOST, lambda: self._call("post", self.api.instances[name].files,
                          params={"path": path}, data=b"" if directory else data, headers=headers))

    def read_file(self, name: str, path: str) -> bytes | None:
        """A file's bytes, or None if it is not there; works on a stopped instance (no exec)."""
        try:
            return asked_again_while(FORKFILE_LOST, lambda: self._call(
                "get", self.api.instances[name].files, params={"path": path}, is_api=False).content)
        except LxdNotFound:
            return None

    def execute(self, name: str, argv: list[str], timeout: int = 600) -> tuple[int, str, str]:
        """Run argv in the instance; (exit code, stdout, stderr).  No websockets: output is recorded.
        Tried again only when LXD says the command never started (NEVER_STARTED), never otherwise."""
        guarded = guard(argv, f"{int(time.time())}-{uuid.uuid4().hex}")
        for attempt in range(1, EXEC_ATTEMPTS + 1):
            try:
                return self.execute_once(name, guarded, timeout)
            except LxdError as err:
                if attempt == EXEC_ATTEMPTS or not never_started(err):
                    raise
        raise AssertionError("unreachable")

    def execute_once(self, name: str, argv: list[str], timeout: int = 600) -> tuple[int, str, str]:
        """One attempt, as it is (`execute` guards and retries)."""
        body = {"command": argv, "record-output": True, "interactive": False,
                "wait-for-websocket": False, "environment": {"LANG": "C.UTF-8"}}
        meta = self._wait(self._call("post", self.api.instances[name].exec, json=body), timeout)
        outputs = (meta.get("metadata") or {}).get("output") or {}
        stdout, stderr = (self._log(name, outputs.get(fd)) for fd in ("1", "2"))
        return int((meta.get("metadata") or {}).get("return", -1)), stdout, stderr

    def _log(self, name: str, url: str | None) -> str:
        if not url:
            return ""
        node = self._output_node(name, url)
        text = self._call("get", node, is_api=False).content.decode("utf-8", "replace")
        self._call("delete", node)
        return text

    # --- snapshots (checkpoints) ---------------------------------------------------------

    def listing(self, kind: str) -> list[dict]:
        """Every object of one top-level kind, in one GET."""
        return self._call("get", self._collection(kind), params={"recursion": 1}).json()["metadata"] or []

    def snapshots(self, name: str, kind: str = "instance") -> list[dict]:
        """An instance's (or another kind's, `kind` its word: a custom volume's, name POOL/NAME) snapshots, in one GET."""
        return self._call("get", self._node(kind, name).snapshots, params={"recursion": 1}).json()["metadata"] or []

    def snapshot(self, name: str, snapshot: str, kind: str = "instance") -> None:
        """A stateless snapshot of the instance (or volume) as it stands, running or stopped, that never expires
        (LXD would otherwise give it the expiry of the instance's `snapshots.expiry`)."""
        body = {"name": snapshot, "expires_at": NEVER} | ({"stateful": False} if kind == "instance" else {})
        self._written("post", self._node(kind, name).snapshots, json=body)

    def delete_snapshot(self, name: str, snapshot: str, kind: str = "instance") -> None:
        self._written("delete", self._node(kind, name).snapshots[snapshot])

    def restore(self, name: str, snapshot: str, kind: str = "instance") -> None:
        """The instance back to its snapshot: root filesystem and its own configuration (LXD stops a running
        one for the restore and starts it again). A volume: its data (LXD 5.0 refuses while a running
        instance mounts it)."""
        self._written("put", self._node(kind, name), json={"restore": snapshot})

    def snapshot_usage(self, name: str, snapshot: str, kind: str) -> int | None:
        """Bytes a snapshot of a nested object uses (a custom volume's: `kind` its word, name POOL/NAME), where
        its pool's driver says (a dir pool does not): else None."""
        parent, _, own = name.rpartition("/")
        try:
            state = self._call("get", self._collection(kind, parent)[f"{own}%2F{snapshot}"].state).json()
        except LxdError:
            return None
        used = ((state.get("metadata") or {}).get("usage") or {}).get("used")
        return used if isinstance(used, int) and used >= 0 else None

    def _output_node(self, name: str, url: str):
        """Where the daemon says it recorded an exec's output: LXD 5.0 under the instance's logs
        (`logs/exec_ID.stdout`), Incus under `logs/exec-output/`; both give the path in the operation."""
        path = url.split("?", 1)[0]
        logs = f"/1.0/instances/{name}/logs/"
        if not path.startswith(logs) or ".." in path:
            raise LxdError(f"{self.where} recorded the output of an exec in instance {name} at {url!r},"
                           f" not under {logs}")
        node = self.api.instances[name].logs
        for part in path[len(logs):].split("/"):
            node = node[part]
        return node

    # --- plumbing -----------------------------------------------------------------------

    def _call(self, verb: str, node, **kwargs):
        if verb != "get":
            return self._call_once(verb, node, **kwargs)

        def again() -> None:
            with self._lock:
                self.read_again += 1
        return asked_again_while(DB_BUSY, lambda: self._call_once(verb, node, **kwargs), again)

    def _call_once(self, verb: str, node, **kwargs):
        try:
            return getattr(node, verb)(**kwargs)
        except lxd_errors.LXDAPIException as err:
            if err.response.status_code == 412:
                raise StaleState("changed since it was read (ETag mismatch): run plan again") from None
            if err.response.status_code == 404:
                raise LxdNotFound(_message(err)) from None
            raise LxdError(_message(err)) from None
        except requests.RequestException as err:
            raise self._unreachable(err, lost=True) from None

    def _written(self, verb: str, node, **kwargs) -> dict:
        """A write and the wait for its operation, asked again while LXD refuses it as busy with the
        instance's previous operation (`asked_until_not_busy`): LXD takes the instance's lock first, so a
        refusal changed nothing, whether the request or its operation says so."""
        return asked_until_not_busy(lambda: self._wait(self._call(verb, node, **kwargs)))

    def _wait(self, response, timeout: int = OPERATION_TIMEOUT) -> dict:
        """Wait for the operation a response started; raise with LXD's message if it failed."""
        data = response.json()
        if data.get("type") != "async":
            return data.get("metadata") or {}
        op_id = data["operation"].rsplit("/", 1)[-1]
        deadline = time.monotonic() + timeout
        pace = _Pace()
        while True:
            meta = self._waited(op_id, max(1, int(deadline - time.monotonic())))
            if meta["status"] == "Success":
                return meta
            if meta["status"] in ("Failure", "Cancelled"):
                raise LxdError(meta.get("err") or meta["status"])
            if time.monotonic() > deadline:
                raise LxdError(f"operation {op_id} still {meta['status']} after {timeout}s")
            pace.after_a_wait()


    def _waited(self, op_id: str, left: int) -> dict:
        """One wait of at most WAIT_SLICE seconds: the operation, ended or not. When the wait's own timeout
        passes first, LXD 5.0 answers with the operation still running, Incus 6.0 with an error
        ("context deadline exceeded"): both mean "still running"."""
        try:
            return self._call("get", self.api.operations[op_id].wait,
                              params={"timeout": min(left, self.wait_slice)}).json()["metadata"] or {}
        except LxdNotFound:
            raise
        except LxdError as err:
            if str(err) != WAIT_TIMED_OUT:
                raise
            return {"status": "Running"}


class _Pace:
    """Waits that return at once (an operation on another cluster member) are followed by a pause,
    growing: the polling stays a few requests a second, however long the operation runs."""

    def __init__(self) -> None:
        self.pause, self.asked = POLL_PAUSES[0], time.monotonic()

    def after_a_wait(self) -> None:
        if time.monotonic() - self.asked < POLL_PAUSES[1]:
            time.sleep(self.pause)
            self.pause = min(self.pause * 2, POLL_PAUSES[1])
        self.asked = time.monotonic()


def _in_project(node, project: str):
    """The same API node, asking about another project (pylxd sets ?project= from the node)."""
    return node.__class__(node._api_endpoint, session=node.session, timeout=node._timeout, project=project)


def _message(err: lxd_errors.LXDAPIException) -> str:
    try:
        data = err.response.json()
        meta = data.get("metadata")
        if isinstance(meta, dict) and meta.get("err"):
            return meta["err"]
        return data.get("error") or str(err)
    except ValueError:
        return str(err) or f"HTTP {err.response.status_code}"


def guard(argv: list[str], mark: str) -> list[str]:
    """argv run through EXEC_GUARD under `mark` (`TIME-ID`): it runs at most once per mark, a second
    attempt replaying the first's output and exit code (values stay arguments)."""
    return ["sh", "-c", EXEC_GUARD, "reconciler-exec", mark, *argv]


def asked_until_not_busy(ask: Callable[[], Any], seconds: float = BUSY_SECONDS,
                         pause: Callable[[float], None] = time.sleep) -> Any:
    """`ask()` again while LXD refuses it as busy with the instance's previous operation (nothing was
    started), for at most `seconds`; any other failure at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ask()
        except LxdError as err:
            if BUSY not in str(err) or time.monotonic() >= deadline:
                raise
        pause(BUSY_PAUSE)


def never_started(err: LxdError) -> bool:
    """LXD says the command was never started: the one exec failure it is safe to try again."""
    return any(text in str(err) for text in NEVER_STARTED)


def wait_for_address(lxd: Lxd, name: str, nic: str, timeout: float) -> str:
    """Poll one NIC of one instance until it has a global IPv4; a clear error after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found = lxd.addresses(name)
        if nic in found:
            return found[nic]
        if time.monotonic() > deadline:
            raise LxdError(f"instance {name}: no IPv4 address on {nic} after {timeout:.0f}s"
                           f" (addresses seen: {found or 'none'}); is its DHCP server reachable?")
        time.sleep(0.5)
