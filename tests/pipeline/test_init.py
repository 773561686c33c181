"""`dynseg init`: a project on a shop's own files, from export names to a first feature build."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO
from pipeline.cli import app
from pipeline.synthetic import generate

runner = CliRunner()


def said(result) -> str:
    """The command's output as one line: rich wraps it at the console's width."""
    return " ".join(result.output.split())

#: The demo's event names as Klaviyo's metrics and Segment's specs call them
EXPORT_NAMES = {"signed_up": "Signed Up", "consent_granted": "Consent Granted", "email_sent": "Received Email",
                "email_opened": "Opened Email", "page_viewed": "Viewed Product", "cart_added": "Added to Cart",
                "order_completed": "Placed Order", "email_clicked": "Clicked Email", "unsubscribed": "Unsubscribed",
                "order_refunded": "Refunded Order", "consent_withdrawn": "Consent Withdrawn",
                "email_bounced": "Bounced Email", "support_ticket_opened": "Support Ticket Opened",
                "spam_complaint": "Marked Email as Spam"}


@pytest.fixture
def shop_export(tmp_path, monkeypatch):
    """A shop's exports as other tools write them: a semicolon CSV of events named userId, event,
    timestamp, messageId, revenue, with Klaviyo's metric names and one event dynseg cannot place;
    Shopify-like profiles (id, created_at, accepts_marketing)."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE", "DYNSEG_PROFILE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    shop = generate(300, seed=4, end="2026-11-27")
    exports = tmp_path / "exports"
    exports.mkdir()
    events = shop.events.assign(event_type=shop.events["event_type"].map(EXPORT_NAMES))
    active = events[events["event_type"] == "Viewed Product"].head(40)
    events = pd.concat([events, active.assign(event_type="Active on Site", event_id=active["event_id"] + "-a",
                                              amount=None)])
    events = events.rename(columns={"customer_id": "userId", "event_type": "event", "ts": "timestamp",
                                    "event_id": "messageId", "amount": "revenue"})
    events.to_csv(exports / "events.csv", sep=";", index=False)
    shop.customers.rename(columns={"customer_id": "id", "signup_at": "created_at", "email_consent": "accepts_marketing",
                                   "consent_updated_at": "accepts_marketing_updated_at"}).to_parquet(
        exports / "customers.parquet")
    return exports


def test_init_proposes_mappings_and_roles_that_validate_and_build(shop_export, tmp_path, monkeypatch):
    project = tmp_path / "shop"
    monkeypatch.chdir(shop_export)
    result = runner.invoke(app, ["init", str(project), "--events", "events.csv", "--customers",
                                 str(shop_export / "customers.parquet")])
    assert result.exit_code == 0, result.output
    assert "Not placed" in said(result) and "'Active on Site' (40)" in said(result)
    assert f"--project {project}" in said(result)  # the next steps name the folder
    catalog = yaml.safe_load((project / "configs" / "catalog.yaml").read_text())["sources"]
    assert catalog["events"] == {
        "format": "csv", "path": str(shop_export / "events.csv"), "delimiter": ";",  # outside the project: absolute
        "columns": {"customer_id": "userId", "event_type": "event", "ts": "timestamp", "event_id": "messageId",
                    "amount": "revenue"}}
    assert catalog["customers"]["columns"] == {
        "customer_id": "id", "signup_at": "created_at", "email_consent": "accepts_marketing",
        "consent_updated_at": "accepts_marketing_updated_at"}
    roles_text = (project / "configs" / "roles.yaml").read_text()
    roles = yaml.safe_load(roles_text)
    demo = yaml.safe_load((REPO / "configs" / "roles.yaml").read_text())["event_roles"]
    assert roles["event_roles"] == {role: [EXPORT_NAMES[n] for n in names] for role, names in demo.items()}
    assert roles["ignore"] is None and "#   - Active on Site  # 40 events" in roles_text  # read as []
    # every other config is the repository's, but the holdout salt, which is the project's own
    for name in ("project.yaml", "features.yaml", "training.yaml", "profiles/local.yaml", "profiles/spark.yaml"):
        assert (project / "configs" / name).read_text() == (REPO / "configs" / name).read_text()
    salt = yaml.safe_load((project / "configs" / "segments.yaml").read_text())["holdout_salt"]
    assert salt != yaml.safe_load((REPO / "configs" / "segments.yaml").read_text())["holdout_salt"]
    # the data does not validate yet (a name not placed): the demo's segments are kept, and why is said
    assert (project / "configs" / "segments.yaml").read_text().replace(salt, "dynseg-demo") == \
        (REPO / "configs" / "segments.yaml").read_text()
    assert "kept as they are (the data does not validate yet" in said(result)
    assert not list(project.glob(".configs.*"))  # the staged folder was renamed into place

    # the one name nothing placed is refused by validation until it is placed; ignored, the data passes
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"])
    assert result.exit_code == 1 and "'Active on Site' (40 events)" in said(result)
    (project / "configs" / "roles.yaml").write_text(roles_text.replace("#   - Active", "  - Active"))
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"])
    assert result.exit_code == 0, result.output
    out = project / "features.parquet"
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27", "--out", str(out)])
    assert result.exit_code == 0, result.output
    feats = pd.read_parquet(out)
    assert len(feats) > 250 and feats["frequency"].sum() > 0 and feats["n_email_open"].sum() > 0
    assert feats["email_consent"].notna().any() and feats["days_since_signup"].notna().all()


