#!/usr/bin/env python3
"""Contract test: schemathesis fuzzes a live `tally serve` against Metronome's OpenAPI document.

Two parts, both checked the same way (`not_a_server_error`, `status_code_conformance`,
`content_type_conformance`, `response_schema_conformance`), for every operation of the document
the server itself serves at `GET /openapi.json`: the Metronome operations Tally implements and
Tally's own (`central/tests/it/openapi.rs` keeps that document equal to the router, so no
operation list is kept here; the internal `/internal/v1/*` endpoints are not in it):

1. A walkthrough: one hand-written valid request per operation (the README quickstart, then gets,
   lists, updates, configurations, archives and a void), sent as schemathesis cases. It seeds the
   server and guarantees every operation a checked 2xx; an operation of the document it does not
   call fails the run.
2. `schemathesis run` over the same operations: examples, coverage, fuzzing and stateful phases,
   positive and negative data. Ids and hour-aligned times are drawn from dictionaries filled by the
   walkthrough with some probability, so generated requests can succeed too; every operation
   except those in NO_GENERATED_2XX must get at least one generated 2xx, so the run is not just
   hammering validation. The per-operation status breakdown is printed.

No input may produce a 5xx; every status must be documented, every body must match its schema.

Inputs (environment): TALLY_BASE_URL, TALLY_TOKEN (a sandbox token), CONTRACT_WORKDIR (scratch
directory for the trimmed document, the config and the reports), optional CONTRACT_MAX_EXAMPLES
(default 25), CONTRACT_SEED (default 20261125) and CONTRACT_PHASES (default: all four,
examples,coverage,fuzzing,stateful). Generation is reproducible for a given seed
(schemathesis `seed`, one worker, no example database).

The document under test is the served one, unchanged: Metronome's operations as upstream wrote
them, with the few changes `scripts/openapi.py` makes (each with its reason, listed in the
document's `x-tally-changes` and printed at the end of the run).

Exit status 0 when nothing broke the contract and every operation reached its 2xx; 1 otherwise.
The last line is `contract: N passed, M failed` (operations).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

SCHEMATHESIS_VERSION = "4.32.5"
USD_CENTS_ID = "2714e483-4ff1-48e4-9e25-ac732e8f24f2"

# The operations under test, by operationId ("METHOD path"): every operation of the served
# document, filled in by `main` before anything runs.
OPERATIONS: dict[str, str] = {}

ALL_PHASES = ["examples", "coverage", "fuzzing", "stateful"]
# The stateful phase chains operations along links schemathesis infers (the document declares
# none), feeding one response's ids into the next request.
DEFAULT_PHASES = ALL_PHASES

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]

# --------------------------------------------------------------------------------------------
# The walkthrough: one hand-written valid request per operation, checked like the generated ones
# --------------------------------------------------------------------------------------------


class Walk:
    """Sends explicit requests as schemathesis cases and runs the same checks on each response.

    It seeds the server (the README quickstart's objects, plus spares for the archive and void
    operations) and guarantees every operation one documented 2xx whose body is validated, even
    where random generation rarely produces a fully valid request.
    """

    def __init__(self, schema, base: str, token: str):
        from schemathesis.checks import not_a_server_error
        from schemathesis.specs.openapi import checks

        self.schema = schema
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.checks = [
            not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ]
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter
        )
        self.failures: list[str] = []

    def __call__(self, op_id: str, *, body=None, path=None, query=None, expect: int = 200):
        from schemathesis.core.failures import FailureGroup

        operation = self.schema.find_operation_by_id(op_id)
        kwargs = {"path_parameters": path or {}, "query": query or {}}
        if body is not None:
            kwargs["body"] = body
            kwargs["media_type"] = "application/json"
        case = operation.Case(**kwargs)
        response = case.call(base_url=self.base, headers=self.headers)
        self.statuses[op_id][response.status_code] += 1
        try:
            case.validate_response(response, checks=self.checks, headers=self.headers)
        except FailureGroup as e:
            self.failures.append(f"walkthrough {OPERATIONS[op_id]}:\n{e}")
        if response.status_code != expect:
            raise SystemExit(
                f"walkthrough: {OPERATIONS[op_id]} answered {response.status_code}, not {expect}: "
                f"{response.text[:500]}"
            )
        content_type = response.headers.get("content-type") or response.headers.get("Content-Type")
        if isinstance(content_type, list):
            content_type = " ".join(content_type)
        if content_type and "json" not in content_type:
            return None  # the preview page, its script and its module
        return json.loads(response.content) if response.content.strip() else None


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def month_start(t: datetime, back: int = 0) -> datetime:
    year, month = t.year, t.month - back
    while month < 1:
        year, month = year - 1, month + 12
    while month > 12:
        year, month = year + 1, month - 12
    return datetime(year, month, 1, tzinfo=timezone.utc)


# How long the walkthrough waits for the background job (`--job-interval-secs 1`, set by
# tests/it/contract.rs) to finalize the periods past their grace.
FINALIZE_WAIT_S = 30


def finalized_invoices(call: Walk, customer: str, at_least: int) -> list[str]:
    """The ids of `customer`'s FINALIZED invoices, polled until there are `at_least` (bounded)."""
    deadline = time.monotonic() + FINALIZE_WAIT_S
    while True:
        finalized = [
            inv["id"]
            for inv in call(
                "listInvoices-v1", path={"customer_id": customer}, query={"status": "FINALIZED"}
            )["data"]
        ]
        if len(finalized) >= at_least or time.monotonic() > deadline:
            return finalized
        time.sleep(0.5)


def billing_configurations(call: Walk, acme: str, globex: str) -> list[str]:
    """The billing-provider, revenue-system and legacy configuration operations, once each;
    returns the ids of globex's configurations, archived (archiving them again is a 200)."""
    call(
        "setCustomerBillingProviderConfigurations-v1",
        body={
            "data": [
                {
                    "customer_id": acme,
                    "billing_provider": "stripe",
                    "delivery_method": "direct_to_billing_provider",
                    "configuration": {"stripe_customer_id": "cus_walk"},
                },
                {
                    "customer_id": globex,
                    "billing_provider": "aws_marketplace",
                    "delivery_method": "tackle",
                },
            ]
        },
    )
    call("getCustomerBillingProviderConfigurations-v1", body={"customer_id": acme})
    globex_configs = call(
        "getCustomerBillingProviderConfigurations-v1", body={"customer_id": globex}
    )["data"]
    call(
        "archiveCustomerBillingProviderConfigurations-v1",
        body={
            "customer_id": globex,
            "customer_billing_provider_configuration_ids": [c["id"] for c in globex_configs],
        },
    )
    call("getCustomerRevenueSystemConfigurations-v1", body={"customer_id": acme})
    for customer in (acme, globex):
        call(
            "setBillingConfigForCustomer-v1",
            path={"customer_id": customer, "billing_provider_type": "stripe"},
            body={
                "billing_provider_customer_id": "cus_legacy",
                "stripe_collection_method": "send_invoice",
            },
        )
    call("getBillingConfig-v1", path={"customer_id": acme, "billing_provider_type": "stripe"})
    call(
        "deleteBillingConfigForCustomer-v1",
        path={"customer_id": globex, "billing_provider_type": "stripe"},
    )
    return [c["id"] for c in globex_configs]


