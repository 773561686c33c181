"""The data contract: what dynseg expects of its input sources.

Three sources: ``events`` (required), ``customers`` and ``identities`` (optional). Each column
has a logical type; the loader accepts any physical type that converts losslessly (an integer
``customer_id`` becomes a string, an ISO-8601 string ``ts`` becomes a timestamp) and reports the
rest. Timestamps are normalised to UTC: naive values are taken as UTC, aware values converted.
"""

from __future__ import annotations

import re
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


#: An export keyed by the email address (Shopify's orders' Email, Klaviyo's Profile Email): a
#: customer_id taken last, only when no id column is there
EMAIL_KEYS = ("email", "profileemail", "emailaddress", "customeremail", "useremail")

#: Names other tools give the contract's columns (Segment, RudderStack, GA4 and Klaviyo exports,
#: Shopify, common warehouse tables), compared lower-case with only letters and digits kept
#: (``userId``, ``user_id`` and ``User ID`` are one). Validation proposes the `columns:` mapping
#: from them when a contract column is missing; a name here is never taken as given.
KNOWN_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "events": {
        "customer_id": ("externaluserid", "userid", "user", "customer", "customerid", "clientid", "contactid",
                        "profileid", "personid", "memberid", "shopperid", "subscriberkey", "distinctid",
                        "userpseudoid",
                        # a B2B shop's customer is the account (last: a log with a user id too is per person)
                        "accountid", "account", "companyid", *EMAIL_KEYS),
        "event_type": ("event", "eventname", "eventtype", "type", "action", "metric", "metricname",
                       "activity", "activitytype"),
        "ts": ("timestamp", "originaltimestamp", "eventtime", "eventtimestamp", "eventts", "occurredat", "time",
               "datetime", "orderedat", "purchasedat", "createdat", "happenedat", "eventdate", "date", "created"),
        "event_id": ("messageid", "id", "uuid", "eventuuid", "insertid"),
        # (Segment's warehouse tables flatten properties as properties_revenue; GA4's export, flattened,
        # ecommerce_purchase_revenue)
        "amount": ("revenue", "value", "total", "ordertotal", "ordervalue", "grandtotal", "eventvalue",
                   "eventvalueinusd", "totalprice", "propertiesrevenue", "propertiestotal", "propertiesvalue",
                   "ecommercepurchaserevenue", "purchaserevenue", "ecommercepurchaserevenueinusd",
                   "purchaserevenueinusd"),
        "category": ("productcategory", "itemcategory", "categoryname", "propertiescategory"),
        "campaign_id": ("campaign", "campaignname", "utmcampaign", "flowid"),
    },
    "customers": {
        "customer_id": ("id", "externalid", "userid", "user", "customer", "clientid", "contactid", "profileid",
                        "klaviyoid", "personid", "memberid", "subscriberkey", "distinctid", "accountid", "account",
                        "companyid", *EMAIL_KEYS),
        "signup_at": ("createdat", "signupdate", "signedupat", "registeredat", "registrationdate", "joinedat",
                      "firstseen", "datecreated", "profilecreatedon", "createdon", "created"),
        "email_consent": ("acceptsmarketing", "acceptsemailmarketing", "emailoptin", "optin", "marketingconsent",
                          "emailsubscribed", "emailmarketingconsent"),
        "consent_updated_at": ("acceptsmarketingupdatedat", "emailmarketingconsentupdatedat",
                               "emailmarketingconsentconsentupdatedat", "emailmarketingconsenttimestamp",
                               "consentdate", "optindate", "consentat"),
    },
    "identities": {
        "customer_id": ("userid", "user", "customer", "customerid", "clientid", "contactid", "profileid", "personid",
                        "memberid", "accountid", "account", "companyid"),
        "id_type": ("type", "identifiertype", "keytype", "idtype"),
        "id_value": ("value", "identifier", "identifiervalue", "keyvalue"),
    },
}


def plain(name: str) -> str:
    """A column name compared as KNOWN_NAMES holds them: lower case, letters and digits only, a
    parenthesised unit left out (``Order Value (EUR)`` is ``ordervalue``)."""
    return "".join(ch for ch in re.sub(r"\(.*?\)", "", name).lower() if ch.isalnum())


