"""Validation of input sources against the data contract.

Every problem is reported at once, each with a count, up to three examples (row and value) and
how to fix it. Errors refuse the run; warnings are reported and the data is used as the
contract describes (exact repeats of an ``event_id`` are dropped, for instance).
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import math
import re

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import yaml

from features.contract import CONTRACT, CURRENCY_COLUMN, KNOWN_NAMES, ORDER_STATES_FIX, ROLES, Column, guess_role, order_states, plain
from features.normalize import EPOCH_UNITS, INTEGER_TYPES, Typed, blank, expected_types, ident, is_numeric, literal, typed
from features.sources import (ColumnStats, RawSource, SourceError, SourceSpec, _reader_sql, explain_read_error,
                              register_source)

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    source: str
    column: str | None
    check: str
    severity: Severity
    count: int
    message: str
    fix: str
    examples: tuple[str, ...] = ()

    def where(self) -> str:
        return self.source + (f".{self.column}" if self.column else "")


@dataclass
class ValidationReport:
    as_of: datetime
    sources: dict[str, RawSource] = field(default_factory=dict)
    typed: dict[str, dict[str, Typed]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: rows, first and last timestamp per event_type, from the same scan as the checks: the data
    #: profile, freshness and the start of history are read from here instead of scanning again
    #: (the first is the first from 1990 on, when there is one: earlier ones are placeholders)
    event_types: dict[str, tuple[int, datetime | None, datetime | None]] = field(default_factory=dict)
    #: rows with an amount per event_type, from the same scan
    amounts: dict[str, int] = field(default_factory=dict)

    def role_summary(self, role_of: dict[str, str]) -> dict[str, tuple[int, datetime | None, datetime | None]]:
        """Rows, first and last timestamp per role (event types without a role are left out)."""
        out: dict[str, tuple[int, datetime | None, datetime | None]] = {}
        for event_type, (n, first, last) in self.event_types.items():
            role = role_of.get(event_type)
            if role is None or n == 0:
                continue
            m, f, la = out.get(role, (0, first, last))
            out[role] = (m + n, _least(f, first), _greatest(la, last))
        return out

    def time_range(self, role_of: dict[str, str]) -> tuple[datetime | None, datetime | None]:
        """First and last timestamp of the events that have a role (what the ``events`` view holds)."""
        summary = self.role_summary(role_of).values()
        return _least(*(f for _, f, _ in summary)), _greatest(*(la for _, _, la in summary))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "as_of": self.as_of.isoformat(),
            "ok": self.ok,
            "sources": {
                n: {"files": [str(f) for f in s.files], "rows": s.rows, "columns": s.columns}
                for n, s in self.sources.items()
            },
            "problems": [p.__dict__ | {"examples": list(p.examples)} for p in self.problems],
        }


@dataclass(frozen=True)
class _Check:
    column: str | None
    check: str
    severity: Severity
    predicate: str
    message: str
    fix: str


def validate(
    con: duckdb.DuckDBPyConnection,
    specs: dict[str, SourceSpec],
    role_of: dict[str, str],
    ignored: set[str],
    base_dir: Path,
    as_of: datetime,
    future_after: str = "the run's as_of",
    count_unknown_customers: bool = True,
    unknown_events: str = "refuse",
) -> ValidationReport:
    """Register every configured source as a raw view and check it; collect all problems.
    Timestamps after ``as_of`` are refused; ``future_after`` names that instant in the message
    (``"now"`` for a run in the past, which validates against the clock, see
    :func:`pipeline.jobs.data.load_for_run`).

    ``count_unknown_customers=False`` leaves out the warning that counts the events' customer_ids
    without a profile, the costliest check (every event's id, grouped: about 2.8 s of 8.3 s at 50M events),
    for a run that counts them among its own customers afterwards, from the ids its features
    found (:func:`unknown_customers`); the error for ids that meet no profile at all stays."""
    report = ValidationReport(as_of=as_of)
    if "events" not in specs:
        report.problems.append(
            Problem("events", None, "missing_source", "error", 1, "no `events` source is configured",
                    "add an `events` entry under `sources:` in configs/catalog.yaml")
        )
    for name, spec in specs.items():
        if name not in CONTRACT:
            report.problems.append(
                Problem(name, None, "unknown_source", "error", 1,
                        f"source '{name}' is not part of the contract (expected one of {sorted(CONTRACT)})",
                        "rename or remove it in configs/catalog.yaml")
            )
            continue
        try:
            raw = register_source(con, name, spec, base_dir)
        except SourceError as e:
            report.problems.append(Problem(name, None, "unreadable", "error", 1, str(e),
                                           e.fix or f"correct the file, or the entry sources.{name} in configs/catalog.yaml"))
            continue
        report.sources[name] = raw
        if raw.rows == 0:
            report.problems.append(
                Problem(name, None, "empty", "error", 1, f"{_files(raw)}: source '{name}' has no rows",
                        "point the catalog at a file with data")
            )
            continue
        report.typed[name] = _type_columns(raw, report.problems, spec)
        checks = _checks(name, report.typed[name], role_of, ignored, as_of, raw, future_after, spec)
        try:
            _run_checks(con, raw, checks, report.problems, report.typed[name],
                        report.event_types if name == "events" else None, report.amounts,
                        read_all=spec.format == "csv", dropped=dropped_rows(spec, report.typed[name], as_of)
                        if name == "events" else None)
        except duckdb.Error as e:  # a bad byte or row past what opening the file read
            report.problems.append(Problem(name, None, "unreadable", "error", 1,
                                           explain_read_error(e, spec, name, raw.files),
                                           f"correct the file, or the entry sources.{name} in configs/catalog.yaml"))
            del report.typed[name]
            report.event_types.clear()
    if "customers" in report.typed:
        _check_duplicate_customers(con, report)
    if "events" in report.typed:
        # The ids' hashes are sorted by numpy in a thread while DuckDB runs the next checks: at 50M
        # events this took about 0.6-1 s off the 2.4 + 1.7 s of the two checks one after the other.
        at = len(report.problems)
        with ThreadPoolExecutor(max_workers=1) as pool:
            repeats = _start_event_id_check(con, report, pool)
            _check_event_types(con, report, role_of, ignored, unknown_events)
            if "customers" in report.typed and "customer_id" in report.typed["customers"]:
                _check_unknown_customers(con, report, count=count_unknown_customers)
            repeated = repeats is not None and repeats.result()
        if repeated:  # rare: the closer look; its problems go where the check's place in the report is
            report.problems[at:at] = (
                _repeated_event_id_problems(con, report) + _repeated_row_problems(con, report, without_id=True)
                if "event_id" in report.typed["events"] else _repeated_row_problems(con, report))
            # the amount checks count rows as the file holds them, repeats too (a review read "2
            # purchases have no amount" of one purchase delivered twice)
            report.problems[:] = [replace(p, message=p.message + ", counting the repeated rows")
                                  if p.check.endswith("_without_amount") else p for p in report.problems]
    _rows_in_their_files(con, report, specs)
    return report


_ROWS = re.compile(r"(^|\bat )(rows?) (\d+(?:(?:, | and )\d+)*)")


def _rows_in_their_files(con: duckdb.DuckDBPyConnection, report: ValidationReport,
                         specs: dict[str, SourceSpec]) -> None:
    """Examples' row numbers count the data rows of a source's files one after another: in a glob
    of three files, row 117,254 was row 3,569 of the third, which no one opening the files could
    find. Each becomes the row of its own file, named. The files' rows are counted only here, for a
    source of several files with such an example (a Parquet file's from its footer)."""
    for name, raw in report.sources.items():
        mine = [i for i, p in enumerate(report.problems)
                if p.source == name and any(_ROWS.search(e) for e in p.examples)]
        if len(raw.files) < 2 or not mine:
            continue
        try:
            if specs[name].format == "parquet":
                counts = dict(con.execute("SELECT file_name, sum(num_rows) FROM (SELECT DISTINCT file_name, row_group_id, "
                                          "row_group_num_rows AS num_rows FROM parquet_metadata(?)) GROUP BY 1",
                                          [[str(f) for f in raw.files]]).fetchall())
                sizes = [int(counts.get(str(f), 0)) for f in raw.files]
            else:
                sizes = [con.sql(f"SELECT count(*) FROM ({_reader_sql(specs[name], (f,), con, name)})").fetchall()[0][0]
                         for f in raw.files]
        except duckdb.Error:
            continue  # the numbers stay as they are: still the rows in the files' order
        ends = list(itertools.accumulate(sizes))

        def located(m: re.Match) -> str:
            where = []
            for n in map(int, re.findall(r"\d+", m.group(3))):
                i = bisect.bisect_left(ends, n)
                if i >= len(ends):
                    return m.group(0)
                where.append((n - (ends[i - 1] if i else 0), raw.files[i].name))
            if len({f for _, f in where}) == 1:
                return f"{m.group(1)}{m.group(2)} {', '.join(str(r) for r, _ in where)} of {where[0][1]}"
            return f"{m.group(1)}{m.group(2)} " + ", ".join(f"{r} of {f}" for r, f in where)

        for i in mine:
            p = report.problems[i]
            report.problems[i] = replace(p, examples=tuple(_ROWS.sub(located, e) for e in p.examples))


def _n(n: int, one: str, many: str) -> str:
    """``1 event``, ``2 events``: a count with the word that agrees with it."""
    return f"{n:,} {one if n == 1 else many}"


def _least(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _greatest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _files(raw: RawSource) -> str:
    return str(raw.files[0]) if len(raw.files) == 1 else f"{len(raw.files)} files under {raw.files[0].parent}"


def _type_columns(raw: RawSource, problems: list[Problem], spec: SourceSpec | None = None) -> dict[str, Typed]:
    out: dict[str, Typed] = {}
    likely = likely_columns(raw)  # each is proposed by the problem of its column below
    first_proposal: int | None = None
    for col in CONTRACT[raw.name]:
        lacking = raw.missing_in.get(col.name)
        if lacking:
            example = lacking[0]
            own = raw.source_names.get(col.name)
            problems.append(Problem(
                raw.name, col.name, "missing_column", "error" if col.required else "warning", len(lacking),
                f"{_n(len(lacking), 'file', 'files')} of {len(raw.files)} under {raw.files[0].parent} "
                f"{'lacks' if len(lacking) == 1 else 'lack'} column "
                + (f"'{own}' (read as '{col.name}')" if own else f"'{col.name}'") + ", which the others have "
                f"(e.g. {example.name}, with columns {list(raw.file_columns[example])}); "
                + ("every file needs it" if col.required else "their rows read it as null"),
                f"add '{own or col.name}' to {'that file' if len(lacking) == 1 else 'those files'}"
                + ("" if own else f", or map their column to it under `columns:` for '{raw.name}' in configs/catalog.yaml"),
                tuple(f.name for f in lacking[:3])))
            if col.required:
                continue
        if col.name not in raw.columns:
            like = likely.get(col.name)
            if like and first_proposal is None:
                first_proposal = len(problems)
            taken = next((k for k, v in raw.source_names.items() if v == col.name and k != col.name), None)
            if col.required and taken:  # the file has it, but `columns:` reads it as another contract column
                problems.append(
                    Problem(raw.name, col.name, "missing_column", "error", 1,
                            f"{_files(raw)}: required column '{col.name}' is missing: the file's column "
                            f"'{col.name}' is read as '{taken}' (`columns: {_flow({taken: col.name})}`)",
                            f"remove `{taken}: {col.name}` from `columns:` under sources.{raw.name} in "
                            f"configs/catalog.yaml, or map '{taken}' to another of the file's columns"))
            elif col.required:
                problems.append(
                    Problem(raw.name, col.name, "missing_column", "error", 1,
                            f"{_files(raw)}: required column '{col.name}' is missing; found columns "
                            f"{sorted(raw.source_names.get(c, c) for c in raw.columns)}",  # as the file names them
                            (f"if '{like}' holds it, map it: `columns: {_flow({col.name: like})}`" if like else
                             f"add it, or map your column to it (`columns: {{{col.name}: your_column}}`)")
                            + f" under sources.{raw.name} in configs/catalog.yaml")
                )
            elif like:
                # An optional column is missing, which is fine, but one of the file's own columns
                # looks like it (amt, categ, eventid, signup_date): a misspelling would otherwise go
                # unnoticed, its features quietly null or 0.
                problems.append(
                    Problem(raw.name, col.name, "look_alike_column", "warning", 1,
                            f"{_files(raw)}: there is no column '{col.name}' ({col.description}), so it reads as "
                            f"missing; the file has a column '{like}'",
                            f"if '{like}' holds the {col.name}, map it: `columns: {_flow({col.name: like})}` under "
                            f"sources.{raw.name} in configs/catalog.yaml; if not, this warning can be ignored")
                )
            continue
        t = (typed(col, raw.columns[col.name], spec.timestamp_forms, spec.decimal) if spec is not None
             else typed(col, raw.columns[col.name]))
        if t is None:
            problems.append(_mistyped(raw, col))
            continue
        out[col.name] = t
    together = {**(spec.columns if spec is not None else {}), **likely}
    if first_proposal is not None and len(together) > 1:  # one line to paste rather than several to merge by hand
        i = first_proposal
        problems[i] = replace(problems[i], fix=problems[i].fix + "; every mapping of this source together: "
                              f"`columns: {_flow(together)}`")
    return out


def _flow(mapping: dict[str, str]) -> str:
    """A `columns:` mapping as one line of YAML to paste, quoted where YAML needs it (``'#id'``, ``'yes'``)."""
    return yaml.safe_dump(mapping, default_flow_style=True, sort_keys=False, width=1 << 20).strip()


def likely_columns(raw: RawSource) -> dict[str, str]:
    """For each contract column the source lacks, the file's own column that likely holds it: first
    a name other tools give it (KNOWN_NAMES: ``userId``, ``timestamp``, ``revenue``, Shopify's
    ``accepts_marketing``), then a look-alike of its own name. Each file column is proposed for one
    contract column at most, required ones choosing first: ``event`` is the event_type, not a
    look-alike of event_id."""
    contract = [c for c in CONTRACT[raw.name] if c.name not in raw.columns]
    contract.sort(key=lambda c: not c.required)
    own = [c for c in raw.columns if c not in {k.name for k in CONTRACT[raw.name]}]
    known = KNOWN_NAMES.get(raw.name, {})
    found: dict[str, str] = {}
    for col in contract:
        for name in known.get(col.name, ()):
            match = [c for c in own if plain(c) == name and c not in found.values()]
            if match:
                found[col.name] = match[0]
                break
    for col in contract:
        if col.name not in found:
            # not a column other tools name as another contract column (GA4's event_date is no event_id)
            others = {n for other, names in known.items() if other != col.name for n in names}
            like = _look_alike(col.name, [c for c in own if c not in found.values() and plain(c) not in others])
            if like:
                found[col.name] = like
    return {c.name: found[c.name] for c in CONTRACT[raw.name] if c.name in found}  # in the contract's order


def _look_alike(name: str, own: list[str]) -> str | None:
    """The column of ``own`` (the source's columns that are no contract column and not proposed
    for another) that looks like the contract column ``name``, if one alone does: the same letters
    in another case or spelling (``Amount``, ``eventid``); a longer name holding it (``total_amount``,
    ``product_category``; not for ``ts``, which ``lifetime_points`` holds); an abbreviation of it
    (``amt``, ``categ``: from its first letter, its letters in order, and not one of its words, as
    ``email`` is of ``email_consent``); or a difflib ratio of at least 0.75 (``signup_date``,
    ``ammount``). Not ``event_name`` for ``event_id``, nor ``updated_at`` for
    ``consent_updated_at``: a warning that is wrong too often would be read by nobody."""
    def abbreviates(short: str, long: str) -> bool:
        rest = iter(long)
        return (len(short) >= 3 and short[0] == long[0] and all(ch in rest for ch in short)
                and short not in name.lower().split("_"))

    target = plain(name)
    for test in (lambda c: c == target, lambda c: len(target) > 2 and target in c, lambda c: abbreviates(c, target)):
        found = [c for c in own if test(plain(c))]
        if found:  # two that fit (discount_amount, tax_amount) tell nothing: no proposal rather than the first
            return found[0] if len(found) == 1 else None
    close = difflib.get_close_matches(target, [plain(c) for c in own], n=1, cutoff=0.75)
    return next(c for c in own if plain(c) == close[0]) if close else None


def _mistyped(raw: RawSource, col: Column) -> Problem:
    return Problem(
        raw.name, col.name, "mistyped", "error", 1,
        f"{_files(raw)}: column '{col.name}'{_own_name(raw, col.name)} has type {raw.columns[col.name]}; expected "
        f"{expected_types(col)}",
        f"convert '{raw.source_names.get(col.name, col.name)}' to {col.type} in the source"
        + (f", or map another column to '{col.name}' in configs/catalog.yaml" if col.name in raw.source_names else "")
        + (f"; numbers since 1970-01-01 UTC read with `timestamp_format: epoch_s` (or epoch_ms, epoch_us: in 2026 "
           f"about 1.8e9 seconds, 1.8e12 milliseconds, 1.8e15 microseconds) under sources.{raw.name}"
           if col.type == "timestamp" and is_numeric(raw.columns[col.name]) else "")
        + ("; whole-number dates such as 20260108 read with `timestamp_format: '%Y%m%d'`"
           if col.type == "timestamp" and raw.columns[col.name] in INTEGER_TYPES else ""),
    )


def _checks(name: str, t: dict[str, Typed], role_of: dict[str, str], ignored: set[str], as_of: datetime,
            raw: RawSource, future_after: str = "the run's as_of", spec: SourceSpec | None = None) -> list[_Check]:
    """The row checks a source needs. A check that the source's Parquet footer statistics show
    cannot fail is left out of the scan: at 50M events, reading ``customer_id`` only to find no
    blank id was 0.7 s of a 1.6 s scan."""
    stats = raw.stats
    checks: list[_Check] = []
    for col, ty in t.items():
        if ty.bad != "FALSE":
            checks.append(_Check(col, "unparseable", "error", ty.bad, f"values in '{col}' do not convert",
                                 f"fix the values or the column's format ({_format_hint(col, spec, name)})"))
    if "customer_id" in t and not _never_blank(stats.get("customer_id")):
        if name == "events" and spec is not None and spec.null_ids == "drop":
            checks.append(_Check("customer_id", "null_id", "warning", blank("customer_id"),
                                 "rows have a null or empty customer_id: left out of every run, as `null_ids: drop` "
                                 "says (anonymous visits)", "identify them upstream if they should count"))
        else:
            checks.append(_Check("customer_id", "null_id", "error", blank("customer_id"),
                                 "rows have a null or empty customer_id",
                                 "drop those rows or fill the id" + (
                                     "; if they are anonymous visits (a Segment or RudderStack tracks table), set "
                                     "`null_ids: drop` under sources.events in configs/catalog.yaml to leave them out"
                                     if name == "events" else "")))
    if name == "events":
        if "event_type" in t and not _never_blank(stats.get("event_type")):
            checks.append(_Check("event_type", "null_event_type", "error", blank("event_type"),
                                 "rows have a null or empty event_type", "drop those rows or fill the type"))
        if "ts" in t:
            # text timestamps: an empty or blank value is no timestamp either (it reads as null)
            missing = blank("ts") if raw.columns.get("ts", "").upper() == "VARCHAR" else f"{ident('ts')} IS NULL"
            checks.append(_Check("ts", "null_ts", "error", missing,
                                 "rows have no timestamp (null, empty or blank)", "drop those rows or fill ts"))
            fix = ("check the source's time zone, and the clock of the system that wrote it" if future_after == "now"
                   else "check the source's time zone, or run with a later --as-of")
            said = f"timestamps lie after {future_after} ({as_of.isoformat(sep=' ')} UTC)"
            if spec is not None and spec.future_events == "drop":
                checks.append(_Check("ts", "future_ts", "warning", future_ts(t, as_of),
                                     said + ": left out of this run, as `future_events: drop` says", fix))
            else:
                checks.append(_Check("ts", "future_ts", "error", future_ts(t, as_of), said, fix + (
                    "; if a few devices' clocks run ahead (client-side tracking), `future_events: drop` under "
                    "sources.events in configs/catalog.yaml leaves such rows out, counted in a warning"
                    if future_after == "now" else "")))
        if "ts" in t:
            checks += _placeholder_dates("ts", t, stats, "events")
        purchases = [e for e, r in role_of.items() if r == "purchase"]
        if "amount" in t and "event_type" in t and purchases and not _never_negative(stats.get("amount"), raw):
            names = ", ".join(map(literal, purchases))
            checks.append(_Check("amount", "negative_purchase", "error",
                                 f"{t['event_type'].expr} IN ({names}) AND {t['amount'].expr} < 0",
                                 "purchases have a negative amount",
                                 "record returns as refund events with a positive amount"))
        if "amount" in t and not _never_infinite(stats.get("amount"), raw):
            checks.append(_Check("amount", "infinite_amount", "error", f"isinf({t['amount'].expr})",
                                 "amounts are infinite", "fix the values (an overflow or a division by zero upstream)"))
    if name == "customers" and "email_consent" in t:
        # A consent decision is used only with the time it was made (as of T: was it known then?)
        decided = f"{t['email_consent'].expr} IS NOT NULL"
        if "consent_updated_at" in t:
            checks.append(_Check("consent_updated_at", "consent_without_time", "warning",
                                 f"{decided} AND {t['consent_updated_at'].expr} IS NULL "
                                 f"AND NOT coalesce({t['consent_updated_at'].bad}, FALSE)",  # unparseable: said so
                                 "profiles have email_consent but no consent_updated_at; their consent is not used",
                                 "fill consent_updated_at with when the decision was made (consent events, if any, "
                                 "still count)"))
        else:
            checks.append(_Check("email_consent", "consent_without_time", "warning", decided,
                                 "profiles have email_consent, but the source has no consent_updated_at column; "
                                 "the profiles' consent is not used",
                                 "add consent_updated_at (when each decision was made), or map your column to it "
                                 "under `columns:` in configs/catalog.yaml"))
    if name == "customers" and "signup_at" in t:
        checks += _placeholder_dates("signup_at", t, stats, "customers")
    if name == "customers":
        # after now (not after --as-of: a profile file holds signups since a past as_of): a zone or
        # clock problem upstream, as for events, but a row's other values stand, so a warning
        from features.asof import now_utc

        now = now_utc()
        for col in ("signup_at", "consent_updated_at"):
            # (text bounds are the largest text, not the latest instant: 11:00-12:00 sorts before
            # 12:00+00:00; only a timestamp column's statistics are trusted)
            bounds = stats.get(col) if raw.columns.get(col, "").upper() != "VARCHAR" else None
            if col in t and not _never_after(bounds, now):
                checks.append(_Check(col, f"future_{col}", "warning",
                                     f"{t[col].expr} > TIMESTAMP '{now.isoformat(sep=' ')}'",
                                     f"rows have a {col} after now ({now:%Y-%m-%d %H:%M} UTC)",
                                     "check the source's time zone, and the clock of the system that wrote it; "
                                     "until that time passes, features read it as not yet happened"))
    if name == "identities":
        for col in ("id_type", "id_value"):
            if col in t and not _never_blank(stats.get(col)):
                checks.append(_Check(col, f"null_{col}", "error", blank(col),
                                     f"rows have a null or empty {col}", "drop those rows"))
        for col in ("customer_id", "id_value"):
            if col in t:
                checks.append(_Check(col, f"placeholder_{col}", "warning", placeholder(t[col].expr),
                                     f"rows have a {col} that is a missing value written as text (NULL, nan, N/A, …): "
                                     "they are left out of identity resolution, where they would make every id "
                                     "sharing one a single person",
                                     "blank such values in the export, or drop those rows"))
    return checks


#: Dates before this are taken for placeholders (a missing date written as 1970-01-01, epoch 0, or
#: 1900-01-01 or 0001-01-01 by a spreadsheet or an ORM), not for the history of a CRM log.
EARLIEST_PLAUSIBLE = datetime(1990, 1, 1)


def _placeholder_dates(col: str, t: dict[str, Typed], stats: dict[str, ColumnStats], name: str) -> list[_Check]:
    """A warning for ``col`` values before :data:`EARLIEST_PLAUSIBLE`: they pass every type check
    but count as history, so tenure, days since first purchase and the purchase gaps of those
    customers come out decades long. Left out when the Parquet statistics show none."""
    if _never_before(stats.get(col), EARLIEST_PLAUSIBLE):
        return []
    counts = ("tenure, days since first purchase and purchase gaps" if name == "events"
              else "days since signup and tenure")
    return [_Check(col, "placeholder_date", "warning",
                   f"{t[col].expr} < TIMESTAMP '{EARLIEST_PLAUSIBLE.isoformat(sep=' ')}'",
                   f"rows have a {col} before {EARLIEST_PLAUSIBLE:%Y-%m-%d}: placeholders for a missing "
                   f"date (1970-01-01 or 1900-01-01) upstream? {counts} count from them",
                   "drop those rows upstream (an event needs its real time)" if name == "events" else
                   "set them to null upstream: a missing signup_at is allowed, a made-up one is taken at its word")]


def _never_before(s: ColumnStats | None, moment: datetime) -> bool:
    """The statistics bound every value at or after ``moment`` (bounds that do not read as
    ISO timestamps are not trusted)."""
    if s is None or not s.mins:
        return False
    try:
        return all(datetime.fromisoformat(m).replace(tzinfo=None) >= moment for m in s.mins)
    except ValueError:
        return False


def _never_after(s: ColumnStats | None, moment: datetime) -> bool:
    """The statistics bound every value at or before ``moment`` (UTC; bounds that do not read as
    ISO timestamps are not trusted)."""
    if s is None or not s.maxs:
        return False
    try:
        bounds = [datetime.fromisoformat(m) for m in s.maxs]
    except ValueError:
        return False
    return all((b.astimezone(timezone.utc).replace(tzinfo=None) if b.tzinfo else b) <= moment for b in bounds)


def _never_blank(s: ColumnStats | None) -> bool:
    """The statistics show no value is null, empty or white space: every value lies between bounds
    that start with printable ASCII other than space (the test :func:`blank` makes row by row).
    A bound starting with a backslash may be an escaped rendering of other bytes: not trusted."""
    return (s is not None and s.nulls == 0 and bool(s.mins) and min(s.mins) >= "!" and max(s.maxs) < "\x7f"
            and not any(m.startswith("\\") for m in s.maxs))


def _never_negative(s: ColumnStats | None, raw: RawSource) -> bool:
    """The statistics of a numeric ``amount`` show no value below zero."""
    if s is None or not is_numeric(raw.columns.get("amount", "")):
        return False
    try:
        return all(float(m) >= 0 for m in s.mins)
    except ValueError:
        return False


def _never_infinite(s: ColumnStats | None, raw: RawSource) -> bool:
    """The statistics of a numeric ``amount`` bound every value by finite numbers."""
    if s is None or not is_numeric(raw.columns.get("amount", "")):
        return False
    try:
        return all(math.isfinite(float(m)) for m in (*s.mins, *s.maxs))
    except ValueError:
        return False


def _format_hint(col: str, spec: SourceSpec | None = None, name: str = "events") -> str:
    entry = f"sources.{name} in configs/catalog.yaml"
    if col in ("ts", "signup_at", "consent_updated_at") and spec is not None and spec.timestamp_forms:
        forms = spec.timestamp_forms
        if forms[0] in EPOCH_UNITS:
            unit = {"epoch_s": "seconds", "epoch_ms": "milliseconds", "epoch_us": "microseconds"}[forms[0]]
            return (f"expected numbers of {unit} since 1970-01-01 UTC, between 1900 and 3000 (timestamp_format "
                    f"{forms[0]!r} of {entry}; a value like 58000 years ahead means another unit)")
        return (f"expected timestamps in the form{'s' if len(forms) > 1 else ''} {' or '.join(map(repr, forms))} "
                f"(timestamp_format of {entry})")
    if col == "amount" and spec is not None and spec.decimal == ",":
        return f"expected numbers with ',' as decimal mark and '.' only between groups of three digits (decimal of {entry})"
    zones = ("; a zone abbreviation (BST, CST, IST) is ambiguous: write the offset (+01:00) or a zone name after a "
             "space (2026-11-27 08:15:00 Europe/London; not in brackets); an offset lies between -12:00 and +14:00")
    other = f"; for another form, set `timestamp_format:` (such as '%d/%m/%Y %H:%M') under {entry}"
    return {"ts": "expected ISO-8601 timestamps such as 2026-11-27T08:15:00+01:00" + zones + other,
            "signup_at": "expected ISO-8601 timestamps" + zones + other,
            "consent_updated_at": "expected ISO-8601 timestamps" + zones + other,
            "amount": f"expected numbers with '.' as decimal point (',' only between groups of three digits: "
                      f"1,234.50); for a decimal comma set `decimal: ','` under {entry}",
            "email_consent": "expected true/false (also yes/no, y/n, 1/0, subscribed/unsubscribed, "
                             "never_subscribed, not_subscribed)"}.get(col, "see the data contract in the README")


def future_ts(t: dict[str, Typed], as_of: datetime) -> str:
    """SQL: an event's time is after ``as_of`` (null when it has none)."""
    return f"{t['ts'].expr} > TIMESTAMP '{as_of.isoformat(sep=' ')}'"


def dropped_rows(spec: SourceSpec, t: dict[str, Typed], as_of: datetime) -> dict[str, str]:
    """The events rows no run reads, by the check that finds them: SQL true of rows without a
    customer_id under ``null_ids: drop`` (``null_id``), of rows after ``as_of`` (now, for a run in
    the past) under ``future_events: drop`` (``future_ts``)."""
    out = {}
    if spec.null_ids == "drop" and "customer_id" in t:
        out["null_id"] = blank("customer_id")
    if spec.future_events == "drop" and "ts" in t:
        out["future_ts"] = f"coalesce({future_ts(t, as_of)}, false)"
    return out


def _run_checks(con: duckdb.DuckDBPyConnection, raw: RawSource, checks: list[_Check], problems: list[Problem],
                typed_cols: dict[str, Typed] | None = None,
                event_types: dict[str, tuple[int, datetime | None, datetime | None]] | None = None,
                amounts: dict[str, int] | None = None, read_all: bool = False,
                dropped: dict[str, str] | None = None) -> None:
    """Count every check's failures in one scan. For events (``event_types`` given) the same scan
    also counts rows, finds the first and last timestamp and counts the rows with an amount
    (into ``amounts``) per event_type. ``dropped``: SQL true of the rows no run reads, by the check
    that finds them (see :func:`dropped_rows`), left out of the first and last timestamp, which freshness and the
    start of history are read from (an anonymous visit hid an identified feed that had stopped). ``read_all``: the scan reads every column of every row
    (for CSV, whose bytes are only checked where a query reads them: a bad byte in a column no
    check reads, past the rows that opening the file looked at, would otherwise surface in the
    middle of a later run)."""
    t = typed_cols or {}
    by_type = event_types is not None and "event_type" in t
    if not checks and not by_type and not read_all:
        return
    # the rows no run reads raise no problem but their own (a skewed clock on an anonymous visit):
    # each check leaves out the rows the others drop, but null_id counts every row without an id
    # (an anonymous row after now is counted there, as an anonymous one)
    checks = [replace(c, predicate=f"(NOT ({' OR '.join(f'({p})' for p in others)}) AND ({c.predicate}))") if others else c
              for c in checks for others in [[p for k, p in (dropped or {}).items()
                                               if k != c.check and c.check != "null_id"]]]
    dropped = " OR ".join(f"({p})" for p in (dropped or {}).values()) or None
    counts_sql = [f"count(*) FILTER (WHERE {c.predicate})" for c in checks]
    every = ", count(COLUMNS(*))" if read_all else ""
    if by_type:
        # the rows a run reads: per type, their count, first and last time (freshness and the start
        # of history are read from these) and how many have an amount
        kept = f" FILTER (WHERE NOT ({dropped}))" if dropped else ""
        both = f" AND NOT ({dropped})" if dropped else ""
        ts = "NULL, NULL"  # (a ts column that did not type: no times)
        if "ts" in t:
            first = f"min({t['ts'].expr}){kept}"
            if not _never_before(raw.stats.get("ts"), EARLIEST_PLAUSIBLE):
                # the first time that is no placeholder (1970-01-01 for a missing date, warned about):
                # one made the history decades long, and min_history's refusal read a history it lacks
                first = (f"coalesce(min({t['ts'].expr}) FILTER (WHERE {t['ts'].expr} >= "
                         f"TIMESTAMP '{EARLIEST_PLAUSIBLE:%Y-%m-%d}'{both}), {first})")
            ts = f"max({t['ts'].expr}){kept}, {first}"
        # rows with an amount given: parsed, or refused as unparseable (reported as such, not as missing)
        amount = (f"count({t['amount'].expr}){kept}" + (f" + count(*) FILTER (WHERE {t['amount'].bad}{both})"
                                                          if t['amount'].bad != "FALSE" else "")) if "amount" in t else "0"
        rows = con.execute(
            f"SELECT {t['event_type'].expr} AS _type, count(*){kept}, {ts}, {amount}"
            + "".join(", " + c for c in counts_sql) + f"{every} FROM {raw.view} GROUP BY 1"
        ).fetchall()
        for r in rows:
            if r[0] is not None and r[1]:  # (a type seen only on rows no run reads is none of the log's)
                event_types[r[0]] = (int(r[1]), r[3], r[2])
                if amounts is not None:
                    amounts[r[0]] = int(r[4])
        counts = [sum(int(r[5 + i]) for r in rows) for i in range(len(checks))]
    else:
        counts = con.execute("SELECT " + ", ".join([*counts_sql, "count(*)"]) + f"{every} FROM {raw.view}").fetchall()[0]
    for check, n in zip(checks, counts):
        if n:
            examples = _examples(con, raw.view, check.predicate, check.column)
            problems.append(Problem(raw.name, check.column, check.check, check.severity, int(n),
                                    f"{_files(raw)}: {n:,} {_one(check.message) if n == 1 else check.message}"
                                    + _own_name(raw, check.column), check.fix + _epoch_text_hint(check, examples, raw.name)
                                    + _symbol_hint(check, examples) + _iso_beside_forms_hint(check, examples),
                                    examples))


#: ISO-8601 forms as strptime codes, for the ISO rows of a source whose other rows take a form of
#: their own (" %z": Shopify's 2026-03-05 10:00:00 +0100, an offset after a space)
ISO_FORMS = tuple(f"%Y-%m-%d{sep}{time}{zone}" for time in ("%H:%M:%S.%f", "%H:%M:%S", "%H:%M") for sep in (" ", "T")
                  for zone in ("", "%z", " %z")) + ("%Y-%m-%d",)


def iso_form(text: str) -> str | None:
    """The first of :data:`ISO_FORMS` that reads ``text`` (a trailing Z taken as +00:00), if any."""
    text = re.sub(r"(\d)Z$", r"\1+00:00", text.strip())
    for form in ISO_FORMS:
        try:
            datetime.strptime(text, form)
            return form
        except ValueError:
            continue
    return None


def _iso_beside_forms_hint(check: _Check, examples: tuple[str, ...]) -> str:
    """For ISO text that does not convert under a source's own forms (an export that switched
    forms): the forms are all a source reads, so ISO rows need theirs listed too, which the
    message did not say."""
    if (check.check != "unparseable" or check.column not in ("ts", "signup_at", "consent_updated_at")
            or "timestamp_format" not in check.fix or "epoch" in check.fix):
        return ""
    values = [m.group(1) for e in examples if (m := re.match(r"'(\d{4}-\d{2}-\d{2}[^']*)'", e))]
    if not values:
        return ""
    # the form of the values shown, named (it said "e.g. ['%d/%m/%Y %H:%M', '%Y-%m-%d %H:%M:%S']"
    # whatever they were: day-first beside a month-first file, no offset beside +0100)
    forms = list(dict.fromkeys(f for v in values if (f := iso_form(v))))
    if not forms:
        return "; ISO text beside them is read only when its form is listed too"
    return (f"; ISO text beside them is read only when its form is listed too: add {', '.join(map(repr, forms))} "
            f"(the form of {values[0]!r}) to the list")


def _symbol_hint(check: _Check, examples: tuple[str, ...]) -> str:
    """For amounts that do not convert because they carry a currency (``'85,21 €'``, ``'$25.12'``,
    ``'12.00 EUR'``): the advice was the decimal mark alone, which left every one unread."""
    if check.check != "unparseable" or check.column != "amount":
        return ""
    values = [m.group(1) for e in examples if (m := re.match(r"'(.*)' at row", e))]
    if not any(re.search(r"[^\d\s.,+\-eE]", v) and re.search(r"\d", v) for v in values):
        return ""
    return ("; these hold a currency sign or code beside the number: write the number alone (a "
            "currency column, or `currency` in configs/project.yaml, says which currency)")


def _epoch_text_hint(check: _Check, examples: tuple[str, ...], source: str) -> str:
    """For text times that do not convert and are all whole numbers (a CSV's epoch column, whose
    unit init could not pick as it was not mapped yet): the ``timestamp_format`` that reads them,
    by their digits (in 2026: 10 for seconds, 13 for milliseconds, 16 for microseconds)."""
    if check.check != "unparseable" or check.column not in ("ts", "signup_at", "consent_updated_at") or "epoch" in check.fix:
        return ""
    digits = {len(m.group(1)) for e in examples if (m := re.match(r"'(\d+)(?:\.0+)?' at row", e))}
    if not examples or len(digits) != 1 or len(digits & {10, 13, 16}) != 1 or len(examples) != len(
            [e for e in examples if re.match(r"'\d", e)]):
        return ""
    unit = {10: "epoch_s", 13: "epoch_ms", 16: "epoch_us"}[digits.pop()]
    return (f"; these look like numbers since 1970-01-01 UTC: `timestamp_format: {unit}` under sources.{source} "
            "reads them")


def _own_name(raw: RawSource, column: str | None) -> str:
    """Where a column is read under another name (``columns:``), the name the file gives it: the
    user looks for ``event_time`` in their file, not ``ts``."""
    own = raw.source_names.get(column) if column else None
    return f" (the file's column '{own}')" if own else ""


#: The plural openings of the checks' messages, and how each reads for one row
_SINGULAR = (("rows have", "row has"), ("timestamps lie", "timestamp lies"), ("purchases have", "purchase has"),
             ("amounts are", "amount is"), ("profiles have", "profile has"), ("values in", "value in"))


def _one(message: str) -> str:
    """A check's message for a count of one ("1 row has", not "1 rows have")."""
    for many, one in _SINGULAR:
        if message.startswith(many):
            message = one + message[len(many):]
            return message.replace(" do not convert", " does not convert", 1) if one == "value in" else message
    return message


def _at_rows(value, rows) -> str:
    """An example value with the data rows that hold it: ``'c1' at rows 2, 3``."""
    return f"{value!r} at rows {', '.join(map(str, rows))}"


def _examples(con: duckdb.DuckDBPyConnection, view: str, predicate: str, column: str | None, k: int = 3) -> tuple[str, ...]:
    col = ident(column) if column else "NULL"
    rows = con.execute(
        f"SELECT _row, CAST({col} AS VARCHAR) FROM (SELECT row_number() OVER () AS _row, * FROM {view}) "
        f"WHERE {predicate} ORDER BY _row LIMIT {k}"
    ).fetchall()
    return tuple(f"{'(blank)' if v is None else repr(v)} at row {r}" for r, v in rows)


def _start_event_id_check(con: duckdb.DuckDBPyConnection, report: ValidationReport,
                          pool: ThreadPoolExecutor) -> Future[bool] | None:
    """Are any event_ids repeated? The ids' 64-bit hashes are fetched now and checked in ``pool``
    (see :func:`_any_repeats`); None when the source has no event_id."""
    t = report.typed["events"]
    raw = report.sources["events"]
    if "event_id" not in t:
        # Without ids, an export's overlap (the same rows twice) counts every event twice, in
        # silence: rows alike in every column of the file are looked for the same way, and warned of
        hashes = _fetch_hashes(con, f"SELECT {_whole_row(raw)} AS h FROM {raw.view}", raw.rows)
        return pool.submit(_any_repeats, hashes)
    # An id's hash; a row without one, its whole row's: an export whose orders alone have ids holds
    # page views and sends without, and their overlap counted twice in silence once event_id was
    # mapped (the advice for a log without ids). The second hash is computed only for those rows.
    # (in the CASE, not a column beside the id: DuckDB computes a branch only for its rows.) A
    # Parquet log whose footers show an id on every row hashes the ids alone, as before: the empty
    # test and the CASE took validation at 50M events from 2.2 to 2.8 s.
    id_ = t["event_id"].expr
    query = (f"SELECT hash({ident('event_id')}) AS h FROM {raw.view}" if _never_blank(raw.stats.get("event_id")) else
             f"SELECT CASE WHEN {id_} IS NULL THEN {_whole_row(raw)} ELSE hash({id_}) END AS h FROM {raw.view}")
    hashes = _fetch_hashes(con, query, raw.rows)
    return pool.submit(_any_repeats, hashes)


def _content(t: dict[str, Typed]) -> str:
    """Every contract column of the events but the id: rows told apart only by category, channel
    or campaign are two events."""
    return ", ".join(t[c.name].expr for c in CONTRACT["events"] if c.name in t and c.name != "event_id")


def _whole_row(raw: RawSource) -> str:
    """A row's hash over every column of the file (an unmapped order id too: rows told apart by it
    are two orders)."""
    return f"hash({', '.join(ident(c) for c in raw.columns)})"


#: A column named like an id (``order_id``, ``msg id``, ``messageId``, ``OrderID``): an export's
#: own event or order id, which ``event_id`` may be mapped to (``dynseg init`` proposes it when it fits)
ID_NAME = re.compile(r"(^|[_\s.-])(id|Id|ID)$|[a-z](Id|ID)$")


def _repeated_row_problems(con: duckdb.DuckDBPyConnection, report: ValidationReport,
                           without_id: bool = False) -> list[Problem]:
    """Some rows of a log without event ids (``without_id``: its rows without one) hash alike: how
    many repeat another exactly, and where."""
    raw = report.sources["events"]
    only = f"WHERE {report.typed['events']['event_id'].expr} IS NULL" if without_id else ""
    extra, example = con.execute(f"""
        SELECT coalesce(sum(n - 1), 0), min(first_rows) FROM (
            SELECT count(*) AS n, list(_row ORDER BY _row)[:2] AS first_rows
            FROM (SELECT _row, h FROM (SELECT row_number() OVER () AS _row, {_whole_row(raw)} AS h, * FROM {raw.view})
                  {only}) GROUP BY h HAVING n > 1)
    """).fetchall()[0]
    if not extra:
        return []
    if without_id:
        return [Problem("events", "event_id", "repeated_rows", "warning", int(extra),
                        f"{_files(raw)}: {_n(int(extra), 'row', 'rows')} without an event_id "
                        f"{'repeats' if extra == 1 else 'repeat'} another row in every column (customer, event, "
                        "time, amount, ...), so nothing tells an export's overlap from events that happened twice: "
                        "each counts (repeats of an id are dropped; rows without one are not)",
                        "give those events an id in the export (every row of the column mapped to event_id), or "
                        "remove the repeated rows", (f"rows {example[0]} and {example[1]}",))]
    contract = {c.name for c in CONTRACT["events"]}
    ids = [c for c in raw.columns if c not in contract and ID_NAME.search(c)]
    map_it = (f"map `event_id` to the export's id of each event ({', '.join(f'columns: {{event_id: {c}}}' for c in ids[:2])}?) "
              if ids else "map `event_id` to an id of each event, if the export has one, ")
    return [Problem("events", None, "repeated_rows", "warning", int(extra),
                    f"{_files(raw)}: {_n(int(extra), 'row repeats', 'rows repeat')} another row in every column "
                    "(customer, event, time, amount, ...) and the log has no event_id to tell an export's overlap from "
                    "events that happened twice: each counts",
                    f"{map_it}in configs/catalog.yaml: exact repeats of an id are then dropped (rows without one "
                    "are still counted, and warned of); or remove the repeated rows",
                    (f"rows {example[0]} and {example[1]}",))]


def _fetch_hashes(con: duckdb.DuckDBPyConnection, query: str, rows: int) -> np.ndarray:
    """The 64-bit hashes ``query`` returns, at most ``rows`` of them, streamed batch by batch into
    one numpy array, in whatever order DuckDB's threads produce them (the sort does not care).

    At 50M events, in fresh processes, this took 2.48-2.68 s and peaked at 0.63 GB, against
    3.1-3.3 s and 0.99 GB for DuckDB's whole result in insertion order made a numpy array;
    DuckDB alone computes the same hashes in about 1.5 s."""
    out = np.empty(rows, dtype=np.uint64)
    n = 0
    con.execute("SET preserve_insertion_order = false")
    try:
        reader = con.sql(query).to_arrow_reader(1 << 20)
        try:
            for batch in reader:
                values = batch.column(0).to_numpy()
                if n + len(values) > len(out):  # more rows than counted: the source grew meanwhile
                    out = np.resize(out, max(2 * len(out), n + len(values)))
                out[n:n + len(values)] = values
                n += len(values)
        finally:
            reader.close()
    finally:
        con.execute("RESET preserve_insertion_order")
    return out[:n]


def _repeated_event_id_problems(con: duckdb.DuckDBPyConnection, report: ValidationReport) -> list[Problem]:
    """Some event_id hashes repeat: which ids, and are they exact repeats or conflicts?"""
    t = report.typed["events"]
    raw = report.sources["events"]
    # which one a repeat would keep depends on the files' order: every contract column counts
    content = _content(t)
    # The few rows whose hash repeats: same content (an exact repeat) or not (a conflict).
    exact, conflicting, example, example_rows, repeat, repeat_rows = con.execute(f"""
        WITH ids AS (SELECT row_number() OVER () AS _row, {t['event_id'].expr} AS id, hash({content}) AS h FROM {raw.view}),
             repeated AS (SELECT hash(id) AS k FROM ids WHERE id IS NOT NULL GROUP BY 1 HAVING count(*) > 1)
        SELECT count(*) FILTER (WHERE variants = 1), count(*) FILTER (WHERE variants > 1),
               min(id) FILTER (WHERE variants > 1), arg_min(first_rows, id) FILTER (WHERE variants > 1),
               min(id) FILTER (WHERE variants = 1), arg_min(first_rows, id) FILTER (WHERE variants = 1)
        FROM (SELECT id, count(DISTINCT h) AS variants, list(_row ORDER BY _row)[:2] AS first_rows
              FROM ids SEMI JOIN repeated ON hash(ids.id) = repeated.k GROUP BY 1 HAVING count(*) > 1)
    """).fetchall()[0]
    problems = []
    if exact:
        problems.append(Problem("events", "event_id", "duplicate_event_id", "warning", int(exact),
                                f"{_files(raw)}: {_n(exact, 'event_id repeats', 'event_ids repeat')} with identical "
                                "content", "nothing to do: the repeats are dropped, as from at-least-once delivery",
                                (_at_rows(repeat, repeat_rows),)))
    if conflicting:
        problems.append(Problem("events", "event_id", "conflicting_event_id", "error", int(conflicting),
                                f"{_files(raw)}: {_n(conflicting, 'event_id is', 'event_ids are')} used by different events",
                                "event_id must identify one event; fix the source or drop `event_id`",
                                (_at_rows(example, example_rows),)))
    return problems


def _any_repeats(hashes: np.ndarray) -> bool:
    """Whether any of the 64-bit ``hashes`` repeats: sorted in place by numpy and neighbours
    compared, with no id strings held. The usual answer is no, and the closer look (which compares
    the ids themselves) is skipped.

    At 50M events the sort took 1.1-1.3 s (the fetch: :func:`_fetch_hashes`); the same sort as a
    DuckDB window (``lag() OVER (ORDER BY h)``) took 3.9-5.1 s and 1.4 GB, grouping the hashes
    8.2-12 s and 3.1-3.3 GB.
    """
    h = np.asarray(hashes)
    if len(h) < 2:
        return False
    h.sort()
    return bool(np.count_nonzero(h[1:] == h[:-1]))


def _check_duplicate_customers(con: duckdb.DuckDBPyConnection, report: ValidationReport) -> None:
    t = report.typed["customers"]
    if "customer_id" not in t:
        return
    raw = report.sources["customers"]
    rows = con.execute(
        f"SELECT id, list(_row ORDER BY _row)[:3], count(*) OVER () FROM (SELECT row_number() OVER () AS _row, "
        f"{t['customer_id'].expr} AS id FROM {raw.view}) WHERE id IS NOT NULL GROUP BY 1 HAVING count(*) > 1 "
        "ORDER BY min(_row) LIMIT 3"
    ).fetchall()
    if rows:
        n = rows[0][2]
        report.problems.append(Problem(
            "customers", "customer_id", "duplicate_customer_id", "error", int(n),
            f"{_files(raw)}: {_n(n, 'customer_id has', 'customer_ids have')} more than one row", "keep one row per customer_id "
            "(link a person's several ids through the identities source instead)",
            tuple(_at_rows(i, r) for i, r, _ in rows)))


def _role_guesses(names: list[str], role_of: dict[str, str]) -> str:
    """The roles.yaml lines that would map ``names`` by what their words suggest (``Order Completed``
    is a purchase, Klaviyo's ``Opened Email`` an email_open), each with the names the role already
    has, so that a line replaces its old one; the names nothing suggests are listed apart."""
    guessed: dict[str, list[str]] = {}
    rest = []
    states = set(order_states(names))  # an order's state is no event: no role by its words
    for e in names:
        role = None if e in states else guess_role(e)
        (rest if role is None else guessed.setdefault(role, [])).append(e)
    if not guessed:
        return ""
    lines = [_flow({role: [e for e, r in role_of.items() if r == role] + found})[1:-1]
             for role, found in sorted(guessed.items(), key=lambda kv: ROLES.index(kv[0]))]
    return (". By their names, likely (check each, then put under `event_roles:`): "
            + "; ".join(f"`{line}`" for line in lines)
            + (f"; no guess for {', '.join(map(repr, rest[:10]))}" + (f" and {len(rest) - 10} more" if len(rest) > 10 else "")
               if rest else ""))


def _check_event_types(con: duckdb.DuckDBPyConnection, report: ValidationReport, role_of: dict[str, str], ignored: set[str],
                       unknown_events: str = "refuse") -> None:
    """Event names neither mapped nor ignored: refused (``unknown_events: refuse``, the default: new
    tracking never disappears silently), or with ``warn`` a warning, the events left out of every
    feature (a night's delivery does not stop on one new name upstream)."""
    t = report.typed["events"]
    if "event_type" not in t:
        return
    raw = report.sources["events"]
    rows = sorted(((e, n) for e, (n, _, _) in report.event_types.items()), key=lambda r: (-r[1], r[0]))
    unknown = [(e, n) for e, n in rows if e not in role_of and e not in ignored]
    if unknown:
        total = sum(n for _, n in unknown)
        warn = unknown_events == "warn"
        report.problems.append(Problem(
            "events", "event_type", "unknown_event_type", "warning" if warn else "error", total,
            f"{_files(raw)}: {_n(total, 'event has', 'events have')} {_n(len(unknown), 'event_type', 'event_types')} "
            "with no role"
            + (", left out of every feature (unknown_events: warn in configs/roles.yaml)" if warn else ""),
            "map each under `event_roles:` in configs/roles.yaml, or list it under `ignore:`"
            + ("" if warn else " (`unknown_events: warn` there makes a new name a warning, its events left out, "
                               "for nightly runs)")
            + _role_guesses([e for e, _ in unknown], role_of),
            tuple(f"{e!r} ({_n(n, 'event', 'events')})" for e, n in unknown[:5]),
        ))
    states = order_states([e for e, _ in rows])
    if states:  # mapped or not: mapped as they read, refunded orders are refunds and no purchases
        n = sum(report.event_types[e][0] for e in states)
        report.problems.append(Problem(
            "events", "event_type", "order_states", "warning", n,
            f"{_files(raw)}: the event_type column holds orders' states ({', '.join(map(repr, states))}), not what "
            "happened: mapped as they read, a refunded order is a refund and no purchase, and a partial refund "
            "counts the order's whole total",
            ORDER_STATES_FIX, tuple(f"{e!r} ({_n(report.event_types[e][0], 'row', 'rows')})" for e in states[:5])))
    total = sum(n for _, n in rows)
    if total and not any(role_of.get(e) == "purchase" for e in report.event_types):
        mapped = [e for e, r in role_of.items() if r == "purchase"]
        report.problems.append(Problem(
            "events", "event_type", "no_purchases", "warning", total,
            f"{_files(raw)}: none of the {_n(total, 'event', 'events')} is a purchase (configs/roles.yaml maps "
            f"{', '.join(map(repr, mapped)) or 'no event name'} to purchase): recency, frequency, spend and the "
            "rhythm features are empty, no one can be labelled a buyer, and churn (over customers who purchased) has no one",
            "map your order event to purchase under `event_roles:` in configs/roles.yaml"
            + "".join(f" ({', '.join(map(repr, like[:3]))} {'looks' if len(like) == 1 else 'look'} like one)"
                      for like in [[e for e, _ in rows if guess_role(e) == "purchase"]] if like),
            tuple(f"{e!r} ({_n(n, 'event', 'events')})" for e, n in rows[:5])))
    # Rows of a role without an amount, counted from the check scan's amounts (no scan of their own),
    # or every row of it when the log has no amount column.
    for role, counts in (("purchase", "as purchases (frequency, recency, rhythm) and as 0 in spend (monetary_total, "
                                      "monetary_mean, spend_<w>d)"),
                         ("refund", "as refunds (n_refund, refund_rate) and as 0 in refund_amount")):
        names = [e for e in report.event_types if role_of.get(e) == role]
        if "amount" not in raw.columns:
            n = sum(report.event_types[e][0] for e in names)
            if n:
                report.problems.append(Problem(
                    "events", "amount", f"{role}_without_amount", "warning", n,
                    f"{_files(raw)}: there is no `amount` column, so {_n(n, role, role + 's')} "
                    f"{'has' if n == 1 else 'have'} no amount",
                    f"they count {counts}; add the column, or map yours to it (`columns: {{amount: your_column}}` "
                    "under sources.events in configs/catalog.yaml)"))
            continue
        missing = sum(report.event_types[e][0] - report.amounts.get(e, 0) for e in names) if "amount" in t else 0
        if missing:
            listed = ", ".join(map(literal, names))
            lines = _line_items(con, raw.view, t, listed) if role == "purchase" else 0
            fix = f"they count {counts}; fill the amount where it is known"
            if lines:
                fix = ("sum each order's lines to one row first (see 'Mapping your own data' in the README)"
                       + ("" if lines == missing else f"; the other {missing - lines:,} count {counts}: fill the "
                                                      "amount where it is known"))
            report.problems.append(Problem(
                "events", "amount", f"{role}_without_amount", "warning", missing,
                f"{_files(raw)}: {_n(missing, role, role + 's')} {'has' if missing == 1 else 'have'} no amount"
                + (f"; {lines:,} of them {'shares its' if lines == 1 else 'share their'} customer and time with a "
                   "purchase that has one: an order's line items, one row each (a Shopify orders export), each of "
                   "which counts as an order" if lines else ""),
                fix,
                _examples(con, raw.view, f"{t['event_type'].expr} IN ({listed}) AND {t['amount'].expr} IS NULL "
                          f"AND NOT coalesce({t['amount'].bad}, FALSE)",
                          "event_id" if "event_id" in t else None),
            ))


def check_currency(con: duckdb.DuckDBPyConnection, report: ValidationReport, currency: str = "") -> None:
    """A warning when the events' currency column (Shopify's `Currency`) holds several codes, or one
    other than ``currency`` (configs/project.yaml, when it is a code): amounts are added as they are,
    so euros and dollars would be summed as one. `init` says so once; a nightly run may meet a
    second currency long after. One scan of that column, only when the events have one."""
    raw = report.sources.get("events")
    if raw is None:
        return
    for column in [c for c in raw.columns if CURRENCY_COLUMN.match(c)][:1]:
        codes = currency_codes(con, raw.view, column)
        shown = ", ".join(f"{c} ({n:,})" for c, n in codes[:5]) + (", ..." if len(codes) > 5 else "")
        fix = ("convert the amounts to one currency upstream (a column of converted amounts, mapped as `amount`), "
               "and say which in `currency:` in configs/project.yaml")
        if len(codes) > 1:
            report.problems.append(Problem(
                "events", column, "several_currencies", "warning", sum(n for _, n in codes[1:]),
                f"{_files(raw)}: the amounts are in several currencies (column '{column}': {shown}); dynseg adds "
                "amounts as they are, so they are summed as one", fix))
        elif codes and re.fullmatch(r"[A-Z]{3}", currency.upper()) and codes[0][0] != currency.upper():
            report.problems.append(Problem(
                "events", column, "other_currency", "warning", codes[0][1],
                f"{_files(raw)}: the amounts are in {codes[0][0]} (column '{column}'), but configs/project.yaml says "
                f"currency: {currency}", "correct `currency:` in configs/project.yaml, or convert the amounts"))


def currency_codes(con: duckdb.DuckDBPyConnection, view: str, column: str) -> list[tuple[str, int]]:
    """The codes of a currency column (upper case, trimmed), commonest first, at most 6, with their rows."""
    return con.execute(f"SELECT upper(trim(CAST({ident(column)} AS VARCHAR))) AS c, count(*) FROM {view} "
                       "WHERE c IS NOT NULL AND c <> '' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 6").fetchall()


def _line_items(con: duckdb.DuckDBPyConnection, view: str, t: dict[str, Typed], listed: str) -> int:
    """Purchases without an amount that share customer and instant with a purchase that has one:
    an export with a row per line item and the order's total on its first line. Asked only when
    some purchase has no amount, so a log of whole orders pays nothing for it."""
    if not {"customer_id", "ts"} <= set(t):
        return 0
    return int(con.execute(f"""
        SELECT coalesce(sum(n - with_amount), 0) FROM (
            SELECT count(*) AS n, count({t['amount'].expr}) AS with_amount FROM {view}
            WHERE {t['event_type'].expr} IN ({listed}) GROUP BY {t['customer_id'].expr}, {t['ts'].expr})
        WHERE with_amount > 0 AND n > with_amount""").fetchone()[0])


def _check_unknown_customers(con: duckdb.DuckDBPyConnection, report: ValidationReport, count: bool = True) -> None:
    ev, cu = report.typed["events"], report.typed["customers"]
    linked = "identities" in report.sources  # event ids may meet the profiles through identity merges
    if "customer_id" not in ev:
        return
    # An event id meets a profile as it is, or, with identities, through an identifier it shares
    # with a profiled id (one link deep: enough to tell ids of one form from ids of another, and an
    # anonymous id linked to a customer is not one "without a profile")
    profiled = f"SELECT {cu['customer_id'].expr} AS id FROM raw_customers"
    it = report.typed.get("identities", {})
    if linked and all(c in it for c in ("customer_id", "id_type", "id_value")):
        from features.identity import identifier_sql

        kind, value = identifier_sql(it["id_type"].expr, it["id_value"].expr)  # matched as resolution matches them
        links = f"SELECT {it['customer_id'].expr} AS cid, {kind} AS t, {value} AS v FROM raw_identities"
        profiled = f"""{profiled} UNION ALL SELECT l.cid FROM ({links}) l SEMI JOIN (
            SELECT p.t, p.v FROM ({links}) p SEMI JOIN ({profiled}) c ON p.cid = c.id) k ON l.t = k.t AND l.v = k.v"""
    distinct_unknown = f"""
        SELECT count(*), min(e.id) FROM (SELECT DISTINCT {ev['customer_id'].expr} AS id FROM raw_events) e
        ANTI JOIN ({profiled}) c ON e.id = c.id
        WHERE e.id IS NOT NULL AND trim(e.id) <> ''  -- a blank id is an error of its own (null_id)
    """
    if count:
        # The events' distinct ids first, then the few of those without a profile: at 50M events
        # and 1M customers, 2.8 s against 3.3-3.9 s for probing the profiles with every event's id.
        n, example = con.execute(distinct_unknown).fetchall()[0]
        if not n:
            return
    # Some ids have no profile (or, not counted, may have none). If none has, the two sources name
    # customers differently (integers against 'c0001'-style ids, another column): every profile
    # feature would be lost in silence. Asked of every event's id, this stops at the first that
    # meets a profile.
    any_match, profile_example = con.execute(f"""
        SELECT (SELECT count(*) FROM (SELECT 1 FROM (SELECT {ev['customer_id'].expr} AS id FROM raw_events) e
                SEMI JOIN ({profiled}) c ON e.id = c.id LIMIT 1)),
               (SELECT min({cu['customer_id'].expr}) FROM raw_customers)
    """).fetchall()[0]
    if not any_match and profile_example is not None:
        if not count:  # (an error: what it costs no longer matters)
            n, example = con.execute(distinct_unknown).fetchall()[0]
            if not n:  # no event has an id
                return
        other = _matching_column(con, "raw_customers", f"SELECT {ev['customer_id'].expr} AS id FROM raw_events",
                                 cu["customer_id"].expr)
        # (never the events' own event_id: a counter 1, 2, 3... "holds" integer customer ids too)
        mine = _matching_column(con, "raw_events", f"SELECT {cu['customer_id'].expr} AS id FROM raw_customers",
                                ev["customer_id"].expr + (" " + ev["event_id"].expr if "event_id" in ev else ""))
        fix = ("point both sources' customer_id at the same identifier (`columns:` in configs/catalog.yaml), "
               "or fix the ids' form in one of them")
        # every id padded (or cased) otherwise in one source: the example's own profile, and that fix
        spelled = _spelled_otherwise(con, f"SELECT {cu['customer_id'].expr} AS id FROM raw_customers", example)
        if spelled is not None:
            fix = (f"the customers source spells {example!r} as {spelled!r} (leading zeros, case, spaces, or a "
                   "number written as a float, 47.0 for 47): write the ids one way in both sources (a spreadsheet pads "
                   "or strips zeros when it reads them as numbers; pandas writes integer ids that had a missing value "
                   "as floats: write them as integers or text)")
        elif other:
            fix = (f"the customers source's column {other[0]!r} holds the events' ids ({other[1]:.0%} of a sample "
                   f"found): map it, `customer_id: {other[0]}` in the `columns:` of sources.customers in "
                   "configs/catalog.yaml; or " + fix)
        elif mine:
            fix = (f"the events source's column {mine[0]!r} holds the customers' ids ({mine[1]:.0%} of a sample "
                   f"found): map it, `customer_id: {mine[0]}` in the `columns:` of sources.events in "
                   "configs/catalog.yaml; or " + fix)
        report.problems.append(Problem(
            "events", "customer_id", "no_customer_matches", "error", int(n),
            f"none of the {n:,} customer_ids in events is in customers: the two sources name customers "
            f"differently (events: {example!r}, customers: {spelled or profile_example!r})",
            fix))  # (the two examples are in the message)
        return
    if count:
        report.problems.append(unknown_customer_problem(
            int(n), example, _spelled_otherwise(con, f"SELECT {cu['customer_id'].expr} AS id FROM raw_customers", example)))


def _matching_column(con: duckdb.DuckDBPyConnection, table: str, ids: str, mapped: str) -> tuple[str, float] | None:
    """The column of ``table`` (other than the one mapped, ``mapped``) that holds the most of a
    sample of ``ids`` (as text, trimmed, any case: an email column beside a numeric customer id),
    with the share found; None when no column holds a fifth of them."""
    sample = f"SELECT DISTINCT lower(trim(CAST(id AS VARCHAR))) AS id FROM ({ids}) WHERE id IS NOT NULL LIMIT 500"
    n = con.execute(f"SELECT count(*) FROM ({sample})").fetchall()[0][0]
    if not n:
        return None
    columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()
               if r[1] in ("VARCHAR", "BIGINT", "INTEGER", "HUGEINT", "UBIGINT") and ident(r[0]) not in mapped][:40]
    if not columns:
        return None
    found = con.execute("SELECT " + ", ".join(
        f"(SELECT count(*) FROM ({sample}) s SEMI JOIN (SELECT DISTINCT lower(trim(CAST({ident(c)} AS VARCHAR))) AS v "
        f"FROM {table}) t ON s.id = t.v)" for c in columns)).fetchall()[0]
    best = max(range(len(columns)), key=lambda i: found[i])
    return (columns[best], found[best] / n) if found[best] >= 0.2 * n else None


def _spelled_otherwise(con: duckdb.DuckDBPyConnection, profile_ids: str, example: str | None) -> str | None:
    """A profile id that is ``example`` written another way (leading zeros, case, surrounding
    spaces): ids '1' in events and '000001' in customers match only from 100000 on, and only a
    warning said so, without the reason."""
    if example is None:
        return None
    # (pandas writes integer ids that had a missing value as floats: 47.0 for 47)
    plain = "lower(ltrim(regexp_replace(trim({}), '\\.0+$', ''), '0'))"
    found = con.execute(f"""SELECT min(id) FROM ({profile_ids}) WHERE id <> $x
                            AND {plain.format('id')} = {plain.format('$x')}""", {"x": example}).fetchall()
    return found[0][0] if found else None


def unknown_customer_problem(n: int, example: str, spelled: str | None = None) -> Problem:
    """The warning for ``n`` customer_ids in events without a profile (``example`` one of them;
    ``spelled``: a profile id that is the example written another way)."""
    fix = "add them to the customers source if they are real customers"
    if spelled is not None:
        fix = (f"the customers source spells {example!r} as {spelled!r} (leading zeros, case, spaces, or a float's "
               f".0): write the ids one way in both sources; else {fix}")
    return Problem(
        "events", "customer_id", "unknown_customer", "warning", n,
        f"{_n(n, 'customer_id in events is', 'customer_ids in events are')} not in customers; their profile features will be null",
        fix, (repr(example),))


#: A missing id written as text (an export's NULL, pandas' None and nan, a spreadsheet's N/A), as
#: ids read in lower case with the white space around them trimmed
PLACEHOLDER_IDS = ("null", "none", "nan", "n/a", "na", "undefined", "nil", "#n/a", "-")


def placeholder(expr: str) -> str:
    """SQL: the text value ``expr`` is one of :data:`PLACEHOLDER_IDS` (any case, spaces around)."""
    return f"lower(trim(CAST({expr} AS VARCHAR))) IN ({', '.join(map(literal, PLACEHOLDER_IDS))})"


def placeholder_id_text(ids: list[str], events: int | None = None) -> str:
    """What to say of customer_ids that are a missing id written as text."""
    shown = " and ".join(map(repr, ids[:3])) + (f" (and {len(ids) - 3} more)" if len(ids) > 3 else "")
    rows = f" ({events:,} events)" if events is not None else ""
    return (f"customer_id {shown}{rows} {'looks' if len(ids) == 1 else 'look'} like a missing id written as text: "
            f"{'it is' if len(ids) == 1 else 'each is'} one customer in every feature, score and segment (blank "
            "such ids in the export: a row without an id is refused, or left out under `null_ids: drop`)")


def placeholder_id_problem(con: duckdb.DuckDBPyConnection, report: ValidationReport) -> Problem | None:
    """The events' customer_ids that are a missing id written as text, counted over every event
    (``data validate``; a run finds them among its customers, see
    :func:`pipeline.jobs.features.placeholder_id_warnings`)."""
    t = report.typed.get("events", {})
    if "customer_id" not in t or "events" not in report.sources:
        return None
    rows = con.execute(f"SELECT id, count(*) FROM (SELECT {t['customer_id'].expr} AS id FROM "
                       f"{report.sources['events'].view}) WHERE {placeholder('id')} GROUP BY 1 ORDER BY 2 DESC").fetchall()
    if not rows:
        return None
    n = sum(c for _, c in rows)
    message, fix = placeholder_id_text([r for r, _ in rows], n).split(" (blank such", 1)
    return Problem("events", "customer_id", "placeholder_id", "warning", n, message,
                   "blank such" + fix.rstrip(")"), tuple(f"{r!r}: {_n(c, 'event', 'events')}" for r, c in rows[:3]))


def unknown_customers(con: duckdb.DuckDBPyConnection, report: ValidationReport, ids: object) -> Problem | None:
    """The ``unknown_customer`` warning for a run validated without counting them: ``ids`` (the
    customer_ids its features found: an Arrow array or pandas Series, one per customer) counted
    against the canonical ``customers`` view. A run's customers are the events' ids before its
    as_of, merged identities folded into one (an id merged into a profiled customer has a profile);
    the ids are found by then, so this is about 0.3 s at a million customers where counting them
    in validation is about 2.8 s. None when all have a profile, or there are no profiles to have."""
    if "customer_id" not in report.typed.get("customers", {}) or "customer_id" not in report.typed.get("events", {}):
        return None
    con.register("_run_customer_ids", pa.table({"id": ids}))
    try:
        n, example = con.execute("""
            SELECT count(*), min(r.id) FROM _run_customer_ids r ANTI JOIN customers c ON r.id = c.customer_id
            WHERE r.id IS NOT NULL
        """).fetchall()[0]
    finally:
        con.unregister("_run_customer_ids")
    if not n:
        return None
    return unknown_customer_problem(int(n), example, _spelled_otherwise(con, "SELECT customer_id AS id FROM customers", example))
