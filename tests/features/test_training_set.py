import re
from datetime import datetime, timedelta

import pandas as pd
import pytest

from feature_rules import violations
from features.freshness import AheadOfNow, GapBefore, StaleDataError, check_freshness
from features.training_set import TrainingSetError, plan_snapshots
from pipeline.config import load_config
from pipeline.jobs.features import feature_spec, training_set_job
from pipeline.synthetic import generate, write

D = timedelta(days=1)


def test_plan_cutoffs_newest_first_with_complete_label_window():
    plan = plan_snapshots(datetime(2025, 1, 1), datetime(2026, 11, 27, 23, 59), 30 * D, 4, 30 * D)
    assert plan.cutoffs == (datetime(2026, 10, 28), datetime(2026, 9, 28), datetime(2026, 8, 29), datetime(2026, 7, 30))
    assert [plan.role(k) for k in range(4)] == ["test", "valid", "train", "train"]
    assert all(c + 30 * D <= datetime(2026, 11, 27, 23, 59) for c in plan.cutoffs)


def test_aware_instants_plan_like_the_same_instants_in_utc():
    from datetime import timezone

    plus2, utc = timezone(timedelta(hours=2)), timezone.utc
    end = datetime(2026, 11, 28, 1, tzinfo=plus2)  # 2026-11-27 23:00 UTC: T_last is 2026-10-28, not the 29th
    naive = plan_snapshots(datetime(2025, 1, 1), datetime(2026, 11, 27, 23), 30 * D, 4, 30 * D)
    assert naive.cutoffs[0] == datetime(2026, 10, 28)
    for start in (datetime(2025, 1, 1), datetime(2025, 1, 1, tzinfo=utc)):
        assert plan_snapshots(start, end, 30 * D, 4, 30 * D) == naive


def test_each_roles_labels_close_before_the_next_roles_cutoff():
    # a 60-day horizon, snapshots 30 days apart: the gaps between roles widen to the horizon
    plan = plan_snapshots(datetime(2025, 1, 1), datetime(2026, 11, 27, 23, 59), 60 * D, 5, 30 * D)
    test, valid, *train = plan.cutoffs
    assert test == datetime(2026, 9, 28) and valid == test - 60 * D
    assert train == [valid - 60 * D, valid - 90 * D, valid - 120 * D]  # training snapshots keep the step
    assert valid + 60 * D <= test and all(t + 60 * D <= valid for t in train)


