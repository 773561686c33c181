"""``dynseg score``: features as of D -> champion models -> bands -> segments -> one transaction.

Stages (timed, for the benchmark): ``features`` (point-in-time features of every known
customer), ``scoring`` (each target's champion, calibrated and moved to the base rate expected at
D, then bands), ``segments`` (rules, exclusions, holdouts, consent), ``write`` (exports, the
workspace transaction, the MLflow record).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from features.asof import as_of_label, now_utc, parse_duration
from features.customer_features import customer_features
from features.labels import LabelSpec
from features.training_set import label_rate
from models import bands as band_rules
from models.calibration import seasonal_base_rate
from pipeline import runs
from pipeline.config import Config
from pipeline.jobs.data import load_validated
from pipeline.jobs.features import _fresh, data_profile, feature_spec, label_spec, open_engine
from pipeline.rules import Kind
from pipeline.segments import CONSENT_COLUMN, CompiledSegment, compile_segments, coverage_sql, membership_sql
from pipeline.workspace import Workspace

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


def export_label(as_of: datetime) -> str:
    """Folder name for a run's exports: the date for an end-of-day as_of, else the instant."""
    return as_of_label(as_of).replace(":", "")


def score_job(cfg: Config, as_of: datetime, engine: str | None = None, progress: Progress | None = None,
              log_to_mlflow: bool = True) -> ScoreRun:
    from models import registry

    say = progress or (lambda _: None)
    timings: dict[str, float] = {}
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    ws = Workspace(cfg.workspace)
    registry.connect(ws.tracking_uri(cfg.settings.tracking_uri))
    targets = list(cfg.scoring.targets)
    if not targets:
        raise ValueError("configs/scoring.yaml: targets is empty; expected at least one of ['purchase', 'churn']")
    say("loading champion models")
    champions = {t: registry.load_champion(cfg.training.registry.names[t]) for t in targets}

    clock = time.perf_counter()
    say("validate")
    data = load_validated(cfg, max(as_of, now_utc()))
    warnings = _fresh(cfg, data, as_of)
    profile = data_profile(cfg, data)
    timings["validate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say("features")
    eng = open_engine(cfg, data, engine)
    try:
        expr = customer_features(eng.events(), eng.customers(), as_of, feature_spec(cfg), profile)
        # Every rule is checked against the run's columns before any work is done.
        segments = compile_segments(cfg.segments, expected_columns(expr, targets))
        feats = eng.execute(expr)
        feats = feats.sort_values("customer_id", ignore_index=True)
        timings["features"] = time.perf_counter() - clock

        clock = time.perf_counter()
        say("scoring")
        first = data.con.execute("SELECT min(ts) FROM events").fetchall()[0][0]
        used = []
        for t in targets:
            pyfunc, mv = champions[t]
            scores, info = score_target(cfg, t, pyfunc, feats, as_of,
                                        lambda spec, cutoff: label_rate(eng, profile, spec, cutoff, first,
                                                                        parse_duration(cfg.training.min_history)))
            info.version, info.model_run_id = str(mv.version), mv.run_id or ""
            for col in scores.columns:
                feats[col] = scores[col]
            used.append(info)
            warnings += [f"{t}: {w}" for w in getattr(info, "_warnings", [])]
        timings["scoring"] = time.perf_counter() - clock
    finally:
        eng.close()

    clock = time.perf_counter()
    say("segments")
    con = data.con
    score_cols = runs.score_columns(targets)
    con.register("scored", feats)
    con.execute("CREATE OR REPLACE TEMP TABLE members AS " + membership_sql(
        segments, cfg.segments.holdout_salt, score_cols, CONSENT_COLUMN in feats.columns))
    if CONSENT_COLUMN not in feats.columns:
        warnings.append("the data has no consent fields: no customer is sendable (exports hold holdouts and "
                        "suppressions only). Add email_consent and consent_updated_at to the customers source.")
    _health_view(con, segments)
    timings["segments"] = time.perf_counter() - clock

    clock = time.perf_counter()
    say("writing")
    run_id = uuid.uuid4().hex[:12]
    export_dir = ws.root / "exports" / export_label(as_of)
    tmp_dir = export_dir.parent / f".{export_dir.name}.{run_id}.tmp"
    exports = write_exports(con, segments, score_cols, tmp_dir, cfg.scoring.export_formats, as_of, run_id)
    bands_used = {m.target: m.bands for m in used}
    record = {
        "run_id": run_id, "as_of": as_of, "started_at": started, "finished_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "engine": engine or cfg.settings.engine, "n_customers": len(feats),
        "models": json.dumps([m.record() for m in used], default=str), "bands": json.dumps(bands_used, default=str),
        "previous_run_id": None, "mlflow_run_id": None, "export_dir": str(export_dir),
        "config": json.dumps({"segments": cfg.segments.model_dump(), "scoring": cfg.scoring.model_dump()}),
    }
    try:
        prev = runs.write_run(con, ws.db_path, record, targets, "scored", "members", "health")
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    _swap_in(tmp_dir, export_dir)
    health = runs.read(ws.db_path, "SELECT * FROM segment_health WHERE run_id = ? ORDER BY segment", [run_id])
    order = {s.name: i for i, s in enumerate(cfg.segments.segments)}
    health = health.sort_values("segment", key=lambda s: s.map(order), ignore_index=True)
    mlflow_run = None
    if log_to_mlflow:
        mlflow_run = _log_mlflow(cfg, registry, record, used, health, exports)
        _set_mlflow_run(ws, run_id, mlflow_run)
    timings["write"] = time.perf_counter() - clock
    return ScoreRun(run_id, as_of, prev, len(feats), used, health, export_dir, exports, mlflow_run, timings, warnings)


def expected_columns(features_expr: Any, targets: list[str]) -> dict[str, Kind]:
    """The columns segment rules can use in a run: the feature set's and the score columns."""
    kinds: dict[str, Kind] = {}
    for name, dtype in features_expr.schema().items():
        kinds[name] = ("bool" if dtype.is_boolean() else "number" if dtype.is_numeric() else
                       "timestamp" if dtype.is_timestamp() else "text")
    for t in targets:
        kinds |= {f"{t}_score": "number", f"{t}_score_100": "number", f"{t}_band": "text"}
    return kinds


def segment_columns(cfg: Config, as_of: datetime | None = None) -> dict[str, Kind]:
    """What :func:`expected_columns` gives for the current data (for ``dynseg segments check``)."""
    data = load_validated(cfg, max(as_of or now_utc(), now_utc()))
    eng = open_engine(cfg, data, "duckdb")
    try:
        expr = customer_features(eng.events(), eng.customers(), as_of or now_utc(), feature_spec(cfg),
                                 data_profile(cfg, data))
        return expected_columns(expr, list(cfg.scoring.targets))
    finally:
        eng.close()


def score_target(cfg: Config, target: str, pyfunc: Any, feats: pd.DataFrame, as_of: datetime,
                 rate_at: Callable[[LabelSpec, datetime], float | None]) -> tuple[pd.DataFrame, ScoredModel]:
    """``<target>_score``, ``_score_100`` and ``_band`` for every row of ``feats`` (empty outside the
    model's population), with the base rate moved to what is expected at ``as_of``."""
    from models import registry

    bundle = registry.bundle_of(pyfunc)
    notes: list[str] = []
    spec = _label_spec(cfg, target, bundle)
    population = np.ones(len(feats), dtype=bool)
    if spec.population == "active":
        population = (feats["recency_days"] <= spec.active_window.total_seconds() / 86400).fillna(False).to_numpy()
    latest_cutoff = as_of - spec.horizon
    latest = rate_at(spec, latest_cutoff)
    if latest is None:
        base_rate, note = None, "no complete label window before the run: the model's own calibration is used"
    else:
        year = timedelta(days=365)
        base_rate, note = seasonal_base_rate(latest, rate_at(spec, latest_cutoff - year), rate_at(spec, as_of - year))
    out = pd.DataFrame(index=feats.index)
    scores = np.full(len(feats), np.nan)
    if population.any():
        x = registry.model_input(feats.loc[population], pyfunc)
        pred = pyfunc.predict(x, params={"base_rate": base_rate} if base_rate is not None else None)
        scores[population] = pred["score"].to_numpy()
    if bundle.bands:
        levels = band_rules.from_dicts(bundle.bands)
    else:
        levels = band_rules.levels_from_config([lv.model_dump() for lv in getattr(cfg.bands, target)])
        notes.append("the model version carries no bands (trained before bands existed); configs/bands.yaml is used")
    levels = band_rules.thresholds_for_run(levels, scores[population] if population.any() else scores)
    out[f"{target}_score"] = scores
    out[f"{target}_score_100"] = pd.array(np.where(np.isnan(scores), np.nan, np.rint(scores * 100)), dtype="Int64")
    out[f"{target}_band"] = pd.Series(band_rules.assign(levels, scores), index=feats.index, dtype="object")
    info = ScoredModel(target, registry.model_name(target, cfg.training.registry.names), "", "", spec.population,
                       int(population.sum()), base_rate, note, band_rules.to_dicts(levels))
    info._warnings = notes  # type: ignore[attr-defined]
    return out, info


def _label_spec(cfg: Config, target: str, bundle: Any) -> LabelSpec:
    lab = getattr(bundle, "label", None)
    if lab:
        return LabelSpec(target, timedelta(days=lab["horizon_days"]), lab["population"],
                         timedelta(days=lab["active_window_days"]))
    return label_spec(cfg, target)


def _health_view(con, segments: list[CompiledSegment]) -> None:
    """``health``: per segment, size, sendable, holdout and coverage of this run."""
    meta = pd.DataFrame([{"segment": s.name, "kind": s.definition.kind, "owner": s.definition.owner}
                         for s in segments])
    con.register("segment_meta", meta)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE health AS "
        "SELECT m.segment, m.kind, m.owner, count(k.customer_id) AS size, "
        "count(*) FILTER (WHERE k.sendable) AS sendable, count(*) FILTER (WHERE k.holdout) AS holdout, "
        "any_value(c.coverage) AS coverage "
        "FROM segment_meta m LEFT JOIN members k USING (segment) LEFT JOIN (" + coverage_sql(segments) + ") c "
        "USING (segment) GROUP BY m.segment, m.kind, m.owner")


