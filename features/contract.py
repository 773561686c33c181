"""The data contract: what dynseg expects of its input sources.

Three sources: ``events`` (required), ``customers`` and ``identities`` (optional). Each column
has a logical type; the loader accepts any physical type that converts losslessly (an integer
``customer_id`` becomes a string, an ISO-8601 string ``ts`` becomes a timestamp) and reports the
rest. Timestamps are normalised to UTC: naive values are taken as UTC, aware values converted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LogicalType = Literal["string", "timestamp", "double", "bool"]


@dataclass(frozen=True)
class Column:
    name: str
    type: LogicalType
    required: bool
    description: str


#: The roles that feature definitions understand. A config maps the shop's own event names to these.
ROLES: tuple[str, ...] = (
    "purchase",
    "refund",
    "email_send",
    "email_open",
    "email_click",
    "page_view",
    "add_to_cart",
    "unsubscribe",
    "bounce",
    "complaint",
    "support_ticket",
    "signup",
    "consent_granted",
    "consent_withdrawn",
)

EVENTS: tuple[Column, ...] = (
    Column("customer_id", "string", True, "who did it; merged to a canonical id through identities"),
    Column("event_type", "string", True, "the shop's own event name, mapped to a role in configs/roles.yaml"),
    Column("ts", "timestamp", True, "when it happened; naive values are UTC, aware values are converted"),
    Column("event_id", "string", False, "unique id; exact repeats are dropped, conflicting repeats refused"),
    Column("amount", "double", False, "revenue for purchases, refunded amount for refunds"),
    Column("category", "string", False, "product category of a purchase, refund or view"),
    Column("channel", "string", False, "email, web, app, store, ..."),
    Column("campaign_id", "string", False, "campaign an email event or attributed order belongs to"),
)

CUSTOMERS: tuple[Column, ...] = (
    Column("customer_id", "string", True, "one row per customer id"),
    Column("signup_at", "timestamp", False, "when the customer signed up"),
    Column("email_consent", "bool", False, "email consent state as last known"),
    Column("consent_updated_at", "timestamp", False, "when that consent state was set"),
)

IDENTITIES: tuple[Column, ...] = (
    Column("customer_id", "string", True, "a customer id as it appears in events/customers"),
    Column("id_type", "string", True, "kind of identifier: email, device, loyalty card, ..."),
    Column("id_value", "string", True, "the identifier; ids sharing (id_type, id_value) are one person"),
)

CONTRACT: dict[str, tuple[Column, ...]] = {
    "events": EVENTS,
    "customers": CUSTOMERS,
    "identities": IDENTITIES,
}
