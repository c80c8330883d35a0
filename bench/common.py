"""Plumbing shared by the benchmarks: a real gunicorn on loopback, wrk, and its figures."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
_LUA_SAFE = frozenset((string.ascii_letters + string.digits + "{}[]:,._- ").encode())
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class BenchError(RuntimeError):
    """The measurement itself went wrong (server down, wrong answers): no figure to report."""


@dataclass(frozen=True)
class Figure:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    p95_ms: float | None = None  # from the Lua `done` hook wrk() installs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(
    *,
    workers: int,
    app: str = "crm_platform.wsgi",
    settings: str = "bench.settings",
    env: dict[str, str] | None = None,
    log_path: str | None = None,
) -> Iterator[str]:
    """A real gunicorn (sync workers) on a free loopback port; yields its base URL and always stops it.

    `env` replaces this process's environment (tests use it to point a server at other stores). Its
    output goes to a temporary file (a pipe nobody reads would stall it), shown if it fails to start,
    or to `log_path` when given (kept, to read what went wrong after a run)."""
    port = free_port()
    env = {**(os.environ if env is None else env), "DJANGO_SETTINGS_MODULE": settings, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    command += ["--log-level", "warning", "--graceful-timeout", "5"]
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log:
        # Its own session, so a master that will not stop can be killed together with its workers.
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            _wait_healthy(proc, base, log)
            yield base
        finally:
            _stop(proc)


def _wait_healthy(proc: subprocess.Popen, base: str, log, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise BenchError("gunicorn exited:\n" + log.read().decode(errors="replace")[-4000:])
        with contextlib.suppress(requests.RequestException):
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"gunicorn did not answer /healthz within {timeout:.0f}s")


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package when we may; BenchError when it is missing."""
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], check=False, **quiet)
            subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, **quiet)
        path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu) and run again.")
    return path


def wrk(
    url: str,
    *,
    connections: int,
    threads: int,
    duration: float,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: str | None = None,
    paths: list[str] | None = None,
) -> Figure:
    """Load `url` with wrk and return its figure, p95 included (a Lua `done` hook prints it).

    `paths` (path and query, e.g. "/api/v1/contacts?email=a%40b.c") are requested in turn instead of
    the URL's own, so a lookup benchmark does not hit one cached row."""
    command = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if method != "GET":
            script.write(f"wrk.method = {_lua(method)}\n")
        if body is not None:
            script.write(f"wrk.body = {_lua(body)}\n")
        if paths:
            script.write("local paths = {" + ",".join(_lua(p) for p in paths) + "}\n")
            script.write("local i = 0\n")
            script.write("request = function() i = i % #paths + 1; return wrk.format(nil, paths[i]) end\n")
        script.write(
            'done = function(summary, latency, requests) io.write(string.format("p95: %d us\\n", '
            "latency:percentile(95))) end\n"
        )
        script.flush()
        command += ["-s", script.name]
        result = subprocess.run([*command, url], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return parse_wrk(result.stdout)


def wrk_interleaved(targets: dict[str, dict], *, rounds: int, duration: float, **load) -> dict[str, Figure]:
    """Load each target in turn, `rounds` times, `duration / rounds` seconds a slice, and merge each
    target's slices; on a shared machine a neighbour's burst then falls on every target alike.

    `targets` maps a name to wrk's keyword arguments (url, headers, method, body)."""
    slices: dict[str, list[Figure]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name, target in targets.items():
            slices[name].append(wrk(**target, **load, duration=duration / rounds))
    return {name: merge(figures) for name, figures in slices.items()}


def merge(figures: list[Figure]) -> Figure:
    """Slices of equal length: mean requests/s, median p50, p95 and p99 (percentiles of slices do not add up)."""
    p95s = [f.p95_ms for f in figures if f.p95_ms is not None]
    return Figure(
        rps=statistics.fmean(f.rps for f in figures),
        p50_ms=statistics.median(f.p50_ms for f in figures),
        p99_ms=statistics.median(f.p99_ms for f in figures),
        requests=sum(f.requests for f in figures),
        non_2xx=sum(f.non_2xx for f in figures),
        socket_errors=sum(f.socket_errors for f in figures),
        p95_ms=statistics.median(p95s) if len(p95s) == len(figures) else None,
    )


def _lua(text: str) -> str:
    """A Lua string literal: safe ASCII as is, every other byte as a three-digit decimal escape."""
    return '"' + "".join(chr(b) if b in _LUA_SAFE else f"\\{b:03d}" for b in text.encode()) + '"'


def parse_wrk(output: str) -> Figure:
    """Requests/s, p50 and p99 (in ms) and the error counts from `wrk --latency` output."""

    def latency(percentile: str) -> float:
        match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
        if match is None:
            raise BenchError(f"no {percentile}% latency in wrk output:\n{output}")
        return float(match[1]) * _UNIT_MS[match[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    done = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if rps is None or done is None:
        raise BenchError(f"unexpected wrk output:\n{output}")
    p95 = re.search(r"^p95: (\d+) us$", output, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Figure(
        rps=float(rps[1]),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        requests=int(done[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        p95_ms=int(p95[1]) / 1000 if p95 else None,
    )


def mark(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile by linear interpolation between the closest ranks (as numpy does)."""
    ordered = sorted(values)
    if not ordered:
        raise BenchError("no values to take a percentile of")
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def timed(call, *, repeat: int, warmup: int = 2) -> list[float]:
    """Milliseconds each of `repeat` calls took, after `warmup` calls that are not counted."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


@dataclass(frozen=True)
class Row:
    """One line of a benchmark's closing table: our figure, its ceiling where one applies, the
    target, and whether we met it (None: not judged, e.g. not measurable)."""

    name: str
    figure: str
    target: str
    passed: bool | None
    ceiling: str = ""
    ratio: str = ""


def print_table(rows: list[Row]) -> None:
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("name", "figure", "ceiling", "ratio", "target")]
    heads = ("", "figure", "ceiling", "ratio", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, heads, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + "  result")
    for r in rows:
        cells = (r.name, r.figure, r.ceiling, r.ratio, r.target)
        result = "—" if r.passed is None else mark(r.passed)
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + f"  {result}")
