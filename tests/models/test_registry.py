"""models/registry.py against real MLflow stores: SQLite files, and a real `mlflow server`.

Speed matters on a loaded machine: importing MLflow and migrating a new SQLite store each take
seconds. So the server boots in the background as soon as the module starts (its test comes
last), the runs are logged once per module, and every test registers those runs under its own
model name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import brier_score_loss, roc_auc_score
from typer.testing import CliRunner

from features.asof import cutoff_label
from models import registry as R
from models.bands import BandLevel, to_dicts
from models.estimator import PropensityModel
from pipeline.cli import app

SERVER_TEST = "test_full_cycle_against_a_real_mlflow_server"
CUTOFF, OTHER_CUTOFF = "2026-10-28", "2026-09-28"
runner = CliRunner()


# -- data and models -------------------------------------------------------------------------
def _frame(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    X = pd.DataFrame({
        "x1": rng.normal(size=n), "x2": rng.normal(size=n), "noise": rng.normal(size=n),
        "n_orders": rng.integers(0, 6, n),  # int64 on purpose: the signature must still take it
        "plan": rng.choice(["basic", "plus"], n),
    })
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * X.x1 - X.x2)))).astype(int)
    return X, y


def _png(path: Path) -> Path:
    """A valid 1x1 PNG, without importing matplotlib."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))
    return path


def _bundle(model: PropensityModel, X: pd.DataFrame, y: np.ndarray) -> R.ModelBundle:
    p = model.predict(X)
    recency = X["x1"].rank(pct=True).to_numpy()
    return R.ModelBundle(
        target="purchase", model=model, label_definition="at least one purchase in (T, T+30d]",
        feature_set="customer_features@test", bands=to_dicts([BandLevel("high", min_probability=0.7, threshold=0.7),
                                                         BandLevel("medium", top_percent=30.0, note="on the test snapshot the top 30 % starts at 0.4100"),
                                                         BandLevel("low")]),
        data_window={"first_event": "2025-01-01", "cutoffs": ["2026-08-29", "2026-09-28", CUTOFF],
                     "test_cutoff": CUTOFF, "test_rows": len(y)},
        metrics={"model": {"roc_auc": roc_auc_score(y, p), "brier": brier_score_loss(y, p)},
                 "baselines": {"recency": {"roc_auc": roc_auc_score(y, recency), "brier": brier_score_loss(y, recency)}}},
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    (X, y), (Xv, yv), (Xt, yt) = _frame(rng, 3000), _frame(rng, 1500), _frame(rng, 1500)
    params = dict(n_estimators=200, learning_rate=0.1, early_stopping_rounds=20)
    strong = PropensityModel(**params).fit(X, y, Xv, yv)
    weak = PropensityModel(**params).fit(X[["noise"]], y, Xv[["noise"]], yv)  # no signal at all
    assert roc_auc_score(yt, strong.predict(Xt)) > 0.8 > 0.6 > roc_auc_score(yt, weak.predict(Xt[["noise"]]))
    return SimpleNamespace(X=Xt, y=yt, strong=strong, weak=weak)


def _log(bundle: R.ModelBundle, X: pd.DataFrame, tmp: Path, experiment: str = "dynseg-test") -> str:
    return R.log_training_run(
        bundle, experiment=experiment, params={"lgbm": {"learning_rate": 0.1}, "snapshots": 3},
        config={"labels": {"purchase": {"horizon": "30d"}}, "path": tmp},
        metrics={"test_roc_auc": bundle.metrics["model"]["roc_auc"], "test_brier": bundle.metrics["model"]["brier"]},
        artifacts={"plots/lift.png": _png(tmp / "lift.png")},
        model_card=f"# Model card: {bundle.target}\n\nTest cutoff {bundle.data_window['test_cutoff']}.",
        input_example=X.head(5),
        tags={"dynseg.command": "test"},
    )


class _FreshProcess:
    """A new Python process that loads ``models:/<name>@champion`` and scores a Parquet file."""

    SCRIPT = ("import json, sys, mlflow, pandas as pd\n"
              "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
              "print(json.dumps(m.predict(pd.read_parquet(sys.argv[2]))['score'].tolist()))\n")

    def __init__(self, root: Path, uri: str, model_uri: str, X: pd.DataFrame):
        X.to_parquet(root / "X.parquet")
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, model_uri, str(root / "X.parquet")],
                                     cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def scores(self) -> list[float]:
        stdout, stderr = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, stderr[-3000:]
        return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def store(data, tmp_path_factory):
    """A SQLite store holding two logged runs, strong and weak, on one test snapshot.

    "t-load" version 1 (strong) is champion; a fresh process starts loading it right away (a new
    Python importing MLflow takes a while), from a copy of the store so the two never contend.
    """
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    t0 = time.perf_counter()
    R.connect(uri)
    t_connect = time.perf_counter() - t0
    t0 = time.perf_counter()
    strong = _log(_bundle(data.strong, data.X, data.y), data.X, root)
    t_log = time.perf_counter() - t0
    R.register(strong, "t-load", validated=True, allow_unvalidated=False, tags={})
    R.promote("t-load", 1)
    shutil.copyfile(root / "mlflow.db", root / "fresh.db")
    fresh = _FreshProcess(root, f"sqlite:///{root / 'fresh.db'}", "models:/t-load@champion",
                          R.model_input(data.X, data.strong))
    weak = _log(_bundle(data.weak, data.X, data.y), data.X, root)
    print(f"\n[timing] new SQLite store {t_connect:.1f}s, log_training_run {t_log:.1f}s")
    yield SimpleNamespace(uri=uri, root=root, strong=strong, weak=weak, fresh=fresh)
    if fresh.proc.poll() is None:
        fresh.proc.kill()
        fresh.proc.communicate()


