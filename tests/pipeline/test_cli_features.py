"""`dynseg features ...` through the CLI."""

import os
from datetime import datetime
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.common import err
from conftest import good_events
from pipeline.jobs.data import spill_folder
from pipeline.synthetic import generate, write

runner = CliRunner()


def test_describe_lists_every_documented_column():
    result = runner.invoke(app, ["features", "describe"])
    assert result.exit_code == 0
    for col in ("recency_days", "sends_since_last_open", "email_consent", "purchase_trend_30d"):
        assert col in result.stdout


def test_build_writes_features_and_names_unavailable_groups_for_a_purchases_only_log(project):
    shop = generate(800, seed=9, end="2026-11-27")
    ev = shop.events[shop.events.event_type == "order_completed"][["customer_id", "ts", "amount", "event_type"]]
    project.write_events(ev)
    out = project.root / "f.csv"
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # a scheduler's log (no terminal) gets a line per stage, and no empty line left by a progress bar
    import re

    stages = re.findall(r"^\d\d:\d\d:\d\dZ features as of 2026-11-27: (.+) \(\+\d+\.\d s\)$", result.stderr, re.M)
    assert stages == ["validating the sources", "computing features", "writing f.csv"], result.stderr
    assert result.stderr.split("\n", len(stages))[-1].startswith("Feature groups unavailable")
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert "unavailable in this data: engagement, refunds, support, suppression, categories, tenure, consent, profile" in stderr
    f = pd.read_csv(out)
    assert {"recency_days", "frequency", "mean_gap_days", "n_purchase_30d"} <= set(f.columns)
    # no category column: no category counts (0 for everyone would read as a fact about them)
    assert not any(c.startswith(("n_email", "open_", "email_consent", "n_categories")) for c in f.columns)
    assert f.customer_id.is_unique and len(f) == ev.customer_id.nunique()
    assert f.customer_id.is_monotonic_increasing  # sorted by the engine
    assert [p.name for p in out.parent.glob(".f.csv.*")] == []  # no temp file left beside it
    # the cutoff in full: a bare date (pandas' way with a column of midnights) is the end of that day
    assert set(f.as_of) == {"2026-11-28 00:00:00"}
    # the default file is named like the as_of; an upper-case suffix is the same format; a folder is refused
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27"])
    assert result.exit_code == 0 and (project.workspace / "features" / "customer_features_2026-11-27.parquet").is_file()
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27", "--out", str(project.root / "F.CSV")])
    assert result.exit_code == 0 and pd.read_csv(project.root / "F.CSV").equals(f)
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27", "--out", str(project.root / "configs")])
    assert result.exit_code == 2 and "is a folder; expected a file path ending in .parquet or .csv" in " ".join(result.output.split())


def test_the_parquet_file_holds_the_frame_the_job_returns(project):
    from features.asof import parse_as_of
    from pipeline.config import load_config
    from pipeline.jobs.features import build_features_job

    write(generate(400, seed=5, end="2026-11-27"), project.workspace / "data")
    out = project.root / "f.parquet"
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27", "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = build_features_job(load_config(project.root), parse_as_of("2026-11-27")).frame  # no file: through pandas
    written = pd.read_parquet(out)
    assert len(written) > 300 and written.customer_id.is_monotonic_increasing
    pd.testing.assert_frame_equal(written, expected)
    # The printed summary (computed on the Arrow result, with no pandas frame) agrees with the file.
    for col in ("frequency", "recency_days", "monetary_total"):
        row = re.search(rf"{col}\s+│\s+(\d+)%\s+│\s+(\S+)\s+│\s+(\S+)\s+│\s+(\S+)", result.stdout)
        assert row, f"no summary row for {col}:\n{result.stdout}"
        s = written[col]
        assert [int(row[1]), *map(float, row.group(2, 3, 4))] == [round(100 * s.notna().mean()), round(s.mean(), 2),
                                                                  round(s.min(), 2), round(s.max(), 2)]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_sort_by_customer_keeps_rows_whole_across_chunks(threads):
    """The DuckDB result is sorted in Arrow column by column, by one thread or several: every row
    must keep its own values, and every column its place."""
    import numpy as np
    import pyarrow as pa

    from features.engines.duckdb import sort_by_customer

    rng = np.random.default_rng(3)
    ids = [f"c{i:04d}" for i in rng.permutation(1000)]
    frame = pd.DataFrame({"customer_id": ids, "n": np.arange(1000), "x": np.where(np.arange(1000) % 7 == 0, np.nan, rng.random(1000)),
                          "ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(1000), unit="min"),
                          "flag": pd.array(np.arange(1000) % 3 == 0, dtype="boolean")})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=97), schema=table.schema)  # 11 chunks, as DuckDB hands over several
    got = sort_by_customer(chunked, threads=threads)
    assert got.schema == table.schema
    pd.testing.assert_frame_equal(got.to_pandas(), frame.sort_values("customer_id", ignore_index=True))


def test_stale_data_exits_75_try_later_with_the_fix(project):
    """Stale data is a late file, not a fault: 75 (try again later, as a busy workspace), which a
    scheduler retries; it exited 1, the code of a broken config."""
    write(generate(300, seed=9, end="2026-10-01"), project.workspace / "data")
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27"])
    assert result.exit_code == 75
    assert "data is stale" in result.stderr and "freshness.max_lag_days" in result.stderr
    # the as_of as given (its midnight read 2026-11-28 00:00 UTC beside --as-of 2026-11-27)
    assert "before as_of 2026-11-27 (data before 2026-11-28 00:00 UTC)" in " ".join(result.stderr.split())
    assert not (project.workspace / "features").exists()


