#!/usr/bin/env python3
"""Usage queries driven through Metronome's official Python SDK (`client.v1.usage.list`,
`list_with_groups`, `customers.list_billable_metrics`, `customers.list_costs`).

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed. D0 = the UTC midnight two days ago; events sent under both of the
customer's aliases, hand-computed and compared as exact Decimals from the raw bodies:

  D0-2h+10m us/a 0.333 · D0-2h+50m eu/a 0.333 · D0-1h+5m us/b 0.334 · D0+30m us/a 1.001 ·
  D0+13h (no region)/b 2.5

1. DAY windows over [D0-2h, D0+14h): tokens 1 and 3.501, calls 3 and 2; `group_by` region:
   {us: 0.667, eu: 0.333} then {us: 1.001}.
2. HOUR windows over four days for every customer and both metrics: 192 items over two pages,
   walked by the SDK's paginator, none twice.
3. `list_with_groups`, NONE, compound key (region, tier) filtered to us: us/a 1.334, us/b 0.334,
   one item a page.
4. The customer's billable metrics (both, on its contract's products) and its costs.
5. Refusals: a non-hour-aligned start, a group key not on the metric (BadRequestError).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import body_of, dump, iso, month_start, next_month_start, num, run_script

D = Decimal


def log(msg: str) -> None:
    print(f"[usage] {msg}", flush=True)


def val(v):
    return None if v is None else num(v, "value")


def main() -> int:
    client = Metronome(
        bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0
    )
    now = datetime.now(timezone.utc)
    d0 = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    keys = [["region"], ["region", "tier"]]
    calls = client.v1.billable_metrics.create(
        name="Usage calls", aggregation_type="COUNT",
        event_type_filter={"in_values": ["usage_call"]}, group_keys=keys,
    ).data.id
    tokens = client.v1.billable_metrics.create(
        name="Usage tokens", aggregation_type="SUM", aggregation_key="n",
        event_type_filter={"in_values": ["usage_call"]}, group_keys=keys,
    ).data.id
    customer = client.v1.customers.create(
        name="Usage SDK", ingest_aliases=["usage-sdk-a", "usage-sdk-b"]
    ).data.id
    card = client.v1.contracts.rate_cards.create(name="Usage card").data.id
    start = month_start(d0 - timedelta(days=3))
    for metric, price in [(calls, 2), (tokens, 0.5)]:
        product = client.v1.contracts.products.create(
            name=f"P {metric[:8]}", type="USAGE", billable_metric_id=metric
        ).data.id
        client.v1.contracts.rate_cards.rates.add(
            rate_card_id=card, product_id=product, rate_type="FLAT", price=price, entitled=True,
            starting_at=iso(start),
        )
    client.v1.contracts.create(customer_id=customer, rate_card_id=card, starting_at=iso(start))

    events = [
        ("u1", "usage-sdk-a", d0 - timedelta(minutes=110), {"region": "us", "tier": "a", "n": "0.333"}),
        ("u2", "usage-sdk-b", d0 - timedelta(minutes=70), {"region": "eu", "tier": "a", "n": "0.333"}),
        ("u3", "usage-sdk-a", d0 - timedelta(minutes=55), {"region": "us", "tier": "b", "n": "0.334"}),
        ("u4", "usage-sdk-b", d0 + timedelta(minutes=30), {"region": "us", "tier": "a", "n": "1.001"}),
        ("u5", "usage-sdk-a", d0 + timedelta(hours=13, minutes=10), {"tier": "b", "n": "2.5"}),
    ]
    client.v1.usage.ingest(usage=[
        {"transaction_id": tx, "customer_id": who, "event_type": "usage_call",
         "timestamp": iso(at), "properties": props}
        for tx, who, at, props in events
    ])
    frm, to = d0 - timedelta(hours=2), d0 + timedelta(hours=14)

    log("DAY windows with group_by")
    body = body_of(client.v1.usage.with_raw_response.list(
        starting_on=iso(frm), ending_before=iso(to), window_size="DAY", customer_ids=[customer],
        billable_metrics=[{"id": tokens, "group_by": {"key": "region"}}, {"id": calls}],
    ))
    got = [(i["billable_metric_id"], i["start_timestamp"], val(i["value"]),
            {k: val(v) for k, v in i["groups"].items()} if "groups" in i else None)
           for i in body["data"]]
    expected = [
        (tokens, iso(frm), D("1"), {"us": D("0.667"), "eu": D("0.333")}),
        (tokens, iso(d0), D("3.501"), {"us": D("1.001")}),
        (calls, iso(frm), D(3), None),
        (calls, iso(d0), D(2), None),
    ]
    assert got == expected, f"{got} != {expected}"
    assert body["next_page"] is None, dump(body)
    typed = list(client.v1.usage.list(
        starting_on=iso(frm), ending_before=iso(to), window_size="day", customer_ids=[customer],
    ))
    assert [t.customer_id for t in typed] == [customer] * 4, typed

    log("HOUR windows over four days: the SDK walks two pages")
    items = list(client.v1.usage.list(
        starting_on=iso(d0 - timedelta(days=2)), ending_before=iso(d0 + timedelta(days=2)),
        window_size="HOUR",
    ))
    assert len(items) == 192, len(items)
    seen = {(i.customer_id, i.billable_metric_id, i.start_timestamp) for i in items}
    assert len(seen) == 192, "an item appears twice"
    busy = sorted((i.start_timestamp, i.billable_metric_id) for i in items if i.value is not None)
    assert len(busy) == 2 * 4, busy

    log("list_with_groups: compound key filtered to us, one a page")
    page = client.v1.usage.list_with_groups(
        customer_id=customer, billable_metric_id=tokens, window_size="NONE",
        starting_on=iso(frm), ending_before=iso(to), group_key=["region", "tier"],
        group_filters={"region": ["us"]}, limit=1,
    )
    groups = [(g.group, g.value) for g in page]
    assert [g for g, _ in groups] == [{"region": "us", "tier": "a"}, {"region": "us", "tier": "b"}], groups
    raw = body_of(client.v1.usage.with_raw_response.list_with_groups(
        customer_id=customer, billable_metric_id=tokens, window_size="NONE",
        starting_on=iso(frm), ending_before=iso(to), group_key=["region", "tier"],
        group_filters={"region": ["us"]},
    ))
    assert [val(g["value"]) for g in raw["data"]] == [D("1.334"), D("0.334")], dump(raw)

    log("billable metrics and costs of the customer")
    names = sorted(m.name for m in client.v1.customers.list_billable_metrics(customer_id=customer))
    assert names == ["Usage calls", "Usage tokens"], names
    period = month_start(now - timedelta(hours=2))
    costs = body_of(client.v1.customers.with_raw_response.list_costs(
        customer_id=customer, starting_on=iso(month_start(d0 - timedelta(days=3))),
        ending_before=iso(next_month_start(now)),
    ))["data"]
    assert costs, dump(costs)
    total = sum(num(c["cost"], "cost") for p in costs for c in p["credit_types"].values())
    assert any(p["start_timestamp"] == iso(period) for p in costs), dump(costs)
    if period <= frm:
        # Every event in the open period: 5 calls x 2 + 4.501 tokens x 0.5. (Early in a month
        # the previous period may have been finalized before the events arrived.)
        assert total == D("12.2505"), dump(costs)

    log("refusals")
    for kwargs, needle in [
        ({"starting_on": iso(frm + timedelta(minutes=30)), "ending_before": iso(to)}, "hour"),
    ]:
        try:
            client.v1.usage.list(window_size="DAY", **kwargs)
        except metronome.BadRequestError as e:
            assert needle in e.body["message"], e.body
        else:
            raise AssertionError(f"accepted {kwargs}")
    try:
        client.v1.usage.list_with_groups(
            customer_id=customer, billable_metric_id=tokens, window_size="DAY",
            starting_on=iso(frm), ending_before=iso(to), group_key=["tier"],
        )
    except metronome.BadRequestError as e:
        assert "group key" in e.body["message"], e.body
    else:
        raise AssertionError("a group key not on the metric was accepted")
    log("PASS")
    return 0


if __name__ == "__main__":
    run_script(main, "usage")