@pytest.fixture
def reg(store):
    R.connect(store.uri)  # other tests may have pointed MLflow elsewhere
    return store


def _aliases(name: str) -> dict[str, str]:
    return {a: str(v) for a, v in MlflowClient().get_registered_model(name).aliases.items()}


# -- logging and the registration gate -----------------------------------------------------------
def test_a_workspace_under_a_path_with_a_space_or_a_quote_keeps_logging(reg, tmp_path):
    """MLflow stores an experiment's folder as a percent-encoded file URI (Jane%20Doe): read back
    undecoded it never matched the workspace, and the second run of an experiment was refused as
    from a moved workspace (in a project under /Users/Jane Doe/, `train churn` after `train purchase`)."""
    root = tmp_path / "Jane Doe's shop" / ".dynseg"
    root.mkdir(parents=True)
    try:
        R.connect(f"sqlite:///{root / 'mlflow.db'}")
        first = R.log_run(experiment="dynseg", run_name="a", params={}, metrics={}, tags={})
        second = R.log_run(experiment="dynseg", run_name="b", params={}, metrics={}, tags={})
        assert MlflowClient().get_run(first).info.experiment_id == MlflowClient().get_run(second).info.experiment_id
        assert "%20" in MlflowClient().get_experiment_by_name("dynseg").artifact_location  # (stored encoded)
    finally:
        R.connect(reg.uri)



def test_a_record_that_fails_while_logging_is_ended_failed_and_says_so(reg, tmp_path):
    """A scoring run stopped (SIGTERM) while its MLflow record was logged left the record RUNNING for
    good, with no end: a run of a date that was never committed, found by its name."""
    with pytest.raises(R.RegistryError, match="gone.json"):
        R.log_run(experiment="t-incomplete", run_name="score-2026-11-27", params={"as_of": "2026-11-27"},
                  metrics={"customers": 3.0}, tags={"dynseg.kind": "scoring"},
                  artifacts={"exports/manifest.json": tmp_path / "gone.json"})
    (run,) = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("t-incomplete").experiment_id])
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["dynseg.incomplete"] == "stopped or failed while this record was logged"
    assert run.info.run_name == "score-2026-11-27" and run.data.params["as_of"] == "2026-11-27"
    ok = R.log_run(experiment="t-incomplete", run_name="score-2026-11-28", params={}, metrics={}, tags={})
    assert MlflowClient().get_run(ok).info.status == "FINISHED"



def test_a_training_run_logs_everything_and_registers_a_tagged_version(reg, data):
    t0 = time.perf_counter()
    v = R.register(reg.strong, "t-register", validated=True, allow_unvalidated=False, tags={"trained_by": "test"})
    print(f"\n[timing] register {time.perf_counter() - t0:.2f}s")
    assert (v.name, v.version, v.validation_status) == ("t-register", "1", "VALIDATED")

    client = MlflowClient()
    run = client.get_run(reg.strong)
    assert run.data.tags["validation_status"] == "VALIDATED"
    assert run.data.params["lgbm.learning_rate"] == "0.1" and "test_roc_auc" in run.data.metrics
    files = {f.path for f in client.list_artifacts(reg.strong)} | {f.path for f in client.list_artifacts(reg.strong, "plots")}
    assert {"config.yaml", "bundle.json", "model_card.md", "plots/lift.png"} <= files

    mv = client.get_model_version("t-register", "1")
    assert mv.tags["trained_by"] == "test" and mv.tags["target"] == "purchase"
    assert mv.tags["test_cutoff"] == CUTOFF and float(mv.tags["test_roc_auc"]) > 0.8
    assert mv.description.startswith("# Model card: purchase")

    info = mlflow.models.get_model_info(v.uri)
    assert [s.name for s in info.signature.params.params] == ["base_rate"]
    assert {c.name: c.type.name for c in info.signature.inputs.inputs} == {
        "x1": "double", "x2": "double", "noise": "double", "n_orders": "double", "plan": "string"}
    assert [c.name for c in info.signature.outputs.inputs] == ["score", "score_100"]
    reqs = Path(mlflow.pyfunc.get_model_dependencies(v.uri)).read_text().split()
    import lightgbm
    assert f"lightgbm=={lightgbm.__version__}" in reqs and all("==" in r for r in reqs)


