"""Throttle rates as settings write them: "<count>/<period>", the period a second, minute, hour
or day, its first letter deciding (as DRF reads it). Free of Django and DRF, so settings check
the rates with it at start and the throttles read them with the same definition."""

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'100/min' -> (100, 60); ValueError for any other shape."""
    count, slash, period = (part.strip() for part in rate.partition("/"))
    if not (slash and count.isascii() and count.isdigit() and period.isascii() and period.isalpha()):
        raise ValueError(f"not <count>/<period>: {rate!r}")
    if period[0].lower() not in PERIODS:
        raise ValueError(f"not a second, minute, hour or day: {period!r}")
    return int(count), PERIODS[period[0].lower()]
