"""The CPU time of the processes a load figure runs across, read from Linux's /proc: the
workers', Postgres's and the SQS emulator's, so that what is ours shows apart from what the
emulator costs (moto reads every message of a queue on each call; real SQS is another host).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (which may hold spaces): the state
    first, so utime is [11], stime [12], cutime [13], cstime [14]. None once it has exited."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _comm(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def _seconds(fields: list[str], *at: int) -> float:
    """The clock-tick fields `at` of a `_stat`, added up, in seconds."""
    return sum(int(fields[i]) for i in at) / TICKS


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (0 once it has exited)."""
    fields = _stat(pid)
    return 0.0 if fields is None else _seconds(fields, 11, 12)


def postgres_cpu_seconds() -> float | None:
    """CPU seconds of this machine's Postgres: every postgres process's, and those of the
    backends that have ended, which the postmaster has reaped. None when it runs elsewhere."""
    pids = [pid for pid in _pids() if _comm(pid) == "postgres"]
    if not pids:
        return None
    total = 0.0
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            continue
        total += _seconds(fields, 11, 12)
        # The postmaster is the one whose parent is not a postgres process.
        if _comm(int(fields[1])) != "postgres":
            total += _seconds(fields, 13, 14)
    return total


def server_pid(endpoint: str, module: str) -> int | None:
    """The process serving `endpoint` as `python -m <module> … -p <port>` (moto's server)."""
    port = str(urlsplit(endpoint).port)
    for pid in _pids():
        try:
            arguments = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [argument.decode(errors="replace") for argument in arguments]
        if module in words and "-p" in words and port in words:
            return pid
    return None


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds so far: the workers' together, Postgres's, the emulator's, this process's."""

    workers: float
    postgres: float | None
    emulator: float | None
    here: float

    @classmethod
    def take(cls, workers: list[int], emulator: int | None) -> CpuSnapshot:
        return cls(
            workers=sum(cpu_seconds(pid) for pid in workers),
            postgres=postgres_cpu_seconds(),
            emulator=None if emulator is None else cpu_seconds(emulator),
            here=cpu_seconds(os.getpid()),
        )

    def per_run_ms(self, since: CpuSnapshot, runs: int) -> dict[str, float]:
        """Milliseconds of CPU per run between `since` and this snapshot, by process."""

        def per_run(now: float | None, then: float | None) -> float | None:
            if now is None or then is None or runs <= 0:
                return None
            return (now - then) / runs * 1000

        spent = {
            "workers": per_run(self.workers, since.workers),
            "postgres": per_run(self.postgres, since.postgres),
            "emulator": per_run(self.emulator, since.emulator),
            "here": per_run(self.here, since.here),
        }
        return {name: ms for name, ms in spent.items() if ms is not None}
