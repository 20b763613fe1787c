// Benchmark (not a test): events/s through the edge on workerd (Miniflare 4) in front of a real
// central, batches of 100 events over several shards, and the gzipped size of the Worker bundle.
//
//   node tests/edge/bench.mjs [--requests N] [--concurrency C] [--shards S] [--profile]
//
// --profile samples workerd's CPU (V8 profiler over the inspector) during the measured run and
// prints the functions with the most self time (build with `EDGE_KEEP_NAMES=1 bash
// scripts/edge-tools.sh build` to see WASM function names rather than indices).
// BENCH_PROFILE_OUT=FILE also writes the raw profile.
// BENCH_PERSIST=DIR keeps the shards' storage in DIR (for example on tmpfs, to see what disk syncs
// cost) instead of Miniflare's temporary directory on disk.
//
// Prints one line per figure. Targets (issue #3): >= 50,000 events/s, <= 300 KB gzipped.
import { readFileSync, writeFileSync } from 'node:fs';
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
    profile: { type: 'boolean', default: false },
  },
});
const REQUESTS = Number(opts.requests);
const CONCURRENCY = Number(opts.concurrency);
const SHARDS = Number(opts.shards);
const BATCH = 100;

ensureEdgeBuilt();
const wasm = readFileSync(path.join(EDGE_BUILD, 'worker', 'index.wasm'));
const js = readFileSync(path.join(EDGE_BUILD, 'worker', 'shim.mjs'));
const gz = gzipSync(Buffer.concat([wasm, js]), { level: 9 }).length;
console.log(`bundle: ${wasm.length} bytes wasm + ${js.length} bytes js; ${(gz / 1024).toFixed(1)} KiB gzipped (target <= 300 KB)`);

const key = 'bench-key';
const central = await new Central({ hmacKey: key }).start();
const INSPECTOR_PORT = 9239;
const edge = await new Edge({
  centralUrl: central.url, hmacKey: key, shardCount: SHARDS, flushIntervalMs: 1000, persistDir: process.env.BENCH_PERSIST,
  inspectorPort: opts.profile ? INSPECTOR_PORT : undefined,
}).start();
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
  const profiler = opts.profile ? await startProfiler(INSPECTOR_PORT) : null;
  const t0 = performance.now();
  const accepted = await drive(1_000_000, REQUESTS);
  const secs = (performance.now() - t0) / 1000;
  if (profiler) {
    const profile = await profiler.stop();
    if (process.env.BENCH_PROFILE_OUT) writeFileSync(process.env.BENCH_PROFILE_OUT, JSON.stringify(profile));
    summarise(profile);
  }
  console.log(`ingest: ${accepted} events in ${REQUESTS} requests of ${BATCH}, ${CONCURRENCY} concurrent, ${SHARDS} shards: ${secs.toFixed(2)} s, ${Math.round(accepted / secs)} events/s (target >= 50,000)`);
  agent.destroy();
} finally {
  await edge.dispose();
  await central.dispose();
}

/** Connects to workerd's inspector (the Worker's isolate) and starts V8's sampling profiler. */
async function startProfiler(port) {
  const { default: WebSocket } = await import('ws');
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const target = targets.find((t) => t.webSocketDebuggerUrl) ?? targets[0];
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  let id = 0;
  const pending = new Map();
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  });
  const send = (method, params = {}) => new Promise((resolve) => {
    id += 1;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });
  await send('Profiler.enable');
  await send('Profiler.setSamplingInterval', { interval: 200 });
  await send('Profiler.start');
  return {
    async stop() {
      const r = await send('Profiler.stop');
      ws.close();
      return r.result.profile;
    },
  };
}

/** Prints self time by function, and the share spent in WASM, JS and the runtime. */
function summarise(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  profile.samples.forEach((nodeId, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const f = byId.get(nodeId).callFrame;
    const name = `${f.functionName || '(anonymous)'} ${f.url ? path.basename(f.url) : ''}`.trim();
    self.set(name, (self.get(name) ?? 0) + dt);
    total += dt;
  });
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]);
  const share = (pred) => rows.filter(([n]) => pred(n)).reduce((s, [, t]) => s + t, 0);
  const idle = share((n) => n.startsWith('(idle)'));
  const busy = total - idle;
  const pct = (t) => `${((100 * t) / busy).toFixed(1)}%`;
  console.log(`profile: ${(busy / 1000).toFixed(0)} ms busy of ${(total / 1000).toFixed(0)} ms sampled; ` +
    `wasm ${pct(share((n) => n.includes('wasm-function') || n.includes('.wasm')))}, ` +
    `(program) ${pct(share((n) => n.startsWith('(program)')))}, (garbage collector) ${pct(share((n) => n.startsWith('(garbage')))}`);
  for (const [name, t] of rows.filter(([n]) => !n.startsWith('(idle)')).slice(0, 30)) {
    console.log(`  ${pct(t).padStart(6)}  ${name}`);
  }
  // Where the runtime's SQL time comes from: the nearest Rust caller of each `exec` sample.
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const callers = new Map();
  profile.samples.forEach((nodeId, i) => {
    if (byId.get(nodeId).callFrame.functionName !== 'exec') return;
    let id = parent.get(nodeId);
    while (id !== undefined && !/tally_edge::|tally_core::/.test(byId.get(id).callFrame.functionName)) id = parent.get(id);
    const name = id === undefined ? '(unknown)' : byId.get(id).callFrame.functionName.replace(/::h[0-9a-f]{16}$/, '');
    callers.set(name, (callers.get(name) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  for (const [name, t] of [...callers.entries()].sort((a, b) => b[1] - a[1])) {
    console.log(`  exec ${pct(t).padStart(6)}  from ${name}`);
  }
}
