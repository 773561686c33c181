"""Segments and bands on hand-made data: membership, exclusions, consent, holdouts, deltas, config checks."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from models import bands
from pipeline import runs
from pipeline.config import ConfigError, FeaturesConfig, SegmentsConfig, load_config, segment_issues
from pipeline.rules import column_kinds
from pipeline.segments import compile_segments, holdout_value, membership_sql


def seg(name, where, kind="rule", **kw):
    return {"name": name, "description": f"{name} test", "owner": "tests", "kind": kind, "where": where, **kw}


FRAME = pd.DataFrame({
    "customer_id": ["a", "b", "c", "d", "e"],
    "email_consent": pd.array([True, True, False, None, True], dtype="boolean"),
    "unsubscribed": [False, False, False, False, True],
    "recency_days": [5.0, 120.0, 10.0, np.nan, 3.0],
    "purchase_band": ["high", "low", "high", "high", None],
    "purchase_score": [0.9, 0.1, 0.8, 0.7, np.nan],
})


def members(frame, segments, salt="s", carry=("purchase_score",)):
    cfg = SegmentsConfig.model_validate({"holdout_salt": salt, **segments})
    assert not segment_issues(cfg)
    compiled = compile_segments(cfg, column_kinds(frame))
    con = duckdb.connect()
    con.register("scored", frame)
    return con.execute(membership_sql(compiled, salt, list(carry), "email_consent" in frame.columns)).df()


def test_exclusions_name_what_took_each_customer_and_a_rule_may_name_customer_id():
    """Who a rule selects but an exclusion takes (kept with a run for `segments changes`). A rule
    naming customer_id (a list of staff accounts) failed every run: the joins made it ambiguous."""
    from pipeline.segments import exclusions_sql

    cfg = SegmentsConfig.model_validate({"holdout_salt": "s", "suppress_always": ["unsub"], "segments": [
        seg("unsub", "unsubscribed", kind="suppression"),
        seg("recent", "recency_days <= 7", kind="suppression"),
        seg("likely", "purchase_band = 'high'", kind="predictive", exclude=["recent"]),
        seg("staff", "customer_id IN ('a', 'e')", exclude=["likely"]),
        seg("anyone", "recency_days < 200", exclude=["recent"]),
    ]})
    compiled = compile_segments(cfg, column_kinds(FRAME))
    con = duckdb.connect()
    con.register("scored", FRAME)
    got = con.execute(exclusions_sql(compiled) + " ORDER BY segment, customer_id").fetchall()
    # likely (high: a, c, d): a is recent. staff (a, e): a is in no segment it excludes (likely took
    # it not), e is unsubscribed. anyone: a is recent, e recent and unsubscribed (its own first)
    assert got == [("anyone", "a", "recent"), ("anyone", "e", "recent, unsub"), ("likely", "a", "recent"),
                   ("staff", "e", "unsub")], got


def ids(df, segment, **flags):
    rows = df[df.segment == segment]
    for k, v in flags.items():
        rows = rows[rows[k] == v]
    return sorted(rows.customer_id)


def test_rules_exclusions_and_always_applied_suppressions():
    m = members(FRAME, {
        "suppress_always": ["unsub"],
        "segments": [
            seg("unsub", "unsubscribed", kind="suppression"),
            seg("recent", "recency_days <= 7", kind="suppression"),
            seg("likely", "purchase_band = 'high'", kind="predictive", exclude=["recent"]),
            seg("lapsed", "recency_days > 90"),
        ],
    })
    assert ids(m, "unsub") == ["e"]
    assert ids(m, "recent") == ["a", "e"]  # suppressions are not suppressed
    assert ids(m, "likely") == ["c", "d"]  # a: recent; e: unsubscribed (and no band)
    assert ids(m, "lapsed") == ["b"]  # d has no purchase: NULL recency selects nobody


def test_customer_without_consent_is_never_sendable():
    m = members(FRAME, {"segments": [seg("everyone", "purchase_score >= 0 OR purchase_score IS NULL")]})
    assert ids(m, "everyone") == ["a", "b", "c", "d", "e"]
    assert ids(m, "everyone", sendable=True) == ["a", "b", "e"]  # c withdrew, d unknown
    m = members(FRAME.drop(columns="email_consent"), {"segments": [seg("everyone", "recency_days >= 0")]})
    assert not m.sendable.any()  # no consent data: nobody is sendable


def test_suppression_members_are_not_sendable():
    m = members(FRAME, {"segments": [seg("unsub", "NOT unsubscribed", kind="suppression")]})
    assert len(m) == 4 and not m.sendable.any()


def test_holdout_is_deterministic_stable_and_close_to_its_fraction():
    n = 20_000
    frame = pd.DataFrame({"customer_id": [f"cust{i:06d}" for i in range(n)], "email_consent": True, "x": 1.0})
    spec = {"segments": [seg("all", "x = 1", holdout=0.1), seg("other", "x = 1", holdout=0.1)]}
    a, b = members(frame, spec, carry=()), members(frame, spec, carry=())
    held = a[a.segment == "all"].set_index("customer_id").holdout
    assert held.equals(b[b.segment == "all"].set_index("customer_id").holdout)  # same run twice
    assert abs(held.mean() - 0.1) < 0.01  # 3 sigma is 0.0064
    # the documented formula, computed in Python, gives the same split
    sample = held.sample(500, random_state=0)
    assert all((holdout_value("s", "all", c) < 0.1) == v for c, v in sample.items())
    # independent across segments, and a new salt reshuffles
    other = a[a.segment == "other"].set_index("customer_id").holdout
    assert (held != other).mean() > 0.1
    salted = members(frame, spec, salt="new", carry=())
    assert (salted[salted.segment == "all"].set_index("customer_id").holdout != held).mean() > 0.1
    # holdout members are never sendable
    assert not a[a.holdout].sendable.any()


def test_holdout_survives_other_customers_joining():
    base = pd.DataFrame({"customer_id": [f"c{i}" for i in range(2000)], "email_consent": True, "x": 1.0})
    more = pd.concat([base, pd.DataFrame({"customer_id": [f"n{i}" for i in range(3000)], "email_consent": True, "x": 1.0})])
    spec = {"segments": [seg("all", "x = 1", holdout=0.2)]}
    a = members(base, spec, carry=()).set_index("customer_id").holdout
    b = members(more, spec, carry=()).set_index("customer_id").holdout
    assert a.equals(b.loc[a.index])


def test_a_renamed_segment_keeps_its_holdout_with_holdout_key():
    """The segment's name is part of the draw, so renaming one redrew its holdout: former holdout
    members were sent to. `holdout_key: <former name>` keeps the draw (on Spark too: one SQL)."""
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in range(3000)], "email_consent": True, "x": 1.0})
    side = lambda m, name: m[m.segment == name].set_index("customer_id").holdout  # noqa: E731
    old = side(members(frame, {"segments": [seg("likely_buyers", "x = 1", holdout=0.2)]}, carry=()), "likely_buyers")
    renamed = side(members(frame, {"segments": [seg("top_buyers", "x = 1", holdout=0.2)]}, carry=()), "top_buyers")
    kept = side(members(frame, {"segments": [seg("top_buyers", "x = 1", holdout=0.2, holdout_key="likely_buyers")]},
                        carry=()), "top_buyers")
    assert (renamed != old).sum() > 300 and kept.equals(old)


def test_unknown_column_is_refused_naming_file_key_and_token():
    cfg = SegmentsConfig.model_validate({"segments": [seg("ok", "recency_days > 1"), seg("bad", "purchse_score > 0.5")]})
    with pytest.raises(ConfigError) as e:
        compile_segments(cfg, column_kinds(FRAME))
    (issue,) = e.value.issues
    assert issue.file == "configs/segments.yaml" and issue.key == "segments[1].where"
    assert "purchse_score" in issue.message and "purchase_score" in issue.message


def test_a_segment_named_in_a_rule_is_told_to_use_exclude():
    cfg = SegmentsConfig.model_validate({"segments": [seg("buyers", "recency_days < 30"), seg("rest", "NOT buyers")]})
    with pytest.raises(ConfigError) as e:
        compile_segments(cfg, column_kinds(FRAME))
    (issue,) = e.value.issues
    assert ("unknown column 'buyers' at position 5; 'buyers' is a segment, not a column: a rule reads features, scores "
            "and bands; to leave its members out, `exclude: [buyers]`, or repeat its rule") in issue.message, issue.message


def test_a_segment_named_like_a_feature_the_data_lacks_is_told_about_the_feature():
    """The demo's `unsubscribed` segment reads the feature of its own name; in a log without
    unsubscribe events it was told to exclude itself (`exclude: [unsubscribed]`)."""
    cfg = SegmentsConfig.model_validate({"segments": [seg("unsubscribed", "unsubscribed")]})
    with pytest.raises(ConfigError) as e:
        compile_segments(cfg, {c: k for c, k in column_kinds(FRAME).items() if c != "unsubscribed"})
    (issue,) = e.value.issues
    assert "'unsubscribed' is a feature" in issue.message and "exclude: [unsubscribed]" not in issue.message, issue.message


def test_a_feature_the_data_lacks_is_named_as_such():
    """The shipped `undeliverable` segment (bounced OR complained) in a shop without bounce or
    complaint events: not a typo, but features this data does not have."""
    cfg = SegmentsConfig.model_validate({"segments": [seg("undeliverable", "bounced OR complained OR unsubscribed")]})
    with pytest.raises(ConfigError) as e:
        compile_segments(cfg, column_kinds(FRAME))
    (issue,) = e.value.issues
    for name in ("bounced", "complained"):
        assert (f"unknown column '{name}' at position {1 if name == 'bounced' else 12}; '{name}' is a feature "
                "(suppression, features/customer_features.md) that this data does not have") in issue.message
    assert "Remove the condition or the segment" in issue.message and "expected one of the columns" not in issue.message
    assert "'unsubscribed'" not in issue.message  # in FRAME
    cfg = SegmentsConfig.model_validate({"segments": [seg("typo", "purchse_score > 0.5")]})
    with pytest.raises(ConfigError) as e:
        compile_segments(cfg, column_kinds(FRAME))
    assert "this data does not have" not in e.value.issues[0].message  # a typo stays a typo


def test_a_feature_the_data_lacks_is_named_as_such_even_beside_look_alikes():
    """A shop without profiles has no days_since_signup, one without click events no
    n_email_click_90d: those are real names, and 'did you mean days_since_last_open?' sent people
    looking for a typo. A window that is not configured (spend_9d) or a role that is none
    (n_clicks_90d) is a typo, with its look-alikes; a role left out of window_roles is said so."""
    frame = FRAME.assign(days_since_last_open=1.0, n_email_open_90d=0, spend_90d=0.0, n_page_view_90d=0)
    rules = {"tenure": "days_since_signup <= 30", "clicks": "n_email_click_90d = 0", "typo": "spend_9d > 0",
             "no_role": "n_clicks_90d > 0", "views": "n_page_view_30d > 0"}
    cfg = SegmentsConfig.model_validate({"segments": [seg(n, w) for n, w in rules.items()]})
    features = FeaturesConfig(windows_days=[7, 30, 90], window_roles=["purchase", "email_open", "email_click"])
    with pytest.raises(ConfigError) as e:
        compile_segments(cfg, column_kinds(frame), features=features)
    said = {rules_name: issue.message for rules_name, issue in zip(rules, e.value.issues)}
    assert len(e.value.issues) == 5
    assert "'days_since_signup' is a feature (tenure" in said["tenure"] and "did you mean" not in said["tenure"]
    assert "'n_email_click_90d' is a feature (windows" in said["clicks"] and "did you mean" not in said["clicks"]
    assert "did you mean 'spend_90d'" in said["typo"] and "is a feature" not in said["typo"]
    assert "is a feature" not in said["no_role"]
    assert ("'n_page_view_30d' would count page_view events over 30 days, but page_view is not among the window "
            "roles (purchase, email_open, email_click; `window_roles` in configs/features.yaml)") in said["views"]
    # with 9 among the windows, spend_9d is a feature this data lacks
    features = FeaturesConfig(windows_days=[9, 90])
    with pytest.raises(ConfigError) as e:
        compile_segments(SegmentsConfig.model_validate({"segments": [seg("typo", "spend_9d > 0")]}),
                         column_kinds(frame), features=features)
    assert "'spend_9d' is a feature" in e.value.issues[0].message


@pytest.mark.parametrize("where, token", [
    ("recency_days > 1; DROP TABLE scored", ";"),
    ("lower(purchase_band) = 'high'", "lower"),
    ("customer_id IN (SELECT customer_id FROM scored)", "SELECT"),
])
def test_unsafe_rules_are_refused(where, token):
    cfg = SegmentsConfig.model_validate({"segments": [seg("bad", where)]})
    with pytest.raises(ConfigError) as e:
        compile_segments(cfg, column_kinds(FRAME))
    assert token.lower() in str(e.value).lower() and "segments[0].where" in str(e.value)


def write_segments(project, doc):
    (project.root / "configs" / "segments.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def test_config_problems_are_all_reported_with_file_and_key(project):
    write_segments(project, {"suppress_always": ["a"], "segments": [
        {"name": "a", "description": "x", "kind": "rule", "where": "recency_days > 1"},  # no owner
        seg("b", "recency_days > 1", exclude=["c"]),
        seg("c", "recency_days > 1", exclude=["b"]),
        seg("b", "recency_days > 2", exclude=["nope"]),
    ]})
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    text = str(e.value)
    assert "configs/segments.yaml: segments[0].owner: segment 'a' needs an owner" in text
    assert "duplicate segment name 'b'" in text and "segments[3].name" in text
    assert "excludes 'nope', which is not defined" in text
    assert "exclusion cycle: b -> c -> b" in text


def test_suppress_always_must_name_a_suppression(project):
    write_segments(project, {"suppress_always": ["a"], "segments": [seg("a", "recency_days > 1")]})
    with pytest.raises(ConfigError, match=r"suppress_always\[0\]: 'a' is a rule segment"):
        load_config(project.root)


def test_outcome_and_holdout_key_need_a_holdout_and_a_key_is_no_other_segment(project):
    write_segments(project, {"segments": [
        seg("active", "recency_days <= 90", outcome="retention"),
        seg("likely", "recency_days > 2", holdout=0.1, holdout_key="at_risk"),
        seg("at_risk", "recency_days > 90", holdout=0.1, holdout_key="at_risk"),  # its own name: allowed
        seg("plain", "recency_days > 1", holdout_key="old_plain")]})
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    text = str(e.value)
    assert "segments[0].outcome: segment 'active' sets outcome but has no holdout" in text, text
    assert "segments[3].holdout_key: segment 'plain' sets holdout_key but has no holdout" in text, text
    assert "segments[1].holdout_key: segment 'likely' draws its holdout as 'at_risk', another segment" in text, text
    assert "segments[2]" not in text, text


def test_a_misspelt_exclusion_or_suppression_names_the_segment_meant(project):
    write_segments(project, {"suppress_always": ["unsubscribe"], "segments": [
        seg("unsubscribed", "recency_days > 1", kind="suppression"), seg("recent_buyers", "recency_days < 7"),
        seg("likely", "recency_days > 2", exclude=["recent_buyer"])]})
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    text = str(e.value)
    assert "excludes 'recent_buyer', which is not defined; did you mean 'recent_buyers'?" in text, text
    assert "suppress_always[0]: 'unsubscribe' is not a defined segment; did you mean 'unsubscribed'?" in text, text
    # a suppression taken out of the segments but left in suppress_always: the fix names both ways
    write_segments(project, {"suppress_always": ["gone"], "segments": [seg("a", "recency_days > 1", kind="suppression")]})
    with pytest.raises(ConfigError, match=r"suppress_always\[0\]: 'gone' is not a defined segment; remove it from "
                                          r"suppress_always, or define it \(suppression segments: \['a'\]\)"):
        load_config(project.root)


# -- deltas and health -----------------------------------------------------------------------
def write(con, db, as_of, run_id, membership, started_at=None):
    scores = pd.DataFrame({"customer_id": sorted({c for cs in membership.values() for c in cs}),
                           "purchase_score": 0.5, "purchase_score_100": 50, "purchase_band": "high"})
    mem = pd.DataFrame([{"segment": s, "kind": "rule", "customer_id": c, "holdout": False, "consented": True,
                         "sendable": True,
                         "purchase_score": 0.5, "purchase_score_100": 50, "purchase_band": "high"}
                        for s, cs in membership.items() for c in cs])
    health = pd.DataFrame([{"segment": s, "kind": "rule", "owner": "t", "size": len(cs), "sendable": len(cs),
                            "holdout": 0, "coverage": 1.0} for s, cs in membership.items()])
    for name, frame in (("s", scores), ("m", mem), ("h", health)):
        con.register(name, frame)
    record = {"run_id": run_id, "as_of": as_of, "started_at": started_at or as_of, "finished_at": started_at or as_of,
              "engine": "duckdb",
              "n_customers": len(scores), "models": "[]", "bands": "{}", "previous_run_id": None,
              "mlflow_run_id": None, "export_dir": "", "config": "{}"}
    return runs.write_run(con, db, record, ["purchase"], "s", "m", "h")


def test_a_workspace_whose_path_holds_a_quote_is_written(tmp_path):
    """ATTACH '<path>' ended the literal at the quote of a folder named o'k."""
    db = tmp_path / "o'k" / "dynseg.duckdb"
    db.parent.mkdir()
    write(duckdb.connect(), db, datetime(2026, 1, 2), "a", {"vip": ["a", "b"]})
    assert runs.read(db, "SELECT run_id FROM scoring_runs").run_id.tolist() == ["a"]


