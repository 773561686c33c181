import pandas as pd
import pytest

from conftest import good_events
from features.engine import connect
from features.identity import resolve_identities
from features.load import build_canonical
from features.validation import validate
from pipeline.config import load_config


def links(rows):
    return pd.DataFrame(rows, columns=["customer_id", "id_type", "id_value"])


class Canonical(dict):
    """The mapping lists ids that share an identifier with another id; any other id is its own."""

    def __missing__(self, key: str) -> str:
        return key


def canonical(res) -> dict[str, str]:
    return Canonical(zip(res.mapping["customer_id"], res.mapping["canonical_id"]))


def test_chain_becomes_one_customer():
    # A and B share a device, B and C share an email; A and C share nothing directly.
    res = resolve_identities(links([
        ("A", "device", "d1"), ("B", "device", "d1"), ("B", "email", "b@x"), ("C", "email", "b@x"),
        ("D", "email", "d@x"),
    ]))
    m = canonical(res)
    assert m["A"] == m["B"] == m["C"] == "A"
    assert m["D"] == "D" and "D" not in set(res.mapping.customer_id)  # shares nothing: nothing to map
    assert res.merged_customers == 1 and res.merged_ids == 2 and res.largest_group == 3
    assert res.linked_ids == 4


@pytest.mark.parametrize("rows", [[], [("A", "email", "a@x"), ("B", "email", "b@x"), ("A", "device", "d1")]])
def test_ids_that_share_nothing_map_to_nothing(rows):
    res = resolve_identities(links(rows))
    assert res.mapping.empty and list(res.mapping) == ["customer_id", "canonical_id"]
    assert res.merged_ids == res.merged_customers == res.largest_group == 0
    assert res.skipped_identifiers.empty and res.linked_ids == len({r[0] for r in rows})
    assert list(res.skipped_identifiers) == ["id_type", "id_value", "customers"]
    assert res.skipped_identifiers["customers"].dtype == "int64"


def test_same_value_different_type_does_not_link():
    m = canonical(resolve_identities(links([("A", "email", "123"), ("B", "device", "123")])))
    assert m["A"] != m["B"]


def test_too_common_identifier_is_skipped_and_reported():
    rows = [(f"c{i}", "email", "test@shop.com") for i in range(5)] + [("c0", "device", "d"), ("c1", "device", "d")]
    res = resolve_identities(links(rows), max_ids_per_identifier=3)
    m = canonical(res)
    assert m["c0"] == m["c1"] and m["c2"] != m["c0"] and m["c3"] != m["c4"]
    assert res.skipped_identifiers.to_dict("records") == [{"id_type": "email", "id_value": "test@shop.com", "customers": 5}]


def _canonical(project, problems: list | None = None):
    """The canonical views over the project's events, customers and identities files;
    ``problems`` receives the report's (validation's, then the merge's)."""
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"},
                    identities={"format": "parquet", "path": "data/ids.parquet"})
    cfg = load_config(project.root)
    con = connect()
    report = validate(con, cfg.source_specs(), cfg.role_of, set(), cfg.project_dir, pd.Timestamp("2027-01-01").to_pydatetime())
    build_canonical(con, report, cfg.role_of)
    if problems is not None:
        problems.extend(report.problems)
    return con


def test_events_and_profiles_are_merged_onto_canonical_ids(project):
    project.write_events(good_events(3))
    links([("c0", "email", "a@x"), ("c2", "email", "a@x")]).to_parquet(project.data / "ids.parquet")
    pd.DataFrame({"customer_id": ["c0", "c1", "c2"],
                  "signup_at": pd.to_datetime(["2026-01-03", "2026-01-01", "2025-06-01"]),
                  "email_consent": [False, True, True],
                  "consent_updated_at": pd.to_datetime(["2026-01-03", "2026-01-01", "2026-02-01"]),
                  "country": ["DE", "FR", "IT"]}).to_parquet(project.data / "customers.parquet")
    con = _canonical(project)
    per_customer = dict(con.execute("SELECT customer_id, count(*) FROM events GROUP BY 1").fetchall())
    assert per_customer == {"c0": 6, "c1": 3}
    traced = con.execute("SELECT DISTINCT source_customer_id FROM events WHERE customer_id = 'c0' ORDER BY 1").fetchall()
    assert traced == [("c0",), ("c2",)]
    row = con.execute("SELECT signup_at, email_consent, country FROM customers WHERE customer_id = 'c0'").fetchone()
    # earliest signup of the group, the latest consent decision, the canonical row's attributes
    assert (str(row[0].date()), row[1], row[2]) == ("2025-06-01", True, "DE")


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]])
def test_a_merged_profile_takes_one_rows_attributes_whatever_the_rows_order(project, order):
    """The canonical id's own row, nulls included (each column's arg_max skipped a null and took
    another id's value, a different one as the rows' order changed); an id group whose canonical
    id has no profile row takes the smallest linked id's row, every attribute from that one row."""
    project.write_events(good_events(3))
    links([("c0", "email", "a@x"), ("c1", "email", "a@x"), ("c2", "email", "a@x"),
           ("b0", "email", "b@x"), ("b1", "email", "b@x"), ("b2", "email", "b@x")]).to_parquet(project.data / "ids.parquet")
    pd.DataFrame({"customer_id": ["c0", "c1", "c2", "b2", "b1"],
                  "country": [None, "DE", "FR", "IT", None], "plan": ["free", "pro", "pro", "pro", "team"]}
                 ).iloc[order].to_parquet(project.data / "customers.parquet")
    con = _canonical(project)
    rows = con.execute("SELECT customer_id, country, plan FROM customers ORDER BY 1").fetchall()
    # b0 has neither a row nor events: the group's canonical id is b1, the smallest id with a profile
    assert rows == [("b1", None, "team"), ("c0", None, "free")]


