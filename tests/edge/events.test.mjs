// Events ingested through the edge reach central's event store exactly once, on workerd (Miniflare
// 4) in front of a real `tally serve`: after the shards flush, `POST /v1/events/search` (on central,
// and through the edge's proxy) finds each event once with what it matched (billable metrics, the
// customer by id or by ingest alias, none for an unknown customer), and a repeated transaction id
// as its counted event plus its latest duplicate delivery; the same requests sent natively to
// another central give the same search answer (ids normalised, processing times aside).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Central, Edge, call, until } from './harness.mjs';
import { normalizeIds, setupBilling, timeLayout } from './scenario.mjs';

const KEY = 'edge-events-key';
const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** The search answer for `ids`, sorted by (transaction id, duplicate), or fails. */
async function search(base, token, ids) {
  const r = await call(base, token, 'POST', '/v1/events/search', { transactionIds: ids });
  assert.equal(r.status, 200, r.text);
  assert.ok(Array.isArray(r.body), `a bare array: ${r.text}`);
  return r.body.sort((a, b) => (a.transaction_id < b.transaction_id ? -1 : a.transaction_id > b.transaction_id ? 1 : Number(a.is_duplicate) - Number(b.is_duplicate)));
}

describe('edge events in the event store', () => {
  let central;
  let native;
  let edge;

  before(async () => {
    central = await new Central({ hmacKey: KEY }).start();
    native = await new Central({ hmacKey: KEY }).start();
    edge = await new Edge({ centralUrl: central.url, hmacKey: KEY, shardCount: 4, flushIntervalMs: 100 }).start();
  });

  after(async () => {
    await edge?.dispose();
    await central?.dispose();
    await native?.dispose();
  });

  test('matched, unmatched, unknown-customer and duplicate events are found once each, as natively', async () => {
    const layout = timeLayout();
    const viaEdge = await setupBilling(central.url, central.token, layout);
    const direct = await setupBilling(native.url, native.token, layout);
    const ts = (h) => iso(layout.lo + h * 60_000);
    const requests = (customers) => [
      [
        { transaction_id: 'es-count', customer_id: 'acme', event_type: 'api_call', timestamp: ts(1) },
        { transaction_id: 'es-sum', customer_id: customers.globex, event_type: 'upload', timestamp: ts(2), properties: { mb: 12.5, region: 'eu' } },
        { transaction_id: 'es-none', customer_id: 'initech', event_type: 'nothing_meters_this', timestamp: ts(3), properties: { x: '1' } },
        { transaction_id: 'es-unknown', customer_id: 'nobody-known', event_type: 'api_call', timestamp: ts(4) },
        { transaction_id: 'es-void', customer_id: 'nobody-known', event_type: 'other', timestamp: ts(5) },
        // Inside one request: the first copy counts, this one is its duplicate.
        { transaction_id: 'es-count', customer_id: 'acme', event_type: 'api_call', timestamp: ts(6), properties: { copy: 'in-request' } },
        // A SUM event without its value: accepted, stored, matching nothing.
        { transaction_id: 'es-novalue', customer_id: 'acme', event_type: 'upload', timestamp: ts(7), properties: { region: 'us' } },
      ],
      [
        { transaction_id: 'es-sum', customer_id: customers.globex, event_type: 'upload', timestamp: ts(8), properties: { mb: '99', region: 'us' } },
        { transaction_id: 'es-max', customer_id: 'globex', event_type: 'cpu', timestamp: ts(9), properties: { cores: 8 } },
      ],
      // A later delivery again: the latest duplicate is what the store keeps.
      [{ transaction_id: 'es-sum', customer_id: customers.globex, event_type: 'upload', timestamp: ts(10), properties: { mb: '77', region: 'ap' } }],
    ];
    const sentAt = Date.now();
    for (const [i, events] of requests(viaEdge.customers).entries()) {
      const r = await call(edge.url, central.token, 'POST', '/v1/ingest', events);
      assert.equal(r.status, 200, `edge request ${i}: ${r.text}`);
      // Let the shards seal between requests sometimes, so duplicates reach central in later batches.
      await new Promise((res) => setTimeout(res, i === 1 ? 400 : 0));
    }
    for (const [i, events] of requests(direct.customers).entries()) {
      const r = await call(native.url, native.token, 'POST', '/v1/ingest', events);
      assert.equal(r.status, 200, `native request ${i}: ${r.text}`);
    }
    const ids = ['es-count', 'es-sum', 'es-none', 'es-unknown', 'es-void', 'es-novalue', 'es-max', 'es-never-sent'];
    const m = viaEdge.metrics;
    const c = viaEdge.customers;
    // Hand-written: what each stored event must say.
    const expected = [
      ['es-count', false, 'acme', 'api_call', ts(1), {}, c.acme, [m.count]],
      ['es-count', true, 'acme', 'api_call', ts(6), { copy: 'in-request' }, c.acme, [m.count]],
      ['es-max', false, 'globex', 'cpu', ts(9), { cores: '8' }, c.globex, [m.max]],
      ['es-none', false, 'initech', 'nothing_meters_this', ts(3), { x: '1' }, c.initech, []],
      ['es-novalue', false, 'acme', 'upload', ts(7), { region: 'us' }, c.acme, []],
      ['es-sum', false, c.globex, 'upload', ts(2), { mb: '12.5', region: 'eu' }, c.globex, [m.sum]],
      ['es-sum', true, c.globex, 'upload', ts(10), { mb: '77', region: 'ap' }, c.globex, [m.sum]],
      ['es-unknown', false, 'nobody-known', 'api_call', ts(4), {}, null, [m.count]],
      ['es-void', false, 'nobody-known', 'other', ts(5), {}, null, []],
    ].map(([txn, dup, customer, type, timestamp, properties, matched, metrics]) => ({ txn, dup, customer, type, timestamp: Date.parse(timestamp), properties, matched, metrics }));
    const shape = (item) => ({
      txn: item.transaction_id,
      dup: item.is_duplicate,
      customer: item.customer_id,
      type: item.event_type,
      timestamp: Date.parse(item.timestamp),
      properties: item.properties ?? {},
      matched: item.matched_customer?.id ?? null,
      metrics: (item.matched_billable_metrics ?? []).map((x) => x.id).sort(),
    });
    for (const e of expected) e.metrics.sort();
    // Until the last batch is applied (a duplicate delivered later replaces the one before).
    const found = await until('every event through the edge to be in central\'s event store', async () => {
      const got = await search(central.url, central.token, ids);
      return JSON.stringify(got.map(shape)) === JSON.stringify(expected) ? got : false;
    }, { deadlineMs: 30_000, everyMs: 200 }).catch(async (e) => {
      assert.deepEqual((await search(central.url, central.token, ids)).map(shape), expected, e.message);
      throw e;
    });
    // Processed when the shard took it (to the second: the format may drop milliseconds).
    for (const item of found) {
      const at = Date.parse(item.processed_at);
      assert.ok(at >= sentAt - 1_000 && at <= Date.now(), `processed_at ${item.processed_at}`);
    }
    // Through the edge's proxy: the same answer.
    assert.deepEqual(await search(edge.url, central.token, ids), found);
    // Later flushes (the shards keep their alarms) change nothing: no event stored twice.
    await new Promise((res) => setTimeout(res, 1_000));
    assert.deepEqual(await search(central.url, central.token, ids), found);
    // The native path stores the same events, with the same matches.
    const strip = (items) => normalizeIds(JSON.stringify(items.map(({ processed_at: _, ...rest }) => rest)));
    assert.equal(strip(found), strip(await search(native.url, native.token, ids)));
  });
});