def test_a_replaced_run_counts_as_sent_in_time_only_if_it_was_scored_in_time(tmp_path):
    """Lift's backfill note (nothing from a run scored after its window could be sent) was dropped
    whenever the date had been scored before, even when that run was a backfill too."""
    db = tmp_path / "dynseg.duckdb"
    con = duckdb.connect()
    in_time, late = datetime(2026, 1, 2), datetime(2026, 2, 2)
    write(con, db, in_time, "a", {"vip": ["a"]})  # scored on its day
    write(con, db, in_time, "b", {"vip": ["a"]}, started_at=in_time + timedelta(days=40))
    write(con, db, late, "c", {"vip": ["a"]}, started_at=late + timedelta(days=40))  # a backfill ...
    write(con, db, late, "d", {"vip": ["a"]}, started_at=late + timedelta(days=41))  # ... re-scored
    assert runs.replaced_in_time(db, in_time) and not runs.replaced_in_time(db, late)
    assert not runs.replaced_in_time(db, datetime(2026, 3, 2))  # never replaced
    assert runs.read(db, "SELECT run_id, scored_at FROM replaced_runs ORDER BY run_id").values.tolist() == [
        ["a", pd.Timestamp(in_time)], ["c", pd.Timestamp(late + timedelta(days=40))]]
    # a workspace whose replaced runs were kept before their scoring time was: each may have been sent
    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as c:
        c.execute("CREATE TABLE scoring_runs (run_id VARCHAR)")
        c.execute("CREATE TABLE replaced_runs (run_id VARCHAR, as_of TIMESTAMP, replaced_by VARCHAR, replaced_at TIMESTAMP)")
        c.execute("INSERT INTO replaced_runs VALUES ('x', ?, 'y', ?)", [late, late + timedelta(days=50)])
    assert runs.replaced_in_time(old, late)


