"""Data jobs: generate the demo shop, validate configured sources, load canonical data."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import duckdb

from features.asof import as_of_label, now_utc, parse_duration
from features.engine import connect
from features.identity import IdentityResolution
from features.load import build_canonical
from features.sources import Stamps, changed_files, drop_copies, source_stamps
from features.validation import ValidationReport, check_currency, placeholder_id_problem, validate
from pipeline.config import Config
from pipeline.workspace import Workspace, check_writable


class DataError(Exception):
    """Input data fails the contract; carries the full report."""

    def __init__(self, report: ValidationReport):
        self.report = report
        n, w = len(report.errors), len(report.problems) - len(report.errors)
        also = f" (and {w} warning{'s' if w != 1 else ''})" if w else ""
        #: the one line the CLI prints under its table of the problems
        self.summary = f"{n} data error{'s' if n != 1 else ''}{also} found; nothing was written"
        super().__init__(self.summary)

    def __str__(self) -> str:
        """The summary, then each error with its count, examples and fix: from Python (``Project``,
        the jobs) the exception is all a user sees; every problem is in ``report.problems``."""
        lines = [self.summary + ":"]
        for p in self.report.errors:
            shown = f" (e.g. {'; '.join(p.examples[:3])})" if p.examples else ""
            rows = "" if p.check in SOURCE_CHECKS else f" [{p.count:,} row{'s' if p.count != 1 else ''}]"
            lines.append(f"  - {p.where()}: {p.message}{rows}{shown}. Fix: {p.fix}")
        return "\n".join(lines)


#: checks of a whole source or column (counted once), not of rows: no row count beside them
SOURCE_CHECKS = {"missing_source", "unknown_source", "unreadable", "empty", "missing_column", "mistyped"}


@dataclass
class LoadedData:
    """Validated sources as canonical views (``events``, ``customers``, ``identity_map``) on ``con``."""

    con: duckdb.DuckDBPyConnection
    report: ValidationReport
    identity: IdentityResolution
    as_of: datetime
    #: whether validation counted the events' customer_ids without a profile; when not, the run
    #: counts its own customers (pipeline.jobs.features.unprofiled_warnings)
    unknown_customers_counted: bool = True

    #: the Parquet sources' files as they were before validation read them (see check_unchanged)
    stamps: Stamps = field(default_factory=dict)
    #: ``data validate``'s summary, taken before the check that nothing changed under it
    summary: dict | None = None
    #: ``data validate``'s: what the freshness check of a run as of its instant would do
    run_warnings: list[str] = field(default_factory=list)

    def check_unchanged(self) -> None:
        """Refuse (exit 75, to retry) when a Parquet source's file was replaced, rewritten or removed
        since validation began to read it: the run's queries read the files again, so its results
        would mix data validation never saw (a refresh landing midway). Called before a run writes."""
        problem = _changed(self.stamps)
        if problem is not None:
            raise problem

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """The block's work reads the sources: checked unchanged after it, and when it fails (a file
        removed or cut short under a query fails it with DuckDB's I/O error; the change is the cause
        to name)."""
        try:
            yield
        except Exception:
            self.check_unchanged()
            raise
        self.check_unchanged()


def _changed(stamps: Stamps) -> SourceChanged | None:
    changed = changed_files(stamps)
    if not changed:
        return None
    shown = "; ".join(f"{f} (source '{name}') was {how}" for name, f, how in changed[:3])
    return SourceChanged(
        f"{shown}{'; …' if len(changed) > 3 else ''} while this run read it: its results would mix data "
        "that validation never saw, so nothing was written. Run again once the refresh has finished (an "
        "export written to a temporary name and renamed into place lands at once)")


#: The stamps of the sources this command's runs began to read (see forget_reads)
_READ: list[Stamps] = []


def forget_reads() -> None:
    """A new command begins: the sources earlier ones read (in a notebook's or a test's process)
    are not its own."""
    _READ.clear()


def read_files() -> list[Path]:
    """The Parquet source files this command's runs began to read (to name where DuckDB reports
    damage without a file)."""
    return [f for stamps in _READ for f in stamps]


def changed_sources() -> SourceChanged | None:
    """Whether a source file a run of this process read has changed since: the cause to name when
    a run fails with a read error (a file removed under validation fails it with DuckDB's I/O error,
    one rewritten with 'no magic bytes'), rather than the error's traceback."""
    for stamps in reversed(_READ):
        problem = _changed(stamps)
        if problem is not None:
            return problem
    return None


