"""``dynseg init``: a new project's configs, proposed from the shop's own files.

The catalog names the files, with the ``columns:`` mapping validation would propose (other tools'
names such as ``userId``, ``timestamp``, ``revenue``, then look-alikes); ``roles.yaml`` maps the
event names whose words say their role (``Placed Order`` is a purchase) and lists the others for a
person to place. The remaining configs are the repository's (the demo's settings, which the
README documents), with a holdout salt of the project's own. Nothing is written unless all of it
is: the folder is staged beside ``configs/`` and renamed into place.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import yaml

from features.asof import BadValue
from features.engine import no_progress_bar
from features.contract import CONTRACT, CURRENCY_COLUMN, ORDER_STATES_FIX, ROLES, guess_role, order_states, unguessed_because
from features.normalize import (DECIMAL_COMMA, EPOCH_UNITS, INTEGER_TYPES, THOUSANDS_COMMA, forms_literal, ident,
                                is_numeric, iso_timestamptz, literal)
from features.sources import (SourceError, SourceSpec, _head, _utf16, drop_copies, glob_files, register_source,
                              resolve_files)
from features.validation import ID_NAME, ISO_FORMS, currency_codes, likely_columns
from pipeline.config import ConfigError, ConfigIssue
from pipeline.workspace import write_atomic

#: The repository's configs: the settings the README documents, copied as a new project's start.
TEMPLATES = Path(__file__).resolve().parents[2] / "configs"

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv", ".txt": "csv"}
#: A table of a DuckDB database, as the options name it: FILE.duckdb:TABLE
_DATABASE_TABLE = re.compile(r"(.+\.(?:duckdb|db)):([^:/\\]+)")


def _format_of(path: str) -> str | None:
    """A file's format by its name (``.csv.gz`` is CSV), or None."""
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    return _FORMATS.get(suffixes[-1]) if suffixes else None

_CATALOG_HEADER = """\
# Named input sources (the data contract is in the README), written by `dynseg init` on {day}.
# The `columns:` mappings ({{contract_name: your_column}}) were proposed from your column names:
# check them, then run `dynseg data validate`, which proposes what is still missing.
#   format: parquet | csv | duckdb      path: file, glob (data/events-*.parquet) or DuckDB file
#   table: (duckdb only; schema.table)  delimiter / encoding: (csv only; utf-8, utf-16, latin-1)
#   timestamp_format: (text timestamps that are not ISO-8601, e.g. '%d/%m/%Y %H:%M'; numbers since
#     1970-01-01 UTC: epoch_s, epoch_ms or epoch_us)
# Paths are relative to the project folder.
"""

_ROLES_HEADER = """\
# Your event names -> the roles dynseg's features understand, as `dynseg init` guessed them from
# the names' words on {day}: check each. An event name that is neither mapped nor ignored fails
# validation, so new tracking never disappears silently.
"""


@dataclass
class SourceFound:
    """One source as init read it: where, how, and what it could map."""

    name: str
    spec: dict
    files: int = 0
    rows: int | None = None
    mapped: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)  # required contract columns nothing proposes
    error: str | None = None  # why it could not be read (written anyway, for validation to explain)
    view: str | None = None  # the DuckDB view over it, its own column names
    notes: list[str] = field(default_factory=list)  # what init could not decide for the user


@dataclass
class InitResult:
    folder: Path
    sources: list[SourceFound]
    roles: dict[str, list[tuple[str, int]]]  # role -> (event name, events)
    unplaced: list[tuple[str, int]]
    written: list[Path]
    #: The demo's segments left out of configs/segments.yaml, each with the columns this data lacks
    dropped_segments: dict[str, list[str]] = field(default_factory=dict)
    #: Why the segments were kept as the demo has them (the data does not validate yet), or None
    segments_unchecked: str | None = None
    #: The events' one currency (from a column named like ``currency``), set in configs/project.yaml
    currency: str | None = None
    #: The demo's figures set to this data's (the vip threshold, the freshness lag), each said in a line
    fitted_values: list[str] = field(default_factory=list)


