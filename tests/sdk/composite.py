#!/usr/bin/env python3
"""Composite products driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed. Hand-computed, compared as exact Decimals:

1. USAGE products API (100 a call, tag `billable`), Storage (7 a GB, tag `billable`) and Free
   (0, tag `billable`); COMPOSITE products Support (15% of every `billable` product's spend,
   `exclude_free_usage`) and Platform tax (10% of API's spend, by id).
2. 3 calls, 5 GB, 2 free units: API 300, Storage 35, Free 0; Support's line has quantity = its
   base 335, unit price 0.15, total 50.25; Platform tax's base 300, total 30; invoice 415.25.
3. A commit-free draft is recomputed as usage arrives: 1 more call makes API 400, Support
   0.15 x 435 = 65.25, Platform tax 40: total 540.25.
4. A PERCENTAGE rate on a USAGE product and a composite naming a composite are
   BadRequestErrors naming the field; nothing is stored.
"""

from __future__ import annotations

import os
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, num, parse_ts, run_script

D = Decimal


def log(msg: str) -> None:
    print(f"[composite] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    ids = {}
    for name, prop in [("API", "calls"), ("Storage", "gb"), ("Free", "free")]:
        metric = client.v1.billable_metrics.create(
            name=f"Composite {name}", aggregation_type="SUM", aggregation_key=prop,
            event_type_filter={"in_values": [f"cmp_{prop}"]},
        ).data.id
        ids[name] = client.v1.contracts.products.create(
            name=name, type="USAGE", billable_metric_id=metric, tags=["billable"]
        ).data.id
    ids["Support"] = client.v1.contracts.products.create(
        name="Support", type="COMPOSITE", composite_tags=["billable"], exclude_free_usage=True
    ).data.id
    ids["Platform tax"] = client.v1.contracts.products.create(
        name="Platform tax", type="COMPOSITE", composite_product_ids=[ids["API"]]
    ).data.id
    card = client.v1.contracts.rate_cards.create(name="Composite card").data.id
    for name, rate_type, price in [
        ("API", "FLAT", 100), ("Storage", "FLAT", 7), ("Free", "FLAT", 0),
        ("Support", "PERCENTAGE", 0.15), ("Platform tax", "PERCENTAGE", 0.1),
    ]:
        client.v1.contracts.rate_cards.rates.add(
            rate_card_id=card, product_id=ids[name], rate_type=rate_type, price=price, entitled=True,
            starting_at=start,
        )
    ids["card"] = card
    ids["customer"] = client.v1.customers.create(name="Composite", ingest_aliases=["composite-c"]).data.id
    ids["contract"] = client.v1.contracts.create(
        customer_id=ids["customer"], rate_card_id=card, starting_at=start
    ).data.id
    return ids


def send(client: Metronome, clock: Clock, tx: str, prop: str, n: int, k: int) -> None:
    client.v1.usage.ingest(usage=[{
        "transaction_id": tx, "customer_id": "composite-c", "event_type": f"cmp_{prop}",
        "timestamp": clock.event_ts(k), "properties": {prop: n},
    }])


def draft(client: Metronome, clock: Clock, ids: dict) -> dict:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(
        customer_id=ids["customer"], status="DRAFT"))["data"]
    found = [i for i in page if i.get("type") == "USAGE" and parse_ts(i["start_timestamp"]) == clock.period_start]
    assert len(found) == 1, dump(page)
    return found[0]


def by_name(inv: dict) -> dict:
    return {
        l["name"]: (num(l["quantity"], "quantity"), num(l["unit_price"], "unit_price"), num(l["total"], "total"),
                    l["product_type"])
        for l in inv["line_items"]
    }


def check_lines(client: Metronome, clock: Clock, ids: dict, calls: int, total: Decimal) -> None:
    inv = draft(client, clock, ids)
    api = D(calls) * 100
    support_base = api + 35
    expected = {
        "API": (D(calls), D(100), api, "UsageProductListItem"),
        "Storage": (D(5), D(7), D(35), "UsageProductListItem"),
        "Free": (D(2), D(0), D(0), "UsageProductListItem"),
        "Support": (support_base, D("0.15"), D("0.15") * support_base, "CompositeProductListItem"),
        "Platform tax": (api, D("0.1"), D("0.1") * api, "CompositeProductListItem"),
    }
    assert by_name(inv) == expected, f"{by_name(inv)} != {expected}"
    assert num(inv["total"], "total") == total, dump(inv)
    names = [l["name"] for l in inv["line_items"]]
    assert names.index("Support") > names.index("Free"), names


def check_errors(client: Metronome, clock: Clock, ids: dict) -> None:
    log("refusals: PERCENTAGE on a USAGE product, a composite of a composite")
    try:
        client.v1.contracts.rate_cards.rates.add(
            rate_card_id=ids["card"], product_id=ids["API"], rate_type="PERCENTAGE", price=0.5,
            entitled=True, starting_at=iso(clock.contract_start),
        )
    except metronome.BadRequestError as e:
        assert "PERCENTAGE" in e.body["message"], e.body
    else:
        raise AssertionError("a PERCENTAGE rate on a USAGE product was accepted")
    before = body_of(client.v1.contracts.products.with_raw_response.list())["data"]
    try:
        client.v1.contracts.products.create(
            name="Nested", type="COMPOSITE", composite_product_ids=[ids["Support"]]
        )
    except metronome.BadRequestError as e:
        assert "composite_product_ids" in e.body["message"], e.body
    else:
        raise AssertionError("a composite of a composite was accepted")
    after = body_of(client.v1.contracts.products.with_raw_response.list())["data"]
    assert len(after) == len(before), dump(after)


def main() -> int:
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    log("3 calls, 5 GB, 2 free: 300 + 35 + 0 + 50.25 + 30")
    send(client, clock, "cmp-1", "calls", 3, 1)
    send(client, clock, "cmp-2", "gb", 5, 2)
    send(client, clock, "cmp-3", "free", 2, 3)
    check_lines(client, clock, ids, 3, D("415.25"))
    log("one more call: 400 + 35 + 0 + 65.25 + 40")
    send(client, clock, "cmp-4", "calls", 1, 4)
    check_lines(client, clock, ids, 4, D("540.25"))
    check_errors(client, clock, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "composite")
