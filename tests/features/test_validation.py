"""Each kind of bad input, written to a real file, is reported with count, example and fix."""

import re
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import good_events
from features.engine import connect
from features.validation import _any_repeats, _checks, _fetch_hashes, validate
from pipeline.config import load_config

AS_OF = datetime(2026, 11, 28)


def run(project, **kw):
    cfg = load_config(project.root)
    return validate(connect(), cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, AS_OF, **kw)


def only(report, check):
    found = [p for p in report.problems if p.check == check]
    assert len(found) == 1, f"expected one {check!r} problem, got {report.problems}"
    return found[0]


def test_good_events_pass(project):
    project.write_events(good_events())
    report = run(project)
    assert report.ok and report.problems == []


def test_missing_required_column(project):
    project.write_events(good_events().drop(columns=["event_type"]))
    p = only(run(project), "missing_column")
    assert p.column == "event_type" and p.severity == "error"
    assert "events.parquet" in p.message and "found columns" in p.message
    assert "columns:" in p.fix


def test_a_required_column_mapped_away_says_the_mapping_took_it(project):
    """`columns: {event_id: customer_id}` reads the file's customer_id as the event id: the error
    said 'customer_id' was missing while listing it among the columns found."""
    df = good_events().drop(columns=["event_id"])
    p = only(run_with(project, df, columns={"event_id": "customer_id"}), "missing_column")
    assert p.column == "customer_id" and "the file's column 'customer_id' is read as 'event_id'" in p.message, p.message
    assert "remove `event_id: customer_id` from `columns:`" in p.fix, p.fix

def test_a_misspelled_optional_column_is_a_warning_that_names_the_look_alike(project):
    """An optional column may be missing, but one of the file's columns that looks like it
    (amt, categ, eventid, Signup-Date) is likely a misspelling whose features would quietly read
    null or 0: a warning names it and the mapping that reads it. A required one's error does too."""
    df = good_events(4).assign(category="shoes").rename(columns={"amount": "amt", "category": "categ",
                                                                  "event_id": "EventID"})
    report = run_with(project, df)
    assert report.ok
    found = {p.column: p for p in report.problems if p.check == "look_alike_column"}
    assert set(found) == {"amount", "category", "event_id"}
    assert all(p.severity == "warning" for p in found.values())
    assert "no column 'amount'" in found["amount"].message and "'amt'" in found["amount"].message
    assert "`columns: {amount: amt}`" in found["amount"].fix and "sources.events" in found["amount"].fix
    assert "`columns: {event_id: EventID}`" in found["event_id"].fix
    # with no purchase amount at all, the spend features are 0: said as for a missing amount
    p = only(report, "purchase_without_amount")
    assert p.count == 4 and "no `amount` column, so 4 purchases have no amount" in p.message and "as 0 in spend" in p.fix
    refunds = pd.concat([df, pd.DataFrame({"EventID": ["r1"], "customer_id": ["c0"], "event_type": ["order_refunded"],
                                           "ts": [pd.Timestamp("2026-01-06")], "categ": ["shoes"]})], ignore_index=True)
    p = only(run_with(project, refunds), "refund_without_amount")
    assert p.count == 1 and "no `amount` column, so 1 refund has no amount" in p.message and "0 in refund_amount" in p.fix
    # a column of its own name that looks like none is no problem; nor is a missing optional column
    df = good_events(4).assign(loyalty_points=1)
    assert [p.check for p in run_with(project, df).problems] == []
    # nor one that only shares a word or a prefix: an event's name is not its id
    df = good_events(4).drop(columns=["event_id"]).assign(event_name="x", session_id="s")
    assert [p.check for p in run_with(project, df).problems] == []
    # in the profiles: an email address is no email_consent; a misspelled signup_at is found
    pd.DataFrame({"customer_id": [f"c{i}" for i in range(4)], "email": "a@b.c", "updated_at": "2026-01-01",
                  "signup_date": "2025-01-01"}).to_parquet(project.data / "customers.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    found = [(p.column, p.message.rsplit("'", 2)[-2]) for p in run(project).problems if p.check == "look_alike_column"]
    assert found == [("signup_at", "signup_date")], found
    # a required column: the error's fix names the look-alike
    p = only(run_with(project, good_events(4).rename(columns={"customer_id": "CustomerId"})), "missing_column")
    assert p.severity == "error" and "`columns: {customer_id: CustomerId}`" in p.fix


def test_columns_named_as_other_tools_name_them_are_proposed_all_at_once(project):
    """An export from Segment or Klaviyo names the columns userId, event, timestamp, revenue: each
    missing contract column's fix names the file's column that likely holds it (not a look-alike
    that another column claims: 'event' is the event_type, not the event_id), and the first fix
    carries every mapping together as one line of YAML that, pasted, makes the source pass."""
    df = good_events(4).rename(columns={"customer_id": "userId", "event_type": "event", "ts": "timestamp",
                                        "amount": "revenue", "event_id": "messageId"})
    report = run_with(project, df, "events.csv")
    assert not report.ok
    fixes = {p.column: p.fix for p in report.problems}
    assert [(p.column, p.check, p.severity) for p in report.problems] == [
        ("customer_id", "missing_column", "error"), ("event_type", "missing_column", "error"),
        ("ts", "missing_column", "error"), ("event_id", "look_alike_column", "warning"),
        ("amount", "look_alike_column", "warning")]
    assert "`columns: {customer_id: userId}`" in fixes["customer_id"]
    assert "`columns: {event_type: event}`" in fixes["event_type"]
    assert "`columns: {ts: timestamp}`" in fixes["ts"] and "`columns: {amount: revenue}`" in fixes["amount"]
    assert "`columns: {event_id: messageId}`" in fixes["event_id"]
    together = fixes["customer_id"].split("every mapping of this source together: `columns: ")[1].rstrip("`")
    assert sum("together" in f for f in fixes.values()) == 1
    mapping = yaml.safe_load(together)
    assert mapping == {"customer_id": "userId", "event_type": "event", "ts": "timestamp", "event_id": "messageId",
                       "amount": "revenue"}
    project.write_events(df, "events.csv", columns=mapping)
    report = run(project)
    assert report.ok and report.problems == [], report.problems
    # a mapping already in the catalog is part of the line; a name YAML would misread is quoted
    df = good_events(4).rename(columns={"ts": "Event Time", "amount": "yes"})
    report = run_with(project, df, "events.csv", columns={"amount": "yes"})
    p = only(report, "missing_column")
    assert "`columns: {ts: Event Time}`" in p.fix
    assert yaml.safe_load(p.fix.split("together: `columns: ")[1].rstrip("`")) == {"amount": "yes", "ts": "Event Time"}
    # Shopify's customers export: accepts_marketing is the email consent
    pd.DataFrame({"id": ["c0", "c1"], "accepts_marketing": [True, False], "created_at": "2025-01-01"}).to_parquet(
        project.data / "customers.parquet")
    project.write_events(good_events(2))
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    found = {p.column: p.fix for p in run(project).problems if p.source == "customers"}
    assert "`columns: {customer_id: id}`" in found["customer_id"]
    assert "`columns: {email_consent: accepts_marketing}`" in found["email_consent"]
    assert "`columns: {signup_at: created_at}`" in found["signup_at"]
    # a B2B shop's CRM names its customer the account; a log with a user id too is per person
    project.write_events(good_events(2).rename(columns={"customer_id": "Account ID"}))
    found = {p.column: p.fix for p in run(project).problems if p.source == "events"}
    assert "`columns: {customer_id: Account ID}`" in found["customer_id"], found
    project.write_events(good_events(2).rename(columns={"customer_id": "account_id"}).assign(user_id="u1"))
    found = {p.column: p.fix for p in run(project).problems if p.source == "events"}
    assert "`columns: {customer_id: user_id}`" in found["customer_id"], found


def test_proposals_that_would_read_the_wrong_column_are_not_made(project):
    """A reviewer's real exports: the order value with its currency in parentheses is the amount;
    two columns that both hold 'amount' (discount_amount, tax_amount) give no proposal rather than
    the first; lifetime_points is no ts; GA4's event_date is no event_id; Braze's external_user_id
    is the customer (its user_id is Braze's own id); Klaviyo's SUBSCRIBED is consent."""
    df = good_events(3)
    report = run_with(project, df.rename(columns={"amount": "Order Value (EUR)"}))
    assert "`columns: {amount: Order Value (EUR)}`" in only(report, "look_alike_column").fix
    report = run_with(project, df.drop(columns=["amount"]).assign(discount_amount=0.0, tax_amount=1.0))
    assert not [p for p in report.problems if p.check == "look_alike_column"], report.problems
    p = only(run_with(project, df.rename(columns={"ts": "when"}).assign(lifetime_points=3)), "missing_column")
    assert "lifetime_points" not in p.fix and "your_column" in p.fix
    report = run_with(project, df.drop(columns=["event_id"]).assign(event_date="2026-01-01"))
    assert not [p for p in report.problems if p.check == "look_alike_column"], report.problems
    braze = df.rename(columns={"customer_id": "external_user_id"}).assign(user_id="braze-internal")
    assert "`columns: {customer_id: external_user_id}`" in only(run_with(project, braze), "missing_column").fix
    pd.DataFrame({"customer_id": ["c0", "c1", "c2"], "email_consent": ["SUBSCRIBED", "NEVER_SUBSCRIBED", "unsubscribed"],
                  "consent_updated_at": "2025-06-01"}).to_csv(project.data / "customers.csv", index=False)
    project.write_events(df)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "csv", "path": "data/customers.csv"})
    report = run(project)
    assert report.ok and not [p for p in report.problems if p.source == "customers"], report.problems


def test_unknown_event_names_come_with_the_roles_their_words_suggest(project):
    """Event names as Segment and Klaviyo write them: the fix proposes the roles.yaml line of each
    role it can guess, with the names the role already maps (so the line replaces the old one),
    and names the events it cannot guess; the no-purchase warning names the likely order event."""
    df = good_events(2)
    names = {"signed_up": "Signed Up", "email_sent": "Received Email", "order_completed": "Placed Order"}
    df["event_type"] = df["event_type"].map(names)
    df = pd.concat([df, df.assign(event_type="Link Clicked", event_id=df["event_id"] + "x")], ignore_index=True)
    report = run_with(project, df)
    p = only(report, "unknown_event_type")
    assert "`purchase: [order_completed, Placed Order]`" in p.fix
    assert "`email_send: [email_sent, Received Email]`" in p.fix and "`signup: [signed_up, Signed Up]`" in p.fix
    assert "no guess for 'Link Clicked'" in p.fix
    assert "Link Clicked" not in p.fix.split("no guess")[0]
    p = only(report, "no_purchases")
    assert "('Placed Order' looks like one)" in p.fix
    # pasted, the lines make the log pass but for the name nothing guessed
    lines = [part for part in only(report, "unknown_event_type").fix.split("`")[1::2] if ": [" in part]
    assert len(lines) == 3
    roles = yaml.safe_load((project.root / "configs" / "roles.yaml").read_text())
    for line in lines:
        roles["event_roles"].update(yaml.safe_load(line))
    roles["ignore"] = ["Link Clicked"]
    (project.root / "configs" / "roles.yaml").write_text(yaml.safe_dump(roles))
    report = run(project)
    assert report.ok and report.problems == [], report.problems


def test_mistyped_column(project):
    df = good_events()
    df["ts"] = 1.7e9  # epoch seconds as float: ambiguous, refused
    p = only(run_with(project, df), "mistyped")
    assert p.column == "ts" and "type DOUBLE" in p.message and "expected timestamps" in p.message


def run_with(project, df, name="events.parquet", **spec):
    project.write_events(df, name, **spec)
    return run(project)


def test_null_and_empty_ids(project):
    df = good_events().astype({"customer_id": "object"})
    df.loc[0, "customer_id"] = None
    df.loc[4, "customer_id"] = "   "
    p = only(run_with(project, df), "null_id")
    assert p.count == 2
    assert p.examples[0].endswith("at row 1") and "at row 5" in p.examples[1]


