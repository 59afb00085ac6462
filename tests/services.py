"""Servers the tests reach: the machine's PostgreSQL, one fresh database per test.

The server is the local cluster (``$TOKENOPS_TEST_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432/
postgres``, trust auth). If nothing answers there it is started with ``pg_ctlcluster``; if it still cannot be
reached, the test ERRORs saying so (it is not skipped: the PostgreSQL ledger is a backend like any other).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ADMIN_URL = os.environ.get("TOKENOPS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "tokenops_test_"


def _start_cluster() -> str:
    """Start the local cluster; what pg_ctlcluster said."""
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        return "no cluster under /etc/postgresql to start"
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(cmd)}: {exc}"
    return f"{' '.join(cmd)}: exit {done.returncode} {done.stderr.strip()}"


def admin() -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the server's maintenance database, starting the server if it is down."""
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as first:
        started = _start_cluster()
        deadline = time.monotonic() + 30
        while True:
            try:
                return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL is not reachable at {ADMIN_URL} ({first}); tried to start it "
                                       f"({started}); still: {exc}") from None  # fmt: skip
                time.sleep(0.5)


def database_url(name: str, user: str | None = None) -> str:
    """The admin URL pointed at database ``name`` (as ``user`` if given)."""
    parts = urlsplit(ADMIN_URL)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, "/" + name, parts.query, ""))


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database with a unique name; its URL. Dropped afterwards (connections left open are cut)."""
    name = PREFIX + uuid.uuid4().hex[:16]
    with admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield database_url(name)
    finally:
        with admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def login_role() -> Iterator[str]:
    """A new role that may log in and nothing else; its name. Dropped afterwards (drop its databases first)."""
    name = "tokenops_user_" + uuid.uuid4().hex[:12]
    with admin() as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        yield name
    finally:
        with admin() as conn:
            conn.execute(f"DROP ROLE IF EXISTS {name}")
