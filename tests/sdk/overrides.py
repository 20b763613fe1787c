#!/usr/bin/env python3
"""Contract overrides, driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. A card prices Calls (tag `ai`) FLAT 100 and Egress FLAT 10. One customer has two contracts:
   - L (LOWEST_MULTIPLIER): Calls MULTIPLIER 0.8 by product id and 0.9 by tag (only the lowest
     applies), Egress OVERWRITE FLAT 70;
   - E (EXPLICIT): Calls TIERED [{0.5, size 100}, {1}] priority 1, Egress MULTIPLIER 0.333333
     priority 2.
2. Both read back through v1 and v2 `retrieve` with an id per override.
3. Usage: 150 calls, 3 GB. The draft invoices (compared as exact Decimals, never floats):
   L: 150 x 80 = 12,000, plus 3 x 70 = 210 -> 12,210;
   E: 100 x 50 + 50 x 100 = 10,000, plus 3 x (10 x 0.333333 = 3.33333) = 9.99999
      -> 10,009.99999.
4. `contracts.retrieve_rate_schedule` for L lists list and override rates.
5. A negative multiplier is a BadRequestError naming the field.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, num, parse_ts, pause, run_script

D = Decimal


def log(msg: str) -> None:
    print(f"[overrides] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    calls_metric = client.v1.billable_metrics.create(
        name="Calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["call"]}
    ).data.id
    egress_metric = client.v1.billable_metrics.create(
        name="Egress", aggregation_type="SUM", aggregation_key="gb", event_type_filter={"in_values": ["egress"]}
    ).data.id
    calls = client.v1.contracts.products.create(
        name="Calls", type="USAGE", billable_metric_id=calls_metric, tags=["ai"]
    ).data.id
    egress = client.v1.contracts.products.create(name="Egress", type="USAGE", billable_metric_id=egress_metric).data.id
    card = client.v1.contracts.rate_cards.create(name="Overrides").data.id
    for product, price in [(calls, 100), (egress, 10)]:
        client.v1.contracts.rate_cards.rates.add(
            rate_card_id=card, product_id=product, rate_type="FLAT", price=price, entitled=True, starting_at=start
        )
    customer = client.v1.customers.create(name="Overrides", ingest_aliases=["overrides-co"]).data.id
    lowest = client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        starting_at=start,
        overrides=[
            {"starting_at": start, "product_id": calls, "type": "MULTIPLIER", "multiplier": 0.8},
            {"starting_at": start, "applicable_product_tags": ["ai"], "type": "MULTIPLIER", "multiplier": 0.9},
            {
                "starting_at": start,
                "product_id": egress,
                "type": "OVERWRITE",
                "overwrite_rate": {"rate_type": "FLAT", "price": 70},
            },
        ],
    ).data.id
    explicit = client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        starting_at=start,
        multiplier_override_prioritization="EXPLICIT",
        overrides=[
            {
                "starting_at": start,
                "product_id": calls,
                "type": "TIERED",
                "priority": 1,
                "tiers": [{"multiplier": 0.5, "size": 100}, {"multiplier": 1}],
            },
            {"starting_at": start, "product_id": egress, "type": "MULTIPLIER", "multiplier": 0.333333, "priority": 2},
        ],
    ).data.id
    return {"calls": calls, "egress": egress, "card": card, "customer": customer, "L": lowest, "E": explicit}


def check_reads(client: Metronome, ids: dict) -> None:
    log("contracts read back with their overrides on v1 and v2")
    for name, count in [("L", 3), ("E", 2)]:
        v1 = body_of(
            client.v1.contracts.with_raw_response.retrieve(contract_id=ids[name], customer_id=ids["customer"])
        )["data"]
        v2 = body_of(
            client.v2.contracts.with_raw_response.retrieve(contract_id=ids[name], customer_id=ids["customer"])
        )["data"]
        overrides = v2["overrides"]
        assert len(overrides) == count, dump(v2)
        assert v1["initial"]["overrides"] == overrides == v1["current"]["overrides"], dump(v1)
        assert len({o["id"] for o in overrides}) == count, dump(overrides)
        typed = client.v2.contracts.retrieve(contract_id=ids[name], customer_id=ids["customer"]).data
        assert [o.id for o in typed.overrides] == [o["id"] for o in overrides], typed
    e = body_of(client.v2.contracts.with_raw_response.retrieve(contract_id=ids["E"], customer_id=ids["customer"]))[
        "data"
    ]
    assert e["multiplier_override_prioritization"] == "EXPLICIT", dump(e)
    tiers = e["overrides"][0]["override_tiers"]
    assert [(num(t["multiplier"], "multiplier"), t.get("size")) for t in tiers] == [(D("0.5"), 100), (D(1), None)], dump(
        tiers
    )


def ingest(client: Metronome, clock: Clock) -> None:
    log("usage: 150 calls (100 + 50), 3 GB")
    usage = [
        {"transaction_id": "ov-1", "customer_id": "overrides-co", "event_type": "call",
         "timestamp": clock.event_ts(2), "properties": {"n": 100}},
        {"transaction_id": "ov-2", "customer_id": "overrides-co", "event_type": "call",
         "timestamp": clock.event_ts(9), "properties": {"n": "50"}},
        {"transaction_id": "ov-3", "customer_id": "overrides-co", "event_type": "egress",
         "timestamp": clock.event_ts(5), "properties": {"gb": 3}},
    ]
    client.v1.usage.ingest(usage=usage)


def draft(client: Metronome, clock: Clock, customer: str, contract: str) -> dict:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=customer, status="DRAFT"))
    found = [
        inv
        for inv in page["data"]
        if inv.get("contract_id") == contract and parse_ts(inv["start_timestamp"]) == clock.period_start
    ]
    assert len(found) == 1, dump(page)
    return found[0]


def lines_of(inv: dict) -> list:
    return [
        (line["name"], num(line["quantity"], "quantity"), num(line["unit_price"], "unit_price"), num(line["total"], "total"))
        for line in inv["line_items"]
    ]


def await_total(client: Metronome, clock: Clock, customer: str, contract: str, expected: Decimal) -> None:
    """Through the edge (TALLY_AWAIT_INVOICE_S), waits for the flush to reach the draft."""
    setting = os.environ.get("TALLY_AWAIT_INVOICE_S", "").strip()
    if not setting:
        return
    deadline = time.monotonic() + int(setting)
    while num(draft(client, clock, customer, contract)["total"], "total") != expected:
        assert time.monotonic() < deadline, f"draft of {contract} never reached {expected}"
        pause(0.1)


def check_invoices(client: Metronome, clock: Clock, ids: dict) -> None:
    expected = {
        "L": (
            [("Calls", D(150), D(80), D(12000)), ("Egress", D(3), D(70), D(210))],
            D(12210),
        ),
        "E": (
            [
                ("Calls", D(100), D(50), D(5000)),
                ("Calls", D(50), D(100), D(5000)),
                ("Egress", D(3), D("3.33333"), D("9.99999")),
            ],
            D("10009.99999"),
        ),
    }
    for name, (lines, total) in expected.items():
        log(f"draft invoice of contract {name}: total {total}")
        await_total(client, clock, ids["customer"], ids[name], total)
        inv = draft(client, clock, ids["customer"], ids[name])
        assert lines_of(inv) == lines, f"{name}: {lines_of(inv)} != {lines}\n{dump(inv)}"
        assert num(inv["total"], "total") == total, dump(inv)


def check_rate_schedule(client: Metronome, clock: Clock, ids: dict) -> None:
    log("getContractRateSchedule of L: list and override rates")
    raw = client.v1.contracts.with_raw_response.retrieve_rate_schedule(
        contract_id=ids["L"], customer_id=ids["customer"], at=clock.event_ts(8)
    )
    items = body_of(raw)["data"]
    got = {
        i["product_id"]: (num(i["list_rate"]["price"], "list"), num(i["override_rate"]["price"], "override"))
        for i in items
    }
    assert got == {ids["calls"]: (D(100), D(80)), ids["egress"]: (D(10), D(70))}, dump(items)
    typed = client.v1.contracts.retrieve_rate_schedule(contract_id=ids["L"], customer_id=ids["customer"])
    assert len(typed.data) == 2, typed


def check_errors(client: Metronome, clock: Clock, ids: dict) -> None:
    log("a negative multiplier is a 400 naming the field")
    try:
        client.v1.contracts.create(
            customer_id=ids["customer"],
            rate_card_id=ids["card"],
            starting_at=iso(clock.contract_start),
            overrides=[{"starting_at": iso(clock.contract_start), "product_id": ids["calls"],
                        "type": "MULTIPLIER", "multiplier": -1}],
        )
    except metronome.BadRequestError as e:
        assert "overrides[0].multiplier" in e.body["message"], e.body
    else:
        raise AssertionError("a negative multiplier was accepted")


def main() -> int:
    base_url = os.environ["TALLY_BASE_URL"]
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=base_url, max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    check_reads(client, ids)
    ingest(client, clock)
    check_invoices(client, clock, ids)
    check_rate_schedule(client, clock, ids)
    check_errors(client, clock, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "overrides")
