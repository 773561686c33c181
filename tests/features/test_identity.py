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


def _canonical(project):
    """The canonical views over the project's events, customers and identities files."""
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    customers={"format": "parquet", "path": "data/customers.parquet"},
                    identities={"format": "parquet", "path": "data/ids.parquet"})
    cfg = load_config(project.root)
    con = connect()
    report = validate(con, cfg.source_specs(), cfg.role_of, set(), cfg.project_dir, pd.Timestamp("2027-01-01").to_pydatetime())
    build_canonical(con, report, cfg.role_of)
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
    assert rows == [("b0", None, "team"), ("c0", None, "free")]  # b0 has no row: b1's (smaller than b2)
