"""Identity resolution: customer ids that share an identifier are one person.

Ids and identifiers form a bipartite graph; each connected component is one canonical customer
(so chains A–B–C merge even when A and C share nothing). The canonical id is the smallest id in
the component among those with a profile (the customers source), else of all: stable when
unrelated data changes (events arriving change no id), and an id the shop knows (an anonymous
device id or a GA4 pseudo id, which sort before ``c…`` ids, is exported only when the person has no
profile at all). An identifier shared by very many ids
(a shop's test address, a kiosk device) would glue strangers together: those are skipped and
reported instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def identifier_sql(id_type: str, id_value: str) -> tuple[str, str]:
    """SQL for an identity link's (type, value) as ids are matched on them: the type in lower case,
    the value without the spaces around it, and an email address (a type containing ``mail``) in
    lower case too (' Ann@X.com' is 'ann@x.com'); other values keep their case (device ids).
    Resolution (:func:`features.load.build_canonical`) and validation's checks use it alike."""
    kind = f"lower(trim({id_type}))"
    return kind, f"CASE WHEN contains({kind}, 'mail') THEN lower(trim({id_value})) ELSE trim({id_value}) END"


@dataclass(frozen=True)
class IdentityResolution:
    mapping: pd.DataFrame  # customer_id -> canonical_id, one row per id that shares an identifier with another
    skipped_identifiers: pd.DataFrame  # id_type, id_value, customers: too common to trust
    linked_ids: int = 0  # distinct ids that appear in identities

    @property
    def merged_customers(self) -> int:
        """Canonical customers formed from two or more ids."""
        sizes = self.mapping.groupby("canonical_id").size()
        return int((sizes > 1).sum())

    @property
    def merged_ids(self) -> int:
        """Ids that were folded into another id."""
        return int((self.mapping["customer_id"] != self.mapping["canonical_id"]).sum())

    @property
    def largest_group(self) -> int:
        return int(self.mapping.groupby("canonical_id").size().max()) if len(self.mapping) else 0


def resolve_identities(links: pd.DataFrame, max_ids_per_identifier: int = 20, linked_ids: int | None = None,
                       rank: dict[str, int] | None = None) -> IdentityResolution:
    """Merge ids linked by shared (id_type, id_value) pairs into canonical customers.

    Only identifiers shared by two or more ids can merge anything; a caller with many links may pass
    just those (as :func:`features.load.build_canonical` does) and the count of all linked ids.
    ``rank``: an id's preference as the canonical id (0: has a profile; an id not in it: 1),
    before the smallest id.
    """
    links = links.dropna(subset=["customer_id", "id_type", "id_value"]).drop_duplicates()
    if linked_ids is None:
        linked_ids = int(links["customer_id"].nunique())
    key = links["id_type"].astype(str) + "\x1f" + links["id_value"].astype(str)
    shared = key.map(key.value_counts()) > 1  # an identifier of one id merges nothing
    links, key = links[shared], key[shared]
    if links.empty:  # nothing shared, nothing to merge: no graph (scipy alone takes 0.3 s to import)
        text = pd.Series(dtype=object)
        return IdentityResolution(mapping=pd.DataFrame({"customer_id": text, "canonical_id": text}),
                                  skipped_identifiers=pd.DataFrame({"id_type": text, "id_value": text,
                                                                    "customers": pd.Series(dtype="int64")}),
                                  linked_ids=linked_ids)
    per_key = links.groupby(key)["customer_id"].nunique()
    too_common = per_key[per_key > max_ids_per_identifier]
    skipped = (
        links[key.isin(too_common.index)]
        .groupby(["id_type", "id_value"], as_index=False)["customer_id"].nunique()
        .rename(columns={"customer_id": "customers"})
    )
    kept = ~key.isin(too_common.index)
    cust_codes, customers = pd.factorize(links["customer_id"].astype(str), sort=True)
    key_codes, _ = pd.factorize(key)
    n_c = len(customers)
    n = n_c + int(key_codes.max(initial=-1)) + 1
    rows = cust_codes[kept.to_numpy()]
    cols = n_c + key_codes[kept.to_numpy()]
    from scipy.sparse import coo_matrix  # here, not at import: scipy costs the CLI half a second to load
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    customer_labels = labels[:n_c]
    # Customers are sorted, so the first id per component by (rank, position) is the canonical id.
    order = np.arange(n_c)
    if rank:
        order = pd.Series(customers).map(rank).fillna(1).to_numpy(dtype=np.int64) * n_c + order
    first = pd.Series(order).groupby(customer_labels).transform("min").to_numpy() % n_c
    mapping = pd.DataFrame({"customer_id": customers.to_numpy(), "canonical_id": customers.to_numpy()[first]})
    return IdentityResolution(mapping=mapping, skipped_identifiers=skipped, linked_ids=linked_ids)