def init_project(folder: Path, events: str, customers: str | None = None, identities: str | None = None) -> InitResult:
    """Write ``folder/configs`` for the given files; refuse when it exists (nothing is overwritten)."""
    folder = folder.expanduser().resolve()
    cfg_dir = folder / "configs"
    if cfg_dir.exists() or cfg_dir.is_symlink():
        raise ConfigError([ConfigIssue(str(cfg_dir), "", "already exists; `dynseg init` starts a new project and "
                                       "never overwrites one: choose another folder, or move that configs/ away")])
    if folder.exists() and not folder.is_dir():
        raise BadValue(f"project folder {folder} is a file; expected a folder (it is created if missing)")
    given = {"events": events, "customers": customers, "identities": identities}
    paths = {name: _given_path(name, p, folder) for name, p in given.items() if p is not None}  # all, before any work
    con = duckdb.connect()
    no_progress_bar(con)  # printed "61% ▕███" into init's output
    try:
        found = [_read_source(con, name, path, folder) for name, path in paths.items()]
        if found[0].error:  # nothing to propose from: configs/ written then blocked running init again
            raise BadValue(f"the event log {paths['events']} could not be read ({found[0].error}); nothing was "
                           "written. Fix the file (or give the right one), then run `dynseg init` again")
        roles, unplaced = _event_names(con, found[0])
        currency = _currency(con, found[0])
    finally:
        drop_copies(con)
        con.close()
    result = InitResult(folder, found, roles, unplaced, _write(folder, found, roles, unplaced, currency), currency=currency)
    if "segments.yaml" in {p.name for p in result.written}:
        result.dropped_segments, result.segments_unchecked = _fit_segments(folder)
        if result.segments_unchecked is None:
            result.fitted_values = _fit_values(folder)
    return result


def refit_project(folder: Path) -> tuple[dict[str, list[str]], list[str]]:
    """``dynseg init --refit``: fit the demo's segments and figures to a project's data once it
    validates (at init it seldom does: real exports need their mappings fixed first, and then the
    demo's vip rule, segments the data cannot have and freshness lag stayed for good, init refusing
    an existing configs/). Returns the segments left out and the lines of what was fitted; only the
    demo's own values are touched, so a second refit changes nothing."""
    folder = folder.expanduser().resolve()
    if not (folder / "configs" / "segments.yaml").is_file():
        raise ConfigError([ConfigIssue(str(folder / "configs" / "segments.yaml"), "", "not found; `dynseg init --refit` "
                                       "fits a project's configs to its data: start one with `dynseg init --events FILE`")])
    dropped, unchecked = _fit_segments(folder, demo_only=True)
    if unchecked is not None:
        raise BadValue(f"nothing was fitted: {unchecked}. Fix what `dynseg data validate` names, then run "
                       "`dynseg init --refit` again")
    return dropped, _fit_values(folder)


#: The demo's vip rule as configs/segments.yaml has it, and the share of customers it is meant to hold
_VIP = re.compile(r"(?m)^(    description: )Spent 300 or more in the last 365 days \(about the top 5 % of the demo "
                  r"shop\)\.$(?P<between>(?:\n    [^\n]*)*?)\n    where: spend_365d >= 300$")


def _nice(x: float) -> float:
    """Two significant figures (283.1 -> 280, 48,213 -> 48,000), as a person would write a threshold."""
    if x <= 0:
        return x
    digits = 1 - int(np.floor(np.log10(x)))
    return float(round(x, digits))