def test_history_too_short_is_refused_with_what_fits():
    with pytest.raises(TrainingSetError, match=r"history too short.*Only 2 fit") as e:
        plan_snapshots(datetime(2026, 6, 1), datetime(2026, 11, 27), 30 * D, 6, 30 * D, min_history=90 * D)
    # two fit but three is the least: only a (much) shorter horizon, with three snapshots, or more history
    assert "fewer snapshots" not in str(e.value) and "shorter step" not in str(e.value)
    assert ("What can help: a shorter horizon (--horizon 29d or less, together with training.snapshots: 3 in "
            "configs/training.yaml); less history before each cutoff, on 3 snapshots (training.min_history: 89d or "
            "less, with training.snapshots: 3); more history (events from ") in str(e.value)
    cutoffs = plan_snapshots(datetime(2020, 1, 1), datetime(2026, 11, 27), 30 * D, 6, 30 * D).cutoffs
    assert f"from {cutoffs[-1] - 90 * D:%Y-%m-%d} on; the data starts 2026-06-01)" in str(e.value)
    with pytest.raises(TrainingSetError) as e:
        plan_snapshots(datetime(2026, 1, 1), datetime(2026, 11, 27), 30 * D, 10, 30 * D, min_history=90 * D)
    assert "What can help: fewer snapshots (training.snapshots: 8 fit); a shorter step" in str(e.value)
    # fewer snapshots fit at this horizon: a shorter one is worth naming only with the snapshots asked for
    with pytest.raises(TrainingSetError) as e:
        plan_snapshots(datetime(2025, 1, 1), datetime(2026, 11, 27), 60 * D, 25, 30 * D, min_history=90 * D)
    assert "fewer snapshots (training.snapshots: 17 fit)" in str(e.value) and "training.snapshots: 3" not in str(e.value)
    # snapshots that reach back before year 1 (a review's `snapshots: 30000`): a traceback
    # (OverflowError) before; many that do not are counted without building every smaller plan
    with pytest.raises(TrainingSetError, match=r"30000 snapshots 30 days apart .* before any date; the history starts "
                                               r"2025-01-01\. Set training.snapshots"):
        plan_snapshots(datetime(2025, 1, 1), datetime(2026, 11, 27), 30 * D, 30000, 30 * D)
    with pytest.raises(TrainingSetError, match=r"fewer snapshots \(training.snapshots: 518 fit\)"):
        plan_snapshots(datetime(2025, 1, 1), datetime(2026, 11, 27), 30 * D, 30000, 1 * D, min_history=90 * D)
    with pytest.raises(TrainingSetError) as e:  # not "Only 0 fit"
        plan_snapshots(datetime(2026, 10, 1), datetime(2026, 11, 27), 30 * D, 6, 30 * D, min_history=90 * D)
    assert ". None fits. What can help:" in str(e.value)
    # a history that misses by a second does not read as one that fits
    with pytest.raises(TrainingSetError) as e:
        plan_snapshots(datetime(2025, 1, 1, 0, 0, 1), datetime(2025, 9, 1), 56 * D, 6, 30 * D, min_history=90 * D)
    assert "the data starts 2025-01-01 00:00:01 UTC" in str(e.value) and "runs from 2025-01-01 00:00:01 UTC" in str(e.value)
    # the newest event as an instant, as the first one (it read as the day before: the as_of of its midnight);
    # cutoffs as an as_of reads, with the instant each means, as the snapshots table shows them
    with pytest.raises(TrainingSetError) as e:
        plan_snapshots(datetime(2026, 1, 1), datetime(2026, 3, 1), 7 * D, 3, 7 * D, min_history=40 * D)
    said = str(e.value)
    assert "runs from 2026-01-01 to 2026-03-01 (the newest event" in said, said
    assert "need the first cutoff as of 2026-02-07 (data before 2026-02-08 00:00 UTC)" in said, said
    assert "so none can be before 2026-02-09 (data before 2026-02-10 00:00 UTC)" in said, said
    assert "or less min_history" in said  # 40d -> 38d would do
    # no fewer snapshots fit as the history per cutoff stands, but 3 do with less of it: said with
    # its number, and it works (only a shorter horizon was offered, whose labels then had too few
    # positives, and that refusal offered a longer horizon)
    with pytest.raises(TrainingSetError) as e:
        plan_snapshots(datetime(2024, 11, 27), datetime(2025, 5, 1), 30 * D, 6, 30 * D, min_history=90 * D)
    found = re.search(r"training\.min_history: (\d+)d or less, with training\.snapshots: 3", str(e.value))
    assert found, str(e.value)
    assert len(plan_snapshots(datetime(2024, 11, 27), datetime(2025, 5, 1), 30 * D, 3, 30 * D,
                              min_history=int(found[1]) * D).cutoffs) == 3
    with pytest.raises(TrainingSetError):
        plan_snapshots(datetime(2024, 11, 27), datetime(2025, 5, 1), 30 * D, 3, 30 * D, min_history=(int(found[1]) + 1) * D)
    # a churn model (population: who bought in the 180 days before a cutoff): less history than that
    # is offered with what it does to the population (4 days of history made a model worse than RFM)
    with pytest.raises(TrainingSetError) as e:
        plan_snapshots(datetime(2024, 11, 27), datetime(2025, 5, 1), 30 * D, 6, 30 * D, min_history=90 * D,
                       active_window=180 * D)
    said = " ".join(str(e.value).split())
    assert re.search(r"training\.min_history: \d+d or less, with training\.snapshots: 3\) \(but a churn model's "
                     r"customers are those who bought in the 180 days before a cutoff", said), said
    assert "otherwise the history is too short for a churn model yet" in said
    # ... and not when the history offered covers the activity window
    with pytest.raises(TrainingSetError) as e:
        plan_snapshots(datetime(2024, 1, 1), datetime(2025, 5, 1), 30 * D, 6, 30 * D, min_history=400 * D,
                       active_window=180 * D)
    assert "min_history" in str(e.value) and "a churn model's customers" not in str(e.value)
    # a first cutoff before the data starts: no min_history helps, and none is advised
    with pytest.raises(TrainingSetError) as e:
        plan_snapshots(datetime(2026, 1, 1), datetime(2026, 3, 1), 60 * D, 3, 7 * D, min_history=40 * D)
    assert "min_history" not in str(e.value).split("What can help:")[1] and "more history" in str(e.value)
    with pytest.raises(TrainingSetError, match="at least 3 snapshots"):
        plan_snapshots(datetime(2020, 1, 1), datetime(2026, 11, 27), 30 * D, 2, 30 * D)


