"""CPU time spent by groups of processes, read from /proc: what a request costs in the web
workers and in the PostgreSQL backends serving them, and what the workers spend meanwhile.

On this 2-core machine throughput swings with everything else that runs; the CPU a request
takes moves far less, so a benchmark prints it beside its rates (info) to show where the time
goes and whether a change made a request cheaper. Linux only; where /proc or the database
cannot tell, a group is empty and its figure reads 0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection

_TICKS = os.sysconf("SC_CLK_TCK")
_SOCKET = re.compile(r"socket:\[(\d+)\]")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> set[int]:
    """The direct children of a process (a gunicorn master's workers)."""
    found = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as file:
                found |= {int(child) for child in file.read().split()}
    except OSError:
        pass
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                match = _SOCKET.match(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
            if match:
                inodes.add(match.group(1))
    except OSError:
        pass
    return inodes


def _tcp_sockets() -> list[tuple[int, str, str]]:
    """(local port, state, inode) of every TCP socket on the machine."""
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                next(file)
                for line in file:
                    parts = line.split()
                    sockets.append((int(parts[1].rsplit(":", 1)[1], 16), parts[3], parts[9]))
        except OSError:
            continue
    return sockets


def listener(port: int) -> int | None:
    """The process listening on this local TCP port (found among all processes' sockets)."""
    inodes = {inode for local, state, inode in _tcp_sockets() if local == port and state == "0A"}
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _socket_inodes(int(entry)) & inodes:
            return int(entry)
    return None


def backends_of(pids: Iterable[int]) -> set[int]:
    """The PostgreSQL backends whose clients are these processes (by the clients' local ports)."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids)) if pids else set()
    ports = {local for local, _, inode in _tcp_sockets() if inode in inodes}
    if not ports:
        return set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # inside a transaction, read afresh
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) AND pid <> pg_backend_pid()", [list(ports)]
        )
        return {pid for (pid,) in cursor.fetchall()}


@dataclass
class Meter:
    """CPU seconds per group over a stretch of time; each group's database backends ("<name>
    db") are counted too. Connections come and go (CONN_MAX_AGE): a backend found only at the
    end counts whole (it started meanwhile), one gone by the end counts nothing (its last
    seconds are lost: a slight undercount)."""

    groups: dict[str, set[int]]
    _started: dict[str, dict[int, float]] = field(default_factory=dict)

    def _members(self) -> dict[str, set[int]]:
        members = {}
        for name, pids in self.groups.items():
            members[name] = set(pids)
            members[f"{name} db"] = backends_of(pids)
        return members

    def start(self) -> None:
        self._started = {
            name: {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}
            for name, pids in self._members().items()
        }

    def stop(self) -> dict[str, float]:
        spent = {}
        for name, pids in self._members().items():
            started = self._started.get(name, {})
            total = 0.0
            for pid in pids | set(started):
                now = cpu_seconds(pid)
                if now is not None:
                    total += now - started.get(pid, 0.0)
            spent[name] = total
        return spent


@dataclass
class Cost:
    """CPU seconds per group, summed over slices, and the requests (or events) they served."""

    seconds: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, seconds: dict[str, float], count: int) -> None:
        for name, value in seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + value
        self.count += count

    def per(self, name: str, unit: int = 1) -> float:
        """Milliseconds of CPU per `unit` requests (or events) in this group."""
        return self.seconds.get(name, 0.0) * 1000 * unit / self.count if self.count else 0.0
