// Central killed with SIGKILL (and restarted on its database and port) again and again while the
// edge's shards flush to it, on workerd (Miniflare 4) in front of a real `tally serve`:
// afterwards central's invoices equal those of a native central that got the same stream and was
// never killed, byte for byte (ids normalised): nothing lost, nothing counted twice. Every event
// the edge acknowledged is also sealed, as its event record for central's event store, in exactly
// one batch (duplicate deliveries only as records marked duplicate), and a resent batch carries
// the same bytes; and central's event store holds each acknowledged event exactly once.
//
// The kills land at random moments (seeded; the seed is printed, EDGE_CRASH_SEED=<seed> replays
// the schedule) while clients send the stream through the edge and the shards deliver sealed
// batches, so some land mid-`apply_batch` and some between the commit and its answer (the shard
// then resends the same (shard_id, seq), which central must apply once). Clients retry a failed
// request (5xx or no answer) with the same body, as real clients do. EDGE_CRASH_KILLS=<n> runs
// more kills (default 10).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Central, Edge, LossyProxy, call, sealedEventRecords, sleep, until } from './harness.mjs';
import { METRICS, eventStream, invoices, rng, setupBilling, timeLayout } from './scenario.mjs';

const KEY = 'crash-test-key';
const KILLS = Number(process.env.EDGE_CRASH_KILLS || 10);
const SEED = Number(process.env.EDGE_CRASH_SEED || (Date.now() % 2 ** 31));

/** Sends one request until it is answered 200; returns the number of failed attempts. */
async function sendUntilAnswered(base, token, events) {
  const body = JSON.stringify(events);
  for (let failures = 0; ; failures++) {
    let r;
    try {
      r = await call(base, token, 'POST', '/v1/ingest', body);
    } catch {
      r = undefined; // no answer: retry
    }
    if (r?.status === 200) {
      assert.deepEqual(r.body.data.rejected, [], r.text);
      return failures;
    }
    if (r) {
      assert.ok(r.status >= 500, `ingest answered ${r.status}: ${r.text}`);
      assert.equal(typeof r.body?.message, 'string', `a ${r.status} without a JSON message: ${r.text}`);
    }
    await sleep(Math.min(20 * (failures + 1), 200));
  }
}

/** Restarts central on its port; retried if the port is briefly taken. */
async function restart(central) {
  for (let attempt = 1; ; attempt++) {
    try {
      await central.start();
      return;
    } catch (e) {
      if (attempt >= 20) throw e;
      await sleep(100);
    }
  }
}

/** The value `kind`'s metric aggregates, or true for COUNT (which needs none). */
function meters(kind, properties) {
  const key = METRICS[kind].aggregation_key;
  return key === undefined || properties?.[key] !== undefined;
}