def contract_changes(call: Walk, card: str, product: str, now: datetime) -> dict[str, list]:
    """The contract change operations once each (amend, edit, end date, history), on a contract
    of a customer of their own, so that no change (here or generated) cuts the invoices the
    other operations read; returns the dictionaries of that customer and contract."""
    customer = call("createCustomer-v1", body={"name": "Editable"})["data"]["id"]
    contract = call(
        "createContract-v1",
        body={
            "customer_id": customer,
            "rate_card_id": card,
            "starting_at": iso(month_start(now, 3)),
        },
    )["data"]["id"]
    ids = {"customer_id": customer, "contract_id": contract}
    call(
        "amendContract-v1",
        body={
            **ids,
            "starting_at": iso(month_start(now, 1)),
            "overrides": [
                {
                    "starting_at": iso(month_start(now, 1)),
                    "product_id": product,
                    "type": "MULTIPLIER",
                    "multiplier": 0.9,
                }
            ],
            "custom_fields": {"deal": "walk"},
        },
    )
    amended = call("getContract-v2", body=ids)["data"]["overrides"][0]["id"]
    call(
        "editContract-v2",
        body={
            **ids,
            "uniqueness_key": "walk-edit",
            "update_contract_name": "Edited",
            "add_overrides": [
                {
                    "starting_at": iso(month_start(now)),
                    "product_id": product,
                    "type": "OVERWRITE",
                    "overwrite_rate": {"rate_type": "FLAT", "price": 0.4},
                }
            ],
        },
    )
    call(
        "editContract-v2",
        body={
            **ids,
            "remove_overrides": [{"id": amended}],
            "update_contract_end_date": None,
            "update_net_payment_terms_days": 30,
        },
    )
    call("updateContractEndDate-v1", body={**ids, "ending_before": iso(month_start(now, -1))})
    # The contract with its amendment, `initial` and `current` (checked against the schema).
    call("getContract-v1", body=ids)
    call("getContractEditHistory-v2", body=ids)
    # A renewal from the contract's end: both contracts read back the transition.
    renewal = call(
        "createContract-v1",
        body={
            "customer_id": customer,
            "rate_card_id": card,
            "starting_at": iso(month_start(now, -1)),
            "transition": {"from_contract_id": contract, "type": "RENEWAL"},
        },
    )["data"]["id"]
    renewed = call("getContract-v2", body={"customer_id": customer, "contract_id": renewal})
    transition = {"from_contract_id": contract, "to_contract_id": renewal, "type": "RENEWAL"}
    assert renewed["data"]["transitions"] == [transition], renewed
    # An amendment adding a scheduled charge and a professional service, then an edit
    # rewriting the charge's item.
    fee = call("createProduct-v1", body={"name": "Walk fee", "type": "FIXED"})["data"]["id"]
    advice = call("createProduct-v1", body={"name": "Walk advice", "type": "PRO_SERVICE"})[
        "data"
    ]["id"]
    call(
        "amendContract-v1",
        body={
            **ids,
            "starting_at": iso(month_start(now, 1)),
            "scheduled_charges": [
                {
                    "product_id": fee,
                    "schedule": {
                        "schedule_items": [{"timestamp": iso(month_start(now, -1)), "amount": 5}]
                    },
                }
            ],
            "professional_services": [
                {"product_id": advice, "unit_price": 10, "quantity": 2, "max_amount": 20}
            ],
        },
    )
    charge = call("getContract-v2", body=ids)["data"]["scheduled_charges"][0]
    item = charge["schedule"]["schedule_items"][0]["id"]
    call(
        "editContract-v2",
        body={
            **ids,
            "update_scheduled_charges": [
                {
                    "scheduled_charge_id": charge["id"],
                    "invoice_schedule": {"update_schedule_items": [{"id": item, "amount": 6}]},
                }
            ],
        },
    )
    call("getContract-v1", body=ids)
    return {"editable_customer": [customer], "editable_contract": [contract]}


def packages_and_services(call: Walk, card: str, now: datetime) -> dict[str, list]:
    """The package operations once each (a contract made from one, spares to archive) and a
    professional-services invoice, on customers of their own; returns their dictionaries."""
    package = call(
        "createPackage-v1",
        body={
            "name": "Walk package",
            "rate_card_id": card,
            "duration": {"value": 3, "unit": "MONTHS"},
            "aliases": [{"name": "walk-package"}],
        },
    )["data"]["id"]
    spares = [
        call("createPackage-v1", body={"name": f"Spare package {i}"})["data"]["id"]
        for i in range(3)
    ]
    call("getPackage-v1", body={"package_id": package})
    call("listPackages-v1", body={"archive_filter": "ALL"}, query={"limit": 10})
    packaged = call("createCustomer-v1", body={"name": "Packaged"})["data"]["id"]
    call(
        "createContract-v1",
        body={"customer_id": packaged, "starting_at": iso(month_start(now)), "package_id": package},
    )
    call("listContractsOnPackage-v1", body={"package_id": package}, query={"limit": 10})
    call("archivePackage-v1", body={"package_id": spares.pop()})
    consulting = call("createProduct-v1", body={"name": "Consulting", "type": "PRO_SERVICE"})[
        "data"
    ]["id"]
    serviced = call("createCustomer-v1", body={"name": "Serviced"})["data"]["id"]
    contract = call(
        "createContract-v1",
        body={
            "customer_id": serviced,
            "starting_at": iso(month_start(now)),
            "professional_services": [
                {"product_id": consulting, "unit_price": 150, "quantity": 10, "max_amount": 1e9}
            ],
        },
    )["data"]["id"]
    ids = {"customer_id": serviced, "contract_id": contract}
    service = call("getContract-v2", body=ids)["data"]["professional_services"][0]["id"]
    hour = now.replace(minute=0, second=0, microsecond=0)
    call(
        "scheduleProServicesInvoice-v1",
        body={
            **ids,
            "issued_at": iso(hour + timedelta(hours=1)),
            "line_items": [{"professional_service_id": service, "amount": 100}],
        },
    )
    # A seat subscription on the serviced contract's card-less customer: its own contract.
    seats = call("createProduct-v1", body={"name": "Seats", "type": "SUBSCRIPTION"})["data"]["id"]
    call(
        "addRate-v1",
        body={
            "rate_card_id": card,
            "product_id": seats,
            "starting_at": iso(month_start(now)),
            "entitled": True,
            "rate_type": "SUBSCRIPTION",
            "price": 3000,
            "billing_frequency": "MONTHLY",
        },
    )
    subscribed = call("createCustomer-v1", body={"name": "Subscribed"})["data"]["id"]
    sub_contract = call(
        "createContract-v1",
        body={
            "customer_id": subscribed,
            "rate_card_id": card,
            "starting_at": iso(month_start(now)),
            "subscriptions": [
                {
                    "collection_schedule": "ADVANCE",
                    "proration": {"is_prorated": True},
                    "subscription_rate": {"billing_frequency": "MONTHLY", "product_id": seats},
                    "initial_quantity": 5,
                }
            ],
        },
    )["data"]["id"]
    sub_ids = {"customer_id": subscribed, "contract_id": sub_contract}
    subscription = call("getContract-v2", body=sub_ids)["data"]["subscriptions"][0]["id"]
    call(
        "editContract-v2",
        body={
            **sub_ids,
            "update_subscriptions": [
                {
                    "subscription_id": subscription,
                    "quantity_updates": [{"starting_at": iso(hour), "quantity_delta": 2}],
                }
            ],
        },
    )
    call("getSubscriptionQuantityHistory-v1", body={**sub_ids, "subscription_id": subscription})
    return {
        "package": [package],
        "spare_package": spares,
        "serviced_customer": [serviced],
        "serviced_contract": [contract],
        "pro_service": [service],
        "subscribed_customer": [subscribed],
        "subscribed_contract": [sub_contract],
        "subscription": [subscription],
    }


