"""A fake DNS for tests: made-up host names resolve to the addresses a test gives them.

    settings.WEBHOOK_RESOLVER = "tests.fakes.dns.resolve"
    with FakeDns({"hooks.partner.test": [["127.0.0.1"], ["127.0.0.2"]]}) as dns:
        ...                     # 1st lookup -> 127.0.0.1, every later one -> 127.0.0.2
        dns.lookups             # ["hooks.partner.test", ...]

A host maps to one list of addresses, or to a list of answers given in turn (the last one
repeats), which is how a rebinding name behaves. IP literals resolve to themselves and
`localhost` to loopback, as /etc/hosts has it; any other name does not resolve. `slow`:
{host: seconds} each lookup of that host takes before it answers (a resolver retrying an
unanswering name server).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

_active: FakeDns | None = None
_ETC_HOSTS = {"localhost": [["127.0.0.1", "::1"]]}


class FakeDns:
    def __init__(self, hosts: dict[str, list], slow: dict[str, float] | None = None):
        self._slow = {name.lower(): seconds for name, seconds in (slow or {}).items()}
        self._answers = {
            name: [list(a) for a in answers] if answers and isinstance(answers[0], list) else [list(answers)]
            for name, answers in hosts.items()
        }
        self.lookups: list[str] = []
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int) -> list[str]:
        with self._lock:
            self.lookups.append(host)
        if host.lower() in self._slow:
            time.sleep(self._slow[host.lower()])
        with self._lock:
            try:
                return [str(ipaddress.ip_address(host))]
            except ValueError:
                pass
            answers = self._answers.get(host.lower()) or _ETC_HOSTS.get(host.lower())
            if not answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return answers.pop(0) if len(answers) > 1 else list(answers[0])

    def __enter__(self) -> FakeDns:
        global _active
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None


def resolve(host: str, port: int) -> list[str]:
    """The WEBHOOK_RESOLVER for tests: answers from the active FakeDns (none: nothing resolves
    but IP literals)."""
    return (_active or FakeDns({})).resolve(host, port)
