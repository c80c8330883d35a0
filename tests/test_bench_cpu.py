"""bench/cpu.py: the /proc readings the benchmarks' CPU-per-request rows stand on."""

import os
import socket
import subprocess
import sys

import psycopg
import pytest
from django.db import connection

from bench.cpu import Cost, Meter, backends_of, children, cpu_seconds, listener


def test_cpu_seconds_grow_with_work_and_a_gone_process_has_none():
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(3_000_000))
    assert cpu_seconds(os.getpid()) > before
    assert cpu_seconds(2**22 + 7) is None  # no such process


def test_listener_and_children_find_the_processes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert listener(server.getsockname()[1]) == os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children(os.getpid())
    finally:
        child.kill()
        child.wait()


@pytest.mark.django_db
def test_backends_of_a_process_are_its_database_connections_and_a_meter_counts_them():
    settings = connection.get_connection_params()
    with psycopg.connect(**settings) as other:
        backend = other.info.backend_pid
        assert backend in backends_of({os.getpid()})
        meter = Meter({"me": {os.getpid()}})
        meter.start()
        other.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        seconds = meter.stop()
    assert seconds["me db"] > 0 and set(seconds) == {"me", "me db"}
    cost = Cost()
    cost.add(seconds, 1000)
    assert cost.per("me db", 1000) == pytest.approx(seconds["me db"] * 1000)


@pytest.mark.django_db
def test_a_meter_counts_a_connection_opened_meanwhile_and_never_goes_negative_for_one_closed():
    settings = connection.get_connection_params()
    first = psycopg.connect(**settings)
    first.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()  # CPU before the start
    meter = Meter({"me": {os.getpid()}})
    meter.start()
    first.close()  # gone by the end: counts nothing
    with psycopg.connect(**settings) as second:  # opened meanwhile: counts whole
        second.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        seconds = meter.stop()
    assert seconds["me db"] > 0
