"""A private, throw-away PostgreSQL server for the tests: real, local, no mocks.

:func:`postgres_server` finds the server binaries (``/usr/lib/postgresql/*/bin``,
newest first, else ``initdb`` on ``PATH``), runs ``initdb`` into a new temporary
folder (as the ``postgres`` system user when the tests run as root, since
PostgreSQL refuses to run as root), starts the server with ``pg_ctl`` listening
only on 127.0.0.1 on a free port (its Unix socket inside the folder), creates
the database ``docpipe_test`` and yields its SQLAlchemy URL
(``postgresql+psycopg://docpipe@127.0.0.1:PORT/docpipe_test``). On exit it stops
the server (``pg_ctl stop -m fast``) and removes the folder.

The server trusts local connections and runs with ``fsync=off``: it is for
tests only. ``DOCPIPE_TEST_PG_URL`` names an existing database to use instead
(one the tests may wipe). conftest.py exposes this as the session fixture
``pg_url``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SUPERUSER = "docpipe"
DATABASE = "docpipe_test"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found in /usr/lib/postgresql/*/bin or on PATH. "
    "Install them with `sudo apt-get install -y postgresql` (the package is listed in "
    "scripts/system-packages.txt, which `make setup` installs), or set DOCPIPE_TEST_PG_URL to a "
    "database the tests may wipe."
)


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest installed major version), or ``None``."""

    def major(path: str) -> int:
        version = Path(path).parent.parent.name
        return int(version) if version.isdigit() else 0

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major, reverse=True):
        if Path(initdb).with_name("pg_ctl").exists():
            return Path(initdb).parent
    found = shutil.which("initdb")
    if found and Path(found).with_name("pg_ctl").exists():
        return Path(found).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` system user when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_quote(c) for c in cmd)]


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def _run(cmd: list[str], what: str, timeout: float = 60) -> None:
    done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout}{done.stderr}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a private PostgreSQL server, yield the URL of its empty test database, stop it."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="docpipe-pg-"))
    data, log = root / "data", root / "server.log"
    pg_ctl = str(bindir / "pg_ctl")
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            "initdb",
        )
        for attempt in range(5):  # a free port can be taken before the server binds it
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
            )
            try:
                _run([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"],
                     "pg_ctl start", timeout=90)
                started = True
                break
            except RuntimeError:
                if attempt == 4:
                    raise RuntimeError(f"PostgreSQL did not start; its log:\n{_tail(log)}") from None
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        yield f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            _run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], "pg_ctl stop")
        shutil.rmtree(root, ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wipe(url: str) -> None:
    """Drop every table of the test database (its ``public`` schema), so a test starts empty.

    Connections a failed test left open are ended first (they would hold locks).
    """
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            conn.exec_driver_sql("SET LOCAL lock_timeout = '20s'")
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()
