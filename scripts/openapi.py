#!/usr/bin/env python3
"""Builds `central/openapi.json`, the OpenAPI document `GET /openapi.json` serves.

The document describes exactly the operations this Tally serves (central's test
`central/tests/it/openapi.rs` fails when the router and the document disagree):

- the Metronome operations Tally implements (METRONOME below), copied unchanged from Metronome's
  document (`../shared/reference/metronome-openapi.json`, which exists only beside a checkout, so
  the result is committed and the server embeds it), with the few changes in PATCHES applied,
  each with its reason, which the document also carries under `x-tally-changes`;
- Tally's own endpoints (TALLY below): health, this document, the operator read of stuck
  contracts, and two alternative spellings of Metronome paths;
- only the components those operations reach.

The internal edge endpoints (`/internal/v1/*`) are not public and are left out.

Usage: `python3 scripts/openapi.py` rewrites the file; `--check` exits 1 when the committed file
is not what this script builds (no network needed either way).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "metronome-openapi.json"
OUTPUT = ROOT / "central" / "openapi.json"

# The Metronome operations Tally implements (central/src/http/*.rs), by operationId.
METRONOME = {
    "listCreditTypes-v1": "GET /v1/credit-types/list",
    "createBillableMetricV1-v1": "POST /v1/billable-metrics/create",
    "archiveBillableMetric-v1": "POST /v1/billable-metrics/archive",
    "listAllBillableMetrics-v1": "GET /v1/billable-metrics",
    "getBillableMetric-v1": "GET /v1/billable-metrics/{billable_metric_id}",
    "createProduct-v1": "POST /v1/contract-pricing/products/create",
    "getProduct-v1": "POST /v1/contract-pricing/products/get",
    "listProducts-v1": "POST /v1/contract-pricing/products/list",
    "updateProduct-v1": "POST /v1/contract-pricing/products/update",
    "archiveProductListItem-v1": "POST /v1/contract-pricing/products/archive",
    "createRateCard-v1": "POST /v1/contract-pricing/rate-cards/create",
    "getRateCard-v1": "POST /v1/contract-pricing/rate-cards/get",
    "listRateCards-v1": "POST /v1/contract-pricing/rate-cards/list",
    "updateRateCard-v1": "POST /v1/contract-pricing/rate-cards/update",
    "archiveRateCard-v1": "POST /v1/contract-pricing/rate-cards/archive",
    "addRate-v1": "POST /v1/contract-pricing/rate-cards/addRate",
    "addRates-v1": "POST /v1/contract-pricing/rate-cards/addRates",
    "getRates-v1": "POST /v1/contract-pricing/rate-cards/getRates",
    "getRateSchedule-v1": "POST /v1/contract-pricing/rate-cards/getRateSchedule",
    "setRateCardProductsOrder-v1": "POST /v1/contract-pricing/rate-cards/setRateCardProductsOrder",
    "moveRateCardProducts-v1": "POST /v1/contract-pricing/rate-cards/moveRateCardProducts",
    "createCustomer-v1": "POST /v1/customers",
    "listCustomers-v1": "GET /v1/customers",
    "getCustomer-v1": "GET /v1/customers/{customer_id}",
    "archiveCustomer-v1": "POST /v1/customers/archive",
    "setIngestAliases-v1": "POST /v1/customers/{customer_id}/setIngestAliases",
    "setCustomerName-v1": "POST /v1/customers/{customer_id}/setName",
    "setCustomerBillingProviderConfigurations-v1": (
        "POST /v1/setCustomerBillingProviderConfigurations"
    ),
    "getCustomerBillingProviderConfigurations-v1": (
        "POST /v1/getCustomerBillingProviderConfigurations"
    ),
    "archiveCustomerBillingProviderConfigurations-v1": (
        "POST /v1/archiveCustomerBillingProviderConfigurations"
    ),
    "getCustomerRevenueSystemConfigurations-v1": "POST /v1/getCustomerRevenueSystemConfigurations",
    "getBillingConfig-v1": "GET /v1/customers/{customer_id}/billing-config/{billing_provider_type}",
    "setBillingConfigForCustomer-v1": (
        "POST /v1/customers/{customer_id}/billing-config/{billing_provider_type}"
    ),
    "deleteBillingConfigForCustomer-v1": (
        "DELETE /v1/customers/{customer_id}/billing-config/{billing_provider_type}"
    ),
    "createContract-v1": "POST /v1/contracts/create",
    "getContract-v1": "POST /v1/contracts/get",
    "listContracts-v1": "POST /v1/contracts/list",
    "archiveContract-v1": "POST /v1/contracts/archive",
    "amendContract-v1": "POST /v1/contracts/amend",
    "updateContractEndDate-v1": "POST /v1/contracts/updateEndDate",
    "getContractRateSchedule-v1": "POST /v1/contracts/getContractRateSchedule",
    "scheduleProServicesInvoice-v1": "POST /v1/contracts/scheduleProServicesInvoice",
    "getSubscriptionQuantityHistory-v1": "POST /v1/contracts/getSubscriptionQuantityHistory",
    "getNetBalance-v1": "POST /v1/contracts/customerBalances/getNetBalance",
    "listCustomerBalances-v1": "POST /v1/contracts/customerBalances/list",
    "addManualBalanceLedgerEntry-v1": "POST /v1/contracts/addManualBalanceLedgerEntry",
    "createCustomerCommit-v1": "POST /v1/contracts/customerCommits/create",
    "listCustomerCommits-v1": "POST /v1/contracts/customerCommits/list",
    "updateCommitEndDate-v1": "POST /v1/contracts/customerCommits/updateEndDate",
    "createCustomerCredit-v1": "POST /v1/contracts/customerCredits/create",
    "listCustomerCredits-v1": "POST /v1/contracts/customerCredits/list",
    "updateCreditEndDate-v1": "POST /v1/contracts/customerCredits/updateEndDate",
    "createPackage-v1": "POST /v1/packages/create",
    "getPackage-v1": "POST /v1/packages/get",
    "listPackages-v1": "POST /v1/packages/list",
    "archivePackage-v1": "POST /v1/packages/archive",
    "listContractsOnPackage-v1": "POST /v1/packages/listContractsOnPackage",
    "getContract-v2": "POST /v2/contracts/get",
    "listContracts-v2": "POST /v2/contracts/list",
    "editContract-v2": "POST /v2/contracts/edit",
    "getContractEditHistory-v2": "POST /v2/contracts/getEditHistory",
    "ingest-v1": "POST /v1/ingest",
    "listInvoices-v1": "GET /v1/customers/{customer_id}/invoices",
    "getInvoice-v1": "GET /v1/customers/{customer_id}/invoices/{invoice_id}",
    "voidInvoice-v1": "POST /v1/invoices/void",
    "regenerateInvoice-v1": "POST /v1/invoices/regenerate",
    "previewCustomerEvents-v1": "POST /v1/customers/{customer_id}/previewEvents",
    "getUsageBatch-v1": "POST /v1/usage",
    "getPagedUsage-v1": "POST /v1/usage/groups",
    "searchEvents-v1": "POST /v1/events/search",
    "listBillableMetrics-v1": "GET /v1/customers/{customer_id}/billable-metrics",
    "getCosts-v1": "GET /v1/customers/{customer_id}/costs",
    "setClientWebhookSecret-v1": "POST /v1/client/config/webhook_secret",
    "createAlert-v1": "POST /v1/alerts/create",
    "archiveAlert-v1": "POST /v1/alerts/archive",
    "listCustomerAlerts-v1": "POST /v1/customer-alerts/list",
    "getCustomerAlert-v1": "POST /v1/customer-alerts/get",
    "resetCustomerAlerts-v1": "POST /v1/customer-alerts/reset",
}

TALLY_TAG = "Tally"
ERROR = {"$ref": "#/components/schemas/Error"}
ID = {"$ref": "#/components/schemas/Id"}
STATUS_OK = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
}


def json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def tally_operation(
    op_id: str,
    summary: str,
    description: str,
    responses: dict,
    open_: bool,
    request: dict | None = None,
):
    op = {
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "tags": [TALLY_TAG],
        "responses": responses,
    }
    if request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": request}}}
    if open_:
        op["security"] = []  # no token needed
    return op


# Tally's own operations: (method, path) -> operation, or ("alias", Metronome operationId) for a
# second spelling of a Metronome path that behaves exactly like it.
TALLY: dict[tuple[str, str], object] = {
    ("get", "/"): tally_operation(
        "getServiceInfo-tally",
        "Service information",
        "Names the service and its version. Needs no token.",
        {
            "200": json_response(
                "Success",
                {
                    "type": "object",
                    "required": ["service", "version", "status", "api"],
                    "properties": {
                        "service": {"type": "string", "enum": ["tally"]},
                        "version": {"type": "string"},
                        "status": {"type": "string", "enum": ["ok"]},
                        "api": {"type": "string"},
                    },
                },
            )
        },
        open_=True,
    ),
    ("get", "/livez"): tally_operation(
        "livez-tally",
        "Liveness",
        "The process is up and serving. Needs no token.",
        {"200": json_response("Serving", STATUS_OK)},
        open_=True,
    ),
    ("get", "/readyz"): tally_operation(
        "readyz-tally",
        "Readiness",
        "The database answers and migrations ran, so this replica can take traffic; 503 "
        "otherwise. Needs no token.",
        {
            "200": json_response("Ready", STATUS_OK),
            "503": json_response("The database does not answer", ERROR),
        },
        open_=True,
    ),
    ("get", "/openapi.json"): tally_operation(
        "getOpenApiDocument-tally",
        "This OpenAPI document",
        "The operations this Tally serves: the Metronome operations it implements and its own. "
        "Needs no token.",
        {"200": json_response("The document", {"type": "object"})},
        open_=True,
    ),
    ("get", "/v1/operations/stuck-contracts"): tally_operation(
        "listStuckContracts-tally",
        "Contracts the background job could not finalize",
        "Tally's own operator read (not a Metronome path): the token environment's contracts "
        "whose last job pass failed to rate or finalize them, with the last error and how many "
        "passes failed. A contract leaves the list when it next finalizes.",
        {
            "200": json_response(
                "Success",
                {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "data": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/TallyStuckContract"},
                        }
                    },
                },
            )
        },
        open_=False,
    ),
    ("post", "/v1/credit-types/create"): tally_operation(
        "createCreditType-tally",
        "Create a custom pricing unit",
        "Metronome's Python SDK's `credit_types.create` (not in Metronome's document): a custom "
        "pricing unit (`is_currency: false`) of the token's environment. Its name must differ "
        "from every custom unit ever created there (archived ones included) and from USD "
        "(cents)'s: 409 otherwise.",
        {
            "200": json_response(
                "Success",
                {"type": "object", "required": ["data"], "properties": {"data": ID}},
            ),
            "400": json_response("Missing or empty name", ERROR),
            "409": json_response("The name is taken", ERROR),
        },
        open_=False,
        request={
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 256}},
        },
    ),
    ("post", "/v1/credit-types/archive"): tally_operation(
        "archiveCreditType-tally",
        "Archive a custom pricing unit",
        "Metronome's Python SDK's `credit_types.archive` (not in Metronome's document): the "
        "unit is left out of `credit-types/list` and refused in new rates, commits, credits, "
        "overrides and conversions; what already uses it keeps pricing. Idempotent; USD "
        "(cents) cannot be archived (400).",
        {
            "200": json_response(
                "Success",
                {"type": "object", "required": ["data"], "properties": {"data": ID}},
            ),
            "400": json_response("USD (cents) or a malformed body", ERROR),
            "404": json_response("No such custom pricing unit", ERROR),
        },
        open_=False,
        request={
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "string"}},
        },
    ),
    ("get", "/v1/customers/{customer_id}/pricingSnapshot"): tally_operation(
        "getPricingSnapshot-tally",
        "A customer's pricing snapshot for the browser preview",
        "Tally extension (not a Metronome path): everything the browser cost preview (`GET "
        "/preview`, core compiled to WASM) prices with, so it computes what `previewEvents` "
        "returns to the last digit. Per contract of the customer with an open draft usage "
        "invoice: its pricing snapshot (core's `PricingSnapshot`: credit types, billable "
        "metrics, products, rates, overrides, commits and credits, conversions), what its "
        "invoices show of products, and each open draft period with its invoice id, the "
        "balances' ledger before it and (unless `include_usage=false`) its stored usage rows. "
        "Scoped to the token's environment; 404 for an unknown customer. The shape is core's "
        "and may change between Tally versions.",
        {
            "200": json_response(
                "Success",
                {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"$ref": "#/components/schemas/TallyPreviewSnapshot"}},
                },
            ),
            "400": json_response("A malformed include_usage", ERROR),
            "404": json_response("No such customer", ERROR),
        },
        open_=False,
    )
    | {
        "parameters": [
            {"$ref": "#/components/parameters/CustomerId"},
            {
                "name": "include_usage",
                "in": "query",
                "required": False,
                "description": "Whether each period carries its stored usage (default true).",
                "schema": {"type": "boolean", "default": True},
            },
        ]
    },
    ("get", "/preview"): tally_operation(
        "getPreviewPage-tally",
        "The browser cost preview page",
        "Tally extension: a static page that fetches a customer's pricing snapshot (with the "
        "token entered in it) and prices hypothetical usage in the browser with core compiled "
        "to WASM. Needs no token to load.",
        {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}},
        open_=True,
    ),
    ("get", "/preview/tally_core.js"): tally_operation(
        "getPreviewGlue-tally",
        "The preview's WASM module loader",
        "Tally extension: the wasm-bindgen JavaScript glue of the preview's WASM module (an ES "
        "module). Needs no token.",
        {"200": {"description": "The glue", "content": {"text/javascript": {"schema": {"type": "string"}}}}},
        open_=True,
    ),
    ("get", "/preview/tally_core_bg.wasm"): tally_operation(
        "getPreviewModule-tally",
        "The preview's WASM module",
        "Tally extension: tally-core built for the browser (its `wasm` feature). Needs no token.",
        {
            "200": {
                "description": "The module",
                "content": {"application/wasm": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
        open_=True,
    ),
    ("post", "/v1/webhook-endpoints/create"): tally_operation(
        "createWebhookEndpoint-tally",
        "Create a webhook endpoint",
        "Tally extension (Metronome configures webhook destinations in its dashboard): an "
        "endpoint of the token's environment that receives every webhook (`invoice.finalized`) "
        "from now on, POSTed as `{id, type, properties}` and signed with the environment's "
        "secret (`POST /v1/client/config/webhook_secret`): `Metronome-Webhook-Signature` = hex "
        "HMAC-SHA256 of the `Date` header + newline + body; `Date` and `X-Metronome-Date` carry "
        "the same value. Delivered at least once (the `id` is stable across retries), retried "
        "with exponential backoff for about two days. `url` must be an absolute http(s) URL "
        "without credentials (400 otherwise).",
        {
            "200": json_response(
                "Success",
                {"type": "object", "required": ["data"], "properties": {"data": ID}},
            ),
            "400": json_response("A missing or malformed url, or an unknown field", ERROR),
        },
        open_=False,
        request={
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string", "format": "uri", "maxLength": 2048},
                "description": {"type": "string", "maxLength": 1024},
            },
        },
    ),
    ("get", "/v1/webhook-endpoints"): tally_operation(
        "listWebhookEndpoints-tally",
        "List webhook endpoints",
        "Tally extension: the token environment's webhook endpoints in creation order, paged "
        "by `limit` (1-100, default 25) and `next_page`; active ones unless `archive_filter` "
        "says otherwise.",
        {
            "200": json_response(
                "Success",
                {
                    "type": "object",
                    "required": ["data", "next_page"],
                    "properties": {
                        "data": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/TallyWebhookEndpoint"},
                        },
                        "next_page": {"type": "string", "nullable": True},
                    },
                },
            ),
            "400": json_response("A bad limit, cursor or archive_filter", ERROR),
        },
        open_=False,
    )
    | {
        "parameters": [
            {"$ref": "#/components/parameters/PageLimit"},
            {"$ref": "#/components/parameters/NextPage"},
            {
                "name": "archive_filter",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["ARCHIVED", "NOT_ARCHIVED", "ALL"]},
            },
        ]
    },
    ("post", "/v1/webhook-endpoints/archive"): tally_operation(
        "archiveWebhookEndpoint-tally",
        "Archive a webhook endpoint",
        "Tally extension: the endpoint receives nothing new, and its undelivered messages are "
        "given up at their next attempt. Idempotent; 404 for an unknown id.",
        {
            "200": json_response(
                "Success",
                {"type": "object", "required": ["data"], "properties": {"data": ID}},
            ),
            "400": json_response("A malformed body", ERROR),
            "404": json_response("No such webhook endpoint", ERROR),
        },
        open_=False,
        request={
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {"id": {"type": "string"}},
        },
    ),
    ("get", "/v1/webhook-endpoints/{webhook_endpoint_id}/deliveries"): tally_operation(
        "listWebhookDeliveries-tally",
        "A webhook endpoint's delivery log",
        "Tally extension: the messages sent (or being sent) to the endpoint, oldest first, each "
        "with its status (`pending`, `delivered`, `failed` once given up), attempts begun, the "
        "last error and its times, and the payload sent. Paged by `limit` and `next_page`; 404 "
        "for an unknown endpoint.",
        {
            "200": json_response(
                "Success",
                {
                    "type": "object",
                    "required": ["data", "next_page"],
                    "properties": {
                        "data": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/TallyWebhookDelivery"},
                        },
                        "next_page": {"type": "string", "nullable": True},
                    },
                },
            ),
            "400": json_response("A bad limit or cursor", ERROR),
            "404": json_response("No such webhook endpoint", ERROR),
        },
        open_=False,
    )
    | {
        "parameters": [
            {
                "name": "webhook_endpoint_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            },
            {"$ref": "#/components/parameters/PageLimit"},
            {"$ref": "#/components/parameters/NextPage"},
        ]
    },
    ("post", "/v1/customers/create"): ("alias", "createCustomer-v1"),
    ("post", "/v1/contract-pricing/rate-cards/rates/add"): ("alias", "addRate-v1"),
}

TALLY_SCHEMAS = {
    "TallyPreviewSnapshot": {
        "type": "object",
        "required": ["customer_id", "contracts"],
        "properties": {
            "customer_id": {"type": "string"},
            "contracts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["pricing", "products", "periods"],
                    "properties": {
                        "pricing": {"type": "object"},
                        "products": {"type": "object"},
                        "periods": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
    },
    "TallyStuckContract": {
        "type": "object",
        "required": [
            "contract_id",
            "error",
            "first_failed_at",
            "last_failed_at",
            "failed_passes",
        ],
        "properties": {
            "contract_id": {"type": "string", "format": "uuid"},
            "error": {"type": "string"},
            "first_failed_at": {"type": "string", "format": "date-time"},
            "last_failed_at": {"type": "string", "format": "date-time"},
            "failed_passes": {"type": "integer", "minimum": 1},
        },
    },
    "TallyWebhookEndpoint": {
        "type": "object",
        "required": ["id", "url", "created_at", "archived_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "url": {"type": "string"},
            "description": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "archived_at": {"type": "string", "format": "date-time", "nullable": True},
        },
    },
    "TallyWebhookDelivery": {
        "type": "object",
        "required": ["id", "type", "status", "attempts", "created_at", "payload"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer", "minimum": 0},
            "last_error": {"type": "string", "nullable": True},
            "created_at": {"type": "string", "format": "date-time"},
            "next_attempt_at": {"type": "string", "format": "date-time", "nullable": True},
            "delivered_at": {"type": "string", "format": "date-time", "nullable": True},
            "failed_at": {"type": "string", "format": "date-time", "nullable": True},
            "payload": {"type": "object"},
        },
    },
}

# Changes to Metronome's operations, each (name, why, function, whether it changes components:
# those run once the reachable components are in the document).
PATCHES: list[tuple[str, str, object, bool]] = []


def patch(why: str, components: bool = False):
    def register(fn):
        PATCHES.append((fn.__name__, why, fn, components))
        return fn

    return register


def accept_generic_400(doc: dict, path: str) -> None:
    """Lets the 400 of `POST path`, documented as a coded not-found body only, also be the
    generic `Error` Tally answers malformed bodies with."""
    content = doc["paths"][path]["post"]["responses"]["400"]["content"]["application/json"]
    content["schema"] = {"anyOf": [content["schema"], ERROR]}


@patch(
    "Metronome's error convention (every 4xx body is {\"message\": ...}; 400 validation, 401 bad "
    "token, 404 not found, 409 conflict, 413 too large) is documented once for the API, not on "
    "each operation: most operations list only some of their 4xx codes. Each operation gets a "
    "`4XX` response with the document's own `Error` schema; explicitly listed codes keep theirs."
)
def document_error_convention(doc: dict) -> None:
    for item in doc["paths"].values():
        for method, op in item.items():
            if method in ("get", "post", "delete"):
                op["responses"].setdefault(
                    "4XX",
                    {
                        "description": "Client error (Metronome's convention)",
                        "content": {"application/json": {"schema": ERROR}},
                    },
                )


@patch(
    "POST /v1/events/search answers a Tally extension per event, `finalized_invoice_ids`: the "
    "matched customer's FINALIZED usage invoices whose period holds the event's timestamp (the "
    "event is on none of them until one is voided and regenerated). Properties are answered as "
    "the exact text Tally stores them as (a number sent as 60 reads back \"60\")."
)
def events_search_finalized_invoices(doc: dict) -> None:
    op = doc["paths"]["/v1/events/search"]["post"]
    item = op["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    item["properties"]["finalized_invoice_ids"] = {
        "type": "array",
        "items": {"type": "string"},
        "description": "Tally extension: finalized usage invoices of the matched customer "
        "whose period holds this event's timestamp",
    }
    item["properties"]["properties"] = {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }


@patch(
    "POST /v2/contracts/get, /v2/contracts/list, /v2/contracts/edit and "
    "/v2/contracts/getEditHistory document a single error, a 400 whose body "
    "requires `code` in {CustomerNotFound, ContractNotFound}: only the not-found case. Tally "
    "answers not-found with 404 {\"message\"} as on every other endpoint (v1 contracts/get "
    "included), and a malformed body with 400 {\"message\"}, which that schema cannot describe. "
    "Their 400 schema also accepts the generic `Error`."
)
def v2_contract_validation_errors(doc: dict) -> None:
    for path in (
        "/v2/contracts/get",
        "/v2/contracts/list",
        "/v2/contracts/edit",
        "/v2/contracts/getEditHistory",
    ):
        accept_generic_400(doc, path)


@patch(
    "POST /v1/packages/listContractsOnPackage documents a single error, a 400 whose body "
    "requires `code` PackageNotFound: only the unknown-package case. Tally answers an unknown "
    "package with 404 {\"message\"} as packages/get does, and a malformed body or cursor with "
    "400 {\"message\"}, which that schema cannot describe. Its 400 schema also accepts the "
    "generic `Error`."
)
def package_contracts_validation_errors(doc: dict) -> None:
    accept_generic_400(doc, "/v1/packages/listContractsOnPackage")


@patch(
    "POST /v1/contracts/getSubscriptionQuantityHistory documents a single error, a 400 whose "
    "body requires `code` in {ContractNotFound, CustomerNotFound, SubscriptionNotFound}: only "
    "the not-found cases. Tally answers them with 404 {\"message\"} as contracts/get does, and "
    "a malformed body with 400 {\"message\"}, which that schema cannot describe. Its 400 schema "
    "also accepts the generic `Error`."
)
def subscription_history_validation_errors(doc: dict) -> None:
    accept_generic_400(doc, "/v1/contracts/getSubscriptionQuantityHistory")


@patch(
    "`ContractEdit` (the edit response's `edit` and getEditHistory's items) records what an edit "
    "changed, but cannot say that it cleared a term: the request's `update_contract_end_date` "
    "is nullable (null = open-ended) while the record's is not, and the record has no "
    "`update_net_payment_terms_days` although the request does. Tally shows them as the "
    "request gave them: `update_contract_end_date` is nullable and "
    "`update_net_payment_terms_days` (a nullable number) is added.",
    components=True,
)
def contract_edit_records_cleared_terms(doc: dict) -> None:
    props = doc["components"]["schemas"]["ContractEdit"]["properties"]
    props["update_contract_end_date"]["nullable"] = True
    props["update_net_payment_terms_days"] = {
        "type": "number",
        "nullable": True,
        "description": "The net payment terms the edit set (null: cleared).",
    }


@patch(
    "POST /v1/contracts/customerCommits/list and /customerCredits/list document `limit` as "
    "1..=25 (default 25). Tally's page limit is 1..=100 wherever a list takes one (default 25), "
    "these two included; the documented maximum is raised to 100."
)
def customer_balance_page_limit(doc: dict) -> None:
    for path in ("/v1/contracts/customerCommits/list", "/v1/contracts/customerCredits/list"):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        body["schema"]["properties"]["limit"]["maximum"] = 100


def version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


def metronome_operations(upstream: dict) -> dict[str, dict]:
    """The implemented operations as {path: {method: operation}}, in the upstream order."""
    paths: dict[str, dict] = {}
    found = set()
    for path, item in upstream["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or op.get("operationId") not in METRONOME:
                continue
            expected = METRONOME[op["operationId"]]
            if expected != f"{method.upper()} {path}":
                raise SystemExit(f"{op['operationId']} is {method.upper()} {path}, not {expected}")
            found.add(op["operationId"])
            kept = paths.setdefault(path, {})
            if "parameters" in item:
                kept["parameters"] = item["parameters"]
            kept[method] = copy.deepcopy(op)
    missing = set(METRONOME) - found
    if missing:
        raise SystemExit(f"operations not in Metronome's document: {sorted(missing)}")
    return paths


def add_tally_operations(paths: dict[str, dict]) -> None:
    by_id = {
        op["operationId"]: op
        for item in paths.values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for (method, path), op in TALLY.items():
        if isinstance(op, tuple):
            _, of = op
            op = copy.deepcopy(by_id[of])
            op["operationId"] = f"{of.removesuffix('-v1')}Alias-tally"
            op["summary"] = f"{op['summary']} (another spelling of {METRONOME[of]})"
            op["description"] = (
                f"Tally serves this path exactly like {METRONOME[of]}, for clients that spell it "
                f"this way. {op.get('description', '')}"
            ).strip()
            op["x-tally-alias-of"] = of
        if path in paths and method in paths[path]:
            raise SystemExit(f"{method.upper()} {path} is both Metronome's and Tally's")
        paths.setdefault(path, {})[method] = op


def referenced(node, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            referenced(value, found)
    elif isinstance(node, list):
        for value in node:
            referenced(value, found)


def reachable_components(upstream: dict, paths: dict) -> dict:
    """The components the operations reach, transitively, in the upstream order."""
    components = copy.deepcopy(upstream["components"])
    components["schemas"].update(TALLY_SCHEMAS)
    seen: set[str] = set()
    todo: set[str] = set()
    referenced(paths, todo)
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        referenced(components[kind][name], todo)
    kept = {}
    for kind, items in components.items():
        if kind == "securitySchemes":
            kept[kind] = items
            continue
        chosen = {n: v for n, v in items.items() if f"#/components/{kind}/{n}" in seen}
        if chosen:
            kept[kind] = chosen
    return kept


def build() -> dict:
    if not REFERENCE.is_file():
        raise SystemExit(
            f"Metronome's OpenAPI document is missing: {REFERENCE} (it sits beside a checkout as "
            "../shared/reference; the built document is committed, so only regenerating needs it)"
        )
    upstream = json.loads(REFERENCE.read_text())
    doc = {
        "openapi": upstream["openapi"],
        "info": {
            "title": "Tally",
            "version": version(),
            "description": (
                "The operations this Tally serves: the subset of Metronome's API it implements "
                "(Metronome's own operation descriptions, with the changes under "
                "`x-tally-changes`) and Tally's own endpoints (tag `Tally`). Generated by "
                "scripts/openapi.py from Metronome's OpenAPI document "
                f"(\"{upstream['info']['title']}\" {upstream['info']['version']})."
            ),
        },
        "servers": [{"url": "/", "description": "this Tally"}],
        "security": upstream["security"],
        "paths": metronome_operations(upstream),
    }
    add_tally_operations(doc["paths"])
    doc["paths"] = dict(sorted(doc["paths"].items()))
    for _, _, fn, components in PATCHES:
        if not components:
            fn(doc)
    doc["components"] = reachable_components(upstream, doc["paths"])
    for _, _, fn, components in PATCHES:
        if components:
            fn(doc)
    used_tags = {
        tag
        for item in doc["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
        for tag in op.get("tags", [])
    }
    doc["tags"] = [t for t in upstream["tags"] if t["name"] in used_tags] + [
        {"name": TALLY_TAG, "description": "Tally's own endpoints (not Metronome's)."}
    ]
    doc["x-tally-changes"] = [{"name": name, "why": why} for name, why, _, _ in PATCHES]
    return doc


def main() -> int:
    text = json.dumps(build(), indent=1, ensure_ascii=False) + "\n"
    if sys.argv[1:] == ["--check"]:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is not what scripts/openapi.py builds: run it",
                file=sys.stderr,
            )
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