def custom_units(call: Walk, product: str, now: datetime) -> dict[str, list]:
    """Custom pricing units: created (spares to archive), listed, converted by a rate card of
    their own, a rate in one; returns their dictionaries."""
    unit = call("createCreditType-tally", body={"name": "Walk AI credits"})["data"]["id"]
    spares = [
        call("createCreditType-tally", body={"name": f"Walk spare units {i}"})["data"]["id"]
        for i in range(3)
    ]
    call("archiveCreditType-tally", body={"id": spares.pop()})
    call("listCreditTypes-v1", query={"limit": 10})
    conversion = {"custom_credit_type_id": unit, "fiat_per_custom_credit": 0.5}
    card = call(
        "createRateCard-v1",
        body={"name": "Credits card", "credit_type_conversions": [conversion]},
    )["data"]["id"]
    # The same conversion again: accepted, nothing changes (conversions are immutable).
    call("updateRateCard-v1", body={"rate_card_id": card, "add_credit_type_conversions": [conversion]})
    call(
        "addRate-v1",
        body={
            "rate_card_id": card,
            "product_id": product,
            "starting_at": iso(month_start(now, 3)),
            "entitled": True,
            "rate_type": "FLAT",
            "price": 2.5,
            "pricing_group_values": {"model": "small"},
            "credit_type_id": unit,
        },
    )
    call("getRateCard-v1", body={"id": card})
    return {"custom_unit": [unit], "spare_credit_type": spares, "custom_card": [card]}


def webhook_endpoints(call: Walk) -> dict[str, list]:
    """The signing secret and webhook endpoints (a discard-port URL: deliveries fail and are
    retried, which the delivery log shows); returns their dictionaries."""
    call("setClientWebhookSecret-v1", body={"webhook_secret": "whsec_contract_walk_5f3a95bd97"})
    endpoint = call(
        "createWebhookEndpoint-tally",
        body={"url": "http://127.0.0.1:9/tally-walk", "description": "walkthrough"},
    )["data"]["id"]
    spares = [
        call("createWebhookEndpoint-tally", body={"url": f"http://127.0.0.1:9/spare-{i}"})[
            "data"
        ]["id"]
        for i in range(3)
    ]
    call("archiveWebhookEndpoint-tally", body={"id": spares.pop()})
    call("listWebhookEndpoints-tally", query={"limit": 10})
    # Generated endpoints point at the discard port too (with BINDING_PROBABILITY), so the
    # invoices generated contracts finalize are not POSTed to hosts the generator made up.
    return {
        "webhook_endpoint": [endpoint],
        "spare_webhook_endpoint": spares,
        "webhook_url": ["http://127.0.0.1:9/tally-generated"],
    }


def alerts(call: Walk, customer: str, metric: str) -> dict[str, list]:
    """A usage alert on `customer`, a spend alert for all customers, and a spare to archive."""
    usage = call(
        "createAlert-v1",
        body={
            "alert_type": "usage_threshold_reached",
            "name": "Walk usage",
            "threshold": 1_000_000,
            "customer_id": customer,
            "billable_metric_id": metric,
        },
    )["data"]["id"]
    call(
        "createAlert-v1",
        body={"alert_type": "spend_threshold_reached", "name": "Walk spend", "threshold": 10**9},
    )
    spares = [
        call(
            "createAlert-v1",
            body={"alert_type": "invoice_total_reached", "name": f"Spare {i}", "threshold": 1},
        )["data"]["id"]
        for i in range(3)
    ]
    call("archiveAlert-v1", body={"id": spares.pop()})
    call("listCustomerAlerts-v1", body={"customer_id": customer})
    call("getCustomerAlert-v1", body={"customer_id": customer, "alert_id": usage})
    call("resetCustomerAlerts-v1", body={"customer_id": customer, "alert_id": usage})
    return {"alert": [usage], "alert_customer": [customer], "spare_alert": spares}


