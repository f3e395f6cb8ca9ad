"""A private PostgreSQL cluster for the tests: initdb into a fresh directory, the server on one
address (127.0.0.1 by default, or a test host's in a network namespace) and a free port, password
auth (scram-sha-256), ended by its pid. The binaries come from Debian's postgresql package, which
tests/os-packages.sh installs with the README's test command. As root (CI), the cluster runs as
the package's `postgres` user: the server refuses to run as root."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "posguard"
START_TIMEOUT_S = 30.0


def bindir() -> str | None:
    """Where postgres and initdb are (the newest installed major version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return os.path.dirname(found[-1])
    which = shutil.which("postgres")
    return os.path.dirname(os.path.realpath(which)) if which else None


def missing() -> str:
    """Why no cluster can be made here ('' when one can)."""
    if bindir() is None:
        return "no PostgreSQL server binaries (tests/os-packages.sh installs Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no `postgres` user to run the server as (Debian's package makes it)"
    return ""


class PostgresServer:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None) -> None:
        self.host, self.netns = host, netns
        self.port = port or _free_port()
        self.password = secrets.token_urlsafe(24)
        self.root = Path(tempfile.mkdtemp(prefix="posguard-pg-"))
        self.data = self.root / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.as_user = "postgres" if os.geteuid() == 0 else None
        # The password as a client reads it: a 0600 file of the test process (never in a URL).
        self.password_file = str(self.root / "client.password")
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, self.password.encode() + b"\n")
        os.close(fd)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    def _run_as(self) -> dict[str, object]:
        # Its user's group alone, not root's: and from its own directory (initdb warns otherwise).
        kw: dict[str, object] = {"cwd": str(self.root)}
        if self.as_user:
            kw.update(user=self.as_user, group=self.as_user, extra_groups=[])
        return kw

    def start(self) -> PostgresServer:
        try:
            self._start()
        except BaseException:
            self.stop()                                  # nothing left behind: no process, no directory
            raise
        return self

    def _start(self) -> None:
        binaries = bindir()
        assert binaries is not None, missing()
        self.data.mkdir(mode=0o700)
        server_password = self.root / "server.password"
        fd = os.open(server_password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # the directory is 0755
        os.write(fd, self.password.encode() + b"\n")
        os.close(fd)
        if self.as_user:
            pw = pwd.getpwnam(self.as_user)
            os.chmod(self.root, 0o755)                         # the server's user reaches its directory
            for path in (self.data, server_password):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        subprocess.run([f"{binaries}/initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                        f"--pwfile={server_password}", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120, **self._run_as())  # type: ignore[arg-type]
        server_password.unlink()
        command = [f"{binaries}/postgres", "-D", str(self.data), "-c", f"listen_addresses={self.host}",
                   "-p", str(self.port), "-c", f"unix_socket_directories={self.data}", "-c", "fsync=on",
                   "-c", "max_connections=60", "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning"]
        if self.netns:
            command = ["ip", "netns", "exec", self.netns, *command]
        with open(self.root / "server.log", "wb") as log:     # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                                         **self._run_as())  # type: ignore[arg-type]
        self._wait_up()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'server.log').read_text()[-2000:]}")
            if self.netns is None:
                with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            elif subprocess.run(["ip", "netns", "exec", self.netns, f"{bindir()}/pg_isready", "-q", "-h", self.host,
                                 "-p", str(self.port)], timeout=5).returncode == 0:
                return
            time.sleep(0.1)                               # polling a port coming up: nothing to await
        raise RuntimeError("postgres did not come up within 30 s")

    def psql(self, sql: str, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p",
                               str(self.port), "-U", USER, "-d", database, "-c", sql],
                              capture_output=True, text=True, env=env, timeout=30)
        if done.returncode:
            raise RuntimeError(done.stderr)
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)         # fast shutdown: clients cut, then exit
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
