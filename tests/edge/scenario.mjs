// A billing setup with one product per aggregation (COUNT, SUM with a group key, MAX, UNIQUE,
// LATEST), several customers on monthly contracts, and a deterministic event stream with
// duplicates, retries and events spread over hours. Used by the differential test and the
// central-outage tests, against the edge and natively against central.
import assert from 'node:assert/strict';
import { call } from './harness.mjs';

const HOUR_MS = 3_600_000;

export const METRICS = {
  count: { name: 'API calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['api_call'] } },
  sum: {
    name: 'Uploaded MB', aggregation_type: 'SUM', aggregation_key: 'mb',
    event_type_filter: { in_values: ['upload'] }, group_keys: [['region']],
  },
  max: { name: 'Peak cores', aggregation_type: 'MAX', aggregation_key: 'cores', event_type_filter: { in_values: ['cpu'] } },
  unique: { name: 'Active users', aggregation_type: 'UNIQUE', aggregation_key: 'user_id', event_type_filter: { in_values: ['login'] } },
  latest: { name: 'Seats', aggregation_type: 'LATEST', aggregation_key: 'count', event_type_filter: { in_values: ['seats'] } },
};
const PRICES = { count: 3, sum: 4, max: 10, unique: 100, latest: 1000 };
export const CUSTOMERS = ['acme', 'globex', 'initech'];

function monthStart(ms) {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** Where timestamps fall: a window of whole hours inside the current billing period, in the past. */
export function timeLayout(nowMs = Date.now()) {
  const contractStart = monthStart(nowMs - 3 * 24 * HOUR_MS);
  const periodStart = monthStart(nowMs - 2 * HOUR_MS);
  const hi = Math.floor((nowMs - HOUR_MS) / HOUR_MS) * HOUR_MS; // exclusive
  const lo = Math.max(periodStart, hi - 24 * HOUR_MS);
  return { contractStart, periodStart, lo, hi: Math.max(hi, lo + HOUR_MS) };
}

const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

async function ok(resp, what) {
  const r = await resp;
  assert.equal(r.status, 200, `${what}: ${r.status} ${r.text}`);
  return r.body.data;
}

/**
 * Creates metrics, products, a rate card, customers (ingest alias = name + tag) and their contracts at
 * `base` (central, or the edge which proxies to it). Returns { metrics, products, customers, card }.
 */
export async function setupBilling(base, token, layout, { kinds = Object.keys(METRICS), tag = '' } = {}) {
  const metrics = {};
  const products = {};
  for (const kind of kinds) {
    metrics[kind] = (await ok(call(base, token, 'POST', '/v1/billable-metrics/create', METRICS[kind]), `metric ${kind}`)).id;
    products[kind] = (await ok(call(base, token, 'POST', '/v1/contract-pricing/products/create', {
      name: METRICS[kind].name, type: 'USAGE', billable_metric_id: metrics[kind],
      ...(kind === 'sum' ? { presentation_group_key: ['region'] } : {}),
    }), `product ${kind}`)).id;
  }
  const card = (await ok(call(base, token, 'POST', '/v1/contract-pricing/rate-cards/create', { name: 'Edge card' }), 'rate card')).id;
  for (const kind of kinds) {
    await ok(call(base, token, 'POST', '/v1/contract-pricing/rate-cards/addRate', {
      rate_card_id: card, product_id: products[kind], starting_at: iso(layout.contractStart),
      entitled: true, rate_type: 'FLAT', price: PRICES[kind],
    }), `rate ${kind}`);
  }
  const customers = {};
  for (const name of CUSTOMERS) {
    customers[name] = (await ok(call(base, token, 'POST', '/v1/customers', { name, ingest_aliases: [`${name}${tag}`] }), `customer ${name}`)).id;
    await ok(call(base, token, 'POST', '/v1/contracts/create', {
      customer_id: customers[name], rate_card_id: card, starting_at: iso(layout.contractStart),
    }), `contract ${name}`);
  }
  return { metrics, products, customers, card };
}

/** A small deterministic PRNG (mulberry32), so every run sends the same stream. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Requests (arrays of ≤ 100 events) for `customerRef(name)`: every aggregation, every customer,
 * timestamps over every hour of the layout's window, decimal values as strings and numbers, and
 * duplicates: inside a request, across requests (with different values: the first wins), and whole
 * requests sent twice (retries).
 */
export function eventStream(layout, { seed = 7, events = 600, prefix = 'ev', customerRef = (c) => c } = {}) {
  const rand = rng(seed);
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const hours = Math.max(1, Math.round((layout.hi - layout.lo) / HOUR_MS));
  const all = [];
  for (let i = 0; i < events; i++) {
    const customer = customerRef(CUSTOMERS[i % CUSTOMERS.length]);
    const ts = iso(layout.lo + (i % hours) * HOUR_MS + Math.floor(rand() * HOUR_MS));
    const base = { transaction_id: `${prefix}-${i}`, customer_id: customer, timestamp: ts };
    switch (i % 5) {
      case 0: all.push({ ...base, event_type: 'api_call' }); break;
      case 1: all.push({ ...base, event_type: 'upload', properties: { mb: rand() < 0.5 ? `${Math.floor(rand() * 1000)}.25` : Math.floor(rand() * 50), region: pick(['eu', 'us', 'ap']) } }); break;
      case 2: all.push({ ...base, event_type: 'cpu', properties: { cores: Math.floor(rand() * 64) + 1 } }); break;
      case 3: all.push({ ...base, event_type: 'login', properties: { user_id: `u${Math.floor(rand() * 40)}` } }); break;
      default: all.push({ ...base, event_type: 'seats', properties: { count: String(Math.floor(rand() * 500)) } });
    }
  }
  const requests = [];
  for (let i = 0; i < all.length; i += 80) {
    const batch = all.slice(i, i + 80);
    // A copy of an earlier event of this request (same transaction id, different value).
    batch.push({ ...batch[3], properties: { ...(batch[3].properties || {}), cores: 999, mb: '9999', count: '9999' } });
    // A copy of an event from two requests ago: a duplicate across requests.
    if (i >= 160) batch.push({ ...all[i - 150], properties: { user_id: 'late', count: '1' } });
    requests.push(batch);
    // Every third request is retried whole, as a client does after a timeout.
    if ((i / 80) % 3 === 2) requests.push(batch);
  }
  return requests;
}

/**
 * The quantity of `productId`'s line on the invoice whose period holds `atMs` (undefined if none):
 * a contract may span two periods (on a month's first days the previous one is still a draft in its
 * grace), so the first invoice listed is not necessarily the one the events went to.
 */
export async function lineQuantity(base, token, customerId, productId, atMs) {
  const r = await call(base, token, 'GET', `/v1/customers/${customerId}/invoices`);
  assert.equal(r.status, 200, r.text);
  const holds = (inv) => Date.parse(inv.start_timestamp) <= atMs && atMs < Date.parse(inv.end_timestamp);
  const invoice = r.body.data.find(holds);
  return invoice?.line_items.find((l) => l.product_id === productId)?.quantity;
}

/** Replaces every UUID in `text` by <id:N> in order of first appearance, so two centrals compare equal. */
export function normalizeIds(text) {
  const ids = new Map();
  return text.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, (m) => {
    if (!ids.has(m)) ids.set(m, `<id:${ids.size}>`);
    return ids.get(m);
  });
}

/** Every invoice of every customer (raw response texts in customer order), ids normalised. */
export async function invoices(base, token, customers) {
  const texts = [];
  for (const name of CUSTOMERS) texts.push(`${name}: ${await settledInvoices(base, token, customers[name])}`);
  return normalizeIds(texts.join('\n'));
}

/** How long a due period may wait for the server's job (every second in the harness). */
const FINALIZE_WAIT_MS = 30_000;

/**
 * A customer's invoice list once no period past its grace is still a DRAFT. Reads never finalize;
 * the server's job does, so two servers compared at one moment could show one period FINALIZED on
 * one and DRAFT on the other (on a month's first day, or after restarts that run the job early).
 */
async function settledInvoices(base, token, customerId) {
  const deadline = Date.now() + FINALIZE_WAIT_MS;
  for (;;) {
    const r = await call(base, token, 'GET', `/v1/customers/${customerId}/invoices`);
    assert.equal(r.status, 200, `invoices of ${customerId}: ${r.status} ${r.text}`);
    const due = JSON.parse(r.text).data.some((inv) => inv.status === 'DRAFT' && Date.parse(inv.issued_at) <= Date.now());
    if (!due) return r.text;
    assert.ok(Date.now() < deadline, `a due invoice of ${customerId} stayed DRAFT for ${FINALIZE_WAIT_MS} ms: ${r.text}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