def _fit_values(folder: Path) -> list[str]:
    """Two of the demo's figures fitted to this data, as of its newest event, each with what it was
    set from (in the file and in the returned lines):
    - ``vip``'s ``spend_365d >= 300`` was about the top 5 % of the demo shop, and held every account
      of a B2B shop; it is set to the 95th percentile of ``spend_365d`` over the customers (two
      significant figures), or over those who spent when fewer than 5 % did;
    - ``freshness.max_lag_days: 3`` refused a monthly biller's log mid-month; it becomes the 90th
      percentile of the gaps between the days with events in the last 180 days, plus a day, when
      that is more than 3 (a daily log keeps 3: one outage does not widen it).
    A value the user could not read is left as it is (the lines say nothing of it)."""
    from datetime import timedelta

    from features.customer_features import customer_features
    from pipeline.config import load_config
    from pipeline.jobs.data import load_for_run
    from pipeline.jobs.features import data_profile, feature_spec, open_engine

    said: list[str] = []
    try:
        cfg = load_config(folder)
        data = load_for_run(cfg, None)
    except Exception:  # noqa: BLE001 - the demo's values stay; validation names the data's problems
        return said
    try:
        last = data.report.time_range(cfg.role_of)[1]
        if last is None:
            return said
        last = last if last.tzinfo else last.replace(tzinfo=timezone.utc)
        as_of = last + timedelta(microseconds=1)  # the newest event included
        eng = open_engine(cfg, data, "duckdb")
        try:
            feats = customer_features(eng.events(), eng.customers(), as_of, feature_spec(cfg), data_profile(cfg, data),
                                      consents=eng.consents())
            spend = (eng.execute(feats.select("spend_365d")).spend_365d.astype(float)
                     if "spend_365d" in feats.columns else None)
            days = eng.execute(eng.events().filter(lambda t: t.ts > as_of - timedelta(days=180))
                               .select(day=lambda t: t.ts.date()).distinct()).day
        finally:
            eng.close()
    except Exception:  # noqa: BLE001 - configs/ is written and stays; these two values are a courtesy
        return said
    finally:
        data.con.close()
        drop_copies(data.con)
    day = f"{last:%Y-%m-%d}"
    path = folder / "configs" / "segments.yaml"
    text = path.read_text()
    if spend is not None and len(spend) and _VIP.search(text):
        threshold, whom = _nice(float(spend.quantile(0.95))), "customers"
        if threshold <= 0:  # fewer than 5 % spent in the year: the top 5 % of those who did
            spent = spend[spend > 0]
            threshold, whom = (_nice(float(spent.quantile(0.95))), "customers who spent in that year") if len(spent) else (0, "")
        if threshold > 0:
            shown = f"{threshold:,.0f}" if threshold >= 10 else f"{threshold:g}"
            text = _VIP.sub(lambda m: f"{m.group(1)}Spent {shown} or more in the last 365 days (about the top 5 % of the "
                                      f"{whom} as of {day}, set by dynseg init).{m.group('between')}\n"
                                      f"    where: spend_365d >= {threshold:g}", text)
            write_atomic(path, text.encode())
            said.append(f"vip: spend_365d >= {shown}, about the top 5 % of the {whom} as of {day} (the demo's 300 was "
                        "its top 5 %)")
    ordered = sorted(pd.to_datetime(days).dt.date) if len(days) else []
    gaps = np.diff([d.toordinal() for d in ordered]) if len(ordered) > 1 else np.array([])
    lag = int(np.ceil(np.quantile(gaps, 0.9))) + 1 if len(gaps) else 0
    project = folder / "configs" / "project.yaml"
    if lag > 3 and project.exists():
        before = project.read_text()
        after = re.sub(r"(?m)^  max_lag_days: 3$", f"  max_lag_days: {lag}  # set by dynseg init: 90 % of the gaps between "
                       f"days with events in the 180 days to {day} are at most {lag - 1} days", before)
        if after != before:
            write_atomic(project, after.encode())
            said.append(f"freshness.max_lag_days: {lag}: events come {lag - 1} or fewer days apart 90 % of the time (the "
                        "demo's 3 would refuse this log between them)")
    return said


def _fit_segments(folder: Path, demo_only: bool = False) -> tuple[dict[str, list[str]], str | None]:
    """Leave out of the new project's segments.yaml the demo's segments whose rules read columns
    this data cannot have (no bounce events: no ``undeliverable``; no profiles: no
    ``days_since_signup``), so that its first ``score`` runs; their names go from
    ``suppress_always`` and ``exclude`` too, and a comment at the top says what was left out and
    why. Possible only when the data validates as init wrote the configs; else the segments stay
    as they are, and the reason is returned (``segments check`` names them later). ``demo_only``
    (``--refit``, on a file the user may have added to): only a segment defined as the demo defines
    it is left out; the user's own, a typo in a rule say, stays for ``segments check`` to name."""
    from pipeline.config import SegmentsConfig, load_config, segment_issues
    from pipeline.jobs.data import DataError
    from pipeline.jobs.score import segment_columns
    from pipeline.rules import RuleError, parse_rule

    path = folder / "configs" / "segments.yaml"
    try:
        cfg = load_config(folder)
        columns = segment_columns(cfg)
    except DataError as e:
        return {}, f"the data does not validate yet ({e.summary})"
    except (ConfigError, SourceError, ValueError) as e:
        return {}, f"the configuration or data could not be read ({str(e).splitlines()[0]})"
    lacking: dict[str, list[str]] = {}
    for s in cfg.segments.segments:
        try:
            parse_rule(s.where, columns)
        except RuleError as e:
            unknown = list(dict.fromkeys(re.findall(r"unknown column '([^']+)'", str(e))))
            if unknown:
                lacking[s.name] = unknown
    if demo_only and lacking:
        demo = {d["name"]: d for d in (yaml.safe_load((TEMPLATES / "segments.yaml").read_text()) or {}).get("segments", [])}
        own = {d.get("name"): d for d in (yaml.safe_load(path.read_text()) or {}).get("segments", [])}
        lacking = {n: cols for n, cols in lacking.items() if n in demo and own.get(n) == demo[n]}
    if not lacking:
        return {}, None
    text = path.read_text()
    kept = _without_segments(text, set(lacking))
    try:  # the rewritten file must load as the old one did, or the old one stays
        fitted = SegmentsConfig.model_validate(yaml.safe_load(kept))
        if segment_issues(fitted):
            raise ValueError(segment_issues(fitted))
    except Exception:  # noqa: BLE001 - any doubt keeps the demo's file, which segments check explains
        return {}, "the demo's segments could not be fitted to this data automatically"
    note = ("# `dynseg init` left out these segments of the demo, as this data has no column they read:\n"
            + "".join(f"#   {name}: {', '.join(cols)}\n" for name, cols in lacking.items()))
    write_atomic(path, (note + kept).encode())  # the demo's file or the fitted one, never half of either
    return lacking, None


