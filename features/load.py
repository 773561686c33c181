"""Canonical views over validated sources: ``events``, ``customers``, ``identity_map``.

After :func:`build_canonical`, feature code reads only these views, whose columns are exactly the
data contract's (typed, UTC, canonical customer ids, a ``role`` per event). Events whose type is
listed under ``ignore`` are dropped here; exact repeats of an ``event_id`` are dropped here.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from features.contract import CONTRACT
from features.identity import IdentityResolution, identifier_sql, resolve_identities
from features.normalize import SQL_TYPE, blank, ident, literal
from features.validation import ValidationReport, future_ts, placeholder

def _typed_select(report: ValidationReport, name: str) -> str:
    t = report.typed[name]
    cols = []
    for col in CONTRACT[name]:
        expr = t[col.name].expr if col.name in t else f"CAST(NULL AS {SQL_TYPE[col.type]})"
        cols.append(f"{expr} AS {ident(col.name)}")
    contract = {c.name for c in CONTRACT[name]}
    extra = [ident(c) for c in report.sources[name].columns if c not in contract]
    return ", ".join(cols + extra)


def build_canonical(
    con: duckdb.DuckDBPyConnection, report: ValidationReport, role_of: dict[str, str], max_ids_per_identifier: int = 20
) -> IdentityResolution:
    """Create the canonical views; the report must be free of errors."""
    if not report.ok:
        raise ValueError("build_canonical needs a report without errors")
    roles = pd.DataFrame({"event_type": list(role_of), "role": list(role_of.values())}, dtype="string")
    con.register("_roles_df", roles)
    con.execute("CREATE OR REPLACE TABLE event_roles AS SELECT * FROM _roles_df")
    con.unregister("_roles_df")

    if "identities" in report.typed:
        # Most identifiers belong to one id and can merge nothing: only the shared ones leave DuckDB.
        # a missing value written as text (NULL, nan, N/A) is no identifier: it would merge every id
        # that has one into one person (validation warns of such rows)
        # an identifier's spaces around it never matter, nor an email address's case, nor its type's:
        # ' Ann@X.com' (Email) and 'ann@x.com' (email) are one address (they merged nothing, in silence)
        kind, value = identifier_sql("id_type", "id_value")
        con.execute(f"""CREATE OR REPLACE TABLE _links AS SELECT DISTINCT customer_id, {kind} AS id_type,
                               {value} AS id_value
                        FROM (SELECT {_typed_select(report, 'identities')} FROM raw_identities)
                        WHERE customer_id IS NOT NULL AND id_type IS NOT NULL AND id_value IS NOT NULL
                          AND NOT {placeholder('customer_id')} AND NOT {placeholder('id_value')}""")
        linked = con.execute("SELECT count(DISTINCT customer_id) FROM _links").fetchall()[0][0]
        links = con.execute("""SELECT * FROM _links SEMI JOIN (SELECT id_type, id_value FROM _links GROUP BY 1, 2
                               HAVING count(*) > 1) USING (id_type, id_value)""").df()
        con.execute("DROP TABLE _links")
        rank = _known_ids(con, report, links)
        resolution = resolve_identities(links, max_ids_per_identifier, linked_ids=int(linked), rank=rank)
    else:
        resolution = resolve_identities(pd.DataFrame(columns=["customer_id", "id_type", "id_value"]))
    con.register("_map_df", resolution.mapping)
    con.execute("CREATE OR REPLACE TABLE identity_map AS SELECT * FROM _map_df")
    con.unregister("_map_df")

    con.execute("CREATE OR REPLACE TABLE identity_merges AS "
                "SELECT * FROM identity_map WHERE customer_id <> canonical_id")
    # Deduplicating costs a sort of the whole log; do it only when validation saw repeats.
    repeats = any(p.check == "duplicate_event_id" for p in report.problems)
    dedup = "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ts) = 1 OR event_id IS NULL" if repeats else ""
    # Rows without a customer id (anonymous visits) pass validation only under `null_ids: drop`,
    # as a warning: left out here, so no run sees them.
    anonymous = any(p.check == "null_id" and p.source == "events" for p in report.problems)
    # Rows after now (a clock running ahead) likewise, only under `future_events: drop`
    ahead = any(p.check == "future_ts" and p.source == "events" and p.severity == "warning" for p in report.problems)
    left_out = ([blank("customer_id")] if anonymous else []) + (
        [f"coalesce({future_ts(report.typed['events'], report.as_of)}, false)"] if ahead else [])
    known = f"WHERE NOT ({' OR '.join(left_out)})" if left_out else ""
    # Every read of the view pays for its joins, and the feature query reads it several times:
    # with no id merged (the common case) the merge join is left out (at 50M events, 12 % of the
    # feature query's time for a join that changes nothing).
    merged = resolution.merged_ids > 0
    canonical, merges = (("coalesce(m.canonical_id, e.customer_id)", "LEFT JOIN identity_merges m ON m.customer_id = e.customer_id")
                         if merged else ("e.customer_id", ""))
    con.execute(f"""
        CREATE OR REPLACE VIEW events AS
        SELECT {canonical} AS customer_id, e.customer_id AS source_customer_id,
               e.event_type, r.role, e.ts, e.amount, e.category, e.channel, e.campaign_id, e.event_id
        FROM (SELECT {_typed_select(report, 'events')} FROM raw_events {known} {dedup}) e
        JOIN event_roles r USING (event_type)
        {merges}
    """)
    _build_customers(con, report, merged=resolution.merged_customers > 0)
    return resolution


def _known_ids(con: duckdb.DuckDBPyConnection, report: ValidationReport, links: pd.DataFrame) -> dict[str, int]:
    """The linked ids that have a profile (rank 0, see :func:`features.identity.resolve_identities`):
    only the profiles are read, so a person's id does not change as events arrive. When most linked
    ids have no profile, the events are read too, for a warning if most are in neither source: the
    identities likely write ids in another form (``9`` beside ``000009``)."""
    ids = pd.DataFrame({"id": pd.unique(links["customer_id"].astype(str))})
    if ids.empty:
        return {}

    def found_in(source: str) -> set[str]:
        if source not in report.typed:
            return set()
        expr = report.typed[source]["customer_id"].expr
        return {r[0] for r in con.execute(f"SELECT DISTINCT c FROM (SELECT {expr} AS c FROM raw_{source}) "
                                          "WHERE c IN (SELECT id FROM _linked_df)").fetchall()}

    con.register("_linked_df", ids)
    try:
        profiled = found_in("customers")
        unknown = [i for i in ids.id if i not in profiled]
        if len(unknown) * 2 > len(ids):  # (the events read only then: a scan of the log)
            seen = found_in("events")
            unknown = [i for i in unknown if i not in seen]
    finally:
        con.unregister("_linked_df")
    if len(unknown) * 2 > len(ids):
        from features.validation import Problem

        sample = con.execute(f"SELECT {report.typed['events']['customer_id'].expr} FROM raw_events LIMIT 3").fetchall()
        report.problems.append(Problem(
            "identities", "customer_id", "unmatched_identity_ids", "warning", len(unknown),
            f"{len(unknown):,} of the {len(ids):,} ids that share an identifier in identities are an id of neither "
            f"the events nor the customers (e.g. {unknown[0]!r}; the events' ids read like "
            f"{', '.join(repr(r[0]) for r in sample)}): a link between such ids merges no customer the runs score",
            "if the identities write ids in another form, write them as the events do (the same text: 9 is not "
            "000009); ids of people who never came (anonymous devices) need nothing",
            tuple(repr(u) for u in unknown[:3])))
    return {i: 0 for i in profiled}


def has_consent_profiles(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether :func:`build_canonical` made the ``consent_profiles`` view (profiles were merged)."""
    return bool(con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'consent_profiles' "
                            "AND database_name = current_database()").fetchall()[0][0])