def test_anonymous_rows_are_an_error_or_left_out_when_the_catalog_says_so(project):
    """A Segment or RudderStack tracks table holds anonymous visits (no user_id). By default an
    error, whose fix names the setting; with `null_ids: drop` a warning that counts them, and the
    canonical log a run reads leaves them out. Only for events: a profile without its id is no
    row to drop in silence."""
    from features.load import build_canonical
    from pipeline.config import ConfigError

    df = good_events(3).astype({"customer_id": "object"})
    df.loc[[1, 4], "customer_id"] = [None, "  "]
    p = only(run_with(project, df), "null_id")
    assert p.severity == "error" and "`null_ids: drop` under sources.events" in p.fix
    report = run_with(project, df, null_ids="drop")
    p = only(report, "null_id")
    assert report.ok and p.severity == "warning" and p.count == 2 and "left out of every run" in p.message
    con = connect()
    cfg = load_config(project.root)
    report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, AS_OF)
    build_canonical(con, report, cfg.role_of)
    kept = con.sql("SELECT event_id FROM events ORDER BY event_id").df()["event_id"].tolist()
    assert kept == sorted(set(df["event_id"]) - {df.loc[1, "event_id"], df.loc[4, "event_id"]})
    # the rows left out do not count for where the log starts and ends (freshness reads its end):
    # a review's anonymous visits after the last identified event hid a feed that had stopped
    late = pd.concat([df, df.iloc[[1]].assign(event_id="anon", ts=pd.Timestamp("2026-06-01")),
                      df.iloc[[1]].assign(event_id="anon0", ts=pd.Timestamp("2025-06-01"))], ignore_index=True)
    report = run_with(project, late, null_ids="drop")
    assert report.time_range(load_config(project.root).role_of) == (df.ts.min(), df.ts.max()), report.event_types
    # nor do they raise problems of their own: a skewed clock, an unreadable time, a name with no role
    odd = pd.concat([df.astype({"ts": object}), df.iloc[[1]].assign(event_id="a1", ts="2027-01-05 10:00:00"),
                     df.iloc[[1]].assign(event_id="a2", ts="soon"),
                     df.iloc[[1]].assign(event_id="a3", event_type="Page Viewed")], ignore_index=True)
    odd["ts"] = odd["ts"].astype(str)
    report = run_with(project, odd, "events.csv", null_ids="drop")
    assert report.ok and [p.check for p in report.problems] == ["null_id"], report.problems
    assert only(report, "null_id").count == 5 and "Page Viewed" not in report.event_types
    # with `future_events: drop` too, an anonymous row after now counts as anonymous, once: it was
    # counted by neither warning, each leaving out the other's rows
    ahead = odd.copy()
    ahead.loc[len(ahead)] = ["f1", "c0", "email_sent", "2027-01-05 10:00:00", None]  # after now, with an id
    report = run_with(project, ahead, "events.csv", null_ids="drop", future_events="drop")
    assert report.ok and (only(report, "null_id").count, only(report, "future_ts").count) == (5, 1), report.problems
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/events.parquet", "null_ids": "drop"})
    with pytest.raises(ConfigError, match="`null_ids: drop` is for the events source only"):
        load_config(project.root)


def test_unparseable_timestamps_in_csv(project):
    df = good_events().astype({"ts": "object"})
    df.loc[3, "ts"] = "yesterday"
    df.loc[5, "ts"] = "31/02/2026"
    p = only(run_with(project, df, "events.csv"), "unparseable")
    assert p.column == "ts" and p.count == 2
    assert "'yesterday' at row 4" in p.examples[0]
    assert "ISO-8601" in p.fix



@pytest.mark.parametrize("values, bad, said", [
    # DuckDB reads BST as Bangladesh (+06, not British summer time), IST as India and CST with
    # summer time: an abbreviation is ambiguous, so it is refused with what to write instead. An
    # offset, a zone name, Z, UTC and GMT are exact.
    (["2026-01-01T10:00:00 BST", "2026-01-01T10:00:00 cst", "2026-01-02T09:00:00IST",
      "2026-01-01T10:00:00+01:00", "2026-01-01T10:00:00 Europe/London", "2026-01-01T10:00:00Z",
      "2026-01-01T10:00:00 UTC", "2026-01-01 10:00:00 GMT", "2026-01-05"], 3,
     "zone abbreviation (BST, CST, IST) is ambiguous: write the offset (+01:00) or a zone name after a space "
     "(2026-11-27 08:15:00 Europe/London; not in brackets)"),
    # DuckDB reads +99:99 as 99 hours and 99 minutes: the event moved four days, in silence
    (["2026-01-01T10:00:00+99:99", "2026-01-01T10:00:00+25:00", "2026-01-01 10:00+02:60",
      "2026-01-01T10:00:00+14:00", "2026-01-01T10:00:00-12:00", "2026-01-01T10:00:00.5+0530",
      "2026-01-01T10:00+02", "2026-01-01T10:00:00Z", "2026-01-05"], 3, "an offset lies between -12:00 and +14:00"),
    # a one-digit hour, an offset with seconds, beyond +14:00 or -12:00 by minutes or hours
    (["2026-01-01 8:15+25:00", "2026-01-01T08:15:00+25:00:00", "2026-01-01T08:15+14:59",
      "2026-01-01T08:15-13:00", "2026-01-01T08:15+14:00", "2026-01-01T08:15-12:00",
      "2026-01-01T08:15:00.25+05:45", "2026-01-01T08:15-03:30", "2026-01-01T08:15:00Z"], 4,
     "an offset lies between -12:00 and +14:00"),
], ids=["abbreviation", "offset", "offset-forms"])
def test_a_text_timestamp_whose_zone_cannot_be_trusted_is_refused(project, values, bad, said):
    """The first ``bad`` values are refused, with the fix; the others are read."""
    df = good_events().astype({"ts": "object"})
    df["ts"] = values
    p = only(run_with(project, df, "events.csv"), "unparseable")
    assert p.column == "ts" and p.count == bad and p.examples[0] == f"'{values[0]}' at row 1", p.examples
    assert said in p.fix
    report = run_with(project, df.iloc[bad:], "events.csv")
    assert report.ok, report.problems


def test_text_timestamps_and_numbers_in_the_sources_own_form(project):
    """`timestamp_format` and `decimal` in the catalog read a warehouse's export as it is written
    (28/11/2026 14:03, 1.234,56); before, every row was unparseable and the only way out was to
    export again. A value in none of the forms does not convert: no ISO fallback, no 95.48 as 9548."""
    from pipeline.config import ConfigError

    df = good_events()
    text = df.assign(ts=df["ts"].dt.strftime("%d/%m/%Y %H:%M"), amount=df["amount"].map(
        lambda a: None if pd.isna(a) else f"{a * 100:,.2f}".replace(",", " ").replace(".", ",").replace(" ", ".")))
    text.loc[0, "ts"] = "01/01/2026"  # a bare date: the second form
    report = run_with(project, text, "events.csv", timestamp_format=["%d/%m/%Y %H:%M", "%d/%m/%Y"], decimal=",")
    assert report.ok, report.problems
    got = connect_and_read(project, report)
    expected = df.assign(amount=df["amount"] * 100)
    expected.loc[0, "ts"] = pd.Timestamp("2026-01-01")
    pd.testing.assert_series_equal(got["ts"], expected["ts"].astype("datetime64[us]"), check_names=False)
    np.testing.assert_allclose(got["amount"].astype(float), expected["amount"].astype(float))
    assert "4.000,00" in set(text["amount"])  # thousands grouped
    bad = text.copy()
    bad.loc[1, "ts"], bad.loc[2, "amount"] = "2026-01-02T09:00:00", "40.5"
    report = run_with(project, bad, "events.csv", timestamp_format="%d/%m/%Y %H:%M", decimal=",")
    ts, amount = (p for p in report.problems if p.check == "unparseable")
    assert ts.count == 2 and "expected timestamps in the form '%d/%m/%Y %H:%M' (timestamp_format of sources.events" in ts.fix
    # the ISO row's own form is named (it said "e.g. ['%d/%m/%Y %H:%M', '%Y-%m-%d %H:%M:%S']" whatever it was)
    assert "add '%Y-%m-%dT%H:%M:%S' (the form of '2026-01-02T09:00:00') to the list" in ts.fix, ts.fix
    shopify = bad.copy()
    shopify.loc[1, "ts"] = "2026-01-02 09:00:00 +0100"
    ts = next(p for p in run_with(project, shopify, "events.csv", timestamp_format="%d/%m/%Y %H:%M",
                                  decimal=",").problems if p.check == "unparseable" and p.column == "ts")
    assert "add '%Y-%m-%d %H:%M:%S %z' (the form of '2026-01-02 09:00:00 +0100') to the list" in ts.fix, ts.fix
    assert amount.count == 1 and "'40.5'" in amount.examples[0] and "decimal of sources.events" in amount.fix
    assert "currency sign" not in amount.fix
    # a currency beside the number: said (the advice was the decimal mark alone, which read none)
    for money in ("85,21 €", "€25,12", "12,00 EUR"):
        bad.loc[2, "amount"] = money
        report = run_with(project, bad, "events.csv", timestamp_format="%d/%m/%Y %H:%M", decimal=",")
        amount = only(report, "unparseable") if len(report.problems) == 1 else \
            next(p for p in report.problems if p.column == "amount")
        assert "these hold a currency sign or code beside the number: write the number alone" in amount.fix, money
    for form, said in (("%Y-%Q", "is not a strptime form DuckDB reads"), ("dd/mm/yyyy", "has no strptime code")):
        project.catalog(events={"format": "csv", "path": "data/events.csv", "timestamp_format": form})
        with pytest.raises(ConfigError, match=said):
            load_config(project.root)


def test_numbers_since_1970_in_the_unit_the_catalog_names(project):
    """GA4's BigQuery export writes event_timestamp as integer microseconds: refused as a number
    (with the setting that reads it named), read exactly with `timestamp_format: epoch_us`, from a
    number column or a CSV's text; seconds may have a fraction; a value that lands outside
    1900-3000 in the unit (the wrong unit) is unparseable, not an event in the year 58000."""
    from pipeline.config import ConfigError

    df = good_events()
    df.loc[4, "ts"] = pd.Timestamp("2026-01-02 09:00:00.123456")
    us = (df["ts"].astype("datetime64[us]").astype("int64")).rename("event_timestamp")
    ga4 = df.drop(columns=["ts"]).assign(event_timestamp=us)
    p = only(run_with(project, ga4, columns={"ts": "event_timestamp"}), "mistyped")
    assert "column 'ts' (the file's column 'event_timestamp') has type BIGINT" in p.message
    assert "convert 'event_timestamp' to timestamp" in p.fix and "`timestamp_format: epoch_s`" in p.fix
    for name in ("events.parquet", "events.csv"):
        report = run_with(project, ga4, name, columns={"ts": "event_timestamp"}, timestamp_format="epoch_us")
        assert report.ok and report.problems == [], (name, report.problems)
        got = connect_and_read(project, report)
        pd.testing.assert_series_equal(got["ts"], df["ts"].astype("datetime64[us]"), check_names=False)
    seconds = df.drop(columns=["ts"]).assign(ts=us / 1e6)  # a double with the fraction
    report = run_with(project, seconds, timestamp_format="epoch_s")
    assert report.ok, report.problems
    got = connect_and_read(project, report)
    assert (got["ts"] - df["ts"].astype("datetime64[us]")).abs().max() <= pd.Timedelta(microseconds=1)
    p = only(run_with(project, ga4, columns={"ts": "event_timestamp"}, timestamp_format="epoch_ms"), "unparseable")
    assert p.count == len(df) and "milliseconds since 1970-01-01 UTC" in p.fix and "another unit" in p.fix
    project.catalog(events={"format": "parquet", "path": "data/events.parquet", "timestamp_format": ["epoch_s", "%Y"]})
    with pytest.raises(ConfigError, match="an epoch unit .* stands alone"):
        load_config(project.root)