def write_exports(con, segments: list[CompiledSegment], score_cols: list[str], folder: Path, formats: list[str],
                  as_of: datetime, run_id: str) -> dict[str, dict[str, int]]:
    """Per segment: sendable members (``<name>.<fmt>``) and the holdout (``<name>.holdout.<fmt>``);
    suppression segments under ``suppressions/``. Plus ``manifest.json``."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "suppressions").mkdir(parents=True)
    cols = "segment, customer_id, " + ", ".join(score_cols)
    counts: dict[str, dict[str, int]] = {}
    files = []
    for s in segments:
        parts = ({"suppressed": ("suppressions/" + s.name, "true")} if not s.sendable_kind else
                 {"sendable": (s.name, "sendable"), "holdout": (s.name + ".holdout", "holdout")})
        counts[s.name] = {}
        for what, (stem, cond) in parts.items():
            query = f"SELECT {cols} FROM members WHERE segment = '{s.name}' AND {cond} ORDER BY customer_id"
            counts[s.name][what] = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0][0]
            for fmt in formats:
                path = folder / f"{stem}.{fmt}"
                option = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
                con.execute(f"COPY ({query}) TO '{path}' ({option})")
                files.append(str(path.relative_to(folder)))
    manifest = {"run_id": run_id, "as_of": as_of.isoformat(), "files": files, "rows": counts,
                "note": "sendable files hold members with email consent outside the holdout; "
                        "holdout files must not be contacted; suppressions/ lists who is suppressed and why"}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return counts


def _swap_in(tmp_dir: Path, export_dir: Path) -> None:
    """Replace the exports folder by the new one (rename; the old one is removed after)."""
    old = export_dir.parent / f".{export_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if export_dir.exists():
        export_dir.rename(old)
    tmp_dir.rename(export_dir)
    shutil.rmtree(old, ignore_errors=True)


def _set_mlflow_run(ws: Workspace, run_id: str, mlflow_run: str | None) -> None:
    import duckdb

    con = duckdb.connect(str(ws.db_path))
    try:
        con.execute("UPDATE scoring_runs SET mlflow_run_id = ? WHERE run_id = ?", [mlflow_run, run_id])
    finally:
        con.close()


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
    return registry.log_run(experiment=cfg.scoring.experiment, run_name=f"score-{export_label(record['as_of'])}",
                            params=params, metrics=metrics, tags=tags,
                            tables={"segment_health.csv": health})
