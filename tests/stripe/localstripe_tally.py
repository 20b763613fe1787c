"""Runs localstripe (PyPI, pinned in scripts/test.sh) for tests/it/stripe.rs, with the three
Stripe invoice behaviours Tally uses that localstripe 1.15.10 lacks, written after Stripe's API
reference (everything else is localstripe's own code, unchanged):

1. `POST /v1/invoices` for a customer without a subscription: localstripe answers 404 "No upcoming
   invoices for customer" and drops `metadata`; Stripe creates a draft one-off invoice. Here it is
   created with localstripe's own Invoice class, taking `collection_method`, `auto_advance`,
   `currency`, `days_until_due` and `metadata`, and with `pending_invoice_items_behavior=exclude`
   it takes none of the customer's pending items (Stripe's default for new API versions).
2. `POST /v1/invoiceitems` with `invoice`: localstripe records the item but never puts it on the
   invoice's lines; Stripe adds it as a line, and refuses it (400) once the invoice is not a draft.
3. `POST /v1/invoices/{id}/finalize`: missing; Stripe moves a draft to open (400 otherwise).

For the kill -9 test, `--hang-after-item N` holds the response to the Nth `POST /v1/invoiceitems`
(the item is created) for 60 s, once, after printing `hanging` to stdout.

Usage: python3 localstripe_tally.py [--port PORT] [--hang-after-item N] (always from scratch; port 0, the default,
picks a free one); prints `listening on PORT` when ready.
"""

import argparse
import asyncio
import socket
import sys

from aiohttp import web

from localstripe import resources, server
from localstripe.errors import UserError
from localstripe.resources import Invoice, InvoiceItem, InvoiceLineItem

_original_invoice_create = Invoice._api_create.__func__
_original_item_create = InvoiceItem._api_create.__func__


def _invoice_create(cls, customer=None, subscription=None, metadata=None,
                    description=None, collection_method=None, auto_advance=None,
                    currency=None, days_until_due=None,
                    pending_invoice_items_behavior=None, **kwargs):
    if subscription is not None:
        return _original_invoice_create(
            cls, customer=customer, subscription=subscription,
            description=description, metadata=metadata,
            pending_invoice_items_behavior=pending_invoice_items_behavior, **kwargs)
    if kwargs:
        raise UserError(400, 'Unexpected ' + ', '.join(kwargs.keys()))
    if collection_method not in (None, 'charge_automatically', 'send_invoice'):
        raise UserError(400, 'Bad collection_method')
    if collection_method == 'send_invoice' and days_until_due is None:
        raise UserError(400, 'days_until_due is required with send_invoice')
    if pending_invoice_items_behavior not in (None, 'include', 'exclude'):
        raise UserError(400, 'Bad pending_invoice_items_behavior')
    if metadata is not None and type(metadata) is not dict:
        raise UserError(400, 'Bad metadata')
    invoice = Invoice(customer=customer, metadata=metadata,
                      description=description)
    if pending_invoice_items_behavior != 'include':
        # Give back the pending items the constructor swept in.
        for line in invoice.lines._list:
            item = resources.store.get('invoiceitem:' + line.invoice_item)
            if item is not None:
                item.invoice = None
        invoice.lines._list = []
    invoice.collection_method = collection_method or 'charge_automatically'
    invoice.auto_advance = auto_advance in (True, 'true')
    if currency:
        invoice.currency = currency
    return invoice


def _item_create(cls, invoice=None, **data):
    target = None
    if invoice is not None:
        target = Invoice._api_retrieve(invoice)
        if target.status != 'draft':
            raise UserError(400, 'The invoice is not a draft')
    item = _original_item_create(cls, invoice=invoice, **data)
    if target is not None:
        if not target.lines._list:
            target.currency = item.currency
        target.lines._list.append(InvoiceLineItem(item))
    return item


def _finalize(id=None, auto_advance=None, **kwargs):
    invoice = Invoice._api_retrieve(id)
    if invoice.status != 'draft':
        raise UserError(400, 'This invoice is already finalized')
    invoice._finalize()
    return invoice


Invoice._api_create = classmethod(_invoice_create)
InvoiceItem._api_create = classmethod(_item_create)
server.app.router.add_route('POST', '/v1/invoices/{id}/finalize',
                            server.api_extra(_finalize, None))


def hang_after_item(n):
    seen = {'items': 0}

    @web.middleware
    async def hang(request, handler):
        response = await handler(request)
        if request.method == 'POST' and request.path == '/v1/invoiceitems':
            seen['items'] += 1
            if seen['items'] == n:
                print('hanging', flush=True)
                await asyncio.sleep(60)
        return response

    return hang


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--hang-after-item', type=int, default=0)
    args = parser.parse_args()
    if args.hang_after_item:
        server.app.middlewares.append(hang_after_item(args.hang_after_item))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', args.port))
    print(f'listening on {sock.getsockname()[1]}', flush=True)
    web.run_app(server.app, sock=sock, print=None)


if __name__ == '__main__':
    sys.exit(main())