def test_whole_number_dates_read_with_their_form(project):
    """GA4's event_date 20260108, typed as an integer by pandas (read_csv) or a BigQuery export, was
    refused as mistyped even with `timestamp_format: '%Y%m%d'` (only text was read by a form); the
    refusal without the form now names it."""
    df = good_events()
    df["ts"] = df["ts"].dt.normalize()
    compact = df.drop(columns=["ts"]).assign(event_date=df["ts"].dt.strftime("%Y%m%d").astype("int64"))
    p = only(run_with(project, compact, columns={"ts": "event_date"}), "mistyped")
    assert "has type BIGINT" in p.message and "`timestamp_format: '%Y%m%d'`" in p.fix, p.fix
    for name in ("events.parquet", "events.csv"):  # a CSV column is text: read by the form as before
        report = run_with(project, compact, name, columns={"ts": "event_date"}, timestamp_format="%Y%m%d")
        assert report.ok and report.problems == [], (name, report.problems)
        got = connect_and_read(project, report)
        pd.testing.assert_series_equal(got["ts"], df["ts"].astype("datetime64[us]"), check_names=False)
    bad = compact.assign(event_date=compact["event_date"].where(compact.index != 3, 20261340))  # month 13
    p = only(run_with(project, bad, columns={"ts": "event_date"}, timestamp_format="%Y%m%d"), "unparseable")
    assert p.count == 1 and "20261340" in " ".join(p.examples), p.examples


def test_a_list_of_forms_with_and_without_an_offset_reads_each_row_by_its_own(project):
    """A review found DuckDB's try_strptime, given a list, carrying the offset of a row read by a
    `%z` form over to the next rows read by forms without one: a 23:00 UTC purchase after a -05:00
    row came out at 04:00 the next day (past a cutoff), and which rows moved followed the file's
    order. Epoch seconds written as text are read exactly: 0.4 us before a cutoff is not at it."""
    df = good_events().iloc[:4].copy()
    df["ts"] = ["01/03/2026 18:30 -0500", "01/03/2026 23:00", "15/02/2026", "01/03/2026 18:30 +0000"]
    expected = [pd.Timestamp(t) for t in ("2026-03-01 23:30", "2026-03-01 23:00", "2026-02-15", "2026-03-01 18:30")]
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):
        report = run_with(project, df.iloc[order], "events.csv",
                          timestamp_format=["%d/%m/%Y %H:%M %z", "%d/%m/%Y %H:%M", "%d/%m/%Y"])
        assert report.ok, report.problems
        assert list(connect_and_read(project, report)["ts"]) == [expected[i] for i in order], order
    epoch = good_events().iloc[:2].copy()
    epoch["ts"] = ["1772409599.9999996", "1772409599.999999"]
    report = run_with(project, epoch, "events.csv", timestamp_format="epoch_s")
    assert report.ok, report.problems
    assert list(connect_and_read(project, report)["ts"]) == [pd.Timestamp("2026-03-01 23:59:59.999999")] * 2


def test_own_forms_are_held_to_what_iso_text_is_held_to(project):
    """With `%z` an impossible offset, with `%Z` a zone abbreviation, was read as written (an event
    moved days, BST as Bangladesh); under `decimal: ","` 0.500 read as 500 and NaN was an error;
    forms of opposite day/month order read 05/11 either way."""
    from pipeline.config import ConfigError

    df = good_events()
    zoned = df.assign(ts=df["ts"].dt.strftime("%d/%m/%Y %H:%M:%S+01:00"))
    zoned.loc[1, "ts"], zoned.loc[2, "ts"] = "02/01/2026 09:00:00+25:00", "02/01/2026 09:00:00+14:30"
    p = only(run_with(project, zoned, "events.csv", timestamp_format="%d/%m/%Y %H:%M:%S%z"), "unparseable")
    assert p.count == 2 and "+25:00" in p.examples[0]
    named = df.assign(ts=df["ts"].dt.strftime("%d/%m/%Y %H:%M UTC"))
    named.loc[1, "ts"] = "02/01/2026 09:00 BST"
    p = only(run_with(project, named, "events.csv", timestamp_format="%d/%m/%Y %H:%M %Z"), "unparseable")
    assert p.count == 1 and "BST" in p.examples[0]
    utc = df.assign(ts=df["ts"].dt.strftime("%d/%m/%Y %H:%M:%SZ"))  # ISO's Z for UTC, which %z alone refuses
    assert run_with(project, utc, "events.csv", timestamp_format="%d/%m/%Y %H:%M:%S%z").ok
    clock = df.assign(ts=df["ts"].dt.strftime("%d/%m/%Y %I:%M %p"))  # AM and PM are no zone
    assert run_with(project, clock, "events.csv", timestamp_format="%d/%m/%Y %I:%M %p").ok
    money = df.astype({"amount": "object"})
    money.loc[2, "amount"], money.loc[5, "amount"], money.loc[8, "amount"] = "0.500", "NaN", "1.234,5"
    report = run_with(project, money, "events.csv", decimal=",")
    p = only(report, "unparseable")
    assert p.count == 1 and "'0.500'" in p.examples[0]  # NaN is missing, as with '.'
    # a missing amount written as a word is missing too, with either decimal mark (it was an error)
    for decimal in (",", "."):
        words = money.assign(amount=money.amount.where(money.amount != "0.500", "1"))
        words.loc[[1, 2], "amount"] = ["N/A", " NULL "]  # a send's, and c0's purchase's (c1's is NaN)
        report = run_with(project, words, "events.csv", decimal=decimal)
        bad = [p for p in report.problems if p.check == "unparseable"]
        assert not bad or (decimal == "." and bad[0].examples == ("'1.234,5' at row 9",)), (decimal, bad)
        assert only(report, "purchase_without_amount").examples == ("'c0-3' at row 3", "'c1-3' at row 6")
    # with a decimal point a ',' groups thousands, as a '.' does with a decimal comma (1,234.50 did
    # not convert, and the hint to set `decimal: ','` left every other amount unread)
    grouped = df.astype({"amount": "object"})
    grouped.loc[[2, 5, 8], "amount"] = ["1,234.50", "12,000", "1,000,000.25"]
    report = run_with(project, grouped, "events.csv")
    assert report.ok, report.problems
    got = connect_and_read(project, report)["amount"]
    assert got.iloc[[2, 5, 8]].tolist() == [1234.5, 12000.0, 1000000.25]
    grouped.loc[2, "amount"], grouped.loc[5, "amount"] = "12,50", "1,23.4"  # no group of three: does not convert
    p = only(run_with(project, grouped, "events.csv"), "unparseable")
    assert p.count == 2 and "'12,50'" in p.examples[0] and "(',' only between groups of three digits: 1,234.50)" in p.fix
    project.catalog(events={"format": "csv", "path": "data/events.csv",
                            "timestamp_format": ["%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M"]})
    with pytest.raises(ConfigError, match="put day and month in opposite orders"):
        load_config(project.root)
    # ISO beside day-first text: no text reads both ways (it was refused, and such a log unreadable)
    mixed = df.assign(ts=df["ts"].dt.strftime("%Y-%m-%d %H:%M:%S+00:00"))
    mixed.loc[:4, "ts"] = df["ts"][:5].dt.strftime("%d/%m/%Y %H:%M")
    report = run_with(project, mixed, "events.csv", timestamp_format=["%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M:%S%z"])
    assert report.ok, report.problems
    project.catalog(events={"format": "csv", "path": "data/events.csv",
                            "timestamp_format": ["%d/%m/%Y", "%m/%d/%Y %H:%M"]})  # no text reads both: allowed
    load_config(project.root)
    project.catalog(events={"format": "csv", "path": "data/events.csv",  # 05/11/26 read as 0026 by the first
                            "timestamp_format": ["%m/%d/%Y", "%d/%m/%y"]})
    with pytest.raises(ConfigError, match="put day and month in opposite orders"):
        load_config(project.root)
    project.catalog(events={"format": "csv", "path": "data/events.csv",
                            "timestamp_format": ["%d.%m.%Y %H:%M", "%m.%d.%Y %H:%M"]})
    with pytest.raises(ConfigError, match="'%d.%m.%Y %H:%M' and '%m.%d.%Y %H:%M' put day and month in opposite"):
        load_config(project.root)