def test_stale_roles_in_a_log_that_goes_on_exit_1_naming_the_newer_event_types(project):
    """Freshness counts the events with a role. A log whose purchases and emails stopped while an
    ignored or unknown event type went on (a purchase event renamed at the source) said "Load newer
    events" and exited 75, so a scheduler retried a file that was not late for ever."""
    import dataclasses

    shop = generate(300, seed=9, end="2026-10-01")
    later = pd.DataFrame({"event_id": ["r1", "r2", "r3"], "customer_id": shop.events.customer_id.iloc[:3].tolist(),
                          "event_type": ["Active on Site", "Active on Site", "Order Placed v2"],
                          "ts": pd.to_datetime(["2026-11-20 00:00", "2026-11-25 10:00", "2026-11-26 09:30"])})
    write(dataclasses.replace(shop, events=pd.concat([shop.events, later], ignore_index=True)),
          project.workspace / "data")
    roles = project.root / "configs" / "roles.yaml"
    roles.write_text(roles.read_text().replace("ignore: []", "ignore: [Active on Site]")
                     .replace("unknown_events: refuse", "unknown_events: warn"))
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27"])
    text = " ".join(result.stderr.split())
    assert result.exit_code == 1, result.output
    assert "data is stale" in text and ("The log itself goes on in event types no role maps: 'Order Placed v2' (no "
                                        "role, newest 2026-11-26 09:30 UTC), 'Active on Site' (ignored, newest "
                                        "2026-11-25 10:00 UTC)") in text, text
    assert "map the new name under event_roles in configs/roles.yaml" in text
    # ignored events as old as the rest: a late file still, try again later
    write(dataclasses.replace(shop, events=pd.concat([shop.events, later.iloc[:1].assign(ts=pd.Timestamp("2026-10-05"))],
                                                     ignore_index=True)), project.workspace / "data")
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27"])
    text = " ".join(result.stderr.split())
    assert result.exit_code == 75 and "The log itself is newer in event types no role maps: 'Active on Site'" in text


@pytest.mark.parametrize("command", [["features", "training-set", "churn"], ["data", "validate"], ["score"],
                                     ["train", "purchase"], ["segments", "list"], ["features", "build"]])
def test_an_empty_as_of_is_refused(project, command):
    """A scheduler's `--as-of "$(date ...)"` whose substitution came out empty: training-set and
    train used all the data, validate and score ran as of now, segments list showed the latest run."""
    result = runner.invoke(app, [*command, "--as-of", "  "])
    assert result.exit_code == 2, result.output
    text = " ".join(result.stderr.split())
    assert "--as-of" in text and "is empty: give a date" in text, text


def test_a_gap_in_past_history_exits_1_not_try_later(project):
    """A review cut August 20-31 out of a log that runs to November: a build as of August 31 exited
    75, "try again later", and a scheduler backfilling that date would have retried for ever."""
    import dataclasses

    shop = generate(300, seed=9, end="2026-11-27")
    write(dataclasses.replace(shop, events=shop.events[~shop.events.ts.between("2026-08-20", "2026-09-01")]),
          project.workspace / "data")
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-08-31"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert "a gap in the history, not a late file" in text and "Load the missing events" in text, text


