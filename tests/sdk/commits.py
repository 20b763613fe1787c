#!/usr/bin/env python3
"""Commits, credits and an override on one contract, driven end to end through Metronome's
official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. A card prices Calls FLAT 100. A contract has a MULTIPLIER 0.8 override on Calls, a credit of
   1,000 (priority 1) and a prepaid commit of 10,000 (priority 2, invoiced at the contract start),
   both usable for a year; a customer-level credit of 300 applies to another contract only.
2. Both read back through v2 `retrieve` with ids for the commit, the credit and their segments;
   `customers.credits.list` lists the customer-level credit.
3. Usage: 100 calls. The draft invoice (compared as exact Decimals, never floats):
   charges 100 x 80 = 8,000; the credit burns first (priority 1): 12.5 units = 1,000; the commit
   covers the other 87.5 units = 7,000; total 0.
4. Balances: `get_net_balance` is 3,000 with drafts counted (the default): the commit's 3,000
   left, and nothing of the other contract's 300, which its own draft (the customer's same 100
   calls at the list price, 10,000) draws in full; 11,300 counting only finalized invoices;
   `list_balances` shows the commit at 3,000 with its ledger (start +10,000, pending deduction
   -7,000); a manual entry of +250.5 on the commit raises the net to 3,250.5.
5. A commit without an access schedule is a BadRequestError naming the field.
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
    print(f"[commits] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    year = iso(clock.contract_start + timedelta(days=366))
    metric = client.v1.billable_metrics.create(
        name="Calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["call"]}
    ).data.id
    calls = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    fixed = client.v1.contracts.products.create(name="Prepaid", type="FIXED").data.id
    card = client.v1.contracts.rate_cards.create(name="Commits").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=calls, rate_type="FLAT", price=100, entitled=True, starting_at=start
    )
    customer = client.v1.customers.create(name="Commits", ingest_aliases=["commits-co"]).data.id
    access = lambda amount: {"schedule_items": [{"amount": amount, "starting_at": start, "ending_before": year}]}
    contract = client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        starting_at=start,
        overrides=[{"starting_at": start, "product_id": calls, "type": "MULTIPLIER", "multiplier": 0.8}],
        credits=[{"product_id": fixed, "name": "Welcome credit", "priority": 1, "access_schedule": access(1000)}],
        commits=[
            {
                "product_id": fixed,
                "type": "PREPAID",
                "name": "Annual commit",
                "priority": 2,
                "access_schedule": access(10000),
                "invoice_schedule": {"schedule_items": [{"timestamp": start, "amount": 10000}]},
            }
        ],
    ).data.id
    other = client.v1.contracts.create(customer_id=customer, rate_card_id=card, starting_at=start).data.id
    client.v1.customers.credits.create(
        customer_id=customer,
        product_id=fixed,
        name="Other contract credit",
        priority=1,
        access_schedule=access(300),
        applicable_contract_ids=[other],
    )
    return {"calls": calls, "fixed": fixed, "customer": customer, "contract": contract, "other": other}


def check_reads(client: Metronome, ids: dict) -> dict:
    log("the contract reads back with its commit and credit")
    v2 = body_of(
        client.v2.contracts.with_raw_response.retrieve(contract_id=ids["contract"], customer_id=ids["customer"])
    )["data"]
    assert [c["name"] for c in v2["commits"]] == ["Annual commit"], dump(v2)
    assert [c["name"] for c in v2["credits"]] == ["Welcome credit"], dump(v2)
    commit, credit = v2["commits"][0], v2["credits"][0]
    assert commit["type"] == "PREPAID" and credit["type"] == "CREDIT", dump(v2)
    assert num(commit["access_schedule"]["schedule_items"][0]["amount"], "amount") == D(10000), dump(commit)
    typed = client.v2.contracts.retrieve(contract_id=ids["contract"], customer_id=ids["customer"]).data
    assert typed.commits[0].id == commit["id"], typed
    listed = body_of(client.v1.customers.credits.with_raw_response.list(customer_id=ids["customer"]))["data"]
    assert [c["name"] for c in listed] == ["Other contract credit"], dump(listed)
    return {
        "commit": commit["id"],
        "commit_segment": commit["access_schedule"]["schedule_items"][0]["id"],
        "credit": credit["id"],
    }


def ingest(client: Metronome, clock: Clock) -> None:
    log("usage: 100 calls")
    client.v1.usage.ingest(
        usage=[
            {"transaction_id": "cm-1", "customer_id": "commits-co", "event_type": "call",
             "timestamp": clock.event_ts(3), "properties": {"n": 60}},
            {"transaction_id": "cm-2", "customer_id": "commits-co", "event_type": "call",
             "timestamp": clock.event_ts(7), "properties": {"n": "40"}},
        ]
    )


def draft(client: Metronome, clock: Clock, customer: str, contract: str) -> dict:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=customer, status="DRAFT"))
    found = [
        inv
        for inv in page["data"]
        if inv.get("contract_id") == contract
        and inv.get("type") == "USAGE"
        and parse_ts(inv["start_timestamp"]) == clock.period_start
    ]
    assert len(found) == 1, dump(page)
    return found[0]


def check_invoice(client: Metronome, clock: Clock, ids: dict, balances: dict) -> None:
    log("draft: 8,000 of charges, 1,000 from the credit, 7,000 from the commit, total 0")
    inv = draft(client, clock, ids["customer"], ids["contract"])
    got = [
        (
            line["type"],
            num(line["quantity"], "quantity") if "quantity" in line else None,
            num(line["total"], "total"),
            line.get("commit_id") or (line.get("applied_commit_or_credit") or {}).get("id"),
        )
        for line in inv["line_items"]
    ]
    expected = [
        ("usage", D("12.5"), D(1000), balances["credit"]),
        ("applied_commit_or_credit", None, D(-1000), balances["credit"]),
        ("usage", D("87.5"), D(7000), balances["commit"]),
        ("applied_commit_or_credit", None, D(-7000), balances["commit"]),
    ]
    assert got == expected, f"{got} != {expected}\n{dump(inv)}"
    assert num(inv["total"], "total") == 0 and num(inv["subtotal"], "subtotal") == D(8000), dump(inv)
    applied = inv["line_items"][1]
    assert applied["name"] == "Welcome credit applied", dump(applied)
    assert applied["applied_commit_or_credit"]["type"] == "CREDIT", dump(applied)


def check_balances(client: Metronome, ids: dict, balances: dict) -> None:
    log("balances: 3,000 left counting the drafts, 11,300 counting finalized invoices only")
    net = client.v1.contracts.get_net_balance(customer_id=ids["customer"])
    assert D(str(net.data.balance)) == D(3000), net
    raw = body_of(
        client.v1.contracts.with_raw_response.get_net_balance(
            customer_id=ids["customer"], invoice_inclusion_mode="FINALIZED"
        )
    )
    assert num(raw["data"]["balance"], "balance") == D(11300), dump(raw)
    listed = body_of(
        client.v1.contracts.with_raw_response.list_balances(
            customer_id=ids["customer"], include_contract_balances=True, include_balance=True, include_ledgers=True
        )
    )["data"]
    commit = next(b for b in listed if b["id"] == balances["commit"])
    assert num(commit["balance"], "balance") == D(3000), dump(commit)
    ledger = [(e["type"], num(e["amount"], "amount")) for e in commit["ledger"]]
    assert ledger == [
        ("PREPAID_COMMIT_SEGMENT_START", D(10000)),
        ("PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION", D(-7000)),
    ], dump(commit)
    client.v1.contracts.add_manual_balance_entry(
        id=balances["commit"],
        segment_id=balances["commit_segment"],
        customer_id=ids["customer"],
        contract_id=ids["contract"],
        amount=250.5,
        reason="goodwill",
    )
    net = body_of(client.v1.contracts.with_raw_response.get_net_balance(customer_id=ids["customer"]))
    assert num(net["data"]["balance"], "balance") == D("3250.5"), dump(net)


def check_errors(client: Metronome, clock: Clock, ids: dict) -> None:
    log("a commit without an access schedule is a 400 naming the field")
    try:
        client.v1.contracts.create(
            customer_id=ids["customer"],
            starting_at=iso(clock.contract_start),
            commits=[{"product_id": ids["fixed"], "type": "PREPAID"}],
        )
    except metronome.BadRequestError as e:
        assert "commits[0].access_schedule" in e.body["message"], e.body
    else:
        raise AssertionError("a commit without an access schedule was accepted")


def main() -> int:
    base_url = os.environ["TALLY_BASE_URL"]
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=base_url, max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    balances = check_reads(client, ids)
    ingest(client, clock)
    check_invoice(client, clock, ids, balances)
    check_balances(client, ids, balances)
    check_errors(client, clock, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "commits")