def test_init_refuses_an_existing_project_and_paths_it_cannot_use(shop_export, tmp_path, monkeypatch):
    project = tmp_path / "shop"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "mine.yaml").write_text("keep: me\n")
    result = runner.invoke(app, ["init", str(project), "--events", str(shop_export / "events.csv")])
    assert result.exit_code == 1 and "already exists" in said(result) and "never overwrites" in said(result)
    assert [p.name for p in (project / "configs").iterdir()] == ["mine.yaml"]
    other = tmp_path / "other"
    for events, expected in ((shop_export / "nope.csv", "--events"), (shop_export / "events.json", "cannot tell its format"),
                         (shop_export / "events-*.parquet", "the glob matches no file")):
        result = runner.invoke(app, ["init", str(other), "--events", str(events)])
        assert result.exit_code == 2 and expected in said(result), result.output
    result = runner.invoke(app, ["init", str(other), "--events", str(shop_export / "events.csv"),
                                 "--customers", str(shop_export / "missing.parquet")])
    assert result.exit_code == 2 and "--customers" in said(result) and "no such file" in said(result)
    assert not other.exists()  # refused before anything was made


def _init_on(tmp_path, monkeypatch, events: pd.DataFrame) -> tuple[Path, object]:
    """``dynseg init`` in a new project folder on ``events`` (data/ev.parquet): (folder, result)."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    project = tmp_path / "shop"
    (project / "data").mkdir(parents=True)
    events.to_parquet(project / "data" / "ev.parquet")
    monkeypatch.chdir(project)
    return project, runner.invoke(app, ["init", "--events", "data/ev.parquet"])


@pytest.mark.parametrize("revenue, category", [("properties_revenue", "properties_category"),
                                               ("ecommerce_purchase_revenue", None)])
def test_flattened_warehouse_columns_are_mapped(tmp_path, monkeypatch, revenue, category):
    """Segment's warehouse tables flatten an event's properties (properties_revenue), GA4's export
    flattened its ecommerce record: init left amount unmapped, and every purchase was 0 in spend."""
    frame = pd.DataFrame({"user_id": ["a", "b"], "event": ["Order Completed", "Order Completed"],
                          "timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"]), revenue: [10.0, 20.0]})
    if category:
        frame[category] = ["shoes", "hats"]
    project, result = _init_on(tmp_path, monkeypatch, frame)
    assert result.exit_code == 0, result.output
    columns = yaml.safe_load((project / "configs" / "catalog.yaml").read_text())["sources"]["events"]["columns"]
    assert columns["amount"] == revenue and columns.get("category") == category, columns


@pytest.mark.parametrize("key, other", [("Email", None), ("Profile Email", None), ("Email", "Customer ID")])
def test_an_export_keyed_by_email_gets_it_as_customer_id_unless_an_id_is_there(tmp_path, monkeypatch, key, other):
    """Shopify's orders (Email) and Klaviyo's events (Profile Email) got no customer_id proposed."""
    frame = pd.DataFrame({key: ["a@x.de", "b@x.de"], "Metric Name": ["Placed Order"] * 2,
                          "Timestamp": pd.to_datetime(["2026-01-01", "2026-01-02"]), "Value": [10.0, 20.0]})
    if other:
        frame[other] = ["1", "2"]
    project, result = _init_on(tmp_path, monkeypatch, frame)
    assert result.exit_code == 0, result.output
    columns = yaml.safe_load((project / "configs" / "catalog.yaml").read_text())["sources"]["events"]["columns"]
    assert columns["customer_id"] == (other or key), columns


@pytest.mark.parametrize("dates", [["20260108", "20260305"], [20260108, 20260305]], ids=["text", "integer"])
def test_a_compact_date_gets_its_form(tmp_path, monkeypatch, dates):
    """GA4's event_date is text like 20260108: init mapped it without a timestamp_format, and
    validation then refused every row as unparseable with an example form of another shape. As
    integers (the type pandas' read_csv or BigQuery gives it) it got no form either, and was refused."""
    project, result = _init_on(tmp_path, monkeypatch, pd.DataFrame(
        {"user_id": ["a", "b"], "event_name": ["purchase", "purchase"], "event_date": dates}))
    assert result.exit_code == 0, result.output
    events = yaml.safe_load((project / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert events["timestamp_format"] == "%Y%m%d" and events["columns"]["ts"] == "event_date", events
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-06-01"])
    assert result.exit_code == 0, result.output


def test_order_states_as_event_names_are_placed_nowhere_and_said_to_be_states(tmp_path, monkeypatch):
    """Shopify's orders export with its `Financial Status` as the event name: `refunded` went under
    refund by its words, a refunded order then a refund and no purchase."""
    project, result = _init_on(tmp_path, monkeypatch, pd.DataFrame(
        {"user_id": ["a", "b", "a", "b"], "event_name": ["paid", "refunded", "partially_refunded", "paid"],
         "event_time": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"])}))
    assert result.exit_code == 0, result.output
    roles_text = (project / "configs" / "roles.yaml").read_text()
    assert not (yaml.safe_load(roles_text)["event_roles"] or {}), roles_text
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((project / "configs").stat().st_mode) == 0o777 & ~mask  # not mkdtemp's private 0700
    assert "# paid, partially_refunded, refunded: orders' states (a payment status column), not events" in roles_text


def test_a_file_inside_the_project_is_named_relative_to_it_and_an_unreadable_one_is_reported(tmp_path, monkeypatch):
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    project = tmp_path / "shop"
    (project / "data").mkdir(parents=True)
    pd.DataFrame({"user_id": ["a", "b", "a", "b"], "event_name": ["purchase", "page_view", "Order Completed", "Ordered Product"],
                  "event_time": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"])}).to_parquet(
        project / "data" / "ev.parquet")
    (project / "data" / "customers.csv").write_bytes(b"\x00\x01not csv\xff\xfe\x00")
    pd.DataFrame({"user_id": ["a", "b"], "identifier_type": "email", "identifier": "a@b.c"}).to_csv(
        project / "data" / "ids.tsv", sep="\t", index=False)
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["init", "--events", "data/ev.parquet", "--customers", "data/customers.csv",
                                 "--identities", "data/ids.tsv"])
    assert result.exit_code == 0, result.output
    catalog = yaml.safe_load((project / "configs" / "catalog.yaml").read_text())["sources"]
    assert catalog["events"] == {"format": "parquet", "path": "data/ev.parquet",
                                 "columns": {"customer_id": "user_id", "event_type": "event_name", "ts": "event_time"}}
    assert catalog["customers"]["path"] == "data/customers.csv"
    assert catalog["identities"] == {"format": "csv", "path": "data/ids.tsv", "delimiter": "\t", "columns": {
        "customer_id": "user_id", "id_type": "identifier_type", "id_value": "identifier"}}
    assert "  customers:\n    format: csv\n    path: data/customers.csv\n" in (project / "configs" / "catalog.yaml").read_text()
    assert "customers could not be read" in said(result)
    roles_text = (project / "configs" / "roles.yaml").read_text()
    assert yaml.safe_load(roles_text)["event_roles"] == {"purchase": ["Order Completed", "purchase"],
                                                         "page_view": ["page_view"]}
    # two names of one role may record one order twice; a per-item event says why it is not a purchase
    assert "# Check purchase first" in roles_text and "Several names for purchase" in said(result)
    assert "#   - Ordered Product  # 1 event; one event per item of an order" in roles_text
    assert "'Ordered Product' (1; one event per item" in said(result)


def test_a_time_column_of_numbers_gets_its_epoch_unit(tmp_path, monkeypatch):
    """GA4's BigQuery export: user_pseudo_id, event_name, event_timestamp in microseconds (here as
    a CSV's text too). init picks the unit under which every value falls between 1990 and 2100, and
    the project validates; numbers that are no time in any unit get no unit."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    stamps = pd.to_datetime(["2026-03-01 10:00:00", "2026-03-02 11:30:00.25", "2026-03-03 08:00:00"], format="ISO8601")
    ga4 = pd.DataFrame({"user_pseudo_id": ["1.1", "1.1", "2.2"], "event_name": ["purchase", "page_view", "purchase"],
                        "event_timestamp": stamps.astype("datetime64[us]").astype("int64"), "value": [10.0, None, 5.0]})
    ga4.to_parquet(tmp_path / "ga4.parquet")
    ga4.to_csv(tmp_path / "ga4.csv", index=False)
    ga4.assign(event_timestamp=range(3)).to_parquet(tmp_path / "counter.parquet")
    for name, unit in (("ga4.parquet", "epoch_us"), ("ga4.csv", "epoch_us"), ("counter.parquet", None)):
        project = tmp_path / name.replace(".", "_")
        result = runner.invoke(app, ["init", str(project), "--events", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        events = yaml.safe_load((project / "configs" / "catalog.yaml").read_text())["sources"]["events"]
        assert events.get("timestamp_format") == unit, (name, events)
        assert events["columns"] == {"customer_id": "user_pseudo_id", "event_type": "event_name",
                                     "ts": "event_timestamp", "amount": "value"}
        monkeypatch.chdir(project)
        result = runner.invoke(app, ["data", "validate", "--as-of", "2026-03-04"])
        assert (result.exit_code == 0) == (unit is not None), result.output
    assert "timestamp_format: epoch_s" in said(result)  # the counter's error names the setting


def test_score_before_any_promotion_names_every_target_without_a_champion(tmp_path, monkeypatch):
    """A new project's first score (init's last step) named only the first target lacking a
    champion; the second came on the next attempt. Both at once, each with how to promote."""
    from pipeline.synthetic import write

    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    write(generate(200, seed=2, end="2026-11-27"), tmp_path / "data")
    project = tmp_path / "shop"
    result = runner.invoke(app, ["init", str(project), "--events", str(tmp_path / "data" / "events.parquet")])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["score", "--as-of", "2026-11-27"])
    assert result.exit_code == 1, result.output
    text = said(result)
    for target in ("purchase", "churn"):
        assert f"dynseg-{target}" in text, text


def test_a_european_csv_gets_its_date_forms_and_decimal_comma_unless_they_are_ambiguous(tmp_path, monkeypatch):
    """A Klaviyo export from a European account: 28/11/2026 14:03 beside bare dates, 1.234,56.
    init names the forms that read every value and the decimal comma, and the project validates
    with the same times and amounts as the ISO twin; when no day passes 12, day-first and
    month-first read alike and init leaves the form to the user, saying so."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    ts = pd.to_datetime(["2026-11-28 14:03", "2026-11-13 09:00", "2026-10-01 00:00", "2026-10-02 17:45"])
    base = pd.DataFrame({"Profile ID": ["a", "b", "a", "b"], "Metric Name": ["Placed Order", "Opened Email",
                         "Placed Order", "Received Email"], "Value": [1234.56, None, 9.5, None]})
    eu = base.assign(Timestamp=[t.strftime("%d/%m/%Y") if t.hour == 0 else t.strftime("%d/%m/%Y %H:%M") for t in ts],
                     Value=["1.234,56", "", "9,50", ""])
    eu.to_csv(tmp_path / "eu.csv", sep=";", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "eu"), "--events", str(tmp_path / "eu.csv")])
    assert result.exit_code == 0, result.output
    events = yaml.safe_load((tmp_path / "eu" / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert events["timestamp_format"] == ["%d/%m/%Y %H:%M", "%d/%m/%Y"] and events["decimal"] == ","
    assert events["delimiter"] == ";"
    from features.engine import connect
    from features.validation import validate
    from pipeline.config import load_config

    cfg = load_config(tmp_path / "eu")
    con = connect()
    report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, ts.max())
    assert report.ok, report.problems
    t = report.typed["events"]
    got = con.sql(f"SELECT {t['ts'].expr} AS ts, {t['amount'].expr} AS amount FROM {report.sources['events'].view}").df()
    assert list(got["ts"]) == list(ts) and got["amount"].tolist()[::2] == [1234.56, 9.5]
    early = base.assign(Timestamp=[f"{m:02d}/0{d}/2026" for m, d in ((1, 2), (3, 4), (5, 6), (7, 8))])
    early.to_csv(tmp_path / "early.csv", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "early"), "--events", str(tmp_path / "early.csv")])
    assert result.exit_code == 0 and "reads as day-first and as month-first dates alike" in said(result)
    events = yaml.safe_load((tmp_path / "early" / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert "timestamp_format" not in events and "decimal" not in events
    # commas that all group thousands (a US export's 1,234) are no decimal comma: they read as such
    us = base.assign(Timestamp=[t.isoformat() for t in ts], Value=["1,234", "", "25", ""])
    us.to_csv(tmp_path / "us.csv", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "us"), "--events", str(tmp_path / "us.csv")])
    assert result.exit_code == 0, result.output
    assert "decimal" not in yaml.safe_load((tmp_path / "us" / "configs" / "catalog.yaml").read_text())["sources"]["events"]


def _validated_events(project_dir, as_of, column: str) -> list[tuple]:
    """The events' ``column`` as a run reads it, from a project init wrote (which must validate)."""
    from features.engine import connect
    from features.validation import validate
    from pipeline.config import load_config

    cfg = load_config(project_dir)
    con = connect()
    report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, as_of)
    assert report.ok, report.problems
    t = report.typed["events"]
    return con.sql(f"SELECT {t[column].expr} FROM {report.sources['events'].view}").fetchall()


def test_iso_rows_beside_day_first_dates_get_their_form_listed_too(tmp_path, monkeypatch):
    """An export that switched forms: a tenth of its rows 2025-01-01 05:22:22, the rest 02/01/2025
    08:54. ISO rows counted against every date form, so init proposed none (and said nothing), and
    the day-first form alone left the ISO rows unread: a source's forms are all it reads."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    ts = pd.Timestamp("2025-01-01") + pd.to_timedelta([i * 1777 for i in range(200)], unit="min")
    text = [t.strftime("%Y-%m-%d %H:%M:%S") if i % 10 == 0 else t.strftime("%d/%m/%Y %H:%M") for i, t in enumerate(ts)]
    text[5] = ts[5].strftime("%Y-%m-%dT%H:%M:%S+01:00")  # an offset too
    text[7] = ts[7].strftime("%Y-%m-%d %H:%M:%S +0100")  # and Shopify's, after a space (init could not name it)
    pd.DataFrame({"customer_id": [f"c{i % 20}" for i in range(200)], "event_type": "order_completed", "ts": text,
                  "amount": 5.0, "event_id": [f"e{i}" for i in range(200)]}).to_csv(tmp_path / "mixed.csv", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "mixed.csv")])
    assert result.exit_code == 0, result.output
    events = yaml.safe_load((tmp_path / "p" / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert events["timestamp_format"] == ["%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S %z",
                                          "%Y-%m-%dT%H:%M:%S%z"], events
    got = _validated_events(tmp_path / "p", pd.Timestamp("2026-01-01"), "ts")
    expected = list(ts.floor("min"))
    expected[5] = ts[5] - pd.Timedelta(hours=1)
    expected[7] = ts[7] - pd.Timedelta(hours=1)
    assert [g[0] for g in got] == expected


def test_epoch_times_beside_decimal_commas_day_first_signups_and_several_exports(tmp_path, monkeypatch):
    """A review's exports: a decimal comma went unseen when the times were epoch numbers (it was
    looked for only beside text dates); the profiles' day-first signups got no form (only the
    events' ts was read); a second --events replaced the first in silence (every purchase lost);
    a glob over two exports of different layouts said nothing to map."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    ts = pd.to_datetime(["2026-11-28 14:03", "2026-11-13 09:00", "2026-10-01 00:00", "2026-10-02 17:45"])
    orders = pd.DataFrame({"user": ["a", "b", "a", "b"], "event": ["Placed Order"] * 4,
                           "timestamp": ts.astype("datetime64[ms]").astype("int64"), "value": ["1.234,56", "3", "9,50", "12"]})
    orders.to_csv(tmp_path / "orders.csv", sep=";", index=False)
    profiles = pd.DataFrame({"user": ["a", "b"], "signup": ["21/08/2026 04:07", "02/03/2026 10:00"]})
    profiles.to_csv(tmp_path / "customers.csv", sep=";", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "shop"), "--events", str(tmp_path / "orders.csv"),
                                 "--customers", str(tmp_path / "customers.csv")])
    assert result.exit_code == 0, result.output
    sources = yaml.safe_load((tmp_path / "shop" / "configs" / "catalog.yaml").read_text())["sources"]
    assert sources["events"]["timestamp_format"] == "epoch_ms" and sources["events"]["decimal"] == ",", sources
    assert sources["customers"]["timestamp_format"] == "%d/%m/%Y %H:%M", sources
    monkeypatch.chdir(tmp_path / "shop")
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-29"])
    assert result.exit_code == 0, result.output

    emails = pd.DataFrame({"recipient": ["a"], "action": ["Opened Email"], "sent_at": ["2026-11-01T09:00:00Z"]})
    emails.to_csv(tmp_path / "email.csv", sep=";", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "two"), "--events", str(tmp_path / "orders.csv"),
                                 "--events", str(tmp_path / "email.csv")])
    assert result.exit_code == 2 and "--events is given 2 times" in said(result), result.output
    assert not (tmp_path / "two").exists()
    (tmp_path / "exports").mkdir()
    for f in ("orders.csv", "email.csv"):
        (tmp_path / "exports" / f).write_text((tmp_path / f).read_text())
    result = runner.invoke(app, ["init", str(tmp_path / "glob"), "--events", str(tmp_path / "exports" / "*.csv")])
    text = said(result)
    assert result.exit_code == 0 and "the 2 files of" in text and "do not share their columns" in text, text
    assert "email.csv lacks 'user', 'event', 'timestamp', 'value'" in text, text