def walkthrough(call: Walk) -> dict[str, list]:
    """Every operation once, valid; returns the dictionaries the generated requests draw from."""
    now = datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)

    def create(op_id: str, body: dict, **kw) -> str:
        return call(op_id, body=body, **kw)["data"]["id"]

    # Tally's own operations.
    for op_id in ("getServiceInfo-tally", "livez-tally", "readyz-tally"):
        call(op_id)
    call("getOpenApiDocument-tally")
    call("listStuckContracts-tally")
    # Endpoints first, so the invoices finalized below are in their delivery logs.
    hooks = webhook_endpoints(call)

    call("listCreditTypes-v1")
    metric = create(
        "createBillableMetricV1-v1",
        {
            "name": "Tokens",
            "aggregation_type": "SUM",
            "aggregation_key": "tokens",
            "event_type_filter": {"in_values": ["llm_request"]},
            "group_keys": [["model"], ["user_id"]],
        },
    )
    call("getBillableMetric-v1", path={"billable_metric_id": metric})
    call("listAllBillableMetrics-v1", query={"limit": 10})

    product = create(
        "createProduct-v1",
        {
            "name": "Tokens",
            "type": "USAGE",
            "billable_metric_id": metric,
            "pricing_group_key": ["model"],
            "presentation_group_key": ["user_id"],
            "quantity_conversion": {"conversion_factor": 1000, "operation": "DIVIDE"},
        },
    )
    fixed = create("createProduct-v1", {"name": "Support", "type": "PROFESSIONAL_SERVICE"})
    call("getProduct-v1", body={"id": product})
    call(
        "updateProduct-v1",
        body={"product_id": fixed, "starting_at": iso(month_start(now, -1)), "name": "Care"},
    )
    call("listProducts-v1", body={"archive_filter": "ALL"})

    card = create("createRateCard-v1", {"name": "Standard", "description": "list prices"})
    call(
        "addRates-v1",
        body={
            "rate_card_id": card,
            "rates": [
                {
                    "product_id": product,
                    "starting_at": iso(month_start(now, 3)),
                    "entitled": True,
                    "rate_type": "FLAT",
                    "price": 0.5,
                    "pricing_group_values": {"model": "small"},
                },
                {
                    "product_id": product,
                    "starting_at": iso(month_start(now, 3)),
                    "entitled": True,
                    "rate_type": "TIERED",
                    "tiers": [{"price": 10, "size": 100}, {"price": 8}],
                    "pricing_group_values": {"model": "large"},
                },
            ],
        },
    )
    call(
        "addRate-v1",
        body={
            "rate_card_id": card,
            "product_id": fixed,
            "starting_at": iso(month_start(now, 3)),
            "entitled": True,
            "rate_type": "FLAT",
            "price": 5000,
        },
    )
    call("getRateCard-v1", body={"id": card})
    call("updateRateCard-v1", body={"rate_card_id": card, "name": "Standard 2026"})
    call("listRateCards-v1", body={})
    call("getRates-v1", body={"rate_card_id": card, "at": iso(hour)})
    call("getRateSchedule-v1", body={"rate_card_id": card, "starting_at": iso(month_start(now, 3))})
    call("setRateCardProductsOrder-v1", body={"rate_card_id": card, "product_order": [fixed]})
    call(
        "moveRateCardProducts-v1",
        body={"rate_card_id": card, "product_moves": [{"product_id": product, "position": 0}]},
    )

    # The FIXED product commits and credits are invoiced with.
    commit_product = create("createProduct-v1", {"name": "Prepaid tokens", "type": "FIXED"})
    # Access from last month to next month's start.
    access = {
        "credit_type_id": USD_CENTS_ID,
        "schedule_items": [
            {
                "amount": 1000.5,
                "starting_at": iso(month_start(now, 1)),
                "ending_before": iso(month_start(now, -1)),
            }
        ],
    }
    customers, contracts = [], []
    for name in ("Acme", "Globex"):
        customer = create("createCustomer-v1", {"name": name, "ingest_aliases": [name.lower()]})
        contract = create(
            "createContract-v1",
            {
                "customer_id": customer,
                "rate_card_id": card,
                # Three months back: the two oldest periods ended at least 28 days ago, so they
                # are past any grace whatever the day; the previous month may still be in its
                # 24 hours of grace (on a month's 1st) and is not counted on.
                "starting_at": iso(month_start(now, 3)),
                "usage_statement_schedule": {"frequency": "MONTHLY"},
                # A free prepaid commit and a credit, so the reads show both shapes.
                "commits": [
                    {"type": "PREPAID", "product_id": commit_product, "access_schedule": access}
                ],
                "credits": [
                    {
                        "product_id": commit_product,
                        "access_schedule": access,
                        "applicable_product_ids": [product],
                        "priority": 1,
                    }
                ],
            },
        )
        customers.append(customer)
        contracts.append(contract)
    acme, globex = customers
    call("getCustomer-v1", path={"customer_id": acme})
    call("listCustomers-v1", query={"ingest_alias": "acme"})
    call("setCustomerName-v1", path={"customer_id": globex}, body={"name": "Globex Corp"})
    call(
        "setIngestAliases-v1",
        path={"customer_id": globex},
        body={"ingest_aliases": ["globex", "globex-eu"]},
    )
    archived_configurations = billing_configurations(call, acme, globex)
    customer_commit = create(
        "createCustomerCommit-v1",
        {
            "customer_id": acme,
            "type": "PREPAID",
            "priority": 1,
            "product_id": commit_product,
            "name": "Walk commit",
            "access_schedule": access,
            "invoice_schedule": {
                "schedule_items": [
                    {"timestamp": iso(month_start(now, 1)), "unit_price": 500.25, "quantity": 2}
                ]
            },
            "invoice_contract_id": contracts[0],
            "applicable_contract_ids": [contracts[0]],
        },
    )
    customer_credit = create(
        "createCustomerCredit-v1",
        {
            "customer_id": acme,
            "priority": 2.5,
            "product_id": commit_product,
            "access_schedule": access,
            "applicable_product_tags": ["walk"],
        },
    )
    call("listCustomerCommits-v1", body={"customer_id": acme, "include_contract_commits": True})
    credits_page = call(
        "listCustomerCredits-v1",
        body={"customer_id": acme, "include_contract_credits": True, "limit": 10},
    )
    credit_segment = next(
        c["access_schedule"]["schedule_items"][0]["id"]
        for c in credits_page["data"]
        if c["id"] == customer_credit
    )
    # Balances: a manual entry on the customer-level credit, then the reads that show it.
    call(
        "addManualBalanceLedgerEntry-v1",
        body={
            "customer_id": acme,
            "id": customer_credit,
            "segment_id": credit_segment,
            "amount": 250.5,
            "reason": "walk",
        },
    )
    call("getNetBalance-v1", body={"customer_id": acme})
    call(
        "listCustomerBalances-v1",
        body={
            "customer_id": acme,
            "include_contract_balances": True,
            "include_balance": True,
            "include_ledgers": True,
        },
    )
    # Ending where they end already: a 200 that leaves the generated requests room to shorten.
    call(
        "updateCommitEndDate-v1",
        body={
            "customer_id": acme,
            "commit_id": customer_commit,
            "access_ending_before": iso(month_start(now, -1)),
            "invoices_ending_before": iso(month_start(now, -1)),
        },
    )
    call(
        "updateCreditEndDate-v1",
        body={
            "customer_id": acme,
            "credit_id": customer_credit,
            "access_ending_before": iso(month_start(now, -1)),
        },
    )
    for op_id in ("getContract-v1", "getContract-v2"):
        call(op_id, body={"customer_id": acme, "contract_id": contracts[0]})
    for op_id in ("listContracts-v1", "listContracts-v2"):
        call(op_id, body={"customer_id": acme, "covering_date": iso(hour)})
    call(
        "getContractRateSchedule-v1",
        body={"customer_id": acme, "contract_id": contracts[0], "at": iso(hour)},
    )
    editable = contract_changes(call, card, product, now)
    packaged = packages_and_services(call, card, now)
    units = custom_units(call, product, now)

    call(
        "ingest-v1",
        body=[
            {
                "transaction_id": f"walk-{i}",
                "customer_id": "acme",
                "event_type": "llm_request",
                "timestamp": iso(hour - timedelta(hours=1)),
                "properties": {"model": model, "user_id": "ada", "tokens": "150000"},
            }
            for i, model in enumerate(["small", "large"])
        ],
    )
    invoices = [
        inv["id"]
        for inv in call("listInvoices-v1", path={"customer_id": acme}, query={"limit": 100})[
            "data"
        ]
    ]
    call("getInvoice-v1", path={"customer_id": acme, "invoice_id": invoices[-1]})
    # Usage queries (issue 13), read through the rollup cover.
    usage_range = {
        "starting_on": iso(hour - timedelta(days=2)),
        "ending_before": iso(hour + timedelta(hours=1)),
    }
    call(
        "getUsageBatch-v1",
        body={
            **usage_range,
            "window_size": "DAY",
            "customer_ids": [acme],
            "billable_metrics": [{"id": metric, "group_by": {"key": "model"}}],
        },
    )
    call(
        "getPagedUsage-v1",
        body={
            **usage_range,
            "customer_id": acme,
            "billable_metric_id": metric,
            "window_size": "HOUR",
            "group_key": ["model"],
            "group_filters": {"model": ["small"]},
        },
        query={"limit": 10},
    )
    call("listBillableMetrics-v1", path={"customer_id": acme}, query={"limit": 10})
    # Event search (issue 13): the walkthrough's events, as stored.
    call("searchEvents-v1", body={"transactionIds": ["walk-0", "walk-1", "never-sent"]})
    call(
        "getCosts-v1",
        path={"customer_id": acme},
        query={"starting_on": iso(month_start(now, 1)), "ending_before": iso(month_start(now, -1))},
    )
    # Cost previews (issue 15): nothing stored; the browser page and its WASM module.
    call(
        "previewCustomerEvents-v1",
        path={"customer_id": acme},
        body={
            "events": [
                {
                    "event_type": "llm_request",
                    "transaction_id": "preview-walk",
                    "properties": {"model": "small", "user_id": "ada", "tokens": "1000"},
                }
            ],
            "mode": "merge",
        },
    )
    call("getPricingSnapshot-tally", path={"customer_id": acme})
    for op_id in ("getPreviewPage-tally", "getPreviewGlue-tally", "getPreviewModule-tally"):
        call(op_id)
    finalized = finalized_invoices(call, globex, at_least=2)
    if len(invoices) < 2 or len(finalized) < 2:
        raise SystemExit(f"walkthrough: expected invoices, got {invoices} and {finalized}")
    call("voidInvoice-v1", body={"id": finalized[0]})
    call("regenerateInvoice-v1", body={"id": finalized[0]})

    # Archive operations get throwaway objects, here and in the generated requests, so that
    # archiving cannot starve the other operations of live ids.
    spares: dict[str, list[str]] = collections.defaultdict(list)
    for _ in range(2):
        spares["metric"].append(
            create("createBillableMetricV1-v1", {"name": "Spare", "aggregation_type": "COUNT"})
        )
        spares["product"].append(create("createProduct-v1", {"name": "Spare", "type": "FIXED"}))
        spares["card"].append(create("createRateCard-v1", {"name": "Spare"}))
        spares["customer"].append(create("createCustomer-v1", {"name": "Spare"}))
    call("archiveBillableMetric-v1", body={"id": spares["metric"].pop()})
    call("archiveProductListItem-v1", body={"product_id": spares["product"].pop()})
    call("archiveRateCard-v1", body={"id": spares["card"].pop()})
    call("archiveCustomer-v1", body={"id": spares["customer"].pop()})
    spares["customer"].append(create("createCustomerAlias-tally", {"name": "Spare"}))
    # Contracts to archive live on a customer of their own, so archiving never cuts the invoices
    # the other operations read.
    holder = create("createCustomer-v1", {"name": "Archivable"})
    for _ in range(3):
        spares["contract"].append(
            create(
                "createContract-v1",
                {
                    "customer_id": holder,
                    "rate_card_id": card,
                    "starting_at": iso(month_start(now)),
                },
            )
        )
    call(
        "archiveContract-v1",
        body={
            "customer_id": holder,
            "contract_id": spares["contract"].pop(),
            "void_invoices": False,
        },
    )
    call(
        "listWebhookDeliveries-tally",
        path={"webhook_endpoint_id": hooks["webhook_endpoint"][0]},
        query={"limit": 10},
    )
    watched = alerts(call, acme, metric)
    # The other spelling of addRate, on a card of its own.
    alias_card = create("createRateCard-v1", {"name": "Alias card"})
    call(
        "addRateAlias-tally",
        body={
            "rate_card_id": alias_card,
            "product_id": fixed,
            "starting_at": iso(month_start(now, 3)),
            "entitled": True,
            "rate_type": "FLAT",
            "price": 100,
        },
    )

    return {
        "metric": [metric],
        "product": [product, fixed],
        "usage_product": [product],
        "fixed_product": [fixed],
        "model": ["small", "large"],
        "rate_type": ["FLAT", "TIERED"],
        "card": [card],
        "customer": customers,
        "contract": contracts,
        "invoice": invoices,
        "voidable": finalized[1:],
        "regenerated": finalized[:1],
        "alias": ["acme", "globex"],
        "credit_type": [USD_CENTS_ID],
        "hour": [
            iso(month_start(now, 1)),
            iso(month_start(now)),
            iso(hour),
            iso(hour + timedelta(hours=1)),
            iso(month_start(now, -1)),
        ],
        "recent": [iso(now - timedelta(minutes=5)), iso(now - timedelta(days=1))],
        "spare_metric": spares["metric"],
        "spare_product": spares["product"],
        "spare_card": spares["card"],
        "spare_customer": spares["customer"],
        "spare_contract": spares["contract"],
        "spare_contract_customer": [holder],
        "billing_provider_type": ["stripe"],
        "configured_customer": [globex],
        "commit_product": [commit_product],
        "commit_customer": [acme],
        "commit_contract": [contracts[0]],
        "commit": [customer_commit],
        "credit": [customer_credit],
        "credit_segment": [credit_segment],
        "archived_configuration": archived_configurations,
        **editable,
        **packaged,
        **units,
        **hooks,
        **watched,
    }