def _without_segments(text: str, names: set[str]) -> str:
    """segments.yaml's text without the segments ``names`` (their blocks, up to a section comment
    that heads the next ones) and without their names in ``suppress_always`` and ``exclude``."""
    blocks = re.split(r"(?m)^(?=  - name: )", text)
    out = [blocks[0]]
    for block in blocks[1:]:
        name = block.split("\n", 1)[0].removeprefix("  - name: ").strip()
        if name in names:
            section = re.search(r"(?m)^  # --", block)
            out.append(block[section.start():] if section else "")
        else:
            out.append(block)
    kept = "".join(out)

    def without(match: re.Match) -> str:
        items = [i.strip() for i in match.group(2).split(",") if i.strip() and i.strip() not in names]
        return f"{match.group(1)}[{', '.join(items)}]" if items or "suppress_always" in match.group(1) else ""

    kept = re.sub(r"(?m)^(suppress_always: )\[([^\]]*)\]", without, kept)
    kept = re.sub(r"(?m)^(    exclude: )\[([^\]]*)\]\n?", lambda m: (without(m) + "\n") if without(m) else "", kept)
    return kept


def _rel(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder))
    except ValueError:
        return str(path)


def _given_path(name: str, given: str, folder: Path) -> str:
    """``given`` (relative to where dynseg runs, as a shell path is) as the catalog holds it:
    relative to the project folder when it lies inside it, else absolute; a table in a DuckDB
    database as ``FILE:TABLE``. Refused when it names no file: a catalog pointing at nothing would
    only move the error to the next command."""
    database = _DATABASE_TABLE.fullmatch(given)
    if database:
        path = Path(database.group(1)).expanduser()
        path = path if path.is_absolute() else Path.cwd() / path
        if not path.is_file():
            raise BadValue(f"--{name} {given}: no such database file {path}")
        try:
            return f"{path.resolve().relative_to(folder)}:{database.group(2)}"
        except ValueError:
            return f"{path.resolve()}:{database.group(2)}"
    if Path(given).suffix.lower() in (".duckdb", ".db"):
        raise BadValue(f"--{name} {given}: a DuckDB database holds tables; name the table as FILE:TABLE "
                       f"({given}:events, or {given}:schema.table)")
    path = Path(given).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if _format_of(given) is None:
        raise BadValue(f"--{name} {given}: cannot tell its format from the name ({path.suffix or 'no suffix'}); "
                       f"expected a name ending in {', '.join(_FORMATS)} (or .csv.gz), or a table in a DuckDB "
                       "database as FILE.duckdb:TABLE")
    if glob.has_magic(str(path)) and not path.is_file():  # a file named `events[1].csv` is that file
        if not glob_files(path):
            raise BadValue(f"--{name} {given}: the glob matches no file")
    elif not path.is_file():
        raise BadValue(f"--{name} {given}: {'is a folder; expected a file or a glob' if path.is_dir() else 'no such file'}")
    exact = path if glob.has_magic(str(path)) and not path.is_file() else path.resolve()
    try:
        return str(exact.relative_to(folder))
    except ValueError:
        return str(exact)