def test_one_name_spelt_several_ways_is_said_to_be_kept_not_deduplicated(tmp_path, monkeypatch):
    """'ORDER PLACED', 'order placed' and ' Order Placed' drew "Several names for purchase ... keep
    one": followed, it lost two thirds of the purchases. A second name of its own still draws it."""
    monkeypatch.delenv("DYNSEG_WORKSPACE", raising=False)
    ts = pd.date_range("2026-10-01", periods=5, freq="D")
    pd.DataFrame({"user": list("abcde"), "ts": ts, "event": ["ORDER PLACED", "order placed", " Order Placed",
                                                             "Order Placed", "Opened Email"]}).to_parquet(tmp_path / "e.parquet")
    result = runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "e.parquet")])
    text = said(result)
    assert result.exit_code == 0, text
    assert "One name spelt several ways (case or spacing): ' Order Placed', 'ORDER PLACED', 'Order Placed', 'order placed'" in text, text
    assert "Several names for" not in text and "' Order Placed'" in text
    roles = (tmp_path / "p" / "configs" / "roles.yaml").read_text()
    assert "keep every spelling mapped" in roles and "keep one" not in roles, roles
    pd.DataFrame({"user": list("ab"), "ts": ts[:2], "event": ["Order Placed", "Placed Order"]}).to_parquet(
        tmp_path / "f.parquet")
    result = runner.invoke(app, ["init", str(tmp_path / "q"), "--events", str(tmp_path / "f.parquet")])
    assert "Several names for purchase" in said(result) and "spelt several ways" not in said(result), said(result)


