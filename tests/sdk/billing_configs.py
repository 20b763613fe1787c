#!/usr/bin/env python3
"""Billing-provider configurations and archiving through Metronome's official Python SDK.

Against a running `tally serve` (env TALLY_BASE_URL, TALLY_TOKEN), using only `metronome-sdk`
4.12.0 with `base_url` changed:

1. A customer is created with `customer_billing_provider_configurations`, a legacy
   `billing_config` and `customer_revenue_system_configurations`; every one reads back
   (`retrieve_billing_configurations`, `billing_config.retrieve`, the revenue-system endpoint).
2. `set_billing_configurations` adds configurations to two customers in one call; a call naming
   an unknown customer is a BadRequestError and adds nothing.
3. A contract created with `billing_provider_configuration` (by provider and delivery method)
   reads its `customer_billing_provider_configuration` back through v1 and v2 retrieve; archiving
   that configuration (`archive_billing_configurations`) shows on the contract.
4. `contracts.archive` archives the contract (it leaves the default list), and a contract on an
   archived customer is a BadRequestError.

Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

import metronome
from metronome import Metronome


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def main() -> None:
    client = Metronome(
        bearer_token=os.environ["TALLY_TOKEN"],
        base_url=os.environ["TALLY_BASE_URL"],
        max_retries=0,
    )
    now = datetime.now(timezone.utc)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)

    customer = client.v1.customers.create(
        name="Configured Co",
        ingest_aliases=["configured-co"],
        billing_config={
            "billing_provider_type": "stripe",
            "billing_provider_customer_id": "cus_legacy",
            "stripe_collection_method": "send_invoice",
        },
        customer_billing_provider_configurations=[
            {
                "billing_provider": "stripe",
                "delivery_method": "direct_to_billing_provider",
                "configuration": {"stripe_customer_id": "cus_123", "leave_stripe_invoices_in_draft": True},
            },
            {"billing_provider": "aws_marketplace", "delivery_method": "tackle"},
        ],
        customer_revenue_system_configurations=[
            {"provider": "netsuite", "delivery_method": "direct_to_billing_provider",
             "configuration": {"netsuite_customer_id": "12345"}},
        ],
    ).data
    configs = client.v1.customers.retrieve_billing_configurations(customer_id=customer.id).data
    check([c.billing_provider for c in configs] == ["stripe", "aws_marketplace"], f"providers {configs}")
    stripe = configs[0]
    check(stripe.customer_id == customer.id, "configuration's customer")
    check(stripe.delivery_method == "direct_to_billing_provider", "delivery method")
    check(stripe.configuration == {"stripe_customer_id": "cus_123", "leave_stripe_invoices_in_draft": True},
          f"configuration {stripe.configuration}")
    check(stripe.archived_at is None, "not archived")

    legacy = client.v1.customers.billing_config.retrieve(
        customer_id=customer.id, billing_provider_type="stripe").data
    check(legacy.billing_provider_customer_id == "cus_legacy", f"legacy {legacy}")
    check(legacy.stripe_collection_method == "send_invoice", "legacy collection method")
    revenue = client.post(
        "/v1/getCustomerRevenueSystemConfigurations",
        body={"customer_id": customer.id},
        cast_to=object,
    )
    check(revenue["data"][0]["configuration"] == {"netsuite_customer_id": "12345"}, f"revenue {revenue}")

    other = client.v1.customers.create(name="Other Co").data
    made = client.v1.customers.set_billing_configurations(data=[
        {"customer_id": customer.id, "billing_provider": "netsuite", "delivery_method": "aws_sqs"},
        {"customer_id": other.id, "billing_provider": "stripe", "delivery_method": "aws_sns",
         "configuration": {"stripe_customer_id": "cus_other"}},
    ]).data
    check([m.customer_id for m in made] == [customer.id, other.id], f"set {made}")
    try:
        client.v1.customers.set_billing_configurations(data=[
            {"customer_id": other.id, "billing_provider": "stripe", "delivery_method": "tackle"},
            {"customer_id": "4db51251-61de-4bfe-b9ce-495e244f3491", "billing_provider": "stripe",
             "delivery_method": "tackle"},
        ])
        raise AssertionError("a set naming an unknown customer was accepted")
    except metronome.BadRequestError:
        pass
    check(len(client.v1.customers.retrieve_billing_configurations(customer_id=other.id).data) == 1,
          "the refused set added nothing")

    metric = client.v1.billable_metrics.create(
        name="calls", aggregation_type="COUNT", event_type_filter={"in_values": ["call"]}).data
    product = client.v1.contracts.products.create(
        name="Calls", type="USAGE", billable_metric_id=metric.id).data
    card = client.v1.contracts.rate_cards.create(name="Configured card").data
    contract = client.v1.contracts.create(
        customer_id=customer.id, rate_card_id=card.id, starting_at=start,
        billing_provider_configuration={"billing_provider": "stripe",
                                        "delivery_method": "direct_to_billing_provider"},
    ).data
    v1 = client.v1.contracts.retrieve(contract_id=contract.id, customer_id=customer.id).data
    check(v1.customer_billing_provider_configuration is not None, "v1 configuration")
    check(v1.customer_billing_provider_configuration.id == stripe.id, "v1 configuration id")
    v2 = client.v2.contracts.retrieve(contract_id=contract.id, customer_id=customer.id).data
    check(v2.customer_billing_provider_configuration.id == stripe.id, "v2 configuration id")

    archived = client.v1.customers.archive_billing_configurations(
        customer_id=customer.id, customer_billing_provider_configuration_ids=[stripe.id]).data
    check(archived.customer_billing_provider_configuration_ids == [stripe.id], f"archived {archived}")
    check(len(client.v1.customers.retrieve_billing_configurations(customer_id=customer.id).data) == 2,
          "one of three archived")
    all_configs = client.v1.customers.retrieve_billing_configurations(
        customer_id=customer.id, include_archived=True).data
    check(len(all_configs) == 3 and all_configs[0].archived_at is not None, "archived listed on request")
    v2 = client.v2.contracts.retrieve(contract_id=contract.id, customer_id=customer.id).data
    check(v2.customer_billing_provider_configuration.archived_at is not None,
          "the contract's configuration is archived with it")

    client.v1.contracts.archive(contract_id=contract.id, customer_id=customer.id, void_invoices=False)
    check(client.v1.contracts.list(customer_id=customer.id).data == [], "archived contract not listed")
    listed = client.v1.contracts.list(customer_id=customer.id, include_archived=True).data
    check(len(listed) == 1 and listed[0].archived_at is not None, "archived contract on request")
    client.v1.customers.archive(id=other.id)
    try:
        client.v1.contracts.create(customer_id=other.id, rate_card_id=card.id, starting_at=start)
        raise AssertionError("a contract on an archived customer was accepted")
    except metronome.BadRequestError:
        pass
    print("billing configurations: ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report and exit non-zero
        print(f"FAILED: {e!r}", file=sys.stderr)
        raise