def _read_source(con: duckdb.DuckDBPyConnection, name: str, path: str, folder: Path) -> SourceFound:
    database = _DATABASE_TABLE.fullmatch(path)
    if database:
        fmt, path = "duckdb", database.group(1)
        spec: dict = {"format": fmt, "path": path, "table": database.group(2)}
    else:
        fmt = _format_of(path)
        spec = {"format": fmt, "path": path}
    if fmt == "csv":
        spec |= _csv_dialect(con, path, folder)
    found = SourceFound(name, spec)
    try:
        raw = register_source(con, name, SourceSpec(**spec), folder)
    except SourceError as e:
        found.error = str(e)
        return found
    found.files, found.rows, found.view = len(raw.files), raw.rows, raw.view
    found.mapped = likely_columns(raw)
    # a source's timestamp_format reads all its time columns: the first mapped one decides it
    times = [own for c in _TIME_COLUMNS.get(name, ()) if (own := found.mapped.get(c, c)) in raw.columns]
    if times and (is_numeric(raw.columns[times[0]]) or raw.columns[times[0]] == "VARCHAR"):
        unit = _epoch_unit(con, raw.view, times[0])
        if unit is not None:
            spec["timestamp_format"] = unit
        elif raw.columns[times[0]] == "VARCHAR" or raw.columns[times[0]] in INTEGER_TYPES:
            # whole numbers that are no epoch time may be compact dates (20260108)
            forms, note = _text_forms(con, raw.view, times[0], name)
            spec |= forms
            found.notes += [note] if note else []
    if name == "events" and "event_id" not in found.mapped and "event_id" not in raw.columns:
        # neither a column already mapped nor one named as a contract column (customer_id: one id per
        # row when each customer has one event, as in a small first export, yet not the event's id)
        contract = {c.name for c in CONTRACT[name]}
        free = [c for c in raw.columns if c not in found.mapped.values() and c.lower() not in contract]
        own = _row_id(con, raw.view, free, list(raw.columns))
        if own is not None:  # an export's order or message id: its repeats are exact copies, dropped
            found.mapped["event_id"] = own
            found.notes.append(f"'{own}' is read as event_id: every row has one, and rows that share one are "
                               "exact copies (an export's overlap, which validation drops); remove it from "
                               "`columns:` if it is not one event's id")
    amount = found.mapped.get("amount", "amount")
    if name == "events" and raw.columns.get(amount) == "VARCHAR" and _decimal_comma(con, raw.view, amount):
        spec["decimal"] = ","  # whatever the timestamps are (it was looked for only beside text dates)
    if raw.missing_in:
        lacking = {}
        for column, files in raw.missing_in.items():
            for f in files:
                lacking.setdefault(f, []).append(column)
        shown = "; ".join(f"{_rel(f, folder)} lacks {', '.join(map(repr, cols))}" for f, cols in list(lacking.items())[:3])
        found.notes.append(f"the {len(raw.files)} files of {path} do not share their columns ({shown}{'; …' if len(lacking) > 3 else ''}): "
                           "a glob reads files of one layout, and a file's missing columns read as empty. Put exports "
                           "of different layouts into one file with the contract's columns first (README, Data contract)")
    if found.mapped:
        spec["columns"] = dict(found.mapped)
    found.unmapped = [c.name for c in CONTRACT[name] if c.required and c.name not in raw.columns
                      and c.name not in found.mapped]
    return found


_SAMPLE = 200_000  # rows of a CSV whose text init reads for its date forms and decimal mark

#: Each source's time columns, as the contract names them: one ``timestamp_format`` reads them all
_TIME_COLUMNS = {"events": ("ts",), "customers": ("signup_at", "consent_updated_at")}

#: Text date forms of exports, by family: the forms of one family share the order of day and
#: month, and a column may mix them (a bare date beside date and time)
_DATE_FAMILIES: dict[str, tuple[str, ...]] = {
    f"{order}{sep}": tuple(f"{sep.join(parts)}{time}" for time in (" %H:%M:%S", " %H:%M", " %I:%M %p", ""))
    for order, parts in (("dmy", ("%d", "%m", "%Y")), ("mdy", ("%m", "%d", "%Y")), ("ymd", ("%Y", "%m", "%d")))
    # "": GA4's event_date (20260108)
    for sep in ("/", ".", "-", "") if not (order == "ymd" and sep == "-")  # 2026-11-28 is ISO already
}


def _row_id(con: duckdb.DuckDBPyConnection, view: str, unmapped: list[str], every: list[str]) -> str | None:
    """An unmapped column named like an id (``order_id``, ``msgId``) that identifies the rows as
    ``event_id`` must: never empty, and the rows that share a value are copies of one row. An order
    id in a log where an order's placing and refund share it is not one (two rows, one id)."""
    for column in [c for c in unmapped if ID_NAME.search(c)][:3]:
        c = ident(column)
        empty, ids, rows = con.execute(
            f"SELECT count(*) FILTER (WHERE {c} IS NULL OR trim(CAST({c} AS VARCHAR)) = ''), count(DISTINCT {c}), "
            f"count(DISTINCT ({c}, hash({', '.join(ident(x) for x in every)}))) FROM {view}").fetchone()
        if not empty and ids == rows:
            return column
    return None


def _sample(view: str) -> str:
    # On a sample: some 40 strptime calls a row would take half a minute at 5M rows, and a value the
    # sample misses is one validation reports (unparseable), naming the setting
    return f"(SELECT * FROM {view} USING SAMPLE reservoir({_SAMPLE} ROWS) REPEATABLE (7))"