def test_text_profile_times_after_now_are_found_whatever_their_offsets(project):
    """Footer statistics of text hold the largest text, not the latest instant: 11:00-12:00 (23:00
    UTC) sorts before 12:00+00:00; the warning was skipped."""
    from datetime import datetime, timedelta, timezone

    project.write_events(good_events())
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    late = (now + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%S")
    pd.DataFrame({"customer_id": ["c0", "c1"],
                  "signup_at": [f"{now:%Y-%m-%d}T00:00:00+00:00", f"{late}-00:00"[:-6] + "-12:00"]}).to_parquet(
        project.data / "customers.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    assert only(run(project), "future_signup_at").count == 1


def test_a_big_endian_utf16_csv_says_to_convert_it(project):
    """DuckDB reads UTF-16 little-endian only: a big-endian file with `encoding: utf-16` read as a
    file without rows, and without it the hint said to set that encoding."""
    path = project.data / "events.csv"
    path.write_bytes(good_events().to_csv(index=False).encode("utf-16-be"))
    for spec in ({}, {"encoding": "utf-16"}):
        project.catalog(events={"format": "csv", "path": "data/events.csv", **spec})
        p = only(run(project), "unreadable")
        assert "UTF-16 big-endian" in p.message and "iconv -f UTF-16BE -t UTF-8" in p.message, p.message


def connect_and_read(project, report):
    """The typed events of a validated project, as a run reads them."""
    con = connect()
    cfg = load_config(project.root)
    again = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, AS_OF)
    t = again.typed["events"]
    return con.sql(f"SELECT {t['ts'].expr} AS ts, {t['amount'].expr} AS amount FROM {again.sources['events'].view}").df()


@pytest.mark.parametrize("file", ["events.csv", "events.parquet"])
def test_empty_or_blank_text_timestamps_are_missing_timestamps(project, file):
    df = good_events().astype({"ts": "object"})
    df["ts"] = df["ts"].astype(str)  # text timestamps, as from a CSV or a string Parquet column
    df.loc[2, "ts"] = "   "
    df.loc[6, "ts"] = ""
    p = only(run_with(project, df, file), "null_ts")
    assert p.column == "ts" and p.count == 2 and p.severity == "error", p
    assert "null, empty or blank" in p.message


def test_timestamps_after_as_of(project):
    df = good_events()
    df.loc[2, "ts"] = pd.Timestamp("2026-12-01")
    p = only(run_with(project, df), "future_ts")
    assert p.count == 1 and "2026-11-28 00:00:00 UTC" in p.message


@pytest.mark.parametrize("file", ["events.parquet", "events.csv"])
def test_placeholder_dates_are_a_warning_naming_the_count_and_rows(project, file):
    """1970-01-01 (epoch 0) and 1900-01-01 pass every type check; they are flagged, not refused.
    Parquet statistics bounding every ts after 1990 leave the check out (the good log above)."""
    df = good_events()
    df.loc[1, "ts"] = pd.Timestamp("1970-01-01")
    df.loc[7, "ts"] = pd.Timestamp("1900-01-01")
    df.loc[8, "ts"] = pd.Timestamp("1990-01-01")  # the first plausible instant: not flagged
    report = run_with(project, df, file)
    p = only(report, "placeholder_date")
    assert report.ok and p.severity == "warning" and p.column == "ts" and p.count == 2, p
    assert "before 1990-01-01" in p.message and "tenure" in p.message and "drop those rows" in p.fix
    assert [e.split(" at row ")[1] for e in p.examples] == ["2", "8"]
    # nor does the history start at them: the log's start is its first instant from 1990 on (a
    # placeholder made the history decades long, and min_history's refusal read one the log lacks)
    assert report.time_range(load_config(project.root).role_of)[0] == pd.Timestamp("1990-01-01")
    customers = pd.DataFrame({"customer_id": ["c0", "c1", "c2"],
                              "signup_at": pd.to_datetime(["1900-01-01", "2025-06-01", None])})
    customers.to_parquet(project.data / "customers.parquet")
    cat = yaml.safe_load((project.root / "configs" / "catalog.yaml").read_text())
    cat["sources"]["customers"] = {"format": "parquet", "path": "data/customers.parquet"}
    (project.root / "configs" / "catalog.yaml").write_text(yaml.safe_dump(cat))
    signups = [q for q in run(project).problems if q.check == "placeholder_date" and q.source == "customers"]
    assert len(signups) == 1 and signups[0].column == "signup_at" and signups[0].count == 1
    assert "set them to null" in signups[0].fix


def test_exact_duplicate_event_ids_warn_conflicting_ones_fail(project):
    df = good_events()
    df = pd.concat([df, df.assign(event_id=df.event_id + "-b", ts=df.ts + pd.Timedelta(hours=1))], ignore_index=True)
    exact = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    report = run_with(project, exact)
    assert report.ok and only(report, "duplicate_event_id").count == 1
    assert only(report, "duplicate_event_id").examples == ("'c0-1' at rows 1, 19",)  # it had no example
    purchase = df.index[(df.event_type == "order_completed")][0]
    no_amount = df.assign(amount=df.amount.where(df.index != purchase))
    no_amount = pd.concat([no_amount, no_amount.iloc[[purchase]]], ignore_index=True)
    p = only(run_with(project, no_amount), "purchase_without_amount")  # one purchase, delivered twice
    assert p.count == 2 and p.message.endswith("have no amount, counting the repeated rows"), p.message
    conflict = exact.copy()
    conflict.loc[len(conflict) - 1, "ts"] = pd.Timestamp("2026-02-02")
    p = only(run_with(project, conflict), "conflicting_event_id")
    assert p.severity == "error" and p.examples == ("'c0-1' at rows 1, 19",), p.examples
    # a repeat told apart only by its category (or channel, or campaign) is another event, not a repeat
    for col in ("category", "channel", "campaign_id"):
        differs = pd.concat([df.assign(**{col: "a"}), df.iloc[[2]].assign(**{col: "b"})], ignore_index=True)
        p = only(run_with(project, differs), "conflicting_event_id")
        assert p.examples == ("'c0-3' at rows 3, 19",), (col, p.examples)


def test_rows_without_an_event_id_are_checked_for_repeats_and_a_blank_id_is_none(project, tmp_path):
    """An export whose orders alone have ids: its page views and sends, without, repeated by an
    overlap, were counted twice in silence once event_id was mapped. And its blank ids, written
    to Parquet as '', were one id shared by every such row: an error no run got past."""
    df = good_events()
    for blank in ("", " "):  # blank, as a Parquet file from an export has it
        df.loc[df.event_type != "order_completed", "event_id"] = blank
        report = run_with(project, df)
        assert report.ok and not [p for p in report.problems if p.check in ("conflicting_event_id", "repeated_rows")]
    twice = pd.concat([df, df.iloc[[0, 1, 2]]], ignore_index=True)  # a signup, a send (no id) and an order (id)
    report = run_with(project, twice)
    assert report.ok
    assert only(report, "duplicate_event_id").count == 1  # the order: dropped
    p = only(report, "repeated_rows")  # the two without an id: counted, and said
    assert p.severity == "warning" and p.count == 2 and p.examples == ("rows 1 and 10",), p
    assert "2 rows without an event_id repeat another row in every column" in p.message, p.message
    assert "give those events an id" in p.fix and "map `event_id`" not in p.fix
    # the same as CSV (an empty field is no id there already): the same findings
    report = run_with(project, twice, "events.csv")
    assert only(report, "repeated_rows").count == 2 and only(report, "duplicate_event_id").count == 1


@pytest.mark.parametrize("sql, repeats", [
    ("SELECT hash(i) FROM range(300000) t(i)", False),  # many DuckDB vectors, all distinct
    ("SELECT hash(CASE WHEN i = 299999 THEN 0 ELSE i END) FROM range(300000) t(i)", True),  # first and last row
    ("SELECT hash(i // 2) FROM range(10) t(i)", True),
    ("SELECT hash(i) FROM range(1) t(i)", False),
    ("SELECT hash(i) FROM range(0) t(i)", False),
])
def test_repeated_hashes_are_found_wherever_they_are(sql, repeats):
    rel = connect().sql(sql)
    assert _any_repeats(rel.fetchnumpy()[rel.columns[0]]) is repeats


@pytest.mark.parametrize("rows, counted", [(2_500_000, 2_500_000), (2_500_000, 1000), (0, 0)])
def test_hashes_are_fetched_whole_and_the_session_left_as_it_was(rows, counted):
    # several Arrow batches; `counted` below the rows found: a source that grew after it was counted
    con = connect()
    sql = f"SELECT hash(i) AS h FROM range({rows}) t(i)"
    got = _fetch_hashes(con, sql, counted)
    assert got.dtype == np.uint64 and np.array_equal(np.sort(got), np.sort(con.sql(sql).fetchnumpy()["h"]))
    assert con.sql("SELECT current_setting('preserve_insertion_order')").fetchall() == [(True,)]


def _write_row_groups(project, df, name="events.parquet", rows_per_group=3):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), project.data / name, row_group_size=rows_per_group)


def test_checks_the_parquet_footer_rules_out_are_not_run(project):
    df = good_events()
    project.write_events(df)
    report = run(project)
    assert report.ok and report.problems == []
    cfg = load_config(project.root)
    raw = report.sources["events"]
    assert raw.stats["customer_id"].nulls == 0 and raw.stats["amount"].nulls == 6
    run_checks = {c.check for c in _checks("events", report.typed["events"], cfg.role_of, set(), AS_OF, raw)}
    assert not run_checks & {"null_id", "null_event_type", "negative_purchase", "placeholder_date"}
    project.write_events(df, "events.csv")  # no footer: every check runs
    report = run(project)
    assert report.ok and report.sources["events"].stats == {}
    run_checks = {c.check for c in _checks("events", report.typed["events"], cfg.role_of, set(), AS_OF, report.sources["events"])}
    assert {"null_id", "null_event_type", "negative_purchase", "placeholder_date"} <= run_checks


@pytest.mark.parametrize("blank", ["", "   ", "\u3000", "\u00a0 "])
def test_a_blank_id_in_the_last_row_group_is_found_with_footer_statistics(project, blank):
    df = good_events(4)
    df.loc[len(df) - 1, "customer_id"] = blank
    _write_row_groups(project, df)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"})
    p = only(run(project), "null_id")
    assert p.count == 1 and f"at row {len(df)}" in p.examples[0]


def test_a_file_without_the_column_is_not_covered_by_the_others_statistics(project):
    df = good_events()
    df.to_parquet(project.data / "events_1.parquet", index=False)
    df.assign(event_id=df.event_id + "-b").drop(columns="customer_id").to_parquet(project.data / "events_2.parquet", index=False)
    project.catalog(events={"format": "parquet", "path": "data/events_*.parquet"})
    report = run(project)
    assert "customer_id" not in report.sources["events"].stats
    p = only(report, "missing_column")  # named as the file that lacks the column, not as null ids
    assert p.severity == "error" and p.column == "customer_id" and p.examples == ("events_2.parquet",)


def test_a_negative_amount_in_a_later_row_group_is_found_with_footer_statistics(project):
    df = good_events(4)
    df.loc[len(df) - 1, "amount"] = -5.0
    _write_row_groups(project, df)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"})
    assert only(run(project), "negative_purchase").count == 1


def test_a_purchase_without_an_amount_is_a_warning_that_says_how_it_counts(project):
    df = good_events(4)
    df.loc[[2, 8], "amount"] = None  # c0's and c2's purchases
    report = run_with(project, df)
    p = only(report, "purchase_without_amount")
    assert report.ok and p.severity == "warning" and p.column == "amount" and p.count == 2
    assert "2 purchases have no amount" in p.message and "as 0 in spend" in p.fix
    assert p.examples == ("'c0-3' at row 3", "'c2-3' at row 9")
    assert not [q for q in run_with(project, good_events(4)).problems if q.check == "purchase_without_amount"]
    # an amount that does not convert is reported as that, not again as a missing amount
    df = good_events(4).astype({"amount": "object"})
    df.loc[2, "amount"], df.loc[8, "amount"] = "12,50", None
    report = run_with(project, df, "events.csv")
    assert only(report, "unparseable").count == 1
    p = only(report, "purchase_without_amount")
    assert p.count == 1 and p.examples == ("'c2-3' at row 9",)
    # a refund without an amount, likewise: 0 in refund_amount, said so
    df = good_events(4)
    df.loc[len(df)] = ["r1", "c0", "order_refunded", pd.Timestamp("2026-01-06"), None]
    df.loc[len(df)] = ["r2", "c1", "order_refunded", pd.Timestamp("2026-01-06"), 5.0]
    report = run_with(project, df)
    p = only(report, "refund_without_amount")
    assert report.ok and p.count == 1 and p.examples == ("'r1' at row 13",)
    assert "1 refund has no amount" in p.message and "as 0 in refund_amount" in p.fix


