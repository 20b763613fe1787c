#!/usr/bin/env python3
"""Several commits and credits competing for the same usage, with overrides, commit rates and a
postpaid true-up, driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. A card prices Calls FLAT 100 with a commit rate of 80. The contract (EXPLICIT
   prioritization) has a TIERED override on Calls (priority 2: x0.5 for the first 20 units),
   a commit-specific MULTIPLIER 0.9 (priority 3) naming the credit "Promo" by its temporary id,
   the credit Promo (900, priority 1), a PREPAID commit "Committed" (2,000, priority 2,
   rate_type COMMIT_RATE) and a POSTPAID commit "Minimum" (6,000, true-up at the period's end).
2. Reads: the override names Promo by its real id; both commits and the credit read back typed.
3. Usage: 100 calls. Before balances: 20 x 50 = 1,000 and 80 x 100 = 8,000. Drawn (compared as
   exact Decimals, never floats):
   - Promo (priority 1) draws at its price on the 20-unit line, 50 (the tiered override covers
     those units before the commit-specific 0.9): 900 / 50 = 18 units;
   - Committed (COMMIT_RATE) draws at 80: the 2 units left of the first line (160), then
     1,840 / 80 = 23 units of the second;
   - Minimum (postpaid, last) covers the other 57 units at 100 = 5,700; its applied line does
     not lower the total, and its true-up charges 6,000 - 5,700 = 300.
   Subtotal 900 + 160 + 1,840 + 5,700 + 300 = 8,900; adjustments -2,900; total 6,000.
4. Balances: Promo and Committed have 0 left counting the draft; Minimum's ledger shows the
   pending 5,700 deduction and the pending 300 true-up.
5. A commit-specific override naming a commit the contract does not have is a BadRequestError
   naming the field; nothing is stored.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, num, parse_ts, run_script

D = Decimal


def log(msg: str) -> None:
    print(f"[drawdown] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    year = iso(clock.contract_start + timedelta(days=366))
    metric = client.v1.billable_metrics.create(
        name="Draw calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["draw"]}
    ).data.id
    calls = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    fixed = client.v1.contracts.products.create(name="Commitments", type="FIXED").data.id
    card = client.v1.contracts.rate_cards.create(name="Drawdown").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card,
        product_id=calls,
        rate_type="FLAT",
        price=100,
        entitled=True,
        starting_at=start,
        commit_rate={"rate_type": "FLAT", "price": 80},
    )
    customer = client.v1.customers.create(name="Drawdown", ingest_aliases=["drawdown-co"]).data.id
    access = lambda amount: {"schedule_items": [{"amount": amount, "starting_at": start, "ending_before": year}]}
    contract = client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        starting_at=start,
        multiplier_override_prioritization="EXPLICIT",
        overrides=[
            {"starting_at": start, "product_id": calls, "type": "TIERED", "priority": 2,
             "tiers": [{"multiplier": 0.5, "size": 20}]},
            {"starting_at": start, "type": "MULTIPLIER", "multiplier": 0.9, "priority": 3,
             "is_commit_specific": True, "target": "LIST_RATE",
             "override_specifiers": [{"product_id": calls, "commit_ids": ["promo"]}]},
        ],
        credits=[{"product_id": fixed, "name": "Promo", "priority": 1, "access_schedule": access(900),
                  "temporary_id": "promo"}],
        commits=[
            {"product_id": fixed, "type": "PREPAID", "name": "Committed", "priority": 2,
             "rate_type": "COMMIT_RATE", "access_schedule": access(2000),
             "invoice_schedule": {"schedule_items": [{"timestamp": start, "amount": 2000}]}},
            {"product_id": fixed, "type": "POSTPAID", "name": "Minimum", "priority": 3,
             "access_schedule": access(6000),
             "invoice_schedule": {"schedule_items": [{"timestamp": iso(clock.period_end), "amount": 6000}]}},
        ],
    ).data.id
    return {"calls": calls, "fixed": fixed, "customer": customer, "contract": contract}


def check_reads(client: Metronome, ids: dict) -> dict:
    log("the contract reads back: the override names Promo by its id")
    v2 = body_of(
        client.v2.contracts.with_raw_response.retrieve(contract_id=ids["contract"], customer_id=ids["customer"])
    )["data"]
    by_name = {b["name"]: b["id"] for b in v2["commits"] + v2["credits"]}
    assert sorted(by_name) == ["Committed", "Minimum", "Promo"], dump(v2)
    specific = [o for o in v2["overrides"] if o.get("is_commit_specific")]
    assert len(specific) == 1, dump(v2)
    assert specific[0]["override_specifiers"][0]["commit_ids"] == [by_name["Promo"]], dump(specific)
    assert specific[0]["target"] == "LIST_RATE", dump(specific)
    typed = client.v2.contracts.retrieve(contract_id=ids["contract"], customer_id=ids["customer"]).data
    assert {c.name for c in typed.commits} == {"Committed", "Minimum"}, typed
    assert [o.is_commit_specific for o in typed.overrides] == [False, True], typed
    return by_name


def ingest(client: Metronome, clock: Clock) -> None:
    log("usage: 100 calls")
    client.v1.usage.ingest(
        usage=[
            {"transaction_id": "dd-1", "customer_id": "drawdown-co", "event_type": "draw",
             "timestamp": clock.event_ts(2), "properties": {"n": 70}},
            {"transaction_id": "dd-2", "customer_id": "drawdown-co", "event_type": "draw",
             "timestamp": clock.event_ts(9), "properties": {"n": "30"}},
        ]
    )


def draft(client: Metronome, clock: Clock, ids: dict) -> dict:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=ids["customer"], status="DRAFT"))
    found = [
        inv
        for inv in page["data"]
        if inv.get("contract_id") == ids["contract"]
        and inv.get("type") == "USAGE"
        and parse_ts(inv["start_timestamp"]) == clock.period_start
    ]
    assert len(found) == 1, dump(page)
    return found[0]


def check_invoice(client: Metronome, clock: Clock, ids: dict, by_name: dict) -> None:
    log("draft: 8,900 of charges, 2,900 drawn from prepaid balances, total 6,000")
    inv = draft(client, clock, ids)
    got = [
        (
            line["type"],
            num(line["quantity"], "quantity") if line["type"] == "usage" else None,
            num(line["unit_price"], "unit_price") if line["type"] == "usage" else None,
            num(line["total"], "total"),
            line.get("commit_id")
            or (line.get("applied_commit_or_credit") or {}).get("id")
            or (line.get("postpaid_commit") or {}).get("id"),
        )
        for line in inv["line_items"]
    ]
    promo, committed, minimum = by_name["Promo"], by_name["Committed"], by_name["Minimum"]
    expected = [
        ("usage", D(18), D(50), D(900), promo),
        ("applied_commit_or_credit", None, None, D(-900), promo),
        ("usage", D(2), D(80), D(160), committed),
        ("applied_commit_or_credit", None, None, D(-160), committed),
        ("usage", D(23), D(80), D(1840), committed),
        ("applied_commit_or_credit", None, None, D(-1840), committed),
        ("usage", D(57), D(100), D(5700), minimum),
        ("applied_commit_or_credit", None, None, D(-5700), minimum),
        ("postpaid_trueup", None, None, D(300), minimum),
    ]
    assert got == expected, f"{got} != {expected}\n{dump(inv)}"
    assert num(inv["subtotal"], "subtotal") == D(8900), dump(inv)
    assert num(inv["total"], "total") == D(6000), dump(inv)


def check_balances(client: Metronome, ids: dict, by_name: dict) -> None:
    log("balances: Promo and Committed spent by the draft; Minimum's ledger shows what is pending")
    listed = body_of(
        client.v1.contracts.with_raw_response.list_balances(
            customer_id=ids["customer"], include_contract_balances=True, include_balance=True, include_ledgers=True
        )
    )["data"]
    by_id = {b["id"]: b for b in listed}
    for name in ("Promo", "Committed"):
        assert num(by_id[by_name[name]]["balance"], "balance") == 0, dump(by_id[by_name[name]])
    ledger = [(e["type"], num(e["amount"], "amount")) for e in by_id[by_name["Minimum"]]["ledger"]]
    assert ("POSTPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION", D(-5700)) in ledger, ledger
    assert ("POSTPAID_COMMIT_TRUEUP", D(-300)) in ledger, ledger
    net = client.v1.contracts.get_net_balance(
        customer_id=ids["customer"], filters=[{"balance_types": ["PREPAID_COMMIT", "CREDIT"]}]
    )
    assert D(str(net.data.balance)) == 0, net


def check_errors(client: Metronome, clock: Clock, ids: dict) -> None:
    log("a commit-specific override naming no commit of the contract is a 400; nothing is stored")
    before = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["customer"]))["data"]
    start = iso(clock.contract_start)
    try:
        client.v1.contracts.create(
            customer_id=ids["customer"],
            starting_at=start,
            overrides=[{"starting_at": start, "type": "MULTIPLIER", "multiplier": 0.5, "is_commit_specific": True,
                        "override_specifiers": [{"product_id": ids["calls"], "commit_ids": ["nope"]}]}],
        )
    except metronome.BadRequestError as e:
        assert "overrides[0].override_specifiers[0].commit_ids" in e.body["message"], e.body
    else:
        raise AssertionError("an override naming an unknown commit was accepted")
    after = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["customer"]))["data"]
    assert len(after) == len(before), dump(after)


def main() -> int:
    base_url = os.environ["TALLY_BASE_URL"]
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=base_url, max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    by_name = check_reads(client, ids)
    ingest(client, clock)
    check_invoice(client, clock, ids, by_name)
    check_balances(client, ids, by_name)
    check_errors(client, clock, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "drawdown")
