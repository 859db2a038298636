"""The Ray executor: block pools made of Ray actors, on one machine or a cluster.

``Engine(store, executor=RayExecutor(...))`` runs the same flows as the local
pools, with the same batching, retries, timeouts and records; only where a
block's calls run changes. Import this module only when Ray is wanted: it
imports ``ray`` (``pip install 'docpipe-idp[ray]'``); the engine never does.

* ``process`` blocks become a pool of Ray actors per block (and params), each
  actor holding one set-up block (``setup()`` once per actor: one model load).
  A block with ``device="cuda"`` asks Ray for a GPU per actor (``"auto"`` does
  when the cluster has GPUs). Every actor asks for the CPUs it uses: ``num_cpus``
  when it is given, else the block's threads (``Manifest.threads``, one for most
  blocks), so Ray places actors where their cores are. On a cluster too small to
  hold every pool's actors at that, the pools made later ask for what the
  cluster has left, shared among their actors (down to none), so an actor never
  waits for CPUs that earlier pools hold and a flow cannot deadlock; the
  engine's budget (``--cores``) still bounds the calls that run at once. Actors
  are spread over the nodes (``SPREAD``).
* ``thread`` blocks also go to actor pools. They are pure-Python steps such as
  language detection (~10 ms a page, holding the GIL): left in the driver they
  compete with the engine loop and the record writer for one interpreter, and
  the driver is the one part of a cluster run that does not grow with nodes.
  On actors they scale out, and a timeout can kill them like any other worker.
* ``inline`` steps stay in the driver: the engine calls them directly.

An actor is a worker: it gets calls only once its ``setup()`` finished, one
call at a time. A background thread per pool waits on the outstanding calls
(``ray.wait``) and posts :class:`~docpipe.executors.Done` on the engine's event
queue. An actor that dies (process killed, node lost) fails only its call, as
``worker_died`` (the step's retry policy decides what happens next), and is
replaced; a timed-out call has its actor killed (``ray.kill``) and replaced.
Large inputs and results travel through Ray's object store, not the store.

A local cluster started here listens on 127.0.0.1 only and keeps its session
files and its auth token in one temporary folder (removed on close); nothing
is written to the home directory.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from queue import SimpleQueue
from typing import Any

from pydantic import BaseModel

from docpipe.blocks import Block
from docpipe.errors import BlockTimeout, DocpipeError, MissingDependency, WorkerDied
from docpipe.executors import WAKE, Done, ErrorInfo
from docpipe.executors.base import BlockHost, Pool, Recycle
from docpipe.executors.worker import thread_env, use_env
from docpipe.status import ErrorKind

if importlib.util.find_spec("ray") is None:  # pragma: no cover - the extra is not installed
    raise MissingDependency("the Ray executor needs Ray: pip install 'docpipe-idp[ray]'")

#: the longest temp dir a local Ray accepts: its sockets are ``<dir>/session_<date>_<time>_<us>_<pid>/
#: sockets/plasma_store`` and a Unix socket path has at most 107 bytes
MAX_TEMP_DIR = 107 - len("/session_2026-01-01_00-00-00_000000_1234567/sockets/plasma_store")
#: seconds between liveness checks of idle actors (one that died idle is replaced then)
PING_EVERY = 2.0
#: an actor that dies this many times in a row before it is ever ready breaks its pool
START_FAILURES = 3


def _ray() -> Any:
    """The ``ray`` module, imported on first use: a local cluster needs environment settings
    that Ray reads when it is imported (see :meth:`RayExecutor._start_local`)."""
    import ray

    return ray


def _died() -> tuple[type[BaseException], ...]:
    """What ``ray.get`` raises for a call whose actor (or its node) died."""
    from ray.exceptions import ObjectLostError, RayActorError, WorkerCrashedError

    return (RayActorError, ObjectLostError, WorkerCrashedError)


class _BlockActor:
    """One worker: a :class:`BlockHost` in a Ray worker process (as ``worker.main`` is)."""

    def __init__(self, block: bytes, params: bytes, threads: int, sys_path: list[str],
                 env: dict[str, str]) -> None:
        use_env(env)  # the driver's DOCPIPE_* settings (a PDF password, say), the temp folder
        os.environ.update(thread_env(threads))  # before the block's libraries are imported
        for p in reversed(sys_path):  # plugin files loaded by path in the driver import here too
            if p not in sys.path and os.path.isdir(p):
                sys.path.insert(0, p)
        from ray import cloudpickle

        self.host = BlockHost("?", lambda: (cloudpickle.loads(block), pickle.loads(params)),
                              threads)

    def ready(self) -> str:
        return f"ray:{socket.gethostname()}:{os.getpid()}"

    def call(self, inputs: list[dict[str, Any]]) -> tuple[Any, ErrorInfo | None, float, float]:
        started = time.time()
        results, error = self.host.call(inputs)
        return results, error, started, time.time()

    def teardown(self) -> None:
        self.host.teardown()


_remote_actor: Any = None


def _actor_class() -> Any:
    global _remote_actor
    if _remote_actor is None:
        _remote_actor = _ray().remote(_BlockActor)
    return _remote_actor


class _Actor:
    def __init__(self, handle: Any, ready: Any) -> None:
        self.handle = handle
        self.ready_ref = ready
        self.ready = False
        self.label = "ray:starting"
        self.call: tuple[int, float, Any] | None = None  # (call id, sent at, result ref)
        self.ping: Any = None  # an outstanding liveness check of an idle actor


class RayPool:
    """``size`` Ray actors running one block; one call per actor at a time.

    A :class:`~docpipe.executors.base.Pool`, like the local pools: finished calls are
    posted on ``events`` as :class:`Done`.
    """

    def __init__(self, cls: type[Block], params: BaseModel, size: int, threads: int,
                 events: SimpleQueue[Any], *, options: Mapping[str, Any] | None = None,
                 poll: float = 0.005, broken: ErrorInfo | None = None,
                 env: Mapping[str, str] | None = None, on_close: Callable[[], None] | None = None) -> None:
        self.name = cls.manifest.name
        self._on_close = on_close  # the executor's accounting of the CPUs the actors reserved
        self.events = events
        self.capacity = max(1, size)
        self.busy = 0
        self.poll = poll
        # the class travels pickled (by reference when importable, by value when it lives in
        # a __main__ script); the actor unpickles it after setting its thread limits
        from ray import cloudpickle

        # an actor's process is started by its node's raylet, not by this process: it gets the
        # DOCPIPE_* variables from here (as creation arguments: Ray's runtime_env would show
        # a password on the dashboard), and its thread limits
        env = {k: v for k, v in os.environ.items() if k.startswith("DOCPIPE_")} | dict(env or {})
        self._args = (cloudpickle.dumps(cls), cloudpickle.dumps(params), threads, list(sys.path), env)
        self._options = {"max_restarts": 0, "max_task_retries": 0, "scheduling_strategy": "SPREAD",
                         "runtime_env": {"env_vars": thread_env(threads)}, **(options or {})}
        self._lock = threading.Condition()
        self._closing = False
        self._start_failures = 0
        self._next_ping = time.monotonic() + PING_EVERY
        # set when actors cannot even start: every call fails at once with this error
        self.broken: ErrorInfo | None = broken
        self._pending: dict[Any, tuple[str, _Actor]] = {}  # ObjectRef -> (kind, actor)
        self._backlog: deque[tuple[int, list[dict[str, Any]]]] = deque()
        self.actors: list[_Actor] = [] if broken else [self._spawn() for _ in range(self.capacity)]
        self.spawned = len(self.actors)
        self._waiter = threading.Thread(target=self._wait_loop, name=f"docpipe-ray-{self.name}",
                                        daemon=True)
        self._waiter.start()

    def _spawn(self) -> _Actor:
        """A new actor (callers hold the lock or own the pool exclusively)."""
        handle = _actor_class().options(**self._options).remote(*self._args)
        actor = _Actor(handle, handle.ready.remote())
        self._pending[actor.ready_ref] = ("ready", actor)
        return actor

    # --- the pool interface ---------------------------------------------------------------
    def idle(self) -> int:
        """Actors that finished ``setup()`` and hold no call (all of them when the pool is
        broken, so that calls reach ``submit`` and fail with the reason)."""
        with self._lock:
            if self.broken is not None:
                return self.capacity - self.busy
            return sum(1 for a in self.actors if a.ready and a.call is None)

    def submit(self, call_id: int, inputs: list[dict[str, Any]]) -> None:
        self.busy += 1
        with self._lock:
            if self.broken is not None:
                self.events.put(Done(self, call_id, None, self.broken, "ray", time.time(), time.time()))
                return
            actor = next((a for a in self.actors if a.ready and a.call is None), None)
            if actor is None:  # the idle actor died since idle(): the next free actor takes it
                self._backlog.append((call_id, inputs))
                return
            self._send(actor, call_id, inputs)

    def _send(self, actor: _Actor, call_id: int, inputs: list[dict[str, Any]]) -> None:
        """Start a call on a free actor (callers hold the lock)."""
        try:
            ref = actor.handle.call.remote(inputs)
        except Exception as exc:  # noqa: BLE001 - inputs that cannot be serialised
            err = ErrorInfo(ErrorKind.BLOCK_ERROR, type(exc).__name__,
                            f"inputs for block '{self.name}' cannot be sent to a Ray actor: {exc}", "")
            self.events.put(Done(self, call_id, None, err, actor.label, time.time(), time.time()))
            return
        actor.call = (call_id, time.time(), ref)
        self._pending[ref] = ("call", actor)
        self._lock.notify()

    def _free(self, actor: _Actor) -> None:
        """``actor`` is ready and holds no call (callers hold the lock): a call waiting in the
        backlog goes to it."""
        if self._backlog and actor in self.actors:
            self._send(actor, *self._backlog.popleft())

    def release(self, done: Done) -> None:
        self.busy -= 1

    def kill(self, call_id: int, reason: str) -> bool:
        """Kill the actor running ``call_id`` (a timeout) and replace it; the call fails with
        ``reason``. A call that finished meanwhile keeps its result."""
        timeout = ErrorInfo.failure(BlockTimeout(reason))
        with self._lock:
            waiting = next((c for c in self._backlog if c[0] == call_id), None)
            if waiting is not None:  # never started: no actor to kill
                self._backlog.remove(waiting)
                self.events.put(Done(self, call_id, None, timeout, "ray", time.time(), time.time()))
                return True
            actor = next((a for a in self.actors if a.call and a.call[0] == call_id), None)
            if actor is None or actor.call is None:
                return True
            _, sent, ref = actor.call
            self._pending.pop(ref, None)
            actor.call = None  # a result being settled right now is dropped, not posted too
            self.actors[self.actors.index(actor)] = self._spawn()
            self.spawned += 1
            self._lock.notify()
        _ray().kill(actor.handle, no_restart=True)
        self.events.put(Done(self, call_id, None, timeout, actor.label, sent, time.time()))
        return True

    def pids(self) -> list[int]:
        """Process ids of the ready actors (on their own nodes; this machine's on a local
        cluster)."""
        with self._lock:
            return [int(a.label.rsplit(":", 1)[1]) for a in self.actors if a.ready]

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
        with self._lock:
            self._closing = True
            self._lock.notify()
            actors = list(self.actors)
        self._waiter.join(timeout=5)
        ray = _ray()
        idle = [a.handle.teardown.remote() for a in actors if a.ready and a.call is None]
        if idle:
            ray.wait(idle, num_returns=len(idle), timeout=5)
        for a in actors:
            try:
                ray.kill(a.handle, no_restart=True)
            except Exception:  # noqa: BLE001, S110 - already gone
                pass

    # --- the waiter thread ---------------------------------------------------------------
    def _wait_loop(self) -> None:
        try:
            self._wait_for_calls()
        except Exception as exc:  # noqa: BLE001 - e.g. Ray shut down under the pool
            err = ErrorInfo(ErrorKind.BLOCK_ERROR, type(exc).__name__,
                            f"the Ray pool of block '{self.name}' stopped: {_first_line(exc)}", "")
            with self._lock:
                self.broken = err
                calls = [a.call for a in self.actors if a.call is not None]
                calls += [(call_id, time.time(), None) for call_id, _ in self._backlog]
                for a in self.actors:
                    a.call = None
                self._backlog.clear()
            for call in calls:
                self.events.put(Done(self, call[0], None, err, "ray", call[1], time.time()))
            self.events.put(WAKE)

    def _wait_for_calls(self) -> None:
        ray = _ray()
        while True:
            with self._lock:
                while not self._closing and not self._pending:
                    self._lock.wait(timeout=max(0.0, self._next_ping - time.monotonic()))
                    self._ping_idle()
                if self._closing:
                    return
                self._ping_idle()
                refs = list(self._pending)
            # a call sent while this waits is picked up at the next round (``poll`` seconds)
            ready, rest = ray.wait(refs, num_returns=1, timeout=self.poll)
            if ready and rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            for ref in ready:
                self._settle(ref)

    def _ping_idle(self) -> None:
        """Every ``PING_EVERY`` s, check that idle actors are alive (callers hold the lock), so
        that one that died between calls is replaced before a call is sent to it."""
        if self._closing or time.monotonic() < self._next_ping:
            return
        self._next_ping = time.monotonic() + PING_EVERY
        for a in self.actors:
            if a.ready and a.call is None and a.ping is None:
                a.ping = a.handle.ready.remote()
                self._pending[a.ping] = ("ping", a)

    def _settle(self, ref: Any) -> None:
        with self._lock:
            entry = self._pending.pop(ref, None)
        if entry is None:
            return  # killed (timeout) meanwhile
        kind, actor = entry
        try:
            value = _ray().get(ref)
        except _died() as exc:
            self._died(actor, kind, exc)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled here
            if kind != "call":
                self._died(actor, kind, exc)
                return
            with self._lock:
                call, actor.call = actor.call, None
                self._free(actor)
            if call is not None:
                err = ErrorInfo(ErrorKind.BLOCK_ERROR, type(exc).__name__,
                                f"the result of block '{self.name}' could not be received: {exc}", "")
                self.events.put(Done(self, call[0], None, err, actor.label, call[1], time.time()))
            return
        if kind == "ping":
            with self._lock:
                actor.ping = None
            return
        if kind == "ready":
            with self._lock:
                actor.ready, actor.label = True, value
                self._start_failures = 0
                self._free(actor)
            self.events.put(WAKE)  # the engine may have inputs waiting for this actor
            return
        results, error, started, finished = value
        with self._lock:
            call, actor.call = actor.call, None
            self._free(actor)
        if call is not None:
            self.events.put(Done(self, call[0], results, error, actor.label, started, finished))

    def _died(self, actor: _Actor, kind: str, exc: BaseException) -> None:
        with self._lock:
            if self._closing or actor not in self.actors:
                return
            call, actor.call = actor.call, None
            if not actor.ready:
                self._start_failures += 1
                if self._start_failures >= START_FAILURES:
                    self.broken = ErrorInfo(
                        ErrorKind.BLOCK_ERROR, "ActorStartFailed",
                        f"Ray actors for block '{self.name}' died {START_FAILURES} times before "
                        f"they were ready (is docpipe and the block's plugin installed on every "
                        f"node?): {_first_line(exc)}", "")
                    self.actors.remove(actor)
                    for call_id, _ in self._backlog:
                        self.events.put(Done(self, call_id, None, self.broken, "ray", time.time(),
                                             time.time()))
                    self._backlog.clear()
                    self._lock.notify()
                    self.events.put(WAKE)
                    return
            self.actors[self.actors.index(actor)] = self._spawn()
            self.spawned += 1
            self._lock.notify()
        if call is not None:
            err = ErrorInfo.failure(WorkerDied(
                f"the Ray actor ({actor.label}) running block '{self.name}' died: "
                f"{_first_line(exc)}"))
            self.events.put(Done(self, call[0], None, err, actor.label, call[1], time.time()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _loopback(address: str) -> bool:
    return address.split(":")[0] in ("127.0.0.1", "localhost", "::1", "[::1]")


class RayExecutor:
    """Where the engine's pools come from when a flow runs on Ray.

    ``address``: ``None`` starts a local Ray just for this executor (``cluster_cpus``
    CPUs, default all cores; listening on 127.0.0.1 only; session files and auth token in
    ``temp_dir``, default a fresh folder under ``$RAY_TMPDIR`` or the system temp dir,
    removed on close); ``"auto"`` or ``"HOST:PORT"`` (or ``ray://HOST:PORT``) joins a
    running cluster with the caller's Ray settings (its auth token included). When Ray is
    already initialised in this process, that cluster is used as it is and left running.

    ``actors``: actors per block, an int for every block or ``{"block.name": n}``; blocks
    not named get the engine's pool size. ``num_cpus``: CPUs each actor reserves (default:
    its block's threads, as much as the cluster has left: see the module docstring).
    ``num_gpus``: GPUs each actor of a ``device="cuda"`` block reserves (default 1).
    """

    def __init__(self, address: str | None = None, *, actors: int | Mapping[str, int] | None = None,
                 num_cpus: float | None = None, num_gpus: float = 1.0,
                 cluster_cpus: int | None = None, temp_dir: str | None = None) -> None:
        if isinstance(actors, int) and actors < 1:
            raise ValueError(f"actors must be at least 1, got {actors}")
        if isinstance(actors, Mapping):
            bad = {k: v for k, v in actors.items() if not isinstance(v, int) or v < 1}
            if bad:
                raise ValueError(f"actors per block must be whole numbers >= 1: {bad}")
        if num_cpus is not None and num_cpus < 0:
            raise ValueError(f"num_cpus must be >= 0, got {num_cpus}")
        if num_gpus <= 0:
            raise ValueError(f"num_gpus must be > 0, got {num_gpus}")
        self.address = address or None
        self.actors = actors
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.cluster_cpus = cluster_cpus
        self.temp_dir = temp_dir
        self._owned = False  # this executor called ray.init (and calls ray.shutdown)
        #: CPUs the actors of the pools made so far ask for (see :meth:`_actor_cpus`)
        self.reserved_cpus = 0.0
        self._made_temp: str | None = None
        self._env_before: dict[str, str | None] = {}
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> RayExecutor:
        if self._started:
            return self
        if not self._ray_initialized():
            if self.address is None:
                self._start_local()
            else:
                self._connect()
            self._owned = True
        self._started = True
        return self

    @staticmethod
    def _ray_initialized() -> bool:
        return "ray" in sys.modules and bool(_ray().is_initialized())

    def _set_env(self, env: dict[str, str]) -> None:
        for k, v in env.items():
            self._env_before.setdefault(k, os.environ.get(k))
            os.environ[k] = v

    def _start_local(self) -> None:
        base = self.temp_dir
        if base is None:
            parent = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
            base = self._made_temp = tempfile.mkdtemp(prefix="docpipe-ray-", dir=parent)
        base = os.path.abspath(base)
        if len(base.encode()) > MAX_TEMP_DIR:
            raise DocpipeError(
                f"Ray's temp dir {base} is too long: Ray puts Unix sockets in it, and their paths "
                f"may not exceed 107 bytes, so it may have at most {MAX_TEMP_DIR}; set RAY_TMPDIR "
                "(or TMPDIR) to a short folder such as /tmp")
        os.makedirs(base, exist_ok=True)
        token = os.path.join(base, "auth_token")
        if not os.path.exists(token):
            fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        # Ray turns token auth on for a new local cluster and, without a token, writes one to
        # ~/.ray/auth_token: it finds ours instead. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is
        # Ray's switch for a loopback node address (its servers then listen on 127.0.0.1
        # only); Ray reads it when imported, so it is set before the first `import ray`.
        # No usage stats: offline by design.
        if "RAY_AUTH_MODE" not in os.environ and "ray" not in sys.modules:
            self._set_env({"RAY_AUTH_MODE": "token"})  # what Ray would choose, minus its warning
        self._set_env({"RAY_AUTH_TOKEN_PATH": token, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                       "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": base})
        ray = _ray()
        ray.init(address="local", num_cpus=self.cluster_cpus or os.cpu_count() or 1,
                 include_dashboard=False, _temp_dir=base,
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False,
                 namespace="docpipe")
        node_ip = ray.util.get_node_ip_address()
        if not _loopback(node_ip):
            ray.shutdown()
            raise DocpipeError(
                f"the local Ray started on {node_ip}, not 127.0.0.1: Ray was imported before "
                "docpipe set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; set it in the environment")

    def _connect(self) -> None:
        assert self.address is not None
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        if host and port.isdigit():  # Ray itself retries an unreachable address for minutes
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
            except OSError as exc:
                raise DocpipeError(f"cannot reach the Ray cluster at {self.address}: {exc} (is "
                                   "`ray start --head` running there?)") from exc
        self._set_env({"RAY_USAGE_STATS_ENABLED": "0"})
        if _loopback(self.address or "") and "ray" not in sys.modules:
            # a cluster on this machine's loopback (`ray start --head --node-ip-address
            # 127.0.0.1`): this driver's own node address must be the loopback one too
            self._set_env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        try:
            _ray().init(address=self.address, log_to_driver=False, configure_logging=False,
                     namespace="docpipe")
        except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; say what to do
            raise DocpipeError(
                f"cannot join the Ray cluster at {self.address}: {_first_line(exc)} (is "
                "`ray start --head` running there? With token auth, set RAY_AUTH_MODE=token "
                "and give the cluster's token in RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN or "
                "~/.ray/auth_token)") from exc

    def close(self) -> None:
        if self._owned and self._ray_initialized():
            _ray().shutdown()
        self._owned = self._started = False
        self.reserved_cpus = 0.0
        for k, v in self._env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._env_before.clear()
        if self._made_temp is not None:
            shutil.rmtree(self._made_temp, ignore_errors=True)
            self._made_temp = None

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pools -------------------------------------------------------------------------
    def make_pool(self, cls: type[Block], params: BaseModel, *, workers: int, threads: int,
                  events: SimpleQueue[Any], env: Mapping[str, str] | None = None,
                  recycle: Recycle | None = None) -> Pool:
        """An actor pool for a ``thread`` or ``process`` block (``env``: variables its actors
        set, such as their temporary folder). ``recycle`` is ignored: Ray actors are not
        replaced after a number of tasks or past a memory size (Ray's own memory monitor
        restarts workers that take too much)."""
        self.start()
        m = cls.manifest
        size = workers
        if isinstance(self.actors, int):
            size = self.actors
        elif self.actors is not None:
            size = self.actors.get(m.name, workers)
        resources = _ray().cluster_resources()
        gpus = resources.get("GPU", 0.0)
        options: dict[str, Any] = {}
        if m.device == "cuda" or (m.device == "auto" and gpus >= self.num_gpus):
            options["num_gpus"] = self.num_gpus
            if gpus < self.num_gpus:
                none = ErrorInfo(ErrorKind.BLOCK_ERROR, "NoGPU", f"block '{m.name}' needs a GPU "
                                 "(device='cuda') and the Ray cluster has none", "")
                return RayPool(cls, params, size, threads, events, broken=none)
            size = min(size, int(gpus // self.num_gpus))  # more would never start
        if self.num_cpus is not None:
            if self.num_cpus > resources.get("CPU", 0.0):  # an actor that could never start
                few = ErrorInfo(ErrorKind.BLOCK_ERROR, "NotEnoughCPUs", f"Ray actors for block "
                                f"'{m.name}' ask for {self.num_cpus:g} CPUs each and the Ray "
                                f"cluster has {resources.get('CPU', 0.0):g}", "")
                return RayPool(cls, params, size, threads, events, broken=few)
            options["num_cpus"] = self.num_cpus
            return RayPool(cls, params, size, threads, events, options=options, env=env)
        each = options["num_cpus"] = self._actor_cpus(resources.get("CPU", 0.0), size, threads)

        def release() -> None:
            self.reserved_cpus = max(0.0, self.reserved_cpus - each * size)

        return RayPool(cls, params, size, threads, events, options=options, env=env, on_close=release)

    def _actor_cpus(self, cluster: float, size: int, threads: int) -> float:
        """CPUs each of a new pool's ``size`` actors asks for: its ``threads``, or its share
        of what the live pools made before left of the cluster's ``cluster`` CPUs (Ray takes
        fractions in steps of 1/10000; none left: 0, an actor Ray places anywhere)."""
        left = max(0.0, cluster - self.reserved_cpus)
        each = min(float(threads), math.floor(left / max(1, size) * 10000) / 10000)
        self.reserved_cpus += each * size
        return each