# --------------------------------------------------------------------------------------------
# The document and the schemathesis configuration
# --------------------------------------------------------------------------------------------


def served_document(base: str) -> dict:
    """The server's own `/openapi.json` (no token needed); fills OPERATIONS from it."""
    with urllib.request.urlopen(f"{base}/openapi.json", timeout=30) as res:
        if res.headers.get_content_type() != "application/json":
            raise SystemExit(f"/openapi.json is served as {res.headers['content-type']}")
        doc = json.loads(res.read())
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                OPERATIONS[op["operationId"]] = f"{method.upper()} {path}"
    return doc


# Which dictionary feeds which parameter, per operation (operationId -> {parameter: dictionary}).
# Parameter keys are schemathesis's: `path.x`, `query.x`, `body.x`, `body.list[*].x`.
BINDINGS: dict[str, dict[str, str]] = {
    "archiveBillableMetric-v1": {"body.id": "spare_metric"},
    "getBillableMetric-v1": {"path.billable_metric_id": "metric"},
    "createProduct-v1": {"body.billable_metric_id": "metric"},
    "getProduct-v1": {"body.id": "product"},
    "updateProduct-v1": {
        "body.product_id": "product",
        "body.billable_metric_id": "metric",
        "body.starting_at": "hour",
    },
    "archiveProductListItem-v1": {"body.product_id": "spare_product"},
    "getRateCard-v1": {"body.id": "card"},
    "updateRateCard-v1": {"body.rate_card_id": "card"},
    "archiveRateCard-v1": {"body.id": "spare_card"},
    "addRate-v1": {
        "body.rate_card_id": "card",
        "body.product_id": "usage_product",
        "body.pricing_group_values.model": "model",
        "body.rate_type": "rate_type",
        "body.starting_at": "hour",
        "body.ending_before": "hour",
        "body.credit_type_id": "credit_type",
    },
    "addRates-v1": {
        "body.rate_card_id": "card",
        # The FIXED product: it has no pricing group key, which generated rates rarely hit.
        "body.rates[*].product_id": "fixed_product",
        "body.rates[*].rate_type": "rate_type",
        "body.rates[*].starting_at": "hour",
        "body.rates[*].ending_before": "hour",
        "body.rates[*].credit_type_id": "credit_type",
    },
    "getRates-v1": {"body.rate_card_id": "card", "body.at": "hour"},
    "getRateSchedule-v1": {
        "body.rate_card_id": "card",
        "body.starting_at": "hour",
        "body.ending_before": "hour",
    },
    "setRateCardProductsOrder-v1": {"body.rate_card_id": "card"},
    "moveRateCardProducts-v1": {
        "body.rate_card_id": "card",
        "body.product_moves[*].product_id": "usage_product",
    },
    "listCustomers-v1": {"query.ingest_alias": "alias"},
    "getCustomer-v1": {"path.customer_id": "customer"},
    "archiveCustomer-v1": {"body.id": "spare_customer"},
    "setIngestAliases-v1": {"path.customer_id": "customer"},
    "setCustomerName-v1": {"path.customer_id": "customer"},
    "createContract-v1": {
        "body.customer_id": "customer",
        "body.rate_card_id": "card",
        "body.starting_at": "hour",
        "body.ending_before": "hour",
    },
    "getContract-v1": {"body.customer_id": "customer", "body.contract_id": "contract"},
    "listContracts-v1": {"body.customer_id": "customer", "body.covering_date": "hour"},
    "getContract-v2": {"body.customer_id": "customer", "body.contract_id": "contract"},
    "listContracts-v2": {"body.customer_id": "customer", "body.covering_date": "hour"},
    "getContractRateSchedule-v1": {
        "body.customer_id": "customer",
        "body.contract_id": "contract",
        "body.at": "hour",
    },
    "amendContract-v1": {
        "body.customer_id": "editable_customer",
        "body.contract_id": "editable_contract",
        "body.starting_at": "hour",
        "body.overrides[*].starting_at": "hour",
        "body.overrides[*].ending_before": "hour",
        "body.overrides[*].product_id": "usage_product",
    },
    "updateContractEndDate-v1": {
        "body.customer_id": "editable_customer",
        "body.contract_id": "editable_contract",
        "body.ending_before": "hour",
    },
    "editContract-v2": {
        "body.customer_id": "editable_customer",
        "body.contract_id": "editable_contract",
        "body.update_contract_end_date": "hour",
        "body.add_overrides[*].starting_at": "hour",
        "body.add_overrides[*].ending_before": "hour",
        "body.add_overrides[*].product_id": "usage_product",
    },
    "getContractEditHistory-v2": {
        "body.customer_id": "editable_customer",
        "body.contract_id": "editable_contract",
    },
    "ingest-v1": {"body.[*].customer_id": "alias", "body.[*].timestamp": "recent"},
    "listInvoices-v1": {"path.customer_id": "customer", "query.contract_id": "contract"},
    "getInvoice-v1": {"path.customer_id": "customer", "path.invoice_id": "invoice"},
    "voidInvoice-v1": {"body.id": "voidable"},
    "regenerateInvoice-v1": {"body.id": "regenerated"},
    "previewCustomerEvents-v1": {"path.customer_id": "customer"},
    "getUsageBatch-v1": {
        "body.customer_ids[*]": "customer",
        "body.billable_metrics[*].id": "metric",
        "body.starting_on": "hour",
        "body.ending_before": "hour",
    },
    "getPagedUsage-v1": {
        "body.customer_id": "customer",
        "body.billable_metric_id": "metric",
        "body.starting_on": "hour",
        "body.ending_before": "hour",
    },
    "listBillableMetrics-v1": {"path.customer_id": "customer"},
    "getCosts-v1": {
        "path.customer_id": "customer",
        "query.starting_on": "hour",
        "query.ending_before": "hour",
    },
    "getPricingSnapshot-tally": {"path.customer_id": "customer"},
    "archiveContract-v1": {
        "body.customer_id": "spare_contract_customer",
        "body.contract_id": "spare_contract",
    },
    "setCustomerBillingProviderConfigurations-v1": {"body.data[*].customer_id": "customer"},
    "getCustomerBillingProviderConfigurations-v1": {"body.customer_id": "customer"},
    "archiveCustomerBillingProviderConfigurations-v1": {
        "body.customer_id": "configured_customer",
        "body.customer_billing_provider_configuration_ids[*]": "archived_configuration",
    },
    "getCustomerRevenueSystemConfigurations-v1": {"body.customer_id": "customer"},
    "getBillingConfig-v1": {
        "path.customer_id": "customer",
        "path.billing_provider_type": "billing_provider_type",
    },
    "setBillingConfigForCustomer-v1": {"path.customer_id": "customer"},
    "deleteBillingConfigForCustomer-v1": {"path.customer_id": "customer"},
}
# Customer-level commits and credits: acme, its contract and the FIXED product, hour-aligned
# schedules.
CUSTOMER_BALANCE_CREATE = {
    "body.customer_id": "commit_customer",
    "body.product_id": "commit_product",
    "body.applicable_contract_ids[*]": "commit_contract",
    "body.applicable_product_ids[*]": "usage_product",
    "body.access_schedule.credit_type_id": "credit_type",
    "body.access_schedule.schedule_items[*].starting_at": "hour",
    "body.access_schedule.schedule_items[*].ending_before": "hour",
}
BINDINGS["createCustomerCredit-v1"] = CUSTOMER_BALANCE_CREATE
BINDINGS["createCustomerCommit-v1"] = {
    **CUSTOMER_BALANCE_CREATE,
    "body.invoice_contract_id": "commit_contract",
    "body.invoice_schedule.credit_type_id": "credit_type",
    "body.invoice_schedule.schedule_items[*].timestamp": "hour",
}
for op_id, id_field, dictionary in (
    ("listCustomerCommits-v1", "commit_id", "commit"),
    ("listCustomerCredits-v1", "credit_id", "credit"),
):
    BINDINGS[op_id] = {
        "body.customer_id": "commit_customer",
        f"body.{id_field}": dictionary,
        "body.covering_date": "hour",
        "body.starting_at": "hour",
        "body.effective_before": "hour",
    }
