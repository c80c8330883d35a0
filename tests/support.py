"""Helpers for tests: servers of their own, gunicorn, a worker (real processes), and query plans."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.common import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON_BIN = Path(sys.executable).parent


def race(count: int, work) -> list:
    """Run work(n) for n in range(count), each in a thread of its own with its own database
    connection (closed after), all released together by a barrier. Returns the results in n
    order; once every thread has ended, raises the first exception any of them raised."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            results[n] = work(n)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def other_connection(**kwargs):
    """A psycopg connection of its own to the test database (another session: a migration
    running beside the web workers, a transaction holding locks), for `with`."""
    import psycopg
    from django.db import connection

    db = connection.settings_dict
    params = {
        "dbname": db["NAME"],
        "user": db["USER"],
        "password": db["PASSWORD"],
        "host": db["HOST"],
        "port": db["PORT"],
    }
    return psycopg.connect(**params, **kwargs)


def waiting_on_locks(count: int = 1) -> None:
    """Until `count` sessions of the test database wait on a lock."""
    with other_connection(autocommit=True) as watcher:
        wait_until(
            lambda: (
                watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()[0]
                >= count
            )
        )


class InThread:
    """work() started at once in a thread of its own (its own database connection, closed
    after); outcome() waits for it and returns what it returned (raises what it raised)."""

    def __init__(self, work):
        import threading

        self.work, self.result, self.error = work, None, None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        from django.db import connection

        try:
            self.result = self.work()
        except BaseException as exc:  # re-raised by outcome(), in the test's thread
            self.error = exc
        finally:
            connection.close()

    def outcome(self, timeout: float = 30):
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "still waiting"
        if self.error is not None:
            raise self.error
        return self.result


def behind_a_lock(statement: str, params: list, work):
    """Run `statement` in another session's open transaction, then `work()` in a thread of its
    own (its own database connection, closed after); once some session waits on a lock, commit
    the statement. Returns what work returned (raises what it raised): a change racing work's,
    landing while work waits for the row."""

    with other_connection() as holder:
        holder.execute(statement, params)
        racer = InThread(work)
        waiting_on_locks()
        holder.commit()
        return racer.outcome(timeout=20)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


class OwnRedis:
    """A Redis server of the test's own, so a test may stop it without disturbing others."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is installed by scripts/services"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _answers(self.port))
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


def django_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process of the project (settings read .data/services.env)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env.update(
        {
            "DJANGO_DEBUG": "true",
            "DJANGO_ENV_FILE": "",  # a developer's .env must not change what a test sees
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "crm_platform.settings",
        }
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def celery_worker(*, broker_url: str, result_backend: str | None = None, queues: str | None = None, **env: str):
    """A real Celery worker (solo pool) on a queue of its own, against the test database and the
    given broker; yields the queue's name. `queues` (comma-separated) makes it consume those
    instead, as `make run`'s worker does: only on a broker of the test's own (OwnRedis). Extra
    keyword arguments go to its environment."""
    import uuid

    from django.conf import settings

    queue = queues or f"test-{uuid.uuid4().hex[:8]}"
    db = settings.DATABASES["default"]
    child_env = django_env(
        DATABASE_URL=f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        CELERY_BROKER_URL=broker_url,
        CELERY_RESULT_BACKEND=result_backend or broker_url,
        **env,
    )
    proc = subprocess.Popen(
        [str(PYTHON_BIN / "celery"), "-A", "crm_platform", "worker", "-Q", queue, "--pool", "solo", "-l", "WARNING"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield queue
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def index_plans(statements) -> list[dict]:
    """The plan of each statement (SQL as Django captured it, or a QuerySet) with sequential
    scans disabled, asserting each reads its rows through index conditions: no sequential scan,
    and no full index walked whole (a scan without an Index Cond, which a planner denied
    sequential scans may pick instead); a partial index may be read whole, its predicate being
    the condition. Returns the plans (EXPLAIN's JSON). Call inside the test's transaction (SET
    LOCAL)."""
    from django.db import connection

    plans = []
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for statement in statements:
            plan = _explained(cursor, statement)
            for node in _plan_nodes(plan):
                kind = node["Node Type"]
                assert kind != "Seq Scan", plan
                if kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") and "Index Cond" not in node:
                    cursor.execute(
                        "SELECT indpred IS NOT NULL FROM pg_index WHERE indexrelid = %s::regclass", [node["Index Name"]]
                    )
                    assert cursor.fetchone()[0], f"{node['Index Name']} read whole: {plan}"
            plans.append(plan)
    return plans


def _explained(cursor, statement) -> dict:
    """EXPLAIN's JSON plan (its top node) of SQL as Django captured it, or of a QuerySet."""
    if isinstance(statement, str):
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement)
        return cursor.fetchone()[0][0]["Plan"]
    return json.loads(statement.explain(format="json"))[0]["Plan"]


def index_names(plan: dict) -> set[str]:
    return {node["Index Name"] for node in _plan_nodes(plan) if "Index Name" in node}


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def list_plan(statement) -> dict:
    """The plan of a changelist's query (SQL as Django captured it, or a QuerySet) with sequential
    scans and sorts disabled, asserting that indexes both find its rows and give their order, as
    they must for a page of a big table: no sequential scan; no Sort (an Incremental Sort, the
    order's leading key read from an index and ties sorted, may stay); no scan that tests each
    row it reads against a condition (a Filter) without an index condition that found those
    rows. Returns the plan (EXPLAIN's JSON). Call inside the test's transaction (SET LOCAL)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        plan = _explained(cursor, statement)
    for node in _plan_nodes(plan):
        kind = node["Node Type"]
        assert kind not in ("Seq Scan", "Sort"), plan
        if kind.endswith("Scan") and "Filter" in node:
            assert "Index Cond" in node or "Recheck Cond" in node, f"{kind} filtering every row it reads: {plan}"
    return plan


def list_queries(captured, table: str) -> list[str]:
    """The SELECTs a changelist made of `table` (its page and its count), from a
    CaptureQueriesContext."""
    quoted = f'FROM "{table}"'
    return [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT") and quoted in q["sql"]]


def search_plan(statement) -> dict:
    """The plan of a search (SQL as Django captured it) with sequential and plain index scans
    off, asserting that indexes find its rows: bitmap scans of index conditions only (each
    branch of an OR its own), no sequential scan and no index read whole (a partial one may be:
    its predicate is the condition). A search that no index serves falls back to a sequential
    scan, however costly the planner is told it is. Returns the plan. Call inside the test's
    transaction (SET LOCAL)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for setting in ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan"):
            cursor.execute(f"SET LOCAL {setting} = off")
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement)
        plan = cursor.fetchone()[0][0]["Plan"]
        for node in _plan_nodes(plan):
            assert node["Node Type"] not in ("Seq Scan", "Index Scan", "Index Only Scan"), plan
            if node["Node Type"] == "Bitmap Index Scan" and "Index Cond" not in node:
                cursor.execute(
                    "SELECT indpred IS NOT NULL FROM pg_index WHERE indexrelid = %s::regclass", [node["Index Name"]]
                )
                assert cursor.fetchone()[0], f"{node['Index Name']} read whole: {plan}"
    return plan
