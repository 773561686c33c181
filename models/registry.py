"""The one place that talks to MLflow: log a training run, register it (gated), promote by alias.

A trained model travels as one :class:`ModelBundle` (estimator + calibrator + label definition +
data window + bands + test metrics), pickled inside a pyfunc model, so whoever loads
``models:/<name>@champion`` gets calibrated probabilities without any other file. The pickle
refers to ``models.estimator`` by name: load models where dynseg is installed.

Registry vocabulary (MLflow aliases, not the deprecated stages):

- a **version** is registered only if it passed the validation criteria (or was forced; the
  version tag ``validation_status`` says VALIDATED or UNVALIDATED_FORCED; a refused run is tagged
  REJECTED and no version is made);
- alias ``champion`` marks the version the nightly scoring uses, ``previous-champion`` the one
  it replaced, so a rollback is one swap;
- a promotion compares the candidate with the champion on the same out-of-time test snapshot,
  using the test metrics copied into version tags at registration (``test_<metric>``,
  ``test_cutoff``, ``test_rows``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import numbers
import os
import pickle
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import yaml

with warnings.catch_warnings():
    # MLflow imports tqdm.auto, which in a notebook kernel without ipywidgets warns "IProgress not
    # found" in the first cell of a notebook that imports it; dynseg draws no bar through it.
    warnings.filterwarnings("ignore", message="IProgress not found")
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.exceptions import MlflowException
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from features.asof import cutoff_label
from models.estimator import PropensityModel

CHAMPION, PREVIOUS = "champion", "previous-champion"
VALIDATED, FORCED, REJECTED = "VALIDATED", "UNVALIDATED_FORCED", "REJECTED"
DEFAULT_MODEL_NAMES = {"churn": "dynseg-churn", "purchase": "dynseg-purchase"}

#: Pinned into every logged model instead of letting MLflow infer them (inference imports the
#: model in a subprocess and takes tens of seconds). dynseg itself is not on a package index and
#: is recorded in the model metadata instead.
_REQUIREMENTS = ("mlflow", "lightgbm", "scikit-learn", "scipy", "pandas", "numpy", "cloudpickle")
_BUNDLE_FILE, _SUMMARY_FILE, _CARD_FILE = "bundle.pkl", "bundle.json", "model_card.md"
_MAX_TAG = 4900  # tag/description columns are 5000 characters on SQL stores


@dataclass
class ModelBundle:
    """Everything that travels inside the logged model."""

    target: str  # "purchase" | "churn"
    model: PropensityModel
    label_definition: str
    feature_set: str  # e.g. "customer_features@<hash>"
    data_window: dict  # {"first_event": ..., "cutoffs": [...], "test_cutoff": ..., optional "test_rows"}
    bands: list[dict] | None = None  # band levels resolved at training (models.bands.to_dicts)
    label: dict | None = None  # {"target", "horizon_days", "population", "active_window_days"}
    metrics: dict = field(default_factory=dict)  # {"model": {"roc_auc":..,"brier":..}, "baselines": {name: {...}}}

    def test_metrics(self) -> dict[str, float]:
        """The model's metrics on the out-of-time test snapshot."""
        return dict(self.metrics.get("model", {}))

    def summary(self) -> dict:
        """The bundle without the estimator, as JSON-ready data (logged as ``bundle.json``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        out["features"] = list(self.model.features_)
        out["calibration"] = self.model.calibration_method_
        return json.loads(json.dumps(out, default=str))


class RegistryError(RuntimeError):
    """MLflow could not do what was asked; the message names the store, the model and the fix."""


class TrackingUnreachable(RegistryError):
    """The tracking server did not answer: the CLI exits 75 (try again later), not 1."""

    try_later = True


class NoStore(RegistryError):
    """A project's SQLite store that does not exist yet: nothing has been trained there. Commands
    that only read the registry say so instead of creating an empty store."""


class PromotionRefused(RegistryError):
    """The promotion gate said no; ``--force`` (recorded on the version) overrides it."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    validation_status: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class PromotionResult:
    name: str
    version: str  # the champion now
    previous: str | None  # the champion before (now previous-champion), if any
    forced: bool
    message: str


# -- connection and errors --------------------------------------------------------------------
class _QuietMlflow(logging.Filter):
    """MLflow's INFO chatter (table creation, uv detection) and two notices are noise on a CLI:
    CloudPickle's applies to untrusted pickles, not to models we logged ourselves; spark_udf's
    ``env_manager="local"`` one is what dynseg wants, Spark's workers running this very environment."""

    _NOTICES = ("CloudPickle", 'env_manager="local"')

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or (
            record.levelno >= logging.WARNING and not any(n in record.getMessage() for n in self._NOTICES)
        )


def _quiet() -> None:
    for name in ("mlflow", "alembic"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietMlflow) for f in logger.filters):
            logger.addFilter(_QuietMlflow())
        for h in logger.handlers:
            if not any(isinstance(f, _QuietMlflow) for f in h.filters):
                h.addFilter(_QuietMlflow())


def connect(tracking_uri: str, timeout: float = 5.0, *, create: bool = True) -> None:
    """Point MLflow at ``tracking_uri`` after checking, quickly, that it answers. A SQLite store
    that does not exist is created, or, with ``create=False`` (commands that only read models),
    :class:`NoStore` is raised: reading an empty registry had left a new 1 MB ``mlflow.db``."""
    _quiet()
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.exists() and not create:
            raise NoStore(f"no MLflow store at {tracking_uri} yet: no model has been trained in this project. Train "
                          "one with `dynseg train purchase` (or churn) and make it champion with `dynseg models "
                          "promote purchase latest`; if the models are in another store, set MLFLOW_TRACKING_URI "
                          "(or tracking_uri: in configs/project.yaml) to it.")
        db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            try:
                _create_store(db)
            except Exception as e:  # noqa: BLE001 - a full disk, a folder it cannot write
                raise RegistryError(f"cannot create MLflow store at {tracking_uri}: {_first_line(e)}. Check the "
                                    "folder (free space, permissions), or set MLFLOW_TRACKING_URI (or tracking_uri: "
                                    "in configs/project.yaml) to a store that works") from e
    # One attempt with a short timeout: an absent server must fail in seconds, not after
    # MLflow's default seven retries with exponential backoff.
    with _env(MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(max(1, timeout))), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"):
        try:
            MlflowClient(tracking_uri).search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - any failure here means "not usable"
            if tracking_uri.startswith("http"):
                what, fix = "cannot reach MLflow tracking server", "Start it (e.g. `mlflow server`)"
            else:
                what, fix = "cannot open MLflow store", "Check the path and its permissions"
            if tracking_uri.startswith("sqlite:///") and re.search(r"already exists|duplicate column|no such "
                                                                    r"(table|column)", str(e)):
                # a store whose creation was stopped (before dynseg created stores whole, see _create_store)
                db = tracking_uri.removeprefix("sqlite:///")
                what, fix = "the MLflow store is half-created", (
                    f"A command was likely stopped while MLflow was creating it. If it never opened, move it away "
                    f"(mv {db} {db}.broken) and run again: a new one is created whole")
            # a server that answered with a status (a wrong path: 404; no access: 401/403) is there, and
            # a retry will not mend its URI: exit 1 with the fix. Exit 75 only when it did not answer
            # (a 4xx with a JSON body reads "INTERNAL_ERROR: Response: ...", not its status: told by _unanswered)
            answered = tracking_uri.startswith("http") and not _unanswered(e)
            if answered:
                what, fix = "the MLflow tracking server answered but refused", (
                    "Check the URI (its host, port and path: a tracking server answers at its root, such as "
                    "http://127.0.0.1:5000) and any credentials (MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD)")
            kind = TrackingUnreachable if tracking_uri.startswith("http") and not answered else RegistryError
            raise kind(f"{what} at {tracking_uri}: {_first_line(e)}. {fix}, or set MLFLOW_TRACKING_URI "
                       "(or tracking_uri: in configs/project.yaml) to a store that works, e.g. "
                       "sqlite:///mlflow.db.") from e
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; undo that, or the environment
    # would outrank the configured URI for every later Workspace.tracking_uri() in this process.
    with _env(MLFLOW_TRACKING_URI=os.environ.get("MLFLOW_TRACKING_URI")):
        mlflow.set_tracking_uri(tracking_uri)
    if tracking_uri.startswith("http"):
        # A server that dies after this check: MLflow's defaults (7 retries, backoff up to 2 minutes,
        # 120 s per request) kept a scoring run retrying for 4 minutes, the workspace locked, before
        # it failed. Two retries and a minute per request (an artifact upload) unless set otherwise.
        for var, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(var, value)