def test_snapshots_past_any_use_are_a_configuration_error(project):
    """A review's `snapshots: 99999999999999999999`: an OverflowError traceback (past C's int)."""
    from pipeline.config import ConfigError

    (project.root / "configs" / "training.yaml").write_text("snapshots: 10000000000\n")
    with pytest.raises(ConfigError, match=r"snapshots: input should be less than or equal to 10000; found 10000000000"):
        load_config(project.root)


def test_freshness():
    as_of = datetime(2026, 11, 28)
    assert check_freshness(as_of - 2 * D, as_of, 3 * D) is None
    assert check_freshness(as_of - 3 * D, as_of, 3 * D) is None  # exactly the lag allowed is fresh
    with pytest.raises(StaleDataError, match=r"newest event is 2026-11-20 00:00 UTC, 8 days before as_of"):
        check_freshness(as_of - 8 * D, as_of, 3 * D)
    # just over the limit says by how much, not "3.0 days (allowed: 3 days)"
    with pytest.raises(StaleDataError, match=r"3 days 4 min before as_of .* \(allowed: 3 days\)\. Load newer"):
        check_freshness(as_of - 3 * D - timedelta(minutes=4), as_of, 3 * D)
    with pytest.raises(StaleDataError, match=r"3 days 1 s before as_of .* \(allowed: 3 days\)"):
        check_freshness(as_of - 3 * D - timedelta(seconds=1), as_of, 3 * D)
    with pytest.raises(StaleDataError, match=r"3 days under 1 s before as_of"):
        check_freshness(as_of - 3 * D - timedelta(microseconds=1), as_of, 3 * D)
    warned = check_freshness(as_of - 8 * D, as_of, 3 * D, action="warn")
    assert "data is stale" in warned and "freshness.action is warn, so the run goes on" in warned
    assert "set freshness.action: warn" not in warned
    local = check_freshness(as_of - 8 * D, as_of, 3 * D, action="warn", where="configs/local/project.yaml")
    assert local.endswith("the run goes on (configs/local/project.yaml)")
    # the refusal names the file whose max_lag_days is in force (it said configs/project.yaml when a
    # local file set it, so the advice changed nothing)
    with pytest.raises(StaleDataError, match=r"raise freshness.max_lag_days in configs/local/project.yaml \(or set "
                                             r"freshness.action: warn in configs/project.yaml\)"):
        check_freshness(as_of - 8 * D, as_of, 3 * D, where="configs/project.yaml", lag_where="configs/local/project.yaml")
    # a hole in a log that goes on after the as_of is no late file: waiting does not mend it
    with pytest.raises(GapBefore, match=r"the log goes on at 2026-11-29 00:00 UTC: a gap in the history, not a late "
                                        r"file \(9 days without events\)\. Load the missing events") as e:
        check_freshness(as_of - 8 * D, as_of, 3 * D, next_event=as_of + D)
    assert not e.value.try_later and StaleDataError.try_later
    with pytest.raises(StaleDataError, match=r"\(allowed: none\)"):  # max_lag_days: 0 read "allowed: under a minute"
        check_freshness(as_of - D, as_of, 0 * D)
    # stale only because the as_of is days ahead of now (2027 typed for 2026): exit 75 had a
    # scheduler retry it for a month; it is a date to check
    from features.asof import now_utc

    ahead = now_utc().replace(microsecond=0) + 35 * D
    with pytest.raises(AheadOfNow, match=r"; and as_of is 35 days after now \(.* UTC\): events after now cannot have "
                                         r"arrived\. Check the date") as e:
        check_freshness(ahead - 36 * D, ahead, 3 * D)
    assert not e.value.try_later
    with pytest.raises(StaleDataError) as e:  # up to a day ahead (today's date is the end of today): a late file
        check_freshness(ahead - 40 * D, ahead - 35 * D + 0.9 * D, 3 * D)
    assert e.value.try_later


@pytest.fixture
def shop(project):
    write(generate(1500, seed=4, end="2026-11-27"), project.workspace / "data")
    return project


