"""`dynseg monitor` and `dynseg lift` end to end: a shop whose behaviour drifts after October,
models trained before it, a campaign with a real effect, and the alarms' exit codes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from html import escape as html_escape
from datetime import timedelta

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import Project, trained_champions
from features.asof import parse_as_of
from pipeline import runs
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.jobs.data import simulate_campaign_job
from pipeline.jobs.monitor import lift_job, monitor_job
from pipeline.jobs.score import score_job
from pipeline.synthetic import generate, write

pytestmark = pytest.mark.slow
runner = CliRunner()


@contextlib.contextmanager
def linked_later(shop, chosen: list[str]):
    """Each id in ``chosen`` linked to a new account 'a-<id>' opened in November (a profile of its
    own; 'a-…' sorts first, so the merged person's canonical id), the sources put back after."""
    data = shop.workspace / "data"
    saved = {n: (data / n).read_bytes() for n in ("identities.parquet", "customers.parquet")}
    links, profiles = pd.read_parquet(data / "identities.parquet"), pd.read_parquet(data / "customers.parquet")
    extra = pd.DataFrame({"customer_id": [*chosen, *(f"a-{c}" for c in chosen)], "id_type": "email",
                          "id_value": [f"merge-{c}@x" for c in chosen] * 2})
    pd.concat([links, extra.astype(links.dtypes.to_dict())], ignore_index=True).to_parquet(data / "identities.parquet")
    new = profiles[profiles.customer_id.isin(chosen)].assign(customer_id=lambda d: "a-" + d.customer_id,
                                                            signup_at=pd.Timestamp("2026-11-01"))
    pd.concat([profiles, new], ignore_index=True).to_parquet(data / "customers.parquet")
    try:
        yield
    finally:
        for n, b in saved.items():
            (data / n).write_bytes(b)
TRAIN_AS_OF, CAMPAIGN, LATE = "2026-08-31", parse_as_of("2026-08-31"), parse_as_of("2026-11-27")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        p = Project(tmp_path_factory.mktemp("monitor") / "proj")
        for var in ("DYNSEG_WORKSPACE", "DYNSEG_PROFILE", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        mp.setenv("DYNSEG_PROJECT", str(p.root))
        write(generate(5000, seed=31, end="2026-11-27", drift_from="2026-10-31", drift=0.9), p.workspace / "data")
        configs = p.root / "configs"
        segments = yaml.safe_load((configs / "segments.yaml").read_text())
        for s in segments["segments"]:  # big holdouts: a 5,000-customer shop still measures lift
            if s["name"] in ("likely_buyers", "at_risk"):
                s["holdout"] = 0.5
        (configs / "segments.yaml").write_text(yaml.safe_dump(segments, sort_keys=False))
        cfg = trained_champions(p, as_of=parse_as_of(TRAIN_AS_OF))
        p.campaign_run = score_job(cfg, CAMPAIGN)
        p.late_run = score_job(cfg, LATE)
        yield p


def test_realized_quality_matches_what_the_model_card_promised(shop):
    r = lift_job(load_config(shop.root), run_id=shop.campaign_run.run_id)
    for target, q in r.quality.items():
        promised = q.comparison.set_index("metric").at["roc_auc", "promised"]
        assert abs(q.metrics["roc_auc"] - promised) < 0.05, (target, q.metrics["roc_auc"], promised)
        assert abs(q.metrics["mean_predicted"] - q.metrics["realized_rate"]) < 0.05
        assert not q.alarm and not any(n.startswith("in sample") for n in q.notes)  # scored after the test cutoffs
    # no campaign happened: treated and holdout convert alike
    assert not (r.lift.abs_lift_low > 0.02).any(), r.lift[["segment", "abs_lift", "abs_lift_low"]]
    # the run was scored (today) after its outcome window: nothing from it could have been sent, so
    # a difference is chance and no harm alarm is raised (a backfill read "the campaign lowered conversion")
    assert r.notes[0].startswith(f"run {r.run_id} was scored on ") and "after its outcome window had passed" in r.notes[0]
    assert not r.alarm_on_harm
    lift_summary = json.loads((shop.workspace / "reports" / "lift" / "2026-08-31" / "summary.json").read_text())
    # as_of is the cutoff instant in every JSON dynseg writes (it read "2026-09-01 00:00:00" here)
    assert (lift_summary["as_of"], lift_summary["as_of_label"]) == ("2026-09-01T00:00:00", "2026-08-31"), lift_summary
    # and the command says so before its figures, which it changes the meaning of
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["lift", "--run", r.run_id])
    assert result.exit_code == 0, result.output
    assert result.stdout.index("after its outcome window had passed") < result.stdout.index("Holdout lift, run")
    assert result.stdout.count("after its outcome window had passed") == 1


def test_a_model_trained_in_the_past_states_the_data_it_used(shop):
    """Trained as of the end of August on a log that runs to late November: the card's data window
    ends before the training date, not where the log ends now."""
    from models import registry

    for name in ("dynseg-purchase", "dynseg-churn"):
        window = registry.version_details(name, "1")["data_window"]
        last = parse_as_of(window["last_event"][:19].replace(" ", "T"))
        assert CAMPAIGN - timedelta(days=2) < last < CAMPAIGN, (name, window["last_event"])
        assert f"to {window['last_event']}" in registry.version_details(name, "1")["card"]


def test_lift_recovers_a_simulated_campaign(shop):
    cfg = load_config(shop.root)
    campaign = simulate_campaign_job(cfg, shop.campaign_run.run_id, uplift=0.3, segments=["likely_buyers", "at_risk"])
    assert campaign.treated > 100 and campaign.events_added > 0
    result = lift_job(cfg, run_id=shop.campaign_run.run_id)
    # a campaign was sent from the run (simulated in the data): its lift is a measurement again
    assert result.alarm_on_harm and not any("after its outcome window" in n for n in result.notes), result.notes
    r = result.lift.set_index("segment")
    db = shop.workspace / "dynseg.duckdb"
    sent = ["likely_buyers", "at_risk"]
    for seg in sent:
        row = r.loc[seg]
        # The generator converts 30 % of treated non-buyers. A holdout member sendable in the other
        # segment sent to was treated by it (holdouts are drawn per segment): a share c of the
        # holdout converts like the treated, so the lift measured is (1 - c) of the effect, from
        # an untreated rate b0 that the holdout's rate overstates by 0.3 c (1 - b0).
        held = runs.read(db, "SELECT EXISTS (SELECT 1 FROM segment_members s WHERE s.run_id = h.run_id AND s.sendable "
                             "AND s.customer_id = h.customer_id AND list_contains(?, s.segment)) AS treated "
                             "FROM segment_members h WHERE h.run_id = ? AND h.segment = ? AND h.holdout AND h.consented",
                         [[s for s in sent if s != seg], shop.campaign_run.run_id, seg])
        c = float(held.treated.mean())
        b0 = (row.conversion_holdout - 0.3 * c) / (1 - 0.3 * c)
        expected = (1 - c) * 0.3 * (1 - b0)
        # within the 99 % interval (the reported one is 95 %: it misses the truth in one shop of 20,
        # and a change of model moves which shop this is; at_risk's 69 treated missed it by 0.004)
        se = (row.abs_lift_high - row.abs_lift_low) / (2 * 1.959964)
        assert abs(row.abs_lift - expected) <= 2.575829 * se, (seg, row.abs_lift, expected, c, se)
        assert row.abs_lift > 0, (seg, row.abs_lift, expected, c)
    assert r.loc["likely_buyers"].abs_lift_low > 0 and r.loc["likely_buyers"].conclusive  # the larger campaign
    # segments that were not sent to show nothing; a tiny holdout says so plainly
    small = r.loc["new_subscribers"]
    assert not small.conclusive and "inconclusive" in small.verdict
    _quality_leaves_out_the_treated(shop, cfg)
    _holdouts_sendable_elsewhere_are_counted(shop, r)


def test_training_says_when_the_test_labels_window_held_a_campaign_from_a_run(shop, tmp_path):
    """A model tested on a snapshot whose label window follows a scoring run with sendable members
    is graded partly on what the campaign did: training says so (the card blamed the base rate)."""
    from pipeline.jobs.train import campaign_overlap

    db = shop.workspace / "dynseg.duckdb"
    run = shop.campaign_run.run_id
    scored = runs.read(db, "SELECT customer_id FROM customer_scores WHERE run_id = ?", [run]).customer_id
    sendable = runs.read(db, "SELECT DISTINCT customer_id FROM segment_members WHERE run_id = ? AND sendable "
                             "AND kind <> 'suppression'", [run]).customer_id
    (said,) = campaign_overlap(db, scored, CAMPAIGN - timedelta(days=3), timedelta(days=30))
    assert said.startswith(f"{len(sendable):,} of the test snapshot's {scored.nunique():,} customers were sendable in "
                           f"scoring run {run} (as of 2026-08-31)"), said
    assert "if their exports were sent, a campaign moved the labels" in said
    assert "within the test labels' window (the 30 days after the test snapshot as of" in said, said
    # a run before the window is said to be before it (it was said to be within it)
    (said,) = campaign_overlap(db, scored, CAMPAIGN + timedelta(days=10), timedelta(days=30))
    assert "(as of 2026-08-31), 10 days before the test labels' window (the 30 days after" in said, said
    # a window that ends before the run, or starts a horizon after it: nothing to say
    assert campaign_overlap(db, scored, CAMPAIGN - timedelta(days=40), timedelta(days=30)) == []
    assert campaign_overlap(db, scored, CAMPAIGN + timedelta(days=31), timedelta(days=30)) == []
    # two runs in one window (nightly runs put thirty there): one warning, with the customers
    # sendable in either, and the run with the most (each run was a warning of its own)
    late = runs.read(db, "SELECT DISTINCT customer_id FROM segment_members WHERE run_id = ? AND sendable "
                         "AND kind <> 'suppression'", [shop.late_run.run_id]).customer_id
    either = scored[scored.isin(set(sendable) | set(late))].nunique()
    (said,) = campaign_overlap(db, scored, parse_as_of("2026-10-15"), timedelta(days=60))
    counts = {run: scored.isin(set(sendable)).sum(), shop.late_run.run_id: scored.isin(set(late)).sum()}
    most = max(counts, key=counts.get)
    assert said.startswith(f"{either:,} of the test snapshot's {scored.nunique():,} customers were sendable in some of "
                           f"2 scoring runs (as of 2026-08-31 to 2026-11-27; the most, {counts[most]:,}, in run {most} "), said
    # a pruned run in the window cannot be checked: said so (it was skipped without a word)
    import shutil

    copy = tmp_path / "pruned.duckdb"
    shutil.copy(db, copy)
    if db.with_name(db.name + ".wal").exists():
        shutil.copy(db.with_name(db.name + ".wal"), copy.with_name(copy.name + ".wal"))
    runs.prune(copy, 60)
    (said,) = campaign_overlap(copy, scored, CAMPAIGN - timedelta(days=3), timedelta(days=30))
    assert said.startswith("1 scoring run within or just before the test labels' window (as of 2026-08-31) was pruned "
                           "(segments prune): who they made sendable is gone"), said


def _campaigns(shop) -> list[str]:
    """The segments with a holdout: the campaigns lift measures."""
    segments = yaml.safe_load((shop.root / "configs" / "segments.yaml").read_text())["segments"]
    return [s["name"] for s in segments if s.get("holdout", 0) > 0 and s["kind"] != "suppression"]


def _holdouts_sendable_elsewhere_are_counted(shop, lift):
    """A holdout member of one campaign may be sendable in another (holdouts are drawn per segment):
    the lift table counts them, as a plain SQL count over the run's memberships does."""
    db = shop.workspace / "dynseg.duckdb"
    expected = runs.read(db, """
        WITH m AS (SELECT * FROM segment_members WHERE run_id = ? AND list_contains(?, segment))
        SELECT h.segment, count(*) FILTER (WHERE EXISTS (SELECT 1 FROM m s WHERE s.sendable
               AND s.customer_id = h.customer_id AND s.segment <> h.segment)) AS n
        FROM m h WHERE h.holdout AND h.consented GROUP BY 1""", [shop.campaign_run.run_id, _campaigns(shop)]
    ).set_index("segment").n
    got = lift.holdout_sendable_elsewhere
    assert got.reindex(expected.index).tolist() == expected.tolist() and expected.sum() > 0, (got, expected)
    result = runner.invoke(app, ["lift", "--run", shop.campaign_run.run_id])
    assert "holdout members were sendable in" in " ".join(result.output.split())


def _quality_leaves_out_the_treated(shop, cfg):
    """After the campaign, the purchase model is graded on the customers it did not reach: there
    the model still keeps its promise; the treated bought more than it predicted."""
    run_id = shop.campaign_run.run_id
    q = lift_job(cfg, run_id=run_id, log_to_mlflow=False).quality["purchase"]
    db = shop.workspace / "dynseg.duckdb"
    holdout_segments = _campaigns(shop)
    marks = ", ".join("?" * len(holdout_segments))
    scored = runs.read(db, "SELECT customer_id FROM customer_scores WHERE run_id = ? AND purchase_score IS NOT NULL",
                       [run_id])
    reached = runs.read(db, f"SELECT DISTINCT customer_id FROM segment_members WHERE run_id = ? AND sendable "
                            f"AND segment IN ({marks})", [run_id, *holdout_segments])
    n_treated = int(scored.customer_id.isin(reached.customer_id).sum())
    assert q.n_treated == n_treated > 100 and q.n == len(scored) - n_treated
    assert abs(q.metrics["mean_predicted"] - q.metrics["realized_rate"]) < 0.03, q.metrics
    b = q.calibration_bands
    treated_predicted = (b.treated * b.predicted_treated).sum() / b.treated.sum()
    treated_realized = (b.treated * b.realized_treated).sum() / b.treated.sum()
    assert treated_realized - treated_predicted > 0.05, (treated_predicted, treated_realized)


def test_lift_refuses_a_run_whose_outcome_window_is_still_open(shop):
    result = runner.invoke(app, ["lift", "--run", shop.late_run.run_id])
    assert result.exit_code == 75  # try again later: a nightly lift of a date not yet ready is no fault
    assert "outcome window" in " ".join(result.output.split())


def _lift_with_churn_horizon(cfg, db, run_id: str, days: int):
    """lift of a run whose churn model is stored with a horizon of ``days`` (put back afterwards)."""
    import duckdb

    with duckdb.connect(str(db)) as con:
        stored = con.execute("SELECT models FROM scoring_runs WHERE run_id = ?", [run_id]).fetchone()[0]
        models = json.loads(stored)
        for m in models:
            if m["target"] == "churn":
                m["horizon_days"] = days
        con.execute("UPDATE scoring_runs SET models = ? WHERE run_id = ?", [json.dumps(models), run_id])
    try:
        return lift_job(cfg, run_id=run_id, log_to_mlflow=False)
    finally:
        with duckdb.connect(str(db)) as con:
            con.execute("UPDATE scoring_runs SET models = ? WHERE run_id = ?", [stored, run_id])


def test_lift_measures_the_outcomes_whose_window_closed_and_says_which_wait(shop):
    """A purchase window closed while the churn window still runs: the purchase segments and model
    are measured, the retention ones wait with a note (the whole run was refused). The churn window
    is the churn model's own horizon (`train churn --horizon 120d`), stored with the run."""
    import duckdb

    cfg = load_config(shop.root)
    db = shop.workspace / "dynseg.duckdb"
    run_id = shop.campaign_run.run_id
    with duckdb.connect(str(db)) as con:
        stored = con.execute("SELECT models FROM scoring_runs WHERE run_id = ?", [run_id]).fetchone()[0]
        assert {m["target"]: m["horizon_days"] for m in json.loads(stored)} == {"purchase": 30, "churn": 60}
    r = _lift_with_churn_horizon(cfg, db, run_id, 120)
    assert set(r.quality) == {"purchase"} and set(r.windows) == {"purchase"}
    assert set(r.lift.outcome) == {"purchased"} and len(r.lift)
    waiting = [n for n in r.notes if "not measured yet: the churn window runs to 2026-12-29" in n]
    assert any(n.startswith("realized quality of the churn model") for n in waiting), r.notes
    assert any(n.startswith("high_churn_risk: not measured yet") for n in waiting), r.notes
    assert "the churn outcome window is the model's own, 120 days" in " ".join(r.notes), r.notes


def test_a_window_that_ends_after_the_datas_newest_event_waits(shop):
    """A log whose newest event was hours short of a window's end (02:00, with 22 hours of the window
    missing) counted as closed: the window was measured on part of its outcomes, with no word."""
    from pipeline.jobs.data import load_for_run

    cfg = load_config(shop.root)
    newest = load_for_run(cfg).report.time_range(cfg.role_of)[1]
    db = shop.workspace / "dynseg.duckdb"
    run_id = shop.campaign_run.run_id
    t = shop.campaign_run.as_of
    end = (pd.Timestamp(newest).normalize() + pd.Timedelta(days=1)).to_pydatetime()  # the midnight after it
    assert end - timedelta(days=1) <= newest < end
    r = _lift_with_churn_horizon(cfg, db, run_id, (end - t).days)  # ends at that midnight: after the newest event
    assert set(r.quality) == {"purchase"}, r.notes
    label = (end - timedelta(days=1)).strftime("%Y-%m-%d")
    assert any(f"not measured yet: the churn window runs to {label}, after the data's end" in n for n in r.notes), r.notes


def test_lift_grades_a_model_on_the_horizon_it_was_trained_on_not_the_configs(shop):
    """A churn model trained with `--horizon 8w` was graded on labels.yaml's 60 days: its realized
    AUC, Brier and calibration measured on an outcome it does not predict, exit 0, no word. Here the
    config says 120 days and the model 60: the window is the model's, and lift says so."""
    cfg = load_config(shop.root)
    longer = dataclasses.replace(cfg, labels=cfg.labels.model_copy(update={
        "churn": cfg.labels.churn.model_copy(update={"horizon": "120d"})}))
    r = lift_job(longer, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    as_config = lift_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    assert set(r.quality) == {"purchase", "churn"}
    assert r.windows["churn"] == (CAMPAIGN, CAMPAIGN + timedelta(days=60))
    assert r.quality["churn"].metrics == as_config.quality["churn"].metrics
    assert "the churn outcome window is the model's own, 60 days (the horizon its version was trained on), not " \
           "configs/labels.yaml's 120 days" in r.notes, r.notes
    assert not any("outcome window is the model's own" in n for n in as_config.notes), as_config.notes


def test_monitor_and_lift_record_in_the_configured_experiment(shop):
    """A copied workspace is refused an experiment whose files stay in the other folder, and told to
    name new experiments: the monitoring one was fixed in code, so no name helped lift or monitor."""
    import mlflow

    cfg = load_config(shop.root)
    other = dataclasses.replace(cfg, monitoring=cfg.monitoring.model_copy(update={"experiment": "monitoring-copy"}))
    r = lift_job(other, run_id=shop.campaign_run.run_id)
    exp = mlflow.get_experiment_by_name("monitoring-copy")
    assert exp is not None and mlflow.get_run(r.mlflow_run_id).info.experiment_id == exp.experiment_id


def test_a_key_column_of_features_no_model_takes_is_a_note(shop):
    """`init` copies the demo's key columns: in a shop without email events `n_email_open_30d` is
    no model's input, and every `monitor` run exited 1 on it, the tour's last step. A column the
    project's feature set has but no model of the run takes is left out with a note."""
    cfg = load_config(shop.root)
    inputs = {c for m in ("dynseg-purchase", "dynseg-churn") for c in _champion_inputs(m)}
    assert "n_purchase_365d" in inputs
    # monetary_mean is a model input; email_consent is in the feature set, excluded from every model by default
    cfg.monitoring.drift.key_columns = ["monetary_mean", "email_consent"]
    r = monitor_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    assert len(r.notes) == 1 and "drift.key_columns 'email_consent': no model of this run takes it" in r.notes[0], r.notes


def _champion_inputs(name: str) -> list[str]:
    from models import registry

    return list(registry.bundle_of(registry.load_champion(name)[0]).model.features_)


def test_a_key_column_no_model_compares_is_refused_naming_the_key(shop):
    """A misspelt key column was dropped in silence: its alarm could never fire."""
    cfg = load_config(shop.root)
    cfg.monitoring.drift.key_columns = ["monetary_mean", "n_purchase_09d"]
    with pytest.raises(ValueError) as e:
        monitor_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    said = str(e.value)
    assert "configs/monitoring.yaml: drift.key_columns[1]: 'n_purchase_09d' is compared by no model" in said
    assert "did you mean 'n_purchase_90d'?" in said and "purchase_score" in said
    assert "key_columns[0]" not in said
    # set in a personal override, the error names that file, where the fix goes
    local = shop.root / "configs" / "local" / "monitoring.yaml"
    local.parent.mkdir(exist_ok=True)
    local.write_text("drift:\n  key_columns: [n_purchase_09d]\n")
    try:
        with pytest.raises(ValueError, match=r"configs/local/monitoring.yaml: drift.key_columns\[0\]: 'n_purchase_09d'"):
            monitor_job(load_config(shop.root), run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    finally:
        local.unlink()


def test_drift_is_found_in_the_drifted_period_and_not_before(shop):
    cfg = load_config(shop.root)
    before = monitor_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    assert not any(d.alarm for d in before.drift.values()), before.reasons
    result = runner.invoke(app, ["monitor", "--run", shop.late_run.run_id])
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "drifted" in text and "key column" in text
    # a scheduler's log has a line per stage (it had nothing for the run's 30-80 s)
    import re

    said = re.findall(rf"^\d\d:\d\d:\d\dZ monitor {shop.late_run.run_id}: (.+) \(\+\d+\.\d s\)$", result.stderr, re.M)
    assert said[0] == "features" and {"purchase drift report", "churn drift report"} <= set(said), said
    assert said[-2:] == ["segment health", "MLflow record"], said
    summary = json.loads((shop.workspace / "reports" / "monitor" / "2026-11-27" / "summary.json").read_text())
    assert summary["alarm"] and summary["drift"]["purchase"]["drift_share"] > before.drift["purchase"].drift_share
    assert (summary["as_of"], summary["as_of_label"]) == ("2026-11-28T00:00:00", "2026-11-27"), summary
    used = {m.target: (m.name, str(m.version)) for m in shop.late_run.models}  # the versions compared are named
    assert {k: (v["model"], v["version"]) for k, v in summary["drift"].items()} == used
    html = (shop.workspace / "reports" / "monitor" / "2026-11-27" / "drift_purchase.html").read_text()
    assert len(html) > 10_000
    # the report a reviewer opens leads with dynseg's verdict and its reasons: Evidently's own line
    # ("Dataset Drift is NOT detected") counts columns only, and read alone it contradicted the alarm
    verdict = html[html.index("<div id='dynseg-verdict'"):]
    verdict = verdict[:verdict.index("</div></div>")]
    body = html[html.lower().index("<body"):].split(">", 1)[1]
    assert "dynseg: drift ALARM" in verdict and body.lstrip().startswith("<div id='dynseg-verdict'")  # shown first
    reasons = json.loads((shop.workspace / "reports" / "monitor" / "2026-11-27" / "drift_purchase.json").read_text())
    assert reasons["alarm"] and reasons["reasons"]
    for reason in reasons["reasons"]:
        assert html_escape(reason) in verdict, reason


def test_a_monitor_stopped_half_way_leaves_the_dates_reports_as_they_were(shop, monkeypatch):
    """SIGTERM after the purchase model's report left `reports/monitor/<date>/` with that report and
    no summary: a dashboard listing the folder saw a complete-looking report. They are written to a
    temp folder put in place whole."""
    import pipeline.jobs.monitor as job

    cfg = load_config(shop.root)
    first = monitor_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    folder = first.folder
    assert first.files["summary"] == folder / "summary.json" and first.files["summary"].exists()
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def stopped(*args, **kwargs):  # the drift reports are written by now
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "health_alarms", stopped)
    with pytest.raises(KeyboardInterrupt):
        monitor_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_segment_health_alarms_name_the_segment_and_the_change(shop):
    from pipeline.jobs.monitor import find_run, health_alarms

    cfg = load_config(shop.root)
    run = find_run(cfg, shop.late_run.run_id)
    assert run.previous_run_id == shop.campaign_run.run_id
    late = {r.segment: r.size for r in shop.late_run.health.itertuples()}
    early = {r.segment: r.size for r in shop.campaign_run.health.itertuples()}
    cfg.monitoring.segment_health.max_size_change = 0.02
    alarms = health_alarms(cfg, run)
    moved = [s for s in late if max(late[s], early[s]) >= 100 and abs(late[s] / max(early[s], 1) - 1) > 0.02]
    assert moved and len([a for a in alarms if "changed size" in a]) == len(moved)
    assert all(any(f"segment {s!r} changed size" in a for a in alarms) for s in moved)
    assert not [a for a in alarms if "definition changed" in a or "models changed" in a]  # neither did here
    cfg.monitoring.segment_health.max_size_change = 100.0
    assert not [a for a in health_alarms(cfg, run) if "changed size" in a]


def test_decay_alarm_exits_3_naming_the_model(shop):
    path = shop.root / "configs" / "monitoring.yaml"
    original = path.read_text()
    doc = yaml.safe_load(original)
    doc["quality"]["auc_floor"]["purchase"] = 0.99  # no model reaches it
    path.write_text(yaml.safe_dump(doc))
    try:
        result = runner.invoke(app, ["lift", "--run", shop.campaign_run.run_id])
    finally:
        path.write_text(original)
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    assert "purchase: realized ROC AUC" in text and "below the floor 0.990" in text


def test_lift_on_a_run_before_the_models_test_cutoff_says_it_is_in_sample(shop):
    """Last in this module: it adds an earlier run (the scores of a date the models learned from)."""
    cfg = load_config(shop.root)
    early = score_job(cfg, parse_as_of("2026-05-01"))
    assert any("its scores here are in sample" in w for w in early.warnings), early.warnings
    # a backfill: the campaign run's movement is now against it, in its MLflow record too
    from mlflow import MlflowClient

    recorded = MlflowClient().get_run(shop.campaign_run.mlflow_run_id)
    assert recorded.data.tags["movement_against_run"] == early.run_id
    health = runs.read(shop.workspace / "dynseg.duckdb", "SELECT segment, entered FROM segment_health WHERE run_id = ?",
                       [shop.campaign_run.run_id])
    history = MlflowClient().get_metric_history(shop.campaign_run.mlflow_run_id, f"entered_{health.segment[0]}")
    assert [m.step for m in history] == [0, 1] and history[-1].value == health.entered[0]
    r = lift_job(cfg, run_id=early.run_id)
    for target, q in r.quality.items():
        assert q.notes[0].startswith("in sample: the model was fitted on outcomes up to its test snapshot as of"), (target, q.notes)


def test_an_identity_merged_after_the_run_keeps_its_outcomes_and_is_said(shop, monkeypatch):
    """A run stores members under the canonical id of its day; a link added later can merge one into
    a group whose smallest id is another. Lift read outcomes under the stored id and lost the
    merged buyers' purchases (converted treated members counted as not converted), in silence."""
    import pandas as pd

    cfg = load_config(shop.root)
    before = lift_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    assert not any("merged since" in n for n in before.notes)
    db = shop.workspace / "dynseg.duckdb"
    buyers = runs.read(db, "SELECT DISTINCT customer_id FROM segment_members WHERE run_id = ? AND sendable "
                           "AND segment = 'likely_buyers'", [shop.campaign_run.run_id]).customer_id
    window = (CAMPAIGN, CAMPAIGN + timedelta(days=30))
    events = pd.read_parquet(shop.workspace / "data" / "events.parquet")
    bought = set(events[(events.event_type == "order_completed") & (events.ts >= window[0].replace(tzinfo=None))
                        & (events.ts < window[1].replace(tzinfo=None))].customer_id)
    chosen = [c for c in buyers if c in bought][:5]
    assert len(chosen) == 5
    with linked_later(shop, chosen):
        after = lift_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False)
    b, a = (r.lift.set_index("segment").loc["likely_buyers"] for r in (before, after))
    assert a.conversions_treated == b.conversions_treated, (a.conversions_treated, b.conversions_treated)
    assert after.quality["purchase"].metrics["realized_rate"] == before.quality["purchase"].metrics["realized_rate"]
    assert any(n.startswith("5 of the run's members were merged since") for n in after.notes), after.notes
    # intervals for every lift on screen and in MLflow, not bare relative lifts
    from pipeline.cli.common import out

    monkeypatch.setattr(out, "width", 400)
    result = runner.invoke(app, ["lift", "--run", shop.campaign_run.run_id])
    said = " ".join(result.output.split())
    assert "rel lift [95% CI]" in said and "dynseg does not know what was sent" in said, said


def test_explain_and_drivers_of_an_earlier_run_after_an_identity_link(shop, monkeypatch):
    """A member of the campaign run merged since into 'a-…' (a link added after the run) has no
    features under its old id as of the run: explain said IndexError and `segments show` KeyError,
    tracebacks both. Now explain names the merge and the drivers leave such ids out, counted."""
    from pipeline.cli.common import out

    monkeypatch.setattr(out, "width", 400)
    db = shop.workspace / "dynseg.duckdb"
    members = runs.read(db, "SELECT DISTINCT customer_id FROM segment_members WHERE run_id = ? AND "
                            "segment = 'likely_buyers' ORDER BY customer_id", [shop.campaign_run.run_id]).customer_id
    chosen = list(members[:40])
    with linked_later(shop, chosen):
        explained = runner.invoke(app, ["explain", chosen[0], "--run", shop.campaign_run.run_id])
        shown = runner.invoke(app, ["segments", "show", "likely_buyers", "--as-of", "2026-08-31", "--sample", "0"])
    said = " ".join(explained.output.split())
    assert explained.exit_code == 1, said
    assert f"has been merged into 'a-{chosen[0]}' by an identity link added since the run" in said, said
    assert "Traceback" not in said
    said = " ".join(shown.output.split())
    assert shown.exit_code == 0, said
    assert "sampled id(s) of this run are no customer as of its date" in said, said
    assert "What sets the segment apart" in said, said


def test_a_holdout_share_far_from_its_fraction_is_a_sample_ratio_mismatch(shop):
    """The holdout is a hash of the customer at the segment's fraction; a share far from it (a
    filter applied to one side) makes the lift untrustworthy, and nothing said so."""
    import duckdb

    cfg = load_config(shop.root)
    assert not any("sample ratio mismatch" in n for n in lift_job(cfg, run_id=shop.campaign_run.run_id,
                                                                   log_to_mlflow=False).notes)
    db = str(shop.workspace / "dynseg.duckdb")
    where = "run_id = ? AND segment = 'at_risk' AND customer_id IN (SELECT customer_id FROM segment_members " \
            "WHERE run_id = ? AND segment = 'at_risk' AND holdout ORDER BY customer_id LIMIT 60)"
    with duckdb.connect(db) as con:
        moved = con.execute(f"SELECT customer_id FROM segment_members WHERE {where}",
                            [shop.campaign_run.run_id] * 2).fetchall()
        con.execute(f"UPDATE segment_members SET holdout = false WHERE {where}", [shop.campaign_run.run_id] * 2)
    try:
        notes = lift_job(cfg, run_id=shop.campaign_run.run_id, log_to_mlflow=False).notes
    finally:
        with duckdb.connect(db) as con:
            con.execute("UPDATE segment_members SET holdout = true WHERE run_id = ? AND segment = 'at_risk' "
                        "AND list_contains(?, customer_id)", [shop.campaign_run.run_id, [m[0] for m in moved]])
    assert any(n.startswith("at_risk: sample ratio mismatch") and "against the configured 50%" in n for n in notes), notes


def test_a_segment_nobody_could_be_sent_is_said_not_measured(shop):
    """A shop without consent: every member not sendable, no consented holdout. The segment left
    the lift table without a word (exit 0, an empty lift.csv)."""
    import duckdb

    cfg = load_config(shop.root)
    db = str(shop.workspace / "dynseg.duckdb")
    run_id = shop.campaign_run.run_id
    with duckdb.connect(db) as con:
        saved = con.execute("SELECT customer_id, consented, sendable FROM segment_members WHERE run_id = ? AND "
                            "segment = 'likely_buyers'", [run_id]).df()
        con.execute("UPDATE segment_members SET consented = false, sendable = false WHERE run_id = ? AND "
                    "segment = 'likely_buyers'", [run_id])
    try:
        r = lift_job(cfg, run_id=run_id, log_to_mlflow=False)
    finally:
        with duckdb.connect(db) as con:
            con.register("saved", saved)
            con.execute("UPDATE segment_members m SET consented = s.consented, sendable = s.sendable FROM saved s "
                        "WHERE m.run_id = ? AND m.segment = 'likely_buyers' AND m.customer_id = s.customer_id", [run_id])
    assert "likely_buyers" not in set(r.lift.segment)
    assert any(n.startswith("likely_buyers: not measured: none of its") and "no member had consent" in n
               for n in r.notes), r.notes


def test_a_segments_outcome_key_chooses_the_window_lift_counts(shop):
    """Lift chose a segment's outcome by whether its rule mentioned churn_: at_risk (a recency
    rule, a retention campaign) was counted over the 30-day purchase horizon, and nothing could
    say otherwise. `outcome: retention` counts a purchase within the churn horizon (60 days)."""
    import duckdb

    cfg = load_config(shop.root)
    run_id = shop.campaign_run.run_id
    before = lift_job(cfg, run_id=run_id, log_to_mlflow=False).lift.set_index("segment")
    assert before.at["at_risk", "outcome"] == "purchased" and before.at["high_churn_risk", "outcome"].startswith("retained")
    db = str(shop.workspace / "dynseg.duckdb")
    with duckdb.connect(db) as con:
        stored = con.execute("SELECT config FROM scoring_runs WHERE run_id = ?", [run_id]).fetchone()[0]
        config = json.loads(stored)
        for s in config["segments"]["segments"]:
            if s["name"] == "at_risk":
                s["outcome"] = "retention"
        con.execute("UPDATE scoring_runs SET config = ? WHERE run_id = ?", [json.dumps(config), run_id])
    try:
        after = lift_job(cfg, run_id=run_id, log_to_mlflow=False).lift.set_index("segment")
    finally:
        with duckdb.connect(db) as con:
            con.execute("UPDATE scoring_runs SET config = ? WHERE run_id = ?", [stored, run_id])
    assert after.at["at_risk", "outcome"] == "retained (a purchase)"
    # the same members, a window twice as long: more of them buy in it
    assert after.at["at_risk", "n_treated"] == before.at["at_risk", "n_treated"]
    assert after.at["at_risk", "conversions_treated"] > before.at["at_risk", "conversions_treated"]
    assert after.at["likely_buyers", "conversions_treated"] == before.at["likely_buyers", "conversions_treated"]
    shown = runner.invoke(app, ["segments", "show", "at_risk"])
    assert "a purchase within the purchase label's horizon — from the rule" in " ".join(shown.output.split())
    # set in configs/segments.yaml after the run (a choice of measurement): lift of that run follows it,
    # as `segments show` says (it read the run's stored definition only, and show said otherwise)
    config = shop.root / "configs" / "segments.yaml"
    original = config.read_text()
    doc = yaml.safe_load(original)
    next(d for d in doc["segments"] if d["name"] == "at_risk")["outcome"] = "retention"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        later = lift_job(load_config(shop.root), run_id=run_id, log_to_mlflow=False).lift.set_index("segment")
        shown = " ".join(runner.invoke(app, ["segments", "show", "at_risk"]).output.split())
    finally:
        config.write_text(original)
    assert later.at["at_risk", "outcome"] == "retained (a purchase)"
    assert later.at["at_risk", "conversions_treated"] == after.at["at_risk", "conversions_treated"]
    assert "a purchase within the churn label's horizon (retention)" in shown and "from the rule" not in shown


def test_a_rerun_that_redraws_holdouts_keeps_the_old_sides_and_lift_says_so(shop):
    """Re-scoring a past date with another holdout fraction replaced its memberships in silence
    (only "this run replaces run X"): if X's exports were sent, lift then graded sides that never
    were. The replaced run's members and sides are kept, and score and lift say who moved.
    Last in this module: it replaces the campaign run the tests above read."""
    config = shop.root / "configs" / "segments.yaml"
    original = config.read_text()
    segments = yaml.safe_load(original)
    for s in segments["segments"]:
        if s["name"] == "at_risk":
            s["holdout"] = 0.2
    config.write_text(yaml.safe_dump(segments, sort_keys=False))
    try:
        cfg = load_config(shop.root)
        old = shop.campaign_run.run_id
        rerun = score_job(cfg, CAMPAIGN, reasons=False)
        db = shop.workspace / "dynseg.duckdb"
        kept = runs.read(db, "SELECT segment, count(*) AS n, count(*) FILTER (WHERE holdout) AS held "
                             "FROM replaced_members WHERE run_id = ? GROUP BY 1", [old]).set_index("segment")
        before = runs.read(db, "SELECT 1 FROM segment_members WHERE run_id = ?", [rerun.run_id])
        assert kept.loc["at_risk", "held"] > 0 and len(before) > 0
        moved = runs.replaced_sides(db, rerun.run_id).set_index("segment")
        assert list(moved.index) == ["at_risk"] and moved.loc["at_risk", "sent_now_held"] == 0  # 0.5 -> 0.2: only out
        said = " ".join(w for w in rerun.warnings if "other side of the holdout" in w)
        assert f"than in run {old}, which this run replaces: at_risk: {moved.loc['at_risk', 'flipped']:,}" in said, rerun.warnings
        notes = lift_job(cfg, run_id=rerun.run_id, log_to_mlflow=False).notes
        assert any(n.startswith(f"at_risk: {moved.loc['at_risk', 'flipped']:,} members are on the other side") for n in notes), notes
    finally:
        config.write_text(original)


def test_a_head_to_head_on_a_snapshot_a_campaign_moved_says_so(shop):
    """A version trained a month after the campaign is compared with the champion on its own test
    snapshot, whose labels the campaign run's sendable members fall in: `train` warned of that, and
    `promote` / `compare` scored both versions there without a word (the head-to-head leans towards
    the champion, which chose who was sent)."""
    from models import registry
    from pipeline.jobs.promote import compare_on_one_snapshot
    from pipeline.jobs.train import train_job

    cfg = load_config(shop.root)
    newer = train_job(cfg, "purchase", as_of=parse_as_of("2026-09-30"), allow_unvalidated=True)
    _, champ = registry.load_champion("dynseg-purchase")
    cand = registry._version(registry.MlflowClient(), "dynseg-purchase", newer.version)
    cand_m, champ_m, where = compare_on_one_snapshot(cfg, "dynseg-purchase", cand, champ)
    # (the run as of the campaign date: another test may have scored that date again)
    assert "were sendable in scoring run" in cand_m["caveat"] and "(as of 2026-08-31)" in cand_m["caveat"], cand_m["caveat"]
    ok, text = registry.default_comparison()(cand_m, champ_m)
    assert "leans towards the version that chose who was sent" in text and "paired DeLong 95% CI" in text, text


def test_ids_that_changed_form_upstream_are_said_by_score_and_alarmed_by_monitor(shop):
    """Every customer id changed form (emails, then Shopify's gid://... ids): every member exited and
    entered again and the holdouts were drawn anew, while score said nothing and monitor "No alarm"."""
    import shutil

    data = shop.workspace / "data"
    kept = data.parent / "data-before-ids-changed"
    shutil.copytree(data, kept)
    try:
        for name in ("events", "customers", "identities"):
            frame = pd.read_parquet(data / f"{name}.parquet")
            frame["customer_id"] = "gid://shopify/Customer/" + frame["customer_id"]
            frame.to_parquet(data / f"{name}.parquet", index=False)
        day = LATE + timedelta(days=1)
        result = CliRunner().invoke(app, ["score", "--as-of", "2026-11-28"])
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        run = runs.read(shop.workspace / "dynseg.duckdb", "SELECT run_id FROM scoring_runs WHERE as_of = ?", [day]).run_id[0]
        n = runs.read(shop.workspace / "dynseg.duckdb", "SELECT count(*) AS n FROM customer_scores WHERE run_id = ?",
                      [shop.late_run.run_id]).n[0]
        assert f"only 0 of the previous run's {n:,} customers (0.0%) are scored in this run" in said, said
        assert f"dynseg segments drop-run {run} --reason" in said and n > 4000
        watched = CliRunner().invoke(app, ["monitor", "--run", run])
        assert watched.exit_code == 3 and f"only 0 of the previous run's {n:,} customers" in " ".join(watched.output.split())
        # the run before it, on the ids it knew, kept its customers: no such alarm
        cfg = load_config(shop.root)
        from pipeline.jobs.monitor import customers_kept_alarm

        late = runs.read(shop.workspace / "dynseg.duckdb", "SELECT previous_run_id FROM scoring_runs WHERE run_id = ?",
                         [shop.late_run.run_id]).previous_run_id[0]
        assert customers_kept_alarm(cfg, shop.workspace / "dynseg.duckdb", shop.late_run.run_id, late) is None
        assert CliRunner().invoke(app, ["segments", "drop-run", run, "--reason", "ids changed form"]).exit_code == 0
    finally:
        shutil.rmtree(data)
        kept.rename(data)