#: MLflow's HTTP settings once a server has answered (each kept when the environment sets it)
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def _create_store(db: Path) -> None:
    """Create the SQLite store ``db`` whole: MLflow builds its tables at a temporary path beside it,
    which is then linked into place. MLflow creates them one migration at a time, and a command
    stopped meanwhile (a SIGTERM 2 s into the first ``train``) left a store that no later command
    could open ("table trace_info already exists"). Linking, not renaming: when another command
    created the store meanwhile, its store is kept and this one dropped."""
    from pipeline.workspace import temp_sibling

    tmp = temp_sibling(db)  # .mlflow.db.PID@HOST~XXXX.tmp: one a killed command left is swept by the next
    try:
        MlflowClient(f"sqlite:///{tmp}").search_experiments(max_results=1)  # every migration, committed
        try:
            os.link(tmp, db)
        except FileExistsError:
            pass  # another command created it meanwhile: its store stands
        except OSError:  # a file system without hard links: a rename, unless one appeared meanwhile
            if not db.exists():
                os.replace(tmp, db)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def tracking_uri() -> str:
    """The store the registry functions talk to (set by :func:`connect`)."""
    return mlflow.get_tracking_uri()


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Environment variables set (None: unset) for the block, restored after it."""
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _first_line(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    line = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    if len(line) <= 400:
        return line
    # cut at a sentence or word, not mid-word ("backend storage loca.")
    cut = line[:400]
    end, space = cut.rfind(". "), cut.rfind(" ")
    return (cut[:end + 1] if end > 200 else cut[:space] if space > 200 else cut) + " …"


@contextlib.contextmanager
def _mlflow(action: str) -> Iterator[None]:
    """Turn MLflow failures into a RegistryError that says what we were doing and where."""
    try:
        yield
    except RegistryError:
        raise
    except (MlflowException, OSError) as e:  # OSError: requests' connection errors, e.g. a server that died mid-upload
        uri = mlflow.get_tracking_uri()
        if uri.startswith("http") and _unanswered(e):  # gone since connect: try again later (exit 75), not a fix
            slow = re.search(r"Read timed out", str(e))
            raise TrackingUnreachable(
                f"{action} failed: the MLflow tracking server at {uri} "
                + (f"did not answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '120')} s "
                   "(MLFLOW_HTTP_REQUEST_TIMEOUT; raise it for a slow store)" if slow else "stopped answering")
                + f" ({_first_line(e)}); run it again once the server is back") from e
        raise RegistryError(f"{action} failed at {uri}: {_first_line(e)}") from e


def _unanswered(e: BaseException) -> bool:
    """Whether ``e`` is a server not answering (refused, reset, timed out), not an answer refusing."""
    import requests

    text = str(e)
    # MLflow retries 408, 429 and 5xx; when the retries run out it says "too many 500 error responses"
    # under "Max retries exceeded": a 500 is the server answering that it is broken (its database, its
    # artifact disk), which no retry mends (exit 1, the status named); 502-504, 429 and 408 are not
    status = re.search(r"too many (\d{3}) error responses", text)
    if status:
        return status.group(1) in ("408", "429", "502", "503", "504")
    if isinstance(e, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    return bool(re.search(r"Max retries exceeded|Connection (refused|reset|aborted)|Read timed out|"
                          r"NewConnectionError|RemoteDisconnected", text))


def _missing(e: MlflowException) -> bool:
    return e.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def model_name(name_or_target: str, names: dict[str, str] | None = None) -> str:
    """A registered model name from a target shorthand (``churn``/``purchase``) or a full name."""
    return {**DEFAULT_MODEL_NAMES, **(names or {})}.get(name_or_target, name_or_target)


def _require_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if not _missing(e):
            raise
        import difflib

        known = sorted(m.name for m in client.search_registered_models())
        shorthands = {n: t for t, n in DEFAULT_MODEL_NAMES.items()}
        if name in shorthands:  # a target's model not trained yet: another target's name is no answer
            target = shorthands[name]
            rejected = _last_rejected(client, target)
            if rejected is not None:  # trained, and refused by the gate: "train one" read as if none was
                when = pd.Timestamp(rejected.info.start_time, unit="ms", tz="UTC")
                raise RegistryError(
                    f"no {target} model yet: the last {target} training (MLflow run {rejected.info.run_id}, "
                    f"{when:%Y-%m-%d %H:%M} UTC) failed its validation criteria and was not registered (tagged "
                    f"REJECTED; `dynseg train {target}` printed which criteria). Train on more data, or register it "
                    f"anyway with `dynseg train {target} --allow-unvalidated` and promote it with `dynseg models "
                    f"promote {target} latest --force --reason TEXT`.") from None
            raise RegistryError(f"no {target} model yet: no registered model named {name!r} at "
                                f"{mlflow.get_tracking_uri()} (known models: {known or 'none'}). Train one with "
                                f"`dynseg train {target}` and make it champion with `dynseg models promote {target} "
                                "latest`, or check MLFLOW_TRACKING_URI (or tracking_uri: in configs/project.yaml).") from None
        close = difflib.get_close_matches(name, [*known, *(shorthands[k] for k in known if k in shorthands)], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RegistryError(f"no registered model named {name!r} at {mlflow.get_tracking_uri()}; {hint}"
                            f"known models: {known or 'none'}. Train and register one with `dynseg train <target>`, "
                            "or check MLFLOW_TRACKING_URI (or tracking_uri: in configs/project.yaml).") from None


def _version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    """Version ``version`` of ``name``: a number, or an alias (``champion``, ``previous-champion``)."""
    _require_model(client, name)
    if not str(version).isdigit():
        mv = _alias(client, name, str(version))
        if mv is None:
            aliases = sorted(client.get_registered_model(name).aliases)
            raise RegistryError(f"model {name!r} has no version {version!r}: expected a version number or one of "
                                f"its aliases ({', '.join(aliases) or 'none yet'})")
        return mv
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if not _missing(e):
            raise
        have = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise RegistryError(f"model {name!r} has no version {version}; versions: {have}") from None


def _last_rejected(client: MlflowClient, target: str):
    """The newest training run of ``target`` that the gate refused, if the tracking store has one."""
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(experiments, f"tags.target = '{target}' AND tags.validation_status = 'REJECTED'",
                                   order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
    except MlflowException:
        return None
    return found[0] if found else None


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if _missing(e) or e.error_code == "INVALID_PARAMETER_VALUE":
            return None
        raise


# -- the pyfunc -------------------------------------------------------------------------------
class DynsegModel(mlflow.pyfunc.PythonModel):
    """Calibrated propensity per row: ``score`` (probability) and ``score_100`` (0-100).

    ``params={"base_rate": r}`` moves the probabilities to base rate ``r`` (prior shift), for a
    scoring date whose expected rate differs from the one the model was calibrated at.
    """

    def load_context(self, context) -> None:
        with open(context.artifacts["bundle"], "rb") as f:
            self.bundle: ModelBundle = pickle.load(f)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return _score(self.bundle.model, model_input, (params or {}).get("base_rate"))


def score(pyfunc_model: Any, frame: pd.DataFrame, base_rate: float | None = None) -> pd.DataFrame:
    """What the loaded model's ``predict(model_input(frame), params={"base_rate": ...})`` returns,
    computed by the model it wraps without MLflow's per-value schema enforcement (seconds on a
    million rows). The model's own input preparation still refuses a frame that lacks a feature."""
    return _score(bundle_of(pyfunc_model).model, frame, base_rate)