def test_training_set_stacks_snapshots_with_labels(shop):
    td = training_set_job(load_config(shop.root), "purchase")
    f = td.frame
    assert list(f.columns[:3]) == ["customer_id", "as_of", "snapshot"] and "label" in f.columns
    assert f.groupby("as_of").snapshot.nunique().eq(1).all()
    newest = f.as_of.max()
    assert set(f[f.as_of == newest].snapshot) == {"test"}
    assert f.groupby("snapshot").as_of.nunique().to_dict() == {"test": 1, "valid": 1, "train": 4}
    # a fixed order (each snapshot sorted on its own, then stacked): newest first, customers in order
    pd.testing.assert_frame_equal(f, f.sort_values(["as_of", "customer_id"], ascending=[False, True], ignore_index=True))
    assert not f.duplicated(["customer_id", "as_of"]).any()
    assert f[["customer_id", "as_of", "snapshot", "label"]].notna().all().all() and set(f.label) == {0, 1}
    assert 0.02 < f.label.mean() < 0.5
    spec = feature_spec(load_config(shop.root))
    for as_of, snapshot in f.groupby("as_of"):  # each snapshot is a feature set as of its cutoff
        assert violations(snapshot.drop(columns=["snapshot", "label"]), as_of.to_pydatetime(), spec) == [], as_of


def test_a_training_set_without_as_of_on_a_log_not_refreshed_says_so(shop):
    """Without --as-of the cutoffs follow the log's newest event, so freshness against it always
    passed: a log that had stopped being refreshed trained on last month in silence."""
    from features.asof import now_utc

    td = training_set_job(load_config(shop.root), "purchase")  # the shop ends 2026-11-27: before now
    lag = (now_utc() - td.last_event).days
    assert lag > 3  # (the freshness lag allowed)
    said = [w for w in td.warnings if "days before now (freshness allows 3)" in w]
    assert said and f"{lag} days before now" in said[0] and "give --as-of" in said[0], td.warnings
    # as of a date (the past on purpose): freshness is against that date, and this is not said
    td = training_set_job(load_config(shop.root), "purchase", as_of=datetime(2026, 11, 27))
    assert not [w for w in td.warnings if "days before now" in w], td.warnings


