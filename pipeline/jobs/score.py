"""``dynseg score``: features as of D -> champion models -> bands -> segments -> one transaction.

Stages (timed, for the benchmark): ``features`` (point-in-time features of every known
customer), ``scoring`` (each target's champion, calibrated and moved to the base rate expected at
D, then bands), ``segments`` (rules, exclusions, holdouts, consent), ``write`` (exports, the
workspace transaction, the MLflow record).

On Spark (``--engine spark``) features, scoring and segments run on Spark and nothing per customer
passes through the driver: customer scores and memberships are staged as Parquet in the workspace
and loaded into the run's DuckDB connection from there. Both engines leave the same relations on
that connection (``scored``, ``members``, ``health``), so exports, the workspace transaction and
the MLflow record are one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import duckdb
import numpy as np
import pandas as pd

from features.asof import as_of_file_label, as_of_label, cutoff_label, now_utc, parse_duration
from features.customer_features import customer_features
from features.engines import FeatureEngine
from features.sources import drop_copies
from features.labels import LabelSpec
from features.normalize import literal
from features.training_set import label_rates
from models import bands as band_rules
from models.calibration import seasonal_base_rate
from pipeline import runs
from pipeline.config import Config
from pipeline.jobs.data import load_for_run
from pipeline.jobs.features import (SPARK_START, check_model_inputs, data_profile, feature_spec, label_spec, open_engine, run_warnings,
                                    staging_root, unprofiled_warnings)
from pipeline.rules import Kind
from pipeline.segments import (CONSENT_COLUMN, CompiledSegment, compile_segments, coverage_sql, exclusions_sql,
                               membership_sql)
from pipeline.workspace import Workspace, held_elsewhere, swap_in_folder, temp_sibling

Progress = Callable[[str], None]


@dataclass
class ScoredModel:
    target: str
    name: str
    version: str
    model_run_id: str
    population: str  # known | active
    scored: int  # customers in the model's population
    base_rate: float | None
    base_rate_note: str
    bands: list[dict]  # resolved for this run
    horizon_days: int | None = None  # the label window the version was trained on (lift grades it on that)

    def record(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class ScoreRun:
    run_id: str
    as_of: datetime
    previous_run_id: str | None
    n_customers: int
    models: list[ScoredModel]
    health: pd.DataFrame
    export_dir: Path
    exports: dict[str, dict[str, int]]  # segment -> {"sendable": n, "holdout": n} (or {"suppressed": n})
    mlflow_run_id: str | None
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    #: segments new ("new"), defined differently ("redefined") or gone ("removed") since the previous run
    changes: dict[str, str] = field(default_factory=dict)
    engine: str = "duckdb"


def in_sample_cutoff(tags: dict[str, str], as_of: datetime) -> str | None:
    """The test cutoff of a model version (its registry tags) when ``as_of`` lies before it: the
    model learned from the outcomes that follow ``as_of`` (its training and validation labels reach
    to the test cutoff), so its scores there are in sample."""
    cutoff = tags.get("test_cutoff")
    return cutoff if cutoff and as_of < datetime.fromisoformat(cutoff) else None


def in_sample_warnings(champions: dict[str, tuple[Any, Any]], as_of: datetime) -> list[str]:
    """A warning per champion whose scores as of ``as_of`` are in sample (:func:`in_sample_cutoff`):
    `lift` would grade them too kindly."""
    out = []
    for target, (_, mv) in champions.items():
        cutoff = in_sample_cutoff(mv.tags, as_of)
        if cutoff:
            out.append(f"{target}: the champion ({mv.name} version {mv.version}) was fitted on outcomes up to its "
                       f"test snapshot as of {cutoff_label(cutoff)}, after this run's as_of: its scores here are in sample, and realized "
                       "quality graded on them (`dynseg lift`) overstates it. Score dates after the cutoff, or train "
                       "a model as of this date (`dynseg train ... --as-of`)")
    return out


def short_history_problem(cfg: Config, first: datetime | None, as_of: datetime,
                          champions: dict[str, tuple[Any, Any]]) -> str | None:
    """Why a run on a log starting at ``first`` would score customers as newer than they are: it
    sees less history than the longest feature window and than a champion's test snapshot saw,
    by more than a week. An events file of recent history only (an incremental extract written over
    the full one) scored on with one warning: suppressions built on old events (a bounce, a spam
    complaint, an unsubscribe) emptied and those customers became sendable. None when it is fine."""
    from models import registry

    longest = max(cfg.features.windows_days, default=0)
    if first is None or first >= as_of:
        return None
    seen = (as_of - first).days
    for target, (pyfunc, mv) in champions.items():
        window = registry.bundle_of(pyfunc).data_window
        try:
            tested = (pd.Timestamp(window["test_cutoff"]) - pd.Timestamp(window["first_event"])).days
        except (KeyError, ValueError, TypeError):
            continue
        if seen < min(longest, tested) - 7:
            return (f"the event log starts {first:%Y-%m-%d}, {seen} days before {as_of_label(as_of)}, but the {target} "
                    f"champion ({mv.name} version {mv.version}) was tested on {tested} days of history, and features "
                    f"reach back {longest} days: every customer would look newer and less active than they are, and "
                    "suppressions built on older events (bounces, complaints, unsubscribes) would lose their members, "
                    "who would become sendable. If the events file now holds recent events only (an incremental "
                    "extract written over the full history?), load the full history; to score anyway, pass "
                    "--allow-short-history")
    return None


def _single_valued(feats: Any, columns: list[str]) -> list[str]:
    """The columns holding one value for every customer of the run, a null counting as a value."""
    if not columns:
        return []
    if isinstance(feats, pd.DataFrame):
        out = []
        for c in columns:
            col = feats[c]
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                values = col.to_numpy(dtype="float64", na_value=np.nan)
                nan = np.isnan(values)
                finite = values[~nan]
                kinds = (1 if nan.any() else 0) + (0 if not len(finite) else 1 if finite.min() == finite.max() else 2)
            else:
                kinds = col.nunique(dropna=False)
            if kinds <= 1:
                out.append(c)
        return out
    from pyspark.sql import functions as F  # a Spark run's features: one aggregate over the checkpoint

    row = feats.agg(*[(F.countDistinct(F.col(c)) + F.max(F.col(c).isNull().cast("int"))).alias(c)
                      for c in columns]).collect()[0]
    return [c for c in columns if row[c] <= 1]


#: an input is checked when at least this share of its training reference differs from its most
#: common value, and this many such customers are expected in the run: none then is no chance
DEAD_MIN_SHARE, DEAD_MIN_EXPECTED = 0.05, 50


def dead_inputs_problem(model: Any, label: str, reference: pd.DataFrame, feats: Any, n_customers: int) -> str | None:
    """The inputs ``model`` learned from that vary in its training reference but hold one value (or
    none) for every customer of this run: the data feeding them is missing from the run's files. An
    events file whose `amount` column was renamed scored on with every spend 0 and exited 0 (a VIP
    segment emptied). Checked: inputs whose reference has at least ``DEAD_MIN_SHARE`` off its most
    common value, with ``DEAD_MIN_EXPECTED`` such customers expected in the run, and no window
    under 30 days (a quiet week may empty a 7-day count). None when every one still varies."""
    checked = []
    for c in model.features_:
        if c not in reference.columns or c not in feats.columns:
            continue
        window = re.search(r"_(\d+)d$", c)
        if window and int(window.group(1)) < 30:
            continue
        off = 1 - reference[c].value_counts(dropna=False, normalize=True).max() if len(reference) else 0.0
        if off >= DEAD_MIN_SHARE and off * n_customers >= DEAD_MIN_EXPECTED:
            checked.append(c)
    dead = _single_valued(feats, checked)
    if not dead:
        return None
    shown = ", ".join(dead[:8]) + (f" and {len(dead) - 8} more" if len(dead) > 8 else "")
    return (f"{label} learned from {len(dead)} input(s) that varied in its training data but hold one value (or none) "
            f"for every customer of this run: {shown}. The data that feeds them is missing from this run's files (a "
            "column renamed or emptied upstream: `dynseg data validate` names what it found), and the model would "
            "score a different shop. Fix the source, or map the column in configs/catalog.yaml; to score anyway, "
            "pass --allow-dead-inputs")


def nothing_new_warnings(ws: Workspace, newest: datetime | None, as_of: datetime) -> list[str]:
    """A warning when no event came after the previous run's as_of: the events file may not have
    been refreshed. Freshness allows a lag of days, so nights on an unrefreshed file passed in
    silence while segments moved only because a day had passed."""
    previous = runs.read(ws.db_path, "SELECT max(as_of) AS as_of FROM scoring_runs WHERE as_of < ?", [as_of])
    if newest is None or previous.empty or pd.isna(previous.as_of[0]):
        return []
    before = previous.as_of[0].to_pydatetime()
    if newest >= before:
        return []
    return [f"no event in the log comes after the previous run's as_of ({as_of_label(before)}; the newest is "
            f"{newest:%Y-%m-%d %H:%M} UTC): if the events file was not refreshed, this run's movement is only the days "
            "passing. Check the extract that writes it"]


def event_days(con: Any, as_of: datetime, days: int) -> tuple[int, dict[str, int]]:
    """The events before ``as_of`` and, per day (UTC), those in the ``days`` before it: what a run
    records of the log it read (``n_events`` and ``event_days`` in scoring_runs), for a re-run to be
    checked against. One scan of the log for both."""
    rows = con.execute("SELECT CAST(ts AS DATE) AS d, count(*), count(*) FILTER (WHERE ts >= ?) FROM events "
                       "WHERE ts < ? GROUP BY 1 ORDER BY 1", [as_of - timedelta(days=days), as_of]).fetchall()
    return sum(int(n) for _, n, _ in rows), {d.isoformat(): int(k) for d, _, k in rows if k}


def fewer_events_problem(ws: Workspace, days: dict[str, int], as_of: datetime) -> str | None:
    """A re-run that would replace a run of the same as_of from a log that lost days that run read:
    a day's file missing (a day with under half its events now, of one that had 20 or more). A hole
    shorter than the freshness lag passes every other check, and the run that stands (whose exports
    may have been sent) was replaced without a word. Days, not the total: events removed on purpose
    (erasure requests, corrections) take a little from many days and are no hole. None when there
    is no such run or it did not record its days."""
    found = runs.read_optional(ws.db_path, "SELECT * FROM scoring_runs WHERE as_of = ?", [as_of])
    if found.empty or "event_days" not in found or not isinstance(found.event_days[0], str):
        return None
    had = json.loads(found.event_days[0])
    lost = [(d, n, days.get(d, 0)) for d, n in sorted(had.items()) if n >= 20 and days.get(d, 0) < 0.5 * n]
    if not lost:
        return None
    said = "; ".join(f"{d}: {now:,} now, {n:,} then" for d, n, now in lost[:5]) + (
        f"; and {len(lost) - 5} more" if len(lost) > 5 else "")
    return (f"the event log has lost days that run {found.run_id[0]} read when it was scored for the same as_of "
            f"({found.finished_at[0]:%Y-%m-%d %H:%M} UTC), each with under half its events ({said}). Scoring again "
            "would replace that run, and the segments it exported, with one from less data: a file of the log (a "
            "day's export) may be missing. Restore the missing events, or, if they were removed on purpose, run "
            "again with --allow-fewer-events")


def load_champions(registry: Any, names: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    """target -> (pyfunc model, registry version) of each target's champion; every target without
    one said at once, not one per attempt. A server lost meanwhile stays try-later (exit 75),
    whatever the other target met: re-raised as a plain RegistryError it had exited 1 beside "run it
    again once the server is back"."""
    champions, lacking = {}, []
    for t, name in names.items():
        try:
            champions[t] = registry.load_champion(name)
        except registry.RegistryError as e:
            lacking.append(e)
    if lacking:
        kind = next((type(e) for e in lacking if getattr(e, "try_later", False)), registry.RegistryError)
        raise kind("; ".join(str(e).rstrip(".") for e in lacking) + ".") from lacking[0]
    return champions


