// Benchmark (not a test): events/s through the edge on workerd (Miniflare 4) in front of a real
// central, batches of 100 events over several shards, and the gzipped size of the Worker bundle.
//
//   node tests/edge/bench.mjs [--requests N] [--concurrency C] [--shards S]
//
// Prints one line per figure. Targets (issue #3): >= 50,000 events/s, <= 300 KB gzipped.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { parseArgs } from 'node:util';
import { Central, Edge, EDGE_BUILD, call, ensureEdgeBuilt } from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    requests: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '32' },
    shards: { type: 'string', default: '8' },
    warmup: { type: 'string', default: '100' },
  },
});
const REQUESTS = Number(opts.requests);
const CONCURRENCY = Number(opts.concurrency);
const SHARDS = Number(opts.shards);
const BATCH = 100;

ensureEdgeBuilt();
const wasm = readFileSync(path.join(EDGE_BUILD, 'index_bg.wasm'));
const js = readFileSync(path.join(EDGE_BUILD, 'index.js'));
const gz = gzipSync(Buffer.concat([wasm, js]), { level: 9 }).length;
console.log(`bundle: ${wasm.length} bytes wasm + ${js.length} bytes js; ${(gz / 1024).toFixed(1)} KiB gzipped (target <= 300 KB)`);

const key = 'bench-key';
const central = await new Central({ hmacKey: key }).start();
const edge = await new Edge({ centralUrl: central.url, hmacKey: key, shardCount: SHARDS, flushIntervalMs: 1000 }).start();
try {
  for (const m of [
    { name: 'calls', aggregation_type: 'COUNT', event_type_filter: { in_values: ['api_call'] } },
    { name: 'tokens', aggregation_type: 'SUM', aggregation_key: 'tokens', event_type_filter: { in_values: ['api_call'] }, group_keys: [['region']] },
  ]) {
    const r = await call(edge.url, central.token, 'POST', '/v1/billable-metrics/create', m);
    if (r.status !== 200) throw new Error(`metric: ${r.status} ${r.text}`);
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const u = new URL(edge.url);
  const ts = new Date(Date.now() - 60_000).toISOString();
  const run = `b${Date.now()}`;
  const post = (i) => new Promise((resolve, reject) => {
    const events = [];
    for (let j = 0; j < BATCH; j++) {
      events.push({
        transaction_id: `${run}-${i}-${j}`, customer_id: `cust-${j % 20}`, event_type: 'api_call', timestamp: ts,
        properties: { tokens: (i + j) % 1000, region: j % 2 ? 'eu' : 'us' },
      });
    }
    const body = JSON.stringify(events);
    const req = http.request({
      agent, method: 'POST', hostname: u.hostname, port: u.port, path: '/v1/ingest',
      headers: { authorization: `Bearer ${central.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (resp) => {
      let d = '';
      resp.on('data', (c) => { d += c; });
      resp.on('end', () => (resp.statusCode === 200 ? resolve(JSON.parse(d).data.accepted) : reject(new Error(`${resp.statusCode} ${d}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
  const drive = async (from, count) => {
    let next = from;
    let accepted = 0;
    const end = from + count;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < end) {
        const n = await post(next++);
        accepted += n;
      }
    }));
    return accepted;
  };
  await drive(0, Number(opts.warmup));
  const t0 = performance.now();
  const accepted = await drive(1_000_000, REQUESTS);
  const secs = (performance.now() - t0) / 1000;
  console.log(`ingest: ${accepted} events in ${REQUESTS} requests of ${BATCH}, ${CONCURRENCY} concurrent, ${SHARDS} shards: ${secs.toFixed(2)} s, ${Math.round(accepted / secs)} events/s (target >= 50,000)`);
  agent.destroy();
} finally {
  await edge.dispose();
  await central.dispose();
}
