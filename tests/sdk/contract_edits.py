#!/usr/bin/env python3
"""Contract changes, driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. A card prices Calls FLAT 100; a customer has one monthly contract; 80 calls this period:
   the draft is 80 x 100 = 8,000.
2. `v1.contracts.amend` adds MULTIPLIER 0.8 from the period start: 80 x 80 = 6,400. v1
   `retrieve` shows the amendment, `initial` without the override and `current` with it.
3. `v2.contracts.edit` removes it, adds OVERWRITE FLAT 37.5 and renames the contract:
   80 x 37.5 = 3,000; the edit echoes the new override's id.
4. `v1.contracts.update_end_date` ends the contract at the period end (the draft is unchanged),
   then a v2 edit with `update_contract_end_date=None` makes it open-ended again.
5. `v2.contracts.get_edit_history` lists the four changes in order.
6. Commits on an edit, and removing an unknown override, are BadRequestErrors naming the field.
"""

from __future__ import annotations

from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, next_month_start, num, parse_ts, run_script

D = Decimal
ALIAS = "edits-co"


def log(msg: str) -> None:
    print(f"[contract_edits] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    metric = client.v1.billable_metrics.create(
        name="Edited calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["ecall"]}
    ).data.id
    product = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    card = client.v1.contracts.rate_cards.create(name="Edits").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=product, rate_type="FLAT", price=100, entitled=True, starting_at=start
    )
    customer = client.v1.customers.create(name="Edits", ingest_aliases=[ALIAS]).data.id
    contract = client.v1.contracts.create(customer_id=customer, rate_card_id=card, starting_at=start).data.id
    client.v1.usage.ingest(
        usage=[
            {"transaction_id": "edit-1", "customer_id": ALIAS, "event_type": "ecall",
             "timestamp": clock.event_ts(3), "properties": {"n": 80}},
        ]
    )
    return {"product": product, "customer": customer, "contract": contract}


def draft_total(client: Metronome, clock: Clock, ids: dict) -> Decimal:
    page = body_of(
        client.v1.customers.invoices.with_raw_response.list(
            customer_id=ids["customer"], contract_id=ids["contract"], status="DRAFT"
        )
    )
    found = [inv for inv in page["data"] if parse_ts(inv["start_timestamp"]) == clock.period_start]
    assert len(found) == 1, dump(page)
    return num(found[0]["total"], "total")


def v1(client: Metronome, ids: dict) -> dict:
    raw = client.v1.contracts.with_raw_response.retrieve(contract_id=ids["contract"], customer_id=ids["customer"])
    return body_of(raw)["data"]


def v2(client: Metronome, ids: dict) -> dict:
    raw = client.v2.contracts.with_raw_response.retrieve(contract_id=ids["contract"], customer_id=ids["customer"])
    return body_of(raw)["data"]


def amend(client: Metronome, clock: Clock, ids: dict) -> str:
    log("amend: MULTIPLIER 0.8 from the period start -> 6,400")
    period = iso(clock.period_start)
    amendment = client.v1.contracts.amend(
        contract_id=ids["contract"],
        customer_id=ids["customer"],
        starting_at=period,
        overrides=[{"starting_at": period, "product_id": ids["product"], "type": "MULTIPLIER", "multiplier": 0.8}],
    ).data.id
    assert draft_total(client, clock, ids) == D(6400)
    contract = v1(client, ids)
    assert contract["initial"]["overrides"] == [], dump(contract)
    assert len(contract["current"]["overrides"]) == 1, dump(contract)
    assert [a["id"] for a in contract["amendments"]] == [amendment], dump(contract)
    typed = client.v1.contracts.retrieve(contract_id=ids["contract"], customer_id=ids["customer"]).data
    assert [a.id for a in typed.amendments] == [amendment], typed
    assert parse_ts(typed.amendments[0].starting_at) == clock.period_start, typed
    return amendment


