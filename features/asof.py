"""Point-in-time vocabulary: what an ``as_of`` is, and how long a horizon is.

The rule, written once: a feature as of T sees only events with ``ts < T``. Everything at or after
T is the future: label windows are half-open, ``[T, T + H)``, so that consecutive windows tile time
without gaps or overlaps and an event at exactly T is never lost between features and label.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

_DURATION = re.compile(r"^\s*(\d+)\s*([dw])\s*$")


class BadValue(ValueError):
    """A date, duration or path given on the command line that cannot be read: bad usage (exit 2)."""


#: The cutoffs dynseg computes with: far enough either side for any event log, and clear of the
#: calendar's ends, where a day or a label horizon added to the cutoff would not exist.
AS_OF_RANGE = (datetime(1900, 1, 1), datetime(3000, 1, 1))


def parse_as_of(value: str | date | datetime) -> datetime:
    """An instant in UTC, returned naive. A bare date D means the end of day D (``D + 1 day``)."""
    dt = _parse_as_of(value)
    lo, hi = AS_OF_RANGE
    if not lo <= dt <= hi:
        raise BadValue(
            f"as_of {str(value).strip()!r} is outside the range dynseg computes with; expected an instant "
            f"from {lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M} UTC (as a date: {lo - timedelta(days=1):%Y-%m-%d} to "
            f"{hi - timedelta(days=1):%Y-%m-%d}, each meaning the end of that day), such as the day of your newest events"
        )
    return dt


def _parse_as_of(value: str | date | datetime) -> datetime:
    if type(value).__name__ in ("datetime64", "NaTType"):  # numpy's (a frame's ``as_of.values[0]``), pandas' NaT
        import numpy as np
        import pandas as pd

        if pd.isna(value):
            raise BadValue("as_of is NaT (not a time); expected a date or an instant")
        if np.datetime_data(value.dtype)[0] in ("D", "W", "M", "Y"):  # a day, as a date: the end of it
            return _end_of_day(pd.Timestamp(value).date())
        value = pd.Timestamp(value).to_pydatetime(warn=False)  # an instant, UTC
    if isinstance(value, datetime):
        if getattr(value, "nanosecond", 0):  # a pd.Timestamp's nanoseconds: dynseg keeps microseconds
            value = value.replace(nanosecond=0)
        dt = value
    elif isinstance(value, date):
        return _end_of_day(value)
    elif not isinstance(value, str):
        raise BadValue(f"as_of {value!r} is a {type(value).__name__}; expected a date or an instant: a string such as "
                       "2026-11-27 (end of that day, UTC) or 2026-11-27T06:00:00+01:00, a datetime.date or datetime, "
                       "a pandas Timestamp or a numpy datetime64")
    else:
        text = value.strip()
        try:
            try:  # any ISO date without a time (2026-11-27, 20261127, 2026-W48-5): the end of that day
                day = date.fromisoformat(text)
            except ValueError:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            else:
                return _end_of_day(day)
        except ValueError as e:
            why = f" ({e})" if "must be in" in str(e) or "out of range" in str(e) else ""
            raise BadValue(
                f"as_of {value!r} is not a date or timestamp{why}; expected YYYY-MM-DD (end of that day, UTC) "
                "or an ISO-8601 instant such as 2026-11-27T06:00:00+01:00"
            ) from None
    if dt.tzinfo is not None:
        offset = dt.utcoffset()
        if offset is not None and not timedelta(hours=-12) <= offset <= timedelta(hours=14):
            minutes = int(offset.total_seconds() // 60)
            shown = f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
            raise BadValue(f"as_of {str(value).strip()!r} has the offset {shown}, which no place "
                           "uses: an offset lies between -12:00 and +14:00, as in the data's timestamps")
        try:
            dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
        except OverflowError:  # the calendar's ends: out of range all the same
            return datetime.max if dt.year > 1 else datetime.min
    return dt


def _end_of_day(day: date) -> datetime:
    if day == date.max:  # its end is not a date; out of range all the same
        return datetime.max
    return datetime(day.year, day.month, day.day) + timedelta(days=1)


def as_of_label(dt: datetime) -> str:
    """How an as_of reads back: ``2026-11-26`` for the end of that day (midnight after it), else
    the instant (``2026-11-26T06:00:00Z``; with its fraction of a second when it has one, so two
    cutoffs never share a label or a default file name)."""
    if (dt.hour, dt.minute, dt.second, dt.microsecond) == (0, 0, 0, 0):
        return (dt - timedelta(days=1)).strftime("%Y-%m-%d")
    return dt.strftime("%Y-%m-%dT%H:%M:%S" + (".%f" if dt.microsecond else "") + "Z")


def as_of_file_label(dt: datetime) -> str:
    """An as_of in a file or folder name: :func:`as_of_label` without colons (``2026-11-27``, or
    ``2026-06-01T120000Z`` for an instant)."""
    return as_of_label(dt).replace(":", "")


def as_of_text(dt: datetime) -> str:
    """An as_of for a summary line: ``2026-11-27 (data before 2026-11-28 00:00 UTC)``, the date as
    given and the instant it means, or the instant itself."""
    label = as_of_label(dt)
    return f"{label} (data before {dt:%Y-%m-%d %H:%M} UTC)" if len(label) == 10 else label


def cutoff_label(value: str | datetime | None) -> str:
    """A snapshot cutoff (an instant; stored as ``2026-08-02`` for its midnight) read back like an
    as_of: ``2026-08-01``, the day whose end it is, so it can be passed to ``--as-of`` as is."""
    if value is None or value == "":
        return "-"
    try:
        return as_of_label(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def parse_duration(value: str) -> timedelta:
    """``30d`` or ``26w`` as a timedelta."""
    m = _DURATION.match(value)
    if not m:
        raise BadValue(f"duration {value!r} is not understood; expected days or weeks such as 30d or 26w")
    n, unit = int(m.group(1)), m.group(2)
    if n * (7 if unit == "w" else 1) > 36_500:  # (and timedelta overflows past 999,999,999 days)
        raise BadValue(f"duration {value!r} is longer than 100 years; expected at most 100 years, in days or weeks "
                       "such as 30d or 26w")
    return timedelta(days=n) if unit == "d" else timedelta(weeks=n)