def _score(model: PropensityModel, X: pd.DataFrame, base_rate: float | None = None) -> pd.DataFrame:
    if base_rate is not None:
        model = model.with_base_rate(float(base_rate))
    p = model.predict(X)
    return pd.DataFrame({"score": p, "score_100": np.rint(p * 100).astype("int64")}, index=X.index)


def model_input(frame: pd.DataFrame, model: PropensityModel | Any) -> pd.DataFrame:
    """``frame`` cast to the model's input schema: numeric features as float, categorical as text.

    MLflow refuses int64/bool columns where the signature says double ("cannot safely convert"),
    so scoring code passes feature frames through this before ``pyfunc.predict``. ``model`` is a
    PropensityModel or a loaded pyfunc model.
    """
    if isinstance(model, PropensityModel):
        kinds = {c: "string" if c in model.categories_ else "double" for c in model.features_}
    else:
        kinds = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    missing = [c for c in kinds if c not in frame.columns]
    if missing:
        raise ValueError(f"input lacks {len(missing)} feature column(s) the model needs: {missing[:10]}")
    out = {}
    for c, kind in kinds.items():
        s = frame[c]
        if kind == "string":
            s = s.astype("string").astype("object")  # vectorised str() of every present value
            out[c] = s.where(s.notna(), None)
        elif pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            out[c] = s.to_numpy(dtype="float64", na_value=np.nan)
        else:
            s = s.astype("object")
            out[c] = pd.to_numeric(s.where(s.notna(), np.nan), errors="coerce").astype("float64")
    return pd.DataFrame(out, index=frame.index)


def spark_model_input(frame: Any, model: Any) -> Any:
    """:func:`model_input` for a Spark DataFrame: one struct column holding the loaded pyfunc
    ``model``'s inputs by name, numeric features cast to double and categorical ones to string."""
    from pyspark.sql import functions as F

    kinds = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    missing = [c for c in kinds if c not in frame.columns]
    if missing:
        raise ValueError(f"input lacks {len(missing)} feature column(s) the model needs: {missing[:10]}")
    return F.struct(*[F.col(c).cast(kind).alias(c) for c, kind in kinds.items()])


def spark_udf(spark: Any, mv: ModelVersion, base_rate: float | None = None) -> Callable:
    """Version ``mv`` as a Spark UDF over :func:`spark_model_input`: a struct of ``score`` (double)
    and ``score_100`` (long), what the pyfunc's predict returns with ``params={"base_rate": ...}``.

    The model runs in Spark's Python workers with this environment (``env_manager="local"``):
    they must import what this process imports, dynseg's ``models`` included (the bundle is a
    pickle that refers to it), so in local mode they run this interpreter.
    """
    params = None if base_rate is None else {"base_rate": float(base_rate)}
    with _mlflow(f"loading {mv.name} version {mv.version} for Spark"), \
            _env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        return mlflow.pyfunc.spark_udf(spark, f"models:/{mv.name}/{mv.version}", env_manager="local",
                                       result_type="score double, score_100 long", params=params)


def _signature(model: PropensityModel, example: pd.DataFrame) -> ModelSignature:
    # Input types come from the model (numeric -> double, categorical -> string), not from the
    # example's dtypes: an integer column in training that gains a null at scoring time would
    # otherwise be refused by MLflow's schema enforcement in the nightly run.
    inputs = Schema([ColSpec("string" if c in model.categories_ else "double", c) for c in model.features_])
    with warnings.catch_warnings():
        # score_100 is an integer that is never missing; MLflow's hint about integer columns
        # with missing values does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        outputs = infer_signature(example, _score(model, example)).outputs
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("base_rate", "double", None)]))


def _pinned_requirements() -> list[str]:
    return [f"{d}=={importlib.metadata.version(d)}" for d in _REQUIREMENTS]


# -- logging a training run ---------------------------------------------------------------------
def _check_bundle(bundle: ModelBundle) -> None:
    problems = []
    m = bundle.test_metrics()
    for key in ("roc_auc", "brier"):
        if not isinstance(m.get(key), numbers.Real):
            problems.append(f"metrics['model']['{key}'] should be a number; found {m.get(key)!r}")
    if not bundle.data_window.get("test_cutoff"):
        problems.append("data_window['test_cutoff'] is missing (it identifies the test snapshot)")
    if not hasattr(bundle.model, "features_"):
        problems.append("the model is not fitted")
    if problems:
        raise ValueError(f"model bundle for {bundle.target!r} is incomplete: " + "; ".join(problems))


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = str(v)[:6000]
    return out


def _headline_tags(bundle: ModelBundle) -> dict[str, str]:
    """What a registry reader needs without downloading anything; copied onto the version."""
    tags = {"target": bundle.target, "feature_set": bundle.feature_set,
            "test_cutoff": str(bundle.data_window["test_cutoff"])}
    if bundle.data_window.get("test_rows") is not None:
        tags["test_rows"] = str(bundle.data_window["test_rows"])
    tags.update({f"test_{k}": repr(float(v)) for k, v in bundle.test_metrics().items() if isinstance(v, numbers.Real)})
    return tags


