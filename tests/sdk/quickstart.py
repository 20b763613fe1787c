#!/usr/bin/env python3
"""Tally quickstart, driven end to end through Metronome's official Python SDK.

What this proves, against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), using only
`metronome-sdk` 4.12.0 with `base_url` changed (plus one raw `httpx` call for a malformed body):

1. The pricing setup works through the SDK: the seeded USD (cents) pricing unit is listed; a SUM
   metric with group keys and a COUNT metric are created, retrieved and listed; USAGE products with
   pricing/presentation group keys and a quantity conversion are created; a rate card gets a FLAT
   rate and a graduated TIERED rate per pricing group (`rates.add`) and a FLAT rate via
   `rates.add_many`; a customer with an ingest alias and a monthly contract are created; the
   contract reads back through v1 and v2 `retrieve`/`list`.
2. Ingest semantics: events addressed by ingest alias and by customer UUID both count; numeric
   property values sent as strings or JSON numbers are exact; a transaction id sent twice in one
   request and again in a later request counts once (the first one wins); events older than 34
   days or more than 24 h in the future are rejected per event while the rest of the request is
   accepted (body `{"data": {"accepted", "duplicates", "rejected": [...]}}`); a body that is not a
   JSON array is a 400 with a JSON `message` and `x-should-retry: false`; events of another event
   type or without the aggregated property do not leak into the wrong metric.
3. The live DRAFT invoice for the current period carries exactly the hand-computed line items and
   totals, compared as exact `Decimal`s (never floats), in the list and retrieve endpoints, with
   and without `skip_zero_qty_line_items`.
4. Usage sent for an unknown customer id is attributed once that id becomes an ingest alias.
5. Error mapping: 404 -> NotFoundError, 400 -> BadRequestError (SUM metric without
   aggregation_key, non-hour-aligned contract start), 409 -> ConflictError (ingest alias in use).
6. The rate card's product order: `rate_cards.retrieve_rate_schedule` lists the schedule in the
   card's product order (and pages with `next_page`); `rate_cards.product_orders.set` and
   `.update` reorder it, the draft invoice's lines follow (totals unchanged), and bad input is a
   BadRequestError (unknown product, position past the end, empty range) or NotFoundError.

Prices are in cents (pricing unit "USD (cents)"). Expected numbers below are computed by hand.

Through the edge (TALLY_BASE_URL pointing at the Worker, which proxies everything but ingest to
central), usage reaches central only when a shard flushes, a moment after `/v1/ingest` answered.
Set TALLY_AWAIT_INVOICE_S=<seconds> for that run: before each invoice check the script polls the
draft invoice until its total is the expected one, failing after that many seconds (or at once if
the total ever exceeds it: usage only grows, so an overshoot is a double count). Without it
(central's native ingest, durable in usage before it answers) nothing is polled.
"""

from __future__ import annotations

import decimal
import json
import os
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import metronome
from metronome import Metronome

D = Decimal
USD_CENTS_ID = "2714e483-4ff1-48e4-9e25-ac732e8f24f2"
USD_CENTS_NAME = "USD (cents)"
ALIAS = "acme-prod"
LATE_ALIAS = "late-alias"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def pause(seconds: float) -> None:
    """Sleeps `seconds`. Not `time.sleep`: under libfaketime (scripts/test-clock.sh) Python's
    `time.sleep` fails with EINVAL, a condition wait does not."""
    threading.Event().wait(seconds)


def log(msg: str) -> None:
    print(f"[quickstart] {msg}", flush=True)


def body_of(raw) -> dict:
    """Parses a `with_raw_response` result exactly: JSON floats become Decimals."""
    raw.read()
    ctype = raw.http_response.headers.get("content-type", "")
    assert "application/json" in ctype, f"expected a JSON response, got content-type {ctype!r}"
    return json.loads(raw.http_response.text, parse_float=decimal.Decimal)


def num(value, what: str) -> Decimal:
    """An exact number from a parsed body (int or Decimal; never a float, bool or string)."""
    assert isinstance(value, (int, Decimal)) and not isinstance(value, bool), (
        f"{what}: expected a JSON number, got {value!r} ({type(value).__name__})"
    )
    return D(value)


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


def iso(dt: datetime) -> str:
    """RFC 3339, UTC, whole seconds, with Z."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value) -> datetime:
    """An RFC 3339 string (or an SDK-parsed datetime) as an aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    else:
        assert isinstance(value, str), f"expected an RFC 3339 string, got {value!r}"
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert dt.tzinfo is not None, f"timestamp {value!r} has no UTC offset"
    return dt.astimezone(timezone.utc)