def _build_customers(con: duckdb.DuckDBPyConnection, report: ValidationReport, merged: bool = True) -> None:
    con.execute("DROP VIEW IF EXISTS consent_profiles")
    if "customers" not in report.typed:
        con.execute("""
            CREATE OR REPLACE VIEW customers AS
            SELECT DISTINCT customer_id, CAST(NULL AS TIMESTAMP) AS signup_at, CAST(NULL AS BOOLEAN) AS email_consent,
                   CAST(NULL AS TIMESTAMP) AS consent_updated_at
            FROM events
        """)
        return
    if not merged:
        # No ids merged and (validation) one row per customer_id: the typed rows are the profile;
        # the grouping below would cost a hash aggregate on every read of the view.
        con.execute(f"CREATE OR REPLACE VIEW customers AS SELECT {_typed_select(report, 'customers')} FROM raw_customers")
        return
    contract = {c.name for c in CONTRACT["customers"]}
    extra = [c for c in report.sources["customers"].columns if c not in contract]
    # A merged customer's profile rows each hold a consent decision and when it was made: as of a
    # past T the latest one before T decides, not the latest overall (which ``customers`` holds),
    # so the features read the decisions from here (see ``customer_features``). Likewise its
    # attributes as of T come from a row whose profile existed then (signed up before T, or
    # without a signup time): a link to an account opened after T does not lend that account's
    # attributes to the person's past (``_row_id``: the row's own id, before the merge).
    attr_cols = "".join(f", c.{ident(a)}" for a in extra)
    con.execute(f"""
        CREATE OR REPLACE VIEW consent_profiles AS
        SELECT coalesce(m.canonical_id, c.customer_id) AS customer_id, c.customer_id AS _row_id, c.signup_at,
               c.email_consent, c.consent_updated_at{attr_cols}
        FROM (SELECT {_typed_select(report, 'customers')} FROM raw_customers) c
        LEFT JOIN identity_map m ON m.customer_id = c.customer_id
    """)
    # A merged customer keeps the earliest signup, the most recent consent decision, and the
    # attributes of one profile row: its canonical id's own, else (no row of its own) the smallest
    # linked id's. Taken as one struct so that a null stays null: arg_max over each column alone
    # skipped nulls and took another id's value, a different one as the rows' order changed.
    own_row_last = "CASE WHEN c.customer_id = coalesce(m.canonical_id, c.customer_id) THEN 0 ELSE 1 END"
    packed = ", ".join(f"{ident(a)} := c.{ident(a)}" for a in extra)
    attrs = f", arg_min(struct_pack({packed}), ({own_row_last}, c.customer_id)) AS _attrs" if extra else ""
    unpacked = "".join(f", struct_extract(_attrs, {literal(a)}) AS {ident(a)}" for a in extra)
    con.execute(f"""
        CREATE OR REPLACE VIEW customers AS
        SELECT customer_id, signup_at, email_consent, consent_updated_at{unpacked} FROM (
            SELECT coalesce(m.canonical_id, c.customer_id) AS customer_id,
                   min(c.signup_at) AS signup_at,
                   arg_max(c.email_consent, coalesce(c.consent_updated_at, c.signup_at)) AS email_consent,
                   max(c.consent_updated_at) AS consent_updated_at{attrs}
            FROM (SELECT {_typed_select(report, 'customers')} FROM raw_customers) c
            LEFT JOIN identity_map m ON m.customer_id = c.customer_id
            GROUP BY 1)
    """)