def test_the_test_and_valid_snapshots_keep_every_buyers_history_whatever_the_population(shop):
    """BG/NBD's baseline is fitted on every buyer at the cutoff: churn's rows (recent buyers) alone
    hide the dropouts it models. The histories are the features' own, as of each cutoff."""
    cfg = load_config(shop.root)
    purchase, churn = training_set_job(cfg, "purchase"), training_set_job(cfg, "churn")
    for td in (purchase, churn):
        assert set(td.histories) == {"test", "valid"}
        for role, h in td.histories.items():
            assert list(h.columns) == ["frequency", "recency_days", "days_since_first_purchase"]
            assert (h.frequency > 0).all() and h.notna().all().all()
    test = churn.frame[churn.frame.snapshot == "test"]
    assert len(churn.histories["test"]) > len(test)  # more buyers than the churn population
    as_of = test.as_of.iloc[0]
    buyers = purchase.frame[(purchase.frame.as_of == as_of) & (purchase.frame.frequency > 0)]
    assert len(buyers) > 0  # churn's test cutoff is one of purchase's (its valid one): the same buyers, histories
    got = churn.histories["test"].sort_values(list(churn.histories["test"].columns), ignore_index=True)
    want = buyers[got.columns].sort_values(list(got.columns), ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_snapshots_with_less_history_than_the_longest_window_are_warned_about(shop):
    """min_history (90d) lets a cutoff come before the longest window (365d) has passed since the
    log starts: those snapshots' customers look newer; said, as `features build` says it."""
    td = training_set_job(load_config(shop.root), "purchase")
    assert not [w for w in td.warnings if "less history than" in w]  # two years of history
    first = td.first_event
    cutoffs = sorted(td.frame.as_of.unique())
    # a window longer than the oldest cutoff's history, shorter than the newest's
    days = (pd.Timestamp(cutoffs[-1]) - pd.Timestamp(first)).days - 10
    short = [c for c in cutoffs if (pd.Timestamp(c) - pd.Timestamp(first)).days < days]
    assert 1 < len(short) < len(cutoffs)
    (shop.root / "configs" / "features.yaml").write_text(f"windows_days: [7, 30, {days}]\n")
    td = training_set_job(load_config(shop.root), "purchase")
    said = [w for w in td.warnings if "less history than" in w]
    assert len(said) == 1 and f"{len(short)} of {len(cutoffs)} snapshots" in said[0], td.warnings
    assert f"longest feature window ({days}d)" in said[0] and f"training.min_history: {days}d" in said[0]
    assert f"the event log starts {pd.Timestamp(first):%Y-%m-%d}" in said[0]
    # windows longer than the whole log: said of the snapshots once, not also as one build's warning,
    # whose advice (a later --as-of) a training set cannot take
    whole = (pd.Timestamp(td.last_event) - pd.Timestamp(first)).days + 10
    (shop.root / "configs" / "features.yaml").write_text(f"windows_days: [7, 30, {whole}]\n")
    td = training_set_job(load_config(shop.root), "purchase")
    assert len([w for w in td.warnings if "less history than" in w]) == 1
    assert not [w for w in td.warnings if "later --as-of" in w], td.warnings


def test_too_few_examples_and_stale_data_are_refused(shop):
    (shop.root / "configs" / "training.yaml").write_text("min_class_examples: 100000\n")
    with pytest.raises(TrainingSetError, match=r"too few examples for 'purchase' in the train snapshot") as e:
        training_set_job(load_config(shop.root), "purchase")
    # purchases are the rarer class: a longer horizon holds more; more snapshots help the train role
    assert "Use more snapshots or customers, a longer horizon, or lower training.min_class_examples" in str(e.value)
    (shop.root / "configs" / "training.yaml").write_text("snapshots: 30\n")
    with pytest.raises(TrainingSetError, match="history too short"):
        training_set_job(load_config(shop.root), "churn")
    with pytest.raises(StaleDataError, match="data is stale"):
        training_set_job(load_config(shop.root), "churn", as_of=datetime(2026, 12, 20))
    # no purchase in the log at all (the order event left unmapped): no setting can help, and the
    # advice was more snapshots or customers, another horizon, a lower minimum
    (shop.root / "configs" / "training.yaml").write_text("")
    roles = shop.root / "configs" / "roles.yaml"
    roles.write_text(roles.read_text().replace("purchase: [order_completed]", "purchase: [order_placed]")
                     .replace("ignore: []", "ignore: [order_completed]"))
    for target in ("churn", "purchase"):
        with pytest.raises(TrainingSetError, match=f"no event in the log has the purchase role, and '{target}' labels "
                                                   "are read from purchases") as e:
            training_set_job(load_config(shop.root), target)
        assert "Map your order event to purchase under event_roles:" in str(e.value)



def test_stale_data_that_freshness_warns_about_ends_the_label_windows_at_the_newest_event(shop):
    """With `freshness.action: warn`, a training set as of a date past the data's end must not
    read the unobserved days after the newest event as days without a purchase."""
    project_yaml = shop.root / "configs" / "project.yaml"
    project_yaml.write_text(project_yaml.read_text().replace("action: refuse", "action: warn"))
    as_of = datetime(2026, 12, 20)
    td = training_set_job(load_config(shop.root), "purchase", as_of=as_of)
    newest = td.last_event
    assert newest < datetime(2026, 11, 28) and td.plan.cutoffs[0] + td.label.horizon <= newest
    assert any("data is stale" in w for w in td.warnings)
    assert any(w.startswith(f"the label windows end by the newest event ({newest:%Y-%m-%d %H:%M} UTC)") for w in td.warnings)
    # the same snapshots as a training set as of the data's end
    plain = training_set_job(load_config(shop.root), "purchase")
    assert td.plan == plain.plan
    pd.testing.assert_frame_equal(td.frame, plain.frame)


def test_a_log_that_lands_late_ends_the_label_windows_at_its_newest_event(shop):
    """Data a day and a half old is fresh, but the days after its newest event were not observed
    either: with --as-of, the test label window ended at as_of and read them as days without a
    purchase (the label rate of the snapshot that gates the registry fell, in silence)."""
    as_of = datetime(2026, 11, 29, 12)
    td = training_set_job(load_config(shop.root), "purchase", as_of=as_of)
    plain = training_set_job(load_config(shop.root), "purchase")
    assert td.last_event < datetime(2026, 11, 28) and td.plan.cutoffs[0] + td.label.horizon <= td.last_event
    assert td.plan == plain.plan  # the test cutoff was 2026-10-30 instead of 2026-10-28
    assert not any("label windows end" in w for w in td.warnings)  # fresh data: nothing to say


def test_a_training_set_as_of_a_past_instant_takes_its_columns_from_the_data_before_it(shop):
    """`train --as-of D` uses only data before D: a role whose first event came after D (support
    tickets, newly tracked) gave its columns all the same, 0 for everyone, and the training set of the
    same D changed as the log grew. Now the same frame as from the log without those events."""
    events_path = shop.workspace / "data" / "events.parquet"
    events = pd.read_parquet(events_path)
    as_of = datetime(2026, 10, 31)
    tickets = events.event_type == "support_ticket_opened"
    assert tickets.any()
    without = events[~tickets]
    without.to_parquet(events_path)
    before = training_set_job(load_config(shop.root), "purchase", as_of=as_of)
    assert not [c for c in before.frame.columns if "support_ticket" in c]
    # the tickets return, all after D
    late = events[tickets].assign(ts=lambda f: as_of + pd.to_timedelta(range(tickets.sum()), unit="s"))
    pd.concat([without, late], ignore_index=True).to_parquet(events_path)
    after = training_set_job(load_config(shop.root), "purchase", as_of=as_of)
    pd.testing.assert_frame_equal(after.frame, before.frame)
    # without --as-of the whole log counts: the tickets' columns are there
    assert [c for c in training_set_job(load_config(shop.root), "purchase").frame.columns if "support_ticket" in c]


def test_too_few_examples_advice_fits_the_snapshot_and_the_short_class():
    """Valid and test are one snapshot each (more snapshots do not help them), and a longer horizon
    holds more purchases: more purchase positives, fewer churn positives."""
    from features.labels import LabelSpec
    from features.training_set import _check_classes

    def frame(train, valid, test):  # (positives, negatives) per snapshot
        rows = [(snap, 1) for snap, (p, _) in zip(("train", "valid", "test"), (train, valid, test)) for _ in range(p)]
        rows += [(snap, 0) for snap, (_, n) in zip(("train", "valid", "test"), (train, valid, test)) for _ in range(n)]
        return pd.DataFrame(rows, columns=["snapshot", "label"])

    churn = LabelSpec("churn", 60 * D, "active")
    with pytest.raises(TrainingSetError) as e:
        _check_classes(frame((80, 80), (68, 44), (80, 80)), churn, 50)
    assert "in the valid snapshot(s): 68 positives and 44 negatives" in str(e.value)
    assert "Use more customers (more snapshots add only train snapshots), a longer horizon" in str(e.value)
    with pytest.raises(TrainingSetError, match=r"test snapshot.*Use more customers .*, a shorter horizon"):
        _check_classes(frame((80, 80), (80, 80), (10, 90)), churn, 50)
    with pytest.raises(TrainingSetError, match=r"test snapshot.*a longer horizon"):
        _check_classes(frame((80, 80), (80, 80), (10, 90)), LabelSpec("purchase", 30 * D), 50)
    _check_classes(frame((80, 80), (80, 80), (80, 80)), churn, 50)  # enough of each: no refusal
    # at the least setting already, lowering it is no advice
    with pytest.raises(TrainingSetError) as e:
        _check_classes(frame((80, 80), (80, 80), (1, 0)), churn, 1)
    assert "min_class_examples" not in str(e.value) and "a class with no example cannot be learned" in str(e.value)
    with pytest.raises(TrainingSetError, match="or lower training.min_class_examples"):
        _check_classes(frame((80, 80), (80, 80), (1, 0)), churn, 2)


def test_label_rates_in_one_scan_equal_the_label_definition(shop):
    """The batched base-rate query gives exactly the mean of :func:`labels` over the known
    population, for both targets and several cutoffs; too little history gives None."""
    from features.customer_features import known_customers
    from features.labels import labels
    from features.training_set import label_rates
    from pipeline.jobs.data import load_validated
    from pipeline.jobs.features import data_profile, label_spec, open_engine

    cfg = load_config(shop.root)
    data = load_validated(cfg, datetime(2026, 11, 28))
    profile = data_profile(cfg, data)
    eng = open_engine(cfg, data, "duckdb")
    first = data.con.execute("SELECT min(ts) FROM events").fetchall()[0][0]
    specs = [label_spec(cfg, "purchase"), label_spec(cfg, "churn"), label_spec(cfg, "purchase", "90d")]
    cutoffs = [datetime(2026, 3, 1), datetime(2026, 8, 15, 12), datetime(2026, 10, 1)]
    requests = [(s, c) for s in specs for c in cutoffs] + [(specs[0], first + 10 * D)]
    got = label_rates(eng, profile, requests, first, 90 * D)
    assert got[-1] is None
    from datetime import timezone  # an aware cutoff is the same instant, as labels() takes it

    aware = [(s, (c + 2 * timedelta(hours=1)).replace(tzinfo=timezone(timedelta(hours=2)))) for s, c in requests]
    assert label_rates(eng, profile, aware, first, 90 * D) == got  # beside a naive start of the data
    for (spec, cutoff), rate in zip(requests[:-1], got[:-1]):
        lab = eng.execute(labels(known_customers(eng.events(), eng.customers(), cutoff, profile),
                                 eng.events(), cutoff, spec))
        assert rate == pytest.approx(lab.label.mean(), abs=1e-12), (spec, cutoff)
    assert len({round(r, 9) for r in got[:-1]}) > 3  # the cutoffs and targets really differ
    # churn over customers active in the 180 days before T needs those 180 days in the log, not
    # only min_history's 90: with 120 days, the customers active before the log began are missing
    churn = specs[1]
    assert churn.population == "active" and churn.active_window == 180 * D
    early = label_rates(eng, profile, [(churn, first + 120 * D), (specs[0], first + 120 * D),
                                       (churn, first + 181 * D)], first, 90 * D)
    assert early[0] is None and early[1] is not None and early[2] is not None


def test_no_training_label_reaches_into_the_validation_period(shop):
    """Churn's 60-day labels with snapshots 30 days apart: the training rows' label windows close by
    the validation cutoff, and the validation rows' by the test cutoff."""
    td = training_set_job(load_config(shop.root), "churn")
    f, h = td.frame, td.label.horizon
    assert h == timedelta(days=60)
    cut = {s: f[f.snapshot == s].as_of.unique() for s in ("train", "valid", "test")}
    assert len(cut["train"]) == 4 and len(cut["valid"]) == len(cut["test"]) == 1
    assert (cut["train"] + h <= cut["valid"][0]).all() and cut["valid"][0] + h <= cut["test"][0]
    # churn's population, seen from the features: every row bought in the active window before T
    a = td.label.active_window / timedelta(days=1)
    assert (f.frequency >= 1).all() and (f.recency_days > 0).all() and (f.recency_days <= a).all()


def test_snapshots_compile_the_feature_query_once_and_get_what_a_fresh_query_gets(shop, monkeypatch):
    """A training set's snapshots differ only in the cutoff: DuckDB compiles the feature query once
    and puts each cutoff into the SQL. Every cutoff (an aware one too) gets the frame a query
    built and compiled for it gets. The labels compute T + H in Python: built per cutoff."""
    from datetime import timezone

    from features.customer_features import customer_features, known_customers
    from features.engines.duckdb import DuckDBEngine
    from features.labels import LabelSpec, labels
    from pipeline.jobs.data import load_validated
    from pipeline.jobs.features import data_profile, feature_spec

    cfg = load_config(shop.root)
    data = load_validated(cfg, datetime(2026, 11, 28))
    profile, eng = data_profile(cfg, data), DuckDBEngine(data.con)
    ev, cu, co = eng.events(), eng.customers(), eng.consents()
    compiled = []
    compile_ = eng._backend.compile
    monkeypatch.setattr(eng._backend, "compile", lambda *a, **k: compiled.append(1) or compile_(*a, **k))
    features_at = eng.at_cutoffs(lambda t: customer_features(ev, cu, t, feature_spec(cfg), profile, consents=co))
    label = LabelSpec("churn", 30 * D, "active", 90 * D)
    labels_at = eng.at_cutoffs(lambda t: labels(known_customers(ev, cu, t, profile), ev, t, label))
    cutoffs = [datetime(2026, 10, 28), datetime(2026, 6, 1, 13, 7, 9, 123456),
               datetime(2026, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))]
    ran = [(features_at(c), labels_at(c)) for c in cutoffs]
    assert len(compiled) == 1 + len(cutoffs), compiled  # the features once, the labels at every cutoff
    for c, (feats, labs) in zip(cutoffs, ran):
        fresh = eng.execute(customer_features(ev, cu, c, feature_spec(cfg), profile, consents=co))
        key = ["customer_id"]
        pd.testing.assert_frame_equal(feats.sort_values(key, ignore_index=True), fresh.sort_values(key, ignore_index=True))
        assert (feats.as_of == pd.Timestamp(c).tz_convert(None) if c.tzinfo else feats.as_of == c).all()
        fresh_labels = eng.execute(labels(known_customers(ev, cu, c, profile), ev, c, label))
        pd.testing.assert_frame_equal(labs.sort_values(key, ignore_index=True),
                                      fresh_labels.sort_values(key, ignore_index=True))
    assert ran[0][0].frequency.sum() > ran[1][0].frequency.sum() > 0  # the cutoffs differ in what they see