def _experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    uri = mlflow.get_tracking_uri()
    home = Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns" if uri.startswith("sqlite:///") else None
    if exp is not None:
        if home is not None and exp.artifact_location.startswith("file:"):
            # a file URI, percent-encoded as Path.as_uri made it (a workspace under "Jane Doe" is
            # stored .../Jane%20Doe/...: read undecoded, it never matched the folder, and a second
            # model could not be trained)
            from urllib.parse import unquote, urlparse

            where = Path(unquote(urlparse(exp.artifact_location).path)).resolve()
            if not where.is_relative_to(home.parent):
                raise RegistryError(
                    f"MLflow experiment {name!r} keeps its files in {where}, outside this workspace "
                    f"({home.parent}): the workspace was moved or copied, and MLflow stores where an "
                    "experiment's files go as an absolute path, so new runs would write into the other "
                    "folder. Move the workspace back; or name new experiments (scoring.experiment in "
                    "configs/scoring.yaml, registry.experiment in configs/training.yaml, experiment in configs/monitoring.yaml), which keep their "
                    f"files here; or move {uri.removeprefix('sqlite:///')} and {home} aside to start the "
                    "MLflow store afresh (the models are then trained again)")
        return exp.experiment_id
    location = None
    if home is not None:
        # Keep artifacts beside the database (the workspace), not in ./mlruns of wherever
        # the command happened to run.
        location = (home / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # created concurrently by another run
        if exp is None:
            raise
        return exp.experiment_id


def _log_file(path: Path, dest: str) -> None:
    """Log ``path`` at run-relative ``dest`` (e.g. ``plots/lift.png``)."""
    dest_path = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / dest_path.name
        shutil.copyfile(path, local)
        parent = str(dest_path.parent)
        mlflow.log_artifact(str(local), artifact_path=None if parent == "." else parent)


def log_training_run(bundle: ModelBundle, *, experiment: str, params: dict, config: dict, metrics: dict[str, float],
                     artifacts: dict[str, Path], model_card: str, input_example: pd.DataFrame,
                     tags: dict[str, str]) -> str:
    """Log one training as one MLflow run and the bundle as a pyfunc model; return the run id.

    ``artifacts`` maps a run-relative destination (``plots/lift.png``) to a local file.
    """
    _check_bundle(bundle)
    client = MlflowClient()
    example = model_input(input_example, bundle.model)
    with _mlflow(f"logging the {bundle.target} training run to experiment {experiment!r}"), \
            tempfile.TemporaryDirectory() as tmp:
        bundle_path = Path(tmp) / _BUNDLE_FILE
        bundle_path.write_bytes(pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL))
        run_tags = {**tags, **_headline_tags(bundle)}
        with mlflow.start_run(experiment_id=_experiment_id(client, experiment), run_name=f"train-{bundle.target}",
                              tags=run_tags) as run:
            mlflow.log_params(_flat(params))
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.log_text(yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False), "config.yaml")
            mlflow.log_dict(bundle.summary(), _SUMMARY_FILE)
            mlflow.log_text(model_card, _CARD_FILE)
            for dest, path in artifacts.items():
                _log_file(Path(path), dest)
            # log_model loads the model back to check the input example: MLflow's own download bar
            # would print between our tables.
            with _env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=DynsegModel(),
                    artifacts={"bundle": str(bundle_path)},
                    signature=_signature(bundle.model, example),
                    input_example=example,
                    pip_requirements=_pinned_requirements(),
                    metadata={"target": bundle.target, "feature_set": bundle.feature_set,
                              "dynseg_version": importlib.metadata.version("dynseg")},
                )
            mlflow.set_tag("dynseg.model_id", info.model_id)
            return run.info.run_id


def log_run(*, experiment: str, run_name: str, params: dict, metrics: dict[str, float], tags: dict[str, str],
            artifacts: dict[str, Path] | None = None, tables: dict[str, pd.DataFrame] | None = None) -> str:
    """Log a run that is not a training (a scoring run, a monitoring report); return its id."""
    from features.writers import signals_held

    client = MlflowClient()
    with _mlflow(f"logging run {run_name!r} to experiment {experiment!r}"):
        experiment_id = _experiment_id(client, experiment)
        # the run exists from its creation on: its id is known at once (a signal held back until it
        # is), so a run stopped or failing while logging is ended FAILED and says so. A SIGTERM there
        # left it RUNNING for good, a record of nothing found by its date and name
        with signals_held():
            run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        try:
            with mlflow.start_run(run_id=run_id):
                mlflow.log_params(_flat(params))
                mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
                for dest, path in (artifacts or {}).items():
                    _log_file(Path(path), dest)
                for dest, frame in (tables or {}).items():
                    with tempfile.TemporaryDirectory() as tmp:
                        local = Path(tmp) / Path(dest).name
                        frame.to_csv(local, index=False)
                        _log_file(local, dest)
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_tag(run_id, "dynseg.incomplete", "stopped or failed while this record was logged")
                client.set_terminated(run_id, "FAILED")
            raise
        return run_id


def update_run(run_id: str, *, tags: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
               step: int = 0, status: str | None = None) -> None:
    """Add tags and metrics (at ``step``) to a finished run, and end it with ``status`` if given:
    a scoring run replaced by a re-run, one whose movement was taken again, one rolled back."""
    client = MlflowClient()
    with _mlflow(f"updating MLflow run {run_id}"):
        for k, v in (metrics or {}).items():
            client.log_metric(run_id, k, float(v), step=step)
        for k, v in (tags or {}).items():
            client.set_tag(run_id, k, v or "")
        if status:
            client.set_terminated(run_id, status)


def bundle_of(pyfunc_model: Any) -> ModelBundle:
    """The :class:`ModelBundle` inside a loaded dynseg pyfunc model."""
    inner = pyfunc_model.unwrap_python_model()
    if not isinstance(inner, DynsegModel):
        raise RegistryError(f"{pyfunc_model.metadata.model_uri} is not a dynseg model")
    return inner.bundle


