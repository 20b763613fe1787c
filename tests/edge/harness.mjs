// Shared harness for the edge tests and benchmark: a real `tally serve` (central) and the built
// Worker on workerd (Miniflare 4, or `wrangler dev` for the interface test).
//
// - Central: `target/debug/tally` (or $TALLY_BIN), built by scripts/test.sh before the tests. Each
//   instance gets a fresh SQLite database in a temp dir, a sandbox token (`tally token create`),
//   and listens on 127.0.0.1 (port 0 unless one is given, so it can be restarted on the same port).
// - Edge: edge/build/ as built by `bash scripts/edge-tools.sh build` (the tests build it once if it
//   is missing or older than its sources).
// - Every wait polls with a deadline; nothing sleeps as synchronisation.
import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// EDGE_BUILD_DIR runs a Worker built elsewhere, as is (for before/after benchmarks).
export const EDGE_BUILD = process.env.EDGE_BUILD_DIR || path.join(ROOT, 'edge', 'build');
export const COMPATIBILITY_DATE = '2026-04-20';
export const TALLY_BIN = process.env.TALLY_BIN || path.join(ROOT, 'target', 'debug', 'tally');

const OFFLINE_ENV = {
  WRANGLER_SEND_METRICS: 'false',
  WRANGLER_SEND_ERROR_REPORTS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
};
Object.assign(process.env, OFFLINE_ENV);

export function tempDir(prefix) {
  return mkdtempSync(path.join(tmpdir(), `tally-edge-${prefix}-`));
}

/** Polls `probe` (async, returns a truthy value when done) every `everyMs` until `deadlineMs`. */
export async function until(what, probe, { deadlineMs = 30_000, everyMs = 100 } = {}) {
  const end = Date.now() + deadlineMs;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}; last: ${last?.stack ?? JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function newest(dir) {
  let t = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    t = Math.max(t, entry.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/** Builds edge/build/ unless it is newer than edge/src, core/src and the manifests. */
export function ensureEdgeBuilt() {
  if (process.env.EDGE_BUILD_DIR) return;
  const wasm = path.join(EDGE_BUILD, 'worker', 'index.wasm');
  const sources = Math.max(
    newest(path.join(ROOT, 'edge', 'src')),
    newest(path.join(ROOT, 'core', 'src')),
    statSync(path.join(ROOT, 'edge', 'Cargo.toml')).mtimeMs,
    statSync(path.join(ROOT, 'edge', 'shim.js')).mtimeMs,
  );
  if (existsSync(wasm) && statSync(wasm).mtimeMs >= sources) return;
  const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'edge-tools.sh'), 'build'], { stdio: 'inherit', cwd: ROOT });
  if (r.status !== 0) throw new Error('bash scripts/edge-tools.sh build failed');
}