def test_an_as_of_after_now_is_warned_about(project):
    """A typo'd date days ahead passed in silence while the log was within freshness's lag of it,
    and every days-since feature counted days that had not happened."""
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    df = good_events()
    df["ts"] = df["ts"] + (pd.Timestamp(now) - timedelta(hours=2) - df["ts"].max())
    project.write_events(df)
    # tomorrow's date: its end is 24-48 hours ahead, within freshness's 3 days of the newest event
    ahead, today = (now + timedelta(days=1)).date(), now.date()
    result = runner.invoke(app, ["features", "build", "--as-of", str(ahead), "--out", str(project.root / "f.parquet")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert f"as_of {ahead} (data before" in text and "after now" in text and "have not happened yet" in text, text
    result = runner.invoke(app, ["features", "build", "--as-of", str(today), "--out", str(project.root / "f.parquet")])
    assert result.exit_code == 0 and "after now" not in result.stderr, result.output


def test_a_memory_limit_too_small_exits_1_naming_the_setting(project):
    write(generate(300, seed=9, end="2026-11-27"), project.workspace / "data")
    (project.root / "configs" / "project.yaml").write_text("memory_limit: 1MB\nthreads: 1\n")
    out = project.root / "f.csv"
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27", "--out", str(out)])
    assert result.exit_code == 1, result.output
    stderr = " ".join(result.stderr.split())
    assert "Out of memory" in stderr and "memory_limit" in stderr and "configs/project.yaml" in stderr
    assert not out.exists()
    # where it spills (one folder per user) and the room there: a full disk there fails the same way
    assert f"Above the limit DuckDB spills to {spill_folder()} (" in stderr and "GiB free there" in stderr, stderr


def test_a_spill_folder_that_is_a_file_is_named(project, monkeypatch, tmp_path):
    """DuckDB, once it had to spill, failed with a traceback ('Failed to create directory')."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    project.write_events(good_events())
    spill_folder().write_text("not a folder")
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 1 and f"{spill_folder()} is a file: DuckDB spills there" in " ".join(result.output.split())


def test_a_past_run_accepts_later_events_and_refuses_only_those_after_now(project, monkeypatch):
    # A build as of a past date reads a log that has grown since: events after its as_of are only
    # invisible to it. An event after the clock is from the future, and the message says so.
    monkeypatch.setattr(err, "width", 400)  # one line per message, whatever the temp path's length
    events = good_events()
    events.loc[len(events)] = ["late", "c0", "email_sent", pd.Timestamp("2026-06-01"), None]
    project.write_events(events)
    out = project.root / "f.parquet"
    ok = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert pd.read_parquet(out).set_index("customer_id").loc["c0", "n_email_send"] == 1
    future = pd.Timestamp.now(tz="UTC").tz_localize(None) + pd.Timedelta(days=400)
    events.loc[len(events)] = ["future", "c1", "email_sent", future, None]
    project.write_events(events)
    bad = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
    assert bad.exit_code == 1 and "future_ts" in bad.stderr
    assert "1 timestamp lies after now (" in bad.stderr and "and the clock of the system that wrote it" in bad.stderr
    assert "later --as-of" not in bad.stderr
    # `data validate --as-of D` reads the log as the run as of D does: only the event after now is
    # refused (it refused the later send too, which the build above took)
    strict = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06"])
    assert strict.exit_code == 1 and "1 timestamp lies after now (" in strict.stderr, strict.stderr
    assert "after the run's as_of" not in strict.stderr
    # A device whose clock runs ahead (10 minutes) failed every nightly run, with no way past it but
    # editing the log: the fix names `future_events: drop`, which leaves such rows out, said
    ahead = pd.Timestamp.now(tz="UTC").tz_localize(None) + pd.Timedelta(minutes=10)
    events.loc[events.event_id == "future", "ts"] = ahead
    project.write_events(events)
    bad = runner.invoke(app, ["features", "build", "--as-of", "2026-06-02", "--out", str(out)])
    assert bad.exit_code == 1 and "`future_events: drop` under sources.events" in " ".join(bad.stderr.split())
    # `data validate` without --as-of checks as of now: after it is the future, not a reason for a later
    # --as-of (a date after now), and it says so as the runs do
    checked = " ".join(runner.invoke(app, ["data", "validate"]).stderr.split())
    assert "1 timestamp lies after now (" in checked and "`future_events: drop` under sources.events" in checked
    assert "later --as-of" not in checked
    project.write_events(events, future_events="drop")
    ok = runner.invoke(app, ["features", "build", "--as-of", "2026-06-02", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    said = " ".join(ok.stderr.split())
    assert "1 timestamp lies after now (" in said and "left out of this run, as `future_events: drop` says" in said
    built = pd.read_parquet(out).set_index("customer_id")
    assert built.loc["c0", "n_email_send"] == 2 and built.loc["c1", "n_email_send"] == 1  # (the late send counts)
    from pipeline.config import load_config
    from pipeline.jobs.data import load_for_run

    data = load_for_run(load_config(project.root))  # the log a run reads, and where it ends: without it
    assert data.con.execute("SELECT count(*) FILTER (WHERE event_id = 'future'), max(ts) FROM events").fetchall()[0] \
        == (0, pd.Timestamp("2026-06-01"))
    assert data.report.time_range(load_config(project.root).role_of)[1] == pd.Timestamp("2026-06-01")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/events.parquet", "future_events": "drop"})
    assert "`future_events: drop` is for the events source only" in runner.invoke(app, ["data", "validate"]).output


def test_an_unknown_engine_is_a_usage_error_naming_the_choices(project):
    for command in (["features", "build"], ["score"], ["train", "churn"]):
        result = runner.invoke(app, [*command, "--engine", "sparkk"])
        assert result.exit_code == 2, (command, result.output)
        text = " ".join(result.stderr.replace("│", " ").split())  # typer boxes and wraps its usage errors
        assert "Invalid value for '--engine'" in text and "'sparkk' is not one of 'duckdb', 'spark'" in text


def test_a_run_says_what_validation_warned_about(project, monkeypatch):
    # Warnings (data that is used, but not as given) reach the run's output, not only `data validate`.
    monkeypatch.setattr(err, "width", 400)
    events = good_events()
    events = pd.concat([events, events.iloc[[0]]], ignore_index=True)  # an exact repeat of event c0-1
    project.write_events(events)
    pd.DataFrame({"customer_id": ["c0", "c1"], "signup_at": pd.to_datetime(["2026-01-01", "2026-01-01"])}
                 ).to_parquet(project.data / "customers.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("1 event_id repeats with identical content" in w and "repeats are dropped" in w for w in warned), warned
    assert any("1 customer_id in events is not in customers" in w for w in warned), warned
    assert pd.read_csv(project.root / "f.csv").set_index("customer_id").loc["c0", "n_events"] == 3  # the repeat dropped


def test_a_run_counts_its_own_customers_without_a_profile(project, monkeypatch):
    """Validation leaves the count to the run, which counts the customers its features hold: not an
    id whose events all come after the run's as_of, nor one merged into a profiled customer."""
    monkeypatch.setattr(err, "width", 400)
    events = good_events(4)  # c0..c3, events from 2026-01-01 to 2026-01-05
    late = pd.DataFrame({"event_id": ["late-1"], "customer_id": ["late"], "event_type": ["signed_up"],
                         "ts": pd.to_datetime(["2026-01-09 10:00:00"]), "amount": [None]})
    project.write_events(pd.concat([events, late], ignore_index=True))
    pd.DataFrame({"customer_id": ["c0", "c1"], "signup_at": pd.to_datetime(["2026-01-01", "2026-01-01"])}
                 ).to_parquet(project.data / "customers.parquet")
    # c2 shares an email with profile c0: merged into it, it has c0's profile; c3 has none
    pd.DataFrame({"customer_id": ["c0", "c2"], "id_type": ["email"] * 2, "id_value": ["a@x"] * 2}
                 ).to_parquet(project.data / "ids.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"},
                    identities={"format": "parquet", "path": "data/ids.parquet"})

    validated = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-10"])
    assert validated.exit_code == 0, validated.output
    # c3 and late: c2 shares an identifier with profiled c0 (it was counted too)
    assert "2 customer_ids in events are not in customers" in " ".join(validated.stderr.split())

    def warned(as_of: str) -> list[str]:
        result = runner.invoke(app, ["features", "build", "--as-of", as_of, "--out", str(project.root / "f.csv")])
        assert result.exit_code == 0, result.output
        return [line for line in result.stderr.splitlines() if "not in customers" in line]

    assert len(warned("2026-01-06")) == 1 and "1 customer_id in events is not in customers" in warned("2026-01-06")[0]
    assert "2 customer_ids in events are not in customers" in warned("2026-01-10")[0]  # c3 and late
    assert set(pd.read_csv(project.root / "f.csv")["customer_id"]) == {"c0", "c1", "c3", "late"}


def test_a_bad_out_suffix_is_refused_before_any_work(project):
    # The catalog points at no file: were the data read first, the error would be about the data.
    project.catalog(events={"format": "parquet", "path": "data/missing.parquet"})
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.xlsx")])
    assert result.exit_code == 2  # bad usage, like an unknown option
    text = " ".join(result.stderr.split())
    assert "expected a file name ending in .parquet or .csv; found '.xlsx'" in text
    assert "missing.parquet" not in text and not (project.root / "f.xlsx").exists()
    # an unreadable date or horizon is bad usage too
    for args in (["features", "build", "--as-of", "2026-13-45"], ["features", "build", "--as-of", "9999-12-31"],
                 ["train", "churn", "--horizon", "5x"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.stderr.startswith("Error: "), (args, result.output)
    assert result.stderr.startswith("Error: --horizon 5x: duration '5x' is not understood"), result.stderr  # which value


def test_an_out_path_that_cannot_be_a_file_is_refused_before_any_work(project):
    project.catalog(events={"format": "parquet", "path": "data/missing.parquet"})
    (project.root / "a_file").write_text("x")
    (project.root / "folder.parquet").mkdir()
    for out, said in ((project.root / "a_file" / "f.parquet", "is a file, not a folder"),
                      (project.root / "folder.parquet", "is a folder; expected a file path")):
        code = 2  # bad usage, like an unknown option
        result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
        assert result.exit_code == code, result.output
        text = " ".join(result.stderr.split())
        assert said in text and "missing.parquet" not in text, text
    # a folder that takes no files whatever its permission bits say (root is let in by os.access)
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", "/proc/f.parquet"])
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "cannot write /proc/f.parquet" in text and "missing.parquet" not in text, text
    project.write_events(good_events())  # valid data: data validate would write its report to the workspace
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06", "--json", str(project.root / "folder.parquet")])
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "is a folder" in text and "folder.parquet/validation.json" in text, text
    assert not (project.workspace / "reports" / "validation.json").exists()  # refused before the workspace was touched


def test_written_files_get_the_usual_permissions(project):
    import os
    import stat

    project.write_events(good_events())
    out = project.root / "f.parquet"
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
    assert result.exit_code == 0, result.output
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask  # not mkstemp's private 0600


def test_a_profile_attribute_named_like_a_feature_is_refused(project):
    shop = generate(300, seed=9, end="2026-11-27")
    write(shop, project.data)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    customers = shop.customers.assign(frequency="weekly", **{'odd"name': "x"})
    customers.to_parquet(project.data / "customers.parquet")
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-06-01", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert "data/customers.parquet" in text and "'frequency' is named like a customer_features column" in text, text
    assert not (project.root / "f.csv").exists()
    # names that differ in case only (DuckDB's names ignore case: FREQUENCY crashed the query with a
    # KeyError, a listed Email_Consent read the contract column), and the query's own columns (a
    # last_purchase_at attribute held the last purchase's time, in silence)
    features_yaml = project.root / "configs" / "features.yaml"
    for name, why, listed in (("FREQUENCY", "a customer_features column (DuckDB's names ignore case)", False),
                              ("last_purchase_at", "a column the feature query makes", False),
                              ("Email_Consent", "a column of the customers contract (DuckDB's names ignore case)", True)):
        # (the file holds the name in that spelling only, as the export it comes from does)
        shop.customers.drop(columns=[name.lower()], errors="ignore").assign(**{name: "gold"}).to_parquet(
            project.data / "customers.parquet")
        features_yaml.write_text(f"categorical_attributes: [country, {name}]\n" if listed else "")
        result = runner.invoke(app, ["features", "build", "--as-of", "2026-06-01", "--out", str(project.root / "f.csv")])
        text = " ".join(result.stderr.split())
        assert result.exit_code == 1 and f"'{name}' is named like {why}" in text, (name, text)
        assert "Traceback" not in result.output and not (project.root / "f.csv").exists()
    assert "map it: `columns: {email_consent: Email_Consent}` in configs/catalog.yaml" in text
    # left to auto, a contract name in another case is no attribute (from CSV, yes/no text crashed
    # the attributes' measure with a BinderException): validation says to map it
    features_yaml.write_text("")
    shop.customers.drop(columns="email_consent").assign(Email_Consent=["yes", "no"] * 150).to_csv(
        project.data / "customers.csv", index=False)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "csv", "path": "data/customers.csv"})
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-06-01", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 0, result.output
    assert "Email_Consent" not in pd.read_csv(project.root / "f.csv").columns
    assert "map it: `columns: {email_consent: Email_Consent}`" in " ".join(result.stderr.split())
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    # a quote in an attribute's name is no SQL problem
    customers.drop(columns="frequency").to_parquet(project.data / "customers.parquet")
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-06-01", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 0, result.output
    assert (pd.read_csv(project.root / "f.csv")['odd"name'] == "x").all()


def test_auto_attributes_leave_out_values_in_the_sources_own_forms(project):
    """`auto` leaves out a profile column of dates or numbers (a last-seen date may lie after the
    cutoff; it is no category); written in the source's timestamp_format or with a decimal comma,
    they were taken as categories."""
    project.write_events(good_events())
    pd.DataFrame({"customer_id": ["c0", "c1", "c2"], "tier": ["gold", "silver", "gold"],
                  "last_seen": ["28/11/2026", "01/01/2026", "15/03/2026"], "ltv": ["1.234,56", "12,5", "0,5"],
                  "last_seen_iso": ["2026-11-28", "2026-01-01", "2026-03-15"]}).to_csv(
        project.data / "customers.csv", index=False)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "csv", "path": "data/customers.csv", "timestamp_format": "%d/%m/%Y",
                               "decimal": ","})
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 0, result.output
    columns = set(pd.read_csv(project.root / "f.csv").columns)
    assert "tier" in columns and not {"last_seen", "ltv", "last_seen_iso"} & columns


