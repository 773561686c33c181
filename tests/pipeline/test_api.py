"""``pipeline.api`` for features: the frame a notebook gets, its catalog, each feature's signal, and
the exploration notebook executed on a generated shop."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import execute_notebook, generated_shop
from pipeline.api import Project, feature_signal
from pipeline.cli import app

END = "2026-11-27"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    with generated_shop(tmp_path_factory.mktemp("api"), 2500, seed=17, end=END) as p:
        yield p


def test_features_are_what_the_command_writes_and_every_column_has_a_catalog_row(shop):
    out = shop.root / "f.parquet"
    result = CliRunner().invoke(app, ["features", "build", "--as-of", END, "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = Project().features(END)
    assert frame.attrs["warnings"] == []
    pd.testing.assert_frame_equal(frame, pd.read_parquet(out))

    cat = Project().feature_catalog(frame)
    assert list(cat.column) == list(frame.columns)
    groups = dict(zip(cat.column, cat.group))
    assert "other" not in groups.values()
    assert [c for c, g in groups.items() if g == "profile"] == ["country", "acquisition_channel", "plan"]
    # the most specific catalog row: n_categories_<w>d, not n_<role>_<w>d
    assert groups["n_categories_30d"] == "categories" and groups["n_purchase_30d"] == "windows"
    assert groups["recency_days"] == "rfm" and groups["sends_since_last_open"] == "engagement"
    assert Project().feature_catalog(["label", "snapshot"]).group.tolist() == ["training set", "training set"]
    # with auto, a name the customers source does not have is no attribute (a typo got a believable meaning)
    assert Project().feature_catalog(["plan", "recency_dayz"]).group.tolist() == ["profile", "other"]
    features_yaml = shop.root / "configs" / "features.yaml"
    before = features_yaml.read_text()
    try:  # listed attributes: a name neither listed nor in the catalog is not taken for one
        features_yaml.write_text(before.replace("categorical_attributes: auto", "categorical_attributes: [plan]"))
        assert Project().feature_catalog(["plan", "country", "churn_score"]).group.tolist() == ["profile", "other", "other"]
    finally:
        features_yaml.write_text(before)
    # without a frame: the catalog as documented, patterns and all
    assert "n_<role>_<w>d" in set(Project().feature_catalog().column)
    assert Project(str(shop.root)).config.workspace == Project().config.workspace  # a folder as text (failed before)


def test_stale_data_warns_in_a_notebook_as_the_command_does(shop):
    project_yaml = shop.root / "configs" / "project.yaml"
    before = project_yaml.read_text()
    try:
        project_yaml.write_text(before.replace("action: refuse", "action: warn"))
        with pytest.warns(UserWarning, match="newest event"):
            frame = Project().features("2026-12-03")
        assert any("newest event" in w for w in frame.attrs["warnings"])
    finally:
        project_yaml.write_text(before)
    from features.freshness import StaleDataError

    with pytest.raises(StaleDataError):
        Project().features("2026-12-03")


def test_feature_signal_ranks_a_planted_signal_and_its_direction():
    rng = np.random.default_rng(3)
    n = 4000
    label = rng.integers(0, 2, n)
    strong = label * 1.5 + rng.normal(size=n)
    snapshot = np.where(np.arange(n) < 3000, "train", np.where(np.arange(n) < 3500, "valid", "test"))
    # a feature known only for some: present for most positives, seldom for negatives
    sparse = np.where(rng.random(n) < np.where(label == 1, 0.8, 0.2), rng.random(n), np.nan)
    ts = pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)], "as_of": pd.Timestamp("2026-06-01"), "snapshot": snapshot,
        "strong": strong, "reversed": -strong, "noise": rng.normal(size=n), "sparse": sparse,
        "flag": pd.array(np.where(label == 1, rng.random(n) < 0.6, rng.random(n) < 0.4), dtype="boolean"),
        "plan": np.where(label == 1, "plus", "free"),  # text: not a numeric feature
        "label": label,
    })
    s = feature_signal(ts).set_index("feature")
    assert "plan" not in s.index and "label" not in s.index and "as_of" not in s.index
    assert list(s.index[:2]) == ["strong", "reversed"] or list(s.index[:2]) == ["reversed", "strong"]
    assert s.loc["strong", "auc_train"] > 0.8 and s.loc["reversed", "auc_train"] < 0.2
    assert s.loc["strong", "strength"] == pytest.approx(s.loc["reversed", "strength"])
    assert abs(s.loc["noise", "auc_train"] - 0.5) < 0.05
    assert s.loc["sparse", "auc_train"] > 0.7  # nulls rank lowest: known goes with positives
    assert s.loc["sparse", "non_null"] == pytest.approx(np.isfinite(sparse[:3000]).mean())
    assert s.loc["flag", "auc_train"] > 0.55
    assert s.loc["strong", "auc_test"] > 0.8  # the out-of-time rows get their own AUC

    # a flag with nulls, as pandas holds email_consent before a cutoff where everyone's is known:
    # object values True/False/None; it was left out as if it were text
    s = feature_signal(ts.assign(flag=ts.flag.astype(object).where(ts.flag.notna(), None)
                                 .where(np.arange(n) % 10 != 0, None))).set_index("feature")
    assert s.loc["flag", "auc_train"] > 0.55 and s.loc["flag", "non_null"] == pytest.approx(0.9)

    one_class = ts.assign(label=np.where(ts.snapshot == "test", 0, ts.label))
    with pytest.warns(UserWarning, match=r"the test \(\[0\]\) rows hold one class"):
        assert np.isnan(feature_signal(one_class).set_index("feature").loc["strong", "auc_test"])
    with pytest.raises(ValueError, match="no column \\['label'\\]"):
        feature_signal(ts.drop(columns="label"))


def test_the_exploration_notebook_executes(shop):
    outputs = execute_notebook("explore_features.ipynb", shop.root)  # no error, nothing on stderr
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # as of the day the CLI names (the snapshots too), the cutoff instant beside it
    assert "customers, 65 features, as of 2026-11-27 (features see events before 2026-11-28 00:00 UTC)" in text, text
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "test" in html and "00:00:00" not in html  # snapshots labelled 2026-10-27, not 2026-10-28 00:00:00
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the label-rate plot


def test_features_and_training_sets_need_no_mlflow_and_say_what_the_command_says(shop, monkeypatch):
    """Features and training sets from Python: no tracking server needed (Project() used to
    connect to it first), the training set's warnings kept and issued as the features' are, the
    ways a notebook gives a cutoff, and misuse refused by name before any work."""
    from features.asof import BadValue
    from models.registry import RegistryError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    p = Project()
    assert "config" not in repr(p) and len(repr(p)) < 200
    frame = p.features(np.datetime64("2026-11-27T12:00"))  # a frame's as_of.values[0], say
    pd.testing.assert_frame_equal(frame, p.features(pd.Timestamp("2026-11-27 12:00")))
    assert not (shop.workspace / "mlflow.db").exists()
    with pytest.raises(RegistryError, match="cannot reach MLflow tracking server"):
        p.versions()
    for bad in (20261127, None, ["2026-11-27"]):
        with pytest.raises(BadValue, match=r"is a (int|NoneType|list); expected a date or an instant"):
            p.features(bad)
    with pytest.raises(BadValue, match=r"target 'purchse' is not one of 'purchase', 'churn'"):
        p.training_set("purchse")
    for bad, said in ((30.0, "is a float; expected a number of days"), (True, "is a bool"),
                      (10**6, "at most 100 years")):
        with pytest.raises(BadValue, match=said):
            p.training_set("purchase", horizon=bad)
    with pytest.raises(BadValue, match="is NaT"):
        p.features(pd.NaT)
    # a numpy day is a date (the end of it), as "2026-11-27" is; with a time, an instant
    pd.testing.assert_frame_equal(p.features(np.datetime64("2026-11-27")), p.features("2026-11-27"))

    project_yaml = shop.root / "configs" / "project.yaml"
    before = project_yaml.read_text()
    try:  # stale data with freshness warning: the label windows end by the newest event, and say so
        project_yaml.write_text(before.replace("action: refuse", "action: warn"))
        with pytest.warns(UserWarning, match="the label windows end by the newest event"):
            ts = Project().training_set("purchase", "2026-12-03", horizon=28)  # a number of days
        assert any("label windows end by the newest event" in w for w in ts.attrs["warnings"])
    finally:
        project_yaml.write_text(before)
    out = shop.root / "ts.parquet"
    result = CliRunner().invoke(app, ["features", "training-set", "purchase", "--as-of", "2026-12-03",
                                      "--horizon", "4w", "--out", str(out)])
    assert result.exit_code == 75 and "data is stale" in result.output  # refuse, the config's action; retry later
    project_yaml.write_text(before.replace("action: refuse", "action: warn"))
    try:
        result = CliRunner().invoke(app, ["features", "training-set", "purchase", "--as-of", "2026-12-03",
                                          "--horizon", "4w", "--out", str(out)])
        assert result.exit_code == 0, result.output
    finally:
        project_yaml.write_text(before)
    pd.testing.assert_frame_equal(ts, pd.read_parquet(out), check_like=False)

    # what train learns from, as the model sees it: LightGBM takes it as it is
    X = p.model_inputs(ts[ts.snapshot == "train"])
    assert "email_consent" not in X.columns and not {"customer_id", "as_of", "snapshot", "label"} & set(X.columns)
    assert {c for c in X.columns if X[c].dtype == "category"} == {"country", "acquisition_channel", "plan"}
    assert all(X[c].dtype == "float64" for c in X.columns if X[c].dtype != "category")
    import lightgbm

    train = ts[ts.snapshot == "train"]
    lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, train.label)
    # pandas' string dtypes (convert_dtypes), an attribute all null among them: it failed with a TypeError
    typed = train.convert_dtypes().assign(country=pd.array([None] * len(train), dtype="string"))
    Xt = p.model_inputs(typed)
    assert Xt.country.dtype == "float64" and Xt.plan.dtype == "category"
    # of the whole training set, the columns train leaves out as repeats of another are left out too
    from pipeline.jobs.train import repeated_inputs

    whole = p.model_inputs(ts)
    repeats = repeated_inputs(ts, [c for c in ts.columns if c in set(X.columns) | set(whole.columns)])
    assert repeats and not set(repeats) & set(whole.columns) and set(repeats) <= set(X.columns), repeats


def test_a_data_error_from_python_names_every_problem():
    from datetime import datetime

    from features.validation import Problem, ValidationReport
    from pipeline.jobs.data import DataError

    report = ValidationReport(datetime(2026, 11, 28), problems=[
        Problem("events", "amount", "negative_amount", "error", 1, "events.parquet: 1 purchase with a negative amount",
                "refunds are their own event type", ("row 6: -3.5",)),
        Problem("events", "customer_id", "null_id", "error", 2, "events.parquet: 2 rows without a customer_id",
                "drop them or fill them", ("row 7: NULL",)),
        Problem("events", None, "repeats", "warning", 5, "5 repeated event ids", "nothing to do"),
        Problem("customers", None, "unreadable", "error", 1, "file c.parquet does not exist", "correct the file"),
    ])
    e = DataError(report)
    assert e.summary == "3 data errors (and 1 warning) found; nothing was written"
    text = str(e)
    assert text.startswith(e.summary + ":")
    assert "events.amount: events.parquet: 1 purchase with a negative amount [1 row] (e.g. row 6: -3.5). " \
           "Fix: refunds are their own event type" in text
    assert "events.customer_id:" in text and "repeated" not in text  # the errors; warnings stay in the report
    assert "[2 rows]" in text
    # a missing file is no row: it read "does not exist [1 rows]"
    assert "customers: file c.parquet does not exist. Fix: correct the file" in text