def edit(client: Metronome, clock: Clock, ids: dict) -> str:
    log("edit: remove the multiplier, add OVERWRITE FLAT 37.5, rename -> 3,000")
    period = iso(clock.period_start)
    multiplier = v2(client, ids)["overrides"][0]["id"]
    raw = client.v2.contracts.with_raw_response.edit(
        contract_id=ids["contract"],
        customer_id=ids["customer"],
        uniqueness_key="sdk-edit-1",
        remove_overrides=[{"id": multiplier}],
        add_overrides=[
            {"starting_at": period, "product_id": ids["product"], "type": "OVERWRITE",
             "overwrite_rate": {"rate_type": "FLAT", "price": 37.5}}
        ],
        update_contract_name="Edited",
    )
    data = body_of(raw)["data"]
    assert draft_total(client, clock, ids) == D(3000)
    contract = v2(client, ids)
    assert contract["name"] == "Edited", dump(contract)
    assert [o["id"] for o in contract["overrides"]] == [data["edit"]["add_overrides"][0]["id"]], dump(data)
    assert data["edit"]["remove_overrides"] == [{"id": multiplier}], dump(data)
    return data["id"]


def end_dates(client: Metronome, clock: Clock, ids: dict) -> str:
    log("updateEndDate to the period end, then open-ended again through an edit")
    end = next_month_start(clock.period_start)
    client.v1.contracts.update_end_date(
        contract_id=ids["contract"], customer_id=ids["customer"], ending_before=iso(end),
        allow_ending_before_finalized_invoice=False,
    )
    assert parse_ts(v2(client, ids)["ending_before"]) == end
    assert draft_total(client, clock, ids) == D(3000)
    reopened = client.v2.contracts.edit(
        contract_id=ids["contract"], customer_id=ids["customer"], update_contract_end_date=None
    ).data.id
    assert "ending_before" not in v2(client, ids)
    assert draft_total(client, clock, ids) == D(3000)
    return reopened


def history(client: Metronome, ids: dict, expected: list[str]) -> None:
    log("getEditHistory lists the changes in order")
    typed = client.v2.contracts.get_edit_history(contract_id=ids["contract"], customer_id=ids["customer"]).data
    got = [e.id for e in typed]
    assert len(got) == 4 and got[0] == expected[0] and got[1] == expected[1] and got[3] == expected[2], got
    raw = body_of(
        client.v2.contracts.with_raw_response.get_edit_history(contract_id=ids["contract"], customer_id=ids["customer"])
    )["data"]
    assert raw[1]["update_contract_name"] == "Edited" and raw[1]["uniqueness_key"] == "sdk-edit-1", dump(raw)
    assert raw[2]["update_contract_end_date"] is not None and raw[3]["update_contract_end_date"] is None, dump(raw)


def errors(client: Metronome, ids: dict) -> None:
    log("refused edits are 400s naming the field, and change nothing")
    before = v1(client, ids)
    cases = [
        ({"add_commits": [{"product_id": ids["product"], "type": "PREPAID"}]}, "add_commits"),
        ({"remove_overrides": [{"id": "00000000-0000-0000-0000-000000000000"}]}, "remove_overrides[0].id"),
        ({}, "changes nothing"),
    ]
    for extra, want in cases:
        try:
            client.v2.contracts.edit(contract_id=ids["contract"], customer_id=ids["customer"], **extra)
        except metronome.BadRequestError as e:
            assert want in e.body["message"], e.body
        else:
            raise AssertionError(f"{extra} was accepted")
    try:
        client.v2.contracts.edit(
            contract_id=ids["contract"], customer_id=ids["customer"], uniqueness_key="sdk-edit-1",
            update_contract_name="again",
        )
    except metronome.ConflictError as e:
        assert "uniqueness key" in e.body["message"], e.body
    else:
        raise AssertionError("a reused uniqueness key was accepted")
    assert v1(client, ids) == before


def main() -> int:
    import os

    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    assert draft_total(client, clock, ids) == D(8000)
    amendment = amend(client, clock, ids)
    edited = edit(client, clock, ids)
    reopened = end_dates(client, clock, ids)
    history(client, ids, [amendment, edited, reopened])
    errors(client, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "contract_edits")
