"""Scoring runs in the workspace DuckDB file: the run record, scores, memberships, deltas, health.

Tables (all keyed by ``run_id``; one run per ``as_of``):

- ``scoring_runs``: one row per run: as_of, when it ran, engine, models and bands used, sizes;
- ``customer_scores``: every scored customer's scores and bands;
- ``segment_members``: the membership snapshot (segment, customer, scores, bands, holdout,
  consented = email consent as of the run, sendable = consented, not held out, not a suppression);
- ``customer_reasons``: the top 3 reasons behind each score of every customer sendable in some
  segment (feature, value, push in log-odds and in probability points, the sentence);
- ``segment_deltas``: who ``entered`` or ``exited`` each segment against the previous run (the
  latest run with an earlier as_of). Customers who stayed are the members not listed here;
- ``segment_health``: per segment: size, sendable, holdout, entered, exited, stayed,
  volatility (``(entered + exited) / (stayed + entered + exited)``: 0 = same people, 1 = all new)
  and coverage (share of scored customers whose rule inputs are all known).

A run is written in one transaction: re-running an as_of replaces that run, and a run that dies
before its commit leaves the database exactly as it was.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from typing import Callable

import duckdb
import pandas as pd

from features.normalize import literal
from pipeline.workspace import waiting_for_lock

SCORE_COLUMNS = ("score", "score_100", "band")

_DDL = {
    "scoring_runs": """run_id VARCHAR PRIMARY KEY, as_of TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP,
        engine VARCHAR, n_customers BIGINT, models JSON, bands JSON, previous_run_id VARCHAR,
        mlflow_run_id VARCHAR, export_dir VARCHAR, config JSON, n_events BIGINT, event_days JSON""",
    "segment_health": """run_id VARCHAR, as_of TIMESTAMP, segment VARCHAR, kind VARCHAR, owner VARCHAR,
        size BIGINT, sendable BIGINT, holdout BIGINT, entered BIGINT, exited BIGINT, stayed BIGINT,
        previous_size BIGINT, volatility DOUBLE, coverage DOUBLE""",
    "segment_deltas": "run_id VARCHAR, as_of TIMESTAMP, segment VARCHAR, customer_id VARCHAR, change VARCHAR",
    "customer_reasons": """run_id VARCHAR, as_of TIMESTAMP, customer_id VARCHAR, target VARCHAR, rank INTEGER,
        feature VARCHAR, value VARCHAR, log_odds DOUBLE, points DOUBLE, reason VARCHAR""",
    # a run scored again for the same as_of replaces the one before; its id then leads here
    # scored_at: when the replaced run was scored (null for rows kept before it was recorded)
    "replaced_runs": "run_id VARCHAR, as_of TIMESTAMP, replaced_by VARCHAR, replaced_at TIMESTAMP, scored_at TIMESTAMP",
    # ... and who was in its segments, on which side: what its exports told a sender, kept for audit
    # and for lift to say when the run that replaced it drew other sides
    "replaced_members": "run_id VARCHAR, as_of TIMESTAMP, segment VARCHAR, customer_id VARCHAR, holdout BOOLEAN, "
                        "sendable BOOLEAN",
    # runs whose per-customer rows were dropped by `dynseg segments prune` (their health rows stay)
    "pruned_runs": "run_id VARCHAR, as_of TIMESTAMP, pruned_at TIMESTAMP, keep_days INTEGER",
    # runs deleted by `dynseg segments drop-run` (a run scored by mistake), for a command given the id
    "dropped_runs": "run_id VARCHAR, as_of TIMESTAMP, dropped_at TIMESTAMP, reason VARCHAR",
    # who a segment's rule selected but a segment it excludes took away (so an exit can say why)
    "segment_exclusions": "run_id VARCHAR, as_of TIMESTAMP, segment VARCHAR, customer_id VARCHAR, excluded_by VARCHAR",
    # the ids the run's identity resolution folded into another (its exports carry the canonical id):
    # a past run's merges, not today's (the workspace's identity_map holds the latest)
    "run_identity_merges": "run_id VARCHAR, as_of TIMESTAMP, customer_id VARCHAR, canonical_id VARCHAR",
    # what MLflow's earlier scoring records are to be told once a run commits (an outbox): tags for
    # a record (replaced, dropped) or `movement_of`, a run whose entered/exited were taken again.
    # Queued in the run's transaction and removed once done, so a stop after the commit leaves
    # them for the next run instead of losing them
    "mlflow_pending": "id VARCHAR, queued_at TIMESTAMP, mlflow_run_id VARCHAR, tags JSON, movement_of VARCHAR",
}

#: The tables that hold a row per customer (and run): what ``prune`` drops for old runs.
PER_CUSTOMER = ("customer_scores", "customer_reasons", "segment_members", "segment_deltas", "replaced_members",
                "segment_exclusions", "run_identity_merges")

#: Test hook: the path of a file to create just before COMMIT, after which the run waits (so a
#: test can kill it inside the transaction). Never set in normal use.
PAUSE_ENV = "DYNSEG_TEST_PAUSE_BEFORE_COMMIT"


def score_columns(targets: list[str]) -> list[str]:
    return [f"{t}_{c}" for t in targets for c in SCORE_COLUMNS]


def ensure_tables(con: duckdb.DuckDBPyConnection, schema: str, targets: list[str]) -> None:
    for name, ddl in _DDL.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{name} ({ddl})")
    scores = ", ".join(f"{t}_score DOUBLE, {t}_score_100 INTEGER, {t}_band VARCHAR" for t in targets)
    con.execute(f"CREATE TABLE IF NOT EXISTS {schema}.customer_scores "
                f"(run_id VARCHAR, as_of TIMESTAMP, customer_id VARCHAR, {scores})")
    con.execute(f"CREATE TABLE IF NOT EXISTS {schema}.segment_members (run_id VARCHAR, as_of TIMESTAMP, "
                f"segment VARCHAR, kind VARCHAR, customer_id VARCHAR, holdout BOOLEAN, consented BOOLEAN, "
                f"sendable BOOLEAN, {scores})")
    # A target scored now but not when the tables were made (or a column added since) gets added.
    for table in ("customer_scores", "segment_members"):
        have = {r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND table_name = ?",
            [schema, table]).fetchall()}
        wanted = [(f"{t}_{c}", typ) for t in targets
                  for c, typ in (("score", "DOUBLE"), ("score_100", "INTEGER"), ("band", "VARCHAR"))]
        if table == "segment_members":
            wanted.append(("consented", "BOOLEAN"))
        for col, typ in wanted:
            if col not in have:
                con.execute(f"ALTER TABLE {schema}.{table} ADD COLUMN {col} {typ}")
    # a column added to a table since a workspace made it
    con.execute(f"ALTER TABLE {schema}.replaced_runs ADD COLUMN IF NOT EXISTS scored_at TIMESTAMP")
    # the events before its as_of a run read (null for runs scored before it was recorded)
    con.execute(f"ALTER TABLE {schema}.scoring_runs ADD COLUMN IF NOT EXISTS n_events BIGINT")
    # and per day in the longest feature window (a re-run is checked against them)
    con.execute(f"ALTER TABLE {schema}.scoring_runs ADD COLUMN IF NOT EXISTS event_days JSON")


def previous_run(con: duckdb.DuckDBPyConnection, schema: str, as_of: datetime) -> str | None:
    """The latest run before ``as_of`` (the one deltas are taken against)."""
    if not _has_table(con, schema, "scoring_runs"):
        return None
    rows = con.execute(f"SELECT run_id FROM {schema}.scoring_runs WHERE as_of < ? ORDER BY as_of DESC LIMIT 1",
                       [as_of]).fetchall()
    return rows[0][0] if rows else None


def _has_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                            [schema, table]).fetchall()[0][0])


def write_run(con: duckdb.DuckDBPyConnection, db_path: Path, run: dict, targets: list[str],
              scores_view: str, members_view: str, health_view: str, reasons_view: str | None = None,
              before_commit: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
              state: dict | None = None, exclusions_view: str | None = None,
              identity_map: str | None = None) -> str | None:
    """Replace the run at ``run['as_of']`` with this one, in one transaction.

    ``scores_view``/``members_view`` are relations on ``con`` (customer scores and memberships);
    ``health_view`` has one row per segment with size counts and coverage; deltas and the rest of
    the health figures are computed here against the previous run, whose id is returned.
    ``exclusions_view``: who each segment's rule selected but an exclusion took away
    (``segment, customer_id, excluded_by``; see :func:`pipeline.segments.exclusions_sql`).
    ``identity_map``: the run's identity map (every linked id and its canonical id), which replaces
    the workspace's; the ids it folded into another are kept with the run (``run_identity_merges``).
    ``before_commit(con)`` runs last inside the transaction (the workspace attached as ``ws``):
    what it writes commits with the run, and if it raises, nothing does. ``state``: see
    :func:`pipeline.workspace.attached_transaction` (``state["committed"]`` once the run stands).
    """
    from features.asof import as_of_label
    from pipeline.workspace import attached_transaction

    db_path.parent.mkdir(parents=True, exist_ok=True)
    with attached_transaction(con, db_path, state, done=f"scoring run {run['run_id']} (as of "
                                                        f"{as_of_label(run['as_of'])}) was recorded"):
        ensure_tables(con, "ws", targets)
        as_of, run_id = run["as_of"], run["run_id"]
        prev = run["previous_run_id"] = previous_run(con, "ws", as_of)
        newest_pruned, prev_pruned = _pruned_state(con, prev)
        if newest_pruned is not None and (as_of <= newest_pruned or prev_pruned):  # checked first by score
            raise ValueError(_pruned_era_text(as_of, newest_pruned))
        con.execute("INSERT INTO ws.replaced_runs (run_id, as_of, replaced_by, replaced_at, scored_at) SELECT run_id, "
                    "as_of, ?, now()::TIMESTAMP, started_at FROM ws.scoring_runs WHERE as_of = ?", [run_id, as_of])
        con.execute("INSERT INTO ws.replaced_members SELECT run_id, as_of, segment, customer_id, holdout, sendable "
                    "FROM ws.segment_members WHERE as_of = ? AND kind <> 'suppression'", [as_of])
        for table in ("scoring_runs", "customer_scores", "segment_members", "segment_deltas", "segment_health",
                      "customer_reasons", "segment_exclusions", "run_identity_merges"):
            con.execute(f"DELETE FROM ws.{table} WHERE as_of = ?", [as_of])
        cols = list(run)
        con.execute(f"INSERT INTO ws.scoring_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [run[c] for c in cols])
        sc = ", ".join(score_columns(targets))
        con.execute(f"INSERT INTO ws.customer_scores (run_id, as_of, customer_id, {sc}) "
                    f"SELECT ?, ?, customer_id, {sc} FROM {scores_view}", [run_id, as_of])
        con.execute(f"INSERT INTO ws.segment_members (run_id, as_of, segment, kind, customer_id, holdout, consented, "
                    f"sendable, {sc}) SELECT ?, ?, segment, kind, customer_id, holdout, consented, sendable, {sc} "
                    f"FROM {members_view}",
                    [run_id, as_of])
        if exclusions_view:
            con.execute(f"INSERT INTO ws.segment_exclusions SELECT ?, ?, segment, customer_id, excluded_by "
                        f"FROM {exclusions_view}", [run_id, as_of])
        if reasons_view:
            con.execute(f"INSERT INTO ws.customer_reasons SELECT ?, ?, customer_id, target, rank, feature, value, "
                        f"log_odds, points, reason FROM {reasons_view}", [run_id, as_of])
        _insert_deltas(con, run_id, as_of, members_view, prev)
        if identity_map:
            con.execute(f"CREATE OR REPLACE TABLE ws.identity_map AS SELECT * FROM {identity_map}")
            con.execute(f"INSERT INTO ws.run_identity_merges SELECT ?, ?, customer_id, canonical_id FROM {identity_map} "
                        "WHERE customer_id <> canonical_id", [run_id, as_of])
        con.execute(
            "INSERT INTO ws.segment_health "
            "SELECT ?, ?, h.segment, h.kind, h.owner, h.size, h.sendable, h.holdout, "
            "coalesce(d.entered, 0), coalesce(d.exited, 0), h.size - coalesce(d.entered, 0), p.size, "
            "CASE WHEN h.size + coalesce(d.exited, 0) = 0 THEN NULL "
            "ELSE (coalesce(d.entered, 0) + coalesce(d.exited, 0)) / (h.size + coalesce(d.exited, 0)) END, "
            f"h.coverage FROM {health_view} h "
            "LEFT JOIN (SELECT segment, count(*) FILTER (WHERE change = 'entered') AS entered, "
            "count(*) FILTER (WHERE change = 'exited') AS exited FROM ws.segment_deltas WHERE run_id = ? "
            "GROUP BY segment) d USING (segment) "
            "LEFT JOIN (SELECT segment, count(*) AS size FROM ws.segment_members WHERE run_id = ? GROUP BY segment) p "
            "USING (segment)",
            [run_id, as_of, run_id, prev])
        _rechain_next(con, run_id, as_of)
        if before_commit is not None:
            before_commit(con)
        _pause_for_tests()
    return prev


def _pruned_state(con: duckdb.DuckDBPyConnection, prev: str | None) -> tuple[datetime | None, bool]:
    """On the attached workspace ``ws``: the newest pruned run's as_of (None: nothing pruned), and
    whether run ``prev`` is one of the pruned (a run moving against it would find its members gone)."""
    if not _has_table(con, "ws", "pruned_runs"):
        return None, False
    newest = con.execute("SELECT max(as_of) FROM ws.pruned_runs").fetchall()[0][0]
    return newest, newest is not None and prev is not None and bool(
        con.execute("SELECT count(*) FROM ws.pruned_runs WHERE run_id = ?", [prev]).fetchall()[0][0])


def _insert_deltas(con: duckdb.DuckDBPyConnection, run_id: str, as_of: datetime, members: str, prev: str | None,
                   member_params: list | None = None) -> None:
    """Who ``entered`` or ``exited`` each segment in run ``run_id`` against run ``prev``. ``members``:
    the run's memberships (segment, customer_id), a relation on ``con`` whose ``?`` placeholders
    take ``member_params``."""
    mp = member_params or []
    con.execute(
        "INSERT INTO ws.segment_deltas "
        f"SELECT ?, ?, m.segment, m.customer_id, 'entered' FROM {members} m "
        "WHERE NOT EXISTS (SELECT 1 FROM ws.segment_members p WHERE p.run_id = ? "
        "AND p.segment = m.segment AND p.customer_id = m.customer_id) "
        "UNION ALL "
        "SELECT ?, ?, p.segment, p.customer_id, 'exited' FROM ws.segment_members p WHERE p.run_id = ? "
        f"AND NOT EXISTS (SELECT 1 FROM {members} m WHERE p.segment = m.segment "
        "AND p.customer_id = m.customer_id)",
        [run_id, as_of, *mp, prev, run_id, as_of, prev, *mp])


def _rechain_next(con: duckdb.DuckDBPyConnection, run_id: str, as_of: datetime) -> None:
    """The run after ``as_of`` (if any) now follows this one: a backfilled date, or a re-scored one
    (whose old run id is gone). Its deltas and movement figures are taken again against this run,
    so every run's entered/exited adds up with the one before it."""
    rows = con.execute("SELECT run_id, as_of FROM ws.scoring_runs WHERE as_of > ? ORDER BY as_of LIMIT 1",
                       [as_of]).fetchall()
    if not rows:
        return
    nxt, nxt_as_of = rows[0]
    con.execute("UPDATE ws.scoring_runs SET previous_run_id = ? WHERE run_id = ?", [run_id, nxt])
    con.execute("DELETE FROM ws.segment_deltas WHERE run_id = ?", [nxt])
    _insert_deltas(con, nxt, nxt_as_of, "(SELECT segment, customer_id FROM ws.segment_members WHERE run_id = ?)",
                   run_id, [nxt])
    con.execute(
        "UPDATE ws.segment_health h SET entered = d.entered, exited = d.exited, stayed = h.size - d.entered, "
        "previous_size = d.previous_size, "
        "volatility = CASE WHEN h.size + d.exited = 0 THEN NULL ELSE (d.entered + d.exited) / (h.size + d.exited) END "
        "FROM (SELECT s.segment, "
        "  (SELECT count(*) FROM ws.segment_deltas x WHERE x.run_id = ? AND x.segment = s.segment AND x.change = 'entered') AS entered, "
        "  (SELECT count(*) FROM ws.segment_deltas x WHERE x.run_id = ? AND x.segment = s.segment AND x.change = 'exited') AS exited, "
        "  (SELECT nullif(count(*), 0) FROM ws.segment_members p WHERE p.run_id = ? AND p.segment = s.segment) AS previous_size "
        "  FROM ws.segment_health s WHERE s.run_id = ?) d "
        "WHERE h.run_id = ? AND h.segment = d.segment",
        [nxt, nxt, run_id, nxt, nxt])


