"""A private, throwaway PostgreSQL server for tests that make the database fail.

The machine's shared Postgres must never be stopped, so tests that need a database which goes
away, comes back, or hangs get a cluster of their own::

    with PrivatePostgres() as pg:              # initdb + start, on a free loopback port
        url = await pg.create_database("app")  # postgresql+asyncpg://…/app
        pg.stop()                              # connections are refused
        pg.start()                             # same cluster, same port, data kept
        pg.stop(mode="immediate")              # a crash: no checkpoint, clients cut off
        pg.start()                             # crash recovery, then up again
        pg.freeze()                            # SIGSTOP: connects and queries hang
        pg.thaw()                              # SIGCONT: everything carries on

On a frozen server asyncpg's `connect(timeout=…)` and query timeouts fire as usual. A timed-out
query leaves its connection waiting on a cancel request, itself stuck in the listen backlog:
after `thaw()` the connection works again, but a second timeout while frozen makes asyncpg
close it. Calls without a timeout simply complete after `thaw()`.

`close()` (or leaving the `with` block) thaws, stops and deletes the cluster; it is also
registered with `atexit` so an interrupted session does not leave a postmaster behind.
Postgres refuses to run as root, so when the tests run as root the cluster belongs to the
`postgres` OS user: initdb and pg_ctl run through `runuser`, the postmaster is started as a
child of the test process with that user's ids. The binaries are found in
`$TEST_POSTGRES_BIN`, else the newest /usr/lib/postgresql/*/bin, else on PATH. Linux only:
freezing walks /proc to find the postmaster's children.

Every method but `create_database` blocks; each takes well under a second except the first
`start()` (initdb).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import asyncpg

from devtools.embedded import free_port

StopMode = Literal["fast", "immediate"]

_POLL_SECONDS = 0.05
_COMMAND_TIMEOUT = 60.0
_LOG_TAIL_CHARS = 3000
# postmaster.pid: line 1 is the pid, line 8 the postmaster's state ("ready" once it accepts
# connections; see LOCK_FILE_LINE_PM_STATUS in miscadmin.h).
_PID_FILE_STATUS_LINE = 7


class PrivatePostgresError(RuntimeError):
    pass


def _find_bin_dir() -> Path:
    configured = os.environ.get("TEST_POSTGRES_BIN")
    if configured:
        return Path(configured)
    installed = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if installed:
        return max(installed, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PrivatePostgresError("no PostgreSQL binaries found; set TEST_POSTGRES_BIN")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields follow the parenthesised command name, which may itself hold spaces or ")".
    state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
    return state, int(ppid)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def _signal(pids: Iterable[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise PrivatePostgresError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(_POLL_SECONDS)


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries the raw bytes read so far, even under text=True.
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _is_stopped_or_gone(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is None or stat[0] in {"T", "t", "Z", "X"}


class PrivatePostgres:
    def __init__(self, *, bin_dir: Path | None = None, start_timeout: float = 30.0) -> None:
        self._bin_dir = bin_dir or _find_bin_dir()
        self._start_timeout = start_timeout
        self._root: Path | None = None
        self._port: int | None = None
        self._frozen: list[int] = []
        self._server: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._as_postgres_user = os.geteuid() == 0

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise PrivatePostgresError("the server has not been started")
        return self._port

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def log_path(self) -> Path:
        return self._require_root() / "postgres.log"

    @property
    def is_running(self) -> bool:
        return self._postmaster_pid() is not None

    @property
    def is_frozen(self) -> bool:
        return bool(self._frozen)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._closed:
            raise PrivatePostgresError("this server has been closed")
        if self._root is None:
            self._init_cluster()
        if self.is_running:
            return
        root, data = self._require_root(), self._data_dir()
        # A pid file left by a killed postmaster names a pid that may since have been reused,
        # which postgres would take for a server still running.
        (data / "postmaster.pid").unlink(missing_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # The postmaster is started as a child of this process rather than through pg_ctl or
        # runuser: pg_ctl would orphan it to PID 1, which in some containers never reaps (one
        # zombie per stop), and runuser stops itself when its child is SIGSTOPped, after which
        # it would have to be thawed too. Its own session keeps a Ctrl-C from reaching it.
        with self.log_path.open("ab") as log:
            self._server = subprocess.Popen(
                [self._bin("postgres"), "-D", str(data)],
                cwd=root,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._postgres_user(),
            )
        deadline = time.monotonic() + self._start_timeout
        while not self._is_ready():
            if self._server.poll() is not None:
                raise PrivatePostgresError(
                    f"postgres exited with code {self._server.returncode} while starting:\n"
                    f"{self._log_since(log_offset)[-_LOG_TAIL_CHARS:]}"
                )
            if time.monotonic() > deadline:
                raise PrivatePostgresError(
                    f"postgres not ready after {self._start_timeout:.0f}s:\n"
                    f"{self._log_since(log_offset)[-_LOG_TAIL_CHARS:]}"
                )
            time.sleep(_POLL_SECONDS)

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server; `immediate` is a crash (recovery runs on the next start)."""
        if mode not in ("fast", "immediate"):
            raise ValueError(f"unsupported stop mode: {mode!r}")
        # A stopped postmaster would never act on the shutdown signal.
        self.thaw()
        pid = self._postmaster_pid()
        if pid is None:
            return
        # -W: pg_ctl's own wait polls every 100 ms; waiting on the child is immediate.
        self._run([self._bin("pg_ctl"), "stop", "-W", "-m", mode, "-D", str(self._data_dir())])
        self._wait_for_exit(self._start_timeout)

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: the kernel still completes TCP handshakes
        into the listen backlog, but nothing is ever answered, as with a hung database host."""
        pid = self._postmaster_pid()
        if pid is None:
            raise PrivatePostgresError("cannot freeze: the server is not running")
        frozen = [*self._frozen]
        if pid not in frozen:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        # Until the postmaster has really stopped it may still fork a backend we would miss.
        _wait_until(lambda: _is_stopped_or_gone(pid), 10, "the postmaster to stop")
        while new := [child for child in _descendants(pid) if child not in frozen]:
            _signal(new, signal.SIGSTOP)
            frozen.extend(new)
        for child in frozen:
            _wait_until(functools.partial(_is_stopped_or_gone, child), 10, f"pid {child} to stop")
        self._frozen = frozen

    def thaw(self) -> None:
        if not self._frozen:
            return
        pid = self._postmaster_pid()
        current = _descendants(pid) if pid is not None else []
        backends = [p for p in {*self._frozen, *current} if p != pid]
        _signal(backends, signal.SIGCONT)
        if pid is not None:
            _signal([pid], signal.SIGCONT)
        self._frozen = []

    def close(self) -> None:
        """Stop the server for good and delete its files; safe to repeat, and after failures."""
        self._closed = True
        atexit.unregister(self.close)
        if self._root is None:
            return
        try:
            self.stop(mode="immediate")
        except Exception:
            # A server that will not stop must still not outlive the tests.
            pid = self._postmaster_pid()
            if pid is not None:
                _signal([*_descendants(pid), pid], signal.SIGKILL)
                with contextlib.suppress(PrivatePostgresError):
                    self._wait_for_exit(10)
        finally:
            self._frozen = []
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- databases ---------------------------------------------------------------------------

    async def create_database(self, name: str) -> str:
        """Create a database and return its SQLAlchemy asyncpg URL."""
        admin = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            quoted = '"' + name.replace('"', '""') + '"'
            await admin.execute(f"CREATE DATABASE {quoted}", timeout=30)
        finally:
            await admin.close(timeout=10)
        return self.url(name)

    # -- internals ---------------------------------------------------------------------------

    def _init_cluster(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="senso-pg-"))
        self._root = root
        atexit.register(self.close)
        socket_dir = root / "socket"
        socket_dir.mkdir()
        if self._as_postgres_user:
            owner = pwd.getpwnam("postgres")
            for path in (root, socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        data = self._data_dir()
        self._run(
            [
                self._bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        self._port = free_port()
        # Appending and overwriting keep the files' owner, so root may edit them in place.
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self._port),
            "unix_socket_directories": f"'{socket_dir}'",
            "max_connections": "100",
            "shared_buffers": "32MB",
            # No flush to disk (a machine crash is not what these tests are about), but every
            # commit is in the WAL before it returns, as in production: a crash of the
            # server (stop -m immediate) loses nothing that was committed.
            "fsync": "off",
            "full_page_writes": "off",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n# PrivatePostgres\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _environment(self) -> dict[str, str]:
        # The caller's PGHOST, PGPORT, PGDATA… belong to some other server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _postgres_user(self) -> dict[str, Any]:
        if not self._as_postgres_user:
            return {}
        # Without extra_groups the child would keep root's supplementary groups.
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def _run(self, command: Sequence[str]) -> None:
        argv = [*command]
        if self._as_postgres_user:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        try:
            result = subprocess.run(
                argv,
                # The caller's working directory may be unreadable to the postgres user.
                cwd=self._require_root(),
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PrivatePostgresError(
                f"{' '.join(argv)} timed out after {_COMMAND_TIMEOUT:.0f}s:\n"
                f"{_text(exc.stderr)}{_text(exc.stdout)}"
            ) from None
        if result.returncode != 0:
            raise PrivatePostgresError(
                f"{' '.join(argv)} failed with exit code {result.returncode}:\n"
                f"{result.stderr}{result.stdout}"
            )

    def _bin(self, program: str) -> str:
        return str(self._bin_dir / program)

    def _require_root(self) -> Path:
        if self._root is None:
            raise PrivatePostgresError("the cluster does not exist (not started, or closed)")
        return self._root

    def _data_dir(self) -> Path:
        return self._require_root() / "data"

    def _wait_for_exit(self, timeout: float) -> None:
        assert self._server is not None
        try:
            self._server.wait(timeout)
        except subprocess.TimeoutExpired:
            raise PrivatePostgresError(
                f"postgres still running {timeout:.0f}s after it was told to stop:\n"
                f"{self._log_tail()}"
            ) from None

    def _pid_file_lines(self) -> list[str]:
        if self._root is None:
            return []
        try:
            return (self._root / "data" / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    def _postmaster_pid(self) -> int | None:
        if self._server is None or self._server.poll() is not None:
            return None
        return self._server.pid

    def _is_ready(self) -> bool:
        lines = self._pid_file_lines()
        return (
            len(lines) > _PID_FILE_STATUS_LINE
            and lines[0].strip() == str(self._postmaster_pid())
            and lines[_PID_FILE_STATUS_LINE].strip() == "ready"
        )

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open(errors="replace") as log:
                log.seek(offset)
                return log.read()
        except FileNotFoundError:
            return ""

    def _log_tail(self) -> str:
        return self._log_since(0)[-_LOG_TAIL_CHARS:]
