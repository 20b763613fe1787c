#!/usr/bin/env python3
"""Subscriptions driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed. Expected figures are computed here, independently of the server,
with Python's Decimal (prorated unit prices half-even at 12 places, as documented):

1. A SUBSCRIPTION product `Seats` with a MONTHLY rate of 3,000 and an ANNUAL one of 30,000 (the
   SDK's `rates.add` with `billing_frequency`). Contract A subscribes to 4 monthly seats from its
   start, ADVANCE, prorated, on usage invoices: the current period's draft charges 4 x 3,000.
2. A v2 edit adds 2 seats from the current hour (`quantity_delta`): the draft adds
   2 x 3,000 x (time left / period length); a later `quantity` of 1 (a decrease, next month)
   changes nothing in this period. The contract reads back the subscription with the quantity
   now and the change to come; `retrieve_subscription_quantity_history` lists 4 then 6.
3. Contract B subscribes ARREARS on SCHEDULED invoices: nothing is billed before the period
   ends (no SCHEDULED invoice, no subscription line on the usage draft).
4. Contract C is SEAT_BASED with seats u1 and u2 (6,000); adding u3 and u4 from the current hour
   bills 2 more seats for the rest of the period, removing u1 later credits nothing.
5. A subscription on a USAGE product, a weekly one the card has no rate for, and a quantity
   update that would go negative are BadRequestErrors naming the field; nothing changes.
"""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, iso, num, parse_ts, run_script

D = Decimal


def log(msg: str) -> None:
    print(f"[subscriptions] {msg}", flush=True)


def monthly(product: str, **extra) -> dict:
    return {
        "collection_schedule": "ADVANCE",
        "proration": {"is_prorated": True},
        "subscription_rate": {"billing_frequency": "MONTHLY", "product_id": product},
        "initial_quantity": 4,
        **extra,
    }


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    metric = client.v1.billable_metrics.create(
        name="Sub calls", aggregation_type="SUM", aggregation_key="n", event_type_filter={"in_values": ["subc"]}
    ).data.id
    calls = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    seats = client.v1.contracts.products.create(name="Seats", type="SUBSCRIPTION").data.id
    card = client.v1.contracts.rate_cards.create(name="Subscriptions").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=calls, rate_type="FLAT", price=100, entitled=True, starting_at=start
    )
    for frequency, price in [("MONTHLY", 3000), ("ANNUAL", 30000)]:
        client.v1.contracts.rate_cards.rates.add(
            rate_card_id=card, product_id=seats, rate_type="SUBSCRIPTION", price=price, entitled=True,
            starting_at=start, billing_frequency=frequency,
        )
    a = client.v1.customers.create(name="Subs A", ingest_aliases=["subs-a"]).data.id
    b = client.v1.customers.create(name="Subs B", ingest_aliases=["subs-b"]).data.id
    contract_a = client.v1.contracts.create(
        customer_id=a, rate_card_id=card, starting_at=start, subscriptions=[monthly(seats, name="Team seats")]
    ).data.id
    contract_b = client.v1.contracts.create(
        customer_id=b, rate_card_id=card, starting_at=start,
        subscriptions=[monthly(seats, collection_schedule="ARREARS",
                               billing_cycle_config={"invoice_placement": "ON_SCHEDULED_INVOICE"})],
    ).data.id
    c = client.v1.customers.create(name="Subs C", ingest_aliases=["subs-c"]).data.id
    contract_c = client.v1.contracts.create(
        customer_id=c, rate_card_id=card, starting_at=start,
        subscriptions=[{
            "collection_schedule": "ADVANCE", "proration": {"is_prorated": True},
            "subscription_rate": {"billing_frequency": "MONTHLY", "product_id": seats},
            "quantity_management_mode": "SEAT_BASED",
            "seat_config": {"seat_group_key": "user_id", "initial_seat_ids": ["u1", "u2"]},
        }],
    ).data.id
    return {"calls": calls, "seats": seats, "card": card, "a": a, "b": b, "c": c, "contract_a": contract_a,
            "contract_b": contract_b, "contract_c": contract_c}