def test_the_cli_writes_the_snapshots_train_fits_on(shop, tmp_path):
    """`dynseg features training-set` writes what `dynseg train` fits on: every snapshot with its
    role and label, and prints each snapshot's label rate; a folder as --out is refused first."""
    from typer.testing import CliRunner

    from pipeline.api import Project
    from pipeline.cli.app import app

    runner = CliRunner()
    folder = tmp_path / "out.parquet"
    folder.mkdir()
    result = runner.invoke(app, ["features", "training-set", "purchase", "--out", str(folder)])
    assert result.exit_code == 2 and "is a folder" in result.output and "training_set_purchase.parquet" in result.output
    assert list(folder.iterdir()) == []
    out = tmp_path / "ts.parquet"
    result = runner.invoke(app, ["features", "training-set", "purchase", "--horizon", "4w", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(out)
    expected = Project(shop.root).training_set("purchase", horizon="4w")  # the public API: the job's frame
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    # by default a horizon other than the configured one is in the file's name, in days: another
    # horizon's set stays, and one horizon spelled two ways is one file
    folder = shop.workspace / "features"
    before = set(folder.glob("training_set_*"))
    assert runner.invoke(app, ["features", "training-set", "purchase", "--horizon", "4w"]).exit_code == 0
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "training_set_purchase_28d.parquet"), written)
    assert runner.invoke(app, ["features", "training-set", "purchase", "--horizon", "28d"]).exit_code == 0
    configured = Project(shop.root).config.labels.purchase.horizon
    assert runner.invoke(app, ["features", "training-set", "purchase", "--horizon", configured]).exit_code == 0
    assert set(folder.glob("training_set_*")) - before == {folder / "training_set_purchase_28d.parquet",
                                                           folder / "training_set_purchase.parquet"} - before
    assert list(written.columns[:3]) == ["customer_id", "as_of", "snapshot"] and written.columns[-1] == "label"
    assert list(written.drop_duplicates("as_of").snapshot) == ["test", "valid"] + ["train"] * (written.as_of.nunique() - 2)
    text = " ".join(result.output.split())
    assert "purchase = at least one purchase in the 28 days from the cutoff" in text
    test = written[written.snapshot == "test"]
    assert f"│ test │ {test.as_of.iloc[0] - D:%Y-%m-%d} │ {len(test):,} │ {int(test.label.sum()):,} │ {test.label.mean():.1%} │" in text
    # the strongest features on their own, as feature_signal ranks them on the written frame
    from features.training_set import feature_signal

    signal = feature_signal(written)
    assert "Strongest features on their own" in text and "leakage" not in text
    top = signal.iloc[0]
    assert f"│ {top.feature} │" in text and f"{top.auc_train:.3f} │ {top.auc_test:.3f} │" in text
    assert 0.6 < top.auc_train < 0.95  # real signal, not a leak


