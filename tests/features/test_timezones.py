"""Naive timestamps are UTC; aware ones are converted, across a DST change."""

import re
from datetime import date, datetime

import pandas as pd
import pytest

from features.asof import as_of_file_label, as_of_label, parse_as_of, parse_duration
from features.engine import connect
from features.load import build_canonical
from features.validation import validate
from pipeline.config import load_config


def canonical_ts(project) -> list[datetime]:
    cfg = load_config(project.root)
    con = connect()
    report = validate(con, cfg.source_specs(), cfg.role_of, set(), cfg.project_dir, datetime(2027, 1, 1))
    assert report.ok, report.problems
    build_canonical(con, report, cfg.role_of)
    return [r[0] for r in con.execute("SELECT ts FROM events ORDER BY event_id").fetchall()]


def _events(ts) -> pd.DataFrame:
    return pd.DataFrame({"event_id": [f"e{i}" for i in range(len(ts))], "customer_id": "c1",
                         "event_type": "page_viewed", "ts": ts})


def test_csv_offsets_across_berlin_spring_forward(project):
    # 01:59:59+01:00 and 03:00:00+02:00 are one second apart: clocks jump from 02:00 to 03:00.
    project.write_events(_events(["2026-03-29T01:59:59+01:00", "2026-03-29T03:00:00+02:00",
                                  "2026-03-29 01:30:00", "2026-03-29T01:30:00Z"]), "events.csv")
    assert canonical_ts(project) == [datetime(2026, 3, 29, 0, 59, 59), datetime(2026, 3, 29, 1, 0, 0),
                                     datetime(2026, 3, 29, 1, 30), datetime(2026, 3, 29, 1, 30)]


def test_csv_offsets_after_a_space_as_shopify_writes_them(project):
    """Shopify's exports write `2025-10-20 22:14:56 +0200`, which DuckDB's cast does not read: every
    value was unparseable until a timestamp_format was given."""
    project.write_events(_events(["2025-10-20 22:14:56 +0200", "2025-10-20 22:14:56 -05:00", "2025-10-20 22:14:56  +01",
                                  "2025-10-20T22:14:56+02:00"]), "events.csv")
    assert canonical_ts(project) == [datetime(2025, 10, 20, 20, 14, 56), datetime(2025, 10, 21, 3, 14, 56),
                                     datetime(2025, 10, 20, 21, 14, 56), datetime(2025, 10, 20, 20, 14, 56)]
    # an offset no place has stays refused, with the space as without
    project.write_events(_events(["2025-10-20 22:14:56 +1900"]), "events.csv")
    cfg = load_config(project.root)
    report = validate(connect(), cfg.source_specs(), cfg.role_of, set(), cfg.project_dir, datetime(2027, 1, 1))
    assert not report.ok and any(p.column == "ts" for p in report.problems), report.problems


def test_parquet_aware_column_is_converted_and_naive_is_kept(project):
    local = pd.to_datetime(["2026-10-25 02:30:00", "2026-10-25 03:30:00"]).tz_localize(
        "Europe/Berlin", ambiguous=[True, False])  # fall back: 02:30 CEST, then 03:30 CET
    project.write_events(_events(local))
    assert canonical_ts(project) == [datetime(2026, 10, 25, 0, 30), datetime(2026, 10, 25, 2, 30)]
    project.write_events(_events(pd.to_datetime(["2026-10-25 02:30:00"])))
    assert canonical_ts(project) == [datetime(2026, 10, 25, 2, 30)]


@pytest.mark.parametrize("zone", [None, "UTC", "Asia/Kolkata"])
def test_nanosecond_timestamps_are_cut_to_the_microsecond_not_rounded(project, zone):
    """pandas, Spark and Arrow write nanoseconds. DuckDB's cast rounds them, so an event 1 ns before
    a cutoff came out at the cutoff (and an aware column of them was refused); text is cut."""
    before = pd.Timestamp("2026-06-01 09:59:59.999999999")
    ts = pd.Series([before, pd.Timestamp("1969-06-01 09:59:59.999999999"), pd.Timestamp("2026-06-01 10:00:00")],
                   dtype="datetime64[ns]")
    if zone:
        ts = ts.dt.tz_localize("UTC").dt.tz_convert(zone)
    project.write_events(_events(ts))
    assert canonical_ts(project) == [datetime(2026, 6, 1, 9, 59, 59, 999999), datetime(1969, 6, 1, 9, 59, 59, 999999),
                                     datetime(2026, 6, 1, 10)]


def test_as_of_dates_mean_end_of_day_utc():
    assert parse_as_of("2026-11-27") == datetime(2026, 11, 28)
    assert parse_as_of(date(2026, 11, 27)) == datetime(2026, 11, 28)  # a date object too (the Python API)
    # every ISO spelling of a date alone is a date: the compact 20261127 and the week date too
    assert parse_as_of("20261127") == parse_as_of("2026-W48-5") == datetime(2026, 11, 28)
    assert parse_as_of("2026-11-27T06:00:00+01:00") == datetime(2026, 11, 27, 5)
    assert parse_as_of("2026-11-27T06:00:00Z") == datetime(2026, 11, 27, 6)
    assert parse_as_of("2026-11-27 06:00") == datetime(2026, 11, 27, 6)
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        parse_as_of("next tuesday")
    # an offset no place uses is refused, as in the data's timestamps (it was read as 21:00 the day before)
    assert parse_as_of("2026-03-15T12:00:00+14:00") == datetime(2026, 3, 14, 22)
    with pytest.raises(ValueError, match=r"has the offset \+15:00, which no place uses: an offset lies between -12:00 and \+14:00"):
        parse_as_of("2026-03-15T12:00:00+15:00")
    # an as_of reads back as given, a fraction of a second included (default file names differ too)
    for text in ("2026-11-27", "2026-11-27T06:00:00Z", "2026-11-27T06:00:00.500000Z"):
        assert as_of_label(parse_as_of(text)) == text and parse_as_of(as_of_label(parse_as_of(text))) == parse_as_of(text)
    assert as_of_file_label(parse_as_of("2026-06-01T12:00:00.5Z")) != as_of_file_label(parse_as_of("2026-06-01T12:00Z"))
    # A date-shaped value that is no date says why, and what is expected, not only Python's reason
    with pytest.raises(ValueError, match=r"as_of '2026-13-01' is not a date or timestamp \(month must be in 1..12\); expected YYYY-MM-DD"):
        parse_as_of("2026-13-01")
    with pytest.raises(ValueError, match=r"'2026-02-30' .*day is out of range for month.*expected YYYY-MM-DD"):
        parse_as_of("2026-02-30")
    # the calendar's ends: the end of 9999-12-31 is no date, and a horizon added to it would not be either
    for far in ("9999-12-31", "9999-12-31T23:00:00Z", "9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00",
                "0001-01-01", "1899-12-30", "3000-01-01"):
        with pytest.raises(ValueError, match=rf"as_of '{re.escape(far)}' is outside the range dynseg computes with; "
                                             r"expected an instant from 1900-01-01 00:00 to 3000-01-01 00:00 UTC "
                                             r"\(as a date: 1899-12-31 to 2999-12-31, each meaning the end of that day\)"):
            parse_as_of(far)
    assert parse_as_of("1900-01-01") == datetime(1900, 1, 2) and parse_as_of("2999-12-31") == datetime(3000, 1, 1)


def test_durations():
    assert parse_duration("30d").days == 30
    assert parse_duration("26w").days == 182
    with pytest.raises(ValueError, match="30d or 26w"):
        parse_duration("3 months")
