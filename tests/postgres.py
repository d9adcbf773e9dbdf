"""A PostgreSQL server of a test's own: initdb in a temporary folder, a role with a password, a port of its own,
started and stopped with pg_ctl (which signals the pid in the folder's postmaster.pid: the server this started).

The binaries are Debian's (/usr/lib/postgresql/N/bin, which .ci/run installs) or on PATH. Without them the tests
that need a server skip with one line, unless MNIST20K_POSTGRES_TESTS=required, as .ci/run sets, fails them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROLE = "mnist20k"


def binary(name: str) -> str | None:
    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    return str(debian[-1]) if debian else shutil.which(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, folder: Path, port: int, password: str, as_user):
        self.folder, self.port, self.password, self._as_user = folder, port, password, as_user

    def url(self, database: str, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql+psycopg://{ROLE}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database: no table of Optuna's in it yet."""
        import psycopg

        name = f"study_{secrets.token_hex(4)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=ROLE, password=self.password,
                             dbname="postgres", autocommit=True, connect_timeout=10) as db:  # fmt: skip
            db.execute(f"CREATE DATABASE {name}")
        return name

    def pg_ctl(self, *words: str) -> None:
        command = [binary("pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "server.log"),
                   "-w", "-t", "60", *words]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=90, preexec_fn=self._as_user)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-o", options, "start")

    def restart(self, down_s: float = 3.0) -> None:
        """Every connection cut, as a database restarted by its operator (fast: sessions are ended, not waited on),
        and out of reach for `down_s` seconds, long enough for every worker and its parent to find it gone."""
        self.pg_ctl("-m", "fast", "stop")
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        self.pg_ctl("-m", "immediate", "stop")


@contextlib.contextmanager
def server() -> Iterator[Server]:
    initdb = binary("initdb")
    if initdb is None or binary("pg_ctl") is None:
        if os.environ.get("MNIST20K_POSTGRES_TESTS") == "required":
            pytest.fail("MNIST20K_POSTGRES_TESTS=required, but PostgreSQL's initdb and pg_ctl are not installed")
        pytest.skip("PostgreSQL's initdb is not installed (.ci/run installs Debian's postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'mnist20k[postgres]'")
    folder = Path(tempfile.mkdtemp(prefix="mnist20k-pg-"))  # short: the socket's path has a length limit
    as_user = None
    if os.geteuid() == 0:  # initdb refuses root: the server runs as Debian's postgres user
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)

        def as_user() -> None:
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)

    password = secrets.token_hex(12)
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if as_user is not None:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    subprocess.run([initdb, "-D", str(folder / "data"), "-U", ROLE, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=180,
                   preexec_fn=as_user)  # fmt: skip
    pwfile.unlink()
    db = Server(folder, free_port(), password, as_user)
    db.start()
    try:
        yield db
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            db.stop()
        shutil.rmtree(folder, ignore_errors=True)
