"""Default rows the product needs (role groups and their permissions, lifecycle rules, the
default pipeline, scoring rules, ...), ensured after every migrate.

Each app registers an idempotent `ensure` function in its AppConfig.ready(). They run once
per migrate, after the last app's post_migrate (when every permission row exists), and also
after a test database is flushed, so no test depends on the order tests run in. An ensure
function seeds a table only while it is empty: staff change, switch off or rename defaults
freely, and a deploy never undoes that.
"""

from collections.abc import Callable

_ensurers: list[Callable[[], None]] = []


def register_defaults(ensure: Callable[[], None]) -> None:
    if ensure not in _ensurers:
        _ensurers.append(ensure)


def defaults_sync() -> None:
    from crm_platform.roles import roles_sync

    roles_sync()
    for ensure in _ensurers:
        ensure()
