"""The main loop of a process-pool worker (runs in a spawned child process).

The worker imports its block class by import path (plugins are not loaded
here), sets the thread limits the engine handed it *before* the block's
libraries are imported, sets the block up once in a :class:`BlockHost` and
then answers calls until the parent closes the pipe. A failed ``setup`` is not
fatal to the worker: every call gets the setup error (see :class:`BlockHost`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import NoReturn

from docpipe.executors import ErrorInfo
from docpipe.executors.base import BlockHost, Recycle
from docpipe.status import ErrorKind


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps the native thread pools of common libraries at ``threads``: the
    share of the engine's budget a worker's call holds (:mod:`docpipe.budget`; torch gets
    ``torch.set_num_threads(threads)`` once the block has loaded it, see
    :class:`~docpipe.executors.base.BlockHost`)."""
    n = str(threads)
    return {
        "OMP_NUM_THREADS": n,
        "OMP_THREAD_LIMIT": n,  # Tesseract: its default threading is ~6x slower on small machines
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "BLIS_NUM_THREADS": n,
        "VECLIB_MAXIMUM_THREADS": n,
        "NUMEXPR_NUM_THREADS": n,
        "TOKENIZERS_PARALLELISM": "false",
    }


def use_env(env: dict[str, str] | None) -> None:
    """Apply the variables the engine hands its workers (their temporary folder, see
    :meth:`docpipe.artifacts.WorkArea.temp_dir`; their memory limit) before any library
    reads them."""
    if env:
        os.environ.update(env)
        if "TMPDIR" in env:
            import tempfile

            tempfile.tempdir = env["TMPDIR"]  # in case something asked for it already
        if env.get(MEMORY_ENV):
            limit_memory(int(env[MEMORY_ENV]))


#: the variable that carries a worker's memory limit in MiB (0: none)
MEMORY_ENV = "DOCPIPE_WORKER_MEMORY_MB"


def default_memory_mb() -> int:
    """``DOCPIPE_WORKER_MEMORY_MB``, else a quarter of the machine's memory, between 1 and
    8 GiB: one file (a decompression bomb, a runaway model) fails alone, as ``out_of_memory``,
    instead of taking the machine."""
    given = os.environ.get(MEMORY_ENV)
    if given:
        return max(0, int(given))
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        return 0
    return min(8192, max(1024, total // 4))


def limit_memory(mb: int) -> None:
    """Cap this process's data segment (heap and private mappings, ``RLIMIT_DATA``) at ``mb``
    MiB: an allocation past it fails (``MemoryError``) instead of the kernel's OOM killer
    taking a process. Address space (``RLIMIT_AS``) is left alone: CUDA and torch reserve far
    more of it than they use."""
    import resource

    if mb > 0:
        limit = mb * 2**20
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _exit(host: BlockHost) -> NoReturn:
    host.teardown()
    # every result is sent and teardown ran: skip the interpreter's finalisation, which
    # takes a second with torch loaded and would hold up the command that closes us
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(conn: Connection, block_ref: str, params_pickle: bytes, threads: int,
         env: dict[str, str] | None = None, recycle: Recycle | None = None) -> None:
    use_env(env)
    os.environ.update(thread_env(threads))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us
    import pickle

    from docpipe.blocks import import_ref

    host = BlockHost(block_ref, lambda: (import_ref(block_ref), pickle.loads(params_pickle)),
                     threads)
    tasks = 0
    try:
        conn.send(("ready", os.getpid()))  # calls are only sent to ready workers
    except (BrokenPipeError, OSError):
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            _exit(host)
        call_id, inputs = msg
        started = time.time()
        results, error = host.call(inputs)
        tasks += len(inputs)
        # past a limit: this call's results go back noted, then a clean exit (the pool
        # starts a replacement when it sees this process end)
        why = recycle.reason(tasks) if recycle is not None and host.error is None else None
        try:
            conn.send((call_id, results, error, started, time.time(), why))
        except (BrokenPipeError, EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - e.g. an output that cannot be pickled
            err = ErrorInfo(ErrorKind.BLOCK_ERROR, type(exc).__name__,
                            f"block '{host.name}' returned output that cannot be sent back: {exc}", "")
            conn.send((call_id, None, err, started, time.time(), why))
        if why is not None:
            _exit(host)