@pytest.mark.parametrize("name", ["events.parquet", "events.csv"])
def test_a_nan_amount_is_a_missing_amount(project, name):
    """NaN (Arrow and Spark write it where pandas writes null; some exports write the text) reads
    as a missing amount: warned about, 0 in spend, not a NaN that spoils every sum it enters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = good_events(4)
    df["amount"] = df["amount"].astype(float)
    if name.endswith(".csv"):
        df.assign(amount=df.amount.astype(object).where(df.index != 2, "NaN")).to_csv(project.data / name, index=False)
    else:  # from_pandas=False keeps NaN a NaN (pandas' own writer would make it null)
        table = pa.Table.from_pandas(df.assign(amount=df.amount.where(df.index != 2, float("nan"))), preserve_index=False)
        table = table.set_column(table.schema.get_field_index("amount"), "amount",
                                 pa.array(df.amount.where(df.index != 2, float("nan")).to_numpy(), from_pandas=False))
        pq.write_table(table, project.data / name)
    project.catalog(events={"format": "parquet" if name.endswith(".parquet") else "csv", "path": f"data/{name}"})
    cfg = load_config(project.root)
    con = connect()
    report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, AS_OF)
    p = only(report, "purchase_without_amount")
    assert report.ok and p.count == 1 and p.examples == ("'c0-3' at row 3",)
    amount = report.typed["events"]["amount"].expr
    got = con.sql(f"SELECT count({amount}), sum({amount}) FROM {report.sources['events'].view}").fetchall()
    assert got == [(3, 41.0 + 42.0 + 43.0)]  # c0's 40.0 was the NaN


def test_negative_purchase_amount(project):
    df = good_events()
    df.loc[2, "amount"] = -10.0
    p = only(run_with(project, df), "negative_purchase")
    assert p.count == 1 and "-10.0" in p.examples[0] and "refund" in p.fix


@pytest.mark.parametrize("name", ["events.parquet", "events.csv"])
def test_infinite_amounts_are_refused(project, name):
    df = good_events()
    df["amount"] = df["amount"].astype(float)
    df.loc[2, "amount"] = float("inf")
    p = only(run_with(project, df, name), "infinite_amount")
    assert p.count == 1 and p.severity == "error" and p.column == "amount"
    assert run_with(project, good_events(), name).ok  # finite footer bounds: the check is not even scanned


def test_a_folder_as_source_path_is_refused(project):
    project.write_events(good_events())
    project.catalog(events={"format": "parquet", "path": "data"})
    report = run(project)
    assert not report.ok
    text = " ".join(p.message + " " + p.fix for p in report.problems)
    assert "is a folder" in text and "glob" in text and "data/**/*.parquet" in text, report.problems
    # a glob that also matches a folder reads the files it names, not the folder's contents
    (project.data / "old.parquet").mkdir()
    good_events().to_parquet(project.data / "old.parquet" / "part-0.parquet")
    project.catalog(events={"format": "parquet", "path": "data/*.parquet"})
    report = run(project)
    assert report.ok and report.sources["events"].rows == len(good_events()), report.problems


def test_amounts_in_several_currencies_or_another_one_are_warned_about_on_every_run(project):
    """init says once that the events hold several currencies; a nightly run met a second one in
    silence, and a shop whose amounts are in USD under `currency: EUR` explained them in euros."""
    from features.validation import check_currency

    df = good_events(4).assign(Currency="EUR")
    df.loc[df.index[-2:], "Currency"] = "usd "
    project.write_events(df)
    con = connect()
    cfg = load_config(project.root)
    report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, AS_OF)
    check_currency(con, report, "EUR")
    p = only(report, "several_currencies")
    assert "several currencies (column 'Currency': EUR (10), USD (2))" in p.message and p.count == 2, p.message
    project.write_events(df.assign(Currency="USD"))
    for said, warned in (("EUR", True), ("USD", False), ("€", False), ("", False)):
        report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, AS_OF)
        check_currency(con, report, said)
        other = [p for p in report.problems if p.check == "other_currency"]
        assert bool(other) == warned, (said, report.problems)
        if other:
            assert "amounts are in USD (column 'Currency'), but configs/project.yaml says currency: EUR" in other[0].message


def test_an_orders_line_items_are_said_to_be_lines(project):
    """A Shopify orders export has a row per line item, the order's total on its first line only:
    validation said "N purchases have no amount; fill the amount where it is known", which would
    count each line as an order with its share of the spend twice over."""
    df = good_events(3)
    order = df[df.event_type == "order_completed"]
    lines = order.assign(event_id=order.event_id + "-line2", amount=None)
    p = only(run_with(project, pd.concat([df, lines], ignore_index=True)), "purchase_without_amount")
    assert p.count == 3 and "3 of them share their customer and time with a purchase that has one" in p.message
    assert p.fix.startswith("sum each order's lines to one row first") and "fill the amount" not in p.fix, p.fix
    one = pd.concat([df.assign(amount=df.amount.where(df.customer_id != "c2")), lines.iloc[:1]], ignore_index=True)
    p = only(run_with(project, one), "purchase_without_amount")  # a line beside its order, one purchase without
    assert "; 1 of them shares its customer and time" in p.message, p.message
    assert p.fix.endswith("; the other 1 count as purchases (frequency, recency, rhythm) and as 0 in spend (monetary_total, "
                          "monetary_mean, spend_<w>d): fill the amount where it is known"), p.fix
    alone = df.assign(amount=df.amount.where(df.customer_id != "c0"))  # no line beside a total: just missing
    p = only(run_with(project, alone), "purchase_without_amount")
    assert "share their customer" not in p.message and p.fix.startswith("they count"), p


def test_an_event_type_column_of_order_states_is_said_to_be_one(project):
    """A review mapped event_type to Shopify's `Financial Status`: validation proposed
    `refund: [partially_refunded, refunded]`, which turns refunded orders into refunds and no
    purchases (the README's own warning), and once pasted the log passed without a word."""
    df = good_events(3)
    orders = df["event_type"] == "order_completed"
    df.loc[orders, "event_type"] = ["paid", "refunded", "partially_refunded"]
    p = only(run_with(project, df), "unknown_event_type")
    assert "refund" not in p.fix, p.fix  # no roles.yaml line proposed for a state
    w = only(run_with(project, df), "order_states")
    assert "holds orders' states ('paid', 'partially_refunded', 'refunded'), not what happened" in w.message
    assert "one row per order" in w.fix and w.severity == "warning"
    (project.root / "configs" / "roles.yaml").write_text(  # mapped by their words, as proposed before: still said
        "event_roles:\n  purchase: [paid, order_completed]\n  refund: [refunded, partially_refunded]\n"
        "  signup: [signed_up]\n  email_send: [email_sent]\n  email_open: [email_opened]\n")
    assert only(run_with(project, df), "order_states").count == orders.sum()


def test_unknown_event_types_are_listed_not_dropped(project):
    df = good_events()
    df.loc[1, "event_type"] = "push_sent"
    df.loc[4, "event_type"] = "push_sent"
    p = only(run_with(project, df), "unknown_event_type")
    assert p.count == 2 and p.examples == ("'push_sent' (2 events)",)
    assert "configs/roles.yaml" in p.fix


def test_ignored_event_types_pass(project):
    df = good_events()
    df.loc[1, "event_type"] = "push_sent"
    (project.root / "configs" / "roles.yaml").write_text(
        (project.root / "configs" / "roles.yaml").read_text().replace("ignore: []", "ignore: [push_sent]")
    )
    assert run_with(project, df).ok


def test_empty_files(project):
    project.write_events(good_events().iloc[:0])
    assert only(run(project), "empty").severity == "error"
    (project.data / "events.csv").write_text("")
    project.catalog(events={"format": "csv", "path": "data/events.csv"})
    p = only(run(project), "unreadable")
    assert "empty file (0 bytes)" in p.message


def test_csv_with_wrong_delimiter(project):
    path = project.data / "events.csv"
    good_events().to_csv(path, index=False, sep=";")
    project.catalog(events={"format": "csv", "path": "data/events.csv"})
    p = only(run(project), "unreadable")
    assert "looks ';'-delimited" in p.message and 'delimiter: ";"' in p.message


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le"])  # with a byte-order mark, and without
def test_a_utf16_csv_says_to_set_its_encoding(project, codec):
    """A UTF-16 file (Excel's "Unicode text") was "not a text file (it holds NUL bytes)"."""
    df = good_events()
    path = project.data / "events.csv"
    df.to_csv(path, index=False, encoding=codec)
    project.catalog(events={"format": "csv", "path": "data/events.csv"})
    p = only(run(project), "unreadable")
    assert "it is UTF-16 text, read as utf-8; set `encoding: utf-16` for 'events' in configs/catalog.yaml" in p.message
    if codec == "utf-16":
        project.catalog(events={"format": "csv", "path": "data/events.csv", "encoding": "utf-16"})
        assert run(project).ok


def test_csv_with_wrong_encoding_then_fixed_by_config(project):
    df = good_events()
    df["category"] = "café"
    path = project.data / "events.csv"
    df.to_csv(path, index=False, encoding="latin-1")
    project.catalog(events={"format": "csv", "path": "data/events.csv"})
    p = only(run(project), "unreadable")
    assert "not valid utf-8" in p.message and "encoding: latin-1" in p.message
    project.catalog(events={"format": "csv", "path": "data/events.csv", "encoding": "latin-1"})
    assert run(project).ok


def test_a_glob_of_utf8_and_latin1_files_is_told_to_take_one_encoding(project):
    """One encoding reads every file of a source. A glob of one Latin-1 export beside UTF-8 ones was
    told to set `encoding: latin-1`, which then read the UTF-8 file's Bücher as BÃ¼cher: a second
    category, in silence. The advice now names the UTF-8 files, and Latin-1 over UTF-8 text is refused."""
    df = good_events()
    df["category"] = "Bücher"
    df.iloc[:4].to_csv(project.data / "events-1.csv", index=False, encoding="utf-8")
    df.iloc[4:].to_csv(project.data / "events-2.csv", index=False, encoding="latin-1")
    project.catalog(events={"format": "csv", "path": "data/events-*.csv"})
    p = only(run(project), "unreadable")
    assert "events-2.csv: source 'events' is not valid utf-8" in p.message, p.message
    assert "but 1 other file of it (events-1.csv) is UTF-8 with letters beyond ASCII" in p.message
    assert p.message.endswith("Re-save this file as UTF-8") and "set `encoding: latin-1`" not in p.message
    project.catalog(events={"format": "csv", "path": "data/events-*.csv", "encoding": "latin-1"})
    p = only(run(project), "unreadable")
    assert "but 1 of its 2 files (events-1.csv) is UTF-8 text with letters beyond ASCII" in p.message, p.message
    assert "re-save the Latin-1 files as UTF-8 and remove `encoding: latin-1`" in p.message
    df.iloc[4:].to_csv(project.data / "events-2.csv", index=False, encoding="utf-8")  # re-saved: both UTF-8
    p = only(run(project), "unreadable")  # but still read as Latin-1
    assert "but its files are UTF-8 text" in p.message and p.message.endswith("Remove `encoding: latin-1`"), p.message
    project.catalog(events={"format": "csv", "path": "data/events-*.csv"})
    report = run(project)
    assert report.ok, report.problems
    con = connect()
    cfg = load_config(project.root)
    again = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, AS_OF)
    assert con.sql(f"SELECT DISTINCT category FROM {again.sources['events'].view}").fetchall() == [("Bücher",)]


def test_a_bad_byte_far_into_a_csv_is_found_by_validation(project):
    """Opening a CSV reads its first rows only, and DuckDB checks the bytes of the columns a query
    reads: a latin-1 byte in `category` past those rows is found by the validation scan (which
    reads every column), with its line, not in the middle of a later feature build."""
    df = pd.concat([good_events()] * 2500, ignore_index=True)
    df["event_id"] = [f"e{i}" for i in range(len(df))]
    df["category"] = "shoes"
    path = project.data / "events.csv"
    df.to_csv(path, index=False)
    with open(path, "ab") as f:
        f.write("late,c0,email_sent,2026-01-05 10:00:00,,caf\xe9\n".encode("latin-1"))
    project.catalog(events={"format": "csv", "path": "data/events.csv"})
    p = only(run(project), "unreadable")
    assert p.severity == "error" and "not valid utf-8" in p.message and "encoding: latin-1" in p.message, p.message
    assert f"line {len(df) + 2}" in p.message, p.message


@pytest.mark.parametrize("case", ["ragged early", "ragged past the first 64 KB", "ragged late", "ragged by two late",
                                  "ragged short late", "semicolons and decimal commas", "parquet called csv",
                                  "csv called parquet"])
def test_a_file_that_does_not_read_says_what_is_wrong_and_the_fix(project, case):
    """DuckDB's own words for these ("Error when sniffing file", "No magic bytes found") name no
    line and no fix; the message does."""
    header = "event_id,customer_id,event_type,ts,amount"
    # past the first 64 KB but among the rows DuckDB's sniffer reads: its error names no line
    n = {"ragged past the first 64 KB": 3_000}.get(case, 30_000 if case.endswith("late") else 5)
    good = [f"e{i},c1,email_sent,2026-01-01 10:00:00," for i in range(n)]
    path, fmt = project.data / "events.csv", "csv"
    if case == "ragged by two late":  # DuckDB counts up to one more than the header: the row's own count is said
        path.write_text("\n".join([header, *good, "ex,c1,email_sent,2026-01-01 10:00:00,,extra,more", *good[:3]]) + "\n")
        expected = [f"line {len(good) + 2} has 7 fields where the header has 5", "must be quoted"]
    elif case == "ragged short late":  # a row cut short: no quoting would fix it
        path.write_text("\n".join([header, *good, "ex,c1,email_sent", *good[:3]]) + "\n")
        expected = [f"line {len(good) + 2} has 3 fields where the header has 5", "The row is cut short"]
    elif case.startswith("ragged"):
        path.write_text("\n".join([header, *good, "ex,c1,email_sent,2026-01-01 10:00:00,,extra", *good[:3]]) + "\n")
        expected = [f"line {len(good) + 2} has 6 fields where the header has 5", "'ex,c1,email_sent", "must be quoted"]
    elif case == "semicolons and decimal commas":
        path.write_text(header.replace(",", ";") + "\ne1;c1;order_completed;2026-01-01 10:00:00;27,58\n"
                        "e2;c2;order_completed;2026-01-01 10:00:00;3,50\ne3;c2;email_sent;2026-01-02 10:00:00;\n")
        expected = ["its lines split alike on ';', not on ','", 'Set `delimiter: ";"`']
    elif case == "parquet called csv":
        good_events().to_parquet(path)
        expected = ["is a Parquet file, not CSV", "Set `format: parquet`"]
    else:
        path = project.data / "events.parquet"
        path.write_text("\n".join([header, *good]) + "\n")
        fmt, expected = "parquet", ["is not a Parquet file; it looks like text (CSV?)", "Set `format: csv`"]
    project.catalog(events={"format": fmt, "path": f"data/{path.name}"})
    p = only(run(project), "unreadable")
    for text in expected:
        assert text in p.message, p.message
    assert str(path) in p.message


def test_a_csv_header_naming_a_column_twice_is_refused(project):
    (project.data / "events.csv").write_text("event_id,customer_id,event_type,ts,amount,amount\n"
                                             "e1,c1,order_completed,2026-01-01 10:00:00,10,shoes\n")
    project.catalog(events={"format": "csv", "path": "data/events.csv"})
    p = only(run(project), "unreadable")
    assert "names column 'amount' twice in its header (columns 5 and 6)" in p.message, p.message