def test_artifacts_fetched_for_a_notebook_share_one_temporary_folder(reg, tmp_path, monkeypatch):
    """Project().run_artifact / shap_importance: MLflow's default made a new temp folder per call and
    left each behind (five per run of the review notebook)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(R, "_DOWNLOADS", None)
    got = [R.download_run_artifact(reg.strong, p) for p in ("model_card.md", "config.yaml", "model_card.md")]
    assert all(g.is_file() for g in got) and got[0] == got[2]
    (folder,) = tmp_path.iterdir()  # one folder, whatever the number of calls
    assert folder.name.startswith("dynseg-artifacts-") and all(folder in g.parents for g in got)
    R._DOWNLOADS.cleanup()  # as at the process's end
    assert not folder.exists()


def test_the_gate_refuses_an_unvalidated_model_and_allow_unvalidated_registers_it_tagged(reg):
    assert R.register(reg.weak, "t-gate", validated=False, allow_unvalidated=False, tags={}) is None
    assert MlflowClient().get_run(reg.weak).data.tags["validation_status"] == "REJECTED"
    assert "t-gate" not in set(R.list_versions()["name"])
    with pytest.raises(R.RegistryError, match="no registered model named 't-gate'"):
        R.list_versions("t-gate")

    v = R.register(reg.weak, "t-gate", validated=False, allow_unvalidated=True, tags={})
    assert v.validation_status == "UNVALIDATED_FORCED"
    assert MlflowClient().get_model_version("t-gate", v.version).tags["validation_status"] == "UNVALIDATED_FORCED"
    # Even as the first champion, an unvalidated version needs --force.
    with pytest.raises(R.PromotionRefused, match="UNVALIDATED_FORCED.*--force"):
        R.promote("t-gate", v.version)


# -- promotion, refusal, force, rollback -------------------------------------------------------
def test_promotion_compares_on_the_same_test_snapshot_and_force_and_rollback_are_recorded(reg):
    name = "t-promo"
    for run in (reg.strong, reg.weak, reg.strong, reg.strong):  # versions 1..4; 4 equals 1
        R.register(run, name, validated=True, allow_unvalidated=False, tags={})
    # Version 3 stands for a model tested on another snapshot (the gate reads these tags).
    MlflowClient().set_model_version_tag(name, "3", "test_cutoff", OTHER_CUTOFF)

    first = R.promote(name, 1)
    assert (first.version, first.previous) == ("1", None) and _aliases(name) == {"champion": "1"}

    with pytest.raises(R.PromotionRefused) as refused:
        R.promote(name, 2)
    assert re.search(r"test AUC 0\.[45]\d+ vs champion 0\.8\d+ \(needs >= 0\.8\d+: FAILS\)", str(refused.value))
    assert "--force --reason" in str(refused.value)
    with pytest.raises(R.PromotionRefused, match=f"test snapshots differ.*as of {cutoff_label(OTHER_CUTOFF)}.*re-evaluate"):
        R.promote(name, 3)
    assert _aliases(name) == {"champion": "1"}

    # as good as the champion: passes, and keeps the old one; a --force it did not need is no force
    equal = R.promote(name, 4, force=True, reason="nightly job always forces")
    assert (equal.version, equal.previous, equal.forced) == ("4", "1", False)
    assert equal.message.endswith("(the gate passed: --force was not needed)"), equal.message
    assert "promoted_by_force" not in MlflowClient().get_model_version(name, "4").tags
    assert _aliases(name) == {"champion": "4", "previous-champion": "1"}

    forced = R.promote(name, 2, force=True, reason="campaign test")
    assert forced.forced and _aliases(name) == {"champion": "2", "previous-champion": "4"}
    tags = MlflowClient().get_model_version(name, "2").tags
    assert tags["promoted_by_force"] == "true" and tags["force_reason"] == "campaign test"
    assert "FAILS" in tags["force_overrode"]

    back = R.rollback(name)
    assert (back.version, back.previous) == ("4", "2")
    assert _aliases(name) == {"champion": "4"}  # undone once: no previous-champion to swap back to
    listed = R.list_versions(name).set_index("version")
    assert listed.loc[4, "aliases"] == "champion" and listed.loc[2, "aliases"] == ""
    # the list a reviewer scans says what was forced and undone (it showed v2 as VALIDATED, nothing else)
    today = listed.loc[2, "created"].strftime("%Y-%m-%d")
    assert listed.loc[2, "history"] == f"forced {today} (campaign test); rolled back {today}"
    assert listed.loc[4, "history"] == f"promoted {today}; restored {today}"
    tags = {v: MlflowClient().get_model_version(name, v).tags for v in ("2", "4")}
    assert "rolled_back_at" in tags["2"] and "restored_at" in tags["4"] and "rolled_back_at" not in tags["4"]
    with pytest.raises(R.RegistryError, match="nothing to roll back to .the last rollback, at .*took version 2 out "
                                              "of champion; the champion is version 4."):
        R.rollback(name)
    # the gate's comparison is kept with a promoted version, naming the champion and the snapshot
    assert tags["4"]["promotion_comparison"].startswith(f"against champion version 1 on the test snapshot as of "
                                                        f"{cutoff_label(CUTOFF)}: test AUC")
    assert tags["4"]["promotion_compared_on"] == f"the test snapshot as of {cutoff_label(CUTOFF)}"
    # a version of another target is no champion for this one
    with pytest.raises(R.RegistryError, match="predicts 'purchase', not 'churn'"):
        R.promote(name, 3, target="churn")


def test_a_forced_promotion_across_snapshots_is_compared_so_its_record_says_what_it_overrode(reg):
    name = "t-force-compare"
    for run in (reg.strong, reg.weak):
        R.register(run, name, validated=True, allow_unvalidated=False, tags={})
    MlflowClient().set_model_version_tag(name, "2", "test_cutoff", OTHER_CUTOFF)
    R.promote(name, 1)
    calls = []

    def common(cand, champ):
        calls.append((str(cand.version), str(champ.version)))
        return {"roc_auc": 0.61, "brier": 0.2}, {"roc_auc": 0.8, "brier": 0.1}, "the test snapshot as of 2026-10-27"

    R.promote(name, 2, force=True, reason="seasonal test", common_snapshot=common)
    tags = MlflowClient().get_model_version(name, "2").tags
    assert calls == [("2", "1")]  # compared although forced
    assert "against champion version 1" in tags["force_overrode"]
    assert "so both were scored on the test snapshot as of 2026-10-27" in tags["force_overrode"]
    assert "FAILS" in tags["force_overrode"] and "re-evaluate" not in tags["force_overrode"]
    assert tags["promotion_compared_on"] == "the test snapshot as of 2026-10-27"
    # an unvalidated version, forced: compared too (it was refused unscored, and its record said to
    # re-evaluate both, which no command does)
    R.register(reg.weak, name, validated=False, allow_unvalidated=True, tags={})
    MlflowClient().set_model_version_tag(name, "3", "test_cutoff", CUTOFF)
    R.promote(name, 3, force=True, reason="try it", common_snapshot=common)
    tags = MlflowClient().get_model_version(name, "3").tags
    assert calls[-1] == ("3", "2") and "did not pass the validation criteria" in tags["force_overrode"]
    assert "so both were scored on" in tags["force_overrode"] and "re-evaluate" not in tags["force_overrode"]
    # unforced, an unvalidated version is refused unscored, and the refusal does not tell the user to
    # re-evaluate both by hand: promote scores both itself once nothing else stands in the way
    R.register(reg.weak, name, validated=False, allow_unvalidated=True, tags={})
    MlflowClient().set_model_version_tag(name, "4", "test_cutoff", OTHER_CUTOFF)
    with pytest.raises(R.PromotionRefused) as e:
        R.promote(name, 4, common_snapshot=common)
    assert calls[-1] == ("3", "2") and "re-evaluate" not in str(e.value)
    assert "not compared with champion version 3 (" in str(e.value) and "promote scores both on the newer one" in str(e.value)


def test_on_one_snapshot_the_stored_figures_decide_with_their_paired_interval(reg):
    """Two versions tested on one snapshot were compared by their stored figures alone: a gain of
    0.001 read as a win with no word of noise. Both are scored on it again for the paired interval,
    which is used only when that scoring reproduces the stored AUCs (else the data changed)."""
    name = "t-paired"
    for run in (reg.strong, reg.strong, reg.strong, reg.strong):
        R.register(run, name, validated=True, allow_unvalidated=False, tags={})
    R.promote(name, 1)
    stored = float(MlflowClient().get_model_version(name, "1").tags["test_roc_auc"])
    calls = []

    def again(auc_shift=0.0, fails=False):
        def common(cand, champ):
            calls.append((str(cand.version), str(champ.version)))
            if fails:
                raise ValueError("the events file is gone")
            return ({"roc_auc": stored + auc_shift, "brier": 0.1, "auc_gain_ci": (-0.0012, 0.0015)},
                    {"roc_auc": stored, "brier": 0.1}, "the test snapshot as of 2026-10-27")
        return common

    done = R.promote(name, 2, common_snapshot=again())
    assert calls == [("2", "1")]
    assert "paired DeLong 95% CI [-0.00120, +0.00150]: within noise" in done.message, done.message
    assert done.message.count("test AUC") == 1  # the stored figures, compared once
    done = R.promote(name, 3, common_snapshot=again(auc_shift=0.01))  # scored again, the AUC moved
    assert "no paired interval (scored again on the snapshot, the two versions' AUCs differ" in done.message
    assert "DeLong" not in done.message
    done = R.promote(name, 4, common_snapshot=again(fails=True))  # the stored comparison stands
    assert done.version == "4" and "no paired interval (the snapshot could not be scored again: the events" in done.message


def test_a_custom_comparison_decides(reg):
    name = "t-custom"
    for run in (reg.strong, reg.weak):
        R.register(run, name, validated=True, allow_unvalidated=False, tags={})
    R.promote(name, 1)
    result = R.promote(name, 2, compare=lambda cand, champ: (True, "anything goes"))
    assert result.version == "2" and "anything goes" in result.message


# -- errors --------------------------------------------------------------------------------------
def test_missing_model_or_alias_says_so(reg):
    with pytest.raises(R.RegistryError, match="no registered model named 'nope'.*known models"):
        R.load_champion("nope")
    R.register(reg.strong, "t-noalias", validated=True, allow_unvalidated=False, tags={})
    with pytest.raises(R.RegistryError, match="no version with alias 'champion'.*dynseg models promote"):
        R.load_champion("t-noalias")
    with pytest.raises(R.RegistryError, match="nothing to roll back to"):
        R.rollback("t-noalias")


def test_an_unreachable_server_fails_fast_naming_the_uri(reg):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    before = len(R.list_versions())
    t0 = time.perf_counter()
    with pytest.raises(R.RegistryError, match=f"cannot reach MLflow tracking server at {dead}.*MLFLOW_TRACKING_URI"):
        R.connect(dead)
    assert time.perf_counter() - t0 < 5
    assert mlflow.get_tracking_uri() == reg.uri  # still pointed at the store that works
    assert len(R.list_versions()) == before


def test_a_server_that_answers_500_is_an_error_to_fix_and_503_one_to_retry(reg, monkeypatch):
    """A server whose database or artifact disk is broken answers 500 to everything: MLflow's
    retries ran out with "Max retries exceeded", read as "stopped answering" (exit 75), so a
    scheduler would retry every night. A 503 (a proxy before a server restarting) is a retry."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    status = [500]

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(status[0])
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for var, value in {**R.HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}.items():
        monkeypatch.setenv(var, value)
    try:
        mlflow.set_tracking_uri(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(R.RegistryError, match="500") as e:
            R.list_versions()
        assert not isinstance(e.value, R.TrackingUnreachable), e.value
        status[0] = 503
        with pytest.raises(R.TrackingUnreachable, match="stopped answering"):
            R.list_versions()
        # a server there that answers 404 (a wrong path in the URI, http://host:port/wrongpath) is
        # no server to wait for: it read "cannot reach", exit 75, which a scheduler retries forever
        status[0] = 404
        with pytest.raises(R.RegistryError, match="answered but refused") as e:
            R.connect(f"http://127.0.0.1:{server.server_address[1]}/wrongpath")
        assert not isinstance(e.value, R.TrackingUnreachable) and "404" in str(e.value), e.value
        assert "a tracking server answers at its root" in str(e.value)
    finally:
        server.shutdown()
        mlflow.set_tracking_uri(reg.uri)


def test_connect_does_not_leak_the_uri_into_the_environment(reg, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    R.connect(reg.uri)
    assert "MLFLOW_TRACKING_URI" not in os.environ and R.tracking_uri() == reg.uri


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_model(store) -> str:
    """dynseg-purchase in the module store: version 1 strong (champion), version 2 weak."""
    R.connect(store.uri)
    R.register(store.strong, "dynseg-purchase", validated=True, allow_unvalidated=False, tags={})
    R.register(store.weak, "dynseg-purchase", validated=True, allow_unvalidated=False, tags={})
    R.promote("dynseg-purchase", 1)
    return "dynseg-purchase"


@pytest.fixture
def cli_store(project, store, cli_model, monkeypatch):
    """The project's CLI pointed at the module store through MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.setenv("COLUMNS", "160")  # a terminal, not rich's 80-column default for pipes
    return store.uri


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def test_cli_list_show_compare_promote_rollback(cli_store):
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert "dynseg-purchase" in listed.stdout and "champion" in listed.stdout and "VALIDATED" in listed.stdout

    shown = runner.invoke(app, ["models", "show", "purchase"])
    assert shown.exit_code == 0, shown.output
    assert "version 1" in shown.stdout and "Model card: purchase" in shown.stdout
    assert "roc_auc" in shown.stdout and "recency" in shown.stdout
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in shown.stdout.splitlines() if line.startswith("│ ")]
    assert [row for row in cells if row[0] in ("high", "medium", "low")] == [
        ["high", "score >= 0.7", "0.7000", ""],
        ["medium", "top 30 % of the run", "each run", "on the test snapshot the top 30 % starts at 0.4100"],
        ["low", "everyone else", "", ""]]

    compared = runner.invoke(app, ["models", "compare", "purchase", "1", "2"])
    assert compared.exit_code == 0, compared.output
    assert "would refuse" in _flat(compared.stdout) and "Different outcomes" not in compared.stdout
    assert "vs version 1 " in _flat(compared.stdout) and "vs champion" not in compared.stdout  # v1 as the reference
    by_alias = runner.invoke(app, ["models", "compare", "purchase", "champion", "2"])
    assert by_alias.exit_code == 0 and _flat(by_alias.stdout) == _flat(compared.stdout)
    assert runner.invoke(app, ["models", "compare", "purchase", "1", "champion"]).exit_code == 2  # the same version
    client = MlflowClient()
    was = client.get_model_version("dynseg-purchase", "2").tags.get("label_definition")
    if client.get_model_version("dynseg-purchase", "1").tags.get("label_definition") is None:
        client.set_model_version_tag("dynseg-purchase", "1", "label_definition", "purchase within 30 days")
    client.set_model_version_tag("dynseg-purchase", "2", "label_definition", "purchase within 45 days")
    try:
        compared = runner.invoke(app, ["models", "compare", "purchase", "1", "2"])
        assert "Different outcomes: version 1 predicts" in _flat(compared.stdout)
        assert "version 2 predicts purchase within 45 days" in _flat(compared.stdout)
        # promote weighs no figures of another outcome (it compared them as if the same)
        refused = runner.invoke(app, ["models", "promote", "purchase", "2"])
        assert refused.exit_code == 3
        assert "version 2 predicts purchase within 45 days, the champion (version 1)" in _flat(refused.stderr)
        assert "their metrics are not comparable" in _flat(refused.stderr) and "test AUC" not in refused.stderr
    finally:
        if was is None:
            client.delete_model_version_tag("dynseg-purchase", "2", "label_definition")
        else:
            client.set_model_version_tag("dynseg-purchase", "2", "label_definition", was)

    refused = runner.invoke(app, ["models", "promote", "purchase", "2"])
    assert refused.exit_code == 3
    assert "--force --reason" in _flat(refused.stderr)
    assert runner.invoke(app, ["models", "promote", "purchase", "2", "--force"]).exit_code == 2  # needs --reason
    forced = runner.invoke(app, ["models", "promote", "purchase", "2", "--force", "--reason", "campaign test"])
    assert forced.exit_code == 0, forced.output
    assert "rollback" in forced.stdout

    back = runner.invoke(app, ["models", "rollback", "purchase"])
    assert back.exit_code == 0, back.output
    assert _aliases("dynseg-purchase") == {"champion": "1"}
    # once: a second rollback put the forced version back, in silence
    again = runner.invoke(app, ["models", "rollback", "purchase"])
    assert again.exit_code == 1 and "nothing to roll back to (the last rollback, at" in _flat(again.output)
    assert _aliases("dynseg-purchase") == {"champion": "1"}


def test_cli_unknown_model_or_version_exits_1(cli_store):
    missing = runner.invoke(app, ["models", "show", "nope"])
    assert missing.exit_code == 1
    assert "no registered model named 'nope'" in _flat(missing.stderr)
    no_version = runner.invoke(app, ["models", "promote", "purchase", "9"])
    assert no_version.exit_code == 1
    assert "has no version 9" in _flat(no_version.stderr)
    same = runner.invoke(app, ["models", "compare", "purchase", "1", "1"])
    assert same.exit_code == 2 and "two different versions" in _flat(same.output)  # usage: exit 2


# -- loading the champion, here and in a fresh process ------------------------------------------
def test_the_champion_scores_like_the_model_in_process_and_in_a_fresh_process(reg, data):
    model, mv = R.load_champion("t-load")  # registered and promoted by the store fixture
    assert str(mv.version) == "1"

    expected = data.strong.predict(data.X)
    X = R.model_input(data.X, model)  # int64 n_orders -> double, as the signature says
    scores = model.predict(X)
    assert scores["score"].between(0, 1).all()
    np.testing.assert_allclose(scores["score"], expected, rtol=0, atol=1e-9)
    assert (scores["score_100"] == np.rint(expected * 100)).all()
    shifted = model.predict(X, params={"base_rate": 0.2})["score"]
    np.testing.assert_allclose(shifted, data.strong.with_base_rate(0.2).predict(data.X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(reg.fresh.scores(), expected, rtol=0, atol=1e-9)
    # The batch scoring shortcut (no MLflow schema enforcement) returns exactly what predict does.
    pd.testing.assert_frame_equal(R.score(model, data.X), scores)
    pd.testing.assert_frame_equal(R.score(model, data.X, 0.2)["score"].to_frame(),
                                  model.predict(X, params={"base_rate": 0.2})["score"].to_frame())
    with pytest.raises(ValueError, match="lacks 1 feature column"):
        R.score(model, data.X.drop(columns=[data.X.columns[0]]))


# -- a real tracking server -----------------------------------------------------------------------
class _Server:
    """`mlflow server` on a free local port, in its own process group so it can be stopped whole."""

    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job runner to boot and reap
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.perf_counter()

    def wait_ready(self, timeout: float) -> float:
        while time.perf_counter() - self.started < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server not answering after {timeout:.0f}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> bool:
        """SIGTERM the process group, SIGKILL what is left after 15 s; True when nothing remains."""
        pgid = self.proc.pid
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return True
            deadline = time.perf_counter() + grace
            while time.perf_counter() < deadline:
                self.proc.poll()  # reap the leader so it does not linger as a zombie
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return True
                time.sleep(0.2)
        return False


@pytest.fixture(scope="module", autouse=True)
def server(request, tmp_path_factory):
    """Booted at module start (it takes tens of seconds) when the server test is selected."""
    if not any(item.name == SERVER_TEST and item.module is request.module for item in request.session.items):
        yield None
        return
    srv = _Server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


def test_full_cycle_against_a_real_mlflow_server(server, data, tmp_path):
    boot = server.wait_ready(timeout=150)
    t0 = time.perf_counter()
    R.connect(server.uri)
    t_log = time.perf_counter()
    run_id = _log(_bundle(data.strong, data.X, data.y), data.X, tmp_path, experiment="dynseg-server")
    t_log = time.perf_counter() - t_log
    t_reg = time.perf_counter()
    v = R.register(run_id, "dynseg-purchase", validated=True, allow_unvalidated=False, tags={})
    t_reg = time.perf_counter() - t_reg
    R.promote("dynseg-purchase", v.version)
    model, mv = R.load_champion("dynseg-purchase")
    scores = model.predict(R.model_input(data.X, model))["score"]
    np.testing.assert_allclose(scores, data.strong.predict(data.X), rtol=0, atol=1e-9)
    assert R.list_versions("dynseg-purchase")["aliases"].tolist() == ["champion"]
    assert "Model card" in R.version_details("dynseg-purchase")["card"]
    print(f"\n[timing] server boot {boot:.1f}s (overlapped), log_training_run {t_log:.1f}s, register {t_reg:.2f}s, "
          f"whole cycle {time.perf_counter() - t0:.1f}s")
    assert server.stop(), "mlflow server processes survived SIGTERM and SIGKILL"
    # the server gone after connect (mid-run): a try-again-later error within seconds, not MLflow's
    # seven retries with backoff (a scoring run retried for 4 minutes, then exited 1)
    t = time.perf_counter()
    with pytest.raises(R.TrackingUnreachable, match="stopped answering"):
        R.list_versions("dynseg-purchase")
    assert time.perf_counter() - t < 30


def test_the_gate_prints_enough_decimals_to_show_why_it_fails():
    """A Brier 0.0021 worse than the champion's, over the 0.002 tolerance, read
    "test Brier 0.0587 vs champion 0.0567 (needs <= 0.0587: FAILS)"."""
    ok, text = R.default_comparison()({"roc_auc": 0.8, "brier": 0.05872}, {"roc_auc": 0.8, "brier": 0.05662})
    assert not ok and "test Brier 0.05872 vs champion 0.05662 (needs <= 0.05862: FAILS)" in text, text


def test_a_store_stopped_while_being_created_is_no_store_and_the_next_command_creates_it(tmp_path):
    """MLflow creates a SQLite store's tables one migration at a time: a command stopped meanwhile
    (SIGTERM 2 s into the first `train`) left a file no later command could open ("table
    trace_info already exists"), and only deleting it helped, which nothing said. The store is now
    built beside its path and linked into place whole, so a stop at any moment leaves either no
    store or a whole one; and a store half-made by an older version is named, with the fix."""
    db = tmp_path / "ws" / "mlflow.db"
    from conftest import REPO

    code = f"from models import registry; registry.connect('sqlite:///{db}')"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code.replace(str(db), str(tmp_path / "timed.db"))], cwd=REPO, check=True)
    whole = time.monotonic() - t0  # import and creation: stopped at fractions of it, most fall in the migrations
    stopped_midway = 0
    for delay in (0.55 * whole, 0.7 * whole, 0.8 * whole, 0.9 * whole):
        child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        # killed while MLflow built it: the half-made store is a temp beside the path, not the store
        stopped_midway += any(p.name.startswith(".mlflow.db.") for p in db.parent.glob(".*.tmp")) and not db.exists()
        if db.exists():  # whole: it opens
            R.connect(f"sqlite:///{db}")
            assert MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
            db.unlink()
    assert stopped_midway, "no kill landed while the store was being built: the test tested nothing"
    R.connect(f"sqlite:///{db}")  # none left: created now, and the killed ones' temps swept
    assert db.exists() and MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    assert [p.name for p in db.parent.iterdir()] == ["mlflow.db"], list(db.parent.iterdir())
    # a store an older version left half-made: named, with the fix
    import sqlite3

    half = tmp_path / "old" / "mlflow.db"
    half.parent.mkdir()
    with sqlite3.connect(half) as con:
        con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")
    with pytest.raises(R.RegistryError, match=r"the MLflow store is half-created at sqlite:///.*mv .*mlflow\.db "
                                              r".*mlflow\.db\.broken"):
        R.connect(f"sqlite:///{half}")


def test_a_server_lost_while_the_champions_load_stays_try_later_beside_another_target_s_error(monkeypatch):
    """`score` gathered each target's registry error into one plain RegistryError: a server that
    died while the champions loaded exited 1, under "run it again once the server is back"."""
    from pipeline.jobs.score import load_champions

    def load(name):
        if name == "dynseg-churn":
            raise R.RegistryError("model 'dynseg-churn' has no version with alias 'champion'")
        raise R.TrackingUnreachable("loading dynseg-purchase@champion failed: the MLflow tracking server at "
                                    "http://127.0.0.1:1 stopped answering (x); run it again once the server is back.")

    monkeypatch.setattr(R, "load_champion", load)
    with pytest.raises(R.TrackingUnreachable) as e:
        load_champions(R, {"purchase": "dynseg-purchase", "churn": "dynseg-churn"})
    assert "stopped answering" in str(e.value) and "has no version with alias" in str(e.value)
    assert ".;" not in str(e.value) and str(e.value).endswith("'champion'.")
    monkeypatch.setattr(R, "load_champion", lambda name: (_ for _ in ()).throw(R.RegistryError(f"no {name}.")))
    with pytest.raises(R.RegistryError) as e:
        load_champions(R, {"purchase": "dynseg-purchase"})
    assert not isinstance(e.value, R.TrackingUnreachable) and str(e.value) == "no dynseg-purchase."


def test_a_long_mlflow_message_is_cut_at_a_sentence_or_word():
    """MLflow's text was cut at 400 characters mid-word: "backend storage loca."."""
    first = "Could not find a registered artifact repository for the backend storage location given " * 3
    said = R._first_line(RuntimeError(first.strip() + ". " + "word " * 120))
    assert said == first.strip() + ". …"
    said = R._first_line(RuntimeError("x" * 250 + " " + "storage location " * 30))
    assert said.endswith(" …") and len(said) <= 402 and said[:-2].split()[-1] in ("storage", "location")


def test_a_champion_made_outside_dynseg_or_unvalidated_is_named_for_the_run(reg):
    """An alias set by hand in MLflow (or a rolled-back version put back) scored night after night
    without a word, and so did a version registered with --allow-unvalidated."""
    name = "t-outside"
    a = R.register(reg.strong, name, validated=True, allow_unvalidated=False, tags={})
    b = R.register(reg.weak, name, validated=False, allow_unvalidated=True, tags={})
    client = MlflowClient()
    client.set_registered_model_alias(name, "champion", a.version)  # by hand
    (said,) = R.champion_notes(R.load_champion(name)[1])
    assert said.startswith(f"{name} version {a.version} is champion without a promotion record: the alias was set "
                           "outside dynseg"), said
    done = R.promote(name, a.version)  # what the warning says to do records it (it read "already the champion")
    assert "champion already by an alias set outside dynseg; its promotion is recorded now" in done.message, done.message
    assert R.champion_notes(R.load_champion(name)[1]) == []
    client.set_registered_model_alias(name, "champion", b.version)  # unvalidated, by hand: both said
    notes = R.champion_notes(R.load_champion(name)[1])
    assert len(notes) == 2 and notes[1] == (f"{name} version {b.version} did not pass its validation criteria "
                                            "(registered with --allow-unvalidated)"), notes
    client.set_registered_model_alias(name, "champion", a.version)
    R.promote(name, b.version, force=True, reason="test")  # a force recorded with its reason is the record
    assert R.champion_notes(R.load_champion(name)[1]) == []
    R.rollback(name)
    client.set_registered_model_alias(name, "champion", b.version)  # the rolled-back one, put back by hand
    notes = R.champion_notes(R.load_champion(name)[1])
    assert notes[0].startswith(f"{name} version {b.version} was rolled back on ") and len(notes) == 1, notes
    # a version promoted before, another promoted over it, then the alias put back by hand (the UI's edit)
    R.promote(name, b.version, force=True, reason="record it")
    R.promote(name, a.version)
    client.set_registered_model_alias(name, "champion", b.version)
    notes = R.champion_notes(R.load_champion(name)[1])
    assert notes == [f"{name} version {b.version} is champion again without a promotion: another version was made "
                     "champion after it, and the alias was set back outside dynseg. Promote it with `dynseg models "
                     "promote` to record it"], notes  # (forced with a reason: not told again that it was unvalidated)
    assert "recorded now" in R.promote(name, b.version, force=True, reason="again").message
    assert R.champion_notes(R.load_champion(name)[1]) == []
    # a champion alias removed by hand, then a rollback: no Python None in what it says
    R.promote(name, a.version, force=True, reason="back")
    client.delete_registered_model_alias(name, "champion")
    said = R.rollback(name).message
    assert "(there was no champion: its alias had been removed outside dynseg)" in said and "None" not in said, said


def test_compare_names_the_training_settings_that_differ(reg, data, tmp_path):
    """A reviewer comparing two versions saw only metrics: a num_leaves override was in MLflow's
    parameters alone."""
    name = "t-settings"
    other = _log(_bundle(data.weak, data.X, data.y), data.X, tmp_path)
    MlflowClient().log_param(other, "lgbm_num_leaves", "15")
    a = R.register(reg.strong, name, validated=True, allow_unvalidated=False, tags={})
    b = R.register(other, name, validated=True, allow_unvalidated=False, tags={})
    c = R.compare_versions(name, a.version, b.version)
    assert c["settings_known"] and c["settings"].to_dict(orient="records") == [
        {"setting": "lgbm_num_leaves", f"v{a.version}": "—", f"v{b.version}": "15"}]
    twin = R.register(reg.strong, name, validated=True, allow_unvalidated=False, tags={})
    assert R.compare_versions(name, a.version, twin.version)["settings"].empty