def deltas(db, run_id):
    d = runs.read(db, "SELECT segment, customer_id, change FROM segment_deltas WHERE run_id = ?", [run_id])
    return {(r.segment, r.change): sorted(d[(d.segment == r.segment) & (d.change == r.change)].customer_id)
            for r in d.itertuples()}


def health(db, run_id):
    return runs.read(db, "SELECT * FROM segment_health WHERE run_id = ?", [run_id]).set_index("segment")


def test_enter_exit_stay_across_runs_and_atomic_rerun(tmp_path):
    db, con = tmp_path / "ws.duckdb", duckdb.connect()
    d1, d2 = datetime(2026, 1, 1, 23, 59, 59), datetime(2026, 1, 2, 23, 59, 59)
    assert write(con, db, d1, "r1", {"vip": ["a", "b", "c"], "sunset": ["x"]}) is None
    assert deltas(db, "r1") == {("vip", "entered"): ["a", "b", "c"], ("sunset", "entered"): ["x"]}
    assert write(con, db, d2, "r2", {"vip": ["b", "c", "d"], "sunset": []}) == "r1"
    assert deltas(db, "r2") == {("vip", "entered"): ["d"], ("vip", "exited"): ["a"], ("sunset", "exited"): ["x"]}
    h = health(db, "r2")
    assert h.loc["vip", ["size", "entered", "exited", "stayed", "previous_size"]].tolist() == [3, 1, 1, 2, 3]
    assert h.loc["vip", "volatility"] == pytest.approx(2 / 4)  # (entered + exited) / (stayed + entered + exited)
    assert h.loc["sunset", "volatility"] == pytest.approx(1.0)
    # re-running the same as_of replaces that run, deltas still against r1
    assert write(con, db, d2, "r2b", {"vip": ["a", "b", "c"], "sunset": ["x"]}) == "r1"
    all_runs = runs.read(db, "SELECT run_id FROM scoring_runs ORDER BY as_of")
    assert all_runs.run_id.tolist() == ["r1", "r2b"]
    assert runs.read(db, "SELECT count(*) AS n FROM segment_members WHERE as_of = ?", [d2]).n[0] == 4
    assert deltas(db, "r2b") == {} and health(db, "r2b").loc["vip", "volatility"] == 0


def test_a_backfilled_or_rescored_date_becomes_the_predecessor_of_the_run_after_it(tmp_path):
    db, con = tmp_path / "ws.duckdb", duckdb.connect()
    d1, d2, d3 = (datetime(2026, 1, d, 23, 59, 59) for d in (1, 2, 3))
    write(con, db, d1, "r1", {"vip": ["a", "b"]})
    write(con, db, d3, "r3", {"vip": ["b", "c", "d"]})
    assert deltas(db, "r3") == {("vip", "entered"): ["c", "d"], ("vip", "exited"): ["a"]}
    # d2 is scored later (a backfill): r3's movement is now against r2, and the runs add up
    assert write(con, db, d2, "r2", {"vip": ["b", "c"]}) == "r1"
    assert deltas(db, "r2") == {("vip", "entered"): ["c"], ("vip", "exited"): ["a"]}
    assert deltas(db, "r3") == {("vip", "entered"): ["d"]}
    h = health(db, "r3")
    assert h.loc["vip", ["size", "entered", "exited", "stayed", "previous_size"]].tolist() == [3, 1, 0, 2, 2]
    assert h.loc["vip", "volatility"] == pytest.approx(1 / 3)
    assert runs.read(db, "SELECT previous_run_id FROM scoring_runs WHERE run_id = 'r3'").previous_run_id[0] == "r2"
    # d2 scored again: its new run id replaces the old one as r3's predecessor
    write(con, db, d2, "r2b", {"vip": ["b", "c", "d", "e"]})
    assert runs.read(db, "SELECT previous_run_id FROM scoring_runs WHERE run_id = 'r3'").previous_run_id[0] == "r2b"
    # the replaced id is named as such, by a drop too (it said "no scoring run 'r2'")
    with pytest.raises(ValueError, match=r"'r2' \(as of 2026-01-02T23:59:59Z\) was replaced by run 'r2b'.*drop-run r2b --reason"):
        runs.drop_run(db, "r2")
    with pytest.raises(ValueError, match=r"'r2' \(as of 2026-01-02T23:59:59Z\) was replaced by run 'r2b'.*Use --run r2b"):
        runs.find(db, "r2")
    assert deltas(db, "r3") == {("vip", "exited"): ["e"]}
    assert health(db, "r3").loc["vip", ["entered", "exited", "stayed", "previous_size"]].tolist() == [0, 1, 3, 4]
    # the replacement dropped since: it said "Use --run r2b", a run no command finds, for a date with none
    runs.drop_run(db, "r2b", "scored by mistake")
    with pytest.raises(ValueError, match=r"was replaced by run 'r2b', .*which was dropped since \(.*scored by mistake\)\): "
                                         r"no run stands for that date now; score it again: dynseg score --as-of 2026-01-02T"):
        runs.find(db, "r2")
    write(con, db, d2, "r2c", {"vip": ["b"]})  # and once the date is scored again, that run is named
    with pytest.raises(ValueError, match=r"which was dropped since .*The run for that date now is 'r2c': use --run r2c"):
        runs.find(db, "r2")