def draft(client: Metronome, clock: Clock, customer: str) -> dict:
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=customer, status="DRAFT"))["data"]
    found = [i for i in page if i.get("type") == "USAGE" and parse_ts(i["start_timestamp"]) == clock.period_start]
    assert len(found) == 1, dump(page)
    return found[0]


def sub_lines(inv: dict) -> list:
    return [
        (num(l["quantity"], "quantity"), num(l["unit_price"], "unit_price"), num(l["total"], "total"), l["is_prorated"])
        for l in inv["line_items"]
        if l["type"] == "subscription"
    ]


def prorated(price: Decimal, part: timedelta, whole: timedelta) -> Decimal:
    exact = price * D(int(part.total_seconds())) / D(int(whole.total_seconds()))
    return exact.quantize(D("1e-12"), rounding=ROUND_HALF_EVEN).normalize()


def check_advance(client: Metronome, clock: Clock, ids: dict) -> None:
    log("contract A: 4 monthly seats in advance on the current draft")
    typed = client.v2.contracts.retrieve(contract_id=ids["contract_a"], customer_id=ids["a"]).data
    sub = typed.subscriptions[0]
    assert sub.collection_schedule == "ADVANCE" and sub.subscription_rate.product.name == "Seats", sub
    assert sub.proration.is_prorated and sub.proration.invoice_behavior == "BILL_IMMEDIATELY", sub
    inv = draft(client, clock, ids["a"])
    # Periods are whole months here (the contract starts on a month's first), so no proration.
    assert sub_lines(inv) == [(D(4), D(3000), D(12000), False)], dump(inv)
    line = [l for l in inv["line_items"] if l["type"] == "subscription"][0]
    assert line["subscription_id"] == sub.id and line["name"] == "Team seats", dump(line)

    at = (clock.now - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    log(f"+2 seats from {iso(at)}, then 1 seat from the period's end (a decrease: next period)")
    client.v2.contracts.edit(
        customer_id=ids["a"], contract_id=ids["contract_a"],
        update_subscriptions=[{"subscription_id": sub.id, "quantity_updates": [
            {"starting_at": iso(at), "quantity_delta": 2},
            {"starting_at": iso(clock.period_end), "quantity": 1},
        ]}],
    )
    inv = draft(client, clock, ids["a"])
    whole = clock.period_end - clock.period_start
    if at > clock.period_start:
        unit = prorated(D(3000), clock.period_end - at, whole)
        expected = [(D(4), D(3000), D(12000), False), (D(2), unit, D(2) * unit, True)]
    else:
        expected = [(D(6), D(3000), D(18000), False)]
    assert sub_lines(inv) == expected, f"{sub_lines(inv)} != {expected}: {dump(inv)}"
    assert num(inv["total"], "total") == sum(t for _, _, t, _ in expected), dump(inv)

    # On a month's first hours the period (holding now - 2 h) has ended: the decrease at its end
    # is then the quantity now, and part of the history.
    ended = clock.period_end <= clock.now
    typed = client.v2.contracts.retrieve(contract_id=ids["contract_a"], customer_id=ids["a"]).data
    schedule = [(D(str(q.quantity)), q.starting_at) for q in typed.subscriptions[0].quantity_schedule]
    assert [q for q, _ in schedule] == ([D(1)] if ended else [D(6), D(1)]), schedule
    history = client.v1.contracts.retrieve_subscription_quantity_history(
        customer_id=ids["a"], contract_id=ids["contract_a"], subscription_id=sub.id
    ).data
    got = [(D(str(h.data[0].quantity)), D(str(h.data[0].total))) for h in history.history]
    want = [(D(4), D(12000)), (D(6), D(18000))] if at > clock.contract_start else [(D(6), D(18000))]
    if ended:
        want.append((D(1), D(3000)))
    assert got == want, history


def check_arrears(client: Metronome, clock: Clock, ids: dict) -> None:
    log("contract B: in arrears on SCHEDULED invoices, nothing before the period ends")
    inv = draft(client, clock, ids["b"])
    assert sub_lines(inv) == [], dump(inv)
    page = body_of(client.v1.customers.invoices.with_raw_response.list(customer_id=ids["b"]))["data"]
    reached = [i for i in page if i.get("type") == "SCHEDULED"]
    # Only months that ended by now are billed, each on the SCHEDULED invoice at its end: the
    # contract's first month if it is over, and the period itself on a month's first hours.
    ends = [m for m in (clock.period_start, clock.period_end) if clock.contract_start < m <= clock.now]
    assert sorted(parse_ts(i["start_timestamp"]) for i in reached) == ends, dump(page)
    for inv in reached:
        assert sub_lines(inv) == [(D(4), D(3000), D(12000), False)], dump(inv)


def check_seats(client: Metronome, clock: Clock, ids: dict) -> None:
    log("contract C: seat-based, 2 seats, then u3 and u4 from the current hour, u1 removed later")
    typed = client.v2.contracts.retrieve(contract_id=ids["contract_c"], customer_id=ids["c"]).data
    sub = typed.subscriptions[0]
    assert sub.quantity_management_mode == "SEAT_BASED" and sub.seat_config.seat_group_key == "user_id", sub
    assert sub_lines(draft(client, clock, ids["c"])) == [(D(2), D(3000), D(6000), False)]
    at = (clock.now - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    client.v2.contracts.edit(
        customer_id=ids["c"], contract_id=ids["contract_c"],
        update_subscriptions=[{"subscription_id": sub.id, "seat_updates": {
            "add_seat_ids": [{"seat_ids": ["u3", "u4"], "starting_at": iso(at)}],
            "remove_seat_ids": [{"seat_ids": ["u1"], "starting_at": iso(clock.period_end - timedelta(hours=1))}],
        }}],
    )
    inv = draft(client, clock, ids["c"])
    whole = clock.period_end - clock.period_start
    if at > clock.period_start:
        unit = prorated(D(3000), clock.period_end - at, whole)
        expected = [(D(2), D(3000), D(6000), False), (D(2), unit, D(2) * unit, True)]
    else:
        expected = [(D(4), D(3000), D(12000), False)]
    assert sub_lines(inv) == expected, f"{sub_lines(inv)} != {expected}: {dump(inv)}"


def refused(call, field: str) -> None:
    try:
        call()
    except metronome.BadRequestError as e:
        assert field in e.body["message"], e.body
    else:
        raise AssertionError(f"accepted: expected a 400 naming {field}")


def check_errors(client: Metronome, clock: Clock, ids: dict) -> None:
    log("refusals: a USAGE product, a frequency without a rate, a negative quantity")
    before = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["a"]))["data"]
    start = iso(clock.contract_start)
    refused(lambda: client.v1.contracts.create(
        customer_id=ids["a"], rate_card_id=ids["card"], starting_at=start,
        subscriptions=[monthly(ids["calls"])]), "subscriptions[0].subscription_rate.product_id")
    weekly = monthly(ids["seats"])
    weekly["subscription_rate"]["billing_frequency"] = "WEEKLY"
    refused(lambda: client.v1.contracts.create(
        customer_id=ids["a"], rate_card_id=ids["card"], starting_at=start, subscriptions=[weekly]),
        "subscriptions[0].subscription_rate")
    sub = client.v2.contracts.retrieve(contract_id=ids["contract_a"], customer_id=ids["a"]).data.subscriptions[0]
    refused(lambda: client.v2.contracts.edit(
        customer_id=ids["a"], contract_id=ids["contract_a"],
        update_subscriptions=[{"subscription_id": sub.id, "quantity_updates": [
            {"starting_at": iso(clock.period_end), "quantity_delta": -7}]}]),
        "update_subscriptions[0].quantity_updates")
    after = body_of(client.v1.contracts.with_raw_response.list(customer_id=ids["a"]))["data"]
    assert after == before, "a refused request changed the customer's contracts"


def main() -> int:
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    check_advance(client, clock, ids)
    check_arrears(client, clock, ids)
    check_seats(client, clock, ids)
    check_errors(client, clock, ids)
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "subscriptions")