@pytest.mark.parametrize("file", ["customers.csv", "customers.parquet"])
def test_profile_times_after_now_are_warned_about(project, file):
    """A signup_at in 2027 passed without a word (an event's time after now is an error)."""
    project.write_events(good_events())
    cu = pd.DataFrame({"customer_id": ["c0", "c1", "c2"], "email_consent": [True, False, True],
                       "signup_at": pd.to_datetime(["2025-01-01", "2099-05-22", "2025-03-01"]),
                       "consent_updated_at": pd.to_datetime(["2026-01-01", "2026-01-01", "2099-01-01"])})
    path = project.data / file
    cu.to_csv(path, index=False) if file.endswith(".csv") else cu.to_parquet(path)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": file.split(".")[1], "path": f"data/{file}"})
    report = run(project)
    for col in ("signup_at", "consent_updated_at"):
        p = only(report, f"future_{col}")
        assert p.severity == "warning" and p.count == 1 and f"1 row has a {col} after now" in p.message
        assert "2099" in p.examples[0]
    cu.loc[1, "signup_at"] = cu.loc[2, "consent_updated_at"] = pd.Timestamp("2026-02-01")
    cu.to_csv(path, index=False) if file.endswith(".csv") else cu.to_parquet(path)
    assert not [q for q in run(project).problems if q.check.startswith("future_")]


def test_a_log_without_purchases_is_warned_about(project):
    """A roles.yaml that maps no event of the log to purchase (the order event misspelled, or
    listed under ignore:) left every label without buyers, and validation said nothing."""
    df = good_events()
    purchases = df.event_type.map(load_config(project.root).role_of) == "purchase"
    assert purchases.any()
    project.write_events(df[~purchases])
    p = only(run(project), "no_purchases")
    assert p.severity == "warning" and p.count == int((~purchases).sum())
    assert f"none of the {p.count:,} events is a purchase (configs/roles.yaml maps " in p.message
    assert "map your order event to purchase" in p.fix
    project.write_events(df)
    assert not [q for q in run(project).problems if q.check == "no_purchases"]


def test_missing_file_and_glob(project):
    project.catalog(events={"format": "parquet", "path": "data/nope.parquet"})
    message = only(run(project), "unreadable").message
    assert "does not exist" in message and "optional" not in message and "dynseg data generate" not in message
    # an optional source says so (a new project copied from the demo's configs keeps its identities)
    project.write_events(good_events())
    cat = {"events": {"format": "parquet", "path": "data/events.parquet"},
           "identities": {"format": "parquet", "path": "{workspace}/data/identities.parquet"}}
    project.catalog(**cat)
    message = only(run(project), "unreadable").message
    assert "'identities' is optional: without such a file, remove its entry from configs/catalog.yaml" in message
    assert "(for the demo data run `dynseg data generate` first)" in message
    project.catalog(events={"format": "parquet", "path": "data/part-*.parquet"})
    assert "matches no file" in only(run(project), "unreadable").message


def test_glob_of_parquet_parts_and_column_mapping(project):
    df = good_events().rename(columns={"customer_id": "user_id", "ts": "timestamp"})
    df.iloc[:4].to_parquet(project.data / "part-1.parquet")
    df.iloc[4:].to_parquet(project.data / "part-2.parquet")
    project.catalog(events={"format": "parquet", "path": "data/part-*.parquet",
                            "columns": {"customer_id": "user_id", "ts": "timestamp"}})
    report = run(project)
    assert report.ok and report.sources["events"].rows == len(df)
    # a problem in a mapped column names it as the file does, beside the contract's name
    df["timestamp"] = df["timestamp"].astype(str)  # text in both parts, as an export writes it
    df.loc[5, "timestamp"] = "not a time"
    df.iloc[:4].to_parquet(project.data / "part-1.parquet")
    df.iloc[4:].to_parquet(project.data / "part-2.parquet")
    p = only(run(project), "unparseable")
    assert p.column == "ts" and "1 value in 'ts' does not convert (the file's column 'timestamp')" in p.message
    # the row is the second file's own (it read "row 6", counting the first file's rows)
    assert p.examples == ("'not a time' at row 2 of part-2.parquet",), p.examples


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_example_rows_of_a_glob_are_the_rows_of_their_own_files(project, fmt):
    df = good_events(4)
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)  # c0-1 again, at the end of the second file
    df.loc[len(df) - 1, "ts"] = pd.Timestamp("2026-02-02")  # another event: a conflict
    for i, part in enumerate((df.iloc[:5], df.iloc[5:])):
        part.to_csv(project.data / f"ev-{i}.csv", index=False) if fmt == "csv" else part.to_parquet(project.data / f"ev-{i}.parquet")
    project.catalog(events={"format": fmt, "path": f"data/ev-*.{fmt}"})
    p = only(run(project), "conflicting_event_id")
    assert p.examples == (f"'c0-1' at rows 1 of ev-0.{fmt}, 8 of ev-1.{fmt}",), p.examples


@pytest.mark.parametrize("own", ["amount", "Amount"])  # DuckDB's names ignore case
@pytest.mark.parametrize("name", ["events.parquet", "events.csv"])
def test_a_mapped_column_wins_over_a_column_bearing_the_contract_name(project, name, own):
    """``columns: {amount: net_amount}`` in a file that also has ``amount``: the mapped column is
    read as ``amount`` and checked (footer statistics included); the file's own ``amount`` is not."""
    df = good_events()
    df.insert(list(df.columns).index("amount") + 1, "net_amount", df.amount / 2)
    df["amount"] = df.amount.abs() + 1  # the gross column: never negative
    df.loc[2, "net_amount"] = -10.0
    df = df.rename(columns={"amount": own})
    project.write_events(df, name, columns={"amount": "net_amount"})
    cfg = load_config(project.root)
    con = connect()
    report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, AS_OF)
    p = only(report, "negative_purchase")
    assert p.count == 1 and "-10.0" in p.examples[0]
    assert ": 1 purchase has a negative amount" in p.message  # not "1 purchases have"
    view = report.sources["events"].view
    assert "net_amount" not in report.sources["events"].columns
    got = con.sql(f"SELECT CAST(amount AS DOUBLE) FROM {view}").fetchnumpy()["CAST(amount AS DOUBLE)"]
    np.testing.assert_allclose(np.sort(got), np.sort(df.net_amount.to_numpy()))


def test_two_contract_columns_mapped_to_one_column_are_refused(project):
    df = good_events().rename(columns={"customer_id": "user_id"})
    project.write_events(df, columns={"customer_id": "user_id", "campaign_id": "user_id"})
    p = only(run(project), "unreadable")
    assert "both to the source's column 'user_id'" in p.message
    assert "'customer_id'" in p.message and "'campaign_id'" in p.message


@pytest.mark.parametrize("source", ["events", "customers"])
def test_a_misspelled_contract_name_in_columns_is_refused(project, source):
    """``columns: {ammount: order_value}`` read the file's column under a name nothing uses, with
    no error: every spend was 0 (and ``email_concent`` left consent to events alone)."""
    df = good_events().rename(columns={"amount": "order_value"})
    events = {"format": "parquet", "path": "data/events.parquet"}
    df.to_parquet(project.data / "events.parquet", index=False)
    pd.DataFrame({"customer_id": ["c0", "c1"], "opt_in": [True, False], "tier": ["a", "b"]}).to_parquet(
        project.data / "customers.parquet")
    customers = {"format": "parquet", "path": "data/customers.parquet"}
    if source == "events":
        events["columns"] = {"ammount": "order_value"}
        wanted = "did you mean 'amount'?"
    else:
        events["columns"] = {"amount": "order_value"}
        customers["columns"] = {"email_concent": "opt_in"}
        wanted = "did you mean 'email_consent'?"
    project.catalog(events=events, customers=customers)
    p = only(run(project), "unreadable")
    assert f"source '{source}'" in p.message and wanted in p.message and "configs/catalog.yaml" in p.message


def test_columns_written_the_other_way_round_or_unknown_are_refused(project):
    df = good_events().rename(columns={"amount": "order_value", "event_type": "ev_name"})
    project.write_events(df, columns={"order_value": "amount", "ev_name": "event_type"})
    p = only(run(project), "unreadable")  # both at once
    assert "the other way round" in p.message and "`amount: order_value`" in p.message
    assert "`event_type: ev_name`" in p.message and "correct `columns` under sources.events" in p.fix
    df = df.rename(columns={"ev_name": "event_type"})
    project.write_events(df, columns={"amount": "order_value", "basket": "order_value2"})
    p = only(run(project), "unreadable")
    assert "'basket' is not a column of the data contract for events" in p.message


def test_a_profile_attribute_may_be_read_under_another_name(project):
    """For customers, a key that looks like no contract column is an attribute's own name."""
    project.write_events(good_events())
    pd.DataFrame({"customer_id": ["c0", "c1", "c2"], "loyalty_tier_v2": ["a", "b", "a"]}).to_parquet(
        project.data / "customers.parquet")
    cat = {"format": "parquet", "path": "data/customers.parquet", "columns": {"tier": "loyalty_tier_v2"}}
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"}, customers=cat)
    report = run(project)
    assert not [p for p in report.problems if p.severity == "error"]
    assert "tier" in report.sources["customers"].columns
    # names a CRM gives its attributes, near a contract name but not a typo of it
    cat["columns"] = {"customer_type": "loyalty_tier_v2"}
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"}, customers=cat)
    assert not [p for p in run(project).problems if p.severity == "error"]


def test_files_of_a_glob_disagreeing_on_text_or_numbers_are_refused(project):
    """Read together, a file's numeric ids would become text ('2' beside 'c0') in silence."""
    df = good_events()
    df.iloc[:4].to_parquet(project.data / "part-1.parquet")
    df.iloc[4:].assign(customer_id=df.customer_id.iloc[4:].str[1:].astype("int64")).to_parquet(project.data / "part-2.parquet")
    project.catalog(events={"format": "parquet", "path": "data/part-*.parquet"})
    p = only(run(project), "unreadable")
    assert "column 'customer_id' is text in" in p.message and "part-1.parquet (VARCHAR)" in p.message
    assert "numbers in" in p.message and "part-2.parquet (BIGINT)" in p.message
    # what reads together fine: integer and floating amounts; a column no contract text column
    # (zip) as text and numbers; a text column that one file holds no value of (pandas writes an
    # all-missing column as floats)
    df.iloc[:4].assign(zip="0123", campaign_id="spring").to_parquet(project.data / "part-1.parquet")
    df.iloc[4:].assign(amount=df.amount.iloc[4:].fillna(0).astype("int64"), zip=12345,
                       campaign_id=float("nan")).to_parquet(project.data / "part-2.parquet")
    assert run(project).ok


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_file_of_a_glob_without_a_column_is_named(project, fmt):
    """Files are read by name, so a file without a column reads as nulls there: named as the
    file that lacks the column (an error for a required one, a warning for an optional one), not
    reported as rows with no timestamp."""
    df = good_events()
    parts = {"part-1": df.iloc[:4], "part-2": df.iloc[4:7].drop(columns=["ts"]), "part-3": df.iloc[7:]}

    def write(frames):
        for old in project.data.glob("part-*"):
            old.unlink()
        for stem, frame in frames.items():
            frame.to_parquet(project.data / f"{stem}.parquet") if fmt == "parquet" else frame.to_csv(
                project.data / f"{stem}.csv", index=False)

    write(parts)
    project.catalog(events={"format": fmt, "path": f"data/part-*.{fmt}"})
    report = run(project)
    p = only(report, "missing_column")
    assert p.severity == "error" and p.column == "ts" and p.examples == (f"part-2.{fmt}",)
    assert f"1 file of 3 under {project.data} lacks column 'ts', which the others have" in p.message, p.message
    assert "'event_id', 'customer_id', 'event_type', 'amount'" in p.message and "every file needs it" in p.message
    assert not [q for q in report.problems if q.check == "null_ts"]
    write({**parts, "part-2": df.iloc[4:7].drop(columns=["amount"])})
    report = run(project)
    p = only(report, "missing_column")
    assert report.ok and p.severity == "warning" and p.column == "amount" and "their rows read it as null" in p.message
    # a column read under another name (`columns:`) is named as the files name it
    write({stem: frame.rename(columns={"amount": "net", "customer_id": "user"}) for stem, frame in
           {**parts, "part-2": df.iloc[4:7].drop(columns=["amount"])}.items()})
    project.catalog(events={"format": fmt, "path": f"data/part-*.{fmt}", "columns": {"amount": "net", "customer_id": "user"}})
    p = only(run(project), "missing_column")
    assert "lacks column 'net' (read as 'amount')" in p.message, p.message
    assert "with columns ['event_id', 'user', 'event_type', 'ts']" in p.message and p.fix.startswith("add 'net' to that file")