# How event names read in other tools' exports (Segment's e-commerce and email specs, GA4's
# recommended events, Klaviyo's metrics, Braze, SFMC, Iterable, snake_case warehouse tables), as
# sets of words of which all must appear; the first role whose pattern matches is the guess.
# Refunds come before purchases ("Order Refunded"), unsubscribes before consent. A wrong guess
# costs more than none (the user is asked to place an unguessed name; a wrong role counts in
# silence), so a name is left unguessed when:
# - it has one of _NOT_DONE's words: an attempt or a step is not the event ("Transaction Failed",
#   "Refund Requested", "Checkout Step Completed"); a wishlist, a draft or a return is no order;
#   the email roles are not another channel's ("Unsubscribed from SMS", Braze's push bounces), nor
#   a soft bounce, a machine open (Apple's privacy proxy) or a cookie banner's consent;
# - it matches one of _NO_GUESS's patterns: one event per item of an order (Klaviyo's "Ordered
#   Product", Braze's per-product purchase), a ticket's later steps, an unsubscribe link's click,
#   leaving one list;
# - it names a consent or an unsubscribe undone ("Opt In Revoked", "Opt Out Reversed");
# - it names a message about a non-email role ("Purchase Confirmation Sent", "Refund Email Sent").
# "Checkout Completed" is not guessed either: a shop sending it and "Order Completed" would count
# each order twice.
_ATTEMPT = frozenset(("failed", "failure", "fail", "error", "declined", "cancelled", "canceled", "cancel",
                      "abandoned", "requested", "request", "started", "start", "initiated", "attempted", "attempt",
                      "pending", "step"))
_OTHER_CHANNEL = frozenset(("sms", "push", "pushnotification", "whatsapp", "text"))
_NOT_DONE = _ATTEMPT | _OTHER_CHANNEL | frozenset((
    "wishlist", "soft", "other", "machine", "cookie", "cookies", "storage", "forwarded", "draft", "return", "exchange",
    "favorite", "favorites", "favourite", "favourites", "compare", "form", "button", "newsletter", "confirmation",
    "receipt", "notification", "points"))
_UNDONE = frozenset(("revoked", "withdrawn", "removed", "denied", "reversed", "expired", "undone", "undo"))
_MESSAGE = frozenset(("email", "mail", "sent", "delivered", "message"))
_EMAIL_ROLES = frozenset(("email_send", "email_open", "email_click", "unsubscribe", "bounce", "complaint",
                          "consent_granted", "consent_withdrawn"))


def _word_sets(*patterns: str) -> tuple[frozenset[str], ...]:
    return tuple(frozenset(p.split()) for p in patterns)


_PER_ITEM = _word_sets("ordered product", "product purchased", "item purchased", "order item", "order line",
                       "line item", "behaviors purchase")
_NO_GUESS = _PER_ITEM + _word_sets("unsubscribe click", "unsubscribe clicked", "unsubscribe link", "unsubscribe page",
                                   "unsubscribed list", "ticket updated", "ticket solved", "ticket closed",
                                   "ticket comment", "ticket reopened")