class SourceChanged(ValueError):
    """A source changed under a run; running again later reads it whole (exit 75)."""

    try_later = True


def spill_folder() -> Path:
    """Where DuckDB spills what does not fit under ``memory_limit``: the system's temp folder (not
    the workspace: a run that fails validation writes nothing there), one folder per user (a shared
    /tmp/dynseg-spill made by another user could not be written to)."""
    return Path(tempfile.gettempdir()) / f"dynseg-spill-{os.getuid()}"


def load_validated(cfg: Config, as_of: datetime, future_after: str = "the run's as_of",
                   count_unknown_customers: bool = True) -> LoadedData:
    """Validate every configured source and build the canonical views; raise DataError on errors.
    Events after ``as_of`` are refused as from the future (``future_after`` names that instant).
    ``count_unknown_customers``: see :func:`features.validation.validate`."""
    spill = spill_folder()
    if spill.exists() and not spill.is_dir():  # DuckDB's own error was a traceback, once it spilled
        raise ValueError(f"{spill} is a file: DuckDB spills there when a run exceeds memory_limit; remove it, or "
                         "point TMPDIR at another folder")
    stamps = source_stamps(cfg.source_specs(), cfg.project_dir)
    _READ.append(stamps)
    con = connect(threads=cfg.settings.threads, memory_limit=cfg.settings.memory_limit, temp_directory=str(spill))
    try:
        report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, as_of,
                          future_after, count_unknown_customers, cfg.roles.unknown_events)
        report.problems[:] = _in_its_catalog_file(cfg, report.problems)
        if not report.ok:
            con.close()
            drop_copies(con)  # the error (kept by a notebook) keeps the connection: not its CSV copies
            raise DataError(report)
        check_currency(con, report, cfg.settings.currency)
        identity = build_canonical(con, report, cfg.role_of, cfg.settings.identity.max_ids_per_identifier)
    except Exception:
        problem = _changed(stamps)  # a file changed under validation: its problems, or its failure, are that
        if problem is not None:
            raise problem from None
        raise
    return LoadedData(con, report, identity, as_of, count_unknown_customers, stamps)


def _in_its_catalog_file(cfg: Config, problems: list) -> list:
    """The problems with the catalog file that sets each source named for configs/catalog.yaml:
    a source whose entry is in configs/local/catalog.yaml (a laptop's path) was told to fix
    configs/catalog.yaml, which does not hold it."""
    import dataclasses

    out = []
    for p in problems:
        where = cfg.origin("catalog.yaml", "sources", p.source)
        if where != "configs/catalog.yaml":
            p = dataclasses.replace(p, message=p.message.replace("configs/catalog.yaml", where),
                                    fix=p.fix.replace("configs/catalog.yaml", where))
        out.append(p)
    return out


def load_for_run(cfg: Config, as_of: datetime | None = None, count_unknown_customers: bool = False) -> LoadedData:
    """Validated data for a run as of ``as_of`` (default: now). A run in the past keeps using a log
    that has grown since (the events after its ``as_of`` are only invisible to it), so only events
    after now are refused; a run dated in the future refuses events after its ``as_of``.

    Validation does not count the events' customer_ids without a profile unless asked to: a run
    that reports them counts its own customers once its features found them
    (:func:`pipeline.jobs.features.unprofiled_warnings`), and the others never show the count."""
    now = now_utc()
    if as_of is None or as_of <= now:
        return load_validated(cfg, now, "now", count_unknown_customers)
    return load_validated(cfg, as_of, count_unknown_customers=count_unknown_customers)