def exports_writable(folder: Path) -> None:
    """Refuse, before any work, a run whose exports folder cannot be written (a read-only mount):
    found when the exports were written, it cost the whole run and named a hidden temp folder."""
    from pipeline.workspace import check_writable

    probe = folder.with_name(f"{folder.name}.new")  # the run writes a temp folder beside it, then renames
    try:
        check_writable(probe)
    except ValueError as e:
        raise ValueError(str(e).replace(str(probe), str(folder)) + " (checked before scoring: the run's exports "
                         "go there)") from None


def score_job(cfg: Config, as_of: datetime, engine: str | None = None, progress: Progress | None = None,
              log_to_mlflow: bool = True, reasons: bool | None = None, allow_short_history: bool = False,
              allow_dead_inputs: bool = False, allow_fewer_events: bool = False) -> ScoreRun:
    from models import registry

    say = progress or (lambda _: None)
    engine = engine or cfg.settings.engine
    timings: dict[str, float] = {}
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    ws = Workspace(cfg.workspace)
    runs.refuse_pruned_era(ws.db_path, as_of)
    exports_writable(ws.root / "exports" / as_of_file_label(as_of))
    targets = list(cfg.scoring.targets)
    if not targets:
        raise ValueError("configs/scoring.yaml: targets is empty; expected at least one of ['purchase', 'churn']")
    try:
        registry.connect(ws.tracking_uri(cfg.settings.tracking_uri), create=False)
    except registry.NoStore as e:  # every target's model named, as a store without their champions does
        raise registry.NoStore(f"no champion to score with ({', '.join(cfg.training.registry.names[t] for t in targets)}): "
                               f"{e}") from None
    say("loading champion models")
    clock = time.perf_counter()
    champions = load_champions(registry, {t: cfg.training.registry.names[t] for t in targets})
    timings["models"] = time.perf_counter() - clock  # the summary's time row read as the whole run without it

    clock = time.perf_counter()
    say("validate")
    # On DuckDB the customers without a profile are counted among the features (a pandas frame);
    # a Spark run's features stay in Spark, so validation counts them there.
    data = load_for_run(cfg, as_of, count_unknown_customers=engine == "spark")
    first_event, newest_event = data.report.time_range(cfg.role_of)
    if not allow_short_history:
        problem = short_history_problem(cfg, first_event, as_of, champions)
        if problem:
            raise ValueError(problem)
    n_events, days = event_days(data.con, as_of, max(cfg.features.windows_days))  # (days: what the windows read)
    if not allow_fewer_events:
        problem = fewer_events_problem(ws, days, as_of)
        if problem:
            raise ValueError(problem)
    warnings = (run_warnings(cfg, data, as_of) + in_sample_warnings(champions, as_of) + band_config_warnings(cfg, champions)
                + nothing_new_warnings(ws, newest_event, as_of)
                + [f"{t}: {w}" for t, (_, mv) in champions.items() for w in registry.champion_notes(mv)])
    profile = data_profile(cfg, data)
    timings["validate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say(SPARK_START if engine == "spark" else "features")
    eng = open_engine(cfg, data, engine)
    if engine == "spark":
        say("features")
    try:
        expr = customer_features(eng.events(), eng.customers(), as_of, feature_spec(cfg), profile,
                                 consents=eng.consents())
        # Every rule is checked against the run's columns before any work is done.
        levels_of = {f"{t}_band": _level_names(cfg, t, registry.bundle_of(pyfunc)) for t, (pyfunc, _) in champions.items()}
        if not cfg.segments.segments:
            from pipeline.segments import no_segments_problem

            raise ValueError(no_segments_problem(cfg.project_dir))
        segments = compile_segments(cfg.segments, expected_columns(expr, targets), values=levels_of,
                                    features=cfg.features, file=cfg.origin("segments.yaml", "segments"))
        for target, (pyfunc, mv) in champions.items():  # before any work, like the rules above
            check_model_inputs(registry.bundle_of(pyfunc).model, f"{mv.name} version {mv.version}", target, expr.columns,
                               profile)
        feats = _features(eng, expr)
        if not allow_dead_inputs:
            for target, (pyfunc, mv) in champions.items():
                problem = dead_inputs_problem(registry.bundle_of(pyfunc).model, f"{mv.name} version {mv.version}",
                                              registry.reference_sample(mv.name, mv.version), feats,
                                              len(feats) if isinstance(feats, pd.DataFrame) else feats.count())
                if problem:
                    found = [f"{p.where()}: {p.message} ({p.fix})" for p in data.report.problems if p.severity == "warning"]
                    raise ValueError(problem + (". Validation found: " + "; ".join(found[:3]) if found else ""))
        has_consent = CONSENT_COLUMN in feats.columns
        warnings += unprofiled_warnings(data, feats["customer_id"])  # (on Spark, counted in validation)
        if isinstance(feats, pd.DataFrame):
            warnings += unmatched_values(segments, feats)
        timings["features"] = time.perf_counter() - clock

        first = data.report.time_range(cfg.role_of)[0]
        min_history = parse_duration(cfg.training.min_history)

        specs = [_label_spec(cfg, t, registry.bundle_of(pyfunc)) for t, (pyfunc, _) in champions.items()]
        wanted = [(spec, c) for spec in specs for c in _base_rate_cutoffs(spec, as_of)]
        rates: dict[tuple[LabelSpec, datetime], float | None] = {}

        def rate_at(spec: LabelSpec, cutoff: datetime) -> float | None:
            if not rates:  # every base-rate cutoff of every model, in one scan, on first use
                rates.update(zip(wanted, label_rates(eng, profile, wanted, first, min_history)))
            return rates[(spec, cutoff)]

        score_and_segment = _score_and_segment_spark if eng.name == "spark" else _score_and_segment_duckdb
        # on Spark, a stop signal cancels its jobs first (see SparkEngine.stopped_by_signals)
        with eng.stopped_by_signals() if eng.name == "spark" else contextlib.nullcontext():
            n_customers, used = score_and_segment(cfg, feats, champions, segments, as_of, rate_at, data.con, timings,
                                                  say)

        clock = time.perf_counter()
        with_reasons = cfg.scoring.reason_codes if reasons is None else reasons
        say("reasons" if with_reasons else "no reasons")
        _reason_codes(data.con, feats, champions, used, targets, with_reasons, cfg.settings.currency)
        if with_reasons:  # (without, only the empty table is made: no stage to time)
            timings["reasons"] = time.perf_counter() - clock
    except Exception:
        data.check_unchanged()  # a file removed or cut short under a query fails it: the change is the cause
        raise
    finally:
        eng.close()
    data.check_unchanged()  # a source rewritten under the run: refused before anything is written
    for m in used:
        warnings += [f"{m.target}: {w}" for w in getattr(m, "_warnings", [])]
    if not has_consent:
        warnings.append(_no_consent_fields(data.con))
    else:
        warnings += no_consent_warnings(data.con, as_of)
    con = data.con
    score_cols = runs.score_columns(targets)

    clock = time.perf_counter()
    say("writing")
    run_id = uuid.uuid4().hex[:12]
    export_dir = ws.root / "exports" / as_of_file_label(as_of)
    warnings += recover_exports(ws)  # before the sweep below removes what a killed run left
    tmp_dir = temp_sibling(export_dir)
    try:
        exports = write_exports(con, segments, score_cols + [f"{t}_reasons" for t in targets], tmp_dir,
                                cfg.scoring.export_formats, as_of, run_id, models=run_models(used))
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or failed: no half-written customer lists left behind
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    bands_used = {m.target: m.bands for m in used}
    record = {
        "run_id": run_id, "as_of": as_of, "started_at": started, "finished_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "engine": engine, "n_customers": n_customers, "n_events": n_events, "event_days": json.dumps(days),
        "models": json.dumps([m.record() for m in used], default=str), "bands": json.dumps(bands_used, default=str),
        "previous_run_id": None, "mlflow_run_id": None, "export_dir": str(export_dir),
        # (exclusions: the run keeps who each segment's rule selected but an exclusion took away)
        "config": json.dumps({"segments": cfg.segments.model_dump(), "scoring": cfg.scoring.model_dump(),
                              "exclusions": True}),
    }
    try:
        replaced = runs.read(ws.db_path, "SELECT run_id, mlflow_run_id FROM scoring_runs WHERE as_of = ?", [as_of])
    except BaseException:  # the database held by another run, say: the exports written so far go too
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    order = {s.name: i for i, s in enumerate(cfg.segments.segments)}
    logged: dict[str, Any] = {}

    def log_before_commit(wcon) -> None:
        # The MLflow record is made inside the run's transaction: if MLflow cannot take it, the
        # run is rolled back and the previous state stays, exports included.
        health = wcon.execute("SELECT * FROM ws.segment_health WHERE run_id = ?", [run_id]).df()
        logged["health"] = health.sort_values("segment", key=lambda s: s.map(order), ignore_index=True)
        if log_to_mlflow:  # (write_run has set record["previous_run_id"])
            logged["mlflow"] = _log_mlflow(cfg, registry, record, used, logged["health"], exports)
            wcon.execute("UPDATE ws.scoring_runs SET mlflow_run_id = ? WHERE run_id = ?", [logged["mlflow"], run_id])
            # what earlier records are to be told, queued with the run: a stop after the commit
            # leaves it for the next run (flush_mlflow) instead of losing it
            for old in replaced.mlflow_run_id.dropna() if not replaced.empty else []:
                runs.queue_mlflow(wcon, mlflow_run_id=old, tags={"dynseg.replaced_by": run_id,
                                                                  "dynseg.replaced_by_mlflow_run": logged["mlflow"]})
            after = wcon.execute("SELECT run_id FROM ws.scoring_runs WHERE as_of > ? ORDER BY as_of LIMIT 1",
                                 [as_of]).fetchall()
            if after:
                runs.queue_mlflow(wcon, movement_of=after[0][0])

    written: dict = {}
    try:
        prev = runs.write_run(con, ws.db_path, record, targets, "scored", "members", "health", "reasons",
                              before_commit=log_before_commit, state=written, exclusions_view="exclusions",
                              identity_map="identity_map")
    except BaseException:
        if written.get("committed"):  # stopped (SIGTERM) just after the commit: the run stands, so do its exports
            try:
                swap_in_folder(tmp_dir, export_dir)
            except BaseException:
                pass  # left under its temp name: the next run moves it in (recover_exports)
            raise
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if logged.get("mlflow"):  # logged, then the commit failed: the record is of no run
            registry.update_run(logged["mlflow"], tags={"dynseg.not_committed": "the scoring run was rolled back"},
                                status="FAILED")
        raise
    swap_in_folder(tmp_dir, export_dir)
    # The run stands from here: what follows reads the workspace for notes about it, and a workspace
    # held past the lock wait (a prune compacting, another run's transaction) must not end it in
    # "busy" (exit 75), which a scheduler retries, replacing the run that stands
    changes: dict = {}
    try:
        changes = _after_commit(cfg, ws, run_id, prev, as_of, replaced, warnings)
    except duckdb.IOException as e:
        if not held_elsewhere(e):
            raise
        warnings.append("the run was recorded, but its notes against the run before (definition and model changes, "
                        "redrawn holdout sides, customers kept, a next run re-taken) could not be read: another "
                        "process held the workspace past DYNSEG_LOCK_WAIT. `dynseg segments list` shows the run")
    mlflow_run = logged.get("mlflow")
    if log_to_mlflow:  # after the commit, best effort: the run stands whatever happens here
        warnings += flush_mlflow(registry, ws.db_path)
    timings["write"] = time.perf_counter() - clock
    return ScoreRun(run_id, as_of, prev, n_customers, used, logged["health"], export_dir, exports, mlflow_run, timings,
                    warnings, changes, engine)


def _after_commit(cfg: Config, ws: Workspace, run_id: str, prev: str | None, as_of: datetime,
                  replaced: pd.DataFrame, warnings: list[str]) -> dict:
    """A committed run's notes against the run before it, added to ``warnings``; its definition changes."""
    changes = run_definition_changes(ws.db_path, run_id, prev)
    warnings += _definition_warnings(ws.db_path, run_id, prev, changes)
    warnings += _salt_warning(ws.db_path, run_id, prev)
    warnings += [f"{target} is scored by {now}, the previous run by {before}: the entered/exited of segments read "
                 "from its scores or bands count the change of model, not only customers who moved"
                 for target, (before, now) in run_model_changes(ws.db_path, run_id, prev).items()]
    for old in replaced.run_id if not replaced.empty else []:
        shutil.rmtree(ws.reports_dir / "explain" / old, ignore_errors=True)  # the replaced run's waterfalls
        warnings.append(f"this run replaces run {old}, scored before for the same as_of (a date keeps one run): its "
                        "scores, segments and exports are replaced, and a command given `--run " + old + "` says so "
                        "and names this run")
    warnings += _redrawn_sides(ws.db_path, run_id)
    from pipeline.jobs.monitor import customers_kept_alarm  # (monitor imports this module)

    kept = customers_kept_alarm(cfg, ws.db_path, run_id, prev)
    warnings += [kept] if kept else []
    nxt = runs.read(ws.db_path, "SELECT run_id, as_of, mlflow_run_id FROM scoring_runs WHERE as_of > ? "
                                "ORDER BY as_of LIMIT 1", [as_of])
    if not nxt.empty:
        warnings.append(f"the run as of {as_of_label(nxt.as_of[0].to_pydatetime())} ({nxt.run_id[0]}) now compares "
                        "with this one: its entered/exited were taken again (`dynseg segments list --as-of` shows them)")
    return changes


def _no_consent_fields(con) -> str:
    """Why no customer is sendable when the features have no email_consent: no consent anywhere, or
    (a Shopify customers export: "Accepts Email Marketing", no time) profiles that say yes or no
    without when, which point-in-time features cannot use; it said "no consent fields" of that too."""
    said, untimed = con.execute("SELECT count(email_consent), count(email_consent) FILTER (WHERE consent_updated_at "
                                "IS NULL) FROM customers").fetchall()[0]
    head = "no customer is sendable (exports hold holdouts and suppressions only): "
    if untimed:
        return (head + f"{untimed:,} of the {said:,} profiles with an email_consent have no consent_updated_at, and a "
                "decision without its time is not used (as of a cutoff, it may not have been made yet). Map the column "
                "that holds when it was made (often *_updated_at) to consent_updated_at under `columns:` in "
                "configs/catalog.yaml; or, if the export holds no such time, consent_granted events (one per "
                "customer, at the signup if that is when)")
    return head + "the data has no consent fields. Add email_consent and consent_updated_at to the customers source."


def unmatched_values(segments: list[CompiledSegment], feats: pd.DataFrame) -> list[str]:
    """A warning per text value a segment rule compares a feature column with that no customer of
    the run holds (``country = 'de'`` where the data holds 'DE'): the segment, or that branch of
    it, is empty with nothing said; text compares exactly, case included."""
    out = []
    for seg in segments:
        for col, wanted in seg.rule.text_values().items():
            if col not in feats.columns or col.endswith("_band"):  # (band levels are checked with the config)
                continue
            held = set(feats[col].dropna().astype(str).unique())
            for value in sorted(wanted - held):
                same = sorted(h for h in held if h.casefold() == value.casefold())
                shown = ", ".join(repr(h) for h in sorted(held)[:8]) + (", ..." if len(held) > 8 else "")
                out.append(f"segment {seg.name}: {col} compared with {value!r}, which no customer of this run has "
                           + (f"(did you mean {same[0]!r}? text compares exactly, case included)" if same else
                              f"(its values: {shown or 'none'})"))
    return out


def no_consent_warnings(con, as_of: datetime) -> list[str]:
    """A warning when no member of any segment has email consent as of the run, so every sendable
    export is empty and every segment that suppresses the unconsented is empty too, with the reason
    found in the data: profiles saying yes without the time of the decision, decisions dated after
    the run's as_of, or no yes anywhere."""
    consented, members = con.execute("SELECT count(*) FILTER (WHERE consented), count(*) FROM members").fetchall()[0]
    if consented or not members:
        return []
    yes, untimed, later, first_later = con.execute(
        "SELECT count(*) FILTER (WHERE email_consent), count(*) FILTER (WHERE email_consent AND consent_updated_at IS NULL), "
        "count(*) FILTER (WHERE email_consent AND consent_updated_at >= ?), "
        "min(consent_updated_at) FILTER (WHERE email_consent AND consent_updated_at >= ?) FROM customers",
        [as_of, as_of]).fetchall()[0]
    grants = con.execute("SELECT count(*) FILTER (WHERE ts < ?), count(*) FROM events WHERE role = 'consent_granted'",
                         [as_of]).fetchall()[0]
    said = (f"no customer has email consent as of {as_of_label(as_of)}: nobody is sendable, so every export of "
            "sendable members is empty (and every segment that suppresses the unconsented, as suppress_always does "
            "with no_email_consent, has no members).")
    why = []
    if untimed:
        why.append(f"{untimed:,} profiles say yes to email but have no consent_updated_at, and a decision without "
                   "its time is not used: map the column that holds when it was made (often *_updated_at) to "
                   "consent_updated_at under `columns:` in configs/catalog.yaml")
    if later:
        why.append(f"{later:,} profiles say yes with a consent_updated_at from {first_later:%Y-%m-%d %H:%M} on, at or "
                   "after this run's as_of: consent is taken as of the run, as every feature is. A job that scores "
                   "after the customers export is made can leave out --as-of (the cutoff is then the moment it "
                   "starts); an export that stamps every row with the time it was made holds no history of "
                   "decisions, and consent_updated_at then needs the time each was given (the signup, if that is when)")
    if not yes and not grants[1]:
        why.append("the data holds no yes: no profile's email_consent is true and there is no consent_granted event "
                   "(configs/roles.yaml); map your subscription column to email_consent")
    elif not yes and not grants[0]:
        why.append(f"the {grants[1]:,} consent_granted events are all at or after this run's as_of")
    return [said + (" " + "; ".join(why) + "." if why else "")]


def _reason_codes(con, feats: Any, champions: dict, used: list[ScoredModel], targets: list[str],
                  enabled: bool = True, currency: str = "") -> None:
    """``reasons`` (long) and ``member_reasons`` (one row per customer) on ``con``: the top reasons of
    every customer sendable in some segment, for each model that scored them (empty when disabled)."""
    from models import registry
    from pipeline.jobs import reasons

    ids = reasons.sendable_customers(con) if enabled else pd.DataFrame(columns=["customer_id"])
    rows = reasons.feature_rows(feats, ids) if len(ids) else pd.DataFrame(columns=["customer_id"])
    scored = con.execute("SELECT customer_id, " + ", ".join(f"{t}_score" for t in targets) + " FROM scored").df()
    models = {t: registry.bundle_of(champions[t][0]).model for t in targets}
    why = reasons.run_reasons(models, {m.target: m.base_rate for m in used}, rows, scored, currency)
    why = why.astype({"customer_id": "str", "target": "str", "rank": "int32", "feature": "str", "value": "str",
                      "log_odds": "float64", "points": "float64", "reason": "str"})
    con.register("reasons_frame", why)
    con.execute("CREATE OR REPLACE TABLE reasons AS SELECT * FROM reasons_frame")
    con.unregister("reasons_frame")
    con.execute("CREATE OR REPLACE TABLE member_reasons AS " + reasons.reasons_by_customer_sql(targets))


def expected_columns(features_expr: Any, targets: list[str]) -> dict[str, Kind]:
    """The columns segment rules can use in a run: the feature set's and the score columns."""
    kinds: dict[str, Kind] = {}
    for name, dtype in features_expr.schema().items():
        kinds[name] = ("bool" if dtype.is_boolean() else "number" if dtype.is_numeric() else
                       "timestamp" if dtype.is_timestamp() else "text")
    for t in targets:
        kinds |= {f"{t}_score": "number", f"{t}_score_100": "number", f"{t}_band": "text"}
    return kinds


def band_config_warnings(cfg: Config, champions: dict) -> list[str]:
    """configs/bands.yaml edited since a champion was trained: the run keeps the bands saved with
    the model (what was reviewed), which an edit does not reach; said, not ignored in silence."""
    from models import registry
    from models.bands import rules_text

    out = []
    for target, (pyfunc, mv) in champions.items():
        saved = rules_text(registry.bundle_of(pyfunc).bands)
        configured = rules_text([lv.model_dump(exclude_none=True) for lv in getattr(cfg.bands, target)])
        if saved != configured:
            out.append(f"configs/bands.yaml's {target} bands ({configured}) differ from those saved with {mv.name} version "
                       f"{mv.version} ({saved}), which scoring runs use: bands are fixed when a model is trained, so a "
                       f"version reviewed is what scores. To use the new bands, `dynseg train {target}` and promote it")
    return out


def band_names(cfg: Config) -> tuple[dict[str, tuple[str, ...]], dict[str, str], list[str]]:
    """The levels each ``<target>_band`` column can hold in a scoring run now (for ``segments
    check``), highest first: the champion's saved bands, as a run uses them; configs/bands.yaml
    for a target with no champion (or no reachable registry). Also where each list came from, and
    whether configs/bands.yaml differs from a champion's (:func:`band_config_warnings`)."""
    levels, source, notes = {}, {}, []
    ws = Workspace(cfg.workspace)
    uri = ws.tracking_uri(cfg.settings.tracking_uri)
    reachable = False
    from models import registry

    try:
        registry.connect(uri, create=False)  # no store is created for a check
        reachable = True
    except Exception:  # noqa: BLE001 - checking rules must not need the registry (none yet: NoStore)
        pass
    for t in ("purchase", "churn"):
        name = cfg.training.registry.names[t]
        if reachable and registry.champion_metrics(name) is not None:
            pyfunc, mv = registry.load_champion(name)
            levels[f"{t}_band"] = _level_names(cfg, t, registry.bundle_of(pyfunc))
            source[t] = f"{name} version {mv.version}"
            notes += band_config_warnings(cfg, {t: (pyfunc, mv)})
        else:
            levels[f"{t}_band"] = tuple(lv.name for lv in getattr(cfg.bands, t))
            source[t] = "configs/bands.yaml"
    return levels, source, notes


def segment_columns(cfg: Config, as_of: datetime | None = None) -> dict[str, Kind]:
    """What :func:`expected_columns` gives for the current data (for ``dynseg segments check``)."""
    data = load_for_run(cfg, as_of)
    eng = open_engine(cfg, data, "duckdb")
    try:
        expr = customer_features(eng.events(), eng.customers(), as_of or now_utc(), feature_spec(cfg),
                                 data_profile(cfg, data), consents=eng.consents())
        return expected_columns(expr, list(cfg.scoring.targets))
    finally:
        eng.close()
        data.con.close()
        drop_copies(data.con)  # a CSV source's parsed copy, now rather than when the connection is collected


def score_target(cfg: Config, target: str, pyfunc: Any, feats: pd.DataFrame, as_of: datetime,
                 rate_at: Callable[[LabelSpec, datetime], float | None]) -> tuple[pd.DataFrame, ScoredModel]:
    """``<target>_score``, ``_score_100`` and ``_band`` for every row of ``feats`` (empty outside the
    model's population), with the base rate moved to what is expected at ``as_of``."""
    from models import registry

    bundle = registry.bundle_of(pyfunc)
    spec = _label_spec(cfg, target, bundle)
    population = np.ones(len(feats), dtype=bool)
    if spec.population == "active":
        population = (feats["recency_days"] <= _active_days(spec)).fillna(False).to_numpy()
    base_rate, note = _base_rate(spec, as_of, rate_at, base_rate_mode(bundle))
    out = pd.DataFrame(index=feats.index)
    scores = np.full(len(feats), np.nan)
    if population.any():
        scores[population] = registry.score(pyfunc, feats.loc[population], base_rate)["score"].to_numpy()
    levels, notes = _band_levels(cfg, target, bundle)
    levels = band_rules.thresholds_for_run(levels, scores[population] if population.any() else scores)
    out[f"{target}_score"] = scores
    out[f"{target}_score_100"] = pd.array(np.where(np.isnan(scores), np.nan, np.rint(scores * 100)), dtype="Int64")
    out[f"{target}_band"] = pd.Series(band_rules.assign(levels, scores), index=feats.index, dtype="object")
    info = ScoredModel(target, registry.model_name(target, cfg.training.registry.names), "", "", spec.population,
                       int(population.sum()), base_rate, note, band_rules.to_dicts(levels), spec.horizon.days)
    notes = notes + band_rules.tie_warnings(levels, scores[population] if population.any() else scores, target)
    info._warnings = notes + unseen_levels(bundle.model, {  # type: ignore[attr-defined]
        c: (feats.loc[population, c].dropna().astype(str)) for c in bundle.model.categories_ if c in feats},
        window=bundle.data_window)
    return out, info


def unseen_levels(model: Any, values: dict[str, Any], top: int = 3, window: dict | None = None) -> list[str]:
    """A warning per categorical input holding values the model never saw in training (scored as
    if missing): how many of the scored customers, and the commonest such values. ``values``:
    column -> the present values as text (a pandas Series), or precomputed ``(n, counts)`` pairs.
    ``window`` (the model's ``data_window``): to say when a retrain can learn such a value, since
    a model learns only from its training snapshots, which end well before the data it was given
    (its validation and test snapshots and their label windows come after them)."""
    retrain = "Retrain to learn it"
    cutoffs = (window or {}).get("cutoffs") or []
    if len(cutoffs) >= 3 and window.get("last_event"):
        newest_train = pd.Timestamp(cutoffs[2])
        lead = (pd.Timestamp(window["last_event"]) - newest_train).days
        retrain = (f"A model learns a value from its training snapshots only, which end about {lead} days before the "
                   f"newest event it is trained on (this one's newest as of {cutoff_label(cutoffs[2])}): a retrain "
                   f"learns it once customers had it {lead} days before the data's end")
    out = []
    for col, v in values.items():
        known = set(model.categories_.get(col, ()))
        if isinstance(v, tuple):
            n, counts = v
        else:
            n, counts = len(v), v[~v.isin(known)].value_counts()
        counts = {k: int(c) for k, c in dict(counts).items() if k not in known and c}
        if counts:
            unseen = sum(counts.values())
            shown = ", ".join(f"{k!r} ({c:,})" for k, c in sorted(counts.items(), key=lambda kv: -kv[1])[:top])
            out.append(f"{unseen:,} of {n:,} scored customers ({unseen / max(n, 1):.1%}) have a value of {col} the model never "
                       f"saw in training ({shown}); it scores them as if {col} were missing. {retrain}")
    return out


def _label_spec(cfg: Config, target: str, bundle: Any) -> LabelSpec:
    lab = getattr(bundle, "label", None)
    if lab:
        return LabelSpec(target, timedelta(days=lab["horizon_days"]), lab["population"],
                         timedelta(days=lab["active_window_days"]))
    return label_spec(cfg, target)


def _active_days(spec: LabelSpec) -> float:
    """The activity window of an ``active`` population, in days (compared with ``recency_days``)."""
    return spec.active_window.total_seconds() / 86400


def base_rate_mode(bundle: Any) -> str:
    """How the model's base rate is moved to a cutoff, as saved with it (``seasonal`` before it was)."""
    return (getattr(bundle, "label", None) or {}).get("base_rate", "seasonal")


def _base_rate(spec: LabelSpec, as_of: datetime, rate_at: Callable[[LabelSpec, datetime], float | None],
               mode: str = "seasonal") -> tuple[float | None, str]:
    """The base rate expected at ``as_of`` (None: keep the model's calibration) and how it was found."""
    latest_cutoff, latest_year_before, now_year_before = _base_rate_cutoffs(spec, as_of)
    latest = rate_at(spec, latest_cutoff)
    if latest is None:
        return None, "no complete label window before the run: the model's own calibration is used"
    if mode == "latest":
        return seasonal_base_rate(latest, None, None, mode)
    return seasonal_base_rate(latest, rate_at(spec, latest_year_before), rate_at(spec, now_year_before), mode)


def _base_rate_cutoffs(spec: LabelSpec, as_of: datetime) -> tuple[datetime, datetime, datetime]:
    """Where :func:`_base_rate` reads realized rates: the newest complete label window, the same a
    year earlier, and the run's own date a year earlier."""
    year = timedelta(days=365)
    latest = as_of - spec.horizon
    return latest, latest - year, as_of - year


def _level_names(cfg: Config, target: str, bundle: Any) -> tuple[str, ...]:
    """The band names a run of this model version can assign, highest first."""
    return tuple(lv.name for lv in _band_levels(cfg, target, bundle)[0])


def _band_levels(cfg: Config, target: str, bundle: Any) -> tuple[list[band_rules.BandLevel], list[str]]:
    """The version's band levels (percentile thresholds still to resolve) and a note if config supplied them."""
    if bundle.bands:
        return band_rules.from_dicts(bundle.bands), []
    return (band_rules.levels_from_config([lv.model_dump() for lv in getattr(cfg.bands, target)]),
            ["the model version carries no bands (trained before bands existed); configs/bands.yaml is used"])


def _features(eng: FeatureEngine, expr: Any) -> Any:
    """The run's feature frame: pandas on DuckDB. On Spark a Spark DataFrame computed now and kept by
    the executors (a local checkpoint, never collected; later queries start from it, not from the long
    feature plan), with NULL where Spark has NaN: DuckDB reads a pandas NaN as NULL, and the rules
    must compare the same values on both engines."""
    if eng.name != "spark":
        from features.engines.duckdb import sort_by_customer, to_frame

        return to_frame(sort_by_customer(eng.execute_arrow(expr)))  # sorted in Arrow: see sort_by_customer
    return _nan_to_null(eng.to_spark(expr)).localCheckpoint()


def _spark_level_counts(feats: Any, inside: Any, model: Any) -> dict[str, tuple[int, dict[str, int]]]:
    """Per categorical input of ``model``: (present values in its population, counts of the values
    it never saw), computed on Spark (the distinct unseen values are few)."""
    from pyspark.sql import functions as F

    out = {}
    rows = feats.filter(inside)
    for col in (c for c in model.categories_ if c in feats.columns):
        counts = {r["v"]: r["count"] for r in rows.filter(F.col(col).isNotNull())
                  .groupBy(F.col(col).cast("string").alias("v")).count().collect()}  # one job: few distinct values
        out[col] = (sum(counts.values()), counts)
    return out


def _nan_to_null(frame: Any) -> Any:
    """``frame`` with NULL for NaN in every floating-point column."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    return frame.withColumns({f.name: F.nanvl(f.name, F.lit(None).cast(f.dataType)) for f in frame.schema.fields
                              if isinstance(f.dataType, (DoubleType, FloatType))})


def _score_and_segment_duckdb(cfg: Config, feats: pd.DataFrame, champions: dict, segments: list[CompiledSegment],
                              as_of: datetime, rate_at: Callable[[LabelSpec, datetime], float | None], con,
                              timings: dict[str, float], say: Progress) -> tuple[int, list[ScoredModel]]:
    """Scores, bands and memberships on DuckDB: ``feats`` (pandas) gains the score columns and becomes
    ``scored`` on ``con``, the memberships ``members``, then ``health``. Returns the customers and models."""
    clock = time.perf_counter()
    say("scoring")
    used = []
    for t, (pyfunc, mv) in champions.items():
        scores, info = score_target(cfg, t, pyfunc, feats, as_of, rate_at)
        info.version, info.model_run_id = str(mv.version), mv.run_id or ""
        for col in scores.columns:
            feats[col] = scores[col]
        used.append(info)
    timings["scoring"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say("segments")
    con.register("scored", feats)
    con.execute("CREATE OR REPLACE TABLE members AS " + membership_sql(
        segments, cfg.segments.holdout_salt, runs.score_columns(list(champions)), CONSENT_COLUMN in feats.columns))
    _exclusions_table(con, exclusions_sql(segments))
    _health_view(con, segments, "(" + coverage_sql(segments) + ")")
    timings["segments"] = time.perf_counter() - clock
    return len(feats), used


def _score_and_segment_spark(cfg: Config, feats: Any, champions: dict, segments: list[CompiledSegment],
                             as_of: datetime, rate_at: Callable[[LabelSpec, datetime], float | None], con,
                             timings: dict[str, float], say: Progress) -> tuple[int, list[ScoredModel]]:
    """The same on Spark, leaving the same relations on ``con``: each champion scores its population
    as a Spark UDF, bands and segments are Spark SQL, and nothing per customer passes through the
    driver: customer scores and memberships are staged as Parquet in the workspace and loaded from there."""
    from pyspark.sql import functions as F

    from models import registry

    spark = feats.sparkSession
    clock = time.perf_counter()
    say("scoring")
    scored, found = feats, []
    for t, (pyfunc, mv) in champions.items():
        bundle = registry.bundle_of(pyfunc)
        spec = _label_spec(cfg, t, bundle)
        inside = (F.lit(True) if spec.population != "active" else
                  F.coalesce(F.col("recency_days") <= _active_days(spec), F.lit(False)))
        base_rate, note = _base_rate(spec, as_of, rate_at, base_rate_mode(bundle))
        predict = registry.spark_udf(spark, mv, base_rate)(registry.spark_model_input(feats, pyfunc))
        # Computed here, one model per Spark job (the Python workers, slow to start, serve them in
        # turn), and kept with a short lineage: the segment queries below read it many times.
        scored = _with_scores(scored, t, inside, predict).localCheckpoint()
        levels, notes = _band_levels(cfg, t, bundle)
        info = ScoredModel(t, mv.name, str(mv.version), mv.run_id or "", spec.population, 0, base_rate, note, [],
                           spec.horizon.days)
        info._warnings = notes + unseen_levels(bundle.model, _spark_level_counts(feats, inside, bundle.model),  # type: ignore[attr-defined]
                                               window=bundle.data_window)
        found.append((info, levels))
    view = f"dynseg_scored_{uuid.uuid4().hex[:8]}"
    staged = temp_sibling(staging_root(cfg) / "spark-score")
    try:
        counts = scored.agg(F.count(F.lit(1)), *[F.count(f"{m.target}_score") for m, _ in found]).first()
        bands = {}
        for (info, levels), n in zip(found, counts[1:]):
            score = f"{info.target}_score"
            levels = [dataclasses.replace(lv, threshold=_top_threshold(scored, score, n, lv.top_percent))
                      if lv.rule == "top_percent" else lv for lv in levels]
            cut = band_rules.tie_levels(levels)
            if cut:  # ties at a top_percent cut, as on DuckDB (band_rules.tie_warnings): one pass for the target
                got = scored.agg(*[F.count(F.when(F.col(score) >= lv.threshold, 1)) for lv in cut],
                                 *[F.count(F.when(F.col(score) == lv.threshold, 1)) for lv in cut]).first()
                info._warnings += [w for i, lv in enumerate(cut)  # type: ignore[attr-defined]
                                   if (w := band_rules.tie_warning(lv, n, got[i], got[len(cut) + i], info.target))]
            bands[f"{info.target}_band"] = _band_column(levels, F.col(score))
            info.scored, info.bands = n, band_rules.to_dicts(levels)
        scored = scored.withColumns(bands)
        scored.createOrReplaceTempView(view)
        timings["scoring"] = time.perf_counter() - clock

        clock = time.perf_counter()
        say("segments")
        score_cols = runs.score_columns(list(champions))
        members = spark.sql(membership_sql(segments, cfg.segments.holdout_salt, score_cols,
                                           CONSENT_COLUMN in feats.columns, table=view, dialect="spark"))
        for name, frame in (("scored", scored.select("customer_id", *score_cols)), ("members", members)):
            files = _write_parquet(frame, staged / name)
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM read_parquet('{files}')")
        excluded = exclusions_sql(segments, table=view, dialect="spark")
        if excluded is not None:
            files = _write_parquet(spark.sql(excluded), staged / "exclusions")
            excluded = f"SELECT * FROM read_parquet('{files}')"
        _exclusions_table(con, excluded)
        con.register("coverage", spark.sql(coverage_sql(segments, table=view, dialect="spark")).toPandas())
        _health_view(con, segments, "coverage")
        timings["segments"] = time.perf_counter() - clock
        return counts[0], [info for info, _ in found]
    finally:
        # (the checkpointed frames are released by Spark's cleaner once they are out of reach)
        spark.catalog.dropTempView(view)
        shutil.rmtree(staged, ignore_errors=True)


def _with_scores(frame: Any, target: str, inside: Any, predict: Any) -> Any:
    """``frame`` plus ``<target>_score`` and ``_score_100`` from ``predict`` (the model's UDF on its
    inputs) for the rows ``inside`` the model's population, NULL for the others. A union of the two
    halves: the model sees only its population, and nothing is shuffled."""
    from pyspark.sql import functions as F

    score, score_100 = f"{target}_score", f"{target}_score_100"
    no_score = F.lit(None).cast("double")
    with_scores = (frame.where(inside).withColumn("_p", predict)
                   .withColumns({score: F.nanvl("_p.score", no_score), score_100: F.col("_p.score_100")}).drop("_p"))
    without = frame.where(~inside).withColumns({score: no_score, score_100: F.lit(None).cast("long")})
    return with_scores.unionByName(without)


def _top_threshold(scored: Any, column: str, n: int, top_percent: float) -> float:
    """:func:`models.bands.percentile_threshold` on Spark, exactly: the score at rank ceil(n q / 100),
    best first, among the ``n`` customers with a score (inf when there are none)."""
    from pyspark.sql import functions as F

    if n == 0:
        return math.inf
    k = band_rules.top_rank(n, top_percent)
    ranked = scored.select(column).where(F.col(column).isNotNull()).orderBy(F.col(column).desc())
    return float(ranked.offset(k - 1).limit(1).first()[0])


def _band_column(levels: list[band_rules.BandLevel], score: Any) -> Any:
    """:func:`models.bands.assign` as a Spark column: the first level whose threshold the score
    reaches (a level without a rule takes everyone left); NULL without a score."""
    from pyspark.sql import functions as F

    band = F.when(score.isNull(), F.lit(None).cast("string"))
    for lv in levels:
        band = band.when(F.lit(True) if lv.rule is None else score >= lv.threshold, lv.name)
    return band


def _write_parquet(frame: Any, folder: Path) -> str:
    """Write ``frame`` from Spark as Parquet files under a temp name, then rename the folder into
    place; return a glob of its files for DuckDB's ``read_parquet``."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    frame.write.mode("overwrite").parquet(str(tmp))
    tmp.rename(folder)
    return str(folder / "*.parquet").replace("'", "''")


def _exclusions_table(con, query: str | None) -> None:
    """``exclusions`` on ``con``: who a segment's rule selects but an excluded segment takes away
    (:func:`pipeline.segments.exclusions_sql`), empty when no segment excludes."""
    con.execute("CREATE OR REPLACE TABLE exclusions AS " + (
        query or "SELECT NULL::VARCHAR AS segment, NULL::VARCHAR AS customer_id, NULL::VARCHAR AS excluded_by LIMIT 0"))


def _health_view(con, segments: list[CompiledSegment], coverage: str) -> None:
    """``health``: per segment, size, sendable, holdout and coverage of this run (``coverage``: a
    relation on ``con`` with one row per segment, see :func:`pipeline.segments.coverage_sql`)."""
    meta = pd.DataFrame([{"segment": s.name, "kind": s.definition.kind, "owner": s.definition.owner}
                         for s in segments])
    con.register("segment_meta", meta)
    con.execute(
        "CREATE OR REPLACE TABLE health AS "
        "SELECT m.segment, m.kind, m.owner, count(k.customer_id) AS size, "
        "count(*) FILTER (WHERE k.sendable) AS sendable, count(*) FILTER (WHERE k.holdout) AS holdout, "
        "any_value(c.coverage) AS coverage "
        f"FROM segment_meta m LEFT JOIN members k USING (segment) LEFT JOIN {coverage} c "
        "USING (segment) GROUP BY m.segment, m.kind, m.owner")


def run_models(used: list) -> list[dict]:
    """Each model of a run as its exports' manifest and ``Project().runs()`` name it: target, registered
    name and version, and the training run it came from."""
    return [{"target": m.target, "name": m.name, "version": str(m.version), "model_run_id": m.model_run_id}
            for m in used]


def write_exports(con, segments: list[CompiledSegment], score_cols: list[str], folder: Path, formats: list[str],
                  as_of: datetime, run_id: str, models: list[dict] | None = None) -> dict[str, dict[str, int]]:
    """Per segment: sendable members (``<name>.<fmt>``) and, for a segment with a holdout, the holdout
    (``<name>.holdout.<fmt>``); suppression segments under ``suppressions/``. Plus ``manifest.json``."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "suppressions").mkdir(parents=True)
    cols = "segment, customer_id, " + ", ".join(score_cols)
    if any(c.endswith("_reasons") for c in score_cols):
        con.execute("CREATE OR REPLACE VIEW export_members AS SELECT m.*, "
                    + ", ".join(f"r.{c}" for c in score_cols if c.endswith("_reasons"))
                    + " FROM members m LEFT JOIN member_reasons r USING (customer_id)")
    source = "export_members" if any(c.endswith("_reasons") for c in score_cols) else "members"
    counts: dict[str, dict[str, int]] = {}
    files = []
    for s in segments:
        parts = ({"suppressed": ("suppressions/" + s.name, "true")} if not s.sendable_kind else
                 {"sendable": (s.name, "sendable"), "holdout": (s.name + ".holdout", "holdout")})
        counts[s.name] = {}
        for what, (stem, cond) in parts.items():
            query = f"SELECT {cols} FROM {source} WHERE segment = '{s.name}' AND {cond} ORDER BY customer_id"
            counts[s.name][what] = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
            if what == "holdout" and not s.definition.holdout:
                continue  # no holdout: no file (an empty `.holdout` file beside each such segment puzzled senders)
            for fmt in formats:
                path = folder / f"{stem}.{fmt}"
                option = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
                con.execute(f"COPY ({query}) TO {literal(str(path))} ({option})")  # (a workspace under o'k)
                files.append(str(path.relative_to(folder)))
    # as_of is the cutoff instant (UTC; a run --as-of 2026-11-27 is 2026-11-28T00:00:00), as_of_label
    # the date a person gave, as `segments list --json` and the reports' summaries say it
    manifest = {"run_id": run_id, "as_of": as_of.isoformat(), "as_of_label": as_of_label(as_of), "files": files,
                "rows": counts,
                # which model scored the files (a sender's "which version chose these people?")
                "models": models or [],
                "note": "sendable files hold members with email consent outside the holdout; "
                        "holdout files must not be contacted; suppressions/ lists who is suppressed and why"}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return counts


def _manifest_run(folder: Path) -> str | None:
    try:
        return json.loads((folder / "manifest.json").read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def remove_exports(folder: Path) -> None:
    """Remove an exports folder: renamed aside first, so an email tool never reads half of it."""
    trash = folder.with_name(f".{folder.name}.dropped.tmp")
    shutil.rmtree(trash, ignore_errors=True)
    folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def recover_exports(ws: Workspace) -> list[str]:
    """The export folders made right after a stopped command, before anything else writes there
    (a sweep of ``exports/`` removed a committed run's finished folder as any killed writer's temp):

    - a standing run's finished folder left under its temp name (its process stopped between the
      commit and the rename) is moved in; one of a run that no longer stands (dropped, replaced) goes;
    - the folder of a dropped run (``drop-run`` stopped between its commit and the folder's removal)
      is removed: an email tool reading ``exports/<date>/`` would send lists of a deleted run;
    - a date's folder that holds another run's files than the run standing for that date is said,
      at every run until it is scored again (only the latest run's was checked);
    - the latest run's folder, if missing, is said; older ones may have been pruned on purpose.
    Also the leftover of a swap stopped half-way. Returns the warnings."""
    from pipeline.workspace import TEMP_NAME, _abandoned, writer_tag

    root = ws.root / "exports"
    if not root.is_dir() or not ws.db_path.exists():
        return []
    standing = runs.read(ws.db_path, "SELECT run_id, as_of, finished_at FROM scoring_runs ORDER BY finished_at")
    label = {r.run_id: as_of_file_label(r.as_of.to_pydatetime()) for r in standing.itertuples()}
    run_of = {lab: rid for rid, lab in label.items()}  # (one run stands per as_of)
    dropped = set(runs.read_optional(ws.db_path, "SELECT run_id FROM dropped_runs").get("run_id", []))
    said: list[str] = []
    told: set[Path] = set()  # the date folders said already
    for tmp in sorted(root.glob(".*.tmp")):
        named = TEMP_NAME.match(tmp.name)  # .LABEL.PID@HOST~XXXX.tmp (a label may hold a dot: 12.5Z)
        rid = _manifest_run(tmp) if tmp.is_dir() and named else None
        if rid is None or not _abandoned(tmp, named.group(2)):
            continue  # not a finished export folder, or its writer still runs: the generic sweep judges it
        # claimed first, by a rename only one command can make (two scores at once both saw it)
        claimed = tmp.with_name(f".{named.group(1)}.{writer_tag()}~claimed.tmp")
        try:
            tmp.rename(claimed)
        except FileNotFoundError:
            continue
        folder = root / label.get(rid, "")
        if rid in label and named.group(1) == folder.name and _manifest_run(folder) != rid:
            swap_in_folder(claimed, folder)
            said.append(f"the exports of run {rid} (as of {folder.name}) were put in place now: its process was "
                        "stopped after the run was recorded, before it could move them in")
        else:  # a dropped or replaced run's, or one already in place: nothing to send from
            shutil.rmtree(claimed, ignore_errors=True)
    for old in root.glob(".*.old"):
        # a swap stopped after its folder was in place, or half-way through removing the one it
        # replaced (no manifest left); one stopped between its two renames, with no folder in place
        # (its new one was moved in above if it stood), holds the only copy: kept, as a swap under way
        if (root / old.name[1:-len(".old")]).is_dir() or _manifest_run(old) is None:
            shutil.rmtree(old, ignore_errors=True)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        rid = _manifest_run(folder)
        if rid is None or rid in label:
            continue
        if rid in dropped:
            remove_exports(folder)
            told.add(folder)
            said.append(f"the exports of dropped run {rid}, {folder}, were removed now: the drop was stopped "
                        "before it could remove them")
        elif folder.name in run_of:
            told.add(folder)
            said.append(f"{folder} holds the files of run {rid}, which another run replaced ({run_of[folder.name]}): "
                        f"do not send from it; score {folder.name} again to write the files of the run that stands")
    if standing.empty:
        return said
    last = standing.iloc[-1]
    folder = root / label[last.run_id]
    found = _manifest_run(folder)
    if found != last.run_id and folder not in told:
        said.append(f"the exports of run {last.run_id} (as of {as_of_label(last.as_of.to_pydatetime())}) are not in "
                    f"{folder} " + (f"(it holds run {found}'s files)" if found else "(no such folder)")
                    + f": its process was stopped before it could write them. Score "
                    f"{as_of_label(last.as_of.to_pydatetime())} again to write them")
    return said


def _salt_warning(db: Path, run_id: str, prev: str | None) -> list[str]:
    """A warning when holdout_salt differs from the previous run's: every holdout is drawn anew, so
    customers switch sides between two runs (a removed line fell back to the default salt in
    silence: 30 members of three segments switched)."""
    if not prev:
        return []
    salts = {r: c.get("holdout_salt") for r, c in _segment_configs(db, run_id, prev).items()}
    if len(salts) < 2 or salts[run_id] == salts[prev] or salts[prev] is None:
        return []
    switched = runs.read(db, "SELECT count(*) AS n FROM segment_members a JOIN segment_members b ON a.segment = b.segment "
                             "AND a.customer_id = b.customer_id WHERE a.run_id = ? AND b.run_id = ? AND a.holdout <> b.holdout",
                         [run_id, prev]).n[0]
    prev_as_of = as_of_label(runs.read(db, "SELECT as_of FROM scoring_runs WHERE run_id = ?", [prev]).as_of[0].to_pydatetime())
    return [f"holdout_salt is {salts[run_id]!r}, the previous run's (as of {prev_as_of}) {salts[prev]!r}: every holdout "
            f"was drawn anew, and {switched:,} members in a segment in both runs switched sides. If that was not meant, "
            f"set holdout_salt: {salts[prev]!r} in configs/segments.yaml and score this date again"]


def _definition_warnings(db: Path, run_id: str, prev: str | None, changes: dict[str, str]) -> list[str]:
    """A warning per segment new, defined differently or removed since the previous run (``changes``,
    from :func:`run_definition_changes`): its entered/exited count the change of definition, not
    only customers who moved; a removed one's exits are counted from the run's deltas (it has no
    health row, the run not holding it)."""
    if not changes:
        return []
    prev_as_of = as_of_label(runs.read(db, "SELECT as_of FROM scoring_runs WHERE run_id = ?", [prev]).as_of[0].to_pydatetime())
    when = f"the previous run (as of {prev_as_of})"
    exited: dict[str, int] = {}
    if "removed" in changes.values():
        rows = runs.read(db, "SELECT segment, count(*) AS n FROM segment_deltas WHERE run_id = ? AND change = 'exited' "
                             "GROUP BY segment", [run_id])
        exited = dict(zip(rows.segment, rows.n)) if not rows.empty else {}
    # a new segment with a holdout beside a removed one may be a rename: its holdout is drawn anew
    configs = _segment_configs(db, run_id, prev)
    defined, before = ({d["name"]: d for d in configs.get(r, {}).get("segments", [])} for r in (run_id, prev))
    # only a removed segment that had a holdout has one to keep (the others were named too)
    removed = [n for n, c in changes.items() if c == "removed" and before.get(n, {}).get("holdout")]

    def rename_hint(name: str) -> str:
        d = defined.get(name, {})
        if not removed or not d.get("holdout") or d.get("holdout_key"):
            return ""
        return (f"; if it renames {' or '.join(removed)}, its holdout was drawn anew (the name is part of the draw): "
                f"set `holdout_key: {removed[0]}` on it in configs/segments.yaml and score again to keep that holdout")

    return [f"segment {name} is new since {when}: every member counts as entered{rename_hint(name)}" if change == "new" else
            f"segment {name} was removed since {when}: its {exited.get(name, 0):,} members there count as exited "
            f"(`dynseg segments changes {name}` lists them, e.g. to end their journeys)" if change == "removed" else
            f"segment {name} is defined differently since {when}: its entered/exited count the change of "
            f"definition, not only customers who moved (`dynseg segments show {name} --as-of {prev_as_of}` "
            "shows what that run used)"
            for name, change in changes.items()]


def run_model_changes(db: Path, run_id: str, previous_run_id: str | None) -> dict[str, tuple[str, str]]:
    """target -> (model/version of the run before, model/version of this run), for each target whose
    model changed between them (a promotion or a rollback): every segment read from its scores moves
    with the model too, not only with the customers."""
    if not previous_run_id:
        return {}
    found = runs.read(db, "SELECT run_id, models FROM scoring_runs WHERE run_id IN (?, ?)", [run_id, previous_run_id])
    used = {r.run_id: {m["target"]: (f"{m['name']} version {m['version']}", m.get("model_run_id") or None)
                       for m in json.loads(r.models)}
            for r in found.itertuples() if isinstance(r.models, str)}
    if run_id not in used or previous_run_id not in used:
        return {}
    before, now = used[previous_run_id], used[run_id]
    out = {}
    for t in now:
        if t not in before:
            continue
        (was, was_run), (is_, is_run) = before[t], now[t]
        if was_run and is_run:  # by the training run: a rename is no change; a number re-used by another model is
            if was_run != is_run:
                out[t] = (was, is_) if was != is_ else (f"{was} (training run {was_run})", f"{is_} (training run {is_run})")
        elif was != is_:
            out[t] = (was, is_)
    return out


def run_definition_changes(db: Path, run_id: str, previous_run_id: str | None) -> dict[str, str]:
    """Which segments of a stored run were new or redefined against the run its movement is taken
    against (:func:`pipeline.segments.definition_changes`); empty for a first run."""
    from pipeline.segments import definition_changes

    if not previous_run_id:
        return {}
    configs = _segment_configs(db, run_id, previous_run_id)
    if run_id not in configs or previous_run_id not in configs:
        return {}
    return definition_changes(configs[run_id], configs[previous_run_id])


def _segment_configs(db: Path, *run_ids: str) -> dict[str, dict]:
    """Run id -> the segments config stored with it (configs/segments.yaml as that run read it),
    for those of ``run_ids`` that have one."""
    found = runs.read(db, f"SELECT run_id, config FROM scoring_runs WHERE run_id IN ({', '.join('?' * len(run_ids))})",
                      list(run_ids))
    return {r.run_id: json.loads(r.config).get("segments", {}) for r in found.itertuples() if isinstance(r.config, str)}


def flush_mlflow(registry: Any, db: Path) -> list[str]:
    """Tell MLflow's earlier scoring records what the committed runs changed (runs.queue_mlflow):
    a replaced or dropped run's record gets its tags; a run whose movement was taken again (a
    backfill, a re-run, a dropped run before it) gets its new entered/exited figures (as step 1;
    parameters cannot change in MLflow) and a tag naming the run they are measured against ("" for
    none: it is the first). Also what a run stopped after its commit left queued. Each update is
    removed from the queue once done; a warning (the run stands) if MLflow fails."""
    try:
        pending = runs.pending_mlflow(db)
    except duckdb.IOException as e:  # held past the lock wait: the queue waits for the next run, as MLflow down does
        if not held_elsewhere(e):
            raise
        return ["the run was written, but the queued updates of earlier MLflow records could not be read (another "
                "process held the workspace past DYNSEG_LOCK_WAIT): they stay queued for the next run"]
    done: list[str] = []
    said: list[str] = []
    moved: set[str] = set()  # (a run's movement is read as it stands now: once is enough)
    try:
        for p in pending.itertuples():
            try:
                if isinstance(p.movement_of, str) and p.movement_of not in moved:
                    moved.add(p.movement_of)
                    _relog_movement(registry, db, p.movement_of)
                elif isinstance(p.mlflow_run_id, str):
                    registry.update_run(p.mlflow_run_id, tags=json.loads(p.tags) if isinstance(p.tags, str) else {})
            except (registry.RegistryError, duckdb.IOException) as e:  # (the workspace held past the lock wait too)
                if not _refused_for_good(e):  # MLflow down or in trouble: this and the rest wait for the next run
                    return said + [f"the run was written, but updating earlier MLflow records failed: "
                                   f"{len(pending) - len(done)} left queued for the next run ({e})"]
                # a record MLflow refuses (deleted, say) will not take it later either: said once and
                # dropped, so that it does not hold back the others at every run from now on
                said.append(f"the run was written, but an earlier MLflow record could not be updated, and will not be "
                            f"tried again: {e}")
            done.append(p.id)
    finally:
        with contextlib.suppress(Exception):  # not removed: done again next time, to the same effect
            runs.mlflow_done(db, done)
    return said


def _refused_for_good(e: Exception) -> bool:
    """Whether MLflow refused an update of a record for a reason a retry does not change: the record
    is gone, or deleted (not active); not a server that did not answer."""
    cause = e.__cause__
    return getattr(cause, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE",
                                                  "INVALID_STATE")


def _relog_movement(registry: Any, db: Path, run_id: str) -> None:
    """Run ``run_id``'s MLflow record (if it stands and has one) gets its entered/exited as they
    stand now, at step 1, and the run they are measured against."""
    run = runs.read(db, "SELECT mlflow_run_id, previous_run_id FROM scoring_runs WHERE run_id = ?", [run_id])
    if run.empty or not isinstance(run.mlflow_run_id[0], str) or not run.mlflow_run_id[0]:
        return
    health = runs.read(db, "SELECT segment, entered, exited FROM segment_health WHERE run_id = ?", [run_id])
    metrics = {f"{k}_{r.segment}": getattr(r, k) for r in health.itertuples() for k in ("entered", "exited")}
    prev = run.previous_run_id[0]
    registry.update_run(run.mlflow_run_id[0], metrics=metrics, step=1,
                        tags={"movement_against_run": prev if isinstance(prev, str) else ""})


def _log_mlflow(cfg: Config, registry: Any, record: dict, used: list[ScoredModel], health: pd.DataFrame,
                exports: dict) -> str:
    params = {"as_of": str(record["as_of"]), "engine": record["engine"], "n_customers": record["n_customers"],
              "dynseg_run_id": record["run_id"], "previous_run_id": record["previous_run_id"] or "",
              **{f"{m.target}_model": f"{m.name}/{m.version}" for m in used},
              **{f"{m.target}_base_rate": m.base_rate for m in used}}
    metrics: dict[str, float] = {"n_customers": record["n_customers"]}
    for r in health.itertuples():
        metrics |= {f"size_{r.segment}": r.size, f"sendable_{r.segment}": r.sendable,
                    f"entered_{r.segment}": r.entered, f"exited_{r.segment}": r.exited}
    tags = {"dynseg.kind": "scoring", "as_of": str(record["as_of"]),
            **{f"model.{m.target}": f"{m.name}/{m.version}" for m in used}}
    return registry.log_run(experiment=cfg.scoring.experiment, run_name=f"score-{as_of_file_label(record['as_of'])}",
                            params=params, metrics=metrics, tags=tags,
                            tables={"segment_health.csv": health})


def _redrawn_sides(db: Path, run_id: str) -> list[str]:
    """A re-run whose holdouts differ from the run it replaced (a holdout fraction, the salt or a
    name changed): if the replaced run's exports were sent, its sides are what happened, and lift
    on this date grades other ones. Said per segment; the replaced sides stay in replaced_members."""
    sides = runs.replaced_sides(db, run_id)
    if sides.empty:
        return []
    shown = "; ".join(f"{r.segment}: {r.flipped:,} ({r.sent_now_held:,} sendable then, held out now; "
                      f"{r.held_now_sent:,} held out then, sendable now)" for r in sides.itertuples())
    return [f"members on the other side of the holdout than in run {sides.replaced[0]}, which this run replaces: "
            f"{shown}. If that run's exports were sent, lift for this date compares the wrong groups (it says so); "
            "its members and sides are kept in the workspace's replaced_members table. To keep them, score this "
            "date again with the definitions it used (the segments' holdout fractions and names, holdout_salt)"]