def _text_forms(con: duckdb.DuckDBPyConnection, view: str, ts: str, name: str) -> tuple[dict, str | None]:
    """``timestamp_format`` for a CSV's text dates in column ``ts`` of source ``name``, when its
    values say so unambiguously: the one family of date forms that reads every time that ISO-8601
    does not (28/11/2026 14:03; none when day-first and month-first both read them all, as when no
    day passes 12). Also what could not be decided, for the user to say."""
    v = f"NULLIF(trim(CAST({ident(ts)} AS VARCHAR)), '')"
    iso = f"{iso_timestamptz(v)} IS NOT NULL"
    families = list(_DATE_FAMILIES)
    # a family reads the log when it reads every value that is not ISO (an export that switched
    # forms writes some rows 2025-01-01 05:22:22 beside 02/01/2025 08:54): those rows then take
    # an ISO form in the list, since a source's forms read it without ISO's own reading
    misses = [f"count({v}) FILTER (try_strptime({v}, {forms_literal(_DATE_FAMILIES[f])}) IS NULL AND NOT {iso})"
              for f in families]
    hits = [f"count({v}) FILTER (try_strptime({v}, {literal(form)}) IS NOT NULL)"
            for f in families for form in _DATE_FAMILIES[f]]
    z = f"regexp_replace({v}, '([0-9])Z$', '\\1+00:00')"  # ISO's Z, as the reader takes it for %z
    iso_hits = [f"count({v}) FILTER ({iso} AND try_strptime({z}, {literal(form)}) IS NOT NULL)"
                for form in ISO_FORMS]
    row = con.execute(f"SELECT count({v}) FILTER (NOT {iso}), count({v}) FILTER ({iso}), "
                      f"{', '.join(misses + hits + iso_hits)} FROM {_sample(view)}").fetchone()
    not_iso, some_iso = row[0], row[1]
    missed, hit = row[2:2 + len(families)], row[2 + len(families):2 + len(families) + len(hits)]
    iso_hit = row[2 + len(families) + len(hits):]
    out: dict = {}
    note = None
    if not_iso:
        readers = [f for f, n in zip(families, missed) if n == 0]
        if len({f[:3] for f in readers}) > 1:
            note = (f"'{ts}' reads as day-first and as month-first dates alike (no day passes 12): set "
                    f"`timestamp_format` under sources.{name} yourself, e.g. '%d/%m/%Y %H:%M'")
        elif readers:  # one order of day and month reads them all
            counts = iter(hit)
            used = {f: [form for form in _DATE_FAMILIES[f] if next(counts) > 0] for f in families}
            forms = used[readers[0]]
            if some_iso:
                isos = [form for form, n in zip(ISO_FORMS, iso_hit) if n > 0]
                read = z if any("%z" in f for f in isos) else v  # as the reader takes ISO's Z
                left = some_iso if not isos else con.execute(
                    f"SELECT count({v}) FILTER ({iso} AND try_strptime({read}, {forms_literal(tuple(isos))}) IS NULL) "
                    f"FROM {_sample(view)}").fetchone()[0]
                forms = forms + isos
                if left:
                    note = (f"'{ts}' holds {some_iso:,} ISO timestamps beside its {forms[0]!r} dates, {left:,} of them in "
                            f"a form init could not name: add it to `timestamp_format` under sources.{name} (a source's "
                            "forms are all it reads)")
            out["timestamp_format"] = forms[0] if len(forms) == 1 else forms
    return out, note


def _decimal_comma(con: duckdb.DuckDBPyConnection, view: str, amount: str) -> bool:
    """Whether a CSV's text amounts use a decimal comma: every amount is such a number and one
    has a comma (1.234,56) that is no thousands separator (1,234 reads 1234 with a decimal point,
    so amounts whose every comma is followed by three digits keep it)."""
    a = f"NULLIF(trim({ident(amount)}), '')"
    not_decimal_comma, commas = con.execute(
        f"SELECT count({a}) FILTER (NOT regexp_matches({a}, '{DECIMAL_COMMA}') AND lower({a}) <> 'nan'), "
        f"count({a}) FILTER (contains({a}, ',') AND NOT regexp_matches({a}, '{THOUSANDS_COMMA}')) "
        f"FROM {_sample(view)}").fetchone()
    return not not_decimal_comma and bool(commas)


def _epoch_unit(con: duckdb.DuckDBPyConnection, view: str, column: str) -> str | None:
    """The unit of a time column of numbers (GA4's BigQuery export: microseconds; a CSV's text)
    whose every value, read in it, falls between 1990 and 2100; None when no unit fits (a number
    that is no time) or a value is no number (ISO text)."""
    n = f"TRY_CAST(trim(CAST({ident(column)} AS VARCHAR)) AS DOUBLE)"
    low, high, others = con.execute(f"SELECT min({n}), max({n}), count(*) FILTER ({ident(column)} IS NOT NULL "
                                    f"AND {n} IS NULL) FROM {view}").fetchone()
    if low is None or others:
        return None
    first, last = 631_152_000 * 10**6, 4_102_444_800 * 10**6  # 1990-01-01 and 2100-01-01, in microseconds
    for unit, micros in EPOCH_UNITS.items():  # seconds first
        if first <= low * micros and high * micros <= last:
            return unit
    return None