def test_failed_write_leaves_the_previous_state(tmp_path):
    db, con = tmp_path / "ws.duckdb", duckdb.connect()
    d1 = datetime(2026, 1, 1, 23, 59, 59)
    write(con, db, d1, "r1", {"vip": ["a", "b"]})
    con.register("m", pd.DataFrame({"segment": ["vip"]}))  # missing columns: the insert fails mid-transaction
    record = {"run_id": "r1x", "as_of": d1, "started_at": d1, "finished_at": d1, "engine": "duckdb", "n_customers": 1,
              "models": "[]", "bands": "{}", "previous_run_id": None, "mlflow_run_id": None, "export_dir": "",
              "config": "{}"}
    with pytest.raises(duckdb.Error):
        runs.write_run(con, db, record, ["purchase"], "s", "m", "h")
    assert runs.read(db, "SELECT run_id FROM scoring_runs").run_id.tolist() == ["r1"]
    assert runs.read(db, "SELECT count(*) AS n FROM segment_members").n[0] == 2


def test_a_dropped_run_is_gone_and_the_run_after_it_moves_against_the_one_before(tmp_path):
    """A stray run (scored without --as-of while debugging) sat between two nightly runs: the next
    one's entered/exited were taken against it, and nothing could remove it."""
    db, con = tmp_path / "ws.duckdb", duckdb.connect()
    d1, d2, d3 = (datetime(2026, 1, d) for d in (2, 3, 4))
    write(con, db, d1, "r1", {"vip": ["a", "b"]})
    write(con, db, d2, "stray", {"vip": ["x"]})
    write(con, db, d3, "r3", {"vip": ["b", "c"]})
    assert deltas(db, "r3") == {("vip", "entered"): ["b", "c"], ("vip", "exited"): ["x"]}
    gone = runs.drop_run(db, "stray", reason="scored by mistake")
    assert (gone.as_of, gone.previous, gone.next) == (d2, "r1", "r3")
    assert deltas(db, "r3") == {("vip", "entered"): ["c"], ("vip", "exited"): ["a"]}  # as if it never was
    assert health(db, "r3").loc["vip", ["size", "entered", "exited", "stayed", "previous_size"]].tolist() == [2, 1, 1, 1, 2]
    assert runs.read(db, "SELECT previous_run_id FROM scoring_runs WHERE run_id = 'r3'").previous_run_id[0] == "r1"
    for table in ("scoring_runs", "customer_scores", "segment_members", "segment_deltas", "segment_health"):
        assert runs.read(db, f"SELECT count(*) AS n FROM {table} WHERE run_id = 'stray'").n[0] == 0, table
    with pytest.raises(ValueError, match=r"the scoring run 'stray' \(as of 2026-01-02\) was dropped on .*: scored by mistake"):
        runs.find(db, "stray")
    with pytest.raises(ValueError, match="no scoring run 'nope'"):
        runs.drop_run(db, "nope")
    with pytest.raises(ValueError, match=r"the scoring run 'stray' \(as of 2026-01-02\) was dropped on .*: scored by mistake"):
        runs.drop_run(db, "stray")  # dropped already: said so
    # a workspace scored before segment_exclusions existed has no such table: the drop still works
    con.execute(f"ATTACH '{db}' AS w")
    con.execute("DROP TABLE w.segment_exclusions")
    con.execute("DETACH w")
    # the first run dropped: the next is the first, everyone in it entered
    runs.drop_run(db, "r1")
    assert deltas(db, "r3") == {("vip", "entered"): ["b", "c"]}
    assert health(db, "r3").loc["vip", ["entered", "exited", "stayed"]].tolist() == [2, 0, 0]
    assert runs.read(db, "SELECT previous_run_id FROM scoring_runs WHERE run_id = 'r3'").previous_run_id[0] is None
    # a drop killed inside its transaction changes nothing
    import os
    import subprocess
    import sys
    import time

    write(con, db, datetime(2026, 1, 5), "r4", {"vip": ["c"]})
    marker = tmp_path / "paused"
    child = subprocess.Popen([sys.executable, "-c", f"from pipeline import runs; from pathlib import Path; "
                              f"runs.drop_run(Path({str(db)!r}), 'r4')"],
                             env={**os.environ, runs.PAUSE_ENV: str(marker)})
    for _ in range(600):
        if marker.exists() or child.poll() is not None:
            break
        time.sleep(0.1)
    assert marker.exists(), "the drop never reached its commit"
    child.kill()
    child.wait()
    assert runs.read(db, "SELECT run_id FROM scoring_runs ORDER BY as_of").run_id.tolist() == ["r3", "r4"]
    assert deltas(db, "r4") == {("vip", "exited"): ["b"]}


def test_drop_run_cli_removes_the_runs_exports_and_refuses_a_pruned_one(project):
    from typer.testing import CliRunner

    from pipeline.cli import app

    db = project.workspace / "dynseg.duckdb"
    project.workspace.mkdir()
    con = duckdb.connect()
    for d, run_id in ((0, "old"), (100, "mid"), (101, "new")):
        write(con, db, datetime(2026, 1, 2) + timedelta(days=d), run_id, {"vip": ["a"]})
    exports = project.workspace / "exports" / "2026-04-11"
    exports.mkdir(parents=True)
    (exports / "manifest.json").write_text(json.dumps({"run_id": "mid"}))
    # the stored path of a workspace copied from elsewhere names the other's folder: never touched
    elsewhere = project.root.parent / "original" / ".dynseg" / "exports" / "2026-04-11"
    elsewhere.mkdir(parents=True)
    (elsewhere / "manifest.json").write_text(json.dumps({"run_id": "mid"}))
    con.execute("ATTACH '%s' AS ws" % db)
    con.execute("UPDATE ws.scoring_runs SET export_dir = ? WHERE run_id = 'mid'", [str(elsewhere)])
    con.execute("DETACH ws")
    cli = CliRunner()
    said = cli.invoke(app, ["segments", "drop-run", "mid", "--reason", "wrong date"])
    assert said.exit_code == 0, said.output
    text = " ".join(said.output.split())
    assert "Dropped scoring run mid (as of 2026-04-11). Run new now follows run old" in text and not exports.exists()
    assert (elsewhere / "manifest.json").is_file()
    assert cli.invoke(app, ["segments", "list", "--run", "mid"]).exit_code == 1
    assert cli.invoke(app, ["segments", "prune", "--keep-days", "60"]).exit_code == 0  # prunes 'old'
    refused = cli.invoke(app, ["segments", "drop-run", "old", "--reason", "test"])
    assert refused.exit_code == 1 and "is among the pruned runs" in " ".join(refused.output.split())
    # a drop deletes for good: the record says why (it went through with none)
    for missing in ([], ["--reason", " "]):
        unsaid = cli.invoke(app, ["segments", "drop-run", "new", *missing])
        assert unsaid.exit_code == 2 and "--reason" in unsaid.output, unsaid.output
    # the latest run after a pruned one: nothing follows it to take again, so it may go
    assert cli.invoke(app, ["segments", "drop-run", "new", "--reason", "test"]).exit_code == 0


def _manifest(folder: Path) -> str | None:
    from pipeline.jobs.score import _manifest_run

    return _manifest_run(folder)


