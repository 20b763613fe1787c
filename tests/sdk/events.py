#!/usr/bin/env python3
"""Event search driven through Metronome's official Python SDK (`client.v1.usage.search`).

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), with `metronome-sdk` 4.12.0
and only `base_url` changed. Events sent an hour ago (transaction ids unique to the run):

  m: the customer's alias, matching the COUNT metric · u: the customer's id, an event type no
  metric matches · x: a customer nobody has · m again (a duplicate) · bad: an invalid timestamp

1. Search answers m (counted and its duplicate), u and x, not bad nor an id never sent; each with
   the customer as sent, the matched customer (none for x), the matched metric (none for u), the
   properties as exact text, and no finalized invoice.
2. Refusals: an empty list, 101 ids (BadRequestError).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone

import metronome
from metronome import Metronome

from quickstart import body_of, iso, run_script


def log(msg: str) -> None:
    print(f"[events] {msg}", flush=True)


def main() -> int:
    client = Metronome(
        bearer_token=os.environ["TALLY_TOKEN"], base_url=os.environ["TALLY_BASE_URL"], max_retries=0
    )
    run = uuid.uuid4().hex[:8]
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    metric = client.v1.billable_metrics.create(
        name=f"Search calls {run}", aggregation_type="COUNT",
        event_type_filter={"in_values": [f"search_call_{run}"]},
    ).data.id
    alias = f"search-sdk-{run}"
    customer = client.v1.customers.create(name=f"Search SDK {run}", ingest_aliases=[alias]).data.id
    m, u, x, bad = (f"{k}-{run}" for k in ("m", "u", "x", "bad"))
    call = f"search_call_{run}"
    res = client.v1.usage.with_raw_response.ingest(usage=[
        {"transaction_id": m, "customer_id": alias, "event_type": call, "timestamp": iso(at),
         "properties": {"region": "eu", "n": "0.10"}},
        {"transaction_id": u, "customer_id": customer, "event_type": "other", "timestamp": iso(at)},
        {"transaction_id": x, "customer_id": f"nobody-{run}", "event_type": call,
         "timestamp": iso(at)},
        {"transaction_id": m, "customer_id": alias, "event_type": call,
         "timestamp": iso(at + timedelta(minutes=1))},
        {"transaction_id": bad, "customer_id": alias, "event_type": call, "timestamp": "yesterday"},
    ])
    summary = body_of(res)["data"]
    assert (summary["accepted"], summary["duplicates"]) == (3, 1), summary

    log("search")
    found = client.v1.usage.search(transaction_ids=[m, u, x, bad, f"never-{run}"])
    got = sorted((e.transaction_id, bool(e.is_duplicate)) for e in found)
    assert got == [(m, False), (m, True), (u, False), (x, False)], got
    by = {(e.transaction_id, bool(e.is_duplicate)): e for e in found}
    first, dup = by[(m, False)], by[(m, True)]
    assert first.customer_id == alias and first.event_type == call, first
    assert first.timestamp == at, (first.timestamp, at)
    assert dup.timestamp == at + timedelta(minutes=1), dup.timestamp
    assert first.properties == {"region": "eu", "n": "0.10"}, first.properties
    assert first.matched_customer.id == customer, first.matched_customer
    assert first.matched_customer.name == f"Search SDK {run}", first.matched_customer
    assert [b.id for b in first.matched_billable_metrics] == [metric], first.matched_billable_metrics
    assert first.matched_billable_metrics[0].aggregation_type == "COUNT"
    assert first.processed_at is not None and first.id != dup.id
    assert (first.model_extra or {}).get("finalized_invoice_ids") == [], first.model_extra
    un = by[(u, False)]
    assert un.matched_customer.id == customer and not un.matched_billable_metrics, un
    unknown = by[(x, False)]
    assert unknown.matched_customer is None, unknown.matched_customer
    assert [b.id for b in unknown.matched_billable_metrics] == [metric]

    log("refusals")
    for ids in ([], [f"t{i}" for i in range(101)]):
        try:
            client.v1.usage.search(transaction_ids=ids)
        except metronome.BadRequestError:
            pass
        else:
            raise AssertionError(f"search of {len(ids)} ids was not refused")
    log("ok")
    return 0


if __name__ == "__main__":
    run_script(main, "events")