/** A running `tally serve` with its own database; `stop()` kills it, `start()` brings it back on the same port. */
export class Central {
  constructor({ hmacKey } = {}) {
    if (!existsSync(TALLY_BIN)) throw new Error(`${TALLY_BIN} not found: run cargo build --workspace --bins first`);
    this.dir = tempDir('central');
    this.db = `sqlite://${path.join(this.dir, 'tally.db')}`;
    this.hmacKey = hmacKey;
    this.port = 0;
    this.logs = [];
    const r = spawnSync(TALLY_BIN, ['token', 'create', '--env', 'sandbox', '--database', this.db], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tally token create failed: ${r.stderr}`);
    this.token = r.stdout.trim().split('\n').filter(Boolean).pop();
  }

  async start() {
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' };
    if (this.hmacKey) env.TALLY_EDGE_HMAC_KEY = this.hmacKey;
    else delete env.TALLY_EDGE_HMAC_KEY;
    this.proc = spawn(TALLY_BIN, ['serve', '--listen', `127.0.0.1:${this.port}`, '--database', this.db, '--job-interval-secs', '1'], { env });
    const proc = this.proc;
    const keep = (stream) => (chunk) => {
      for (const line of chunk.toString().split('\n')) if (line) this.logs.push(`[${stream}] ${line}`);
      if (this.logs.length > 2000) this.logs.splice(0, this.logs.length - 2000);
    };
    proc.stderr.on('data', keep('stderr'));
    this.url = await new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error(`tally serve did not start: ${this.logs.join('\n')}`)), 30_000);
      proc.stdout.on('data', (chunk) => {
        keep('stdout')(chunk);
        buf += chunk.toString();
        const m = buf.match(/listening on (http:\/\/127\.0\.0\.1:(\d+))/);
        if (m) {
          clearTimeout(timer);
          this.port = Number(m[2]);
          resolve(m[1]);
        }
      });
      proc.on('exit', (code) => reject(new Error(`tally serve exited with ${code}: ${this.logs.join('\n')}`)));
    });
    return this;
  }

  /** Kills the server and waits until it has exited. */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
  }

  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The edge on workerd through Miniflare 4, configured like wrangler.toml. */
export class Edge {
  constructor({ centralUrl, hmacKey, shardCount = 4, flushIntervalMs = 200, persistDir, inspectorPort }) {
    Object.assign(this, { centralUrl, hmacKey, shardCount, flushIntervalMs, persistDir, inspectorPort });
  }

  async start() {
    ensureEdgeBuilt();
    const { Miniflare, Log, LogLevel } = await import('miniflare');
    this.mf = new Miniflare({
      log: new Log(process.env.EDGE_LOG ? LogLevel.DEBUG : LogLevel.WARN),
      host: '127.0.0.1',
      port: 0,
      modules: true,
      scriptPath: path.join(EDGE_BUILD, 'index.js'),
      modulesRoot: EDGE_BUILD,
      modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'] }],
      compatibilityDate: COMPATIBILITY_DATE,
      durableObjects: { SHARD: { className: 'Shard', useSQLite: true } },
      durableObjectsPersist: this.persistDir ?? false,
      ...(this.inspectorPort ? { inspectorPort: this.inspectorPort } : {}),
      bindings: {
        CENTRAL_URL: this.centralUrl,
        EDGE_HMAC_KEY: this.hmacKey,
        SHARD_COUNT: String(this.shardCount),
        FLUSH_INTERVAL_MS: String(this.flushIntervalMs),
      },
    });
    this.url = (await this.mf.ready).toString().replace(/\/$/, '');
    await until('the edge to answer GET /', async () => (await fetch(`${this.url}/`)).status === 200, { deadlineMs: 60_000 });
    return this;
  }

  async dispose() {
    await this.mf?.dispose();
  }
}

/** `npx wrangler dev` from the repository root, the interface the checks use. */
export class WranglerDev {
  constructor({ centralUrl, hmacKey, port, persistDir, flushIntervalMs = 300 }) {
    Object.assign(this, { centralUrl, hmacKey, port, persistDir, flushIntervalMs });
    this.logs = [];
  }

  async start() {
    const args = [
      'wrangler', 'dev', '--ip', '127.0.0.1', '--port', String(this.port), '--persist-to', this.persistDir,
      '--var', `CENTRAL_URL:${this.centralUrl}`, '--var', `EDGE_HMAC_KEY:${this.hmacKey}`,
      '--var', `FLUSH_INTERVAL_MS:${this.flushIntervalMs}`, '--show-interactive-dev-session=false',
    ];
    this.proc = spawn('npx', args, { cwd: ROOT, env: { ...process.env, CI: 'true' }, detached: true });
    for (const s of [this.proc.stdout, this.proc.stderr]) {
      s.on('data', (c) => this.logs.push(c.toString()));
    }
    this.url = `http://127.0.0.1:${this.port}`;
    await until('wrangler dev to answer GET /', async () => (await fetch(`${this.url}/`)).status === 200, {
      deadlineMs: 300_000,
      everyMs: 250,
    });
    return this;
  }

  async dispose() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    // npx, wrangler and workerd form one process group (detached above): end all of it.
    try { process.kill(-this.proc.pid, 'SIGTERM'); } catch { /* already gone */ }
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    try { process.kill(-this.proc.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}

/**
 * A proxy in front of central that can swallow the answers to batch deliveries (`dropAcks`), and
 * records every batch body it forwards (`batches`) and every batch answer central gave (`acks`).
 */
export class LossyProxy {
  constructor(target) {
    this.target = new URL(target);
    this.dropAcks = 0;
    this.batches = [];
    this.acks = [];
  }

  async start() {
    this.server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const isBatch = req.method === 'POST' && req.url === '/internal/v1/batches';
        if (isBatch) this.batches.push(body.toString());
        const out = http.request({
          hostname: this.target.hostname, port: this.target.port, path: req.url, method: req.method,
          headers: { ...req.headers, host: this.target.host },
        }, (up) => {
          up.on('error', () => req.socket.destroy());
          const parts = [];
          up.on('data', (c) => parts.push(c));
          up.on('end', () => {
            if (isBatch && up.statusCode === 200) {
              try { this.acks.push(JSON.parse(Buffer.concat(parts).toString())); } catch { /* not JSON */ }
            }
            if (isBatch && up.statusCode === 200 && this.dropAcks > 0) {
              // Central applied the batch; the edge never hears about it.
              this.dropAcks -= 1;
              req.socket.destroy();
              return;
            }
            res.writeHead(up.statusCode, up.headers);
            res.end(Buffer.concat(parts));
          });
        });
        // Central killed mid-request or mid-answer: the edge sees the connection drop, as without us.
        out.on('error', () => req.socket.destroy());
        out.end(body);
      });
    });
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  async dispose() {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }
}

/**
 * The event records of batch bodies as a `LossyProxy` saw them: each distinct (shard_id, seq)
 * once, after checking that every delivery of one (shard_id, seq) carried the same bytes (a sealed
 * batch never changes). Returns `{ records, batches }`: every record with its batch id.
 */
export function sealedEventRecords(bodies) {
  const seen = new Map();
  for (const body of bodies) {
    const { shard_id: shard, seq } = JSON.parse(body);
    const id = `${shard}#${seq}`;
    if (seen.has(id)) {
      if (seen.get(id) !== body) throw new Error(`batch ${id} was resent with other bytes`);
    } else seen.set(id, body);
  }
  const records = [];
  for (const [id, body] of seen) {
    for (const r of JSON.parse(body).events ?? []) records.push({ ...r, batch: id });
  }
  return { records, batches: seen.size };
}

/** A small JSON client: `call(base, token, method, path, body)` → { status, headers, body, text }. */
export async function call(base, token, method, urlPath, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.body = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
    if (!init.headers['content-type']) init.headers['content-type'] = 'application/json';
  }
  const resp = await fetch(`${base}${urlPath}`, init);
  const text = await resp.text();
  let parsed;
  try { parsed = JSON.parse(text); } catch { parsed = undefined; }
  return { status: resp.status, headers: resp.headers, body: parsed, text };
}

/**
 * Signs like tally_core::batch::sign: hex HMAC-SHA256 of `${ts}\n${method}\n${pathAndQuery}\n${body}`,
 * so a signature answers only its own method, path and query.
 */
export function sign(key, ts, method, pathAndQuery, body) {
  return createHmac('sha256', key).update(`${ts}\n${method}\n${pathAndQuery}\n`).update(body).digest('hex');
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
