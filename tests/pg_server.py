"""A throwaway PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary folder, a free
localhost port, password authentication (so URLs carry a password that must never be printed).

PostgreSQL refuses to run as root; as root the cluster belongs to the `postgres` system user and every
command runs through `runuser`. Tests that need it skip, saying why, only when no binaries exist.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
USER, PASSWORD, DB = "workbench", "s3cret-Pw", "studies"


def pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: $WORKBENCH_PG_BIN, Debian's newest, or the PATH."""
    candidates = [Path(os.environ["WORKBENCH_PG_BIN"])] if os.environ.get("WORKBENCH_PG_BIN") else []
    candidates += PG_BIN_DIRS
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl")).parent)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DB}"

    def _cmd(self, args: list[str]) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + args

    def _run(self, args: list[str], timeout: int = 60) -> None:
        r = subprocess.run(self._cmd(args), capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"], timeout=120)
        # Small and quick: no fsync (a test cluster: the OS keeps what was written when the server, not the
        # machine, goes down), a socket folder of our own, localhost TCP only. synchronous_commit stays on, as
        # on a real server: with it off, `pg_ctl stop -m immediate` (a crash) drops the last commits the
        # server had already acknowledged, and the restart test then finds a finished claim still running.
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = "
                    f"'{self.root}'\nfsync = off\nsynchronous_commit = on\nfull_page_writes = off\n"
                    "max_connections = 100\nshared_buffers = 16MB\n")

    def start(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t",
                   "60", "start"], timeout=90)

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=90)

    def create_db(self) -> None:
        deadline = time.time() + 30
        while True:
            try:
                import psycopg

                with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                                     dbname="postgres", autocommit=True) as con:
                    con.execute(f"CREATE DATABASE {DB}")
                return
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)


def start_server(root: Path) -> PgServer:
    bindir = pg_bin()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL binaries (initdb, pg_ctl)")
    server = PgServer(bindir, root, _free_port())
    server.init()
    server.start()
    server.create_db()
    return server
