#!/usr/bin/env python3
"""Recurring commits and credits driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. A card prices Calls FLAT 100 with a commit rate of 80. The contract has, from the start of the
   current period (on its monthly grid, so nothing is prorated):
   - a recurring credit "Monthly credit" of 1,000 a period (priority 1);
   - a recurring commit "Monthly commit" of 10 x 50 = 500 a period (priority 2, COMMIT_RATE),
     invoiced 450 a period, named by its temporary id by a commit-specific MULTIPLIER 0.5 with
     `target: COMMIT_RATE`, so its draws are priced 80 x 0.5 = 40.
2. Reads: v2 get shows both recurring terms (typed), and the generated credit and commit of the
   current period with `recurring_credit_id` / `recurring_commit_id`; the override names the
   recurring commit by its real id. A SCHEDULED invoice of 450 exists at the period's start.
3. Usage: 30 calls (3,000 at list). The credit covers 1,000 / 100 = 10 units; the commit
   500 / 40 = 12.5 units (500); 7.5 x 100 = 750 is billed. Subtotal 2,250, total 750.
4. Balances: both generated balances are spent counting the draft.
5. A v2 edit adds a recurring credit of 200 (priority 3): it covers 2 more units, total 550; the
   edit history shows it.
6. A recurring credit with an `invoice_amount` is a BadRequestError naming the field; nothing is
   stored.
"""

from __future__ import annotations

import os
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, num, parse_ts, run_script

D = Decimal
USD = "2714e483-4ff1-48e4-9e25-ac732e8f24f2"


def log(msg: str) -> None:
    print(f"[recurring] {msg}", flush=True)


def monthly(product: str, name: str, amount: dict, priority: int, clock: Clock, **extra) -> dict:
    return {
        "product_id": product,
        "name": name,
        "priority": priority,
        "access_amount": {**amount, "credit_type_id": USD},
        "commit_duration": {"value": 1, "unit": "PERIODS"},
        "starting_at": iso(clock.period_start),
        **extra,
    }


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    metric = client.v1.billable_metrics.create(
        name="Recurring calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["rec"]}
    ).data.id
    calls = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    fixed = client.v1.contracts.products.create(name="Allowances", type="FIXED").data.id
    card = client.v1.contracts.rate_cards.create(name="Recurring").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card,
        product_id=calls,
        rate_type="FLAT",
        price=100,
        entitled=True,
        starting_at=start,
        commit_rate={"rate_type": "FLAT", "price": 80},
    )
    customer = client.v1.customers.create(name="Recurring", ingest_aliases=["recurring-co"]).data.id
    contract = client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        starting_at=start,
        recurring_credits=[monthly(fixed, "Monthly credit", {"unit_price": 1000, "quantity": 1}, 1, clock)],
        recurring_commits=[
            monthly(
                fixed,
                "Monthly commit",
                {"unit_price": 50, "quantity": 10},
                2,
                clock,
                invoice_amount={"unit_price": 450, "quantity": 1, "credit_type_id": USD},
                rate_type="COMMIT_RATE",
                temporary_id="monthly-commit",
            )
        ],
        overrides=[
            {"starting_at": start, "type": "MULTIPLIER", "multiplier": 0.5, "is_commit_specific": True,
             "target": "COMMIT_RATE",
             "override_specifiers": [{"product_id": calls, "recurring_commit_ids": ["monthly-commit"]}]},
        ],
    ).data.id
    return {"calls": calls, "fixed": fixed, "customer": customer, "contract": contract}


def generated_in_period(items: list, clock: Clock) -> list:
    return [
        b for b in items
        if parse_ts(b["access_schedule"]["schedule_items"][0]["starting_at"]) == clock.period_start
    ]


def check_reads(client: Metronome, clock: Clock, ids: dict) -> dict:
    log("the contract reads back its recurring terms and what they generated this period")
    typed = client.v2.contracts.retrieve(contract_id=ids["contract"], customer_id=ids["customer"]).data
    assert [r.name for r in typed.recurring_credits] == ["Monthly credit"], typed
    assert [r.name for r in typed.recurring_commits] == ["Monthly commit"], typed
    assert D(str(typed.recurring_commits[0].access_amount.unit_price)) == 50, typed
    assert typed.recurring_commits[0].rate_type == "COMMIT_RATE", typed
    v2 = body_of(
        client.v2.contracts.with_raw_response.retrieve(contract_id=ids["contract"], customer_id=ids["customer"])
    )["data"]
    credit_rid, commit_rid = v2["recurring_credits"][0]["id"], v2["recurring_commits"][0]["id"]
    credits = generated_in_period(v2["credits"], clock)
    commits = generated_in_period(v2["commits"], clock)
    assert [c["recurring_credit_id"] for c in credits] == [credit_rid], dump(v2)
    assert [c["recurring_commit_id"] for c in commits] == [commit_rid], dump(v2)
    assert num(credits[0]["access_schedule"]["schedule_items"][0]["amount"], "amount") == 1000, dump(credits)
    assert num(commits[0]["access_schedule"]["schedule_items"][0]["amount"], "amount") == 500, dump(commits)
    assert commits[0]["type"] == "PREPAID", dump(commits)
    specific = v2["overrides"][0]["override_specifiers"][0]
    assert specific["recurring_commit_ids"] == [commit_rid], dump(v2["overrides"])
    typed_commits = [c for c in typed.commits if c.recurring_commit_id == commit_rid]
    assert len(typed_commits) >= 1, typed.commits
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=ids["customer"]))["data"]
    scheduled = [
        (parse_ts(i["start_timestamp"]), num(i["total"], "total"))
        for i in page
        if i.get("type") == "SCHEDULED" and i.get("contract_id") == ids["contract"]
    ]
    assert (clock.period_start, D(450)) in scheduled, dump(page)
    return {"credit": credits[0]["id"], "commit": commits[0]["id"]}


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


