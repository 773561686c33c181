"""Freshness: scoring or training on a log that stopped arriving gives confident, wrong answers.

A run as of T refuses (or warns, by config) when the newest event is older than ``max_lag`` at T.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from features.asof import as_of_text


class StaleDataError(ValueError):
    """The newest event is too old for the requested as_of. The CLI exits 75 (try again later): a
    late file is a wait for a scheduler, not a fault to fix."""

    try_later = True


class NoEventsBefore(StaleDataError):
    """No event before the as_of at all: a cutoff before the log starts, which waiting does not mend."""

    try_later = False


class GapBefore(StaleDataError):
    """The log goes on after the as_of but has a hole before it: a past date whose events are
    missing, which waiting does not mend either (a scheduler backfilling it would retry forever)."""

    try_later = False


class AheadOfNow(StaleDataError):
    """Stale only because the as_of is days after now (a year typed wrong: 2027 for 2026): waiting
    would mend it only on that date, so a scheduler retrying it would retry for days."""

    try_later = False


class RolesStopped(StaleDataError):
    """Stale only in the events that have a role: the log goes on in event types no role maps (a
    purchase event renamed at the source). Waiting does not mend that; configs/roles.yaml does."""

    try_later = False


def check_freshness(newest_event: datetime | None, as_of: datetime, max_lag: timedelta, action: str = "refuse",
                    where: str = "configs/project.yaml", lag_where: str | None = None,
                    next_event: datetime | None = None) -> str | None:
    """Return a warning text, raise StaleDataError (action ``refuse``), or return None when fresh.
    ``where``: the file whose ``freshness.action`` is in force (a profile's or a local override);
    ``lag_where`` the one whose ``freshness.max_lag_days`` is (default: ``where``). ``next_event``,
    the first event at or after ``as_of`` if the log has one, makes staleness a gap in the history
    (:class:`GapBefore`) rather than a file that has not arrived yet."""
    if newest_event is None:
        raise NoEventsBefore(f"no events before as_of {as_of_text(as_of)}; nothing to compute features from")
    lag = as_of - newest_event
    if not is_stale(newest_event, as_of, max_lag):
        return None
    text = (
        f"data is stale: the newest event is {newest_event:%Y-%m-%d %H:%M} UTC, {_span(lag)} before as_of "
        f"{as_of_text(as_of)} (allowed: {_span(max_lag)})"
    )
    lag_where = lag_where or where
    settings = (f"raise freshness.max_lag_days in {lag_where} (or set freshness.action: warn"
                + (f" in {where})" if where != lag_where else ")"))
    if next_event is not None:
        text += (f", and the log goes on at {next_event:%Y-%m-%d %H:%M} UTC: a gap in the history, not a late file "
                 f"({_span(next_event - newest_event)} without events)")
        if action == "refuse":
            raise GapBefore(text + f". Load the missing events, pick another --as-of, or {settings}")
    elif action == "refuse":
        from features.asof import now_utc

        now = now_utc()
        if as_of - now > timedelta(days=1):
            raise AheadOfNow(text + f"; and as_of is {_span(as_of - now)} after now ({now:%Y-%m-%d %H:%M} UTC): events "
                                    "after now cannot have arrived. Check the date (today's, or an earlier one)")
        raise StaleDataError(text + f". Load newer events, pick an earlier --as-of, or {settings}")
    return text + f"; freshness.action is warn, so the run goes on ({where})"


def is_stale(newest_event: datetime, as_of: datetime, max_lag: timedelta) -> bool:
    """The newest event is more than ``max_lag`` before ``as_of``: the rule freshness enforces,
    and the one that ends a training set's label windows at the newest event instead."""
    return as_of - newest_event > max_lag


def _span(d: timedelta) -> str:
    """A lag in days, with hours and minutes where whole days would hide them (3.0 days vs 3 allowed),
    and seconds where it is just over whole days (3 days 1 s)."""
    days, rest = divmod(int(d.total_seconds()), 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    parts += [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes and days < 30 else []
    seconds = d.total_seconds() - (days * 86400 + hours * 3600 + minutes * 60)
    if parts and seconds > 0 and not (hours or minutes) and days < 30:  # just over whole days: by how much
        parts.append(f"{int(seconds)} s" if seconds >= 1 else "under 1 s")
    return " ".join(parts) or ("none" if d.total_seconds() == 0 else "under a minute")
