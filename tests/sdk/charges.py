#!/usr/bin/env python3
"""Scheduled charges driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. Contract A has a setup fee (5,000 at its start) and a platform fee paid by a
   `recurring_schedule` (1,000 DIVIDED_ROUNDED over three months from its start: 333, 333, 334).
   The SCHEDULED invoice at the start carries both: 5,000 + 333 = 5,333 (compared as exact
   Decimals); one SCHEDULED invoice exists per item instant reached by now.
2. Contract B (`scheduled_charges_on_usage_invoices: ALL`) has a charge of 700 at the end of the
   current period and 2 calls at 100: the current usage draft carries the usage (200) and the
   `scheduled` line (700), total 900; there is no SCHEDULED invoice for it.
3. A v2 edit archives B's charge: the draft is back to 200; the edit history shows it.
4. A charge on a USAGE product is a BadRequestError naming the field; nothing is stored.
"""

from __future__ import annotations

import os
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, next_month_start, num, parse_ts, run_script

D = Decimal


def log(msg: str) -> None:
    print(f"[charges] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    metric = client.v1.billable_metrics.create(
        name="Charge calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["chg"]}
    ).data.id
    calls = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    fixed = client.v1.contracts.products.create(name="Fees", type="FIXED").data.id
    card = client.v1.contracts.rate_cards.create(name="Charges").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=calls, rate_type="FLAT", price=100, entitled=True, starting_at=start
    )
    a = client.v1.customers.create(name="Charges A", ingest_aliases=["charges-a"]).data.id
    b = client.v1.customers.create(name="Charges B", ingest_aliases=["charges-b"]).data.id
    three_months = next_month_start(next_month_start(next_month_start(clock.contract_start)))
    contract_a = client.v1.contracts.create(
        customer_id=a,
        rate_card_id=card,
        starting_at=start,
        scheduled_charges=[
            {"product_id": fixed, "name": "Setup", "schedule": {"schedule_items": [{"timestamp": start, "amount": 5000}]}},
            {"product_id": fixed, "name": "Platform", "schedule": {"recurring_schedule": {
                "amount_distribution": "DIVIDED_ROUNDED", "frequency": "MONTHLY", "starting_at": start,
                "ending_before": iso(three_months), "amount": 1000}}},
        ],
    ).data.id
    contract_b = client.v1.contracts.create(
        customer_id=b,
        rate_card_id=card,
        starting_at=start,
        scheduled_charges_on_usage_invoices="ALL",
        scheduled_charges=[
            {"product_id": fixed, "name": "Monthly minimum",
             "schedule": {"schedule_items": [{"timestamp": iso(clock.period_end), "amount": 700}]}},
        ],
    ).data.id
    return {"calls": calls, "fixed": fixed, "a": a, "b": b, "contract_a": contract_a, "contract_b": contract_b}


def scheduled_invoices(client: Metronome, customer: str) -> list:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=customer))["data"]
    return [i for i in page if i.get("type") == "SCHEDULED"]


def check_own_invoices(client: Metronome, clock: Clock, ids: dict) -> None:
    log("contract A: the charges read back; the SCHEDULED invoice at its start is 5,000 + 333")
    typed = client.v2.contracts.retrieve(contract_id=ids["contract_a"], customer_id=ids["a"]).data
    assert [c.name for c in typed.scheduled_charges] == ["Setup", "Platform"], typed
    platform = typed.scheduled_charges[1].schedule.schedule_items
    assert [D(str(i.amount)) for i in platform] == [D(333), D(333), D(334)], platform
    reached = [i for i in platform if i.timestamp <= clock.now]
    invoices = scheduled_invoices(client, ids["a"])
    assert len(invoices) == len(reached), dump(invoices)
    first = [i for i in invoices if parse_ts(i["start_timestamp"]) == clock.contract_start]
    assert len(first) == 1, dump(invoices)
    got = [(l["type"], l["name"], num(l["total"], "total"), l["scheduled_charge_id"]) for l in first[0]["line_items"]]
    expected = [
        ("scheduled", "Setup", D(5000), typed.scheduled_charges[0].id),
        ("scheduled", "Platform", D(333), typed.scheduled_charges[1].id),
    ]
    assert got == expected, f"{got} != {expected}"
    assert num(first[0]["total"], "total") == D(5333), dump(first[0])


def draft_b(client: Metronome, clock: Clock, ids: dict) -> dict:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=ids["b"], status="DRAFT"))["data"]
    found = [
        inv for inv in page
        if inv.get("type") == "USAGE" and parse_ts(inv["start_timestamp"]) == clock.period_start
    ]
    assert len(found) == 1, dump(page)
    return found[0]


def check_consolidated(client: Metronome, clock: Clock, ids: dict) -> None:
    log("contract B: the charge at the period's end rides on the usage draft: 200 + 700")
    client.v1.usage.ingest(
        usage=[{"transaction_id": "chg-1", "customer_id": "charges-b", "event_type": "chg",
                "timestamp": clock.event_ts(4), "properties": {"n": 2}}]
    )
    inv = draft_b(client, clock, ids)
    got = [(l["type"], num(l["total"], "total")) for l in inv["line_items"]]
    assert got == [("usage", D(200)), ("scheduled", D(700))], dump(inv)
    assert num(inv["total"], "total") == D(900), dump(inv)
    assert scheduled_invoices(client, ids["b"]) == [], "a consolidated charge has its own invoice"


def check_archive(client: Metronome, clock: Clock, ids: dict) -> None:
    log("an edit archives B's charge: the draft is back to 200")
    typed = client.v2.contracts.retrieve(contract_id=ids["contract_b"], customer_id=ids["b"]).data
    charge = typed.scheduled_charges[0].id
    client.v2.contracts.edit(
        customer_id=ids["b"], contract_id=ids["contract_b"], archive_scheduled_charges=[{"id": charge}]
    )
    inv = draft_b(client, clock, ids)
    assert num(inv["total"], "total") == D(200), dump(inv)
    history = body_of(
        client.v2.contracts.with_raw_response.get_edit_history(contract_id=ids["contract_b"], customer_id=ids["b"])
    )["data"]
    assert [e.get("archive_scheduled_charges") for e in history] == [[{"id": charge}]], dump(history)


def check_errors(client: Metronome, clock: Clock, ids: dict) -> None:
    log("a charge on a USAGE product is a 400; nothing is stored")
    before = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["a"]))["data"]
    try:
        client.v1.contracts.create(
            customer_id=ids["a"],
            starting_at=iso(clock.contract_start),
            scheduled_charges=[{"product_id": ids["calls"], "schedule": {
                "schedule_items": [{"timestamp": iso(clock.contract_start), "amount": 1}]}}],
        )
    except metronome.BadRequestError as e:
        assert "scheduled_charges[0].product_id" in e.body["message"], e.body
    else:
        raise AssertionError("a charge on a USAGE product was accepted")
    after = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["a"]))["data"]
    assert len(after) == len(before), dump(after)


def main() -> int:
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    check_own_invoices(client, clock, ids)
    check_consolidated(client, clock, ids)
    check_archive(client, clock, ids)
    check_errors(client, clock, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "charges")
