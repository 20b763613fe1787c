#!/usr/bin/env python3
"""Packages driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. A package (`client.v1.packages.create`): the card (Calls FLAT 100), three months long, a
   PREPAID commit of 1,000 for a year invoiced at the start, a credit of 200 for a month, a
   MULTIPLIER 0.5 on Calls from the start, a setup charge of 50 at the start; all as offsets.
2. Contract A is created from it by `package_id`, contract B is the same contract written out;
   both get 20 calls. Their invoices agree line for line (ids aside): the SCHEDULED invoice at
   the start is 1,000 + 50 = 1,050; the usage draft is 20 x 50 = 1,000 of charges, all drawn from
   the credit and the commit, total 0 (compared as exact Decimals).
3. `list_contracts_on_package` lists A only; after `archive` the package is listed as ARCHIVED
   and a contract from it is a BadRequestError; nothing is stored.
"""

from __future__ import annotations

import os
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, next_month_start, num, parse_ts, run_script

D = Decimal
ZERO = {"value": 0, "unit": "DAYS"}


def log(msg: str) -> None:
    print(f"[packages] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    metric = client.v1.billable_metrics.create(
        name="Package calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["pkg"]}
    ).data.id
    calls = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    fixed = client.v1.contracts.products.create(name="Plan", type="FIXED").data.id
    card = client.v1.contracts.rate_cards.create(name="Packaged").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=calls, rate_type="FLAT", price=100, entitled=True, starting_at=start
    )
    a = client.v1.customers.create(name="From package", ingest_aliases=["pkg-a"]).data.id
    b = client.v1.customers.create(name="Written out", ingest_aliases=["pkg-b"]).data.id
    return {"calls": calls, "fixed": fixed, "card": card, "a": a, "b": b}


def create_package(client: Metronome, ids: dict) -> str:
    log("a package with a commit, a credit, an override and a charge, all relative")
    return client.v1.packages.create(
        name="Starter",
        contract_name="Starter",
        rate_card_id=ids["card"],
        duration={"value": 3, "unit": "MONTHS"},
        commits=[{"type": "PREPAID", "product_id": ids["fixed"], "name": "Prepaid",
                  "access_schedule": {"schedule_items": [{"amount": 1000, "starting_at_offset": ZERO,
                                                          "duration": {"value": 1, "unit": "YEARS"}}]},
                  "invoice_schedule": {"schedule_items": [{"date_offset": ZERO, "unit_price": 1000, "quantity": 1}]}}],
        credits=[{"product_id": ids["fixed"], "name": "Welcome",
                  "access_schedule": {"schedule_items": [{"amount": 200, "starting_at_offset": ZERO,
                                                          "duration": {"value": 1, "unit": "MONTHS"}}]}}],
        overrides=[{"starting_at_offset": ZERO, "type": "MULTIPLIER", "multiplier": 0.5,
                    "override_specifiers": [{"product_id": ids["calls"]}]}],
        scheduled_charges=[{"product_id": ids["fixed"], "name": "Setup",
                            "schedule": {"schedule_items": [{"date_offset": ZERO, "unit_price": 50, "quantity": 1}]}}],
    ).data.id


def written_out(client: Metronome, clock: Clock, ids: dict) -> str:
    start = clock.contract_start
    three = next_month_start(next_month_start(next_month_start(start)))
    month = next_month_start(start)
    year = start.replace(year=start.year + 1)
    return client.v1.contracts.create(
        customer_id=ids["b"],
        starting_at=iso(start),
        ending_before=iso(three),
        name="Starter",
        rate_card_id=ids["card"],
        commits=[{"type": "PREPAID", "product_id": ids["fixed"], "name": "Prepaid",
                  "access_schedule": {"schedule_items": [{"amount": 1000, "starting_at": iso(start),
                                                          "ending_before": iso(year)}]},
                  "invoice_schedule": {"schedule_items": [{"timestamp": iso(start), "unit_price": 1000, "quantity": 1}]}}],
        credits=[{"product_id": ids["fixed"], "name": "Welcome",
                  "access_schedule": {"schedule_items": [{"amount": 200, "starting_at": iso(start),
                                                          "ending_before": iso(month)}]}}],
        overrides=[{"starting_at": iso(start), "type": "MULTIPLIER", "multiplier": 0.5,
                    "override_specifiers": [{"product_id": ids["calls"]}]}],
        scheduled_charges=[{"product_id": ids["fixed"], "name": "Setup",
                            "schedule": {"schedule_items": [{"timestamp": iso(start), "unit_price": 50, "quantity": 1}]}}],
    ).data.id


def invoices(client: Metronome, customer: str) -> list:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=customer))["data"]
    out = []
    for inv in page:
        lines = [(l["type"], l["name"], num(l["total"], "total")) for l in inv["line_items"]]
        out.append((inv["type"], parse_ts(inv["start_timestamp"]), num(inv["total"], "total"), lines))
    return sorted(out, key=lambda i: (i[1], i[0]))


def main() -> int:
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    package = create_package(client, ids)
    got = client.v1.packages.retrieve(package_id=package).data
    assert got.name == "Starter" and got.contract_name == "Starter", got

    log("contract A from the package, contract B written out")
    a = client.v1.contracts.create(customer_id=ids["a"], starting_at=iso(clock.contract_start), package_id=package).data.id
    written_out(client, clock, ids)
    v2 = body_of(client.v2.contracts.with_raw_response.retrieve(contract_id=a, customer_id=ids["a"]))["data"]
    assert v2["package_id"] == package, dump(v2)
    for alias, tx in (("pkg-a", "pa"), ("pkg-b", "pb")):
        client.v1.usage.ingest(usage=[
            {"transaction_id": f"{tx}-{k}", "customer_id": alias, "event_type": "pkg",
             "timestamp": clock.event_ts(k), "properties": {"n": 10}} for k in (1, 5)
        ])

    log("both bill alike: SCHEDULED 1,050, usage 1,000 drawn down to 0")
    ia, ib = invoices(client, ids["a"]), invoices(client, ids["b"])
    assert ia == ib, f"{ia}\n!=\n{ib}"
    first = [i for i in ia if i[0] == "SCHEDULED" and i[1] == clock.contract_start]
    assert [i[2] for i in first] == [D(1050)], ia
    draft = [i for i in ia if i[0] == "USAGE" and i[1] == clock.period_start]
    assert len(draft) == 1 and draft[0][2] == 0, ia
    charged = sum(total for kind, _, total in draft[0][3] if kind == "usage")
    assert charged == D(1000), draft

    log("contracts on the package; archived packages make no contracts")
    on = body_of(client.v1.packages.with_raw_response.list_contracts_on_package(package_id=package))["data"]
    assert [c["contract_id"] for c in on] == [a], dump(on)
    client.v1.packages.archive(package_id=package)
    archived = body_of(client.v1.packages.with_raw_response.list(archive_filter="ARCHIVED"))["data"]
    assert [p["id"] for p in archived] == [package], dump(archived)
    before = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["a"]))["data"]
    try:
        client.v1.contracts.create(customer_id=ids["a"], starting_at=iso(clock.contract_start), package_id=package)
    except metronome.BadRequestError as e:
        assert "archived" in e.body["message"], e.body
    else:
        raise AssertionError("a contract from an archived package was accepted")
    after = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["a"]))["data"]
    assert len(after) == len(before), dump(after)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "packages")