# -- registration (gated) -------------------------------------------------------------------------
def register(run_id: str, name: str, *, validated: bool, allow_unvalidated: bool,
             tags: dict[str, str]) -> RegisteredVersion | None:
    """Register the run's model as a new version of ``name``, if it passed validation.

    Refused (not validated, not allowed): the run is tagged ``validation_status=REJECTED`` and
    ``None`` is returned.
    """
    client = MlflowClient()
    with _mlflow(f"registering run {run_id} as model {name!r}"):
        run = client.get_run(run_id)
        model_id = run.data.tags.get("dynseg.model_id")
        if not model_id:
            raise RegistryError(f"run {run_id} holds no dynseg model (tag dynseg.model_id is missing); "
                                "log it with log_training_run first")
        if not validated and not allow_unvalidated:
            client.set_tag(run_id, "validation_status", REJECTED)
            return None
        status = VALIDATED if validated else FORCED
        headline = {k: v for k, v in run.data.tags.items()
                    if k in ("target", "feature_set", "test_cutoff", "test_rows") or k.startswith("test_")}
        try:
            client.create_registered_model(name, description="dynseg propensity model; see each version's card.")
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        card = _card(run_id)
        # Tags travel in the create call itself: an interruption cannot leave an untagged version.
        mv = client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
            tags={**tags, **headline, "validation_status": status},
            description=card if len(card) <= _MAX_TAG else card[:_MAX_TAG] + "\n\n(truncated; full card in the run)",
        )
        client.set_tag(run_id, "validation_status", status)
        with contextlib.suppress(MlflowException):  # the logged model's link to its versions is cosmetic
            client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps([{"name": name, "version": str(mv.version)}])})
    return RegisteredVersion(name, str(mv.version), run_id, status)


def _card(run_id: str) -> str:
    return _read_artifact(run_id, _CARD_FILE, mlflow.artifacts.load_text) or ""


_DOWNLOADS: tempfile.TemporaryDirectory | None = None


def download_run_artifact(run_id: str, path: str) -> Path:
    """A local copy of a run's artifact, fetched without MLflow's progress bar (in a notebook it
    prints as lines of stderr under the cell), into one temporary folder per process, removed when
    the process ends (MLflow's own default made a new folder per call and left every one behind)."""
    global _DOWNLOADS
    if _DOWNLOADS is None:
        _DOWNLOADS = tempfile.TemporaryDirectory(prefix="dynseg-artifacts-")
    target = Path(_DOWNLOADS.name) / run_id
    target.mkdir(exist_ok=True)
    with _env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        return Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{path}", dst_path=str(target)))


def _read_artifact(run_id: str, path: str, loader: Callable[[str], Any]) -> Any:
    """A small run artifact, or None when it is absent (purged, or a run not logged by dynseg)."""
    with _env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        try:
            return loader(f"runs:/{run_id}/{path}")
        except Exception:  # noqa: BLE001
            return None


# -- promotion -----------------------------------------------------------------------------------
def default_comparison(auc_tolerance: float = 0.0, brier_tolerance: float = 0.002,
                       against: str = "champion") -> Callable[[dict, dict], tuple[bool, str]]:
    """Candidate AUC >= champion AUC - auc_tolerance and Brier <= champion Brier + brier_tolerance
    (``against`` names the reference in the text: the champion, or a version compared with)."""

    def compare(candidate: dict, champion: dict) -> tuple[bool, str]:
        missing = [f"{who} {m}" for who, d in (("candidate", candidate), ("champion", champion))
                   for m in ("roc_auc", "brier") if d.get(m) is None]
        if missing:
            return False, f"stored test metrics are missing ({', '.join(missing)})"
        auc_ok = candidate["roc_auc"] >= champion["roc_auc"] - auc_tolerance
        brier_ok = candidate["brier"] <= champion["brier"] + brier_tolerance
        # five decimals: at four, a Brier 0.0021 worse than a 0.002 tolerance read "0.0587 (needs <= 0.0587: FAILS)"
        text = (f"test AUC {candidate['roc_auc']:.5f} vs {against} {champion['roc_auc']:.5f} "
                f"(needs >= {champion['roc_auc'] - auc_tolerance:.5f}{'' if auc_ok else ': FAILS'}); "
                f"test Brier {candidate['brier']:.5f} vs {against} {champion['brier']:.5f} "
                f"(needs <= {champion['brier'] + brier_tolerance:.5f}{'' if brier_ok else ': FAILS'})")
        if candidate.get("auc_gain_ci") is not None:  # both scored on one snapshot: the paired interval
            gain, (low, high) = candidate["roc_auc"] - champion["roc_auc"], candidate["auc_gain_ci"]
            noise = low <= 0 <= high
            text += (f"; AUC difference {gain:+.5f}, paired DeLong 95% CI [{low:+.5f}, {high:+.5f}]: "
                     + ("within noise, the two rank alike on this snapshot (the gate reads the point estimates)"
                        if noise else "better beyond noise" if low > 0 else "worse beyond noise"))
        elif candidate.get("paired_note"):  # the same snapshot, which could not be scored again
            text += f"; {candidate['paired_note']}"
        if candidate.get("caveat"):
            text += f"; {candidate['caveat']}"
        return auc_ok and brier_ok, text

    return compare


def _test_metrics(mv: ModelVersion) -> dict[str, float]:
    """The ``test_<metric>`` version tags as numbers (non-numeric ``test_`` tags are not metrics)."""
    out = {}
    for k, v in mv.tags.items():
        if k.startswith("test_") and k not in ("test_cutoff", "test_rows"):
            with contextlib.suppress(ValueError):
                out[k.removeprefix("test_")] = float(v)
    return out


def paired_on_same_snapshot(common_snapshot: Callable[[ModelVersion, ModelVersion], tuple[dict, dict, str]],
                            candidate: ModelVersion, champion: ModelVersion, stored: tuple[dict, dict]) -> dict:
    """For two versions tested on one snapshot, whose stored figures the gate compares: the paired
    DeLong interval of their AUC difference (and a campaign caveat) from scoring both on that
    snapshot again with ``common_snapshot``, as the extra keys of the candidate's metrics. The
    stored figures alone said nothing of whether a gain of 0.001 was noise. Used only when the
    scoring reproduces both stored AUCs (to 1e-6: a base rate moves no ranking): otherwise the data
    changed since, and the interval would be of other figures than those compared; then a note
    says so."""
    try:
        cand, champ, _ = common_snapshot(candidate, champion)
    except Exception as e:  # noqa: BLE001 - data, engine: the stored comparison stands without it
        return {"paired_note": f"no paired interval (the snapshot could not be scored again: {_first_line(e)})"}
    # the AUC moves with no base rate (a monotone shift): unchanged data gives it back to rounding
    drift = [abs(float(now["roc_auc"]) - float(was["roc_auc"])) for now, was in zip((cand, champ), stored)
             if was.get("roc_auc") is not None]
    if len(drift) < 2 or max(drift) > 1e-6:
        return {"paired_note": "no paired interval (scored again on the snapshot, the two versions' AUCs differ "
                               "from the stored ones: the data changed since they were trained)"}
    return {k: cand[k] for k in ("auc_gain_ci", "caveat") if cand.get(k) is not None}


def _same_snapshot(a: ModelVersion, b: ModelVersion) -> tuple[bool, str]:
    """Same test cutoff (and, when both recorded it, the same number of test rows)."""
    ca, cb = a.tags.get("test_cutoff"), b.tags.get("test_cutoff")
    if ca is None or cb is None or ca != cb:
        return False, (f"test snapshots differ (version {a.version}: as of {cutoff_label(ca)}, version {b.version}: "
                       f"as of {cutoff_label(cb)})")
    ra, rb = a.tags.get("test_rows"), b.tags.get("test_rows")
    if ra is not None and rb is not None and ra != rb:
        return False, f"same test snapshot (as of {cutoff_label(ca)}) but different test rows ({ra} vs {rb}): the data changed"
    return True, f"same test snapshot (as of {cutoff_label(ca)})"


