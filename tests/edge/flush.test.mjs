// Exactly once between the shards and central, on workerd (Miniflare 4) and a real `tally serve`:
// - central down while shards flush, then up again: nothing lost, nothing counted twice;
// - acknowledgements lost after central applied a batch: the shard resends the same sealed bytes
//   with the same (shard_id, seq), central answers `applied: false`, and the totals do not move;
// - central's batch endpoint end to end: a bad signature is 401 and changes nothing, a replayed
//   batch is applied once;
// - a shard that cannot record its part (no metric snapshot while central is down) makes the
//   request 503 with the shard's reason; the retry records the rest, and nothing counts twice;
// - an edge whose key central does not accept answers 5xx, never 200;
// - more event records pile up in a shard while central is down than one batch holds: they are
//   sealed into several batches (5,000 records at most, a row of records split between two), each
//   record in exactly one.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Central, Edge, LossyProxy, call, sealedEventRecords, sign, sleep, until } from './harness.mjs';
import { setupBilling, timeLayout } from './scenario.mjs';

const KEY = 'flush-test-key';

function events(prefix, n, customer, layout) {
  return Array.from({ length: n }, (_, i) => ({
    transaction_id: `${prefix}-${i}`, customer_id: customer, event_type: 'upload',
    timestamp: new Date(layout.lo + ((i * 7_919_000) % (layout.hi - layout.lo))).toISOString(),
    properties: { mb: `${i}.5`, region: ['eu', 'us'][i % 2] },
  }));
}

/** Sum of quantities of `productId` over all invoices of a customer, as exact text totals. */
async function usage(base, token, customerId, productId) {
  const r = await call(base, token, 'GET', `/v1/customers/${customerId}/invoices`);
  assert.equal(r.status, 200, r.text);
  const lines = r.body.data.flatMap((inv) => inv.line_items).filter((l) => l.product_id === productId);
  return lines.reduce((acc, l) => acc + Number(l.quantity), 0);
}

const expectedMb = (n) => Array.from({ length: n }, (_, i) => i + 0.5).reduce((a, b) => a + b, 0);