def test_ctrl_c_ends_in_one_line_and_exit_130(project, monkeypatch):
    import pipeline.jobs.features as job

    project.write_events(good_events())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "build_features_job", interrupted)
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 130 and "Interrupted." in result.stderr and "Traceback" not in result.output
    assert not (project.root / "f.csv").exists()


@pytest.mark.spark
def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(project, tmp_path):
    """A scheduler's SIGTERM (not only Ctrl-C) runs the cleanup: Spark's scratch folder is
    removed, no output is left, one line on stderr, exit 128 + 15. Sent while the Spark engine
    starts, after the scratch folder exists: Python's default for SIGTERM would leave it behind,
    and an interrupted JVM start left the JVM running as an orphan (it holds this test's stdout and
    stderr pipes, so ``communicate`` returning shows it ended too)."""
    import socket

    from conftest import dead_pid

    project.write_events(good_events())
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    # the scratch folder of a run killed outright (kill -9) goes with the next Spark start on this host
    killed = scratch_root / f"dynseg-spark-{dead_pid()}@{socket.gethostname()}~x1y2"
    killed.mkdir()
    (killed / "log4j2.properties").write_text("x")
    out = project.root / "f.parquet"
    env = {**os.environ, "TMPDIR": str(scratch_root), "DYNSEG_PROJECT": str(project.root)}
    dynseg = Path(sys.executable).with_name("dynseg")
    proc = subprocess.Popen([str(dynseg), "features", "build", "--engine", "spark", "--as-of", "2026-01-06",
                             "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(scratch_root.glob(f"dynseg-spark-{proc.pid}@*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Terminated (SIGTERM)." in stderr and "Traceback" not in stderr, stderr
    assert not list(scratch_root.glob("dynseg-spark-*")) and not out.exists()  # the killed run's too


@pytest.mark.parametrize("signum, code, line", [(signal.SIGTERM, 143, "Terminated (SIGTERM)."), (signal.SIGINT, 130, "Interrupted."),
                                                (signal.SIGHUP, 129, "Hung up (SIGHUP).")])
def test_a_signal_during_a_duckdb_query_ends_in_one_line(signum, code, line, capsys):
    """DuckDB turns the exception a signal raises mid-query into RuntimeError('Query interrupted')
    (when it notices the signal before the query ends; else the signal's own exception comes after
    it): either way one line and 128 + the signal's number, not a traceback and exit 1."""
    import threading

    import duckdb
    import typer

    from pipeline.cli import common

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a process starts (nohup would ignore it: then left ignored)
    # Python's own Ctrl-C handler, as the CLI has it (a pytest-xdist worker ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    common.on_sigterm()
    con = duckdb.connect()
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signum)).start()
        with pytest.raises(typer.Exit) as exit_:
            with common.handled():
                con.execute("SELECT count(*) FROM range(300000000) t(x) WHERE x % 7 = 3").fetchall()
                time.sleep(5)  # the query ended first: the signal's exception comes here
        assert exit_.value.exit_code == code
        assert line in " ".join(capsys.readouterr().err.split())
        # DuckDB's own exception for it, whichever signal it was
        with pytest.raises(typer.Exit) as exit_:
            with common.handled():
                raise RuntimeError("Query interrupted")
        assert exit_.value.exit_code == code and line in " ".join(capsys.readouterr().err.split())
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
        signal.signal(signal.SIGHUP, before[2])
        common._signals.clear()
    with pytest.raises(RuntimeError, match="something else"), common.handled():
        raise RuntimeError("something else")  # any other RuntimeError is not taken for one