def promote(name: str, version: str | int, *, force: bool = False,
            compare: Callable[[dict, dict], tuple[bool, str]] | None = None, reason: str = "",
            auc_tolerance: float = 0.0, brier_tolerance: float = 0.002,
            common_snapshot: Callable[[ModelVersion, ModelVersion], tuple[dict, dict, str]] | None = None,
            target: str | None = None) -> PromotionResult:
    """Make ``version`` the champion if it is at least as good as the current one on the same test.

    ``compare(candidate_metrics, champion_metrics) -> (ok, explanation)`` receives the stored test
    metrics (``{"roc_auc": .., "brier": .., ...}``); the default is :func:`default_comparison`.
    When the two were tested on different snapshots, ``common_snapshot(candidate, champion)``
    (if given) evaluates both on one and returns ``(candidate_metrics, champion_metrics, where)``;
    whatever it raises becomes a problem (which ``force`` overrides; a forced promotion is compared
    too, so its record says what was overridden). Without it, or when the version is refused
    already, the differing snapshots are themselves the problem.
    """
    client = MlflowClient()
    version = str(version)
    compare = compare or default_comparison(auc_tolerance, brier_tolerance)
    with _mlflow(f"promoting {name} version {version}"):
        cand = _version(client, name, version)
        if target is not None and cand.tags.get("target") not in (None, target):
            raise RegistryError(f"{name} version {version} predicts {cand.tags.get('target')!r}, not {target!r}: a "
                                f"{target} champion must be a {target} model. Promote one of {target}'s versions "
                                "(dynseg models list shows them); if both targets' versions are in one registered "
                                "model, give each its own name under registry.names in configs/training.yaml")
        champ = _alias(client, name, CHAMPION)
        champ_v = str(champ.version) if champ is not None else None
        outside = champ_v == version and _unrecorded(champ) is not None
        if champ_v == version and not outside:
            return PromotionResult(name, version, None, False, f"version {version} is already the champion")
        problems, notes, compared_on = [], [], ""
        if outside:  # champion by an alias set by hand: what `score` told them to do, recorded now
            champ, champ_v = None, None  # (the version it replaced is unknown: compared with none)
            notes.append("champion already by an alias set outside dynseg; its promotion is recorded now, compared "
                         "with no other version")
        status = cand.tags.get("validation_status")
        if status != VALIDATED:
            problems.append(f"version {version} is {status or 'not validated'} (it did not pass the validation criteria)")
        if champ is not None:
            if champ.tags.get("target") != cand.tags.get("target"):
                raise RegistryError(f"version {version} predicts {cand.tags.get('target')!r} but the champion "
                                    f"(version {champ_v}) predicts {champ.tags.get('target')!r}; not the same model. "
                                    "Each target needs a registered model of its own (registry.names in "
                                    "configs/training.yaml)")
            same, why = _same_snapshot(cand, champ)
            labels = cand.tags.get("label_definition"), champ.tags.get("label_definition")
            if None not in labels and labels[0] != labels[1]:
                # another horizon or population: the figures measure different things, on any snapshot
                problems.append(f"version {version} predicts {labels[0]}, the champion (version {champ_v}) "
                                f"{labels[1]}: their metrics are not comparable")
            elif same:
                cand_m, champ_m = _test_metrics(cand), _test_metrics(champ)
                if common_snapshot is not None and not (problems and not force):
                    # the stored figures decide; scoring both again gives their paired interval
                    cand_m |= paired_on_same_snapshot(common_snapshot, cand, champ, (cand_m, champ_m))
                ok, text = compare(cand_m, champ_m)
                compared_on = f"the test snapshot as of {cutoff_label(cand.tags.get('test_cutoff'))}"
                (notes if ok else problems).append(f"against champion version {champ_v} on {compared_on}: {text}")
            elif common_snapshot is None or (problems and not force):
                # (refused already: no need to score both again; a forced promotion is still compared,
                # so that its record says what the force overrode)
                if common_snapshot is None:  # (the API without a way to score: the caller's to do)
                    problems.append(f"cannot compare with champion version {champ_v}: {why}; re-evaluate both on "
                                    "one test snapshot")
                else:  # promote would score both on the newer snapshot; it is refused for the reasons above
                    problems.append(f"not compared with champion version {champ_v} ({why}; promote scores both on "
                                    "the newer one once the version is otherwise fit to promote, or with --force)")
            else:
                try:
                    cand_m, champ_m, where = common_snapshot(cand, champ)
                except Exception as e:  # noqa: BLE001 - data, engine or registry: --force can still override
                    problems.append(f"cannot compare with champion version {champ_v}: {why}, and the two cannot "
                                    f"be scored on one: {_first_line(e)}")
                else:
                    ok, text = compare(cand_m, champ_m)
                    (notes if ok else problems).append(f"{why}, so both were scored on {where}: against champion "
                                                       f"version {champ_v}, {text}")
                    compared_on = where
        if problems and not force:
            raise PromotionRefused(f"{name} version {version} was not promoted: " + "; ".join(problems)
                                   + ". Use --force --reason TEXT to override (recorded on the version).")
        record = {"promoted_at": _now(), "promoted_over": champ_v or "none"}
        if compared_on:
            record["promotion_compared_on"] = compared_on
        if notes:  # what the gate saw, kept with the version (a forced one keeps it as force_overrode)
            record["promotion_comparison"] = "; ".join(notes)[:_MAX_TAG]
        if force and problems:  # a force the gate did not need is no force: recorded as a promotion
            record.update(promoted_by_force="true", force_reason=(reason or "(no reason given)")[:_MAX_TAG],
                          force_overrode="; ".join(problems)[:_MAX_TAG])
        elif reason:
            record["promotion_reason"] = reason[:_MAX_TAG]
        # Tags first, then aliases (previous before champion): an interruption leaves the old
        # champion serving, never a champion without its record.
        for k, v in record.items():
            client.set_model_version_tag(name, version, k, v)
        if champ_v is not None:
            client.set_registered_model_alias(name, PREVIOUS, champ_v)
        client.set_registered_model_alias(name, CHAMPION, version)
    verb = "forced to champion" if force and problems else "promoted to champion"
    detail = "; ".join(notes or problems) or "first champion"
    if force and not problems:
        detail += " (the gate passed: --force was not needed)"
    return PromotionResult(name, version, champ_v, bool(force and problems), f"{name} version {version} {verb}: {detail}")