BINDINGS["addManualBalanceLedgerEntry-v1"] = {
    "body.customer_id": "commit_customer",
    "body.id": "credit",
    "body.segment_id": "credit_segment",
    "body.timestamp": "hour",
}
BINDINGS["getNetBalance-v1"] = {
    "body.customer_id": "commit_customer",
    "body.credit_type_id": "credit_type",
    "body.filters[*].ids[*]": "credit",
}
BINDINGS["listCustomerBalances-v1"] = {
    "body.customer_id": "commit_customer",
    "body.id": "credit",
    "body.covering_date": "hour",
    "body.starting_at": "hour",
    "body.effective_before": "hour",
}
BINDINGS["updateCommitEndDate-v1"] = {
    "body.customer_id": "commit_customer",
    "body.commit_id": "commit",
    "body.access_ending_before": "hour",
    "body.invoices_ending_before": "hour",
}
BINDINGS["updateCreditEndDate-v1"] = {
    "body.customer_id": "commit_customer",
    "body.credit_id": "credit",
    "body.access_ending_before": "hour",
}
BINDINGS["createPackage-v1"] = {"body.rate_card_id": "card"}
BINDINGS["getPackage-v1"] = {"body.package_id": "package"}
BINDINGS["archivePackage-v1"] = {"body.package_id": "spare_package"}
BINDINGS["listContractsOnPackage-v1"] = {
    "body.package_id": "package",
    "body.covering_date": "hour",
    "body.starting_at": "hour",
}
BINDINGS["scheduleProServicesInvoice-v1"] = {
    "body.customer_id": "serviced_customer",
    "body.contract_id": "serviced_contract",
    "body.issued_at": "hour",
    "body.line_items[*].professional_service_id": "pro_service",
}
BINDINGS["getSubscriptionQuantityHistory-v1"] = {
    "body.customer_id": "subscribed_customer",
    "body.contract_id": "subscribed_contract",
    "body.subscription_id": "subscription",
}
BINDINGS["archiveCreditType-tally"] = {"body.id": "spare_credit_type"}
BINDINGS["archiveWebhookEndpoint-tally"] = {"body.id": "spare_webhook_endpoint"}
BINDINGS["createWebhookEndpoint-tally"] = {"body.url": "webhook_url"}
BINDINGS["listWebhookDeliveries-tally"] = {"path.webhook_endpoint_id": "webhook_endpoint"}
BINDINGS["createAlert-v1"] = {
    "body.customer_id": "customer",
    "body.billable_metric_id": "metric",
    "body.credit_type_id": "credit_type",
}
BINDINGS["archiveAlert-v1"] = {"body.id": "spare_alert"}
BINDINGS["listCustomerAlerts-v1"] = {"body.customer_id": "alert_customer"}
for op_id in ("getCustomerAlert-v1", "resetCustomerAlerts-v1"):
    BINDINGS[op_id] = {"body.customer_id": "alert_customer", "body.alert_id": "alert"}