def lines(inv: dict) -> list:
    return [
        (
            line["type"],
            num(line["quantity"], "quantity") if line["type"] == "usage" else None,
            num(line["unit_price"], "unit_price") if line["type"] == "usage" else None,
            num(line["total"], "total"),
            line.get("commit_id") or (line.get("applied_commit_or_credit") or {}).get("id"),
        )
        for line in inv["line_items"]
    ]


def check_invoice(client: Metronome, clock: Clock, ids: dict, gen: dict) -> None:
    log("usage: 30 calls; the credit covers 10, the commit 12.5 at 40; total 750")
    client.v1.usage.ingest(
        usage=[
            {"transaction_id": "rec-1", "customer_id": "recurring-co", "event_type": "rec",
             "timestamp": clock.event_ts(3), "properties": {"n": 30}},
        ]
    )
    inv = draft(client, clock, ids)
    expected = [
        ("usage", D(10), D(100), D(1000), gen["credit"]),
        ("applied_commit_or_credit", None, None, D(-1000), gen["credit"]),
        ("usage", D("12.5"), D(40), D(500), gen["commit"]),
        ("applied_commit_or_credit", None, None, D(-500), gen["commit"]),
        ("usage", D("7.5"), D(100), D(750), None),
    ]
    got = lines(inv)
    assert got == expected, f"{got} != {expected}\n{dump(inv)}"
    assert num(inv["subtotal"], "subtotal") == D(2250), dump(inv)
    assert num(inv["total"], "total") == D(750), dump(inv)
    listed = body_of(
        client.v1.contracts.with_raw_response.list_balances(
            customer_id=ids["customer"], include_contract_balances=True, include_balance=True
        )
    )["data"]
    by_id = {b["id"]: b for b in listed}
    for key in ("credit", "commit"):
        assert num(by_id[gen[key]]["balance"], "balance") == 0, dump(by_id[gen[key]])


def check_edit(client: Metronome, clock: Clock, ids: dict) -> None:
    log("an edit adds a recurring credit of 200: two more units covered, total 550")
    client.v2.contracts.edit(
        customer_id=ids["customer"],
        contract_id=ids["contract"],
        add_recurring_credits=[monthly(ids["fixed"], "Top-up", {"unit_price": 200, "quantity": 1}, 3, clock)],
    )
    inv = draft(client, clock, ids)
    assert num(inv["total"], "total") == D(550), dump(inv)
    history = body_of(
        client.v2.contracts.with_raw_response.get_edit_history(contract_id=ids["contract"], customer_id=ids["customer"])
    )["data"]
    added = [e for e in history if e.get("add_recurring_credits")]
    assert len(added) == 1 and added[0]["add_recurring_credits"][0]["name"] == "Top-up", dump(history)


def check_errors(client: Metronome, clock: Clock, ids: dict) -> None:
    log("a recurring credit with an invoice amount is a 400; nothing is stored")
    before = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["customer"]))["data"]
    bad = monthly(ids["fixed"], "Bad", {"unit_price": 1, "quantity": 1}, 1, clock)
    bad["invoice_amount"] = {"unit_price": 1, "quantity": 1, "credit_type_id": USD}
    try:
        client.v1.contracts.create(
            customer_id=ids["customer"], starting_at=iso(clock.contract_start), recurring_credits=[bad]
        )
    except metronome.BadRequestError as e:
        assert "recurring_credits[0].invoice_amount" in e.body["message"], e.body
    else:
        raise AssertionError("a recurring credit with an invoice amount was accepted")
    after = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["customer"]))["data"]
    assert len(after) == len(before), dump(after)


def main() -> int:
    base_url = os.environ["TALLY_BASE_URL"]
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=base_url, max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    gen = check_reads(client, clock, ids)
    check_invoice(client, clock, ids, gen)
    check_edit(client, clock, ids)
    check_errors(client, clock, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "recurring")