def test_exports_left_by_stopped_commands_are_put_right_by_the_next(project):
    """Stopped between a commit and the folder's move, a score left its finished exports under a
    temp name and a drop left the dropped run's folder; a sweep of exports/ by the next command
    deleted the first as any killed writer's temp, and nothing removed the second, which an email
    tool reading exports/<date>/ would send from. Every date's folder is now checked."""
    import subprocess

    from typer.testing import CliRunner

    from features.writers import HOST
    from pipeline.cli import app

    db = project.workspace / "dynseg.duckdb"
    project.workspace.mkdir()
    con = duckdb.connect()
    for d, run_id in ((0, "r0"), (1, "r1"), (2, "r2"), (3, "r3")):
        write(con, db, datetime(2026, 1, 2) + timedelta(days=d), run_id, {"vip": ["a"]})
    exports = project.workspace / "exports"
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = f"{dead.pid}@{HOST}"

    def folder(name: str, run_id: str) -> Path:
        (exports / name).mkdir(parents=True)
        (exports / name / "manifest.json").write_text(json.dumps({"run_id": run_id}))
        return exports / name

    folder("2026-01-01", "r0")
    # r1 committed, its finished folder still under its temp name; the date holds the run it replaced
    folder("2026-01-02", "r1-replaced")
    folder(f".2026-01-02.{tag}~ab12.tmp", "r1")
    # r2 dropped, stopped before its folder was removed
    folder("2026-01-03", "r2")
    runs.drop_run(db, "r2", reason="wrong date")
    # a temp of a run that never stood (its score was stopped before the commit)
    folder(f".2026-01-04.{tag}~cd34.tmp", "never")
    folder("2026-01-04", "r3")
    said = CliRunner().invoke(app, ["segments", "drop-run", "r0", "--reason", "test"])
    assert said.exit_code == 0, said.output
    text = " ".join(said.output.split())
    assert "the exports of run r1 (as of 2026-01-02) were put in place now" in text, text
    assert json.loads((exports / "2026-01-02" / "manifest.json").read_text())["run_id"] == "r1"
    assert "the exports of dropped run r2" in text and not (exports / "2026-01-03").exists()
    assert not (exports / "2026-01-01").exists()  # r0's own, dropped now
    assert sorted(p.name for p in exports.iterdir()) == ["2026-01-02", "2026-01-04"]  # the temps are gone
    # a date's folder holding a replaced run's files is said, whichever date it is
    (exports / "2026-01-02" / "manifest.json").write_text(json.dumps({"run_id": "r1-replaced"}))
    from pipeline.jobs.score import recover_exports
    from pipeline.workspace import Workspace

    (w,) = recover_exports(Workspace(project.workspace))
    assert w.startswith(f"{exports / '2026-01-02'} holds the files of run r1-replaced, which another run replaced (r1)")
    # an instant with fractions of a second names the folder with a dot; the only run left dropped
    ws = Workspace(project.workspace)
    (exports / "2026-01-02" / "manifest.json").write_text(json.dumps({"run_id": "r1"}))
    write(con, db, datetime(2026, 1, 9, 12, 0, 0, 500000), "frac", {"vip": ["a"]})
    label = "2026-01-09T120000.500000Z"
    folder(f".{label}.{tag}~ef56.tmp", "frac")
    (said,) = recover_exports(ws)
    assert said.startswith("the exports of run frac") and _manifest(exports / label) == "frac", said
    # a swap stopped between its two renames: the .old holds the only copy of a date's files, kept;
    # one whose date folder is in place again, or that a swap was removing (no manifest), goes
    (exports / "2026-01-04").rename(exports / ".2026-01-04.old")
    (exports / ".2026-01-02.old").mkdir()
    (exports / ".2026-01-07.old" / "suppressions").mkdir(parents=True)
    recover_exports(ws)
    assert sorted(p.name for p in exports.glob(".*.old")) == [".2026-01-04.old"]
    (exports / ".2026-01-04.old").rename(exports / "2026-01-04")
    for run_id in ("r1", "r3", "frac"):
        runs.drop_run(db, run_id, reason="test")  # stopped before the folders went: none stands now
    said = recover_exports(ws)
    assert len(said) == 3 and not [p for p in exports.iterdir()], (said, list(exports.iterdir()))