def month_start(dt: datetime) -> datetime:
    return dt.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(dt: datetime) -> datetime:
    start = month_start(dt)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def expect_error(exc_type, fn, what: str):
    """Calls `fn`, asserting it raises `exc_type`; returns the exception."""
    try:
        fn()
    except exc_type as e:
        log(f"  ok: {what} -> {type(e).__name__} {e.status_code}: {e.body}")
        return e
    except metronome.APIStatusError as e:
        raise AssertionError(
            f"{what}: expected {exc_type.__name__}, got {type(e).__name__} {e.status_code}: {e.body}"
        ) from e
    raise AssertionError(f"{what}: expected {exc_type.__name__}, but the call succeeded")


def assert_error_body(e: metronome.APIStatusError, what: str) -> None:
    body = e.body
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], (
        f"{what}: error body must be JSON {{\"message\": \"...\"}}, got {body!r}"
    )


# --------------------------------------------------------------------------------------------
# Time layout of the scenario
# --------------------------------------------------------------------------------------------


class Clock:
    """Where the scenario's timestamps fall.

    - contract_start: first of the month of (now - 3 days), 00:00Z (so the contract may also cover
      the previous month's period when `now` is early in a month).
    - period: the monthly period [first of month, first of next month) containing now - 2h.
    - every in-period event timestamp lies in [lo, hi) where lo = max(period start, now - 30h) and
      hi = min(period end, now - 1h); that window always contains now - 2h and is >= 1h wide.
    """

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)
        self.contract_start = month_start(self.now - timedelta(days=3))
        anchor = self.now - timedelta(hours=2)
        self.period_start = month_start(anchor)
        self.period_end = next_month_start(anchor)
        lo = max(self.period_start, self.now - timedelta(hours=30))
        hi = min(self.period_end, self.now - timedelta(hours=1))
        # Whole seconds strictly inside [lo, hi).
        self.lo = (lo + timedelta(seconds=1)).replace(microsecond=0)
        self.width_s = int((hi - self.lo).total_seconds()) - 1
        assert self.width_s >= 60, f"event window too small: {self.lo} .. {hi}"
        assert self.contract_start <= self.period_start

    def event_ts(self, k: int) -> str:
        """The k-th (0..15) in-period event timestamp."""
        assert 0 <= k < 16
        return iso(self.lo + timedelta(seconds=self.width_s * k // 16))

    def too_old_ts(self) -> str:
        return iso(self.now - timedelta(days=40))

    def too_new_ts(self) -> str:
        return iso(self.now + timedelta(days=3))


def llm_event(tx: str, customer: str, ts: str, **props) -> dict:
    return {
        "transaction_id": tx,
        "customer_id": customer,
        "event_type": "llm_request",
        "timestamp": ts,
        "properties": props,
    }


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


def check_credit_types(client: Metronome) -> None:
    log("credit types: USD (cents) is seeded")
    units = {u.id: u.name for u in client.v1.pricing_units.list()}
    assert units.get(USD_CENTS_ID) == USD_CENTS_NAME, f"USD (cents) missing from credit types: {units}"


def create_metrics(client: Metronome) -> tuple[str, str]:
    log("billable metrics: SUM(tokens) grouped by model/user_id, COUNT(llm_request)")
    tokens = client.v1.billable_metrics.create(
        name="Tokens",
        aggregation_type="SUM",
        aggregation_key="tokens",
        event_type_filter={"in_values": ["llm_request"]},
        property_filters=[{"name": "tokens", "exists": True}],
        group_keys=[["model"], ["user_id"]],
    ).data.id
    requests = client.v1.billable_metrics.create(
        name="Requests",
        aggregation_type="COUNT",
        event_type_filter={"in_values": ["llm_request"]},
    ).data.id
    assert tokens != requests

    m = body_of(client.v1.billable_metrics.with_raw_response.retrieve(billable_metric_id=tokens))["data"]
    assert m["id"] == tokens and m["name"] == "Tokens", dump(m)
    assert m["aggregation_type"] == "SUM" and m["aggregation_key"] == "tokens", dump(m)
    assert m["event_type_filter"]["in_values"] == ["llm_request"], dump(m)
    assert [f["name"] for f in m["property_filters"]] == ["tokens"], dump(m)
    assert m["property_filters"][0].get("exists") is True, dump(m)
    assert m["group_keys"] == [["model"], ["user_id"]], dump(m)

    r = client.v1.billable_metrics.retrieve(billable_metric_id=requests).data
    assert r.id == requests and r.name == "Requests" and r.aggregation_type == "COUNT", r

    listed = [m.id for m in client.v1.billable_metrics.list()]
    assert sorted(listed) == sorted([tokens, requests]), f"metrics list: {listed}"
    return tokens, requests


def create_products(client: Metronome, tokens_metric: str, requests_metric: str) -> tuple[str, str]:
    log("products: Tokens (per 1k tokens, priced by model, shown by user), Requests")
    tokens = client.v1.contracts.products.create(
        name="Tokens",
        type="USAGE",
        billable_metric_id=tokens_metric,
        pricing_group_key=["model"],
        presentation_group_key=["user_id"],
        quantity_conversion={"conversion_factor": 1000, "operation": "DIVIDE"},
    ).data.id
    requests = client.v1.contracts.products.create(
        name="Requests",
        type="USAGE",
        billable_metric_id=requests_metric,
    ).data.id

    p = body_of(client.v1.contracts.products.with_raw_response.retrieve(id=tokens))["data"]
    assert p["id"] == tokens and p["type"] == "USAGE", dump(p)
    cur = p["current"]
    assert cur["name"] == "Tokens" and cur["billable_metric_id"] == tokens_metric, dump(p)
    assert cur["pricing_group_key"] == ["model"], dump(p)
    assert cur["presentation_group_key"] == ["user_id"], dump(p)
    conv = cur["quantity_conversion"]
    assert num(conv["conversion_factor"], "conversion_factor") == D(1000), dump(p)
    assert conv["operation"] == "DIVIDE", dump(p)
    return tokens, requests


def create_rate_card(client: Metronome, clock: Clock, tokens_product: str, requests_product: str) -> str:
    log("rate card: Tokens small FLAT 0.5, Tokens large TIERED [10 x100, 8], Requests FLAT 0.1")
    start = iso(clock.contract_start)
    rate_card = client.v1.contracts.rate_cards.create(name="Quickstart").data.id

    raw = client.v1.contracts.rate_cards.rates.with_raw_response.add(
        rate_card_id=rate_card,
        product_id=tokens_product,
        rate_type="FLAT",
        price=0.5,
        pricing_group_values={"model": "small"},
        entitled=True,
        starting_at=start,
    )
    echo = body_of(raw)["data"]
    assert echo["rate_type"] == "FLAT" and num(echo["price"], "price") == D("0.5"), dump(echo)

    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=rate_card,
        product_id=tokens_product,
        rate_type="TIERED",
        tiers=[{"price": 10, "size": 100}, {"price": 8}],
        pricing_group_values={"model": "large"},
        entitled=True,
        starting_at=start,
    )

    added = client.v1.contracts.rate_cards.rates.add_many(
        rate_card_id=rate_card,
        rates=[
            {
                "product_id": requests_product,
                "rate_type": "FLAT",
                "price": 0.1,
                "entitled": True,
                "starting_at": start,
            }
        ],
    )
    assert added.data.id == rate_card, f"addRates must return the rate card id, got {added.data.id}"

    in_effect = [
        (r.product_id, tuple(sorted((r.pricing_group_values or {}).items())))
        for r in client.v1.contracts.rate_cards.rates.list(rate_card_id=rate_card, at=clock.event_ts(8))
    ]
    assert sorted(in_effect) == sorted(
        [
            (tokens_product, (("model", "small"),)),
            (tokens_product, (("model", "large"),)),
            (requests_product, ()),
        ]
    ), f"rates in effect: {in_effect}"
    return rate_card


def create_customer(client: Metronome) -> str:
    log(f"customer Acme with ingest alias {ALIAS!r}; a second customer with the same alias is a 409")
    created = client.v1.customers.create(name="Acme", ingest_aliases=[ALIAS]).data
    assert created.name == "Acme" and list(created.ingest_aliases) == [ALIAS], created
    customer = created.id

    e = expect_error(
        metronome.ConflictError,
        lambda: client.v1.customers.create(name="Acme again", ingest_aliases=[ALIAS]),
        "customer with an ingest alias already in use",
    )
    assert_error_body(e, "409 alias conflict")
    assert e.response.headers.get("x-should-retry") == "false", (
        f"a deterministic 409 must carry x-should-retry: false, got headers {dict(e.response.headers)}"
    )

    got = body_of(client.v1.customers.with_raw_response.retrieve(customer_id=customer))["data"]
    assert got["id"] == customer and got["name"] == "Acme" and got["ingest_aliases"] == [ALIAS], dump(got)
    return customer


def create_contract(client: Metronome, clock: Clock, customer: str, rate_card: str) -> str:
    log(f"contract from {iso(clock.contract_start)}, open-ended, monthly statements")
    contract = client.v1.contracts.create(
        customer_id=customer,
        starting_at=iso(clock.contract_start),
        rate_card_id=rate_card,
        usage_statement_schedule={"frequency": "MONTHLY"},
    ).data.id
    assert contract, "contracts/create returned no id"
    return contract


def check_contract_reads(client: Metronome, clock: Clock, customer: str, contract: str, rate_card: str) -> None:
    log("contract reads: v1/v2 retrieve and list")
    v1 = client.v1.contracts.retrieve(contract_id=contract, customer_id=customer).data
    assert v1.id == contract and v1.customer_id == customer, f"v1 get: {v1}"
    v1_ids = [c.id for c in client.v1.contracts.list(customer_id=customer)]
    assert v1_ids == [contract], f"v1 list: {v1_ids}"

    v2 = client.v2.contracts.retrieve(contract_id=contract, customer_id=customer).data
    assert v2.id == contract and v2.rate_card_id == rate_card, f"v2 get: {v2}"
    assert parse_ts(v2.starting_at) == clock.contract_start, f"v2 starting_at: {v2.starting_at}"
    assert v2.ending_before is None, f"v2 ending_before: {v2.ending_before}"
    v2_list = list(client.v2.contracts.list(customer_id=customer))
    assert [c.id for c in v2_list] == [contract], f"v2 list: {[c.id for c in v2_list]}"
    assert v2_list[0].rate_card_id == rate_card and parse_ts(v2_list[0].starting_at) == clock.contract_start


def ingest_usage(client: Metronome, clock: Clock, customer: str, base_url: str, token: str) -> None:
    """Sends the scenario's usage. Distinct accepted llm_request events for Acme in the period: 5.

    request A (SDK, void response):
      0 qs-small-u1-a     alias  small u1 tokens "120000"   -> Tokens + Requests
      1 qs-small-u1-b     uuid   small u1 tokens "30000"    -> Tokens + Requests
      2 qs-small-u2       alias  small u2 tokens 50000 (JSON number) -> Tokens + Requests
      3 qs-large-u1       alias  large u1 tokens "150500"   -> Tokens + Requests
      4 qs-large-u1       (same event again in the same request) -> duplicate
    request B (raw, body checked):
      0 qs-large-u1       alias  large u1 tokens "999999"   -> duplicate (first one wins)
      1 qs-requests-only  uuid   small u2, no tokens        -> Requests only (exists filter)
      2 qs-page-view      alias  event_type page_view       -> accepted, matches no metric
      3 qs-too-old        now - 40 days                     -> rejected
      4 qs-too-new        now + 3 days                      -> rejected
    request C (httpx): a JSON object instead of an array    -> 400, nothing stored
    """
    log("ingest A: 4 events by alias and by uuid, one sent twice")
    large = llm_event("qs-large-u1", ALIAS, clock.event_ts(4), model="large", user_id="u1", tokens="150500")
    result = client.v1.usage.ingest(
        usage=[
            llm_event("qs-small-u1-a", ALIAS, clock.event_ts(1), model="small", user_id="u1", tokens="120000"),
            llm_event("qs-small-u1-b", customer, clock.event_ts(2), model="small", user_id="u1", tokens="30000"),
            llm_event("qs-small-u2", ALIAS, clock.event_ts(3), model="small", user_id="u2", tokens=50000),
            large,
            dict(large),
        ]
    )
    assert result is None, f"usage.ingest returns None in the SDK, got {result!r}"

    log("ingest B: a repeat, a Requests-only event, a non-metric event, two out-of-window events")
    raw = client.v1.usage.with_raw_response.ingest(
        usage=[
            llm_event("qs-large-u1", ALIAS, clock.event_ts(4), model="large", user_id="u1", tokens="999999"),
            llm_event("qs-requests-only", customer, clock.event_ts(5), model="small", user_id="u2"),
            {
                "transaction_id": "qs-page-view",
                "customer_id": ALIAS,
                "event_type": "page_view",
                "timestamp": clock.event_ts(6),
                "properties": {"model": "small", "user_id": "u1", "tokens": "999999"},
            },
            llm_event("qs-too-old", ALIAS, clock.too_old_ts(), model="small", user_id="u1", tokens="1000000"),
            llm_event("qs-too-new", ALIAS, clock.too_new_ts(), model="small", user_id="u1", tokens="1000000"),
        ]
    )
    assert raw.status_code == 200, f"ingest B status {raw.status_code}"
    summary = body_of(raw)["data"]
    assert summary["accepted"] == 2, f"accepted: {dump(summary)}"
    assert summary["duplicates"] == 1, f"duplicates: {dump(summary)}"
    rejected = summary["rejected"]
    assert [(r["index"], r["transaction_id"]) for r in rejected] == [(3, "qs-too-old"), (4, "qs-too-new")], (
        f"rejected: {dump(summary)}"
    )
    for r in rejected:
        assert isinstance(r["message"], str) and r["message"], f"rejection needs a reason: {dump(r)}"
    log(f"  rejections: {[r['message'] for r in rejected]}")

    log("ingest C: a body that is not a JSON array is a 400")
    bad = llm_event("qs-not-an-array", ALIAS, clock.event_ts(7), model="small", user_id="u1", tokens="1000000")
    resp = httpx.post(
        f"{base_url}/v1/ingest",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        content=json.dumps(bad),
        timeout=30,
    )
    assert resp.status_code == 400, f"non-array ingest: status {resp.status_code} body {resp.text!r}"
    assert "application/json" in resp.headers.get("content-type", ""), dict(resp.headers)
    err = resp.json()
    assert isinstance(err.get("message"), str) and err["message"], f"400 body: {resp.text!r}"
    assert resp.headers.get("x-should-retry") == "false", f"400 headers: {dict(resp.headers)}"


# Expected lines: (product, model, user_id, tier level, quantity, unit_price, total). Cents.
#   Tokens small u1: (120000 + 30000) / 1000 = 150 x 0.5 = 75
#   Tokens small u2:  50000 / 1000           =  50 x 0.5 = 25
#   Tokens large u1:  150500 / 1000 = 150.5  -> tier 1: 100 x 10 = 1000, tier 2: 50.5 x 8 = 404
#   Requests: 5 distinct accepted llm_request events x 0.1 = 0.5
#   total = 75 + 25 + 1000 + 404 + 0.5 = 1504.5
EXPECTED_LINES = [
    ("Tokens", "small", "u1", None, D("150"), D("0.5"), D("75")),
    ("Tokens", "small", "u2", None, D("50"), D("0.5"), D("25")),
    ("Tokens", "large", "u1", 1, D("100"), D("10"), D("1000")),
    ("Tokens", "large", "u1", 2, D("50.5"), D("8"), D("404")),
    ("Requests", None, None, None, D("5"), D("0.1"), D("0.5")),
]
EXPECTED_TOTAL = D("1504.5")

# After "late-alias" joins Acme: its event (small, u3, 10000 tokens) adds
#   Tokens small u3: 10 x 0.5 = 5, and a 6th request: Requests 6 x 0.1 = 0.6
#   total = 75 + 25 + 1000 + 404 + 5 + 0.6 = 1509.6
EXPECTED_LINES_AFTER_ALIAS = [line for line in EXPECTED_LINES if line[0] != "Requests"] + [
    ("Tokens", "small", "u3", None, D("10"), D("0.5"), D("5")),
    ("Requests", None, None, None, D("6"), D("0.1"), D("0.6")),
]
EXPECTED_TOTAL_AFTER_ALIAS = D("1509.6")

EXPECTED_TIERS = {
    1: {"level": 1, "starting_at": "0", "size": "100"},
    2: {"level": 2, "starting_at": "100", "size": None},
}


class Ids:
    def __init__(self) -> None:
        self.customer = ""
        self.contract = ""
        self.rate_card = ""
        self.products: dict[str, str] = {}


def fetch_draft(client: Metronome, clock: Clock, customer: str, skip_zero: bool = False) -> dict:
    """The DRAFT usage invoice whose period starts at the scenario's period start."""
    kwargs = {"skip_zero_qty_line_items": True} if skip_zero else {}
    page = body_of(
        client.v1.customers.invoices.with_raw_response.list(customer_id=customer, status="DRAFT", **kwargs)
    )
    assert page.get("next_page") is None, f"unexpected second page: {page.get('next_page')!r}"
    invoices = page["data"]
    for inv in invoices:
        assert inv["status"] == "DRAFT", f"status=DRAFT filter returned {inv['status']}"
    matching = [inv for inv in invoices if parse_ts(inv["start_timestamp"]) == clock.period_start]
    assert len(matching) == 1, (
        f"expected one DRAFT invoice starting {iso(clock.period_start)}, got "
        f"{[(i['id'], i['start_timestamp']) for i in invoices]}"
    )
    return matching[0]


def line_key(line: dict) -> tuple:
    pricing = line.get("pricing_group_values") or {}
    presentation = line.get("presentation_group_values") or {}
    tier = line.get("tier") or {}
    return (line.get("name"), pricing.get("model"), presentation.get("user_id"), tier.get("level"))


def check_invoice(inv: dict, clock: Clock, ids: Ids, expected_lines: list, expected_total: Decimal) -> None:
    where = f"invoice {inv.get('id')}:\n{dump(inv)}"
    assert inv["type"] == "USAGE" and inv["status"] == "DRAFT", where
    assert inv["customer_id"] == ids.customer and inv["contract_id"] == ids.contract, where
    assert inv["credit_type"]["id"] == USD_CENTS_ID and inv["credit_type"]["name"] == USD_CENTS_NAME, where
    assert parse_ts(inv["start_timestamp"]) == clock.period_start, where
    assert parse_ts(inv["end_timestamp"]) == clock.period_end, where

    lines = inv["line_items"]
    for line in lines:
        assert line["type"] == "usage", f"unexpected line type {line['type']!r}\n{where}"
        assert line["credit_type"]["id"] == USD_CENTS_ID, where
    line_sum = sum((num(line["total"], "line total") for line in lines), D(0))
    assert num(inv["total"], "total") == expected_total, f"total {inv['total']} != {expected_total}\n{where}"
    assert num(inv["subtotal"], "subtotal") == expected_total, f"subtotal {inv['subtotal']}\n{where}"
    assert line_sum == expected_total, f"sum of line totals {line_sum} != {expected_total}\n{where}"

    nonzero = [line for line in lines if line.get("quantity") != 0]
    by_key: dict[tuple, list] = {}
    for line in nonzero:
        by_key.setdefault(line_key(line), []).append(line)
    for key, found in by_key.items():
        assert len(found) == 1, f"{len(found)} lines for {key}\n{where}"
    expected_keys = sorted((e[:4] for e in expected_lines), key=repr)
    assert sorted(by_key, key=repr) == expected_keys, (
        f"non-zero lines {sorted(by_key, key=repr)} != expected {expected_keys}\n{where}"
    )

    for name, model, user, level, quantity, unit_price, total in expected_lines:
        line = by_key[(name, model, user, level)][0]
        what = f"line {name}/{model}/{user}/tier {level}: {dump(line)}"
        assert line["product_id"] == ids.products[name], what
        assert num(line["quantity"], "quantity") == quantity, what
        assert num(line["unit_price"], "unit_price") == unit_price, what
        assert num(line["total"], "total") == total, what
        if model is None:
            assert not line.get("pricing_group_values"), what
            assert not line.get("presentation_group_values"), what
        else:
            assert line["pricing_group_values"] == {"model": model}, what
            assert line["presentation_group_values"] == {"user_id": user}, what
        if level is None:
            assert line.get("tier") is None, what
        else:
            tier = line["tier"]
            want = EXPECTED_TIERS[level]
            assert num(tier["level"], "tier.level") == want["level"], what
            assert tier["starting_at"] == want["starting_at"], what
            assert tier.get("size") == want["size"], what


def await_draft_total(client: Metronome, clock: Clock, customer: str, expected_total: Decimal) -> None:
    """With TALLY_AWAIT_INVOICE_S set, polls the draft until its total is `expected_total`."""
    setting = os.environ.get("TALLY_AWAIT_INVOICE_S", "").strip()
    if not setting:
        return
    deadline = time.monotonic() + int(setting)
    polls = 0
    while True:
        polls += 1
        inv = fetch_draft(client, clock, customer)
        total = num(inv["total"], "total")
        if total == expected_total:
            log(f"  draft total {total} after {polls} poll(s)")
            return
        assert total < expected_total, (
            f"draft total {total} exceeds the expected {expected_total}: usage was counted twice\n{dump(inv)}"
        )
        assert time.monotonic() < deadline, (
            f"draft total still {total} (expected {expected_total}) after {setting} s and {polls} polls\n{dump(inv)}"
        )
        pause(0.1)


def check_draft_invoice(
    client: Metronome, clock: Clock, ids: Ids, expected_lines: list, expected_total: Decimal
) -> None:
    log(f"draft invoice for [{iso(clock.period_start)}, {iso(clock.period_end)}): total {expected_total}")
    await_draft_total(client, clock, ids.customer, expected_total)
    listed = fetch_draft(client, clock, ids.customer)
    check_invoice(listed, clock, ids, expected_lines, expected_total)

    skipped = fetch_draft(client, clock, ids.customer, skip_zero=True)
    assert skipped["id"] == listed["id"], "skip_zero_qty_line_items changed the invoice id"
    for line in skipped["line_items"]:
        assert line.get("quantity") != 0, f"skip_zero_qty_line_items kept a zero line: {dump(line)}"
    check_invoice(skipped, clock, ids, expected_lines, expected_total)

    retrieved = body_of(
        client.v1.customers.invoices.with_raw_response.retrieve(customer_id=ids.customer, invoice_id=listed["id"])
    )["data"]
    assert retrieved["id"] == listed["id"], dump(retrieved)
    check_invoice(retrieved, clock, ids, expected_lines, expected_total)
    assert retrieved["line_items"] == listed["line_items"], (
        f"retrieve and list disagree:\n{dump(retrieved)}\n{dump(listed)}"
    )

    # The typed SDK models parse the same invoice.
    typed = [inv.id for inv in client.v1.customers.invoices.list(customer_id=ids.customer, status="DRAFT")]
    assert listed["id"] in typed, f"typed list: {typed}"


def late_alias(client: Metronome, clock: Clock, ids: Ids) -> None:
    log(f"usage for unknown customer id {LATE_ALIAS!r}, then it becomes an alias of Acme")
    client.v1.usage.ingest(
        usage=[llm_event("qs-late-alias", LATE_ALIAS, clock.event_ts(9), model="small", user_id="u3", tokens="10000")]
    )
    # Not Acme's (yet): the draft is unchanged.
    check_invoice(fetch_draft(client, clock, ids.customer), clock, ids, EXPECTED_LINES, EXPECTED_TOTAL)

    result = client.v1.customers.set_ingest_aliases(customer_id=ids.customer, ingest_aliases=[ALIAS, LATE_ALIAS])
    assert result is None, f"set_ingest_aliases returns None in the SDK, got {result!r}"
    got = body_of(client.v1.customers.with_raw_response.retrieve(customer_id=ids.customer))["data"]
    assert sorted(got["ingest_aliases"]) == sorted([ALIAS, LATE_ALIAS]), dump(got)
    check_draft_invoice(client, clock, ids, EXPECTED_LINES_AFTER_ALIAS, EXPECTED_TOTAL_AFTER_ALIAS)


def line_products(inv: dict) -> list[str]:
    """The products of an invoice's lines in line order, each run of one product once."""
    out: list[str] = []
    for line in inv["line_items"]:
        if not out or out[-1] != line["product_id"]:
            out.append(line["product_id"])
    return out


def check_product_order(client: Metronome, clock: Clock, ids: Ids) -> None:
    log("product order: rate schedule, set and move through the SDK; draft lines follow")
    cards = client.v1.contracts.rate_cards
    tokens, requests = ids.products["Tokens"], ids.products["Requests"]
    start = iso(clock.contract_start)

    sched = cards.retrieve_rate_schedule(rate_card_id=ids.rate_card, starting_at=start)
    got = [(r.product_id, (r.pricing_group_values or {}).get("model")) for r in sched.data]
    # Default order: Tokens (first rated), its models in the order rated; then Requests.
    assert got == [(tokens, "small"), (tokens, "large"), (requests, None)], f"schedule: {got}"
    assert sched.next_page is None, f"next_page: {sched.next_page!r}"
    assert all(parse_ts(r.starting_at) == clock.contract_start and r.ending_before is None for r in sched.data)
    assert num(body_of(cards.with_raw_response.retrieve_rate_schedule(
        rate_card_id=ids.rate_card, starting_at=start))["data"][2]["rate"]["price"], "price") == D("0.1")
    first = cards.retrieve_rate_schedule(rate_card_id=ids.rate_card, starting_at=start, limit=2)
    assert len(first.data) == 2 and first.next_page, f"first page: {first}"
    rest = cards.retrieve_rate_schedule(
        rate_card_id=ids.rate_card, starting_at=start, limit=2, next_page=first.next_page
    )
    assert [r.product_id for r in rest.data] == [requests] and rest.next_page is None, f"second page: {rest}"
    assert line_products(fetch_draft(client, clock, ids.customer)) == [tokens, requests]

    done = cards.product_orders.set(rate_card_id=ids.rate_card, product_order=[requests])
    assert done.data.id == ids.rate_card, f"set returns the card id, got {done.data.id}"
    inv = fetch_draft(client, clock, ids.customer)
    assert line_products(inv) == [requests, tokens], dump(inv)
    check_invoice(inv, clock, ids, EXPECTED_LINES, EXPECTED_TOTAL)
    sched = cards.retrieve_rate_schedule(rate_card_id=ids.rate_card, starting_at=start)
    assert [r.product_id for r in sched.data] == [requests, tokens, tokens], f"schedule: {sched}"

    done = cards.product_orders.update(
        rate_card_id=ids.rate_card, product_moves=[{"product_id": tokens, "position": 0}]
    )
    assert done.data.id == ids.rate_card, f"update returns the card id, got {done.data.id}"
    inv = fetch_draft(client, clock, ids.customer)
    assert line_products(inv) == [tokens, requests], dump(inv)
    check_invoice(inv, clock, ids, EXPECTED_LINES, EXPECTED_TOTAL)

    unknown = str(uuid.uuid4())
    for what, call in [
        ("set with an unknown product",
         lambda: cards.product_orders.set(rate_card_id=ids.rate_card, product_order=[unknown])),
        ("move past the end",
         lambda: cards.product_orders.update(
             rate_card_id=ids.rate_card, product_moves=[{"product_id": requests, "position": 2}])),
        ("schedule with an empty range",
         lambda: cards.retrieve_rate_schedule(rate_card_id=ids.rate_card, starting_at=start, ending_before=start)),
    ]:
        assert_error_body(expect_error(metronome.BadRequestError, call, what), what)
    e = expect_error(
        metronome.NotFoundError,
        lambda: cards.product_orders.set(rate_card_id=unknown, product_order=[]),
        "set the order of an unknown card",
    )
    assert_error_body(e, "404 unknown card")
    assert line_products(fetch_draft(client, clock, ids.customer)) == [tokens, requests]


def check_errors(client: Metronome, clock: Clock, ids: Ids) -> None:
    log("error mapping: 404, 400s")
    e = expect_error(
        metronome.NotFoundError,
        lambda: client.v1.customers.retrieve(customer_id=str(uuid.uuid4())),
        "retrieve an unknown customer",
    )
    assert_error_body(e, "404 unknown customer")

    e = expect_error(
        metronome.BadRequestError,
        lambda: client.v1.billable_metrics.create(
            name="Broken", aggregation_type="SUM", event_type_filter={"in_values": ["llm_request"]}
        ),
        "SUM metric without aggregation_key",
    )
    assert_error_body(e, "400 metric")

    e = expect_error(
        metronome.BadRequestError,
        lambda: client.v1.contracts.create(
            customer_id=ids.customer,
            starting_at=iso(clock.contract_start + timedelta(minutes=30)),
            rate_card_id=ids.rate_card,
        ),
        "contract starting off an hour boundary",
    )
    assert_error_body(e, "400 contract")

    v1_ids = [c.id for c in client.v1.contracts.list(customer_id=ids.customer)]
    assert v1_ids == [ids.contract], f"a rejected contract must not be stored: {v1_ids}"


# --------------------------------------------------------------------------------------------


def main() -> int:
    base_url = os.environ["TALLY_BASE_URL"].rstrip("/")
    token = os.environ["TALLY_TOKEN"]
    client = Metronome(bearer_token=token, base_url=base_url, max_retries=0)
    clock = Clock()
    log(
        f"server {base_url}; now {iso(clock.now)}; contract start {iso(clock.contract_start)}; "
        f"period [{iso(clock.period_start)}, {iso(clock.period_end)}); "
        f"events in [{iso(clock.lo)}, +{clock.width_s}s)"
    )

    ids = Ids()
    check_credit_types(client)
    tokens_metric, requests_metric = create_metrics(client)
    tokens_product, requests_product = create_products(client, tokens_metric, requests_metric)
    ids.products = {"Tokens": tokens_product, "Requests": requests_product}
    ids.rate_card = create_rate_card(client, clock, tokens_product, requests_product)
    ids.customer = create_customer(client)
    ids.contract = create_contract(client, clock, ids.customer, ids.rate_card)
    check_contract_reads(client, clock, ids.customer, ids.contract, ids.rate_card)
    ingest_usage(client, clock, ids.customer, base_url, token)
    check_draft_invoice(client, clock, ids, EXPECTED_LINES, EXPECTED_TOTAL)
    check_product_order(client, clock, ids)
    late_alias(client, clock, ids)
    check_errors(client, clock, ids)
    log("PASS")
    return 0


def run_script(main, name: str) -> None:
    """Runs a script's `main` and exits with its status; a failed assertion or an unexpected API
    error is printed (with the request) and exits 1."""
    try:
        sys.exit(main())
    except AssertionError as e:
        traceback.print_exc()
        print(f"[{name}] FAIL: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except metronome.APIStatusError as e:
        traceback.print_exc()
        print(
            f"[{name}] FAIL: unexpected {type(e).__name__} {e.status_code} from "
            f"{e.request.method} {e.request.url}: {e.body}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    run_script(main, "quickstart")