def test_an_id_column_whose_repeats_are_copies_is_proposed_as_event_id(tmp_path, monkeypatch):
    """An export's `order_id`: not a name init knew for event_id, so an overlap of two exports (the
    same orders twice) counted every order twice. Proposed when every row has one and rows sharing
    one are copies; not when an order's placing and its refund share it."""
    monkeypatch.delenv("DYNSEG_WORKSPACE", raising=False)
    orders = pd.DataFrame({"order_id": ["o1", "o2", "o3"], "user": ["a", "b", "a"], "event": ["Placed Order"] * 3,
                           "ts": pd.date_range("2026-10-01", periods=3, freq="D"), "value": [10.0, 20.0, 5.0]})
    pd.concat([orders, orders.iloc[[1]]]).to_parquet(tmp_path / "overlap.parquet")
    result = runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "overlap.parquet")])
    assert result.exit_code == 0 and "'order_id' is read as event_id" in said(result), said(result)
    events = yaml.safe_load((tmp_path / "p" / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert events["columns"]["event_id"] == "order_id"
    refund = orders.iloc[[0]].assign(event="Refunded Order", ts=pd.Timestamp("2026-10-05"))
    pd.concat([orders, refund]).to_parquet(tmp_path / "shared.parquet")
    result = runner.invoke(app, ["init", str(tmp_path / "q"), "--events", str(tmp_path / "shared.parquet")])
    events = yaml.safe_load((tmp_path / "q" / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert result.exit_code == 0 and "event_id" not in events["columns"], events



def test_a_contract_named_id_column_is_never_proposed_as_event_id(tmp_path, monkeypatch):
    """A first export where each customer has one event: `customer_id` is unique per row, and init
    mapped it as event_id; validation then said the required `customer_id` was missing while
    listing it among the columns found. A column named as a contract column keeps its meaning."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "one.csv").write_text("customer_id,event_type,ts,amount\n"
                                      "c1,order_completed,2026-03-01T00:00:00Z,10\nc2,order_completed,2026-03-15T00:00:00Z,5\n")
    result = runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "one.csv")])
    assert result.exit_code == 0 and "read as event_id" not in said(result), said(result)
    events = yaml.safe_load((tmp_path / "p" / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert "event_id" not in events.get("columns", {}), events
    monkeypatch.chdir(tmp_path / "p")
    checked = runner.invoke(app, ["data", "validate", "--as-of", "2026-03-20"])
    assert "is missing" not in said(checked), said(checked)

def test_a_latin1_csv_is_read_as_latin1_even_when_its_first_accent_comes_late(tmp_path, monkeypatch):
    """Excel's "CSV" on Windows writes Latin-1: init found no encoding to set, and validation
    refused the file. The first byte that is no UTF-8 may come far in (a customer named Müller on
    row 20,000, past any head a sniffer reads); init reads the whole file, sets `encoding: latin-1`,
    and the project validates with the name read right. The same rows as UTF-8 get no setting."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    n = 20_000
    df = pd.DataFrame({"customer_id": [f"c{i % 500}" for i in range(n)], "event_type": "order_completed",
                       "ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(range(n), unit="min"),
                       "amount": 5.0, "event_id": [f"e{i}" for i in range(n)]})
    df.loc[n - 1, "customer_id"] = "müller"
    df.to_csv(tmp_path / "latin.csv", index=False, encoding="latin-1")
    df.to_csv(tmp_path / "utf8.csv", index=False, encoding="utf-8")
    assert b"m\xfcller" in (tmp_path / "latin.csv").read_bytes()[-200:]
    for name, encoding in (("latin", "latin-1"), ("utf8", None)):
        result = runner.invoke(app, ["init", str(tmp_path / name), "--events", str(tmp_path / f"{name}.csv")])
        assert result.exit_code == 0, result.output
        events = yaml.safe_load((tmp_path / name / "configs" / "catalog.yaml").read_text())["sources"]["events"]
        assert events.get("encoding") == encoding
        assert ("müller",) in _validated_events(tmp_path / name, pd.Timestamp("2026-02-01"), "customer_id")


@pytest.mark.parametrize("sep", ["\t", ",", ";"])
def test_a_utf16_csv_gets_its_delimiter(tmp_path, monkeypatch, sep):
    """Excel's "Unicode text" is UTF-16 and tab-separated: init set the encoding but no delimiter,
    so the file read as one column (no mapping proposed, and validation refused it)."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    n = 300
    df = pd.DataFrame({"Customer ID": [f"c{i % 50}" for i in range(n)], "Event": "order_completed",
                       "Time": (pd.Timestamp("2026-01-01") + pd.to_timedelta(range(n), unit="h")).astype(str),
                       "Amount": 5.0})
    df.to_csv(tmp_path / "export.txt", index=False, sep=sep, encoding="utf-16")
    result = runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "export.txt")])
    assert result.exit_code == 0, result.output
    events = yaml.safe_load((tmp_path / "p" / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert events["encoding"] == "utf-16" and events.get("delimiter") == (None if sep == "," else sep), events
    assert events["columns"]["customer_id"] == "Customer ID" and events["columns"]["amount"] == "Amount", events


def test_the_demos_segments_this_data_cannot_have_are_left_out_so_the_first_score_runs(tmp_path, monkeypatch):
    """A shop without bounce or complaint events: the demo's `undeliverable` (bounced OR
    complained) would refuse every score. When the data validates as init wrote the configs, such
    segments are left out, their names taken from suppress_always, and a comment says which and why;
    `segments check` then passes."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    shop = generate(300, seed=6, end="2026-11-27")
    events = shop.events[~shop.events["event_type"].isin(["email_bounced", "spam_complaint"])]
    events.assign(event_type=events["event_type"].map(EXPORT_NAMES)).to_parquet(tmp_path / "events.parquet")
    project = tmp_path / "shop"
    result = runner.invoke(app, ["init", str(project), "--events", str(tmp_path / "events.parquet")])
    assert result.exit_code == 0, result.output
    assert ("Segments of the demo left out (this data has no column they read): undeliverable (bounced, complained); "
            "new_subscribers (days_since_signup)") in said(result)  # no profiles: no signup_at
    text = (project / "configs" / "segments.yaml").read_text()
    assert text.startswith("# `dynseg init` left out these segments of the demo, as this data has no column they "
                           "read:\n#   undeliverable: bounced, complained\n#   new_subscribers: days_since_signup\n")
    doc = yaml.safe_load(text)
    demo = yaml.safe_load((REPO / "configs" / "segments.yaml").read_text())
    assert [s["name"] for s in doc["segments"]] == [s["name"] for s in demo["segments"]
                                                    if s["name"] not in ("undeliverable", "new_subscribers")]
    assert doc["suppress_always"] == [n for n in demo["suppress_always"] if n != "undeliverable"]
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["segments", "check"])
    assert result.exit_code == 0, result.output


def test_a_table_of_a_duckdb_database_is_named_file_colon_table(tmp_path, monkeypatch):
    """A warehouse's DuckDB file: `--events wh.duckdb:analytics.tracks` writes a duckdb source with
    its table, and the project validates; the file alone is refused, saying how to name the table."""
    import duckdb

    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE SCHEMA analytics")
    con.execute("CREATE TABLE analytics.tracks AS SELECT * FROM (VALUES ('u1', 'Order Completed', "
                "TIMESTAMP '2026-03-01 10:00', 12.5), ('u2', 'Product Viewed', TIMESTAMP '2026-03-02 11:00', NULL)) "
                "t(user_id, event, timestamp, revenue)")
    con.close()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "shop", "--events", "wh.duckdb:analytics.tracks"])
    assert result.exit_code == 0, result.output
    events = yaml.safe_load((tmp_path / "shop" / "configs" / "catalog.yaml").read_text())["sources"]["events"]
    assert events == {"format": "duckdb", "path": str(tmp_path / "wh.duckdb"), "table": "analytics.tracks",
                      "columns": {"customer_id": "user_id", "event_type": "event", "ts": "timestamp",
                                  "amount": "revenue"}}
    monkeypatch.chdir(tmp_path / "shop")
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-03-03"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "other", "--events", "wh.duckdb"])
    assert result.exit_code == 2 and "name the table as FILE:TABLE (wh.duckdb:events" in said(result)