def _csv_dialect(con: duckdb.DuckDBPyConnection, path: str, folder: Path) -> dict:
    """The options a CSV file needs beyond the defaults: UTF-16 text (Excel's "Unicode text"),
    Latin-1 text (Excel's "CSV" on Windows, older ERPs: a byte that is no UTF-8 anywhere in the
    file), and a delimiter other than the comma, as DuckDB's sniffer finds it."""
    first = resolve_files(SourceSpec(format="csv", path=path), folder, "events")[0]
    out: dict = {}
    head = _head(first, 4096) or b""
    if _utf16(head) == "le":
        out["encoding"] = "utf-16"
        # DuckDB's sniffer reads UTF-8 only: the delimiter from the first lines' text (Excel's
        # "Unicode text" is tab-separated; with none set, the file read as a single column)
        delimiter = _text_delimiter(head.decode("utf-16-le", errors="ignore").lstrip("\ufeff"))
        if delimiter and delimiter != ",":
            out["delimiter"] = delimiter
        return out
    if b"\x00" not in head and not _utf8(first):  # a NUL is no text at all: validation says what it is
        out["encoding"] = "latin-1"
    try:
        (delimiter,) = con.execute(f"SELECT Delimiter FROM sniff_csv(?, encoding = '{out.get('encoding', 'utf-8')}')",
                                   [str(first)]).fetchone()
    except duckdb.Error:
        return out  # unreadable as sniffed: validation says why, naming the setting to change
    if delimiter and delimiter != ",":
        out["delimiter"] = delimiter
    return out


def _text_delimiter(text: str) -> str | None:
    """The delimiter of CSV text's first whole lines (comma, semicolon, tab or bar), or None."""
    import csv

    lines = text.splitlines()[:-1] or text.splitlines()  # the last may be cut short
    try:
        return csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t|").delimiter
    except csv.Error:
        return None


def _utf8(path: Path, chunk: int = 1 << 24) -> bool:
    """Whether the whole file reads as UTF-8 (a ``.gz`` file's text is checked from its first
    bytes only). Read in chunks: a name with an umlaut may come a million rows in. About 1 s a GB."""
    import codecs

    if path.suffix.lower() == ".gz":
        head = _head(path, chunk) or b""
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
            return True
        except UnicodeDecodeError:
            return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                decoder.decode(block, final=False)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    except OSError:
        return True  # unreadable: validation says why
    return True