def test_a_prune_killed_in_its_compaction_leaves_nothing_for_good(tmp_path, monkeypatch):
    """A prune killed while copying the database into its compacted temp left that copy (5.8 MB)
    beside the workspace for good, and the file at twice its size: a second prune found nothing to
    prune and did not compact. The next write removes the copy; a prune compacts a mostly free file."""
    import subprocess

    from features.writers import HOST

    db, con = tmp_path / "ws.duckdb", duckdb.connect()
    many = [f"c{i:05d}" for i in range(20_000)]
    write(con, db, datetime(2026, 1, 2), "r0", {"vip": many})
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".ws.duckdb.{dead.pid}@{HOST}~ab12cd.tmp"
    left.write_bytes(b"\0" * 4096)
    left.with_name(left.name + ".wal").write_bytes(b"\0")
    write(con, db, datetime(2026, 1, 3), "r1", {"vip": many[:10]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws.duckdb"]
    # the prune's deletes committed, its compaction stopped: most of the file is free blocks
    with duckdb.connect(str(db)) as w:
        w.execute("DELETE FROM segment_members WHERE run_id = 'r0'")
        w.execute("DELETE FROM customer_scores WHERE run_id = 'r0'")
        w.execute("DELETE FROM segment_deltas WHERE run_id = 'r0'")
        w.execute("CHECKPOINT")
    before = db.stat().st_size
    done = runs.prune(db, keep_days=365)  # nothing older than a year: nothing to prune, too little free to copy
    assert len(done.runs) == 0 and db.stat().st_size == before
    monkeypatch.setattr(runs, "COMPACT_FREE_BYTES", 0)  # (a real one: tens of MB free in a file of GBs)
    done = runs.prune(db, keep_days=365)
    assert len(done.runs) == 0 and db.stat().st_size < 0.75 * before, (before, db.stat().st_size)
    assert runs.read(db, "SELECT count(*) AS n FROM segment_members").n[0] == 10  # the same rows


def test_prune_drops_old_runs_per_customer_rows_keeps_their_health_and_shrinks_the_file(tmp_path):
    db, con = tmp_path / "ws.duckdb", duckdb.connect()
    day = lambda d: datetime(2026, 1, 2) + timedelta(days=d)  # noqa: E731 (the end of 2026-01-01, and d days on)
    many = [f"c{i:05d}" for i in range(20_000)]
    write(con, db, day(0), "r0", {"vip": many[:15_000], "sunset": many[5_000:]})
    write(con, db, day(0), "r0b", {"vip": many[:14_000], "sunset": many[5_000:]})  # replaces r0: its sides are kept
    write(con, db, day(10), "r10", {"vip": many[:12_000], "sunset": many[6_000:]})
    write(con, db, day(40), "r40", {"vip": many[:10_000], "sunset": many[8_000:]})
    write(con, db, day(41), "r41", {"vip": many[:10_001], "sunset": many[8_000:]})
    count = lambda table, run: runs.read(db, f"SELECT count(*) AS n FROM {table} WHERE run_id = ?", [run]).n[0]  # noqa: E731
    before = {(t, r): count(t, r) for t in runs.PER_CUSTOMER for r in ("r0", "r0b", "r10", "r40", "r41")}
    assert before[("replaced_members", "r0")] > 0 and before[("segment_members", "r10")] > 0

    # a dry run says what would go and drops nothing
    dry = runs.prune(db, 30, dry_run=True)
    assert dry.runs.run_id.tolist() == ["r0b", "r10"]  # older than 30 days before the latest run (day 41)
    assert dry.rows["segment_members"] == before[("segment_members", "r0b")] + before[("segment_members", "r10")]
    assert dry.rows["replaced_members"] == before[("replaced_members", "r0")]
    assert {(t, r): count(t, r) for (t, r) in before} == before and runs.pruned(db, "r10") is None

    size = db.stat().st_size
    done = runs.prune(db, 30)
    assert done.runs.run_id.tolist() == ["r0b", "r10"] and done.rows == dry.rows
    for (t, r), n in before.items():
        assert count(t, r) == (0 if r in ("r0", "r0b", "r10") else n), (t, r)
    # every run keeps its record and its segments' health
    assert runs.read(db, "SELECT run_id FROM scoring_runs ORDER BY as_of").run_id.tolist() == ["r0b", "r10", "r40", "r41"]
    assert health(db, "r10").loc["vip", ["size", "entered", "exited"]].tolist() == [12_000, 0, 2_000]
    assert done.bytes_after == db.stat().st_size < size * 0.75, (size, db.stat().st_size)
    assert runs.pruned(db, "r10")[1] == 30 and runs.pruned(db, "r40") is None
    assert runs.prune(db, 30).runs.empty  # pruned already: nothing more

    # a run kept whole reads as before; a pruned one is refused, naming the prune
    runs.require_rows(db, runs.find(db, "r40"), "its members")
    with pytest.raises(ValueError, match=r"the scoring run r10 \(as of 2026-01-11\) was pruned on .*--keep-days 30.*"
                                         r"its members are gone.*segments list --run r10.*the runs of the 30 days before the latest are kept in full"):
        runs.require_rows(db, runs.find(db, "r10"), "its members")
    # the next night's movement is taken against the latest run, which a prune never touches
    assert write(con, db, day(42), "r42", {"vip": many[:10_002], "sunset": many[8_000:]}) == "r41"
    assert deltas(db, "r42") == {("vip", "entered"): [many[10_001]]}
    # a date among the pruned runs (a backfill, or one scored again) would move against rows that are gone
    for d in (5, 10):
        with pytest.raises(ValueError, match=r"cannot score as of 2026-01-\d\d: the runs up to 2026-01-11 were pruned"):
            write(con, db, day(d), f"late{d}", {"vip": many[:3]})
        with pytest.raises(ValueError, match="were pruned"):
            runs.refuse_pruned_era(db, day(d))
    # ... and so would a date after them whose run before is one of them (day 20: after r10, before r40)
    with pytest.raises(ValueError, match=r"cannot score as of 2026-01-21: the runs up to 2026-01-11 were pruned"):
        write(con, db, day(20), "late20", {"vip": many[:3]})
    with pytest.raises(ValueError, match="were pruned"):
        runs.refuse_pruned_era(db, day(20))
    runs.refuse_pruned_era(db, day(43))
    assert runs.read(db, "SELECT count(*) AS n FROM scoring_runs").n[0] == 5


def _two_runs(project, days_apart: int):
    """A workspace with two stored runs, 'old' and 'new', of the project's segments: vip {a, b},
    active {a}. Returns the database and a DuckDB connection (detached from it)."""
    db = project.workspace / "dynseg.duckdb"
    project.workspace.mkdir()
    cfg = load_config(project.root)
    config = json.dumps({"segments": cfg.segments.model_dump(), "scoring": cfg.scoring.model_dump()})
    con = duckdb.connect()
    for d, run_id in ((0, "old"), (days_apart, "new")):
        write(con, db, datetime(2026, 1, 2) + timedelta(days=d), run_id, {"vip": ["a", "b"], "active": ["a"]})
    con.execute("ATTACH '%s' AS ws" % db)
    con.execute("UPDATE ws.scoring_runs SET config = ?", [config])
    con.execute("DETACH ws")
    return db, con


def test_prune_cli_refuses_under_the_lift_horizon_and_pruned_runs_say_so(project):
    from typer.testing import CliRunner

    from pipeline.cli import app

    db, con = _two_runs(project, days_apart=100)
    cli = CliRunner()
    refused = cli.invoke(app, ["segments", "prune", "--keep-days", "30"])
    assert refused.exit_code == 1 and "--keep-days 30 is shorter than the churn label's horizon (60 days" in refused.output
    assert "Keep at least --keep-days 60" in refused.output
    dry = cli.invoke(app, ["segments", "prune", "--keep-days", "60", "--dry-run"])
    assert dry.exit_code == 0 and "Would drop the per-customer rows of 1 scoring run, as of 2026-01-01:" in dry.output
    assert runs.pruned(db, "old") is None
    done = cli.invoke(app, ["segments", "prune", "--keep-days", "60"])
    assert done.exit_code == 0 and "Dropped the per-customer rows of 1 scoring run, as of 2026-01-01:" in done.output, done.output
    assert "segment_members" in done.output and "The workspace database went from" in done.output
    assert "Nothing to prune" in cli.invoke(app, ["segments", "prune", "--keep-days", "60"]).output
    # a run whose churn model was trained on 120 days: lift grades it on 120, so the prune waits for that
    con.execute("ATTACH '%s' AS ws" % db)
    con.execute("UPDATE ws.scoring_runs SET models = ? WHERE run_id = 'new'", [json.dumps(
        [{"target": "churn", "name": "dynseg-churn", "version": "3", "horizon_days": 120}])])
    con.execute("DETACH ws")
    longer = " ".join(cli.invoke(app, ["segments", "prune", "--keep-days", "60"]).output.split())
    assert "shorter than the churn label's horizon (120 days, dynseg-churn version 3's, in a stored run)" in longer, longer
    # what needs the members is refused, naming the prune; the sizes remain
    changes = cli.invoke(app, ["segments", "changes", "vip", "--run", "old"])
    assert changes.exit_code == 1 and "was pruned on" in changes.output and "who entered and who exited" in changes.output
    shown = cli.invoke(app, ["segments", "show", "vip", "--as-of", "2026-01-01", "--no-drivers"])
    assert shown.exit_code == 0, shown.output
    assert "Size across runs" in shown.output and "was pruned on" in shown.output and "Sample" not in shown.output
    listed = cli.invoke(app, ["segments", "list", "--run", "old", "--json"])
    assert listed.exit_code == 0 and {s["segment"]: s["size"] for s in json.loads(listed.output)["segments"]} == \
        {"vip": 2, "active": 1}
    after = cli.invoke(app, ["segments", "changes", "vip", "--run", "new"])
    assert after.exit_code == 0
    # the run after a pruned one: its "before" and entry reasons are gone, which is said (it was not)
    assert "The previous run, old, was pruned on" in " ".join(after.output.split()), after.output
    for cmd in (["lift", "--run", "old"], ["monitor", "--run", "old"], ["explain", "a", "--run", "old"]):
        said = cli.invoke(app, cmd)
        assert said.exit_code == 1 and "the scoring run old (as of 2026-01-01) was pruned on" in said.output, (cmd, said.output)


def test_segments_list_says_when_a_model_changed_between_runs_in_text_and_json(project):
    """A promotion or rollback between two runs moves every segment read from its scores: the
    table said so, the JSON (for a scheduler: "the same") did not."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    db, con = _two_runs(project, days_apart=1)
    con.execute("ATTACH '%s' AS ws" % db)
    for run_id, version in (("old", "1"), ("new", "2")):
        con.execute("UPDATE ws.scoring_runs SET models = ? WHERE run_id = ?", [json.dumps(
            [{"target": "purchase", "name": "dynseg-purchase", "version": version},
             {"target": "churn", "name": "dynseg-churn", "version": "1"}]), run_id])
    con.execute("DETACH ws")
    cli = CliRunner()
    text = " ".join(cli.invoke(app, ["segments", "list", "--run", "new"]).output.split())
    assert ("Model changed since run old: purchase was scored by dynseg-purchase version 1, now by dynseg-purchase "
            "version 2") in text, text
    listed = json.loads(cli.invoke(app, ["segments", "list", "--run", "new", "--json"]).output)
    assert listed["previous_run_id"] == "old"
    # which model scored the segments that night, in the JSON and on screen (an audit read the database)
    assert [(m["target"], m["name"], m["version"]) for m in listed["models"]] == [
        ("purchase", "dynseg-purchase", "2"), ("churn", "dynseg-churn", "1")]
    assert "Scored by: purchase dynseg-purchase version 2; churn dynseg-churn version 1" in text, text
    # coverage under 100 % read as a data problem: what it is, under the table
    assert "coverage: share of customers for whom every input of the rule is known" in text, text
    assert listed["model_changes"] == {"purchase": {"before": "dynseg-purchase version 1",
                                                    "now": "dynseg-purchase version 2"}}
    assert json.loads(cli.invoke(app, ["segments", "list", "--run", "old", "--json"]).output)["model_changes"] == {}
    # `segments changes`, whose file a sender reads, says it too (only `segments list` and `score` did)
    changed = cli.invoke(app, ["segments", "changes", "vip", "--run", "new"])
    assert changed.exit_code == 0 and ("Model changed since run old: purchase was scored by dynseg-purchase version 1, "
                                       "now by dynseg-purchase version 2") in " ".join(changed.stderr.split())
    # the same training run under a new name (the model renamed in the registry) is no change of model
    from pipeline.jobs.score import run_model_changes

    con.execute("ATTACH '%s' AS ws" % db)
    for run_id, name in (("old", "dynseg-churn"), ("new", "crm-churn")):
        con.execute("UPDATE ws.scoring_runs SET models = ? WHERE run_id = ?", [json.dumps(
            [{"target": "churn", "name": name, "version": "1", "model_run_id": "abc"},
             {"target": "purchase", "name": "dynseg-purchase", "version": "1", "model_run_id": "p1" if run_id == "old" else "p2"}]), run_id])
    con.execute("DETACH ws")
    # and the same name and number holding another training run (deleted, trained again) is one
    assert run_model_changes(db, "new", "old") == {"purchase": ("dynseg-purchase version 1 (training run p1)",
                                                                "dynseg-purchase version 1 (training run p2)")}


def test_an_exit_from_a_band_rule_says_whether_the_score_or_only_the_cut_moved():
    """A marketer resized a band and promoted the model: 130 of 132 exits read "no longer matches
    the rule" with the same score, the band's cut having moved. The band's move, the score's, and a
    change of model are said where the rule reads them."""
    import pandas as pd

    from pipeline.cli.segments import _rule_exits

    moved = pd.DataFrame({
        "customer_id": ["a", "b", "c", "d", "e"],
        "change": ["exited", "exited", "exited", "exited", "entered"],
        "purchase_score_100": [29, 22, 40, None, 50], "purchase_band": ["medium", "medium", "high", None, "high"],
        "churn_score_100": [10, 10, 10, 10, 10], "churn_band": ["low"] * 5,
        "previous_purchase_score_100": [29, 31, 40, 35, 20], "previous_purchase_band": ["high", "high", "high", "high", "low"],
        "previous_churn_score_100": [10, 10, 10, 10, 10], "previous_churn_band": ["low"] * 5,
        "purchase_score": [0.2901, 0.2204, 0.40, None, 0.50], "previous_purchase_score": [0.2901, 0.3104, 0.40, 0.35, 0.2],
        "why": ["no longer matches the rule", "no longer matches the rule", "excluded by recent_buyers",
                "not scored in this run", None]})
    new = ("dynseg-purchase version 1", "dynseg-purchase version 2")
    why = _rule_exits(moved, {"where": "purchase_band = 'high'"}, {"purchase": new}).set_index("customer_id").why
    assert why["a"] == ("no longer matches the rule: purchase band high → medium at the same score (29): the band's cut "
                        "moved; the purchase model changed: dynseg-purchase version 1 → dynseg-purchase version 2")
    assert why["b"].startswith("no longer matches the rule: purchase band high → medium (score 31 → 22); the purchase")
    assert why["c"] == "excluded by recent_buyers" and why["d"] == "not scored in this run" and pd.isna(why["e"])
    # no model change: the band and the score only; a rule on a score: the score's move
    assert _rule_exits(moved, {"where": "purchase_band = 'high'"}, {}).why[0] == (
        "no longer matches the rule: purchase band high → medium at the same score (29): the band's cut moved")
    assert _rule_exits(moved, {"where": "purchase_score_100 >= 25"}, {}).why[1] == (
        "no longer matches the rule: purchase score 31 → 22")
    # the same score_100 from two probabilities (0.7004, 0.6996 beside a fixed 0.70 cut): the score moved, not the cut
    near = moved.assign(purchase_score=[0.2896, 0.2204, 0.40, None, 0.50])
    assert _rule_exits(near, {"where": "purchase_band = 'high'"}, {}).why[0] == (
        "no longer matches the rule: purchase band high → medium (score 0.2901 → 0.2896)")
    # a rule that reads no model's columns: as it was
    assert _rule_exits(moved, {"where": "recency_days > 90"}, {"purchase": new}).why[0] == "no longer matches the rule"


# -- bands --------------------------------------------------------------------------------------
def test_a_band_a_higher_one_of_another_kind_leaves_empty_is_named():
    """high by precision 0.9 resolved near 0.8; medium from probability 0.95 below it could hold no
    one, and nothing said so (the config check compares rules of one kind only)."""
    rng = np.random.default_rng(0)
    s = rng.uniform(size=10_000)
    y = (rng.uniform(size=s.size) < s).astype(int)
    levels = bands.resolve_for_model([bands.BandLevel("high", min_precision=0.9), bands.BandLevel("medium", min_probability=0.95),
                                      bands.BandLevel("warm", top_percent=50), bands.BandLevel("low")], s, y)
    said = bands.shadowed(levels, s)
    assert len(said) == 1 and said[0].startswith("band 'medium' (from 0.9500) lies at or above band 'high''s cut (0.8")
    assert "'medium' holds no one; lower its rule in configs/bands.yaml" in said[0]
    fine = bands.resolve_for_model([bands.BandLevel("high", min_precision=0.9), bands.BandLevel("medium", min_probability=0.5),
                                    bands.BandLevel("low")], s, y)
    assert bands.shadowed(fine, s) == []


def test_bands_by_probability_percentile_and_precision():
    rng = np.random.default_rng(0)
    s = rng.uniform(size=10_000)
    y = (rng.uniform(size=s.size) < s).astype(int)  # calibrated: P(y=1 | s) = s
    levels = bands.resolve_for_model(
        [bands.BandLevel("top", min_precision=0.9), bands.BandLevel("mid", top_percent=50),
         bands.BandLevel("warm", min_probability=0.3), bands.BandLevel("rest")], s, y)
    top = levels[0].threshold
    assert (y[s >= top]).mean() >= 0.9 and (y[s >= top - 0.01]).mean() < 0.9 + 0.01
    assert 0.78 < top < 0.84  # precision of U(t, 1) is (1 + t) / 2 = 0.9 at t = 0.8
    run = bands.thresholds_for_run(levels, s)
    names = bands.assign(run, np.r_[s, np.nan])
    assert names[-1] is None
    assert (names[:-1] == "top").mean() == pytest.approx((s >= top).mean())
    assert ((names[:-1] == "top") | (names[:-1] == "mid")).mean() == pytest.approx(0.5, abs=1e-3)
    assert set(names[:-1][s < 0.3]) == {"rest"}
    # saved and reloaded with the model: the same cut
    again = bands.thresholds_for_run(bands.from_dicts(bands.to_dicts(levels)), s)
    assert (bands.assign(again, s) == names[:-1]).all()
    # a top share is taken again in each run: its threshold (of the test snapshot, or of a run) is no part of its rule
    assert levels[1].describe() == "top 50 % of the run"
    assert run[1].describe() == "top 50 % of the run" and run[1].threshold is not None
    assert levels[0].describe() == f"precision >= 0.9 on the test snapshot (threshold {top:.4f})"


def test_a_precision_band_states_what_it_keeps_out_of_sample():
    """Chosen on the test snapshot, the threshold reaches the target there by construction; the
    note's cross-fitted figure is what it can be expected to keep. Small samples, many seeds: the
    in-sample precision is never below 0.9, the cross-fitted one is on average below it, around
    the truth for a calibrated score."""
    in_sample, crossed = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        s = rng.uniform(size=1_000)
        y = (rng.uniform(size=s.size) < s).astype(int)
        (lv, _) = bands.resolve_for_model([bands.BandLevel("top", min_precision=0.9), bands.BandLevel("rest")], s, y)
        if lv.threshold == np.inf:
            continue
        in_sample.append(y[s >= lv.threshold].mean())
        assert lv.note.startswith("out of sample (threshold chosen on half the test rows, measured on the other half)")
        crossed.append(float(lv.note.rsplit(" ", 1)[1]))
    assert len(crossed) > 30 and min(in_sample) >= 0.9
    assert np.mean(crossed) < np.mean(in_sample) - 0.01 and abs(np.mean(crossed) - 0.9) < 0.03, (np.mean(in_sample), np.mean(crossed))


def test_a_precision_threshold_that_does_not_replicate_on_half_the_rows_says_so():
    """It said "too few customers to estimate", with hundreds of rows: what failed was the threshold."""
    n = 600
    s = np.linspace(1, 0, n)
    y = ((np.arange(n) % 2 == 1) & (np.arange(n) < 300)).astype(int)  # the top half's buyers all on odd rows
    note = bands.cross_fitted_precision_note(s, y, 0.5)
    assert "on half the test rows (alternate rows) no threshold reaches precision 0.5" in note
    assert "does not replicate" in note and "too few" not in note


def test_unreachable_precision_leaves_the_band_empty():
    s = np.linspace(0, 1, 1000)
    (lv,) = bands.resolve_for_model([bands.BandLevel("top", min_precision=0.99)], s, np.zeros(1000))
    assert lv.threshold == np.inf and "stays empty" in lv.note


def test_band_config_is_checked(project):
    (project.root / "configs" / "bands.yaml").write_text(yaml.safe_dump({"purchase": [
        {"name": "high", "top_percent": 10, "min_probability": 0.5}, {"name": "low", "top_percent": 5}]}))
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    assert "configs/bands.yaml: purchase:" in str(e.value) and "band 'high' needs exactly one of" in str(e.value)


def test_an_empty_segment_says_what_emptied_it(tmp_path):
    """`segments show` said only "has no members" of a segment whose exclusions took every customer
    its rule selected (a subscription shop's likely_buyers, all recent buyers), and of one reading
    a band no threshold could reach (a small shop's churn `min_precision: 0.85` band)."""
    import json
    from types import SimpleNamespace

    import duckdb

    from pipeline.cli.segments import _why_empty

    db = tmp_path / "ws.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE scoring_runs (run_id VARCHAR)")  # (a workspace: runs.read asks for it)
        con.execute("CREATE TABLE segment_exclusions (run_id VARCHAR, as_of TIMESTAMP, segment VARCHAR, "
                    "customer_id VARCHAR, excluded_by VARCHAR)")
        con.execute("INSERT INTO segment_exclusions SELECT 'r1', TIMESTAMP '2026-12-01', 'likely_buyers', 'c' || i, "
                    "CASE WHEN i < 100 THEN 'recent_buyers' ELSE 'unsubscribed' END FROM range(121) t(i)")
    models = [{"target": "churn", "bands": [{"name": "high", "threshold": float("inf")},
                                            {"name": "medium", "threshold": 0.4}, {"name": "low", "threshold": None}]}]
    run = SimpleNamespace(run_id="r1", models=json.dumps(models))
    said = _why_empty(db, run, "likely_buyers", "purchase_score >= 0.3")
    assert said == ["its rule selected 121 customers, and its exclusions took them all (recent_buyers: 100, "
                    "unsubscribed: 21)"], said
    said = _why_empty(db, run, "high_churn_risk", "churn_band = 'high'")
    assert len(said) == 1 and "the churn model's 'high' band, which its rule reads, could hold no one" in said[0]
    assert _why_empty(db, run, "some_churn", "churn_band = 'medium'") == []
    assert len(_why_empty(db, run, "either", "churn_band IN ('high', 'medium')")) == 1
    # another model's band of that name, or a rule that leaves the band out, is no cause
    assert _why_empty(db, run, "mixed", "churn_band = 'low' AND purchase_band = 'high'") == []
    assert _why_empty(db, run, "not_high", "churn_band != 'high'") == []


def test_an_exit_by_an_identity_merge_names_the_id_the_person_has_now(tmp_path):
    """A link added between two runs merged c50 into c00: c50 exited "not scored in this run", and
    c00 entered, as if two people had moved. The run's own merges (every run keeps them) name it."""
    import json
    from types import SimpleNamespace

    import duckdb

    from pipeline.cli.segments import _changes_of

    db = tmp_path / "ws.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE scoring_runs (run_id VARCHAR)")
        con.execute("CREATE TABLE segment_deltas (run_id VARCHAR, as_of TIMESTAMP, segment VARCHAR, customer_id VARCHAR, "
                    "change VARCHAR)")
        con.execute("INSERT INTO segment_deltas VALUES ('r2', '2026-11-27', 'vip', 'c50', 'exited'), "
                    "('r2', '2026-11-27', 'vip', 'c77', 'exited'), ('r2', '2026-11-27', 'vip', 'c00', 'entered')")
        con.execute("CREATE TABLE customer_scores (run_id VARCHAR, as_of TIMESTAMP, customer_id VARCHAR, purchase_score DOUBLE)")
        con.execute("INSERT INTO customer_scores VALUES ('r2', '2026-11-27', 'c00', 0.4)")
        con.execute("CREATE TABLE segment_members (run_id VARCHAR, segment VARCHAR, customer_id VARCHAR, holdout BOOLEAN, "
                    "sendable BOOLEAN)")
        con.execute("INSERT INTO segment_members VALUES ('r2', 'vip', 'c00', false, true)")
        # the run's own merges; c77's merge came with a later run: not why it left this one
        con.execute("CREATE TABLE run_identity_merges (run_id VARCHAR, as_of TIMESTAMP, customer_id VARCHAR, "
                    "canonical_id VARCHAR)")
        con.execute("INSERT INTO run_identity_merges VALUES ('r2', '2026-11-27', 'c50', 'c00'), "
                    "('r7', '2026-12-02', 'c77', 'c00')")
    run = SimpleNamespace(run_id="r2", previous_run_id=None, config=json.dumps({"segments": {}}))
    why = _changes_of(db, run, "vip", {"segments": [{"name": "vip", "exclude": []}]}, False).set_index("customer_id").why
    assert why["c50"] == "merged into c00 by an identity link (the person under that id)", why
    assert why["c77"] == "not scored in this run" and pd.isna(why["c00"])


def test_a_top_percent_band_that_ties_let_far_past_its_share_is_warned():
    """A model of 3 trees gave few distinct scores: "top 10 % of the run" held 18.6 % (ties at the
    cut all get in) and the band below it was left empty, with no word."""
    levels = [bands.BandLevel(name="high", top_percent=10), bands.BandLevel(name="medium", top_percent=30),
              bands.BandLevel(name="low")]
    coarse = np.repeat([0.30, 0.20, 0.10, 0.05], [90, 96, 700, 114])  # 1,000 customers, 4 distinct scores
    resolved = bands.thresholds_for_run(levels, coarse)
    said = bands.tie_warnings(resolved, coarse, "purchase")
    assert len(said) == 2, said
    assert said[0].startswith("band high is the top 10 % of the run, but 186 of 1,000 scored customers (18.6%) reach its "
                              "cut, 0.2000: 96 share that very score"), said[0]
    assert "`dynseg models show purchase`" in said[0] and "min_probability" in said[0]
    assert said[1].startswith("band medium is the top 30 % of the run, but 886 of 1,000")
    # distinct scores: each band holds its share, no warning
    fine = np.linspace(0, 1, 1000)
    assert bands.tie_warnings(bands.thresholds_for_run(levels, fine), fine, "purchase") == []
    # a small run whose rank is rounded up (2 of 11 for a top 10 %) has no ties: no warning
    small = np.linspace(0, 1, 11)
    assert bands.tie_warnings(bands.thresholds_for_run(levels, small), small, "purchase") == []
    assert "for tonight write the segment's rule on purchase_score_100" in said[0]
