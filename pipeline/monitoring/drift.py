"""Data drift: the features and scores of a run against the model's training reference.

Evidently (0.7, ``DataDriftPreset`` with ``include_tests=True``) decides column by column whether
the current values moved away from the reference. Unless a method is configured it picks one per
column: with more than 1,000 reference rows, the normed Wasserstein distance for numbers (drifted
at 0.1 reference standard deviations or more) and the Jensen-Shannon distance for categories and
for numbers with at most five distinct values (drifted at 0.1 or more); with fewer rows, p-values
(K-S, chi-square, Z-test; drifted below 0.05). The verdict of each column is Evidently's own test
result, so the JSON summary and the HTML report never disagree.

Column types are declared, never inferred: Evidently's automatic typing silently drops pandas
nullable integer and boolean columns, so numbers are passed as float64 (missing = NaN) and
categories as text, with missing values as their own ``(missing)`` category so that a change in
missingness counts as drift. A numeric column without any value on one side cannot be tested; it
counts as drifted when the other side has values.

A run alarms (exit 3 for schedulers) when the share of drifted columns exceeds
``max_drift_share``, or when any key column drifted (a feature the business watches, or a score, as
``key_columns`` in configs/monitoring.yaml lists them; scores are not key columns by default).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.workspace import write_atomic

MISSING = "(missing)"
COLUMNS = ["column", "kind", "method", "score_kind", "score", "threshold", "drifted",
           "missing_reference", "missing_current", "note"]


#: the column kinds each stattest can weigh (Evidently refuses the others: "Stattest ks isn't
#: applicable to feature of type cat"); a configured method tests these, Evidently picks for the rest
METHOD_KINDS = {
    "psi": ("numeric", "categorical"), "jensenshannon": ("numeric", "categorical"),
    "kl_div": ("numeric", "categorical"), "ks": ("numeric",), "wasserstein": ("numeric",),
    "chisquare": ("categorical",), "z": ("categorical",),
}


@dataclass(frozen=True)
class DriftThresholds:
    """When drift is an alarm, and how Evidently tests each column."""

    #: alarm when more than this share of the compared columns drifted (the dataset test in
    #: Evidently's HTML, which gets the same number, already fails when the share equals it)
    max_drift_share: float = 0.3
    #: Evidently stattest (e.g. "psi", "ks") for every column of the kinds it tests (METHOD_KINDS);
    #: None lets Evidently pick per column, as it does for the columns of the other kind
    method: str | None = None
    #: drift threshold for that method; None keeps the method's own default
    column_threshold: float | None = None

    def applies_to(self, kind: str) -> bool:
        """Whether the configured method tests columns of ``kind`` ("numeric" or "categorical")."""
        return self.method is not None and kind in METHOD_KINDS.get(self.method, ("numeric", "categorical"))

    def __post_init__(self):
        if not 0 <= self.max_drift_share <= 1:
            raise ValueError(f"max_drift_share must be between 0 and 1; found {self.max_drift_share}")


@dataclass
class DriftResult:
    """Per-column drift verdicts of one comparison, and whether they amount to an alarm."""

    #: one row per compared column, in the order given (see ``COLUMNS``)
    columns: pd.DataFrame
    thresholds: DriftThresholds
    key_columns: list[str]
    #: rows compared per side after sampling, and before it
    rows: dict[str, int]
    snapshot: Any = field(default=None, repr=False)  # the Evidently snapshot (for the HTML report)

    @property
    def drifted(self) -> list[str]:
        """The drifted columns, most drifted first (how far past its threshold: a distance over it,
        a p-value under it), so the one that matters leads the alarm (it sat in catalog order,
        monetary_mean at 30 times its threshold among columns just over theirs)."""
        d = self.columns[self.columns["drifted"].astype(bool)]
        if d.empty:
            return []
        score, threshold = d["score"].astype(float), d["threshold"].astype(float)
        past = (score / threshold).where(d["score_kind"] != "p_value", threshold / score.clip(lower=1e-300))
        return d.assign(_past=past.fillna(float("inf"))).sort_values("_past", ascending=False, kind="stable")["column"].tolist()

    @property
    def drift_share(self) -> float:
        return len(self.drifted) / len(self.columns) if len(self.columns) else 0.0

    @property
    def reasons(self) -> list[str]:
        """Why the run alarms, one sentence per reason (empty: no alarm)."""
        out = []
        t = self.thresholds
        if self.drift_share > t.max_drift_share:
            # (percent to a tenth: 19 of 63 read "share 0.30 > max_drift_share 0.30")
            out.append(f"{len(self.drifted)} of {len(self.columns)} columns drifted (share {self.drift_share:.1%}, over "
                       f"max_drift_share {t.max_drift_share:.1%}): {', '.join(self.drifted)}")
        rows = self.columns.set_index("column")
        for c in self.key_columns:
            if rows.at[c, "drifted"]:
                r = rows.loc[c]
                how = r["note"] or f"{r['method']} {r['score']:.3g}, threshold {r['threshold']:.3g}"
                out.append(f"key column {c!r} drifted ({how})")
        return out

    @property
    def alarm(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> dict:
        """JSON-ready: verdicts, the alarm and its reasons, thresholds and the per-column table."""
        from evidently import __version__ as evidently_version

        records = json.loads(self.columns.to_json(orient="records"))  # NaN -> null, numpy -> plain
        return {
            "alarm": self.alarm, "reasons": self.reasons, "drift_share": self.drift_share,
            "drifted_columns": self.drifted, "n_columns": len(self.columns), "key_columns": self.key_columns,
            "thresholds": asdict(self.thresholds), "rows": self.rows, "columns": records,
            "evidently_version": evidently_version,
        }

    def save(self, folder: Path, stem: str = "drift") -> dict[str, Path]:
        """Write ``<stem>.html`` (the Evidently report) and ``<stem>.json`` (the summary), each atomically."""
        folder = Path(folder)
        # Snapshot.save_html() silently writes nothing when given a pathlib.Path; render the string instead
        html = _with_verdict(self.snapshot.get_html_str(as_iframe=False), self)
        return {
            "html": write_atomic(folder / f"{stem}.html", html.encode("utf-8")),
            "json": write_atomic(folder / f"{stem}.json", json.dumps(self.summary(), indent=2).encode()),
        }


def _with_verdict(html: str, result: DriftResult) -> str:
    """Evidently's HTML with dynseg's verdict on top: its own "Dataset Drift is NOT detected" counts
    drifted columns only, and read alone it contradicted a key-column alarm of `monitor` (exit 3)."""
    from html import escape

    t = result.thresholds
    share = (f"{len(result.drifted)} of {len(result.columns)} columns drifted (share {result.drift_share:.2f}; "
             f"dynseg alarms above max_drift_share {t.max_drift_share:.2f}, or when a key column drifts: "
             f"{', '.join(result.key_columns) or 'none set'})")
    if result.alarm:
        head, colour = "dynseg: drift ALARM", "#b00020"
        body = "".join(f"<li>{escape(r)}</li>" for r in result.reasons)
        body = f"<ul style='margin:6px 0'>{body}</ul>"
    else:
        head, colour, body = "dynseg: no drift alarm", "#1b5e20", ""
    banner = (f"<div id='dynseg-verdict' style='font-family:sans-serif;border:2px solid {colour};padding:10px 14px;"
              f"margin:10px;border-radius:6px'><b style='color:{colour};font-size:1.15em'>{head}</b>{body}"
              f"<div>{escape(share)}. Evidently's own \"Dataset Drift\" line below counts drifted columns only, "
              "against its own share; the verdict above is the one <code>dynseg monitor</code> acts on.</div></div>")
    at = html.find(">", html.lower().find("<body")) + 1 if "<body" in html.lower() else 0
    return html[:at] + banner + html[at:]


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
    key_columns: list[str], thresholds: DriftThresholds, max_rows: int = 20_000, seed: int = 0,
) -> DriftResult:
    """Compare ``current`` with ``reference`` on the declared columns with Evidently's DataDriftPreset.

    Each side is capped at ``max_rows`` rows by a random sample (fixed ``seed``), which keeps the
    report fast and leaves distances unchanged up to sampling noise.
    """
    numeric, categorical, key_columns = list(numeric), list(categorical), list(key_columns)
    _check_columns(reference, current, numeric, categorical, key_columns)
    rows = {"reference": min(len(reference), max_rows), "current": min(len(current), max_rows),
            "reference_total": len(reference), "current_total": len(current)}
    ref = _typed(_sample(reference, max_rows, seed), numeric, categorical, "reference")
    cur = _typed(_sample(current, max_rows, seed), numeric, categorical, "current")
    # a numeric column with no value on a side cannot be tested; Evidently raises on it
    empty = {c: (ref[c].isna().all(), cur[c].isna().all()) for c in numeric}
    tested_num = [c for c in numeric if not any(empty[c])]
    tested = tested_num + categorical
    if not tested:
        raise ValueError("drift: no column has values in both reference and current; nothing to compare")
    swapped = _unseen_values(ref, cur, tested_num, categorical, thresholds)
    snapshot = _run_evidently(ref[tested], cur[tested], tested_num, categorical, thresholds,
                              {c: "jensenshannon" for c in swapped})
    verdicts = _verdicts(snapshot)
    table = []
    for c in numeric + categorical:
        kind = "numeric" if c in numeric else "categorical"
        miss_ref, miss_cur = _missing_share(ref[c], kind), _missing_share(cur[c], kind)
        if c in verdicts:
            v = verdicts[c]
            table.append([c, kind, v["method"], "p_value" if "p_value" in v["method"] else "distance", v["score"],
                          v["threshold"], v["drifted"], miss_ref, miss_cur, swapped.get(c, "")])
        else:
            ref_empty, cur_empty = empty[c]
            side = "reference and current" if ref_empty and cur_empty else "reference" if ref_empty else "current"
            table.append([c, kind, "empty", "", math.nan, math.nan, ref_empty != cur_empty, miss_ref, miss_cur,
                          f"no values in {side}"])
    frame = pd.DataFrame(table, columns=COLUMNS).astype({"drifted": bool})
    return DriftResult(frame, thresholds, key_columns, rows, snapshot)


def _check_columns(reference, current, numeric, categorical, key_columns) -> None:
    both = set(numeric) & set(categorical)
    if both:
        raise ValueError(f"drift: columns declared both numeric and categorical: {sorted(both)}")
    declared = numeric + categorical
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in declared if c not in frame.columns]
        if missing:
            raise ValueError(f"drift: {name} lacks declared columns {missing}; it has {len(frame.columns)} "
                             f"columns, e.g. {list(frame.columns[:8])}. Declare only columns both frames hold.")
        if frame.empty:
            raise ValueError(f"drift: {name} has 0 rows; a drift report needs rows on both sides")
    unknown = [c for c in key_columns if c not in declared]
    if unknown:
        raise ValueError(f"drift: key columns {unknown} are not among the declared numeric or categorical columns")


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=max_rows, random_state=seed) if len(frame) > max_rows else frame


def _typed(frame: pd.DataFrame, numeric, categorical, side: str) -> pd.DataFrame:
    out = {}
    for c in numeric:
        out[c] = _as_float(frame[c], c, side)
    for c in categorical:
        s = frame[c].astype(object)
        out[c] = s.where(s.notna(), MISSING).map(str).astype(object)
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def _as_float(s: pd.Series, column: str, side: str) -> pd.Series:
    """float64 with NaN for missing, from any numeric, nullable integer or (nullable) boolean column."""
    if pd.api.types.is_bool_dtype(s) or s.dtype == object:
        s = s.astype(object).where(s.notna(), None)
        s = s.map(lambda v: float(v) if isinstance(v, (bool, np.bool_)) else v)
    try:
        return pd.Series(pd.to_numeric(s, errors="raise"), index=s.index).astype("Float64").astype("float64")
    except (TypeError, ValueError):
        bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
        raise ValueError(f"drift: {side} column {column!r} is declared numeric but holds {len(bad)} non-numeric "
                         f"value(s) (first: {bad.iloc[0]!r}); declare it categorical") from None


def _missing_share(s: pd.Series, kind: str) -> float:
    return float((s == MISSING).mean() if kind == "categorical" else s.isna().mean())


#: Evidently's rule: up to this many reference rows, p-value tests (chi-square for a few values)
SMALL_REFERENCE = 1000


def _unseen_values(ref: pd.DataFrame, cur: pd.DataFrame, numeric, categorical, t: DriftThresholds) -> dict[str, str]:
    """Column -> note, for the columns Evidently would test by chi-square (its choice for a small
    reference: categories, and numbers with 3 to 5 distinct values) whose current values include
    one the reference never had. Chi-square expects 0 such rows there, so a single one gives
    p = 0 (drifted) and a divide-by-zero warning: 2 customers of 1,004 with 4 refunds, where the
    reference's most was 3, made `n_refund` drift. These columns take the Jensen-Shannon distance
    instead, which Evidently itself uses for a larger reference. A configured method is kept on
    the columns it tests."""
    if len(ref) > SMALL_REFERENCE:
        return {}
    out = {}
    left = [*([] if t.applies_to("numeric") else numeric), *([] if t.applies_to("categorical") else categorical)]
    for c in left:
        r, k = ref[c].dropna(), cur[c].dropna()
        n_values = pd.concat([r, k]).nunique()
        if n_values <= 2 or (c in numeric and n_values > 5):
            continue  # Evidently's z-test, K-S: a new value is no division by zero there
        new = k[~k.isin(set(r))]
        if len(new):
            shown = ", ".join(f"{v!r}" if isinstance(v, str) else f"{v:g}" for v in new.value_counts().index[:3])
            out[c] = (f"{len(new):,} current row{'s' if len(new) != 1 else ''} with a value the reference never had "
                      f"({shown}): Jensen-Shannon distance, since chi-square cannot weigh a value it expects 0 times")
    return out


def _run_evidently(ref: pd.DataFrame, cur: pd.DataFrame, numeric, categorical, t: DriftThresholds,
                   per_column_method: dict[str, str] | None = None):
    # imported here: evidently takes seconds to import and only monitoring needs it
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    # the method, and its threshold, go to the kinds of column it can test; Evidently picks for the rest
    num = {"num_method": t.method, "num_threshold": t.column_threshold} if t.applies_to("numeric") else {}
    cat = {"cat_method": t.method, "cat_threshold": t.column_threshold} if t.applies_to("categorical") else {}
    preset = DataDriftPreset(columns=numeric + categorical, drift_share=t.max_drift_share, **num, **cat,
                             per_column_method=per_column_method or None)
    report = Report([preset], include_tests=True)
    return report.run(Dataset.from_pandas(cur, data_definition=definition),
                      Dataset.from_pandas(ref, data_definition=definition))


#: a method asked for by name is reported by Evidently's name for it, as the methods it picks are
#: (the stattests' display_name; "p_value" in it marks a p-value, below the threshold = drift)
_METHOD_NAMES = {
    "psi": "PSI", "ks": "K-S p_value", "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance", "kl_div": "Kullback-Leibler divergence",
    "chisquare": "chi-square p_value", "z": "Z-test p_value",
}


def _verdicts(snapshot) -> dict[str, dict]:
    """Column -> method, score, threshold, drifted, from the ValueDrift metrics and their tests."""
    d = snapshot.dict()
    by_id, out = {}, {}
    for m in d["metrics"]:
        cfg = m["config"]
        if cfg.get("type", "").endswith(":ValueDrift"):
            by_id[m["id"]] = cfg["column"]
            method = str(cfg["method"])
            out[cfg["column"]] = {"method": _METHOD_NAMES.get(method, method), "score": float(m["value"]),
                                  "threshold": float(cfg["threshold"]), "drifted": None}
    for t in d["tests"]:
        column = by_id.get(t["metric_config"]["metric_id"])
        if column is not None:
            status = str(getattr(t["status"], "value", t["status"]))
            out[column]["drifted"] = status == "FAIL"
    unjudged = [c for c, v in out.items() if v["drifted"] is None]
    if unjudged:
        raise RuntimeError(f"Evidently returned no drift test for columns {unjudged}; was include_tests=True dropped?")
    return out

