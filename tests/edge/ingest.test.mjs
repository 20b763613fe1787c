// The edge's /v1/ingest against central's native path, on workerd (Miniflare 4) in front of a real
// `tally serve`:
// - differential: the same stream (duplicates, retries, several customers, every aggregation,
//   events over many hours) through the edge into central A and natively into central B gives
//   the same ingest answers and byte-identical invoices (ids normalised);
// - a transaction id sent in two edge requests counts once, also when many requests sharing ids
//   are in flight at once (the shards commit them together);
// - malformed input gets the same status, retry flag and message as central's native path;
// - a metric created through the edge meters the next events (snapshot invalidation);
// - every other path is proxied unchanged (method, query, body, Authorization, status).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { Central, Edge, call, until } from './harness.mjs';
import { eventStream, invoices, lineQuantity, rng, setupBilling, timeLayout } from './scenario.mjs';

const KEY = 'edge-test-key';

describe('edge ingest', () => {
  let central;
  let native;
  let edge;

  before(async () => {
    central = await new Central({ hmacKey: KEY }).start();
    native = await new Central({ hmacKey: KEY }).start();
    edge = await new Edge({ centralUrl: central.url, hmacKey: KEY, shardCount: 4, flushIntervalMs: 200 }).start();
  });

  after(async () => {
    await edge?.dispose();
    await central?.dispose();
    await native?.dispose();
  });

  test('the same stream through the edge and natively gives identical answers and invoices', async () => {
    const layout = timeLayout();
    const viaEdge = await setupBilling(edge.url, central.token, layout);
    const direct = await setupBilling(native.url, native.token, layout);
    const requests = eventStream(layout);
    assert.ok(requests.length >= 8);
    let accepted = 0;
    let duplicates = 0;
    for (const [i, events] of requests.entries()) {
      const a = await call(edge.url, central.token, 'POST', '/v1/ingest', events);
      const b = await call(native.url, native.token, 'POST', '/v1/ingest', events);
      assert.equal(a.status, 200, `edge request ${i}: ${a.text}`);
      assert.equal(a.text, b.text, `request ${i}: the edge and central answer differently`);
      assert.equal(a.headers.get('content-type'), b.headers.get('content-type'));
      accepted += a.body.data.accepted;
      duplicates += a.body.data.duplicates;
    }
    assert.ok(duplicates >= requests.length, `the stream has duplicates (${duplicates})`);
    const expected = await invoices(native.url, native.token, direct.customers);
    assert.match(expected, /"total":[1-9]/, 'the native invoices bill something');
    // Shards flush on their alarm: poll central A until it shows what B shows.
    const got = await until('the edge\'s usage to reach central', async () => {
      const text = await invoices(central.url, central.token, viaEdge.customers);
      return text === expected ? text : false;
    }, { deadlineMs: 30_000, everyMs: 200 }).catch(async (e) => {
      const text = await invoices(central.url, central.token, viaEdge.customers);
      assert.equal(text, expected, `${e.message}\n(accepted ${accepted})`);
      throw e;
    });
    assert.equal(got, expected);
  });

  test('a transaction id sent in two edge requests counts once', async () => {
    const layout = timeLayout();
    const setup = await setupBilling(edge.url, central.token, layout, { kinds: ['count'], tag: '-twice' });
    const ts = new Date(layout.lo).toISOString();
    const event = { transaction_id: 'twice-1', customer_id: 'acme-twice', event_type: 'api_call', timestamp: ts };
    const first = await call(edge.url, central.token, 'POST', '/v1/ingest', [event, { ...event, transaction_id: 'twice-2' }]);
    assert.deepEqual(first.body.data, { accepted: 2, duplicates: 0, rejected: [] });
    const second = await call(edge.url, central.token, 'POST', '/v1/ingest', [event]);
    assert.deepEqual(second.body.data, { accepted: 0, duplicates: 1, rejected: [] });
    const quantity = () => lineQuantity(central.url, central.token, setup.customers.acme, setup.products.count, layout.lo);
    await until('2 API calls on the invoice', async () => (await quantity()) === 2);
    // After more flushes, still 2.
    const third = await call(edge.url, central.token, 'POST', '/v1/ingest', [event]);
    assert.equal(third.body.data.duplicates, 1);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(await quantity(), 2);
  });

  test('concurrent requests sharing transaction ids, committed together by the shards, count each id once', async () => {
    // Shards group-commit the calls that reach them together: many requests in flight at once
    // land in one storage transaction, where a key's first copy is its candidate. Each id has one
    // payload here, so whichever request wins, the invoices must equal central's native ones.
    const layout = timeLayout();
    const viaEdge = await setupBilling(edge.url, central.token, layout, { tag: '-conc' });
    const direct = await setupBilling(native.url, native.token, layout, { tag: '-conc' });
    const pool = new Map();
    for (const e of eventStream(layout, { seed: 11, events: 900, prefix: 'conc', customerRef: (c) => `${c}-conc` }).flat()) {
      if (!pool.has(e.transaction_id)) pool.set(e.transaction_id, e);
    }
    const unique = [...pool.values()];
    const rand = rng(5);
    const requests = Array.from({ length: 48 }, () => Array.from({ length: 60 }, () => unique[Math.floor(rand() * unique.length)]));
    const sent = new Set(requests.flat().map((e) => e.transaction_id));
    const total = (answers) => answers.reduce((t, r) => {
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body.data.rejected, []);
      return { accepted: t.accepted + r.body.data.accepted, duplicates: t.duplicates + r.body.data.duplicates };
    }, { accepted: 0, duplicates: 0 });
    const a = total(await Promise.all(requests.map((events) => call(edge.url, central.token, 'POST', '/v1/ingest', events))));
    const b = total(await Promise.all(requests.map((events) => call(native.url, native.token, 'POST', '/v1/ingest', events))));
    assert.deepEqual(a, { accepted: sent.size, duplicates: 48 * 60 - sent.size });
    assert.deepEqual(b, a);
    // The whole set again, concurrently: every event is now a duplicate.
    const again = total(await Promise.all(requests.map((events) => call(edge.url, central.token, 'POST', '/v1/ingest', events))));
    assert.deepEqual(again, { accepted: 0, duplicates: 48 * 60 });
    const expected = await invoices(native.url, native.token, direct.customers);
    await until('the concurrent usage to reach central', async () => (await invoices(central.url, central.token, viaEdge.customers)) === expected, { deadlineMs: 30_000, everyMs: 200 })
      .catch(async (e) => {
        assert.equal(await invoices(central.url, central.token, viaEdge.customers), expected);
        throw e;
      });
  });

  test('malformed input gets the same 4xx as central\'s native path', async () => {
    const now = new Date(Date.now() - 60_000).toISOString();
    const ok = { customer_id: 'c', event_type: 'e', timestamp: now };
    const cases = [
      { what: 'no token', token: null, body: [] },
      { what: 'unknown token', token: 'tally_sbx_nope', body: [] },
      { what: 'basic auth', headers: { authorization: 'Basic abc' }, token: null, body: [] },
      { what: 'not JSON', body: '[{' },
      { what: 'not an array', body: { transaction_id: 'x' } },
      { what: 'empty array', body: [] },
      { what: 'too many events', body: Array.from({ length: 101 }, (_, i) => ({ ...ok, transaction_id: `m${i}` })) },
      { what: 'body over 1 MiB', body: `[${' '.repeat(1 << 20)}]` },
      { what: 'gzip over 1 MiB decoded', body: gzipSync(Buffer.from(`[${' '.repeat(2 << 20)}]`)), headers: { 'content-encoding': 'gzip' } },
      { what: 'unsupported encoding', body: '[]', headers: { 'content-encoding': 'br' } },
      {
        what: 'per-event rejections',
        body: [
          { customer_id: 'c', event_type: 'e', timestamp: now },
          { ...ok, transaction_id: 'old', timestamp: '2001-01-01T00:00:00Z' },
          { ...ok, transaction_id: 'future', timestamp: '2999-01-01T00:00:00Z' },
          { ...ok, transaction_id: 'badts', timestamp: 'yesterday' },
          { ...ok, transaction_id: 7 },
          { ...ok, transaction_id: 'nested', properties: { a: { b: 1 } } },
          { ...ok, transaction_id: 'x'.repeat(129) },
          'not an object',
        ],
      },
    ];
    for (const c of cases) {
      const token = c.token === undefined ? 'default' : c.token;
      const send = (base, t) => call(base, token === 'default' ? t : token, 'POST', '/v1/ingest', c.body, c.headers ?? {});
      const a = await send(edge.url, central.token);
      const b = await send(central.url, central.token);
      assert.equal(a.status, b.status, `${c.what}: edge ${a.status} ${a.text} vs central ${b.status} ${b.text}`);
      assert.ok(a.status >= 400 || c.what === 'per-event rejections', `${c.what}: ${a.status}`);
      if (a.status >= 400) assert.equal(a.headers.get('x-should-retry'), 'false', c.what);
      assert.equal(a.text, b.text, `${c.what}: different answers`);
      if (a.status === 415) assert.equal(a.headers.get('accept-encoding'), b.headers.get('accept-encoding'), c.what);
    }
    // A valid gzip body is accepted like central accepts it.
    const gz = gzipSync(Buffer.from(JSON.stringify([{ ...ok, transaction_id: 'gz-1' }])));
    const g = await call(edge.url, central.token, 'POST', '/v1/ingest', gz, { 'content-encoding': 'gzip' });
    assert.deepEqual(g.body, { data: { accepted: 1, duplicates: 0, rejected: [] } });
  });

  test('a metric created through the edge meters the very next events', async () => {
    const layout = timeLayout();
    const setup = await setupBilling(edge.url, central.token, layout, { kinds: ['count'], tag: '-late' });
    const ts = new Date(layout.lo).toISOString();
    // Warm every shard's metric snapshot first, so the new metric must come from invalidation.
    const warm = Array.from({ length: 60 }, (_, i) => ({
      transaction_id: `warm-${i}`, customer_id: 'initech-late', event_type: 'api_call', timestamp: ts,
    }));
    assert.equal((await call(edge.url, central.token, 'POST', '/v1/ingest', warm)).status, 200);
    const metric = await call(edge.url, central.token, 'POST', '/v1/billable-metrics/create', {
      name: 'Late metric', aggregation_type: 'COUNT', event_type_filter: { in_values: ['late_type'] },
    });
    assert.equal(metric.status, 200, metric.text);
    const product = await call(edge.url, central.token, 'POST', '/v1/contract-pricing/products/create', {
      name: 'Late', type: 'USAGE', billable_metric_id: metric.body.data.id,
    });
    assert.equal(product.status, 200, product.text);
    const rate = await call(edge.url, central.token, 'POST', '/v1/contract-pricing/rate-cards/addRate', {
      rate_card_id: setup.card, product_id: product.body.data.id,
      starting_at: new Date(layout.contractStart).toISOString(), entitled: true, rate_type: 'FLAT', price: 7,
    });
    assert.equal(rate.status, 200, rate.text);
    const events = Array.from({ length: 12 }, (_, i) => ({
      transaction_id: `late-${i}`, customer_id: 'initech-late', event_type: 'late_type', timestamp: ts,
    }));
    assert.equal((await call(edge.url, central.token, 'POST', '/v1/ingest', events)).body.data.accepted, 12);
    await until('12 late events on the invoice', async () =>
      (await lineQuantity(central.url, central.token, setup.customers.initech, product.body.data.id, layout.lo)) === 12);
  });

  test('every other path is proxied unchanged', async () => {
    const root = await call(edge.url, null, 'GET', '/');
    assert.equal(root.status, 200);
    assert.equal(root.body.service, 'tally-edge');
    for (const [method, path, body] of [
      ['GET', '/v1/credit-types/list', undefined],
      ['GET', '/v1/billable-metrics?limit=1', undefined],
      ['POST', '/v1/customers/list', {}],
      ['GET', '/v1/nope', undefined],
      ['POST', '/v1/customers', { name: 'x', ingest_aliases: 'not-a-list' }],
    ]) {
      const a = await call(edge.url, central.token, method, path, body);
      const b = await call(central.url, central.token, method, path, body);
      assert.equal(a.status, b.status, `${method} ${path}`);
      assert.equal(a.text, b.text, `${method} ${path}`);
      assert.equal(a.headers.get('x-should-retry'), b.headers.get('x-should-retry'));
    }
    const unauth = await call(edge.url, null, 'GET', '/v1/credit-types/list');
    assert.equal(unauth.status, 401);
  });
});