def test_the_events_currency_is_set_and_several_currencies_are_named(tmp_path, monkeypatch):
    """A Shopify orders export has a `Currency` column: one code becomes the project's currency
    (explanations say "spent 66 EUR"); several draw a note, since dynseg would add euros and
    dollars as one amount."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    orders = pd.DataFrame({"user": ["a", "b", "a"], "event": ["Placed Order"] * 3, "Currency": ["eur", "EUR", None],
                           "ts": pd.date_range("2026-10-01", periods=3, freq="D"), "value": [10.0, 20.0, 5.0]})
    orders.to_parquet(tmp_path / "one.parquet")
    result = runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "one.parquet")])
    assert result.exit_code == 0 and "Currency EUR, the events' currency column" in said(result), said(result)
    from pipeline.config import load_config

    assert load_config(tmp_path / "p").settings.currency == "EUR"
    orders.assign(Currency=["EUR", "USD", "EUR"]).to_parquet(tmp_path / "mixed.parquet")
    result = runner.invoke(app, ["init", str(tmp_path / "q"), "--events", str(tmp_path / "mixed.parquet")])
    assert result.exit_code == 0, said(result)
    assert ("events: the amounts are in several currencies (column 'Currency': EUR (2), USD (1)): dynseg adds amounts "
            "as they are, so convert them to one currency") in said(result), said(result)
    assert load_config(tmp_path / "q").settings.currency == ""


def test_a_holdout_salt_of_digits_only_stays_text(tmp_path, monkeypatch):
    """One salt in about 2,000 is hex digits only ('4220572348625586'): YAML read it as a number and
    the new project's configuration was refused (a test failed on it once). It is written quoted."""
    import secrets

    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(secrets, "token_hex", lambda n: "4220572348625586")
    pd.DataFrame({"user": ["a"], "event": ["Placed Order"], "ts": pd.to_datetime(["2026-10-01"]),
                  "value": [1.0]}).to_parquet(tmp_path / "e.parquet")
    result = runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "e.parquet")])
    assert result.exit_code == 0, said(result)
    from pipeline.config import load_config

    assert load_config(tmp_path / "p").segments.holdout_salt == "4220572348625586"