def rollback(name: str) -> PromotionResult:
    """Make ``previous-champion`` the champion again, and take that alias away: a rollback undoes
    the last promotion once. (Swapping the two aliases made a second rollback put back, in silence,
    the version just rolled back from, forced or not.) The version rolled back from records
    ``rolled_back_at``, the one restored ``restored_at``."""
    client = MlflowClient()
    with _mlflow(f"rolling back {name}"):
        _require_model(client, name)
        champ, prev = _alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)
        if prev is None:
            last = [v for v in client.search_model_versions(f"name='{name}'") if v.tags.get("rolled_back_at")]
            done = max(last, key=lambda v: v.tags["rolled_back_at"], default=None)
            raise RegistryError(f"model {name!r} has no {PREVIOUS!r} version; nothing to roll back to"
                                + (f" (the last rollback, at {done.tags['rolled_back_at']}, took version "
                                   f"{done.version} out of champion"
                                   + (f"; the champion is version {champ.version}" if champ is not None else "")
                                   + ")" if done is not None else "")
                                + ". Promote an explicit version instead: dynseg models promote NAME VERSION")
        champ_v, prev_v = (str(champ.version) if champ is not None else None), str(prev.version)
        now = _now()
        client.set_model_version_tag(name, prev_v, "restored_at", now)
        if champ_v is not None:
            client.set_model_version_tag(name, champ_v, "rolled_back_at", now)
        # Champion first: an interruption between the two leaves the rollback done.
        client.set_registered_model_alias(name, CHAMPION, prev_v)
        client.delete_registered_model_alias(name, PREVIOUS)
    return PromotionResult(name, prev_v, champ_v, False, f"{name}: champion is version {prev_v} again ("
                                                         + (f"was {champ_v}" if champ_v else "there was no champion: its "
                                                            "alias had been removed outside dynseg")
                                                         + "); a second rollback has nothing to go back to")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# -- reading ---------------------------------------------------------------------------------------
def load_champion(name: str, alias: str = CHAMPION) -> tuple[Any, ModelVersion]:
    """The pyfunc model behind ``models:/<name>@<alias>`` and its registry entry."""
    client = MlflowClient()
    with _mlflow(f"loading {name}@{alias}"):
        _require_model(client, name)
        mv = _alias(client, name, alias)
        if mv is None:
            raise RegistryError(f"model {name!r} has no version with alias {alias!r}; "
                                f"promote one with: dynseg models promote {name} VERSION")
        with _env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
            return mlflow.pyfunc.load_model(f"models:/{name}@{alias}"), mv


def load_version(name: str, version: str | int, run_id: str | None = None) -> Any:
    """The pyfunc model of one registered version (what a past scoring run used): a number or an
    alias (``models:/name/champion`` would read as a stage, which MLflow 3 refuses). With ``run_id``,
    the training run a scoring run recorded for it: when the registry's entry is no longer that
    model (the version deleted, the name renamed and trained again), the run's own model is loaded.
    A past run had been explained and monitored with whichever model held its name and number."""
    client = MlflowClient()
    with _mlflow(f"loading {name} version {version}"):
        try:
            mv, gone = _version(client, name, version), None
        except RegistryError as e:
            mv, gone = None, e
        with _env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
            if run_id and (mv is None or mv.run_id != run_id):
                try:
                    return mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
                except (MlflowException, OSError) as e:
                    if _unanswered(e):  # a server lost meanwhile: try later (exit 75), as _mlflow says it
                        raise
                    now = str(gone) if gone else f"it now comes from training run {mv.run_id}"
                    raise RegistryError(
                        f"{name} version {version} is not the model the run used ({now}), and that model, of training "
                        f"run {run_id}, could not be loaded: {_first_line(e)}. Restore the run's artifacts in the "
                        "tracking store") from e
            if mv is None:
                raise gone
            return mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")


def resolve_version(name: str, version: str | int) -> str:
    """The number of ``version`` of ``name`` (a number, or an alias such as ``champion``)."""
    client = MlflowClient()
    with _mlflow(f"reading {name} version {version}"):
        return str(_version(client, name, version).version)


REFERENCE_FILE = "reference/reference.parquet"


def reference_sample(name: str, version: str | int, run_id: str | None = None) -> pd.DataFrame:
    """The training reference logged with a version: test-snapshot features and the model's score.
    With ``run_id`` (the training run a scoring run recorded), read from that run, whatever the
    registry's ``name``/``version`` holds now (see :func:`load_version`)."""
    client = MlflowClient()
    with _mlflow(f"reading the training reference of {name} version {version}"):
        source = run_id or _version(client, name, version).run_id
        with tempfile.TemporaryDirectory(prefix="dynseg-reference-") as copy:  # MLflow's default folder stayed
            frame = _read_artifact(source, REFERENCE_FILE, lambda uri: pd.read_parquet(
                mlflow.artifacts.download_artifacts(uri, dst_path=copy)))
    if frame is None:
        raise RegistryError(f"{name} version {version} has no training reference ({REFERENCE_FILE} in run "
                            f"{source}); it was trained before references were logged. Retrain it "
                            "(dynseg train <target>) and promote the new version.")
    return frame


LIST_COLUMNS = ["name", "version", "aliases", "status", "target", "horizon", "test_auc", "test_brier", "test_cutoff", "created",
                 "history"]


def _made_at(mv: ModelVersion) -> str:
    """When ``mv`` was last made champion by dynseg (promoted or restored), "" if never."""
    tags = mv.tags or {}
    return max(tags.get("promoted_at", ""), tags.get("restored_at", ""))


def _unrecorded(mv: ModelVersion) -> str | None:
    """How ``mv``, holding the champion alias, got it outside dynseg, or None: never made champion by
    dynseg ("never"), rolled back since ("rolled back"), or another version made champion since it
    was ("superseded": the alias put back by hand in MLflow's UI, the commonest hand edit)."""
    made = _made_at(mv)
    if not made:
        return "never"
    if (mv.tags or {}).get("rolled_back_at", "") > made:
        return "rolled back"
    others = MlflowClient().search_model_versions(f"name='{mv.name}'")
    if any(_made_at(v) > made for v in others if str(v.version) != str(mv.version)):
        return "superseded"
    return None


def champion_notes(mv: ModelVersion) -> list[str]:
    """What a run scored by ``mv`` (a champion) should say of how it became champion: an alias set
    outside dynseg (no promotion record: no gate compared it; a version rolled back, or promoted
    over since, made champion again by hand), or one registered without passing its validation
    criteria (unless forced with a recorded reason). Such a champion had scored night after night
    without a word."""
    tags, said = mv.tags or {}, []
    how = _unrecorded(mv)
    if how == "never":
        said.append(f"{mv.name} version {mv.version} is champion without a promotion record: the alias was set outside "
                    f"dynseg, so no gate compared it with the version before. Promote it with `dynseg models promote` "
                    "(or --force --reason TEXT) to record it")
    elif how == "rolled back":
        said.append(f"{mv.name} version {mv.version} was rolled back on {tags['rolled_back_at'][:10]} and is champion "
                    "again without a promotion: the alias was set outside dynseg. Promote it with `dynseg models "
                    "promote` to record it")
    elif how == "superseded":
        said.append(f"{mv.name} version {mv.version} is champion again without a promotion: another version was made "
                    "champion after it, and the alias was set back outside dynseg. Promote it with `dynseg models "
                    "promote` to record it")
    if tags.get("validation_status") == FORCED and tags.get("promoted_by_force") != "true":  # (a force keeps its reason)
        said.append(f"{mv.name} version {mv.version} did not pass its validation criteria (registered with "
                    "--allow-unvalidated)")
    return said