describe('flush to central', () => {
  const cleanup = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c.dispose();
  });

  test('central down while shards flush, then up: nothing lost, nothing counted twice', async () => {
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const edge = await new Edge({ centralUrl: central.url, hmacKey: KEY, shardCount: 4, flushIntervalMs: 200 }).start();
    cleanup.push(edge);
    const layout = timeLayout();
    const setup = await setupBilling(edge.url, central.token, layout, { kinds: ['sum'] });
    const first = events('before', 40, 'acme', layout);
    assert.equal((await call(edge.url, central.token, 'POST', '/v1/ingest', first)).body.data.accepted, 40);
    await until('the first events at central', async () => (await usage(central.url, central.token, setup.customers.acme, setup.products.sum)) === expectedMb(40));

    await central.stop();
    // The token and metric snapshots are cached at the edge: ingest goes on without central.
    const second = events('during', 40, 'acme', layout).map((e, i) => ({ ...e, properties: { mb: `${i + 40}.5`, region: 'eu' } }));
    const r = await call(edge.url, central.token, 'POST', '/v1/ingest', [...second, ...first.slice(0, 10)]);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.data, { accepted: 40, duplicates: 10, rejected: [] });
    // Let the shards try (and fail) to deliver a few times: a scenario step, not a synchronisation.
    await sleep(1_500);
    await central.start();

    await until('every event at central after the outage', async () => (await usage(central.url, central.token, setup.customers.acme, setup.products.sum)) === expectedMb(80));
    const again = await call(edge.url, central.token, 'POST', '/v1/ingest', second);
    assert.deepEqual(again.body.data, { accepted: 0, duplicates: 40, rejected: [] });
    await sleep(800);
    assert.equal(await usage(central.url, central.token, setup.customers.acme, setup.products.sum), expectedMb(80));
  });

  test('a backlog of event records larger than a batch is sealed into several, each record once', async () => {
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const proxy = await new LossyProxy(central.url).start();
    cleanup.push(proxy);
    const edge = await new Edge({ centralUrl: proxy.url, hmacKey: KEY, shardCount: 1, flushIntervalMs: 100 }).start();
    cleanup.push(edge);
    const layout = timeLayout();
    const setup = await setupBilling(central.url, central.token, layout, { kinds: ['sum'] });
    // The first request caches the token and the metrics, and is delivered.
    const warm = events('warm', 10, 'acme', layout);
    const first = await call(edge.url, central.token, 'POST', '/v1/ingest', warm);
    assert.equal(first.status, 200, first.text);
    await until('the first batch at central', async () => (await usage(central.url, central.token, setup.customers.acme, setup.products.sum)) === expectedMb(10));
    await central.stop();
    // Small records that meter nothing, so 5,000 of them (not their bytes) fill a batch; requests
    // of 98 (and a duplicate) make batch boundaries fall inside a group commit's row of records,
    // which sealing splits.
    const all = Array.from({ length: 12_345 }, (_, i) => ({
      transaction_id: `b-${i}`, customer_id: 'acme', event_type: 'ping', timestamp: new Date(layout.lo + i).toISOString(),
    }));
    for (let i = 0; i < all.length; i += 98) {
      // Each request after the first also repeats the previous one's last event: a duplicate.
      const body = [...all.slice(i, i + 98), ...(i > 0 ? [all[i - 1]] : [])];
      const r = await call(edge.url, central.token, 'POST', '/v1/ingest', body);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.data.accepted, Math.min(98, all.length - i));
    }
    await central.start();
    const got = await until('every record sealed and delivered', async () => {
      const r = sealedEventRecords(proxy.batches);
      return r.records.filter((e) => !e.duplicate && e.event.event_type === 'ping').length >= all.length ? r : false;
    }, { deadlineMs: 60_000, everyMs: 250 });
    const counted = new Map();
    for (const r of got.records.filter((e) => !e.duplicate)) {
      assert.ok(!counted.has(r.event.transaction_id), `${r.event.transaction_id} sealed twice`);
      counted.set(r.event.transaction_id, r);
    }
    assert.equal(counted.size, all.length + warm.length);
    for (const e of all) {
      const r = counted.get(e.transaction_id);
      assert.ok(r, `${e.transaction_id} never sealed`);
      assert.equal(r.event.timestamp_ms, Date.parse(e.timestamp));
      assert.deepEqual([r.env, r.event.customer_id, r.event.properties, r.matched_metrics], ['sandbox', 'acme', {}, []]);
    }
    for (const e of warm) assert.deepEqual(counted.get(e.transaction_id).matched_metrics, [setup.metrics.sum]);
    const dups = got.records.filter((e) => e.duplicate).map((e) => e.event.transaction_id);
    assert.equal(dups.length, new Set(dups).size, 'one duplicate record per id');
    assert.equal(dups.length, Math.ceil(all.length / 98) - 1);
    // Several batches, none over 5,000 records or 1.5 MB, at least one full.
    const perBatch = new Map();
    for (const r of got.records) perBatch.set(r.batch, (perBatch.get(r.batch) ?? 0) + 1);
    const sizes = [...perBatch.values()];
    assert.ok(sizes.length >= 3 && sizes.every((n) => n <= 5_000) && sizes.includes(5_000), JSON.stringify(sizes));
    // Some request's records (one row) went out in two batches.
    const split = all.some((e, i) => i % 98 !== 97 && i + 1 < all.length
      && counted.get(e.transaction_id).batch !== counted.get(all[i + 1].transaction_id).batch);
    assert.ok(split, `no row of records was split: ${JSON.stringify(sizes)}`);
    for (const body of proxy.batches) assert.ok(Buffer.byteLength(body) <= 1_500_000, `a body of ${Buffer.byteLength(body)} bytes`);
  });

  test('a shard that cannot record its part makes the request 503, and the retry completes it once', async () => {
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const edge = await new Edge({ centralUrl: central.url, hmacKey: KEY, shardCount: 2, flushIntervalMs: 200 }).start();
    cleanup.push(edge);
    const layout = timeLayout();
    const setup = await setupBilling(edge.url, central.token, layout, { kinds: ['sum'] });
    const all = events('split', 21, 'acme', layout);
    // One event: one shard fetches the metric snapshot; the other shard has none yet.
    assert.equal((await call(edge.url, central.token, 'POST', '/v1/ingest', all.slice(0, 1))).body.data.accepted, 1);
    await central.stop();
    // Twenty more span both shards; the one without a snapshot cannot meter without central.
    const rest = all.slice(1);
    const failed = await call(edge.url, central.token, 'POST', '/v1/ingest', rest);
    assert.equal(failed.status, 503, failed.text);
    assert.equal(failed.headers.get('x-should-retry'), 'true');
    // The shard's own error crosses the Durable Object call into the answer.
    assert.match(failed.body.message, /^shard \d could not record its events \(.*central.*\); retrying the request is safe/);
    await central.start();
    const retried = await call(edge.url, central.token, 'POST', '/v1/ingest', rest);
    assert.equal(retried.status, 200, retried.text);
    const { accepted, duplicates } = retried.body.data;
    assert.equal(accepted + duplicates, 20);
    assert.ok(accepted > 0 && duplicates > 0, `the healthy shard kept its part (${accepted} accepted, ${duplicates} duplicates)`);
    await until('all 21 events at central, once', async () => (await usage(central.url, central.token, setup.customers.acme, setup.products.sum)) === expectedMb(21));
    await sleep(600);
    assert.equal(await usage(central.url, central.token, setup.customers.acme, setup.products.sum), expectedMb(21));
  });

  test('lost acknowledgements: the same sealed batch is resent and applied once', async () => {
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const proxy = await new LossyProxy(central.url).start();
    cleanup.push(proxy);
    proxy.dropAcks = 3;
    const edge = await new Edge({ centralUrl: proxy.url, hmacKey: KEY, shardCount: 2, flushIntervalMs: 100 }).start();
    cleanup.push(edge);
    const layout = timeLayout();
    const setup = await setupBilling(central.url, central.token, layout, { kinds: ['sum'] });
    const evs = events('lossy', 60, 'acme', layout);
    assert.equal((await call(edge.url, central.token, 'POST', '/v1/ingest', evs)).body.data.accepted, 60);
    const resends = () => {
      const seen = new Map();
      let resent = 0;
      for (const body of proxy.batches) {
        const b = JSON.parse(body);
        const id = `${b.shard_id}#${b.seq}`;
        if (seen.has(id)) {
          resent += 1;
          assert.equal(body, seen.get(id), `${id} was resent with different bytes`);
        }
        seen.set(id, body);
      }
      return resent;
    };
    // Three answers are swallowed; each swallowed batch is delivered again.
    await until('three lost acknowledgements and their resends', async () => proxy.dropAcks === 0 && resends() >= 3);
    await until('the shards to drain', async () => {
      const n = proxy.batches.length;
      await sleep(400);
      return proxy.batches.length === n;
    });
    assert.equal(await usage(central.url, central.token, setup.customers.acme, setup.products.sum), expectedMb(60));
    // Later flushes do not change anything either.
    await call(edge.url, central.token, 'POST', '/v1/ingest', evs.slice(0, 5));
    await sleep(500);
    assert.equal(await usage(central.url, central.token, setup.customers.acme, setup.products.sum), expectedMb(60));
  });

  test('central\'s batch endpoint: a bad signature is 401, a replay is applied once', async () => {
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const layout = timeLayout();
    const setup = await setupBilling(central.url, central.token, layout, { kinds: ['count'], tag: '-sig' });
    const batch = (seq, count) => JSON.stringify({
      shard_id: 'node-test', seq, metrics_version: 1,
      partials: [{
        env: 'sandbox',
        key: { customer_ref: 'acme-sig', metric_id: setup.metrics.count, groups: [], hour_ms: layout.lo },
        acc: { count },
      }],
    });
    const signed = (path, body, sig, ts) => call(central.url, null, 'POST', path, body, {
      'x-tally-timestamp': String(ts), 'x-tally-signature': sig,
    });
    const deliver = (body, key = KEY, ts = Date.now()) =>
      signed('/internal/v1/batches', body, sign(key, ts, 'POST', '/internal/v1/batches', body), ts);
    const quantity = () => usage(central.url, central.token, setup.customers.acme, setup.products.count);
    assert.equal(await quantity(), 0);
    const bad = await deliver(batch(1, 5), 'wrong-key');
    assert.equal(bad.status, 401);
    const stale = await deliver(batch(1, 5), KEY, Date.now() - 10 * 60_000);
    assert.equal(stale.status, 401);
    // A signature made for another endpoint does not deliver a batch.
    const ts = Date.now();
    const elsewhere = sign(KEY, ts, 'POST', '/internal/v1/tokens/lookup', batch(1, 5));
    const replayed = await signed('/internal/v1/batches', batch(1, 5), elsewhere, ts);
    assert.equal(replayed.status, 401, replayed.text);
    assert.equal(await quantity(), 0);
    const ok = await deliver(batch(1, 5));
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.applied, true);
    assert.equal(await quantity(), 5);
    const replay = await deliver(batch(1, 500));
    assert.equal(replay.status, 200);
    assert.equal(replay.body.applied, false);
    assert.equal(await quantity(), 5);
    const next = await deliver(batch(2, 2));
    assert.equal(next.body.applied, true);
    assert.equal(await quantity(), 7);
  });

  test('an edge whose key central refuses never answers 200', async () => {
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const edge = await new Edge({ centralUrl: central.url, hmacKey: 'not-the-key', shardCount: 1 }).start();
    cleanup.push(edge);
    const r = await call(edge.url, central.token, 'POST', '/v1/ingest', [
      { transaction_id: 't', customer_id: 'c', event_type: 'e', timestamp: new Date().toISOString() },
    ]);
    assert.equal(r.status, 500, r.text);
    assert.equal(r.headers.get('x-should-retry'), 'true');
    assert.match(r.body.message, /EDGE_HMAC_KEY/);
  });
});
