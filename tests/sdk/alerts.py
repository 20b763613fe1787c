#!/usr/bin/env python3
"""Alerts (threshold notifications) driven end to end through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed:

1. A card prices Calls FLAT 100 (cents); the customer's contract has a credit of 1,000.
2. Three alerts on the customer: usage of Calls ≥ 5, the contract credit balance ≤ 500, spend
   (the draft's total after the credit) ≥ 200. All are `ok` once evaluated.
3. 4 calls: usage 4, credit left 600, total 0: all ok. 2 more: usage 6 and credit 400 are in
   alarm; spend (total 0) is ok. 6 more: charges 1,200, the credit covers 1,000, total 200: the
   spend alert is in alarm too. Statuses change within seconds of the ingest (the evaluator runs
   as usage arrives), polled with a deadline.
4. `reset` puts the usage alert back to evaluating and re-evaluates it: in alarm again.
5. `list` shows the three with their statuses; archiving one hides it unless ARCHIVED is asked.
6. Refusals: a usage alert without a metric and a negative threshold are BadRequestError, an
   unknown customer NotFoundError, a reused uniqueness_key ConflictError.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, expect_error, iso, month_start, num, pause, run_script

D = Decimal
PATIENCE_S = 5.0


def log(msg: str) -> None:
    print(f"[alerts] {msg}", flush=True)


def setup(client: Metronome, clock: Clock) -> dict:
    start = iso(clock.contract_start)
    year = iso(clock.contract_start + timedelta(days=366))
    metric = client.v1.billable_metrics.create(
        name="Calls", aggregation_type="COUNT", event_type_filter={"in_values": ["call"]}
    ).data.id
    calls = client.v1.contracts.products.create(name="Calls", type="USAGE", billable_metric_id=metric).data.id
    fixed = client.v1.contracts.products.create(name="Credit", type="FIXED").data.id
    card = client.v1.contracts.rate_cards.create(name="Alerts").data.id
    client.v1.contracts.rate_cards.rates.add(
        rate_card_id=card, product_id=calls, rate_type="FLAT", price=100, entitled=True, starting_at=start
    )
    customer = client.v1.customers.create(name="Alerted", ingest_aliases=["alerted-co"]).data.id
    client.v1.contracts.create(
        customer_id=customer,
        rate_card_id=card,
        starting_at=start,
        credits=[
            {
                "product_id": fixed,
                "name": "Welcome credit",
                "priority": 1,
                "access_schedule": {"schedule_items": [{"amount": 1000, "starting_at": start, "ending_before": year}]},
            }
        ],
    )
    return {"metric": metric, "customer": customer}


def status(client: Metronome, customer: str, alert: str) -> str | None:
    return client.v1.customers.alerts.retrieve(customer_id=customer, alert_id=alert).data.customer_status


IDS: dict[str, str] = {}


def await_statuses(client: Metronome, customer: str, want: dict[str, str]) -> None:
    """Polls until every alert named in `want` (keys of IDS) has its wanted status, failing
    after PATIENCE_S."""
    deadline = time.monotonic() + PATIENCE_S
    while True:
        got = {name: status(client, customer, IDS[name]) for name in want}
        if got == want:
            log(f"  statuses {got}")
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"statuses after {PATIENCE_S}s: {got}, wanted {want}")
        pause(0.1)


def current_period_ts(k: int) -> str:
    """The k-th (0..15) timestamp in the last 30 hours of the period that holds now: usage and
    spend alerts look at that period, which on a month's first hours is not the one `Clock`'s
    events (now - 2 h) fall in. Waits until a minute past a month's start if needed."""
    assert 0 <= k < 16
    now = datetime.now(timezone.utc)
    if now - month_start(now) < timedelta(minutes=1):
        pause(61 - (now - month_start(now)).total_seconds())
        now = datetime.now(timezone.utc)
    lo = max(month_start(now), now - timedelta(hours=30)) + timedelta(seconds=1)
    width_s = int((now - lo).total_seconds()) - 1
    return iso(lo + timedelta(seconds=width_s * k // 16))


def ingest(client: Metronome, tag: str, n: int) -> None:
    client.v1.usage.ingest(
        usage=[
            {
                "transaction_id": f"alerts-{tag}-{i}",
                "customer_id": "alerted-co",
                "event_type": "call",
                "timestamp": current_period_ts(i % 16),
            }
            for i in range(n)
        ]
    )


def main() -> int:
    client = Metronome(bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0)
    clock = Clock()
    ids = setup(client, clock)
    customer = ids["customer"]

    log("three alerts on the customer")
    IDS["usage"] = client.v1.alerts.create(
        alert_type="usage_threshold_reached",
        name="5 calls",
        threshold=5,
        customer_id=customer,
        billable_metric_id=ids["metric"],
        uniqueness_key="alerts-usage-5",
    ).data.id
    IDS["credit"] = client.v1.alerts.create(
        alert_type="low_remaining_contract_credit_balance_reached",
        name="credit at 500",
        threshold=500,
        customer_id=customer,
    ).data.id
    IDS["spend"] = client.v1.alerts.create(
        alert_type="spend_threshold_reached", name="spend 200", threshold=200, customer_id=customer
    ).data.id
    await_statuses(client, customer, {"usage": "ok", "credit": "ok", "spend": "ok"})
    raw = client.v1.customers.alerts.with_raw_response.retrieve(customer_id=customer, alert_id=IDS["credit"])
    got = body_of(raw)["data"]["alert"]
    assert got["type"] == "low_remaining_contract_credit_balance_reached", got
    assert got["status"] == "enabled", got
    assert num(got["threshold"], "threshold") == D(500), got

    log("4 calls: usage 4, credit left 600, total 0")
    ingest(client, "a", 4)
    pause(1.5)
    await_statuses(client, customer, {"usage": "ok", "credit": "ok", "spend": "ok"})
    log("2 more: usage 6 and credit 400 in alarm; the total is still 0")
    ingest(client, "b", 2)
    await_statuses(client, customer, {"usage": "in_alarm", "credit": "in_alarm", "spend": "ok"})
    log("6 more: charges 1,200, credit 1,000, total 200")
    ingest(client, "c", 6)
    await_statuses(client, customer, {"usage": "in_alarm", "credit": "in_alarm", "spend": "in_alarm"})
    got = client.v1.customers.alerts.retrieve(customer_id=customer, alert_id=IDS["spend"]).data
    assert got.triggered_by == "usage", got

    log("reset re-arms and re-evaluates")
    client.v1.customers.alerts.reset(customer_id=customer, alert_id=IDS["usage"])
    got = client.v1.customers.alerts.retrieve(customer_id=customer, alert_id=IDS["usage"]).data
    assert got.customer_status == "in_alarm" and got.triggered_by == "reset", got

    log("list, archive")
    listed = list(client.v1.customers.alerts.list(customer_id=customer))
    assert [a.alert.id for a in listed] == [IDS["usage"], IDS["credit"], IDS["spend"]], listed
    assert all(a.customer_status == "in_alarm" for a in listed), listed
    client.v1.alerts.archive(id=IDS["spend"])
    assert len(list(client.v1.customers.alerts.list(customer_id=customer))) == 2
    every = list(client.v1.customers.alerts.list(customer_id=customer, alert_statuses=["ENABLED", "ARCHIVED"]))
    assert [a.alert.status for a in every] == ["enabled", "enabled", "archived"], every

    log("refusals")
    expect_error(
        metronome.BadRequestError,
        lambda: client.v1.alerts.create(alert_type="usage_threshold_reached", name="x", threshold=1),
        "a usage alert without billable_metric_id",
    )
    expect_error(
        metronome.BadRequestError,
        lambda: client.v1.alerts.create(alert_type="spend_threshold_reached", name="x", threshold=-1),
        "a negative threshold",
    )
    expect_error(
        metronome.NotFoundError,
        lambda: client.v1.alerts.create(
            alert_type="spend_threshold_reached",
            name="x",
            threshold=1,
            customer_id="00000000-0000-0000-0000-000000000000",
        ),
        "an unknown customer",
    )
    expect_error(
        metronome.ConflictError,
        lambda: client.v1.alerts.create(
            alert_type="usage_threshold_reached",
            name="again",
            threshold=5,
            customer_id=customer,
            billable_metric_id=ids["metric"],
            uniqueness_key="alerts-usage-5",
        ),
        "a reused uniqueness_key",
    )
    assert len(list(client.v1.customers.alerts.list(customer_id=customer, alert_statuses=["ENABLED", "ARCHIVED"]))) == 3
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "alerts")