def test_all_problems_reported_at_once(project):
    df = good_events().astype({"ts": "object", "customer_id": "object"})
    df.loc[0, "customer_id"] = None
    df.loc[1, "ts"] = "soon"
    df.loc[2, "amount"] = -1
    df.loc[3, "event_type"] = "mystery"
    report = run_with(project, df, "events.csv")
    assert {p.check for p in report.errors} == {"null_id", "unparseable", "negative_purchase", "unknown_event_type"}


def test_customer_and_identity_sources_are_checked(project):
    project.write_events(good_events())
    pd.DataFrame({"customer_id": ["c0", "c1", "c1"], "signup_at": ["2026-01-01", "never", "2026-01-01"],
                  "email_consent": ["yes", "no", "maybe"]}).to_csv(project.data / "customers.csv", index=False)
    pd.DataFrame({"customer_id": ["c0"], "id_type": [None], "id_value": ["x"]}).to_parquet(project.data / "ids.parquet")

    cat = yaml.safe_load((project.root / "configs" / "catalog.yaml").read_text())
    cat["sources"]["customers"] = {"format": "csv", "path": "data/customers.csv"}
    cat["sources"]["identities"] = {"format": "parquet", "path": "data/ids.parquet"}
    (project.root / "configs" / "catalog.yaml").write_text(yaml.safe_dump(cat))
    report = run(project)
    checks = {(p.source, p.column, p.check) for p in report.problems}
    assert ("customers", "signup_at", "unparseable") in checks
    assert ("customers", "email_consent", "unparseable") in checks
    assert ("customers", "customer_id", "duplicate_customer_id") in checks
    assert only(report, "duplicate_customer_id").examples == ("'c1' at rows 2, 3",)
    assert ("identities", "id_type", "null_id_type") in checks
    assert ("events", "customer_id", "unknown_customer") in checks  # c2 has no profile: a warning


def test_a_blank_customer_id_is_not_also_an_unknown_customer(project):
    df = good_events().astype({"customer_id": "object"})
    df.loc[4, "customer_id"] = "  "
    project.write_events(df)
    pd.DataFrame({"customer_id": ["c0", "c1", "c2"]}).to_parquet(project.data / "customers.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    report = run(project)
    assert only(report, "null_id").count == 1
    assert not [p for p in report.problems if p.check == "unknown_customer"], report.problems


def test_consent_without_its_time_is_a_warning_that_says_it_is_not_used(project):
    project.write_events(good_events())
    cu = pd.DataFrame({"customer_id": ["c0", "c1", "c2"], "email_consent": [True, False, None],
                       "consent_updated_at": pd.to_datetime(["2026-01-01", None, None])})
    for frame, column, count in ((cu, "consent_updated_at", 1), (cu.drop(columns="consent_updated_at"), "email_consent", 2)):
        frame.to_parquet(project.data / "customers.parquet")
        project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                        customers={"format": "parquet", "path": "data/customers.parquet"})
        report = run(project)
        p = only(report, "consent_without_time")
        assert report.ok and p.severity == "warning" and p.column == column and p.count == count, p
        assert "consent is not used" in p.message and "consent_updated_at" in p.fix
    cu.assign(consent_updated_at=pd.to_datetime(["2026-01-01"] * 3)).to_parquet(project.data / "customers.parquet")
    assert not [p for p in run(project).problems if p.check == "consent_without_time"]
    # a time that does not convert is reported as that, not again as a missing time
    cu.assign(consent_updated_at=["2026-01-01", "last week", None]).to_csv(project.data / "customers.csv", index=False)
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "csv", "path": "data/customers.csv"})
    report = run(project)
    assert only(report, "unparseable").count == 1 and not [p for p in report.problems if p.check == "consent_without_time"]


def test_event_checks_report_in_order_while_the_id_sort_runs_beside_the_others(project):
    df = good_events()
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)  # an exact repeat of an event_id
    df.loc[len(df) - 2, "event_type"] = "mystery"  # and an event type without a role
    project.write_events(df)
    pd.DataFrame({"customer_id": ["c0", "c1"]}).to_parquet(project.data / "customers.parquet")  # c2 unknown

    cat = yaml.safe_load((project.root / "configs" / "catalog.yaml").read_text())
    cat["sources"]["customers"] = {"format": "parquet", "path": "data/customers.parquet"}
    (project.root / "configs" / "catalog.yaml").write_text(yaml.safe_dump(cat))
    report = run(project)
    assert [p.check for p in report.problems] == ["duplicate_event_id", "unknown_event_type", "unknown_customer"]


def test_duckdb_database_source_reads_like_parquet_and_a_wrong_table_lists_the_tables(project):
    import duckdb

    from features.customer_features import customer_features
    from features.engines.duckdb import DuckDBEngine
    from pipeline.jobs.data import load_validated
    from pipeline.jobs.features import data_profile, feature_spec

    def features():
        cfg = load_config(project.root)
        data = load_validated(cfg, AS_OF)
        eng = DuckDBEngine(data.con)
        expr = customer_features(eng.events(), eng.customers(), AS_OF, feature_spec(cfg), data_profile(cfg, data))
        return eng.execute(expr).sort_values("customer_id", ignore_index=True)

    project.write_events(good_events(5))
    from_parquet = features()
    db = project.data / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA crm")
        con.execute(f"CREATE TABLE crm.events AS SELECT * FROM read_parquet('{project.data / 'events.parquet'}')")
        con.execute("CREATE VIEW recent AS SELECT * FROM crm.events")
    project.catalog(events={"format": "duckdb", "path": "data/shop.duckdb", "table": "crm.events"})
    report = run(project)
    assert report.ok and report.sources["events"].rows == len(good_events(5))
    pd.testing.assert_frame_equal(features(), from_parquet)

    project.catalog(events={"format": "duckdb", "path": "data/shop.duckdb", "table": "events"})
    p = only(run(project), "unreadable")
    assert "shop.duckdb: source 'events' names table 'events', which this database does not have" in p.message
    assert "it has crm.events, recent" in p.message and "`table:`" in p.message


@pytest.mark.parametrize("name", ["customers.parquet", "customers.csv"])
def test_columns_whose_names_differ_only_in_case_are_refused(project, name):
    """A customers file with `country` and `Country`: DuckDB renamed the second `Country_1`, which
    became a feature, and listing `Country` was refused naming a column the file does not have."""
    frame = pd.DataFrame({"customer_id": ["c0"], "country": ["DE"], "Country": ["de"]})
    path = project.data / name
    frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path, index=False)
    project.write_events(good_events(1))
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": name.rsplit(".", 1)[1], "path": f"data/{name}"})
    p = only(run(project), "unreadable")
    assert "has columns 'country' and 'Country' (columns 2 and 3), whose names differ only in case" in p.message, p


def test_a_duckdb_source_another_process_is_writing_is_try_later(project):
    """A warehouse file held open by its nightly load: reported as bad data ('correct the file',
    exit 1) where it is a wait (75), like a busy workspace."""
    import subprocess
    import sys

    import duckdb

    from features.sources import SourceBusy

    db = project.data / "wh.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{project.write_events(good_events(3))}')")
    project.catalog(events={"format": "duckdb", "path": "data/wh.duckdb", "table": "events"})
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); "
                               "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(SourceBusy, match=rf"wh.duckdb: source 'events' is a DuckDB database that another process "
                                             rf"\(PID {holder.pid}\) holds open for writing") as e:
            run(project)
        assert e.value.try_later
    finally:
        holder.kill()
        holder.wait()
    assert run(project).ok


def test_a_duckdb_source_may_be_a_view_over_tables_named_events_and_customers(project):
    """A warehouse's views over its own `events` and `customers` tables: DuckDB binds an attached
    database's view with the temporary catalog first, where dynseg's views of those names were,
    and every command crashed ("infinite recursion detected"). dynseg's views are in the
    connection's own database now, which the source's view does not search before its own."""
    import duckdb

    from pipeline.jobs.features import build_features_job

    project.write_events(good_events(5))
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(5)], "signup_at": pd.Timestamp("2025-12-01"),
                              "country": ["SE", "DE", "SE", "FR", "DE"]})
    customers.to_parquet(project.data / "customers.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"})
    as_of = datetime(2026, 1, 6)
    from_parquet = build_features_job(load_config(project.root), as_of).frame
    with duckdb.connect(str(project.data / "wh.duckdb")) as con:
        for name in ("events", "customers"):
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{project.data / f'{name}.parquet'}')")
            con.execute(f"CREATE VIEW {name}_v AS SELECT * FROM {name}")
    project.catalog(events={"format": "duckdb", "path": "data/wh.duckdb", "table": "events_v"},
                    customers={"format": "duckdb", "path": "data/wh.duckdb", "table": "customers_v"})
    assert run(project).ok
    pd.testing.assert_frame_equal(build_features_job(load_config(project.root), as_of).frame, from_parquet)
    assert len(from_parquet) == 5 and from_parquet.country.notna().all()


def test_customers_whose_ids_match_no_event_customer_are_an_error(project):
    project.write_events(good_events())
    pd.DataFrame({"customer_id": ["17", "18", "19"], "signup_at": ["2026-01-01"] * 3}).to_parquet(project.data / "cu.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/cu.parquet"})
    report = run(project)
    p = only(report, "no_customer_matches")
    assert not report.ok and p.severity == "error" and p.count == 3
    assert "none of the 3 customer_ids in events is in customers" in p.message and "'c0'" in p.message and "'17'" in p.message
    assert "columns:" in p.fix


def test_every_id_padded_in_one_source_is_named_as_such(project):
    """Events with ids 1000, 1001 and customers with 01000, 01001 (a spreadsheet padded them): the
    error named two unrelated ids ('1000' and the smallest profile, '00101') and the generic fix;
    with half the ids padded the warning already said which spelling was the other's."""
    events = good_events().assign(customer_id=lambda d: d.customer_id.map({"c0": "1000", "c1": "1001", "c2": "1002"}))
    project.write_events(events)
    pd.DataFrame({"customer_id": ["00101", "01000", "01001", "01002"]}).to_parquet(project.data / "cu.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/cu.parquet"})
    p = only(run(project), "no_customer_matches")
    example = re.search(r"events: '(\d+)'", p.message)[1]
    assert f"customers: '0{example}'" in p.message, p.message
    assert p.fix.startswith(f"the customers source spells '{example}' as '0{example}' (leading zeros"), p.fix


def test_ids_of_another_form_name_the_column_of_the_other_source_that_holds_them(project):
    """A Shopify customers export keyed by its numeric id, events keyed by email: the error names
    the customers' email column to map (the analyst had to find it)."""
    events = good_events()
    events["customer_id"] = events.customer_id.map({"c0": "ann@x.com", "c1": "bo@x.com", "c2": "cy@x.com"})
    project.write_events(events)
    pd.DataFrame({"id": [6000001, 6000002, 6000003], "Email": ["Ann@x.com", "bo@x.com ", "cy@x.com"],
                  "country": ["DE", "FR", "DE"]}).to_parquet(project.data / "cu.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/cu.parquet", "columns": {"customer_id": "id"}})
    p = only(run(project), "no_customer_matches")
    assert p.fix.startswith("the customers source's column 'Email' holds the events' ids (100% of a sample found): "
                            "map it, `customer_id: Email` in the `columns:` of sources.customers"), p.fix
    # the other way round: the events carry the profiles' id in a column of their own
    events["shop_id"] = events.customer_id.map({"ann@x.com": "6000001", "bo@x.com": "6000002", "cy@x.com": "6000003"})
    events.to_parquet(project.data / "events.parquet", index=False)
    pd.DataFrame({"id": [6000001, 6000002, 6000003]}).to_parquet(project.data / "cu.parquet")
    p = only(run(project), "no_customer_matches")
    assert p.fix.startswith("the events source's column 'shop_id' holds the customers' ids"), p.fix
    # nothing holds them: the general advice alone
    pd.DataFrame({"id": [7, 8, 9]}).to_parquet(project.data / "cu.parquet")
    assert only(run(project), "no_customer_matches").fix.startswith("point both sources' customer_id")