BINDINGS["createRateCard-v1"] = {
    "body.credit_type_conversions[*].custom_credit_type_id": "custom_unit",
}
BINDINGS["updateRateCard-v1"]["body.add_credit_type_conversions[*].custom_credit_type_id"] = (
    "custom_unit"
)
# The other spelling of addRate takes what addRate takes.
BINDINGS["addRateAlias-tally"] = BINDINGS["addRate-v1"]
# How often a bound parameter takes a dictionary value instead of a generated one.
BINDING_PROBABILITY = 0.7
# Operations whose valid requests need many fields right at once (real ids, hour-aligned times,
# pricing group values matching the product): more fuzzing examples so some of them succeed.
MORE_EXAMPLES = {
    "addRate-v1": 4,
    "addRateAlias-tally": 4,
    "createContract-v1": 2,
    "amendContract-v1": 2,
    "editContract-v2": 4,
    "createCustomerCredit-v1": 2,
    "updateCommitEndDate-v1": 4,
    "getInvoice-v1": 2,
}
# Operations where no generated case needs to succeed (the walkthrough's 2xx is still checked).
NO_GENERATED_2XX = {
    "regenerateInvoice-v1": (
        "a valid body names a voided invoice that has not been regenerated, and each voided "
        "invoice is regenerated once (a second request is a 400 naming the new invoice); the "
        "walkthrough voids one, regenerates it (200, response checked) and generated cases then "
        "name it again, or another id"
    ),
    "getPagedUsage-v1": (
        "a valid body names the customer and one of its metrics, an hour-aligned range in order "
        "or `current_period` (never both), and leaves out or gets right each of `group_key` "
        "(exactly one of the metric's group keys), `group_filters` (keys inside `group_key`) and "
        "the deprecated `group_by` (not with `group_key`); generated bodies set those optional "
        "fields to random values, so they rarely get all of them right at once (0 of 175 cases)"
    ),
    "scheduleProServicesInvoice-v1": (
        "a valid body names the customer, its contract, an hour-aligned `issued_at` whose "
        "invoice is still in its draft window (from an hour ago to the contract's end) and "
        "lines that each name one of that contract's professional services with an `amount` "
        "or a `unit_price` and `quantity` in exact-decimal range, never both; generated bodies "
        "rarely get every field right at once"
    ),
    "addManualBalanceLedgerEntry-v1": (
        "a valid body names the customer, one of its commits or credits and one of that one's "
        "segments, a non-blank reason, no `per_group_amounts` (refused: Tally has no seat-based "
        "balances) and no `contract_id` unless the balance is that contract's; generated "
        "bodies set the optional fields to random values (0 of 103 cases reached all at once)"
    ),
    "addRates-v1": (
        "a valid body needs a non-empty `rates` list whose every item has a real product, an "
        "hour-aligned start, a price (optional in the document, required for FLAT by Metronome's "
        "rules) and tiers within exact-decimal range; random generation shrinks towards empty "
        "lists and 1e-300-style floats, so it almost never gets there (0 of 392 cases at "
        "150 examples)"
    ),
    "createCustomerCommit-v1": (
        "the document's invoice schedule says `Must provide either schedule_items or "
        "recurring_schedule`, so the generator puts a `recurring_schedule` in nearly every "
        "invoice schedule (370 of 515 cases in one run), which must then have hour-aligned "
        "`starting_at`/`ending_before` in order and at most 100 items; on top of that a valid "
        "body needs a non-empty, hour-aligned, ordered access schedule, the customer's FIXED "
        "product and, once invoiced, the customer's contract all at once"
    ),
}