def validate_job(cfg: Config, as_of: datetime, given: bool = True) -> LoadedData:
    """``dynseg data validate``: check the sources as a run as of ``as_of`` reads them (``given``:
    an --as-of, else it is now; :func:`load_for_run`: events after a past as_of are no future, they
    only come after it), say what that run's freshness check would do (``data.run_warnings``: the
    data can meet the contract and still be too old for the run), then keep the identity map and
    the report, with both, in the workspace."""
    from features.asof import as_of_text
    from features.freshness import StaleDataError
    from pipeline.jobs.features import freshness_warnings

    data = load_for_run(cfg, as_of, count_unknown_customers=True)
    with data.reading():  # the summary reads the sources again
        data.summary = data_summary(data, cfg.role_of)
        placeholder = placeholder_id_problem(data.con, data.report)
        try:
            data.run_warnings = freshness_warnings(cfg, data, as_of)
        except StaleDataError as e:  # said, not enforced (75 when newer data may come; 1 when it cannot help)
            run = f"a run as of {as_of_text(as_of)}" if given else "a run now (without --as-of)"
            data.run_warnings = [f"{run} would stop here (exit {75 if getattr(e, 'try_later', False) else 1}): {e}"]
    if placeholder is not None:
        data.report.problems.append(placeholder)
    ws = Workspace(cfg.workspace)
    check_writable(ws.reports_dir / "validation.json")  # before the identity map is kept: all or nothing
    ws.write_tables(data.con, {"identity_map": "SELECT * FROM identity_map"})
    ws.write_json("reports/validation.json", validation_report(data, as_of))
    return data


def validation_report(data: LoadedData, as_of: datetime) -> dict:
    """What `data validate` keeps and writes for a scheduler: the problems, the summary, the as_of
    asked and what a run as of it would meet."""
    return data.report.to_dict() | {"summary": data.summary, "as_of_asked": as_of.isoformat(),
                                    "run_warnings": data.run_warnings}