def test_not_counting_unknown_customers_drops_the_warning_but_not_the_error(project):
    """A run leaves the count of customers without a profile to itself (it counts its own, once its
    features found them); ids of another form than the profiles' are still refused up front."""
    project.write_events(good_events())  # c0, c1, c2
    pd.DataFrame({"customer_id": ["c0", "c1"]}).to_parquet(project.data / "cu.parquet")  # c2 unknown
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/cu.parquet"})
    assert only(run(project), "unknown_customer").count == 1
    report = run(project, count_unknown_customers=False)
    assert report.ok and report.problems == []

    pd.DataFrame({"customer_id": ["17", "18"]}).to_parquet(project.data / "cu.parquet")  # no id meets one
    p = only(run(project, count_unknown_customers=False), "no_customer_matches")
    assert p.severity == "error" and "none of the 3 customer_ids in events is in customers" in p.message


def test_ids_that_meet_no_profile_are_an_error_with_identities_too(project):
    """An identities source does not hide ids of another form: the error stands unless an event id
    meets a profile, directly or through an identifier it shares with one."""
    project.write_events(good_events())  # ids c0, c1, c2
    pd.DataFrame({"customer_id": ["C0", "C1", "C2"], "signup_at": ["2026-01-01"] * 3}).to_parquet(project.data / "cu.parquet")
    links = pd.DataFrame({"customer_id": ["c0", "c1", "web-9"], "id_type": ["email"] * 3,
                          "id_value": ["a@x", "b@x", "z@x"]})
    links.to_parquet(project.data / "ids.parquet")
    sources = {"events": {"format": "parquet", "path": "data/events.parquet"},
               "customers": {"format": "parquet", "path": "data/cu.parquet"},
               "identities": {"format": "parquet", "path": "data/ids.parquet"}}
    project.catalog(**sources)
    p = only(run(project), "no_customer_matches")
    assert p.severity == "error" and "none of the 3 customer_ids in events is in customers" in p.message
    # c0 shares an email with profile C0: the ids meet through identities; the rest is a warning
    pd.concat([links, pd.DataFrame({"customer_id": ["C0"], "id_type": ["email"], "id_value": ["a@x"]})]).to_parquet(
        project.data / "ids.parquet")
    report = run(project)
    assert report.ok and not [q for q in report.problems if q.check == "no_customer_matches"]
    # c0 meets its profile through the link, so it is not counted among those without one (it was)
    warning = only(report, "unknown_customer")
    assert warning.severity == "warning" and warning.count == 2 and warning.examples == ("'c1'",), warning


def test_a_csv_source_is_parsed_once_and_its_copy_goes_with_the_connection(project):
    """Every read of a CSV file parses it again, and validation and the feature query read a source
    many times: it is parsed once into a temporary Parquet file, its rows in order (examples still
    count the file's rows), removed with the connection."""
    import gc
    import os
    import tempfile
    from pathlib import Path

    from features.sources import register_source

    df = good_events(4).astype({"amount": "object"})
    df.loc[5, "amount"] = "12,50"  # does not convert: found at the file's own row
    df.to_csv(project.data / "events.csv", index=False)
    project.catalog(events={"format": "csv", "path": "data/events.csv"})
    cfg = load_config(project.root)
    before = set(Path(tempfile.gettempdir()).glob("dynseg-csv-events-*"))
    con = connect()
    raw = register_source(con, "events", cfg.source_specs()["events"], cfg.project_dir)
    copies = set(Path(tempfile.gettempdir()).glob("dynseg-csv-events-*")) - before
    assert len(copies) == 1 and raw.rows == len(df)
    plan = con.execute(f"EXPLAIN SELECT * FROM {raw.view}").fetchall()[0][1]
    assert "READ_PARQUET" in plan.upper() and "READ_CSV" not in plan.upper()
    assert con.execute(f"SELECT amount FROM {raw.view} LIMIT 1 OFFSET 5").fetchall()[0][0] == "12,50"
    assert next(iter(copies)).name.startswith(f"dynseg-csv-events-{os.getpid()}@")  # names its process
    con.close()
    del con
    gc.collect()
    assert not any(c.exists() for c in copies)

    # a copy left by a run killed outright goes with the next copy made on this host
    import socket

    from features.sources import drop_copies

    from conftest import dead_pid

    killed = Path(tempfile.gettempdir()) / f"dynseg-csv-events-{dead_pid()}@{socket.gethostname()}~x1y2"
    killed.mkdir()
    (killed / "events.parquet").write_bytes(b"PAR1")
    con = connect()
    register_source(con, "events", cfg.source_specs()["events"], cfg.project_dir)
    assert not killed.exists()
    mine = set(Path(tempfile.gettempdir()).glob(f"dynseg-csv-events-{os.getpid()}@*"))
    assert mine
    drop_copies(con)  # at once, whoever still holds the connection (a notebook's last error)
    assert not any(c.exists() for c in mine)
    report = validate(connect(), cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir,
                      datetime(2026, 2, 1))
    bad = [p for p in report.problems if p.column == "amount" and p.severity == "error"]
    assert bad and bad[0].examples[0] == "'12,50' at row 6", bad


def test_ids_spelled_another_way_in_the_profiles_are_named_in_the_warning(project, monkeypatch):
    """Events say '1' and '123456', customers '000001' and '123456': some ids meet, so no error,
    and the warning said only that ids had no profile (a build then held each customer twice)."""
    from pipeline.jobs.features import build_features_job

    events = good_events().astype({"customer_id": "object"})
    events["customer_id"] = events.customer_id.map({"c0": "1", "c1": "123456", "c2": "C7"})
    project.write_events(events)
    pd.DataFrame({"customer_id": ["000001", "123456", "c7"]}).to_parquet(project.data / "cu.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/cu.parquet"})
    p = only(run(project), "unknown_customer")
    assert p.count == 2 and p.examples == ("'1'",)
    assert p.fix.startswith("the customers source spells '1' as '000001' (leading zeros, case, spaces, or a float's "
                            ".0): write the ids one way in both sources"), p.fix
    monkeypatch.setenv("DYNSEG_PROJECT", str(project.root))  # a run counts its own: the same hint
    run_ = build_features_job(load_config(project.root), datetime(2026, 1, 6))
    assert any("spells '1' as '000001'" in w for w in run_.warnings), run_.warnings
    pd.DataFrame({"customer_id": ["123456", "9"]}).to_parquet(project.data / "cu.parquet")  # no look-alike
    assert "spells" not in only(run(project), "unknown_customer").fix


def test_ids_written_as_floats_are_named_and_no_event_id_is_offered_for_them(project):
    """pandas writes integer ids that had a missing value as floats (47.0): 'none of the customer_ids
    in events is in customers', and the fix offered was to map the events' event_id (a counter
    1, 2, 3... matched the profiles' 1, 2, 3), which passed validation with one customer per order."""
    events = good_events().reset_index(drop=True)
    events["event_id"] = [str(i + 1) for i in range(len(events))]
    events["customer_id"] = events.customer_id.map({"c0": "1.0", "c1": "2.0", "c2": "3.0"})
    events.to_csv(project.data / "events.csv", index=False)
    pd.DataFrame({"customer_id": [str(i) for i in range(1, 50)]}).to_parquet(project.data / "cu.parquet")
    project.catalog(events={"format": "csv", "path": "data/events.csv"},
                    customers={"format": "parquet", "path": "data/cu.parquet"})
    p = only(run(project), "no_customer_matches")
    assert "(events: '1.0', customers: '1')" in p.message, p.message
    assert p.fix.startswith("the customers source spells '1.0' as '1' (leading zeros, case, spaces, or a number written "
                            "as a float, 47.0 for 47)") and "event_id" not in p.fix, p.fix
    # ids of another kind altogether: the event_id counter is still no customer id to map
    events["customer_id"] = events.customer_id.map({"1.0": "anna", "2.0": "ben", "3.0": "cleo"})
    events.to_csv(project.data / "events.csv", index=False)
    p = only(run(project), "no_customer_matches")
    assert "event_id" not in p.fix and p.fix.startswith("point both sources' customer_id at the same identifier"), p.fix



def test_a_csv_copy_that_cannot_be_written_says_so_and_a_gzipped_csv_reads(project, monkeypatch, tmp_path):
    """The temporary copy's folder without room is no CSV error (it blamed the file and
    catalog.yaml); a .csv.gz source's header checks read it decompressed (they crashed on its bytes)."""
    import gzip
    import tempfile

    from features.sources import SourceError, register_source

    df = good_events(4)
    with gzip.open(project.data / "events.csv.gz", "wt") as f:
        df.to_csv(f, index=False)
    project.catalog(events={"format": "csv", "path": "data/events.csv.gz"})
    cfg = load_config(project.root)
    report = run(project)
    assert report.ok, report.problems
    assert report.sources["events"].rows == len(df)

    not_a_folder = tmp_path / "full"
    not_a_folder.write_text("")  # writing under it fails, as a full disk's would
    monkeypatch.setattr(tempfile, "mkdtemp", lambda prefix="", **kw: str(not_a_folder))
    with pytest.raises(SourceError) as e:
        register_source(connect(), "events", cfg.source_specs()["events"], cfg.project_dir)
    said = str(e.value)
    assert said.startswith("source 'events': its temporary copy (a CSV source is parsed once into Parquet") and \
        "the file is fine" in e.value.fix and "catalog.yaml" not in said, said


def test_rows_repeated_exactly_in_a_log_without_event_ids_are_warned_of_naming_an_id_column(project):
    """A review's export without event ids (init did not map its order_id): the same orders twice
    counted twice in frequency and spend, and validation said nothing. Rows alike in every column
    are now a warning naming the rows, and the export's id column to map; a log without repeats,
    or whose repeats differ in a column, has none."""
    df = good_events().drop(columns="event_id")
    assert not [p for p in run_with(project, df).problems if p.check == "repeated_rows"]
    differ = pd.concat([df, df.iloc[[2]].assign(amount=41.5)], ignore_index=True)  # c0's order, another amount
    assert not [p for p in run_with(project, differ).problems if p.check == "repeated_rows"]
    alike = pd.concat([df, df.iloc[[2]]], ignore_index=True).assign(order_id=lambda d: [f"o{i}" for i in d.index])
    assert not [p for p in run_with(project, alike).problems if p.check == "repeated_rows"]  # another order id: another order
    df["order_id"] = [f"o{i}" for i in df.index]
    twice = pd.concat([df, df.iloc[[2, 5]]], ignore_index=True)
    p = only(run_with(project, twice), "repeated_rows")
    assert p.severity == "warning" and p.count == 2 and p.examples == ("rows 3 and 10",), p
    assert "2 rows repeat another row in every column" in p.message, p.message
    assert "columns: {event_id: order_id}" in p.fix, p.fix
    project.write_events(twice.assign(event_id=lambda d: d["order_id"]))  # mapped: each id once, no warning
    assert not [q for q in run(project).problems if q.check == "repeated_rows"]


def test_text_times_that_are_whole_numbers_get_the_epoch_unit_in_the_fix(project):
    """A CSV's epoch column read as text (in a glob beside ISO times, or a string column): the fix
    offered only '%d/%m/%Y %H:%M'. Its digits say the unit."""
    df = good_events()
    df["ts"] = (df["ts"].astype("datetime64[ms]").astype("int64")).astype(str)  # '1767261600000'
    p = only(run_with(project, df), "unparseable")
    assert p.column == "ts" and "`timestamp_format: epoch_ms` under sources.events reads them" in p.fix, p.fix
    df["ts"] = df["ts"].str[:-3]  # seconds
    assert "`timestamp_format: epoch_s`" in only(run_with(project, df), "unparseable").fix
    df.loc[0, "ts"] = "yesterday"  # not all numbers: no unit offered
    assert "epoch" not in only(run_with(project, df), "unparseable").fix
