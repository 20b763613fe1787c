#!/usr/bin/env python3
"""Custom pricing units driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. `pricing_units.create` makes "Compute credits" (and a spare, archived at once); the list
   shows USD (cents) and Compute credits, not the archived one.
2. A rate card in USD (cents) converts Compute credits at `fiat_per_custom_credit` 33.3333 cents
   per credit (read back as the string "33.3333"; adding it again changes nothing, changing it
   is a BadRequestError). Inference is priced FLAT 0.4 Compute credits a call, Storage FLAT 9
   cents a GB.
3. A contract with a credit of 50 Compute credits; 120 + 80 = 200 calls and 4 GB in the current
   period. The draft, by hand:
   - Inference: 200 × 0.4 = 80 credits; the credit covers 50 / 0.4 = 125 calls (total 50,
     `commit_id` the credit), "Launch grant applied" −50 credits, the other 75 calls owe 30;
   - Storage: 4 × 9 = 36 cents;
   - `cpu_conversion` (USD cents, named "Compute credits"): quantity 30, unit_price 33.3333,
     total 30 × 33.3333 = 999.999;
   - subtotal = total = 36 + 999.999 = 1035.999 cents, in USD (cents).
   Every line's type, credit type, quantity, unit price and total is compared as an exact Decimal.
4. A rate in Compute credits on a card without the conversion, and a credit in the archived unit,
   are BadRequestErrors naming the field; nothing is stored.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import USD_CENTS_ID, Clock, body_of, dump, expect_error, fetch_draft, iso, num, run_script

D = Decimal
UNIT = "Compute credits"


def log(msg: str) -> None:
    print(f"[custom_units] {msg}", flush=True)


def units(client: Metronome) -> dict[str, tuple[str, bool]]:
    return {u.id: (u.name, u.is_currency) for u in client.v1.pricing_units.list()}


def setup(client: Metronome, clock: Clock) -> dict:
    log("pricing units: Compute credits created, a spare archived; the list shows USD and the unit")
    unit = client.v1.pricing_units.create(name=UNIT).data.id
    spare = client.v1.pricing_units.create(name="Spare units").data.id
    client.v1.pricing_units.archive(id=spare)
    listed = units(client)
    assert listed == {USD_CENTS_ID: ("USD (cents)", True), unit: (UNIT, False)}, listed
    expect_error(metronome.ConflictError, lambda: client.v1.pricing_units.create(name=UNIT), "a taken name")

    start = iso(clock.contract_start)
    metric = client.v1.billable_metrics.create(
        name="CU calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["cu_call"]}
    ).data.id
    gb = client.v1.billable_metrics.create(
        name="CU storage", aggregation_type="SUM", aggregation_key="gb", event_type_filter={"in_values": ["cu_gb"]}
    ).data.id
    inference = client.v1.contracts.products.create(name="Inference", type="USAGE", billable_metric_id=metric).data.id
    storage = client.v1.contracts.products.create(name="Storage", type="USAGE", billable_metric_id=gb).data.id
    grants = client.v1.contracts.products.create(name="Grants", type="FIXED").data.id

    log("rate card: converts Compute credits at 33.3333 cents; Inference 0.4 credits, Storage 9 cents")
    conversion = {"custom_credit_type_id": unit, "fiat_per_custom_credit": 33.3333}
    card = client.v1.contracts.rate_cards.create(name="Credits", credit_type_conversions=[conversion]).data.id
    typed = client.v1.contracts.rate_cards.retrieve(id=card).data
    got = [(c.custom_credit_type.id, c.custom_credit_type.name, c.fiat_per_custom_credit)
           for c in typed.credit_type_conversions]
    assert got == [(unit, UNIT, "33.3333")], got
    client.v1.contracts.rate_cards.update(rate_card_id=card, add_credit_type_conversions=[conversion])
    changed = {"custom_credit_type_id": unit, "fiat_per_custom_credit": 40}
    e = expect_error(
        metronome.BadRequestError,
        lambda: client.v1.contracts.rate_cards.update(rate_card_id=card, add_credit_type_conversions=[changed]),
        "a changed conversion",
    )
    assert "cannot be changed" in e.body["message"], e.body
    again = client.v1.contracts.rate_cards.retrieve(id=card).data.credit_type_conversions
    assert [c.fiat_per_custom_credit for c in again] == ["33.3333"], again
    added = client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=inference, rate_type="FLAT", price=0.4, entitled=True,
        starting_at=start, credit_type_id=unit,
    ).data
    assert (added.credit_type.id, added.credit_type.name) == (unit, UNIT), added
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=storage, rate_type="FLAT", price=9, entitled=True, starting_at=start
    )

    customer = client.v1.customers.create(name="Credits customer", ingest_aliases=["cu-acme"]).data.id
    year = iso(clock.contract_start + timedelta(days=366))
    contract = client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        starting_at=start,
        credits=[{
            "product_id": grants, "name": "Launch grant", "priority": 1,
            "access_schedule": {"credit_type_id": unit, "schedule_items": [
                {"amount": 50, "starting_at": start, "ending_before": year}]},
        }],
    ).data.id
    return {"unit": unit, "spare": spare, "inference": inference, "storage": storage, "grants": grants,
            "card": card, "customer": customer, "contract": contract, "start": start, "year": year}


def check_draft(client: Metronome, clock: Clock, ids: dict) -> None:
    log("usage: 200 calls, 4 GB; the draft draws the credit and converts the rest exactly")
    client.v1.usage.ingest(usage=[
        {"transaction_id": "cu-1", "customer_id": "cu-acme", "event_type": "cu_call",
         "timestamp": clock.event_ts(2), "properties": {"n": 120}},
        {"transaction_id": "cu-2", "customer_id": "cu-acme", "event_type": "cu_call",
         "timestamp": clock.event_ts(9), "properties": {"n": "80"}},
        {"transaction_id": "cu-3", "customer_id": "cu-acme", "event_type": "cu_gb",
         "timestamp": clock.event_ts(5), "properties": {"gb": 4}},
    ])
    inv = fetch_draft(client, clock, ids["customer"])
    credit = client.v1.contracts.retrieve(contract_id=ids["contract"], customer_id=ids["customer"]).data
    credit_id = credit.current.credits[0].id
    usd, unit = USD_CENTS_ID, ids["unit"]

    def line(l: dict) -> tuple:
        amount = lambda f: num(l[f], f) if f in l else None
        owner = l.get("commit_id") or (l.get("applied_commit_or_credit") or {}).get("id")
        return (l["type"], l["name"], l["credit_type"]["id"], amount("quantity"), amount("unit_price"),
                num(l["total"], "total"), owner)

    got = [line(l) for l in inv["line_items"]]
    expected = [
        ("usage", "Inference", unit, D(125), D("0.4"), D(50), credit_id),
        ("applied_commit_or_credit", "Launch grant applied", unit, None, None, D(-50), credit_id),
        ("usage", "Inference", unit, D(75), D("0.4"), D(30), None),
        ("usage", "Storage", usd, D(4), D(9), D(36), None),
        ("cpu_conversion", UNIT, usd, D(30), D("33.3333"), D("999.999"), None),
    ]
    assert got == expected, f"{got} != {expected}\n{dump(inv)}"
    names = [l["credit_type"]["name"] for l in inv["line_items"]]
    assert names == [UNIT, UNIT, UNIT, "USD (cents)", "USD (cents)"], names
    assert "product_id" not in inv["line_items"][-1], dump(inv["line_items"][-1])
    assert inv["credit_type"] == {"id": usd, "name": "USD (cents)"}, dump(inv)
    assert num(inv["subtotal"], "subtotal") == D("1035.999"), dump(inv)
    assert num(inv["total"], "total") == D("1035.999"), dump(inv)
    # The credit's balance is in Compute credits: 50, all drawn by the draft.
    for mode, want in (("FINALIZED", D(50)), ("FINALIZED_AND_DRAFT", D(0))):
        got_balance = body_of(client.v1.contracts.with_raw_response.get_net_balance(
            customer_id=ids["customer"], credit_type_id=unit, invoice_inclusion_mode=mode))["data"]["balance"]
        assert num(got_balance, "balance") == want, (mode, got_balance)


def check_errors(client: Metronome, clock: Clock, ids: dict) -> None:
    log("refusals: a rate in a unit the card does not convert, a credit in an archived unit")
    plain = client.v1.contracts.rate_cards.create(name="No conversions").data.id
    e = expect_error(
        metronome.BadRequestError,
        lambda: client.v1.contracts.rate_cards.rates.add(
            rate_card_id=plain, product_id=ids["inference"], rate_type="FLAT", price=1, entitled=True,
            starting_at=ids["start"], credit_type_id=ids["unit"]),
        "a rate in an unconverted unit",
    )
    assert "credit_type_id" in e.body["message"], e.body
    rates = body_of(client.v1.contracts.rate_cards.with_raw_response.retrieve_rate_schedule(
        rate_card_id=plain, starting_at=ids["start"]))["data"]
    assert rates == [], dump(rates)
    before = len(body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["customer"]))["data"])
    e = expect_error(
        metronome.BadRequestError,
        lambda: client.v1.contracts.create(
            customer_id=ids["customer"], rate_card_id=ids["card"], starting_at=ids["start"],
            credits=[{"product_id": ids["grants"], "access_schedule": {"credit_type_id": ids["spare"],
                      "schedule_items": [{"amount": 5, "starting_at": ids["start"], "ending_before": ids["year"]}]}}]),
        "a credit in an archived unit",
    )
    assert "credits[0].access_schedule.credit_type_id" in e.body["message"], e.body
    after = len(body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["customer"]))["data"])
    assert after == before, (before, after)


def main() -> int:
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    check_draft(client, clock, ids)
    check_errors(client, clock, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "custom_units")