def queue_mlflow(con: duckdb.DuckDBPyConnection, *, mlflow_run_id: str | None = None,
                 tags: dict[str, str] | None = None, movement_of: str | None = None) -> None:
    """Queue, in the open transaction (the workspace attached as ``ws``), an update of an earlier
    MLflow scoring record: ``tags`` for ``mlflow_run_id``, or the movement of run ``movement_of``
    (its entered/exited and the run they are measured against, read when it is done). See
    :func:`pipeline.jobs.score.flush_mlflow`."""
    con.execute(f"CREATE TABLE IF NOT EXISTS ws.mlflow_pending ({_DDL['mlflow_pending']})")
    con.execute("INSERT INTO ws.mlflow_pending VALUES (?, now()::TIMESTAMP, ?, ?, ?)",
                [uuid.uuid4().hex, mlflow_run_id, json.dumps(tags) if tags else None, movement_of])


def pending_mlflow(db_path: Path) -> pd.DataFrame:
    """The queued MLflow updates, oldest first (empty if none, or no table yet)."""
    return read_optional(db_path, "SELECT id, mlflow_run_id, tags, movement_of FROM mlflow_pending "
                                  "ORDER BY queued_at")


def mlflow_done(db_path: Path, ids: list[str]) -> None:
    """Remove the queued MLflow updates ``ids``, once done."""
    from pipeline.workspace import attached_transaction

    if not ids:
        return
    con = duckdb.connect()
    try:
        with attached_transaction(con, db_path):
            con.execute("DELETE FROM ws.mlflow_pending WHERE list_contains(?, id)", [list(ids)])
    finally:
        con.close()