_ROLE_WORDS: tuple[tuple[str, tuple[frozenset[str], ...]], ...] = tuple(
    (role, _word_sets(*patterns)) for role, patterns in (
        ("refund", ("refund", "refunded", "refunds", "returned")),
        ("unsubscribe", ("unsubscribe", "unsubscribed", "unsubscribes", "un subscribe", "opted out", "opt out",
                         "optout")),
        ("bounce", ("bounce", "bounced", "bounces")),
        ("complaint", ("spam", "spamreport", "complaint", "complained")),
        ("consent_withdrawn", ("consent withdrawn", "consent revoked", "consent removed", "consent denied")),
        ("consent_granted", ("consent granted", "consent given", "consent accepted", "opted in", "opt in", "optin",
                             "subscribed email", "email subscribe")),
        ("email_click", ("email click", "email clicked", "email clicks", "mail clicked", "email link clicked",
                         "emailclick")),
        ("email_open", ("email open", "email opened", "email opens", "mail opened", "emailopen")),
        ("email_send", ("email sent", "email send", "email sends", "email delivered", "email received",
                        "mail sent", "mail delivered", "emailsend")),
        ("add_to_cart", ("add to cart", "added to cart", "cart add", "cart added", "product added",
                         "addtocart", "add cart")),
        ("purchase", ("purchase", "purchased", "purchases", "order completed", "order placed", "placed order",
                      "order created", "order paid", "completed order", "transaction",
                      # a subscription's billing (Stripe's invoice.paid, a renewal)
                      "invoice paid", "subscription renewed", "subscription payment")),
        ("page_view", ("page view", "page viewed", "pageview", "pageviews", "product viewed", "viewed product",
                       "view item", "screen view", "screen viewed", "category viewed", "viewed page")),
        ("support_ticket", ("ticket", "support")),
        ("signup", ("signup", "sign up", "signed up", "register", "registered", "registration",
                    "account created", "created account")),
    ))


def _words(event_name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", event_name)  # OrderCompleted -> Order Completed
    return set(re.findall(r"[a-z]+", spaced.lower()))


def unguessed_because(event_name: str) -> str | None:
    """Why :func:`guess_role` leaves a name that looks like a role's unguessed, when a rule of
    its own does (a per-item event, an attempt, another channel): said beside the name in
    configs/roles.yaml, so that nobody maps it as the role it resembles."""
    words = _words(event_name)
    if any(p <= words for p in _PER_ITEM):
        return "one event per item of an order: as purchase it would count items as orders"
    if {"checkout", "completed"} <= words and "step" not in words:
        return "with an order event beside it, as purchase it would count each order twice"
    if words & _OTHER_CHANNEL:
        return "another channel than email"
    if words & _ATTEMPT:
        return "an attempt or a step, not the event itself"
    return None


#: column names that hold an order's currency (Shopify's `Currency`, `currency_code`, `presentment_currency`)
CURRENCY_COLUMN = re.compile(r"^\$?(?:[a-z]+_)?currency(?:_code)?$", re.IGNORECASE)


#: An order's payment state (Shopify's `Financial Status`, WooCommerce's and Stripe's statuses),
#: by :func:`plain` spelling: a column of these is no event name (see :func:`order_states`)
_ORDER_STATES = frozenset({"paid", "pending", "authorized", "partiallypaid", "partiallyrefunded", "refunded", "voided",
                           "expired", "unpaid", "processing", "onhold", "cancelled", "canceled", "failed"})
ORDER_STATES_FIX = ("build one row per order (a purchase at its creation time, with its total) and one per refund (at "
                    "its own time, with the refunded amount): see 'Mapping your own data' in the README")


def order_states(event_names) -> list[str]:
    """The names among ``event_names`` that are an order's payment state (paid, refunded,
    partially_refunded), when at least two of them are and one is ``paid``, ``partially_refunded``
    or ``partially_paid``: the event_type column then holds each order's current state, not what
    happened. Mapped by their words, ``refunded`` made a refunded order a refund and no purchase,
    and a partial refund counted the order's whole total as refunded."""
    states = [e for e in event_names if plain(e) in _ORDER_STATES]
    marks = {"paid", "partiallyrefunded", "partiallypaid"}
    return states if len(states) >= 2 and any(plain(e) in marks for e in states) else []


def guess_role(event_name: str) -> str | None:
    """The role an event name most likely has by its words, or None: a proposal for a person to
    check before mapping it in configs/roles.yaml, never applied by itself."""
    words = _words(event_name)
    if words & _NOT_DONE or any(p <= words for p in _NO_GUESS):
        return None
    for role, patterns in _ROLE_WORDS:
        if any(p <= words for p in patterns):
            if role in ("consent_granted", "unsubscribe") and words & _UNDONE:
                return None  # "Opt In Revoked" is no grant, "Opt Out Reversed" no unsubscribe
            if role not in _EMAIL_ROLES and words & _MESSAGE:
                return None  # "Refund Email Sent" is a message, not the refund
            return role
    return None