def data_summary(data: LoadedData, role_of: dict[str, str] | None = None) -> dict:
    """What an analyst wants to see first: who, what, when, and which ids were merged. With
    ``role_of`` (configs/roles.yaml's names), also the roles it maps that no event of the run has
    (``roles_without_events``, each with its names): a name misspelt there, or copied from another
    tool's template, leaves its role out of the features and nothing else says so."""
    con = data.con
    customers, events, first, last = con.execute(
        "SELECT count(DISTINCT customer_id), count(*), min(ts), max(ts) FROM events"
    ).fetchall()[0]
    by_role = dict(con.execute("SELECT role, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall())
    # without a customers source the view holds a row per customer with events, which are no profiles
    profiles = (con.execute("SELECT count(*) FROM customers").fetchall()[0][0]
                if "customers" in data.report.sources else None)
    return {
        "customers_with_events": customers,
        "customer_profiles": profiles,
        "events": events,
        "first_event": first,
        "last_event": last,
        "events_by_role": by_role,
        "roles_without_events": {role: [e for e, r in (role_of or {}).items() if r == role]
                                 for role in dict.fromkeys((role_of or {}).values()) if role not in by_role},
        "identity": {
            "ids_linked": data.identity.linked_ids,
            "merged_customers": data.identity.merged_customers,
            "ids_folded": data.identity.merged_ids,
            "largest_group": data.identity.largest_group,
            "skipped_identifiers": len(data.identity.skipped_identifiers),
            "skipped_examples": skipped_examples(data),
        },
        "warnings": len(data.report.problems),
    }


def generate_job(
    out_dir: Path, customers: int, seed: int, end: str, progress: Callable[[int, int], None] | None = None,
    drift_from: str | None = None, drift: float = 0.0, force: bool = False,
) -> dict[str, Path]:
    """``dynseg data generate``: write the synthetic shop's sources to ``out_dir`` (files there not
    written by it are refused before any work, unless ``force``)."""
    from pipeline.synthetic import check_target, generate, write

    check_target(out_dir, force)
    shop = generate(customers, seed=seed, end=end, progress=progress, drift_from=drift_from, drift=drift)
    return write(shop, out_dir, force)


@dataclass
class Campaign:
    run_id: str
    as_of: datetime
    segments: list[str]
    treated: int
    events_added: int
    horizon_days: int
    events_path: Path


def simulate_campaign_job(cfg: Config, run_id: str | None, uplift: float, segments: list[str] | None = None,
                          seed: int = 0, as_of: datetime | None = None) -> Campaign:
    """``dynseg data simulate-campaign``: the demo shop's answer to a campaign sent after a run.

    Treated: the sendable members of ``segments`` (default: every segment with a holdout) who are
    in none of those segments' holdouts. Extra orders are added to the events source (a Parquet
    file, rewritten atomically) in the run's purchase window; see ``synthetic.apply_treatment``.
    """
    import pandas as pd

    from pipeline import runs
    from pipeline.synthetic import apply_treatment, is_generated, to_parquet_marked
    from pipeline.workspace import atomic_target

    spec = cfg.source_specs()["events"]
    path = Path(spec.path) if Path(spec.path).is_absolute() else cfg.project_dir / spec.path
    if spec.format != "parquet" or not path.is_file():
        raise ValueError(f"configs/catalog.yaml: sources.events must be one Parquet file to simulate a campaign "
                         f"(the demo shop's); found format {spec.format!r}, path {spec.path!r}")
    if not is_generated(path):
        raise ValueError(f"{path} (sources.events) is not from `dynseg data generate`: a simulated campaign adds "
                         "made-up orders to the log, only to the demo shop's; point sources.events at a generated "
                         "shop (dynseg data generate --out FOLDER) to try it")
    db = Workspace(cfg.workspace).db_path
    found = runs.read(db, "SELECT run_id, as_of, config FROM scoring_runs WHERE run_id = ? OR as_of = ?",
                      [run_id, as_of])
    if found.empty:
        what = f"run {run_id!r}" if run_id else f"run as of {as_of_label(as_of) if as_of is not None else as_of}"
        raise ValueError(f"no scoring {what} in {db}; score first (dynseg score --as-of DATE) or list runs with "
                         "dynseg segments list")
    runs.require_rows(db, found.iloc[0], "its members, whom the campaign would be sent to,")
    run_id, as_of = found.run_id[0], found.as_of[0].to_pydatetime()
    import json

    defined = {s["name"]: s for s in json.loads(found.config[0])["segments"]["segments"]}
    chosen = segments or [n for n, s in defined.items() if s["holdout"] > 0 and s["kind"] != "suppression"]
    unknown = [n for n in chosen if n not in defined]
    if unknown:
        raise ValueError(f"run {run_id} has no segment {unknown}; it has {sorted(defined)}")
    marks = ", ".join("?" * len(chosen))
    members = runs.read(db, f"SELECT customer_id, sendable, holdout FROM segment_members WHERE run_id = ? "
                            f"AND segment IN ({marks})", [run_id, *chosen])
    treated = set(members.customer_id[members.sendable]) - set(members.customer_id[members.holdout])
    events = pd.read_parquet(path)
    horizon = int(parse_duration(cfg.labels.purchase.horizon).days)
    out = apply_treatment(events, sorted(treated), as_of, horizon, uplift, seed)
    # kept with the runs: `lift` of a run scored after its window (the demo's backfill) otherwise
    # says nothing from it could have been sent. The database first: a workspace busy past the
    # wait, after the events were rewritten, left orders that a second attempt added to again
    import duckdb

    from pipeline.workspace import waiting_for_lock

    con = waiting_for_lock(lambda: duckdb.connect(str(db)))
    try:
        with atomic_target(path) as tmp:
            to_parquet_marked(out, tmp, "dynseg data simulate-campaign")
        con.execute("CREATE TABLE IF NOT EXISTS simulated_campaigns (run_id VARCHAR, as_of TIMESTAMP, segments JSON, "
                    "treated BIGINT, uplift DOUBLE, simulated_at TIMESTAMP)")
        con.execute("INSERT INTO simulated_campaigns VALUES (?, ?, ?, ?, ?, now()::TIMESTAMP)",
                    [run_id, as_of, json.dumps(chosen), len(treated), uplift])
    finally:
        con.close()
    return Campaign(run_id, as_of, chosen, len(treated), len(out) - len(events), horizon, path)


def skipped_examples(data: LoadedData, k: int = 5) -> list[str]:
    """The identifiers skipped as too common, most shared first, masked: ``email 'te…@shop.com' (25 ids)``."""
    top = data.identity.skipped_identifiers.sort_values("customers", ascending=False).head(k)
    return [f"{r.id_type} {_masked(r.id_value)!r} ({r.customers:,} ids)" for r in top.itertuples()]


def _masked(value: str) -> str:
    """An identifier as a summary shows it: enough to find it, not the whole address or number
    (``te…@shop.com``, ``+4…89``)."""
    at = value.find("@")
    return value[:2] + "…" + (value[at:] if at > 0 else value[-2:]) if len(value) > 4 else "…"
