"""The contract's aids to mapping a shop's own data: other tools' column names, event-name roles."""

import pytest

from features.contract import CONTRACT, KNOWN_NAMES, ROLES, guess_role, plain, unguessed_because


def test_known_names_are_contract_columns_in_plain_form_each_claimed_once():
    for source, columns in KNOWN_NAMES.items():
        contract = {c.name for c in CONTRACT[source]}
        assert set(columns) <= contract, (source, set(columns) - contract)
        names = [n for ns in columns.values() for n in ns]
        assert all(n == plain(n) for n in names), names
        assert len(names) == len(set(names)), f"{source}: a name proposed for two columns"
        # a contract column's own name is never a known name of another one
        assert not {plain(c) for c in contract} & {n for col, ns in columns.items() for n in ns if plain(col) != n}


@pytest.mark.parametrize("name, role", [
    # Segment's e-commerce and email specs
    ("Order Completed", "purchase"), ("Order Refunded", "refund"), ("Product Viewed", "page_view"),
    ("Product Added", "add_to_cart"), ("Email Delivered", "email_send"), ("Email Opened", "email_open"),
    ("Email Link Clicked", "email_click"), ("Email Bounced", "bounce"), ("Email Marked as Spam", "complaint"),
    ("Unsubscribed", "unsubscribe"), ("Signed Up", "signup"),
    # Klaviyo's metrics
    ("Placed Order", "purchase"), ("Received Email", "email_send"), ("Opened Email", "email_open"),
    ("Clicked Email", "email_click"), ("Viewed Product", "page_view"), ("Added to Cart", "add_to_cart"),
    ("Bounced Email", "bounce"), ("Marked Email as Spam", "complaint"), ("Refunded Order", "refund"),
    # GA4's recommended events and snake_case / CamelCase tables
    ("purchase", "purchase"), ("refund", "refund"), ("page_view", "page_view"), ("view_item", "page_view"),
    ("add_to_cart", "add_to_cart"), ("sign_up", "signup"), ("OrderCompleted", "purchase"),
    ("support_ticket_opened", "support_ticket"), ("consent_withdrawn", "consent_withdrawn"),
    ("marketing_opt_in", "consent_granted"), ("email_unsubscribed", "unsubscribe"),
    # not guessed: ambiguous, or one event per item of an order, or nothing dynseg uses
    ("Link Clicked", None), ("Ordered Product", None), ("Checkout Started", None), ("Order Cancelled", None),
    ("session_start", None), ("Subscribed to List", None),
    # an attempt, a step, a request, a wishlist or another channel is not the event
    ("Transaction Failed", None), ("Refund Requested", None), ("Checkout Step Completed", None),
    ("Checkout Completed", None), ("Product Added to Wishlist", None), ("Unsubscribed from SMS Marketing", None),
    ("Payment Declined", None), ("Push Opened", None), ("Consent Removed", "consent_withdrawn"),
    ("Subscribed to Email Marketing", "consent_granted"), ("Unsubscribed from Email Marketing", "unsubscribe"),
    # consent or an unsubscribe undone; a message about an order; a ticket's later steps; per-item purchases
    ("Opt In Revoked", None), ("optin_revoked", None), ("Opt Out Reversed", None), ("Consent Revoked", "consent_withdrawn"),
    ("Purchase Confirmation Sent", None), ("Refund Email Sent", None), ("Purchase Returned", "refund"),
    ("Support Ticket Closed", None), ("Ticket Solved", None), ("Unsubscribed from List", None),
    ("users.behaviors.Purchase", None), ("Product Purchased", None), ("Order Line Created", None),
    # Braze, SFMC, Iterable, HubSpot/SendGrid names
    ("users.messages.pushnotification.Bounce", None), ("users.messages.email.SoftBounce", None),
    ("users.messages.email.HardBounce", "bounce"), ("users.messages.email.MachineOpen", None),
    ("users.messages.email.Open", "email_open"), ("Cookie Consent Granted", None), ("hostedUnsubscribeClick", None),
    ("emailUnSubscribe", "unsubscribe"), ("emailSubscribe", "consent_granted"), ("SPAMREPORT", "complaint"),
    ("Newsletter Signup", None), ("Draft Order Created", None), ("Product Added to Favorites", None),
    # a subscription's billing (Stripe's invoice.paid); a failed one is no purchase
    ("Invoice Paid", "purchase"), ("invoice.paid", "purchase"), ("Subscription Renewed", "purchase"),
    ("invoice.payment_failed", None), ("Subscription Renewal Failed", None),
])
def test_event_names_are_guessed_by_their_words(name, role):
    assert guess_role(name) == role
    assert role is None or role in ROLES


@pytest.mark.parametrize("name, because", [
    ("Ordered Product", "one event per item"), ("Checkout Completed", "count each order twice"),
    ("Unsubscribed from SMS", "another channel"), ("Transaction Failed", "an attempt or a step"),
    ("Link Clicked", None), ("Order Completed", None),
])
def test_a_name_left_unguessed_on_purpose_says_why(name, because):
    said = unguessed_because(name)
    assert (said is None) if because is None else (because in said)
    assert guess_role(name) is None or because is None