def test_a_log_shorter_than_the_longest_window_is_warned_about(project):
    project.write_events(good_events())  # from 2026-01-01
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "the event log starts 2026-01-01, 5 days before 2026-01-06 (data before 2026-01-07 00:00 UTC)" in text, text
    assert "(up to 365d)" in text and "customers look newer" in text
    (project.root / "configs" / "features.yaml").write_text("windows_days: [3]\n")
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.csv")])
    assert result.exit_code == 0 and "the event log starts" not in result.stderr


def test_a_run_without_events_before_the_cutoff_says_why(project):
    """No event before the cutoff: the message tells a log whose event types are all ignored from a
    cutoff before the log starts, and says what to change."""
    project.write_events(good_events())
    result = runner.invoke(app, ["features", "build", "--as-of", "2025-12-31", "--out", str(project.root / "f.parquet")])
    text = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "no events before as_of 2025-12-31 (data before 2026-01-01 00:00 UTC): the log starts at 2026-01-01 10:00 UTC; " \
        "pick a later --as-of" in text, text
    roles = project.root / "configs" / "roles.yaml"
    roles.write_text("event_roles:\n  purchase: []\nignore: [signed_up, email_sent, order_completed]\n")
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-02-01", "--out", str(project.root / "f.parquet")])
    text = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "none of the log's 9 events has a role" in text and \
        "are all listed under ignore: in configs/roles.yaml" in text, text
    assert not (project.root / "f.parquet").exists()


@pytest.mark.parametrize("signum, line", [(signal.SIGTERM, "Terminated (SIGTERM)."), (signal.SIGINT, "Interrupted.")])
def test_a_library_logging_the_interrupted_call_prints_no_traceback(signum, line, tmp_path):
    """Spark's gateway (py4j) logs a call cut short by the signal with ``logging.exception`` on the
    root logger, which then set itself up and printed "ERROR:root:..." and a traceback before the
    one line. The same call, in a process of its own, as the CLI runs it."""
    script = tmp_path / "run.py"
    script.write_text(f"""
import logging, os, signal, sys, threading, time
import typer
from pipeline.cli import common
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a shell; a test runner may ignore it
common.on_sigterm()
try:
    with common.handled():
        threading.Timer(0.3, os.kill, (os.getpid(), {int(signum)})).start()
        try:
            time.sleep(10)
        except KeyboardInterrupt:  # what py4j's send_command does
            logging.exception("KeyboardInterrupt while sending command.")
            raise
except typer.Exit as e:
    sys.exit(e.exit_code)
""")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    assert proc.returncode == 128 + signum, proc.stderr
    assert line in proc.stderr and "Traceback" not in proc.stderr and "ERROR:root" not in proc.stderr, proc.stderr


