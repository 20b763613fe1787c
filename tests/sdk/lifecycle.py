#!/usr/bin/env python3
"""Contract lifecycle driven end to end through Metronome's official Python SDK: a renewal
(`transition`) with rollover.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. A card prices Calls FLAT 100. "Year one" runs over the previous month and ends at the current
   period's start; it has a free PREPAID commit "Upfront" of 1,000 over its whole term with
   `rollover_fraction` 0.333333. 3 calls in its last hours draw 300: 700 is left.
2. "Year two" starts where year one ends and renews it (`transition: RENEWAL`). Both contracts
   read back `transitions: [{from: year one, to: year two, RENEWAL}]`. Year two has a rolled
   commit "Upfront" with `rolled_over_from: {commit_id, contract_id}` and an access amount of
   700 x 0.333333 = 233.3331 (exact), usable over year two's term.
3. 4 calls in the current period (400): the rolled commit covers 233.3331 / 100 = 2.333331 calls,
   1.666669 calls are billed: total 166.6669. Both balances are 0 counting the draft; year one's
   ledger has PREPAID_COMMIT_ROLLOVER -233.3331 and the rest (466.6669) expires; year two's starts
   with PREPAID_COMMIT_ROLLOVER +233.3331.
4. Refusals (BadRequestError naming the field, nothing stored): a second renewal of year one,
   a SUPERSEDE, an unknown `future_invoice_behavior.trueup`, and moving year one's end past year
   two's start with updateEndDate.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, month_start, num, run_script

D = Decimal


def log(msg: str) -> None:
    print(f"[lifecycle] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    new_start = clock.period_start
    old_start = month_start(new_start - timedelta(days=1))
    metric = client.v1.billable_metrics.create(
        name="Lifecycle calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["lc"]}
    ).data.id
    calls = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    fixed = client.v1.contracts.products.create(name="Commitments", type="FIXED").data.id
    card = client.v1.contracts.rate_cards.create(name="Lifecycle").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=calls, rate_type="FLAT", price=100, entitled=True, starting_at=iso(old_start)
    )
    customer = client.v1.customers.create(name="Lifecycle", ingest_aliases=["lifecycle-co"]).data.id
    old = client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        name="Year one",
        starting_at=iso(old_start),
        ending_before=iso(new_start),
        commits=[
            {
                "type": "PREPAID",
                "product_id": fixed,
                "name": "Upfront",
                "priority": 1,
                "rollover_fraction": 0.333333,
                "access_schedule": {
                    "schedule_items": [{"amount": 1000, "starting_at": iso(old_start), "ending_before": iso(new_start)}]
                },
            }
        ],
    ).data.id
    client.v1.usage.ingest(
        usage=[
            {"transaction_id": "lc-old", "customer_id": "lifecycle-co", "event_type": "lc",
             "timestamp": iso(new_start - timedelta(hours=12)), "properties": {"n": 3}},
        ]
    )
    new_end = month_start(clock.period_end + timedelta(days=40))
    new = client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        name="Year two",
        starting_at=iso(new_start),
        ending_before=iso(new_end),
        transition={"from_contract_id": old, "type": "RENEWAL", "future_invoice_behavior": {"trueup": "AS_IS"}},
    ).data.id
    return {"customer": customer, "card": card, "old": old, "new": new, "new_start": new_start, "new_end": new_end}


def contract(client: Metronome, ids: dict, which: str) -> dict:
    return body_of(
        client.v2.contracts.with_raw_response.retrieve(
            contract_id=ids[which], customer_id=ids["customer"], include_balance=True, include_ledgers=True
        )
    )["data"]


def ledger(commit: dict) -> list:
    return [(e["type"], num(e["amount"], "amount")) for e in commit["ledger"]]


def check_renewal(client: Metronome, ids: dict) -> dict:
    log("both contracts read the transition; year two has the rolled commit (233.3331)")
    expected = [{"from_contract_id": ids["old"], "to_contract_id": ids["new"], "type": "RENEWAL"}]
    old, new = contract(client, ids, "old"), contract(client, ids, "new")
    for c in (old, new):
        assert c["transitions"] == expected, dump(c["transitions"])
    typed = client.v2.contracts.retrieve(contract_id=ids["new"], customer_id=ids["customer"]).data
    assert typed.transitions[0].type == "RENEWAL" and typed.transitions[0].from_contract_id == ids["old"]
    assert len(new["commits"]) == 1, dump(new["commits"])
    rolled = new["commits"][0]
    original = old["commits"][0]
    assert rolled["rolled_over_from"] == {"commit_id": original["id"], "contract_id": ids["old"]}, dump(rolled)
    assert rolled["name"] == "Upfront" and rolled["type"] == "PREPAID", dump(rolled)
    item = rolled["access_schedule"]["schedule_items"][0]
    assert num(item["amount"], "rolled amount") == D("233.3331"), dump(rolled)
    assert item["starting_at"] == iso(ids["new_start"]) and item["ending_before"] == iso(ids["new_end"]), dump(item)
    assert ledger(rolled) == [("PREPAID_COMMIT_ROLLOVER", D("233.3331"))], dump(rolled)
    return rolled


def draft(client: Metronome, ids: dict) -> dict:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=ids["customer"]))["data"]
    found = [
        i for i in page
        if i["contract_id"] == ids["new"] and i["start_timestamp"] == iso(ids["new_start"])
    ]
    assert len(found) == 1, dump(page)
    return found[0]


def check_usage(client: Metronome, clock: Clock, ids: dict, rolled: dict) -> None:
    log("4 calls: the rolled commit covers 2.333331, 1.666669 billed: total 166.6669")
    client.v1.usage.ingest(
        usage=[
            {"transaction_id": "lc-new", "customer_id": "lifecycle-co", "event_type": "lc",
             "timestamp": clock.event_ts(5), "properties": {"n": 4}},
        ]
    )
    inv = draft(client, ids)
    got = [
        (line.get("quantity") and num(line["quantity"], "quantity"), num(line["total"], "total"), line.get("commit_id"))
        for line in inv["line_items"]
        if num(line["total"], "total") != 0
    ]
    expected = [
        (D("2.333331"), D("233.3331"), rolled["id"]),
        (None, D("-233.3331"), None),
        (D("1.666669"), D("166.6669"), None),
    ]
    assert got == expected, f"{got} != {expected}\n{dump(inv)}"
    assert num(inv["subtotal"], "subtotal") == D(400), dump(inv)
    assert num(inv["total"], "total") == D("166.6669"), dump(inv)
    old, new = contract(client, ids, "old"), contract(client, ids, "new")
    assert num(new["commits"][0]["balance"], "balance") == 0, dump(new["commits"][0])
    assert ledger(new["commits"][0])[0] == ("PREPAID_COMMIT_ROLLOVER", D("233.3331")), dump(new["commits"][0])
    assert ledger(old["commits"][0]) == [
        ("PREPAID_COMMIT_SEGMENT_START", D(1000)),
        ("PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION", D(-300)),
        ("PREPAID_COMMIT_ROLLOVER", D("-233.3331")),
        ("PREPAID_COMMIT_EXPIRATION", D("-466.6669")),
    ], dump(old["commits"][0])
    assert num(old["commits"][0]["balance"], "balance") == 0, dump(old["commits"][0])


def refused(call, needle: str) -> None:
    try:
        call()
    except metronome.BadRequestError as e:
        assert needle in e.body["message"], e.body
    else:
        raise AssertionError(f"accepted; expected a 400 naming {needle}")


def check_refusals(client: Metronome, ids: dict) -> None:
    log("a second renewal, SUPERSEDE, an unknown trueup and an end past the successor are 400s")
    before = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["customer"]))["data"]

    def renew(**transition):
        return lambda: client.v1.contracts.create(
            customer_id=ids["customer"],
            rate_card_id=ids["card"],
            starting_at=iso(ids["new_end"]),
            transition={"from_contract_id": ids["old"], "type": "RENEWAL", **transition},
        )

    refused(renew(), "already has a RENEWAL successor")
    refused(renew(type="SUPERSEDE"), "transition.type")
    refused(renew(future_invoice_behavior={"trueup": "SOMETIMES"}), "transition.future_invoice_behavior.trueup")
    refused(
        lambda: client.v1.contracts.update_end_date(
            contract_id=ids["old"], customer_id=ids["customer"], ending_before=iso(ids["new_end"])
        ),
        "ending_before",
    )
    after = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["customer"]))["data"]
    assert len(after) == len(before) == 2, dump(after)
    old = contract(client, ids, "old")
    assert old["ending_before"] == iso(ids["new_start"]), dump(old)


def main() -> int:
    base_url = os.environ["TALLY_BASE_URL"]
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=base_url, max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    rolled = check_renewal(client, ids)
    check_usage(client, clock, ids, rolled)
    check_refusals(client, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "lifecycle")
