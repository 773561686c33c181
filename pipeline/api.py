"""The public Python API, for notebooks and scripts: review models and scoring runs without the CLI.

    from pipeline.api import Project
    p = Project()                      # the project of the current folder (or DYNSEG_PROJECT)
    p.model("purchase")                # card, metrics, bands of the champion
    p.features("2026-11-27")           # customer_features as of a date (computed now)
    p.feature_catalog(frame)           # each column's group and meaning
    p.training_set("churn")            # the snapshots a model trains on (computed now)
    p.model_inputs(training_set)       # the columns train learns from, as the model sees them
    feature_signal(training_set)       # each feature's univariate AUC per snapshot role
    cutoff_label(ts.as_of.iloc[0])     # a snapshot's cutoff instant as the date --as-of takes
    p.shap_importance("purchase")      # mean |SHAP| per feature, from the training run
    p.runs()                           # scoring runs
    p.segments()                       # health of the latest run
    p.explain("c0000007", "churn")     # why this customer got this score
    p.segment_drivers("likely_buyers") # what sets the segment apart

Everything here reads what the commands wrote (the workspace and the MLflow registry; reached
only by the methods about models); nothing is recomputed that a run stored, except features as of
a run's date for explanations (and the features and training sets asked for, which are computed
from the configured data on each call and written nowhere).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from features.asof import cutoff_label  # noqa: F401  (part of this API: a snapshot's cutoff as the date --as-of takes)
from features.training_set import feature_signal  # noqa: F401  (part of this API)
from pipeline import runs
from pipeline.config import Config, load_config
from pipeline.workspace import Workspace


#: The columns a training set adds to the features (features/training_set.md)
_TRAINING_COLUMNS = {
    "snapshot": ("training set", "the snapshot's role: test (out of time), valid or train"),
    "label": ("training set", "the target's label as of the snapshot: 1 or 0"),
}


@dataclass
class Project:
    """A dynseg project (a folder with ``configs/``) seen from Python.

    ``folder``: the project's folder, a ``str`` or a ``Path`` (default: ``DYNSEG_PROJECT``, else
    the current folder, as for the CLI); ``profile``: a configuration profile such as ``spark``.
    Making one reads the configuration only: the MLflow registry is reached by the first method
    that needs a model (``model``, ``versions``, ``shap_importance``, ``explain``...), so features
    and training sets work without a tracking server and write nothing to the workspace.
    """

    folder: Path | str | None = None
    profile: str | None = None
    config: Config = field(init=False, repr=False)  # the whole configuration: thousands of characters

    def __post_init__(self) -> None:
        if self.folder is not None:
            self.folder = Path(self.folder).expanduser()  # Project("~/shop") as well as Project(Path(...))
        self.config = load_config(self.folder, self.profile)
        self._connected = False

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.config.workspace)

    def _registry(self):
        """The registry module, connected to this project's MLflow on first use."""
        from models import registry

        if not self._connected:
            registry.connect(self.workspace.tracking_uri(self.config.settings.tracking_uri), create=False)
            self._connected = True
        return registry

    # -- models -----------------------------------------------------------------------------
    def model(self, target: str, version: str | int | None = None) -> dict:
        """Card, test metrics and baselines, bands and tags of a version (default: the champion)."""
        registry = self._registry()
        return registry.version_details(registry.model_name(target, self.config.training.registry.names), version)

    def versions(self) -> pd.DataFrame:
        """Every registered version of every model: aliases, status and test metrics (``dynseg models list``).
        ``test_cutoff`` is the test snapshot's cutoff as stored, an instant at midnight UTC (``2026-08-01``:
        the start of that day); ``test_as_of`` is the same cutoff as ``models list`` shows it and
        ``--as-of`` or :meth:`features` take it: the day whose end it is (``2026-07-31``)."""
        from features.asof import cutoff_label

        from models import registry

        try:
            found = self._registry().list_versions()
        except registry.NoStore:  # nothing trained yet: no rows, and no store created to say so
            found = pd.DataFrame(columns=registry.LIST_COLUMNS)
        found.insert(found.columns.get_loc("test_cutoff") + 1, "test_as_of",
                     [cutoff_label(c) if c else "" for c in found.test_cutoff])
        return found

    def shap_importance(self, target: str, version: str | int | None = None) -> pd.DataFrame:
        """Mean |SHAP| per feature (log-odds and probability points) on the version's test sample."""
        return self._run_csv(target, version, "shap/mean_abs_shap.csv")

    def run_artifact(self, target: str, path: str, version: str | int | None = None) -> Path:
        """A local copy of a training-run artifact (e.g. ``plots/shap_beeswarm.png``)."""
        return self._registry().download_run_artifact(self.model(target, version)["run_id"], path)

    def _run_csv(self, target: str, version, path: str) -> pd.DataFrame:
        return pd.read_csv(self.run_artifact(target, path, version))

    # -- features and training data -------------------------------------------------------------
    def features(self, as_of: str | date | datetime, engine: str | None = None) -> pd.DataFrame:
        """``customer_features`` as of ``as_of``, as ``dynseg features build`` computes them,
        returned instead of written.

        ``as_of``: a date (``"2026-11-27"`` or a ``datetime.date``) means the end of that day, UTC;
        a datetime is that instant (``pd.Timestamp("2026-11-27")`` is the *start* of the day), and
        a naive one is UTC; a ``np.datetime64`` with a time is an instant, a numpy day a date. The run's warnings (stale data, repeated event
        ids dropped, customers without a profile) are issued as Python warnings and kept in
        ``frame.attrs["warnings"]``; a data error raises :class:`pipeline.jobs.data.DataError`
        (every problem in its message and its ``report``), a freshness check set to refuse raises
        :class:`features.freshness.StaleDataError`, as the command refuses."""
        from features.asof import parse_as_of
        from pipeline.jobs.features import build_features_job

        run = build_features_job(self.config, parse_as_of(as_of), engine)
        return _with_warnings(run.frame, run.warnings)

    def feature_catalog(self, columns: pd.DataFrame | list[str] | None = None) -> pd.DataFrame:
        """The feature catalog (``dynseg features describe``): column, group and meaning. Given a
        frame of features or training rows (or its column names), one row per column it holds, in
        its order, each name under its catalog row (``n_purchase_30d`` under ``n_<role>_<w>d``): a
        profile attribute in group ``profile``, a training set's ``snapshot`` and ``label`` in
        ``training set``, a name the feature set cannot have in ``other``."""
        from features.customer_features import catalog, describe_column

        if columns is None:
            return pd.DataFrame(catalog(), columns=["column", "group", "meaning"])
        names = list(columns.columns) if isinstance(columns, pd.DataFrame) else list(columns)
        listed = self.config.features.categorical_attributes
        rows = []
        for name in names:
            found = describe_column(name) or _TRAINING_COLUMNS.get(name)
            if found is None:
                # with auto, an attribute is a column of the customers source (a typo is none)
                attribute = name in listed if listed != "auto" else name in self._customer_columns()
                found = ("profile", "categorical profile attribute as it is now, as text") if attribute else \
                    ("other", "not a column of customer_features or of a training set")
            rows.append((name, *found))
        return pd.DataFrame(rows, columns=["column", "group", "meaning"])

    def _customer_columns(self) -> set[str]:
        """The customers source's columns, as dynseg reads them (``columns:`` mappings applied)."""
        if not hasattr(self, "_customer_cols"):
            from features.engine import connect
            from features.sources import SourceError, drop_copies, register_source

            spec = self.config.source_specs().get("customers")
            self._customer_cols: set[str] = set()
            if spec is not None:
                con = connect()
                try:
                    self._customer_cols = set(register_source(con, "customers", spec, self.config.project_dir).columns)
                except SourceError:
                    pass  # an unreadable source: validation says why, where it runs
                finally:
                    con.close()
                    drop_copies(con)
        return self._customer_cols

    def training_set(self, target: str, as_of: str | date | datetime | None = None,
                     horizon: str | int | None = None) -> pd.DataFrame:
        """The snapshots ``dynseg train`` fits on: customer_id, as_of, snapshot (test, valid,
        train), the features and the label; computed now from the configured data, as ``dynseg
        features training-set`` does (features/training_set.md).

        ``target``: ``"purchase"`` or ``"churn"``. ``as_of`` (read as for :meth:`features`) limits
        it to the data before that instant; by default the data's end. ``horizon``: the label
        window, ``"30d"``, ``"8w"`` or a number of days (default: configs/labels.yaml). Warnings
        (stale data, label windows cut at the newest event, too short a history...) are issued as
        Python warnings and kept in ``frame.attrs["warnings"]``. Not every column is a model input:
        :meth:`model_inputs` gives the ones ``train`` learns from and the matrix it sees."""
        from features.asof import parse_as_of
        from pipeline.jobs.features import training_set_job

        import numbers

        if isinstance(horizon, numbers.Integral) and not isinstance(horizon, bool):  # np.int64 too
            horizon = f"{int(horizon)}d"
        elif horizon is not None and not isinstance(horizon, str):
            from features.asof import BadValue

            raise BadValue(f"horizon {horizon!r} is a {type(horizon).__name__}; expected a number of days (30) "
                           "or a duration such as '30d' or '8w'")
        run = training_set_job(self.config, target, parse_as_of(as_of) if as_of is not None else None, horizon)
        return _with_warnings(run.frame, run.warnings)

    def model_inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The columns of a feature or training frame that ``dynseg train`` learns from (every
        feature but the keys, ``snapshot``, ``label`` and ``exclude_features`` of
        configs/training.yaml, such as ``email_consent``; of a whole training set, also those that
        equal another column on every row, of which train keeps one), as the model sees them: text
        attributes as pandas categories (those found in ``frame``), flags and counts as float64
        (null as NaN). Ready for LightGBM or scikit-learn's HistGradientBoosting
        (``categorical_features="from_dtype"``): ``X = p.model_inputs(ts)``, then its train rows."""
        from models.estimator import PropensityModel
        from pipeline.jobs.train import model_inputs, repeated_inputs

        columns = model_inputs(self.config, list(frame.columns))
        if "snapshot" in frame.columns and {"train", "valid", "test"} <= set(frame.snapshot.unique()):
            repeats = repeated_inputs(frame, columns)  # as train leaves them out: decided on every snapshot
            columns = [c for c in columns if c not in repeats]
        X = frame[columns]
        m = PropensityModel()
        m._learn_schema(X)
        return m._matrix(X)

    # -- scoring runs -------------------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        """Every scoring run, oldest first: ``date`` as the CLI shows it (``--as-of`` 2026-11-27 is
        the instant ``as_of`` 2026-11-28 00:00, the end of that day)."""
        from features.asof import as_of_label

        import json

        found = runs.read(self.workspace.db_path, "SELECT run_id, as_of, engine, n_customers, previous_run_id, "
                                                  "mlflow_run_id, export_dir, models FROM scoring_runs ORDER BY as_of")
        if not found.empty:
            found.insert(1, "date", [as_of_label(t.to_pydatetime()) for t in found.as_of])
        # which model scored each run, "purchase: dynseg-purchase version 3; churn: ...": the record
        # held it only as JSON in the workspace
        found["models"] = ["; ".join(f"{m['target']}: {m['name']} version {m['version']}" for m in json.loads(text))
                           if isinstance(text, str) else "" for text in found.models]
        return found

    def _run(self, run_id: str | None, as_of=None, needs: str | None = None):
        """The run (by id, by ``as_of``, read as for :meth:`features`, or the latest); with ``needs``,
        refused if its per-customer rows were pruned."""
        from features.asof import parse_as_of
        from pipeline.jobs.monitor import find_run

        if run_id is not None and as_of is not None:
            raise ValueError("name a run by run_id or by as_of, not both")
        run = find_run(self.config, run_id, parse_as_of(as_of) if as_of is not None else None)
        if needs:
            runs.require_rows(self.workspace.db_path, run, needs)
        return run

    def _run_id(self, run_id: str | None, needs: str | None = None, as_of=None) -> str:
        return self._run(run_id, as_of, needs).run_id

    def segments(self, run_id: str | None = None, as_of: str | date | datetime | None = None) -> pd.DataFrame:
        """Segment health of a run (default: the latest; or the run ``as_of`` a date, as ``--as-of``)."""
        return runs.read(self.workspace.db_path, "SELECT * FROM segment_health WHERE run_id = ? ORDER BY segment",
                         [self._run_id(run_id, as_of=as_of)])

    def segment_history(self, name: str) -> pd.DataFrame:
        """The segment's health in every run, oldest first: size, sendable, holdout, entered, exited, stayed.
        A name neither in configs/segments.yaml nor in any run raises ``ValueError`` (with the closest name);
        a segment defined but not scored yet has no rows."""
        db = self.workspace.db_path
        found = runs.read(db, "SELECT * FROM segment_health WHERE segment = ? ORDER BY as_of", [name])
        if found.empty and (error := runs.unknown_segment(db, list(self.config.segments.by_name()), name)):
            raise error
        return found

    def members(self, name: str, run_id: str | None = None, as_of: str | date | datetime | None = None) -> pd.DataFrame:
        """The segment's members in a run (default: the latest; or the run ``as_of`` a date): holdout, consent,
        sendable, scores and bands. A segment the run does not have raises ``ValueError``."""
        run = self._run(run_id, as_of, "its members")
        found = runs.read(self.workspace.db_path, "SELECT * FROM segment_members WHERE run_id = ? AND segment = ?",
                          [run.run_id, name])
        if found.empty:
            runs.require_segment(self.workspace.db_path, run, name)
        return found

    def deltas(self, run_id: str | None = None, as_of: str | date | datetime | None = None) -> pd.DataFrame:
        """Who entered and who exited each segment in a run (default: the latest), against the run before."""
        return runs.read(self.workspace.db_path, "SELECT * FROM segment_deltas WHERE run_id = ?",
                         [self._run_id(run_id, "its entered/exited members", as_of)])

    def reasons(self, customer_id: str, run_id: str | None = None,
                as_of: str | date | datetime | None = None) -> pd.DataFrame:
        """A customer's stored reason codes in a run (default: the latest), per target, strongest first
        (kept for sendable members; none for a customer scored but not sent to). A customer the run did
        not score raises ``ValueError``, as ``dynseg explain`` does."""
        db = self.workspace.db_path
        run = self._run(run_id, as_of, "its reason codes")
        found = runs.read(db, "SELECT * FROM customer_reasons WHERE run_id = ? AND customer_id = ? ORDER BY target, rank",
                          [run.run_id, customer_id])
        if found.empty and runs.read(db, "SELECT 1 FROM customer_scores WHERE run_id = ? AND customer_id = ?",
                                     [run.run_id, customer_id]).empty:
            from features.asof import as_of_label
            from pipeline.jobs.explain import _canonical_hint

            raise ValueError(f"customer {customer_id!r} was not scored in run {run.run_id} (as of "
                             f"{as_of_label(run.as_of)}){_canonical_hint(self.config, customer_id, run.as_of.to_pydatetime())}")
        return found

    # -- explanations --------------------------------------------------------------------------
    def explain(self, customer_id: str, target: str | None = None, run_id: str | None = None,
                version: str | int | None = None, as_of: str | date | datetime | None = None):
        """One :class:`pipeline.jobs.explain.Explanation` per model (waterfall PNG included), in a run
        (default: the latest; or the run ``as_of`` a date); with ``version`` (and ``target``), that
        version of the model instead of the one the run used."""
        from pipeline.jobs.explain import explain_customer

        return explain_customer(self.config, customer_id, target, self._run_id(run_id, as_of=as_of),
                                version=None if version is None else str(version))

    def segment_drivers(self, name: str, run_id: str | None = None,
                        as_of: str | date | datetime | None = None) -> pd.DataFrame:
        """Per model, the features that most set the segment apart in a run (default: the latest; or
        the run ``as_of`` a date): the mean push in probability points inside the segment minus over
        everyone scored. A segment the run does not have raises ``ValueError``."""
        from pipeline.jobs.explain import segment_drivers

        return segment_drivers(self.config, name, self._run_id(run_id, as_of=as_of))


def _with_warnings(frame: pd.DataFrame, found: list[str]) -> pd.DataFrame:
    """``frame`` with the run's warnings in ``attrs["warnings"]``, each also issued as a Python warning."""
    frame.attrs["warnings"] = list(found)
    for w in found:
        warnings.warn(w, stacklevel=3)
    return frame