def _attribute_customers(shop) -> pd.DataFrame:
    """The shop's profiles with attributes of every kind: text of few and of many values, a
    boolean, whole and fractional numbers, and a column with no value at all."""
    from datetime import time

    import numpy as np

    c = shop.customers[["customer_id", "signup_at", "country"]].copy()
    n = len(c)
    rng = np.random.default_rng(3)
    c["tier"] = rng.choice(["gold", "silver", None], n)
    c["city"] = [f"city{i % 80}" for i in range(n)]  # 80 values: over max_categories (50)
    # a person's name and address, of few values in a small shop: `auto` leaves them out (no model
    # should explain a score by a first name)
    c["first_name"] = rng.choice(["Anna", "Ben", "Cleo"], n)
    c["Email Address"] = rng.choice(["a@shop.example", "b@shop.example"], n)
    c["vip"] = pd.array(rng.random(n) < 0.2, dtype="boolean")
    c.loc[c.index[::7], "vip"] = pd.NA  # missing values: no text either
    c["age"] = rng.integers(18, 80, n)
    c["kids"] = pd.array(rng.integers(0, 4, n), dtype="Int64")  # 4 values: few enough, but a number
    c.loc[c.index[::5], "kids"] = pd.NA
    c["score"] = rng.random(n).round(3)
    c["nothing"] = pd.Series([None] * n, dtype="object")
    c["zip"] = rng.choice(["02134", "10001", "94105"], n)  # digits, but text: a leading zero
    c["member"] = rng.choice(["Y", "N"], n)  # text, as DuckDB's CSV sniffer reads it too
    # dates and times of few values (a cohort month; a last visit, some after the cutoff): no text
    c["cohort"] = pd.to_datetime(rng.choice(["2025-11-01", "2025-12-01", "2026-01-01"], n))
    c["last_seen"] = pd.to_datetime(rng.choice(["2026-05-01 10:00:00", "2026-09-01 08:30:00"], n))
    c["call_at"] = [time(9, 30) if i % 3 else time(14) for i in range(n)]  # a time of day
    return c


@pytest.mark.parametrize("form", ["parquet", "csv"])
def test_auto_categorical_attributes_are_the_text_columns_of_few_values_whatever_the_file(project, form):
    """`categorical_attributes: auto` takes the profile's text columns with at most max_categories
    values, but a person's name or contact. A CSV file has no types, so its numbers and booleans
    must not pass for text: the same profiles give the same feature columns from a CSV file as from
    a Parquet one."""
    shop = generate(300, seed=9, end="2026-11-27")
    write(shop, project.data)
    customers = _attribute_customers(shop)
    if form == "csv":
        customers.to_csv(project.data / "customers.csv", index=False)
    else:
        customers.to_parquet(project.data / "customers.parquet", index=False)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": form, "path": f"data/customers.{form}"})
    out = project.root / "f.parquet"
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-06-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    f = pd.read_parquet(out)
    attributes = [c for c in f.columns if c in customers.columns and c != "customer_id"]
    assert attributes == ["country", "tier", "zip", "member"]
    assert "country, tier, zip, member (auto)" in " ".join(result.stdout.split()), result.stdout
    if form == "csv":  # zip codes keep their leading zero
        assert set(pd.read_parquet(out).zip.dropna()) == {"02134", "10001", "94105"}
    # listed by name, any attribute is taken, as text (a category), from either file
    features_yaml = project.root / "configs" / "features.yaml"
    features_yaml.write_text(features_yaml.read_text().replace("categorical_attributes: auto",
                                                               "categorical_attributes: [tier, kids, vip]"))
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-06-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    f = pd.read_parquet(out).set_index("customer_id")
    assert [c for c in f.columns if c in customers.columns] == ["tier", "kids", "vip"]
    assert "tier, kids, vip (listed)" in " ".join(result.stdout.split()), result.stdout
    own = customers.set_index("customer_id").loc[f.index]
    assert f.kids.isna().equals(own.kids.isna()) and f.vip.isna().equals(own.vip.isna())
    assert (f.kids.dropna() == own.kids.dropna().astype(str)).all() and f.kids.dropna().map(type).eq(str).all()
    # a boolean reads true/false from either file (pandas writes True/False into the CSV file)
    assert (f.vip.dropna() == own.vip.dropna().map({True: "true", False: "false"})).all(), f.vip.value_counts()
    # a name the profiles do not have is refused, naming it and what there is
    features_yaml.write_text(features_yaml.read_text().replace("[tier, kids, vip]", "[tier, plan]"))
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-06-01", "--out", str(out)])
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert "categorical_attributes names ['plan']" in text and "'tier'" in text, text


def test_outputs_the_user_would_lose_or_not_find_are_refused_or_named(project, monkeypatch):
    """An --out that is a configured source is refused before any work (a typo replaced the
    customer profiles with features, and every later run read those); a full disk is one line
    naming the output, the previous file intact; a symbolic link is written through, not replaced."""
    events = project.write_events(good_events())
    before = events.read_bytes()
    for out in (events, events.parent / ".." / events.parent.name / events.name):
        r = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
        said = " ".join(r.output.split())
        assert r.exit_code == 2 and "is the source 'events'" in said and "writing there would replace your data" in said, said
    assert events.read_bytes() == before
    project.write_events(good_events(), name="part-1.parquet")
    project.catalog(events={"format": "parquet", "path": "data/part-*.parquet"})  # a glob: a new file in it is one too
    r = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(events.parent / "part-2.parquet")])
    assert r.exit_code == 2 and "is the source 'events'" in r.output, r.output
    # not a file in a subfolder, which the glob does not read
    sub = events.parent / "part-x" / "f.parquet"
    assert runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(sub)]).exit_code == 0
    project.write_events(good_events())

    out = project.root / "f.parquet"
    assert runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)]).exit_code == 0
    previous = out.read_bytes()
    import pyarrow.parquet as pq

    def full(table, where, **kw):
        open(where, "wb").write(b"PAR1 half")
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    with monkeypatch.context() as m:
        m.setattr(pq, "write_table", full)
        r = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    said = " ".join(r.output.split())
    assert f"Error: Writing bytes to file. Detail: [errno 28] No space left on device: {out}. Free some space there, " \
           "or write to another folder; the previous file, if any, is as it was." in said, said  # not "Error: Error …"
    assert out.read_bytes() == previous and sorted(p.name for p in out.parent.glob(".f.parquet*")) == []

    real = project.root / "share" / "latest.parquet"
    real.parent.mkdir()
    link = project.root / "latest.parquet"
    link.symlink_to(real)  # dangling until the first write
    r = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(link)])
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and real.is_file() and pq.read_table(link).num_rows == pq.read_table(out).num_rows


