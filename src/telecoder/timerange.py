"""Times a person types for ``--since``/``--until`` and ``?since=&until=``, as epoch seconds.

    30m, 24h, 7d, 2w         that long before now
    2026-11-01               midnight UTC starting that day; as an end (``until``), the
                             midnight ending it, so ``--until 2026-11-07`` includes the 7th
    2026-11-01T12:00         that moment, in UTC unless it names its offset (…+02:00, …Z)

A range is half-open: ``since <= ts < until``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

from telecoder.errors import BadInput

DAY = 86400.0
EPOCH, END = 0.0, 253402300800.0  # 1970-01-01 and 10000-01-01: what a time may be
_SPAN = re.compile(r"^(\d{1,6})\s*([mhdw])$")
_UNIT = {"m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}
_OUT_OF_RANGE = "{name}: {value!r} is before 1970 or after 9999"
FORMS = "30m, 24h, 7d, 2w, a date (2026-11-01) or a time (2026-11-01T12:00, UTC unless it says)"


def parse_time(
    value: str, *, name: str = "since", end: bool = False, now: float | None = None
) -> float:
    """``value`` as epoch seconds; BadInput naming ``name`` when it is none of the forms."""
    text = value.strip().lower()
    now = time.time() if now is None else now
    if match := _SPAN.match(text):
        return _in_range(now - int(match.group(1)) * _UNIT[match.group(2)], name, value)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end:
                day += timedelta(days=1)
            return _in_range(
                datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp(), name, value
            )
        moment = datetime.fromisoformat(text.upper())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return _in_range(moment.timestamp(), name, value)
    except OverflowError:
        raise BadInput(_OUT_OF_RANGE.format(name=name, value=value)) from None
    except ValueError:
        raise BadInput(f"{name}: {value!r} is not a time: give {FORMS}") from None


def _in_range(ts: float, name: str, value: str) -> float:
    if not EPOCH <= ts < END:
        raise BadInput(_OUT_OF_RANGE.format(name=name, value=value))
    return ts


def parse_range(
    since: str | None, until: str | None, *, now: float | None = None
) -> tuple[float | None, float | None]:
    """``(since, until)`` as epoch seconds (None: open); BadInput when since is not before until."""
    now = time.time() if now is None else now
    start = parse_time(since, name="since", now=now) if since else None
    stop = parse_time(until, name="until", end=True, now=now) if until else None
    if start is not None and stop is not None and start >= stop:
        raise BadInput(f"since ({since}) must be before until ({until})")
    return start, stop


def day_of(ts: float) -> int:
    """The UTC day ``ts`` falls in, as days since the epoch."""
    return int(ts // DAY)


def day_name(day: int) -> str:
    """``2026-11-01`` for a day number of :func:`day_of`."""
    return datetime.fromtimestamp(day * DAY, UTC).date().isoformat()