/** Whether sent properties (numbers as JSON numbers) equal recorded ones (exact text). */
function sameProperties(sent = {}, recorded = {}) {
  const text = (o) => JSON.stringify(Object.entries(o).map(([k, v]) => [k, String(v)]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return text(sent) === text(recorded);
}

/**
 * Every distinct transaction id of `requests` is in the sealed batches exactly once as an accepted
 * record, equal to one of the copies sent and matching the metric its event type and properties
 * meter; duplicates appear only as records marked duplicate, at least one for each id sent twice.
 */
async function checkEventRecords(proxy, requests, setup) {
  const copies = new Map();
  for (const r of requests) for (const e of r) copies.set(e.transaction_id, [...(copies.get(e.transaction_id) ?? []), e]);
  const { records } = await until('every acknowledged event sealed as an event record', async () => {
    const got = sealedEventRecords(proxy.batches);
    return got.records.filter((r) => !r.duplicate).length >= copies.size ? got : false;
  }, { deadlineMs: 30_000, everyMs: 250 });
  const kindOf = Object.fromEntries(Object.entries(METRICS).map(([k, m]) => [m.event_type_filter.in_values[0], k]));
  const accepted = new Map();
  let duplicates = 0;
  for (const r of records) {
    const txn = r.event.transaction_id;
    const sent = copies.get(txn);
    assert.ok(sent, `a record of ${txn}, which no client sent`);
    assert.equal(r.env, 'sandbox');
    if (r.duplicate) {
      duplicates += 1;
      continue;
    }
    assert.ok(!accepted.has(txn), `${txn} sealed twice: in ${accepted.get(txn)?.batch} and ${r.batch}`);
    accepted.set(txn, r);
    const kind = kindOf[r.event.event_type];
    const same = sent.some((e) => e.customer_id === r.event.customer_id && e.event_type === r.event.event_type
      && Date.parse(e.timestamp) === r.event.timestamp_ms
      && sameProperties(e.properties, r.event.properties));
    assert.ok(same, `${txn}'s record is none of the copies sent: ${JSON.stringify(r)}`);
    assert.deepEqual(r.matched_metrics, meters(kind, r.event.properties) ? [setup.metrics[kind]] : [], JSON.stringify(r));
  }
  assert.equal(accepted.size, copies.size, 'every transaction id sealed once');
  for (const [txn, sent] of copies) {
    if (sent.length > 1) assert.ok(records.some((r) => r.duplicate && r.event.transaction_id === txn), `no duplicate record of ${txn}`);
  }
  return { accepted, copies, duplicates };
}

/**
 * Central's event store holds every acknowledged event exactly once: searching every transaction
 * id finds one counted event, the one sealed, plus a duplicate exactly for the ids sent again.
 */
async function checkEventStore(central, sealed) {
  const ids = [...sealed.copies.keys()];
  let counted = 0;
  let duplicates = 0;
  for (let i = 0; i < ids.length; i += 100) {
    const chunk = ids.slice(i, i + 100);
    const r = await call(central.url, central.token, 'POST', '/v1/events/search', { transactionIds: chunk });
    assert.equal(r.status, 200, r.text);
    for (const txn of chunk) {
      const items = r.body.filter((e) => e.transaction_id === txn);
      const mine = items.filter((e) => !e.is_duplicate);
      assert.equal(mine.length, 1, `${txn}: ${mine.length} counted events in the event store: ${JSON.stringify(items)}`);
      const record = sealed.accepted.get(txn).event;
      assert.equal(mine[0].customer_id, record.customer_id, txn);
      assert.equal(Date.parse(mine[0].timestamp), record.timestamp_ms, txn);
      assert.deepEqual(mine[0].properties ?? {}, record.properties, txn);
      const dups = items.length - 1;
      assert.equal(dups, sealed.copies.get(txn).length > 1 ? 1 : 0, `${txn}: ${JSON.stringify(items)}`);
      counted += 1;
      duplicates += dups;
    }
  }
  return { counted, duplicates };
}

describe('central crashes while the edge flushes', () => {
  const cleanup = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c.dispose();
  });

  test(`SIGKILL central ${KILLS} times during ingest and flushes: invoices equal an uninterrupted native run's`, async () => {
    console.log(`edge crash test: seed ${SEED} (EDGE_CRASH_SEED=${SEED} replays the schedule), ${KILLS} kills`);
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const native = await new Central({ hmacKey: KEY }).start();
    cleanup.push(native);
    // A pass-through proxy (it drops nothing) counts central's batch answers: `applied: false`
    // is a batch central had committed when a kill swallowed its answer, resent by the shard.
    const proxy = await new LossyProxy(central.url).start();
    cleanup.push(proxy);
    const edge = await new Edge({ centralUrl: proxy.url, hmacKey: KEY, shardCount: 4, flushIntervalMs: 100 }).start();
    cleanup.push(edge);
    const layout = timeLayout();
    const viaEdge = await setupBilling(central.url, central.token, layout);
    const direct = await setupBilling(native.url, native.token, layout);
    const requests = eventStream(layout, { seed: 11, events: 4800, prefix: 'crash' });
    for (const [i, events] of requests.entries()) {
      const r = await call(native.url, native.token, 'POST', '/v1/ingest', events);
      assert.equal(r.status, 200, `native request ${i}: ${r.text}`);
    }
    const expected = await invoices(native.url, native.token, direct.customers);

    const rand = rng(SEED);
    let sending = true;
    let kills = 0;
    let downMs = 0;
    const killer = (async () => {
      // Kills go on at random moments until all are done: while clients send and, once they are
      // done, while the shards work off their backlog.
      while (kills < KILLS) {
        await sleep(50 + Math.floor(rand() * (sending ? 400 : 250)));
        await central.stop();
        kills += 1;
        const down = Date.now();
        if (rand() < 0.5) await sleep(Math.floor(rand() * 400));
        await restart(central);
        downMs += Date.now() - down;
      }
    })();
    let retries = 0;
    const clients = [0, 1, 2, 3].map(async (c) => {
      for (let i = c; i < requests.length; i += 4) {
        retries += await sendUntilAnswered(edge.url, central.token, requests[i]);
        // Paced like a live source, so flushes (and kills) spread over the whole stream.
        await sleep(Math.floor(rand() * 150));
      }
    });
    await Promise.all(clients);
    sending = false;
    const killsWhileSending = kills;
    await killer;

    const got = await until('central to show what the uninterrupted native run shows', async () => {
      const text = await invoices(central.url, central.token, viaEdge.customers);
      return text === expected ? text : false;
    }, { deadlineMs: 60_000, everyMs: 250 }).catch(async (e) => {
      const text = await invoices(central.url, central.token, viaEdge.customers);
      assert.equal(text, expected, `${e.message}\n--- central log ---\n${central.logs.slice(-40).join('\n')}`);
      throw e;
    });
    assert.equal(got, expected);
    // Later flushes (the shards keep their alarms) must not move anything.
    await sleep(1_000);
    assert.equal(await invoices(central.url, central.token, viaEdge.customers), expected);
    const records = await checkEventRecords(proxy, requests, viaEdge);
    const stored = await checkEventStore(central, records);
    const events = requests.reduce((n, r) => n + r.length, 0);
    const replays = proxy.acks.filter((a) => a.applied === false).length;
    const ids = proxy.batches.map((b) => { const { shard_id: s, seq } = JSON.parse(b); return `${s}#${seq}`; });
    console.log(
      `edge crash test: ${kills} SIGKILLs of central (${killsWhileSending} while clients sent, ` +
      `down ${downMs} ms in all); ${requests.length} requests (${events} events) through the edge, ` +
      `${retries} client retries; ${new Set(ids).size} batches in ${ids.length} deliveries, ` +
      `${proxy.acks.length} answered, ${replays} of them replays (committed before a kill took the ` +
      `answer); invoices equal the native run's; ${records.accepted.size} event records sealed once ` +
      `each (and ${records.duplicates} duplicate records); the event store holds ${stored.counted} ` +
      `events once each and ${stored.duplicates} duplicates`,
    );
  });
});