def test_messages_keep_their_brackets(capsys):
    """rich took ``[errno 28]`` or ``[label]`` in a message for markup and dropped it."""
    import typer

    from pipeline.cli import common

    for raised in (ValueError("no column [label]; found [country, plan]"), OSError(28, "[errno 28] disk full", "/x/f.csv")):
        with pytest.raises(typer.Exit), common.handled():
            raise raised
        said = " ".join(capsys.readouterr().err.split())
        assert ("no column [label]; found [country, plan]" if isinstance(raised, ValueError)
                else "[errno 28] disk full: /x/f.csv") in said, said


def test_a_frame_is_written_a_slice_at_a_time_as_one_file(tmp_path, monkeypatch):
    """Parquet is written a slice at a time (the whole frame as Arrow beside it held it twice); the
    file is the frame, typed from the whole frame: a slice where a column is all null keeps its type."""
    import pyarrow.parquet as pq

    from pipeline.jobs import features as jobs

    monkeypatch.setattr(jobs, "WRITE_ROWS", 3)
    frame = pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(10)],
        "as_of": pd.Timestamp("2026-11-28"),
        "email_consent": [None, None, None, True, False, None, True, True, None, False],  # object, nulls
        "country": pd.array([None] * 3 + ["DE"] * 7, dtype="str"),
        "n": range(10),
    })
    out = jobs.write_frame(frame, tmp_path / "f.parquet")
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == 4 and meta.num_rows == 10
    assert pq.read_schema(out).field("email_consent").type == "bool" and pq.read_schema(out).field("country").type == "string"
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back.email_consent.tolist() == frame.email_consent.tolist()
    # a text column without a value (a night without exits: `segments changes --out`) is text, not
    # Arrow's null type, which no other night's file shares (read as one dataset, they failed)
    empty = pd.DataFrame({"customer_id": pd.Series([], dtype=object), "why": pd.Series([], dtype=object),
                          "n": pd.Series([], dtype="int64")})
    schema = pq.read_schema(jobs.write_frame(empty, tmp_path / "empty.parquet"))
    assert (schema.field("customer_id").type, schema.field("why").type, schema.field("n").type) == ("string", "string", "int64")
    none = pd.DataFrame({"customer_id": ["c1"], "why": [None]})
    assert pq.read_schema(jobs.write_frame(none, tmp_path / "none.parquet")).field("why").type == "string"



def test_a_problem_table_shows_brackets_as_written(capsys):
    """An event type or a path with brackets: rich took ``[x]`` for markup (dropped) and ``[/x]``
    for a closing tag (a traceback)."""
    from features.validation import Problem
    from pipeline.cli.common import err
    from pipeline.cli.render import problems_table

    p = Problem("events", "event_type", "unknown_event_type", "warning", 5, "5 rows of weird_[x]_event and odd_[/x]_one",
                "map [them] in roles.yaml", ("'weird_[x]_event' at row 3",))
    err.print(problems_table([p]))
    said = capsys.readouterr().err
    assert "weird_[x]_event" in said and "odd_[/x]_one" in said and "map [them]" in said, said


def test_a_failure_after_a_stop_signal_ends_as_the_signal(capsys):
    """A SIGTERM to the process group stops Spark's JVM too: the call waiting on it fails with the
    gateway's error, which is the signal's doing: exit 143 and one line, not a traceback and 1
    (measured on a Spark build: 143 within a second, its scratch folder removed)."""
    import typer

    from pipeline.cli import common

    common._signals.append(15)
    try:
        with pytest.raises(typer.Exit) as exit_, common.handled():
            raise ConnectionError("Error while sending or receiving")  # py4j's, once the JVM is gone
        assert exit_.value.exit_code == 143 and "Terminated (SIGTERM)." in capsys.readouterr().err
    finally:
        common._signals.clear()
    with pytest.raises(typer.Exit) as exit_, common.handled():  # without a signal: not taken for one
        raise ConnectionError("refused")
    assert exit_.value.exit_code == 1 and "Terminated" not in capsys.readouterr().err


def test_a_ctrl_c_is_kept_so_that_a_broken_spark_call_after_it_ends_as_the_interrupt(capsys):
    """A terminal's Ctrl-C reaches Spark's JVM too; the call in flight (or a pyspark `finally` after
    the interrupt) then failed as "Error: Connection refused (the command's output stream)", exit 1
    (seen on a Spark build interrupted 12 s in). The CLI's SIGINT handler now keeps the signal, as
    SIGTERM's does: exit 130 and one line."""
    import signal

    import typer

    from pipeline.cli import common

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI ignores SIGINT)
    common.on_sigterm()
    try:
        with pytest.raises(typer.Exit) as exit_, common.handled():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:  # as py4j's cleanup does: another error replaces the interrupt
                raise ConnectionRefusedError(111, "Connection refused") from None
        assert exit_.value.exit_code == 130 and "Interrupted." in capsys.readouterr().err
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        common._signals.clear()


def test_unknown_event_names_refuse_by_default_and_with_warn_are_left_out(project):
    """One new name upstream ('Wishlist Added') stopped every nightly run until roles.yaml was
    edited. `unknown_events: warn` says so and leaves those events out of every feature."""
    known = good_events()
    project.write_events(pd.concat([known, known.iloc[[2]].assign(event_id="w1", event_type="Wishlist Added", amount=None)],
                                   ignore_index=True))
    refused = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "r.parquet")])
    assert refused.exit_code == 1 and "'Wishlist Added'" in refused.output, refused.output
    roles = project.root / "configs" / "roles.yaml"
    roles.write_text(roles.read_text().replace("unknown_events: refuse", "unknown_events: warn"))
    out = project.root / "w.parquet"
    warned = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
    said = " ".join(warned.output.split())
    assert warned.exit_code == 0, said
    # the run names the event, as validation's table does (its warnings had dropped their examples)
    assert ("1 event has 1 event_type with no role, left out of every feature (unknown_events: warn in "
            "configs/roles.yaml); e.g. 'Wishlist Added' (1 event) (map each") in said, said
    project.write_events(known)  # the same log without the unknown event: the same features
    plain = project.root / "k.parquet"
    assert runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(plain)]).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(plain))