def toml_value(v) -> str:
    return json.dumps(v)  # JSON strings, numbers, arrays and booleans are valid TOML values


def write_config(
    path: Path,
    dictionaries: dict[str, list],
    seed_value: int,
    max_examples: int,
    phases: list[str],
    token: str,
):
    lines = [
        f"seed = {seed_value}",
        "workers = 1",
        # Hypothesis's health checks (slow generation, heavy filtering) would abort the big
        # contract/create schema; they say nothing about the server.
        "suppress-health-check = [\"all\"]",
        "",
        "[generation]",
        "mode = \"all\"",
        f"max-examples = {max_examples}",
        "database = \"none\"",
        "",
        "[headers]",
        f"Authorization = {toml_value('Bearer ' + token)}",
        "",
        "[checks]",
        "enabled = false",
    ]
    for check in CHECKS:
        lines += [f"[checks.{check}]", "enabled = true"]
    lines += [""]
    for phase in ALL_PHASES:
        lines += [f"[phases.{phase}]", f"enabled = {toml_value(phase in phases)}"]
    lines += [""]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = {toml_value(values)}", ""]
    for op_id, bindings in BINDINGS.items():
        lines += ["[[operations]]", f"include-operation-id = {toml_value(op_id)}"]
        inner = ", ".join(
            f"{toml_value(param)} = {{ dictionary = {toml_value(dictionary)}, "
            f"probability = {BINDING_PROBABILITY} }}"
            for param, dictionary in bindings.items()
        )
        lines += [f"parameters = {{ {inner} }}"]
        if op_id in MORE_EXAMPLES:
            lines += [f"generation = {{ max-examples = {max_examples * MORE_EXAMPLES[op_id]} }}"]
        lines += [""]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Run and report
# --------------------------------------------------------------------------------------------


def summarize(ndjson: Path) -> dict[str, collections.Counter]:
    """Per operation label: how many generated cases got each status and status class."""
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in ndjson.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        for case_id, interaction in recorder.get("interactions", {}).items():
            # A stateful scenario chains several operations; attribute each call to its own.
            label = recorder["label"]
            case = recorder["cases"].get(case_id, {}).get("value")
            if finished.get("phase") == "stateful" and case:
                label = f"{case['method']} {case['path']}"
            counts = per_op[label]
            counts["cases"] += 1
            response = interaction.get("response")
            if response is None:
                counts["no response"] += 1
                continue
            status = response["status_code"]
            counts[f"{status // 100}xx"] += 1
            counts[str(status)] += 1
    return per_op


def main() -> int:
    base = os.environ["TALLY_BASE_URL"].rstrip("/")
    token = os.environ["TALLY_TOKEN"]
    work = Path(os.environ["CONTRACT_WORKDIR"])
    max_examples = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "25"))
    seed_value = int(os.environ.get("CONTRACT_SEED", "20261125"))
    phases = os.environ.get("CONTRACT_PHASES", ",".join(DEFAULT_PHASES)).split(",")
    if not set(phases) <= set(ALL_PHASES):
        print(f"CONTRACT_PHASES must be a subset of {ALL_PHASES}", file=sys.stderr)
        return 1
    work.mkdir(parents=True, exist_ok=True)

    import schemathesis

    if schemathesis.__version__ != SCHEMATHESIS_VERSION:
        print(
            f"schemathesis {schemathesis.__version__} is installed; this test pins "
            f"{SCHEMATHESIS_VERSION} (scripts/test.sh installs it)",
            file=sys.stderr,
        )
        return 1

    document = served_document(base)
    doc_path = work / "openapi.json"
    doc_path.write_text(json.dumps(document))

    started = time.monotonic()
    walk = Walk(schemathesis.openapi.from_dict(document), base, token)
    dictionaries = walkthrough(walk)
    walk_elapsed = time.monotonic() - started
    unwalked = sorted(OPERATIONS[op] for op in set(OPERATIONS) - set(walk.statuses))
    if unwalked:
        print(f"the walkthrough does not call {unwalked}: add them to it", file=sys.stderr)
        return 1

    config = work / "schemathesis.toml"
    write_config(config, dictionaries, seed_value, max_examples, phases, token)
    report = work / "report.ndjson"
    cmd = [
        sys.executable, "-m", "schemathesis.cli",
        "--config-file", str(config),
        "--no-color",
        "run", str(doc_path),
        "--url", base,
        "--report", "ndjson",
        "--report-ndjson-path", str(report),
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, text=True, capture_output=True)
    fuzz_elapsed = time.monotonic() - started
    print(proc.stdout)
    if proc.stderr.strip():
        print(proc.stderr, file=sys.stderr)
    for failure in walk.failures:
        print(failure)

    per_op = summarize(report) if report.exists() else {}
    print(
        f"walkthrough {walk_elapsed:.1f}s; schemathesis {SCHEMATHESIS_VERSION} exited "
        f"{proc.returncode} after {fuzz_elapsed:.1f}s (seed {seed_value}, "
        f"max-examples {max_examples}, phases {','.join(phases)})"
    )
    print(
        f"{'operation':56} {'walk':>4} {'generated':>9} {'2xx':>5} {'4xx':>5} {'5xx':>4}  "
        "generated statuses"
    )
    passed = failed = 0
    generated_total = walk_total = 0
    for op_id, label in OPERATIONS.items():
        counts = per_op.get(label, collections.Counter())
        walked = sum(walk.statuses[op_id].values())
        generated_total += counts["cases"]
        walk_total += walked
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()) if k.isdigit())
        problems = []
        if counts["5xx"] or counts["no response"]:
            problems.append("5xx or no response")
        if counts["2xx"] == 0 and op_id not in NO_GENERATED_2XX:
            problems.append("no generated case reached 2xx")
        if counts["cases"] == 0:
            problems.append("not tested")
        passed += not problems
        failed += bool(problems)
        note = f"   <-- {'; '.join(problems)}" if problems else ""
        print(
            f"{label:56} {walked:>4} {counts['cases']:>9} {counts['2xx']:>5} {counts['4xx']:>5} "
            f"{counts['5xx']:>4}  {statuses}{note}"
        )
    print(
        f"{len(OPERATIONS)} operations; {walk_total} walkthrough requests, "
        f"{generated_total} generated cases"
    )
    for change in document.get("x-tally-changes", []):
        print(f"document change {change['name']}: {change['why']}")
    for op_id, why in NO_GENERATED_2XX.items():
        print(f"{OPERATIONS[op_id]}: a generated 2xx is not required: {why}")
    if walk.failures:
        failed += 1
        print(f"{len(walk.failures)} walkthrough responses broke the contract (see above)")
    if proc.returncode != 0:
        failed += 1
        print("schemathesis reported failures (see above)")
    print(f"contract: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
