#!/usr/bin/env python3
"""An SQL billable metric billed by region, driven through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed. The quickstart's example: unique users per region,

  SELECT COUNT(DISTINCT properties.user_id) AS value, properties.region AS region
  FROM events WHERE event_type = '<call>' GROUP BY properties.region

on a product priced by region (eu 0.333333, us 1.5 a user). Events in the period holding now
(the quickstart's Clock, so it holds at any hour of a month): eu u1 u1 u2 u3, us u1 u4, a
duplicate of an eu event with another user (counted nowhere), a `login` by u9 in eu (another
type), an event of another customer.

1. The metric reads back as `custom_sql` with its query and the derived group key.
2. The draft: eu 3 users x 0.333333 = 0.999999, us 2 x 1.5 = 3, total 3.999999.
3. Event search names the SQL metric for a call, not for the login.
4. Refusals: SQL beside aggregation_type; a write; another table (BadRequestError).
"""

from __future__ import annotations

import os
import uuid
from decimal import Decimal

import metronome
from metronome import Metronome

from quickstart import Clock, body_of, dump, fetch_draft, iso, num, run_script

D = Decimal


def log(msg: str) -> None:
    print(f"[sql_metrics] {msg}", flush=True)


def main() -> int:
    client = Metronome(
        bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0
    )
    clock = Clock()
    run = uuid.uuid4().hex[:8]
    call = f"api_call_{run}"
    sql = (
        "SELECT COUNT(DISTINCT properties.user_id) AS value, properties.region AS region "
        f"FROM events WHERE event_type = '{call}' GROUP BY properties.region"
    )
    log("metric, product priced by region, rate card, customer, contract")
    metric = client.v1.billable_metrics.create(name=f"Unique users {run}", sql=sql).data.id
    got = body_of(client.v1.billable_metrics.with_raw_response.retrieve(billable_metric_id=metric))
    m = got["data"]
    assert m["aggregation_type"] == "custom_sql" and m["sql"] == sql, dump(m)
    assert m["group_keys"] == [["region"]], dump(m)
    product = client.v1.contracts.products.create(
        name=f"Users {run}", type="USAGE", billable_metric_id=metric, pricing_group_key=["region"],
    ).data.id
    start = iso(clock.contract_start)
    card = client.v1.contracts.rate_cards.create(name=f"Users {run}").data.id
    for region, price in (("eu", 0.333333), ("us", 1.5)):
        client.v1.contracts.rate_cards.rates.add(
            rate_card_id=card, product_id=product, rate_type="FLAT", price=price,
            pricing_group_values={"region": region}, entitled=True, starting_at=start,
        )
    alias = f"sql-sdk-{run}"
    customer = client.v1.customers.create(name=f"SQL SDK {run}", ingest_aliases=[alias]).data.id
    other = client.v1.customers.create(name=f"SQL other {run}", ingest_aliases=[f"o-{alias}"]).data.id
    client.v1.contracts.create(
        customer_id=customer, starting_at=start, rate_card_id=card,
        usage_statement_schedule={"frequency": "MONTHLY"},
    )

    def ev(k: int, who: str, user: str, region: str, kind: str = call, tx: str | None = None):
        return {
            "transaction_id": tx or f"{run}-{k}", "customer_id": who, "event_type": kind,
            "timestamp": clock.event_ts(k), "properties": {"user_id": user, "region": region},
        }

    log("usage")
    res = client.v1.usage.with_raw_response.ingest(usage=[
        ev(0, alias, "u1", "eu"), ev(1, customer, "u1", "eu"), ev(2, alias, "u2", "eu"),
        ev(3, alias, "u3", "eu"), ev(4, alias, "u1", "us"), ev(5, customer, "u4", "us"),
        ev(6, alias, "u7", "eu", tx=f"{run}-2"),
        ev(7, alias, "u9", "eu", kind="login"),
        ev(8, other, "u8", "eu"),
    ])
    summary = body_of(res)["data"]
    assert (summary["accepted"], summary["duplicates"]) == (8, 1), summary
    assert other

    log("draft: eu 3 x 0.333333, us 2 x 1.5")
    inv = fetch_draft(client, clock, customer)
    lines = {
        (line.get("pricing_group_values") or {}).get("region"): line
        for line in inv["line_items"] if line.get("product_id") == product
    }
    assert sorted(lines) == ["eu", "us"], dump(inv)
    for region, qty, total in (("eu", "3", "0.999999"), ("us", "2", "3")):
        line = lines[region]
        assert num(line["quantity"], "quantity") == D(qty), dump(line)
        assert num(line["total"], "total") == D(total), dump(line)
    assert num(inv["total"], "total") == D("3.999999"), dump(inv)

    log("search")
    found = client.v1.usage.search(transaction_ids=[f"{run}-0", f"{run}-7"])
    by = {e.transaction_id: e for e in found if not e.is_duplicate}
    assert [b.id for b in by[f"{run}-0"].matched_billable_metrics] == [metric], by
    assert by[f"{run}-0"].matched_billable_metrics[0].aggregation_type == "custom_sql"
    assert not by[f"{run}-7"].matched_billable_metrics, by

    log("refusals")
    for kwargs in (
        {"sql": sql, "aggregation_type": "COUNT"},
        {"sql": "DELETE FROM events"},
        {"sql": "SELECT COUNT(*) AS value FROM customers"},
        {"sql": "SELECT COUNT(*) AS value FROM events; DROP TABLE events"},
    ):
        try:
            client.v1.billable_metrics.create(name=f"Bad {run}", **kwargs)
        except metronome.BadRequestError:
            pass
        else:
            raise AssertionError(f"created an SQL metric from {kwargs}")
    log("ok")
    return 0


if __name__ == "__main__":
    run_script(main, "sql_metrics")