def _event_names(con: duckdb.DuckDBPyConnection, events: SourceFound
                 ) -> tuple[dict[str, list[tuple[str, int]]], list[tuple[str, int]]]:
    """Each event name's count, placed in the role its words suggest, or left unplaced."""
    if events.view is None or "event_type" in events.unmapped:
        return {}, []
    column = ident(events.mapped.get("event_type", "event_type"))
    rows = con.execute(f"SELECT CAST({column} AS VARCHAR) AS e, count(*) AS n FROM {events.view} "
                       "WHERE e IS NOT NULL AND trim(e) <> '' GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    roles: dict[str, list[tuple[str, int]]] = {}
    unplaced = []
    states = set(order_states([name for name, _ in rows]))  # an order's state is no event: unplaced
    for name, n in rows:
        role = None if name in states else guess_role(name)
        if role is None:
            unplaced.append((name, n))
        else:
            roles.setdefault(role, []).append((name, n))
    return dict(sorted(roles.items(), key=lambda kv: ROLES.index(kv[0]))), unplaced


def _currency(con: duckdb.DuckDBPyConnection, events: SourceFound) -> str | None:
    """The events' currency when a column named like ``currency`` holds one code (``EUR``) on
    every row that has one. Several codes get a note instead: dynseg adds amounts as they are, so
    euros and dollars would be summed as one."""
    if events.view is None:
        return None
    columns = [c for (c,) in con.execute(f"SELECT column_name FROM (DESCRIBE {events.view})").fetchall()
               if CURRENCY_COLUMN.match(c)]
    for column in columns:
        codes = currency_codes(con, events.view, column)
        if len(codes) == 1 and re.fullmatch(r"[A-Z]{3}", codes[0][0]):
            return codes[0][0]
        if len(codes) > 1:
            shown = ", ".join(f"{c} ({n:,})" for c, n in codes[:5]) + (", …" if len(codes) > 5 else "")
            events.notes.append(f"the amounts are in several currencies (column '{column}': {shown}): dynseg adds "
                                "amounts as they are, so convert them to one currency before validating (a column of "
                                "converted amounts mapped as `amount`), then set `currency:` in configs/project.yaml")
            return None
    return None


def _write(folder: Path, found: list[SourceFound], roles: dict[str, list[tuple[str, int]]],
           unplaced: list[tuple[str, int]], currency: str | None = None) -> list[Path]:
    day = datetime.now(timezone.utc).date().isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    # made by mkdir, not mkdtemp: the umask's mode (a shared project's configs/ was 0700)
    staged = folder / f".configs.{secrets.token_hex(4)}.tmp"
    staged.mkdir()
    try:
        files = {"catalog.yaml": _CATALOG_HEADER.format(day=day) + "sources:\n" + "".join(
                     f"  {f.name}:\n" + "".join(f"    {_dump({k: v}, flow=isinstance(v, (dict, list)))}"
                                                 for k, v in f.spec.items()) for f in found),
                 "roles.yaml": _roles_text(day, roles, unplaced)}
        if TEMPLATES.is_dir():
            for template in sorted(TEMPLATES.rglob("*.yaml")):
                rel = template.relative_to(TEMPLATES)
                if str(rel) not in files and rel.parts[0] != "local":
                    files[str(rel)] = template.read_text()
        files.setdefault("profiles/local.yaml", "# The default profile: overrides nothing (configs/project.yaml holds "
                                                "the settings).\n{}\n")
        if "segments.yaml" in files:  # the project's own: the demo's salt would hold out the same ids
            files["segments.yaml"] = re.sub(r"(?m)^holdout_salt: .*$", f"holdout_salt: '{secrets.token_hex(8)}'",
                                            files["segments.yaml"])
        if currency and "project.yaml" in files:
            files["project.yaml"] = re.sub(r"(?m)^currency:[ \t]*$", f"currency: {currency}  # the events' currency column",
                                           files["project.yaml"])
        for rel, text in files.items():
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            (staged / rel).write_text(text)
        os.rename(staged, folder / "configs")  # fails, writing nothing, if configs/ appeared meanwhile
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return [folder / "configs" / rel for rel in files]


def spellings(names: list[str]) -> list[list[str]]:
    """The groups of ``names`` that are one name in different case or spacing (``Order Placed``,
    ``ORDER PLACED``, ``order placed ``): one event spelt several ways, to keep mapped together."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(" ".join(n.split()).casefold(), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def several_names(roles: dict[str, list[tuple[str, int]]]) -> list[str]:
    """The roles with names that differ by more than case or spacing (which may record one thing twice)."""
    return [role for role, names in roles.items() if len({" ".join(e.split()).casefold() for e, _ in names}) > 1]


def _roles_text(day: str, roles: dict[str, list[tuple[str, int]]], unplaced: list[tuple[str, int]]) -> str:
    text = _ROLES_HEADER.format(day=day)
    several = several_names(roles)
    if several:
        text += (f"# Check {', '.join(several)} first: two names of one role that record the same thing (an order's\n"
                 "# webhook and its page event, an email's sent and delivered) count it twice; keep one.\n")
    spelt = [g for names in roles.values() for g in spellings([e for e, _ in names])]
    if spelt:
        text += ("# One name spelt in different case or spacing is one event, not two: keep every spelling mapped\n"
                 f"# ({'; '.join(', '.join(map(repr, g)) for g in spelt)}).\n")
    text += _dump({"event_roles": {role: [e for e, _ in names] for role, names in roles.items()}})
    text += "\n# Event names you track but dynseg should not use.\n"
    if not unplaced:
        return text + "ignore: []\n"
    text += ("ignore:\n# Not placed by `dynseg init` (their words suggest no role; validation refuses them until\n"
             "# they are): map each under event_roles, or uncomment its line here to ignore it.\n")
    states = order_states([e for e, _ in unplaced])
    if states:
        text += (f"# {', '.join(states)}: orders' states (a payment status column), not events; " + ORDER_STATES_FIX
                 + ".\n")
    return text + "".join(f"#   {yaml.safe_dump([e], allow_unicode=True, width=1 << 20).strip()}  # {n:,} event{'s' if n != 1 else ''}"
                          + (f"; {why}" if (why := unguessed_because(e)) else "") + "\n" for e, n in unplaced)


def _dump(data: dict, flow: bool = True) -> str:
    """YAML lines; with ``flow``, a list or mapping of plain values on one line (``purchase: [Placed Order]``)."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None if flow else False,
                          width=1 << 20)