def _history(tags: dict[str, str]) -> str:
    """What was done to a version, from its tags: promoted (forced, with the reason), rolled back,
    restored; what a reviewer scanning the list must not miss (`models show` has the detail)."""
    said = []
    if tags.get("promoted_at"):
        said.append(f"forced {tags['promoted_at'][:10]} ({tags.get('force_reason', '')[:60]})"
                    if tags.get("promoted_by_force") == "true" else f"promoted {tags['promoted_at'][:10]}")
    if tags.get("rolled_back_at"):
        said.append(f"rolled back {tags['rolled_back_at'][:10]}")
    if tags.get("restored_at"):
        said.append(f"restored {tags['restored_at'][:10]}")
    return "; ".join(said)


def list_versions(name: str | None = None) -> pd.DataFrame:
    """One row per registered version, newest first within each model."""
    client = MlflowClient()
    with _mlflow("listing model versions"):
        if name is not None:
            _require_model(client, name)
        versions = client.search_model_versions(f"name='{name}'" if name else None)
        aliases: dict[tuple[str, str], list[str]] = {}
        for model in {v.name for v in versions}:
            for alias, ver in client.get_registered_model(model).aliases.items():
                aliases.setdefault((model, str(ver)), []).append(alias)
    rows = [{
        "name": v.name, "version": int(v.version),
        "aliases": ", ".join(sorted(aliases.get((v.name, str(v.version)), []))),
        "status": v.tags.get("validation_status", ""), "target": v.tags.get("target", ""),
        # the label's window: a 56-day version's metrics beside 30-day ones are of another outcome
        "horizon": _horizon(v.tags.get("label_definition", "")),
        "test_auc": _num(v.tags.get("test_roc_auc")), "test_brier": _num(v.tags.get("test_brier")),
        "test_cutoff": v.tags.get("test_cutoff", ""),
        "created": pd.Timestamp(v.creation_timestamp, unit="ms", tz="UTC"),
        "history": _history(v.tags),
    } for v in versions]
    frame = pd.DataFrame(rows, columns=LIST_COLUMNS)
    return frame.sort_values(["name", "version"], ascending=[True, False], ignore_index=True)


def _horizon(label_definition: str) -> str:
    """``30d`` from a version's label definition ("... in the 30 days from the cutoff ..."); empty
    when it says none."""
    m = re.search(r"in the (\d+ days|day) from the cutoff", label_definition)
    return "" if m is None else "1d" if m.group(1) == "day" else m.group(1).split()[0] + "d"


def _num(v: str | None) -> float:
    return float(v) if v is not None else float("nan")


def version_details(name: str, version: str | int | None = None) -> dict:
    """Card, test metrics and baselines, bands and tags of one version (default: the champion, else the newest)."""
    client = MlflowClient()
    with _mlflow(f"reading {name} version {version or '(champion)'}"):
        if version is None:
            _require_model(client, name)
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise RegistryError(f"model {name!r} has no versions yet; register one with `dynseg train <target>`")
            mv = _alias(client, name, CHAMPION) or max(versions, key=lambda v: int(v.version))
        else:
            mv = _version(client, name, version)
        aliases = [a for a, v in client.get_registered_model(name).aliases.items() if str(v) == str(mv.version)]
        summary = _read_artifact(mv.run_id, _SUMMARY_FILE, mlflow.artifacts.load_dict) or {}
    return {
        "name": name, "version": str(mv.version), "run_id": mv.run_id, "aliases": sorted(aliases),
        "status": mv.tags.get("validation_status", ""), "target": mv.tags.get("target", summary.get("target", "")),
        "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
        "card": _card(mv.run_id) or (mv.description or ""),
        "metrics": summary.get("metrics") or {"model": _test_metrics(mv)},
        "bands": summary.get("bands"), "label_definition": summary.get("label_definition", ""),
        "feature_set": summary.get("feature_set", mv.tags.get("feature_set", "")),
        "data_window": summary.get("data_window", {}), "tags": dict(mv.tags),
    }


def compare_versions(name: str, a: str | int, b: str | int) -> dict:
    """Test metrics of two versions side by side, whether they share a test snapshot, and the gate's verdict for ``b`` over ``a``."""
    if str(a) == str(b):
        raise ValueError(f"compare needs two different versions of {name}; got version {a} twice")
    client = MlflowClient()
    with _mlflow(f"comparing {name} versions {a} and {b}"):
        va, vb = _version(client, name, a), _version(client, name, b)
        params = []
        for v in (va, vb):  # the training runs' parameters (a run gone from the store: none)
            try:
                params.append(client.get_run(v.run_id).data.params if v.run_id else {})
            except MlflowException:
                params.append({})
    # what was trained differently: a reviewer saw only metrics (a num_leaves override was in MLflow alone)
    settings = pd.DataFrame([(k, params[0].get(k, "—"), params[1].get(k, "—"))
                             for k in sorted(set(params[0]) | set(params[1]))
                             # (bgnbd_*: the baseline's fitted values, which differ between any two trainings)
                             if params[0].get(k) != params[1].get(k) and not k.startswith("bgnbd_")],
                            columns=["setting", f"v{va.version}", f"v{vb.version}"])
    ma, mb = _test_metrics(va), _test_metrics(vb)
    table = pd.DataFrame({f"v{va.version}": pd.Series(ma, dtype=float), f"v{vb.version}": pd.Series(mb, dtype=float)})
    table["difference"] = table.iloc[:, 1] - table.iloc[:, 0]
    same, why = _same_snapshot(va, vb)
    labels = (va.tags.get("label_definition", ""), vb.tags.get("label_definition", ""))
    return {"metrics": table, "same_test_snapshot": same, "snapshot": why,
            "verdict": default_comparison(against=f"version {va.version}")(mb, ma) if same else None,
            "labels": labels, "same_label": labels[0] == labels[1], "versions": (va, vb), "settings": settings,
            "settings_known": all(params)}


__all__ = [
    "CHAMPION", "PREVIOUS", "DEFAULT_MODEL_NAMES", "DynsegModel", "ModelBundle", "PromotionRefused",
    "PromotionResult", "RegisteredVersion", "RegistryError", "compare_versions", "connect", "default_comparison",
    "paired_on_same_snapshot",
    "list_versions", "load_champion", "log_training_run", "model_input", "model_name", "promote", "register",
    "rollback", "tracking_uri", "version_details",
]


def champion_metrics(name: str) -> dict | None:
    """The current champion's version, test cutoff and test metrics; None if there is none yet."""
    client = MlflowClient()
    with _mlflow(f"reading the champion of {name}"):
        mv = _alias(client, name, CHAMPION)
    if mv is None:
        return None
    return {"version": str(mv.version), "test_cutoff": mv.tags.get("test_cutoff"),
            "label_definition": mv.tags.get("label_definition"), **_test_metrics(mv)}