def _pause_for_tests() -> None:
    marker = os.environ.get(PAUSE_ENV)
    if marker:
        Path(marker).write_text("in transaction")
        time.sleep(600)


def read(db_path: Path, query: str, params: list | None = None) -> pd.DataFrame:
    """A read-only query on the workspace database (empty frame if there is no database yet)."""
    if not db_path.is_file():
        return pd.DataFrame()
    con = waiting_for_lock(lambda: duckdb.connect(str(db_path), read_only=True))
    try:
        if not _has_table(con, _db_name(con), "scoring_runs"):
            return pd.DataFrame()
        return con.execute(query, params or []).df()
    finally:
        con.close()


def read_optional(db_path: Path, query: str, params: list | None = None) -> pd.DataFrame:
    """:func:`read` of a table a workspace may not have yet (made by a later dynseg, or only once
    used: ``pruned_runs``, ``replaced_members``, ``simulated_campaigns``...): empty when it is missing."""
    try:
        return read(db_path, query, params)
    except duckdb.CatalogException:
        return pd.DataFrame()


def _db_name(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT current_database()").fetchall()[0][0]


def find(db: Path, run_id: str | None = None, as_of: datetime | None = None) -> pd.Series:
    """A scoring run by id, by as_of, or the latest; a miss names the latest runs there are."""
    from features.asof import as_of_label

    if run_id:
        found = read(db, "SELECT * FROM scoring_runs WHERE run_id = ?", [run_id])
    elif as_of:
        found = read(db, "SELECT * FROM scoring_runs WHERE as_of = ?", [as_of])
    else:
        found = read(db, "SELECT * FROM scoring_runs ORDER BY as_of DESC LIMIT 1")
    if found.empty and run_id:
        gone = dropped(db, run_id)
        if gone is not None:
            raise ValueError(_dropped_text(run_id, *gone))
        now = _replacement(db, run_id)
        if now is not None:
            # the run that replaced it may have been dropped since: "use --run X" then named a run
            # that no command finds, and the date may hold no run at all
            later = dropped(db, now[0])
            if later is not None:
                standing = read(db, "SELECT run_id FROM scoring_runs WHERE as_of = ?", [now[1]])
                raise ValueError(_replaced_text(run_id, *now) + f", which was dropped since ({_dropped_text(now[0], *later)})"
                                 + (f". The run for that date now is {standing.run_id[0]!r}: use --run "
                                    f"{standing.run_id[0]} or --as-of {as_of_label(now[1])}" if not standing.empty else
                                    ": no run stands for that date now; score it again: dynseg score --as-of "
                                    f"{as_of_label(now[1])}"))
            raise ValueError(_replaced_text(run_id, *now) + f". Use --run {now[0]} or --as-of {as_of_label(now[1])}")
    if found.empty:
        what = f"run {run_id!r}" if run_id else f"run as of {as_of_label(as_of)}" if as_of else "run"
        have = read(db, "SELECT run_id, as_of FROM scoring_runs ORDER BY as_of DESC LIMIT 6") if db.exists() else None
        if have is None or have.empty:
            raise ValueError(f"no scoring {what} in {db}; score first: dynseg score --as-of DATE")
        if run_id:
            _not_a_run_id(db, run_id)
        dates = ", ".join(f"{as_of_label(t.to_pydatetime())} (run {r})" for r, t in have.itertuples(index=False))
        raise ValueError(f"no scoring {what} in {db}; the latest runs are as of {dates} "
                         "(`dynseg segments show SEGMENT` lists every run of a segment); or score it: dynseg score --as-of DATE")
    return found.iloc[0]


def _not_a_run_id(db: Path, given: str) -> None:
    """Say what an id that names no run was meant to be: a date (the run as of it), or the start of
    one run's id; nothing to say, nothing raised."""
    from features.asof import as_of_label, parse_as_of

    try:
        instant = parse_as_of(given)
    except ValueError:  # (BadValue, AheadOfNow...: no date)
        instant = None
    if instant is not None:
        on = read(db, "SELECT run_id FROM scoring_runs WHERE as_of = ?", [instant])
        if not on.empty:
            raise ValueError(f"{given!r} is a date, not a run id: the run as of {as_of_label(instant)} is "
                             f"{on.run_id[0]!r} (name it by its id, or by its date: --as-of {as_of_label(instant)}, "
                             "as_of= in Python)")
        return
    started = read(db, "SELECT run_id, as_of FROM scoring_runs WHERE starts_with(run_id, ?) ORDER BY as_of DESC",
                   [given])
    if len(started) == 1:
        raise ValueError(f"no scoring run {given!r}: run ids are whole; did you mean run {started.run_id[0]!r} "
                         f"(as of {as_of_label(started.as_of[0].to_pydatetime())})?")


def require_segment(db: Path, run: pd.Series, name: str) -> None:
    """Refuse a segment the run does not have (in its health or its exits: a segment removed from
    the config exits its members), with the closest name; a typo otherwise read as an empty segment."""
    import difflib

    from features.asof import as_of_label

    known = set(read(db, "SELECT DISTINCT segment FROM segment_health WHERE run_id = ?", [run.run_id]).segment)
    if name in known or name in set(read(db, "SELECT DISTINCT segment FROM segment_deltas WHERE run_id = ?",
                                         [run.run_id]).segment):
        return
    close = difflib.get_close_matches(name, sorted(known), n=1)
    raise ValueError(f"the run as of {as_of_label(run.as_of)} (run {run.run_id}) has no segment {name!r}"
                     + (f"; did you mean {close[0]!r}?" if close else ".") + f" Its segments: {', '.join(sorted(known))}")


def unknown_segment(db: Path, defined: list[str], name: str) -> ValueError | None:
    """The error for a segment neither in configs/segments.yaml (``defined``) nor in any stored run;
    None when it is in either."""
    import difflib

    if name in defined or not read(db, "SELECT 1 FROM segment_health WHERE segment = ? LIMIT 1", [name]).empty:
        return None
    known = read(db, "SELECT DISTINCT segment FROM segment_health")
    gone = sorted(set(known.segment if not known.empty else []) - set(defined))
    close = difflib.get_close_matches(name, [*defined, *gone], n=1)
    return ValueError(f"no segment named {name!r} in configs/segments.yaml"
                      + (" or in past scoring runs" if gone else " or in any past scoring run")
                      + (f"; did you mean {close[0]!r}?" if close else ".")
                      + f" Defined: {', '.join(defined)}"
                      + (f"; removed since their last run: {', '.join(gone)}" if gone else ""))


def _replacement(db: Path, run_id: str) -> tuple[str, datetime] | None:
    """The run that now stands for replaced run ``run_id`` (followed through later replacements) and
    its as_of; None when the id was never replaced (or the workspace predates the record)."""
    rows = read_optional(db, _REPLACEMENT_SQL.format(table="replaced_runs"), [run_id])
    if rows.empty:
        return None
    return rows.id[0], rows.as_of[0].to_pydatetime()


_REPLACEMENT_SQL = ("WITH RECURSIVE chain(id, as_of, depth) AS (SELECT replaced_by, as_of, 0 FROM {table} "
                    "WHERE run_id = ? UNION ALL SELECT r.replaced_by, r.as_of, c.depth + 1 FROM {table} r "
                    "JOIN chain c ON r.run_id = c.id WHERE c.depth < 1000) "
                    "SELECT id, as_of FROM chain ORDER BY depth DESC LIMIT 1")


def _replaced_text(run_id: str, by: str, as_of: datetime) -> str:
    from features.asof import as_of_label

    return (f"the scoring run {run_id!r} (as of {as_of_label(as_of)}) was replaced by run {by!r}, the same date "
            "scored again; a date keeps one run")


def replaced_sides(db: Path, run_id: str) -> pd.DataFrame:
    """Per run this one replaced and segment: members in both on the other side of the holdout now
    (``flipped``), and those the replaced run could send to who are held out now (``sent_now_held``).
    Empty when the run replaced none, none moved, or the workspace predates the record."""
    return read_optional(db, """
            SELECT o.run_id AS replaced, o.segment, count(*) FILTER (WHERE o.holdout <> m.holdout) AS flipped,
                   count(*) FILTER (WHERE o.sendable AND m.holdout) AS sent_now_held,
                   count(*) FILTER (WHERE o.holdout AND m.sendable) AS held_now_sent
            FROM replaced_members o
            JOIN replaced_runs x ON x.run_id = o.run_id AND x.replaced_by = ?
            JOIN segment_members m ON m.run_id = ? AND m.segment = o.segment AND m.customer_id = o.customer_id
            GROUP BY ALL HAVING count(*) FILTER (WHERE o.holdout <> m.holdout) > 0 ORDER BY o.segment""",
                         [run_id, run_id])


def pruned(db: Path, run_id: str) -> tuple[datetime, int] | None:
    """When run ``run_id``'s per-customer rows were pruned, and the ``--keep-days`` then; None if never."""
    rows = read_optional(db, "SELECT pruned_at, keep_days FROM pruned_runs WHERE run_id = ?", [run_id])
    if rows.empty:
        return None
    return rows.pruned_at[0].to_pydatetime(), int(rows.keep_days[0])


def require_rows(db: Path, run: pd.Series, needs: str) -> None:
    """Refuse, naming the prune, when ``run``'s per-customer rows are gone (``needs``: what the
    command wanted of them, e.g. "its members")."""
    said = pruned_note(db, run, needs)
    if said is not None:
        raise ValueError(said)


def pruned_note(db: Path, run: pd.Series, needs: str) -> str | None:
    """What :func:`require_rows` says of a pruned run (for a command that shows what remains
    instead of refusing); None when the run is kept in full."""
    from features.asof import as_of_label

    done = pruned(db, run.run_id)
    if done is None:
        return None
    at, keep = done
    return (f"the scoring run {run.run_id} (as of {as_of_label(run.as_of)}) was pruned on "
            f"{at:%Y-%m-%d %H:%M} UTC (`dynseg segments prune --keep-days {keep}`): {needs} "
            "are gone with its other per-customer rows. Its segment sizes remain (`dynseg segments list "
            f"--run {run.run_id}`, `dynseg segments show NAME`); the runs of the {keep} days before the "
            "latest are kept in full")


@dataclass(frozen=True)
class Pruned:
    runs: pd.DataFrame  # run_id, as_of of the runs pruned (or that would be, on a dry run)
    rows: dict[str, int]  # per-customer rows dropped, per table
    bytes_before: int
    bytes_after: int


def prune(db_path: Path, keep_days: int, *, dry_run: bool = False) -> Pruned:
    """Drop the per-customer rows (:data:`PER_CUSTOMER`) of every run older than ``keep_days`` days
    before the latest run, in one transaction; the runs' records and segment health stay, and each
    pruned run is recorded in ``pruned_runs``. The latest run is always kept (the next run's
    movement is taken against it). The file then shrinks (:func:`_compact`)."""
    if not db_path.is_file():
        return Pruned(pd.DataFrame(columns=["run_id", "as_of"]), {}, 0, 0)
    before = db_path.stat().st_size
    con = waiting_for_lock(lambda: duckdb.connect(str(db_path)))
    try:
        schema = _db_name(con)
        if not _has_table(con, schema, "scoring_runs"):
            return Pruned(pd.DataFrame(columns=["run_id", "as_of"]), {}, before, before)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE TABLE IF NOT EXISTS pruned_runs ({_DDL['pruned_runs']})")
            have = {t for t in PER_CUSTOMER if _has_table(con, schema, t)}
            # the cut is a number of days before the latest run's as_of (not the clock: a backfill
            # workspace scored for past dates is pruned by the dates it holds)
            old = con.execute(
                "SELECT run_id, as_of FROM scoring_runs WHERE as_of < (SELECT max(as_of) FROM scoring_runs) - "
                "to_days(?::INTEGER) AND run_id NOT IN (SELECT run_id FROM pruned_runs) ORDER BY as_of",
                [keep_days]).df()
            cut = con.execute("SELECT max(as_of) - to_days(?::INTEGER) FROM scoring_runs", [keep_days]).fetchall()[0][0]
            con.register("old", old)
            rows = {}
            for t in sorted(have):
                # replaced runs' rows go by date (their ids are no longer among scoring_runs)
                where = "as_of < ?" if t == "replaced_members" else "run_id IN (SELECT run_id FROM old)"
                rows[t] = con.execute(f"SELECT count(*) FROM {t} WHERE {where}",
                                      [cut] if t == "replaced_members" else []).fetchall()[0][0]
                if not dry_run:
                    con.execute(f"DELETE FROM {t} WHERE {where}", [cut] if t == "replaced_members" else [])
            if not dry_run and len(old):
                con.execute("INSERT INTO pruned_runs SELECT run_id, as_of, now()::TIMESTAMP, ? FROM old", [keep_days])
                _pause_for_tests()
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("ROLLBACK" if dry_run else "COMMIT")
        if not dry_run and (len(old) or _mostly_free(con)):
            # (with nothing to prune, the space of a prune whose compaction was stopped is handed back)
            _compact(con, schema, db_path)
    finally:
        con.close()
    return Pruned(old, rows, before, db_path.stat().st_size)


#: The free space a prune with nothing to prune hands back, at least (DuckDB keeps a few free blocks
#: in any file: a small one read as a third free, and every prune copied it)
COMPACT_FREE_BYTES = 64 << 20


def _mostly_free(con: duckdb.DuckDBPyConnection, share: float = 0.25) -> bool:
    """Whether more than ``share`` of the database file's blocks, and :data:`COMPACT_FREE_BYTES`,
    are free: deleted rows whose space was never handed back (a prune stopped in its compaction
    left a file twice its size)."""
    size = con.execute("PRAGMA database_size").fetchall()
    cols = [d[0] for d in con.description]
    row = dict(zip(cols, size[0])) if size else {}
    total, free, block = row.get("total_blocks") or 0, row.get("free_blocks") or 0, row.get("block_size") or 0
    return total > 0 and free / total > share and free * block >= COMPACT_FREE_BYTES


def _compact(con: duckdb.DuckDBPyConnection, schema: str, db_path: Path) -> None:
    """Hand the deleted rows' space back: DuckDB reuses it but never shrinks the file, so the
    database is copied into a temp file beside it and renamed over it, while ``con`` still holds
    the file's lock (no other run writes to it meanwhile; one that opens it next gets the copy)."""
    from pipeline.workspace import temp_sibling

    con.execute("CHECKPOINT")
    tmp = temp_sibling(db_path)
    try:
        con.execute(f"ATTACH {literal(str(tmp))} AS compacted")
        try:
            con.execute(f"COPY FROM DATABASE {schema} TO compacted")
        finally:
            con.execute("DETACH compacted")
        os.replace(tmp, db_path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)


def refuse_pruned_era(db: Path, as_of: datetime) -> None:
    """Refuse a run as of a date at or before the newest pruned run: its movement would be taken
    against a run whose members are gone (everyone would read as entered), and a date scored again
    there would have nothing to compare its sides with."""
    rows = read_optional(db, "SELECT max(as_of) AS newest, (SELECT count(*) FROM pruned_runs WHERE run_id = (SELECT "
                             "run_id FROM scoring_runs WHERE as_of < ? ORDER BY as_of DESC LIMIT 1)) AS prev_pruned "
                             "FROM pruned_runs", [as_of])
    if rows.empty or pd.isna(rows.newest[0]):
        return
    newest = rows.newest[0].to_pydatetime()
    if as_of <= newest or rows.prev_pruned[0]:  # (a date just after the pruned ones: its run before is one)
        raise ValueError(_pruned_era_text(as_of, newest))


def _pruned_era_text(as_of: datetime, newest: datetime) -> str:
    from features.asof import as_of_label

    return (f"cannot score as of {as_of_label(as_of)}: the runs up to {as_of_label(newest)} were pruned "
            "(`dynseg segments prune`), and this run's entered/exited would be taken against one of them, whose "
            "members are gone. Score a date after the first run kept in full, or backfill into a fresh workspace "
            "(DYNSEG_WORKSPACE)")


@dataclass(frozen=True)
class Dropped:
    run_id: str
    as_of: datetime
    previous: str | None  # the run before it, which the next one now follows
    next: str | None
    mlflow_run_id: str | None
    export_dir: str | None


def drop_run(db_path: Path, run_id: str, reason: str = "") -> Dropped:
    """Delete scoring run ``run_id`` (a run scored by mistake: the wrong date, a stray run without
    --as-of) in one transaction: its rows in every table, and the run after it then follows the
    one before it, its entered/exited taken again against that run (as a backfill does). Recorded
    in ``dropped_runs``."""
    from features.asof import as_of_label
    from pipeline.workspace import attached_transaction

    con = duckdb.connect()
    try:
        with attached_transaction(con, db_path, done=f"scoring run {run_id} was dropped"):
            found = con.execute("SELECT as_of, previous_run_id, mlflow_run_id, export_dir FROM ws.scoring_runs "
                                "WHERE run_id = ?", [run_id]).fetchall()
            if not found:
                done = (con.execute("SELECT as_of, dropped_at, reason FROM ws.dropped_runs WHERE run_id = ?",
                                    [run_id]).fetchall() if _has_table(con, "ws", "dropped_runs") else [])
                if done:
                    raise ValueError(_dropped_text(run_id, *done[0]))
                now = (con.execute(_REPLACEMENT_SQL.format(table="ws.replaced_runs"), [run_id]).fetchall()
                       if _has_table(con, "ws", "replaced_runs") else [])
                if now:  # its rows are gone already; the run that stands for its date is another matter
                    raise ValueError(_replaced_text(run_id, *now[0]) + f": its rows went with it. To drop that date's "
                                     f"run, name it: dynseg segments drop-run {now[0][0]} --reason ...")
                raise ValueError(f"no scoring run {run_id!r} in {db_path}; `dynseg segments list --json` names the "
                                 "latest run, `dynseg segments show SEGMENT` every run's date")
            as_of, prev, mlflow_run_id, export_dir = found[0]
            newest_pruned, prev_pruned = _pruned_state(con, prev)
            has_next = bool(con.execute("SELECT count(*) FROM ws.scoring_runs WHERE as_of > ?", [as_of]).fetchall()[0][0])
            if newest_pruned is not None and (as_of <= newest_pruned or (prev_pruned and has_next)):
                raise ValueError(f"the run {run_id} (as of {as_of_label(as_of)}) is among the pruned runs or follows "
                                 f"one (pruned up to {as_of_label(newest_pruned)}): the run after it would move "
                                 "against members that are gone")
            con.execute(f"CREATE TABLE IF NOT EXISTS ws.dropped_runs ({_DDL['dropped_runs']})")
            for table in ("scoring_runs", "customer_scores", "segment_members", "segment_deltas", "segment_health",
                          "customer_reasons", "segment_exclusions", "run_identity_merges"):
                if _has_table(con, "ws", table):  # (a workspace scored before segment_exclusions has none)
                    con.execute(f"DELETE FROM ws.{table} WHERE run_id = ?", [run_id])
            con.execute("INSERT INTO ws.dropped_runs VALUES (?, ?, now()::TIMESTAMP, ?)", [run_id, as_of, reason])
            nxt = con.execute("SELECT run_id, mlflow_run_id FROM ws.scoring_runs WHERE as_of > ? ORDER BY as_of "
                              "LIMIT 1", [as_of]).fetchall()
            # MLflow is told after the commit, from a queue that a stop leaves for the next command
            if mlflow_run_id:
                queue_mlflow(con, mlflow_run_id=mlflow_run_id, tags={"dynseg.dropped": reason or "yes"})
            if nxt and nxt[0][1]:
                queue_mlflow(con, movement_of=nxt[0][0])
            if nxt and prev is not None:
                prev_as_of = con.execute("SELECT as_of FROM ws.scoring_runs WHERE run_id = ?", [prev]).fetchall()[0][0]
                _rechain_next(con, prev, prev_as_of)
            elif nxt:  # the first run was dropped: the next one is the first now, everyone in it entered
                _rechain_first(con, nxt[0][0])
            _pause_for_tests()
    finally:
        con.close()
    return Dropped(run_id, as_of, prev, nxt[0][0] if nxt else None, mlflow_run_id, export_dir)


def _rechain_first(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Run ``run_id`` has no run before it any more: every member entered, nobody exited."""
    con.execute("UPDATE ws.scoring_runs SET previous_run_id = NULL WHERE run_id = ?", [run_id])
    con.execute("DELETE FROM ws.segment_deltas WHERE run_id = ?", [run_id])
    con.execute("INSERT INTO ws.segment_deltas SELECT run_id, as_of, segment, customer_id, 'entered' "
                "FROM ws.segment_members WHERE run_id = ?", [run_id])
    con.execute("UPDATE ws.segment_health SET entered = size, exited = 0, stayed = 0, previous_size = NULL, "
                "volatility = CASE WHEN size = 0 THEN NULL ELSE 1.0 END WHERE run_id = ?", [run_id])


def dropped(db: Path, run_id: str) -> tuple[datetime, datetime, str] | None:
    """(as_of, when, reason) of a run deleted with ``drop_run``; None if it never was."""
    rows = read_optional(db, "SELECT as_of, dropped_at, reason FROM dropped_runs WHERE run_id = ?", [run_id])
    if rows.empty:
        return None
    return rows.as_of[0].to_pydatetime(), rows.dropped_at[0].to_pydatetime(), rows.reason[0]


def simulated(db: Path, run_id: str) -> bool:
    """Whether ``dynseg data simulate-campaign`` sent (in the demo's data) a campaign from this run."""
    return not read_optional(db, "SELECT 1 FROM simulated_campaigns WHERE run_id = ? LIMIT 1", [run_id]).empty


def replaced_in_time(db: Path, as_of: datetime, within: timedelta = timedelta(days=1)) -> bool:
    """Whether a run of this date that another replaced was scored within ``within`` of it, so its
    exports may have been sent in time (a run replaced before its scoring time was recorded counts:
    it may have been). A backfill re-scored is no such run: nothing from either could be sent."""
    try:
        return not read_optional(db, "SELECT 1 FROM replaced_runs WHERE as_of = ? AND (scored_at IS NULL OR "
                                     "scored_at <= ?) LIMIT 1", [as_of, as_of + within]).empty
    except duckdb.BinderException:  # a workspace not scored since the column came: any replaced run counts
        return not read_optional(db, "SELECT 1 FROM replaced_runs WHERE as_of = ? LIMIT 1", [as_of]).empty


def _dropped_text(run_id: str, as_of: datetime, when: datetime, reason: str | None) -> str:
    from features.asof import as_of_label

    return (f"the scoring run {run_id!r} (as of {as_of_label(as_of)}) was dropped on {when:%Y-%m-%d %H:%M} UTC "
            f"(`dynseg segments drop-run`" + (f": {reason}" if reason else "") + ")")