def test_the_canonical_id_is_one_the_shop_knows():
    """An anonymous device id ('0f3e…', no profile) sorts before 'c…' ids; as the smallest it became
    the person's id in every export, an id the email platform does not know. An id with a profile
    comes first, the smallest of them; without any, the smallest id. Events do not count: a
    person's id would change as a device's first event arrived."""
    rows = [("c5", "device", "d1"), ("0f3e-anon", "device", "d1"), ("c9", "email", "x"), ("c5", "email", "x"),
            ("0aa", "email", "y"), ("1bb", "email", "y"), ("c7", "email", "z"), ("c3", "email", "z")]
    rank = {"c9": 0, "c5": 0, "c7": 0}
    m = canonical(resolve_identities(links(rows), rank=rank))
    assert m["0f3e-anon"] == m["c9"] == "c5"  # the smallest id with a profile, not the anonymous one
    assert m["1bb"] == "0aa"  # no profile: the smallest, as before
    assert m["c3"] == "c7"


def test_identifiers_written_as_missing_values_merge_nobody(project):
    """An identities export with id_value 'NULL' or 'nan' for people without an email merged them
    all into one person, without a word."""
    project.write_events(good_events(4))
    links([("c0", "email", "NULL"), ("c1", "email", "NULL"), ("c2", "email", " nan "), ("c3", "email", "nan"),
           ("c0", "device", "d"), ("c3", "device", "d")]).to_parquet(project.data / "ids.parquet")
    pd.DataFrame({"customer_id": ["c0", "c1", "c2", "c3"]}).to_parquet(project.data / "customers.parquet")
    problems: list = []
    con = _canonical(project, problems)
    assert dict(con.execute("SELECT customer_id, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()) == {
        "c0": 6, "c1": 3, "c2": 3}  # c3 with c0 through the device, nobody through 'NULL' or 'nan'
    said = [(p.check, p.severity, p.count) for p in problems if p.source == "identities"]
    assert said == [("placeholder_id_value", "warning", 4)], said


def test_identities_whose_ids_match_no_customer_are_said(project):
    """Identities holding ids as numbers (9, 10) for events written 000009, 000010 merged nobody
    the runs score, and validation said "canonical customers formed from 2+ ids: 1"."""
    project.write_events(good_events(3).assign(customer_id=lambda d: d.customer_id.str.replace("c", "00000")))
    links([("0", "email", "a@x"), ("1", "email", "a@x"), ("2", "device", "q"), ("1", "device", "q")]
          ).to_parquet(project.data / "ids.parquet")
    pd.DataFrame({"customer_id": ["000000", "000001", "000002"]}).to_parquet(project.data / "customers.parquet")
    problems: list = []
    _canonical(project, problems)
    found = [p for p in problems if p.check == "unmatched_identity_ids"]
    assert len(found) == 1 and found[0].count == 3, problems
    assert "3 of the 3 ids" in found[0].message and "'000000'" in found[0].message, found[0].message


def test_an_email_in_another_case_or_with_spaces_is_the_same_identifier(project):
    """'Ann@X.com' and ' ann@x.com' merged nothing, in silence; other identifiers keep their case
    (a device id 'AbC' is not 'abc') but lose the spaces around them."""
    project.write_events(good_events(4))
    links([("c0", "email", "Ann@X.com"), ("c1", "Email", " ann@x.com "), ("c2", "device", "AbC"),
           ("c3", "device", "abc ")]).to_parquet(project.data / "ids.parquet")
    pd.DataFrame({"customer_id": ["c0", "c1", "c2", "c3"]}).to_parquet(project.data / "customers.parquet")
    con = _canonical(project, [])
    assert dict(con.execute("SELECT customer_id, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()) == {
        "c0": 6, "c2": 3, "c3": 3}  # c1 with c0 through the address; the device ids differ by case