def test_a_feature_that_sees_the_label_is_flagged():
    """feature_signal ranks a planted leak first, and the training-set command's table warns of it."""
    import numpy as np

    from features.training_set import SUSPICIOUS_STRENGTH, feature_signal
    from pipeline.cli.common import err
    from pipeline.cli.features import _print_signal

    rng = np.random.default_rng(5)
    n = 3000
    label = rng.integers(0, 2, n)
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "as_of": pd.Timestamp("2026-06-01"),
                          "snapshot": np.where(np.arange(n) < 2000, "train", "test"),
                          "recency_days": rng.exponential(30, n) * (1.5 - label),  # plausible signal
                          "n_purchase_30d": label * 3 + rng.integers(0, 2, n),  # a count that saw the label window
                          "label": label})
    signal = feature_signal(frame).set_index("feature")
    assert signal.strength.idxmax() == "n_purchase_30d" and signal.loc["n_purchase_30d", "strength"] >= SUSPICIOUS_STRENGTH
    assert signal.loc["recency_days", "strength"] < SUSPICIOUS_STRENGTH
    with err.capture() as captured:  # rich output goes to the console, not to capsys
        _print_signal(frame)
    warned = " ".join(captured.get().split())
    assert "n_purchase_30d alone ranks the label almost perfectly" in warned and "recency_days" not in warned
    # the documented edge: an AUC of exactly 0.95 (or 0.05) is flagged; (0.95 - 0.5) * 2 < 0.9 in floating point
    edge = pd.DataFrame({"snapshot": ["train"] * 21 + ["test"] * 2, "label": [0] * 20 + [1] + [0, 1],
                         "x": [*range(20), 18.5, 0, 1], "y": [*range(20, 0, -1), 1.5, 0, 1]})
    signal = feature_signal(edge).set_index("feature")
    assert signal.auc_train.round(12).to_dict() == {"x": 0.95, "y": 0.05}
    assert (signal.strength >= SUSPICIOUS_STRENGTH).all()