def _monthly_invoices(seed: int, id_column: str) -> pd.DataFrame:
    """200 accounts billed on the 1st of each month for two years, invoices of thousands."""
    import numpy as np

    rng = np.random.default_rng(seed)
    months = pd.date_range("2024-12-01", "2026-11-01", freq="MS", tz="UTC")
    rows = [(f"a{i:03d}", t + pd.Timedelta(hours=int(rng.integers(0, 20))), float(rng.gamma(2, 2500)))
            for i in range(200) for t in months if rng.random() < 0.9]
    return pd.DataFrame(rows, columns=[id_column, "ts", "amount"]).assign(event_type="Invoice Paid")


def test_the_vip_threshold_and_freshness_lag_are_fitted_to_the_data(tmp_path, monkeypatch):
    """The demo's `vip: spend_365d >= 300` (its top 5 %) held every account of a B2B shop, and
    `max_lag_days: 3` refused a monthly biller's log mid-month. init sets both from the data, says
    so, and the project validates and keeps its segments checkable."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    events = _monthly_invoices(3, "customer_id")
    events.to_parquet(tmp_path / "events.parquet")
    project = tmp_path / "b2b"
    result = runner.invoke(app, ["init", str(project), "--events", str(tmp_path / "events.parquet")])
    assert result.exit_code == 0, result.output
    segments = yaml.safe_load((project / "configs" / "segments.yaml").read_text())
    vip = next(s for s in segments["segments"] if s["name"] == "vip")
    last = events.ts.max()
    spend = events[events.ts > last - pd.Timedelta(days=365)].groupby("customer_id").amount.sum()
    spend = spend.reindex(events.customer_id.unique(), fill_value=0.0)
    threshold = float(vip["where"].removeprefix("spend_365d >= "))
    assert 0.05 * len(spend) - 3 <= (spend >= threshold).sum() <= 0.05 * len(spend) + 3, (threshold, spend.describe())
    assert threshold == float(f"{spend.quantile(0.95):.2g}")  # two significant figures
    assert "set by dynseg init" in vip["description"] and "Fitted to this data: vip: spend_365d >=" in said(result)
    project_yaml = yaml.safe_load((project / "configs" / "project.yaml").read_text())
    lag = project_yaml["freshness"]["max_lag_days"]
    assert 31 <= lag <= 33, lag  # days with events come a month apart
    assert "freshness.max_lag_days:" in said(result)
    monkeypatch.chdir(project)
    assert runner.invoke(app, ["segments", "check"]).exit_code == 0
    # a shop with events every day keeps the demo's lag
    shop = generate(300, seed=6, end="2026-11-27")
    shop.events.assign(event_type=shop.events["event_type"].map(EXPORT_NAMES)).to_parquet(tmp_path / "daily.parquet")
    daily = tmp_path / "daily"
    result = runner.invoke(app, ["init", str(daily), "--events", str(tmp_path / "daily.parquet")])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((daily / "configs" / "project.yaml").read_text())["freshness"]["max_lag_days"] == 3
    assert "freshness.max_lag_days" not in said(result)


def test_refit_fits_the_demos_figures_once_the_data_validates(tmp_path, monkeypatch):
    """Real exports seldom validate at init (a mapping to fix first), and then the demo's vip rule
    (which held 396 of 3,000 customers of a review's shop) and freshness lag stayed for good: init
    refuses an existing configs/. `init --refit` fits them once the data validates, and only them."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    _monthly_invoices(4, "Kundennummer").to_parquet(tmp_path / "events.parquet")  # an id column init cannot name
    project = tmp_path / "b2b"
    result = runner.invoke(app, ["init", str(project), "--events", str(tmp_path / "events.parquet")])
    assert result.exit_code == 0, result.output
    assert "init --refit` fits them" in said(result) and "Fitted to this data" not in said(result)
    segments = project / "configs" / "segments.yaml"
    assert "spend_365d >= 300\n" in segments.read_text()  # the demo's, unfitted
    refused = runner.invoke(app, ["init", str(project), "--refit"])
    assert refused.exit_code != 0 and "nothing was fitted: the data does not validate yet" in said(refused), said(refused)
    catalog = project / "configs" / "catalog.yaml"
    doc = yaml.safe_load(catalog.read_text())
    doc["sources"]["events"].setdefault("columns", {})["customer_id"] = "Kundennummer"  # the user's fix
    catalog.write_text(yaml.safe_dump(doc, sort_keys=False))
    # a segment of the user's own with a typo in its rule: not the demo's, so not refit's to remove
    # (it was, and called "a segment of the demo"); `segments check` names it
    segments.write_text(segments.read_text() + "  - name: big_spenders_q4\n    description: d\n    owner: o\n"
                        "    kind: value\n    where: spend_356d >= 1000\n")
    monkeypatch.setenv("DYNSEG_PROJECT", str(project))  # found as every command finds it
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "--refit"])
    assert result.exit_code == 0, result.output
    names = [s["name"] for s in yaml.safe_load(segments.read_text())["segments"]]
    assert "big_spenders_q4" in names and "big_spenders_q4" not in said(result)
    assert "undeliverable" not in names and "undeliverable" in said(result)  # the demo's, on a log with no bounces
    vip = next(s for s in yaml.safe_load(segments.read_text())["segments"] if s["name"] == "vip")
    assert vip["where"] != "spend_365d >= 300" and "set by dynseg init" in vip["description"]
    assert "Fitted to this data: vip: spend_365d >=" in said(result) and "freshness.max_lag_days:" in said(result)
    assert 31 <= yaml.safe_load((project / "configs" / "project.yaml").read_text())["freshness"]["max_lag_days"] <= 33
    fitted = segments.read_text()
    again = runner.invoke(app, ["init", str(project), "--refit"])  # only the demo's own values: nothing more to do
    assert again.exit_code == 0 and "Nothing to fit" in said(again) and segments.read_text() == fitted
    assert runner.invoke(app, ["init", str(tmp_path / "none"), "--refit"]).exit_code != 0
    mixed = runner.invoke(app, ["init", str(project), "--refit", "--events", "x.csv"])
    assert mixed.exit_code != 0 and "give no --events" in said(mixed)


def test_an_event_log_init_cannot_read_writes_nothing(tmp_path, monkeypatch):
    """An empty events file gave configs/ with nothing mapped, exit 0, and then init refused to run
    again on the existing configs/ once the file was fixed."""
    for var in ("DYNSEG_PROJECT", "DYNSEG_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "events.csv").write_text("")
    result = runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "events.csv")])
    assert result.exit_code != 0 and "could not be read" in said(result) and "nothing was written" in said(result)
    assert not (tmp_path / "p" / "configs").exists()
    pd.DataFrame({"user_id": ["a"], "event": ["Order Completed"], "timestamp": ["2026-01-01"]}).to_csv(
        tmp_path / "events.csv", index=False)  # fixed: init runs
    assert runner.invoke(app, ["init", str(tmp_path / "p"), "--events", str(tmp_path / "events.csv")]).exit_code == 0