def test_describe_columns_lists_the_projects_own_columns_as_a_build_makes_them(project):
    """`features describe --columns` expands the catalog's patterns by the project's config, and
    what it lists is what a build on data with those roles makes, in the same order."""
    from pipeline.config import load_config
    from pipeline.jobs.features import build_features_job, project_columns

    write(generate(400, seed=3, end="2026-11-27"), project.workspace / "data")
    features_yaml = project.root / "configs" / "features.yaml"
    features_yaml.write_text(features_yaml.read_text()
                             .replace("windows_days: [7, 30, 90, 365]", "windows_days: [14, 60]")
                             .replace("window_roles: [purchase, email_open, email_click, page_view, add_to_cart]",
                                      "window_roles: [purchase, page_view]"))
    training = project.root / "configs" / "training.yaml"
    training.write_text(re.sub(r"(?m)^exclude_features: .*$", "exclude_features: [email_consent, n_page_view_60d]",
                               training.read_text()))
    cfg = load_config(project.root)
    cols = {c.name: c for c in project_columns(cfg)}
    assert {"n_purchase_14d", "n_page_view_60d", "spend_60d", "n_categories_14d"} <= set(cols)
    assert not {"n_purchase_30d", "n_email_open_14d", "spend_30d"} & set(cols)
    assert cols["open_rate"].needs == ("email_open", "email_send")
    assert cols["n_categories_14d"].needs == ("purchase", "events.category")
    assert cols["days_since_signup"].needs == ("customers.signup_at",)
    assert cols["n_events"].needs == ()
    # needs one of several: no single absence takes it away (it showed no need at all)
    assert cols["email_consent"].needs == ("one of: consent_granted, consent_withdrawn, unsubscribe, "
                                           "customers.email_consent + consent_updated_at",)
    assert not cols["n_page_view_60d"].model_input and not cols["email_consent"].model_input
    assert cols["n_page_view_14d"].model_input and not cols["customer_id"].model_input
    assert cols["n_page_view_60d"].meaning == "events of page_view in the last 60 days"

    built = build_features_job(cfg, datetime(2026, 11, 28), "duckdb", project.root / "f.parquet")
    names = [c for c in built.arrow().column_names if c not in built.profile.categorical]
    listed = [c for c in cols if c in names]
    assert listed == names  # every built column is listed, in the build's order
    for c in set(cols) - set(names):  # what the build left out needs a role or field this shop lacks
        assert any(need not in built.profile.roles for need in cols[c].needs if "." not in need), c

    result = runner.invoke(app, ["features", "describe", "--columns"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "n_purchase_14d" in text and "n_purchase_30d" not in text
    assert "model inputs leave out email_consent, n_page_view_60d (configs/training.yaml)" in text
    assert "Profile attributes: auto" in text
    # a listed attribute named like a feature column is refused, as a build refuses it (describe
    # listed the attribute in the feature's place, needing nothing)
    features_yaml.write_text(features_yaml.read_text().replace("categorical_attributes: auto",
                                                               "categorical_attributes: [frequency]"))
    result = runner.invoke(app, ["features", "describe", "--columns"])
    text = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "'frequency' is named like a customer_features column" in text, result.output
    assert "Traceback" not in result.output


def test_a_share_never_reads_all_or_none_when_it_is_not():
    """403 of 404 rows with a value read "100%" non-null in the feature tables."""
    from pipeline.cli.features import share_text

    assert share_text(403 / 404) == "99.8%" and share_text(1.0) == "100%" and share_text(0.0) == "0%"
    assert share_text(999_999 / 1_000_000) == ">99.9%" and share_text(1 / 404) == "0.2%"
    assert share_text(1 / 1_000_000) == "<0.1%" and share_text(0.5) == "50%"


def test_a_wide_profile_export_is_refused_by_auto_with_the_fix_not_run_out_of_memory(project):
    """1,000 text columns for 199 customers: `categorical_attributes: auto` counted every column's
    values in one read and took DuckDB past its memory limit (18.8 GiB unlimited), saying to raise
    the limit. Refused at once with the fix; listed attributes build."""
    from pipeline.jobs.features import AUTO_MAX_COLUMNS

    project.write_events(good_events())
    wide = pd.DataFrame({"customer_id": ["c0", "c1", "c2"], "signup_at": pd.to_datetime(["2026-01-01"] * 3),
                         **{f"a{j}": ["S", "M", "L"] for j in range(AUTO_MAX_COLUMNS + 1)}})
    wide.to_parquet(project.data / "customers.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    out = project.root / "f.parquet"
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and (f"has {AUTO_MAX_COLUMNS + 1:,} text columns that categorical_attributes: auto "
                                      f"would take as features, more than it takes ({AUTO_MAX_COLUMNS})") in said, said
    assert "categorical_attributes: [plan, country]" in said
    assert not out.exists()
    features = project.root / "configs" / "features.yaml"
    features.write_text(features.read_text().replace("categorical_attributes: auto", "categorical_attributes: [a0, a7]"))
    assert runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)]).exit_code == 0
    assert {"a0", "a7"} <= set(pd.read_parquet(out).columns) and "a8" not in pd.read_parquet(out).columns
    # a wide CSV export of numbers (every column text to a CSV) is no such set: counted in parts, then left out
    features.write_text(features.read_text().replace("categorical_attributes: [a0, a7]", "categorical_attributes: auto"))
    numbers = wide.assign(**{f"a{j}": ["1", "2", "3"] for j in range(AUTO_MAX_COLUMNS + 1)})
    numbers.assign(plan=["basic", "pro", "basic"]).to_csv(project.data / "customers.csv", index=False)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "csv", "path": "data/customers.csv"})
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
    assert result.exit_code == 0, result.output
    built = pd.read_parquet(out).columns
    assert "plan" in built and "a0" not in built
