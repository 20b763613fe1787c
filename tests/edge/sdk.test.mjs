// Metronome's official Python SDK (metronome-sdk 4.12.0) through the edge: tests/sdk/quickstart.py,
// the same script tests/it/sdk_python.rs runs against central alone, with its base URL pointed at
// the Worker on workerd (Miniflare 4) in front of a real `tally serve`. Ingest goes through the
// shards and reaches central when they flush; every other call is proxied. The script asserts the
// same exact Decimal invoice totals as the native run, polling the draft invoice until the flushed
// usage shows (TALLY_AWAIT_INVOICE_S) instead of reading it right after ingest.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Central, Edge, ROOT, call, sign } from './harness.mjs';

const KEY = 'sdk-test-key';
/** Bounds the whole script (a few dozen requests) and each invoice poll within it. */
const SCRIPT_TIMEOUT_MS = 300_000;
const AWAIT_INVOICE_S = '60';

function runQuickstart(baseUrl, token) {
  return new Promise((resolve, reject) => {
    const env = {
      ...process.env,
      TALLY_BASE_URL: baseUrl,
      TALLY_TOKEN: token,
      TALLY_AWAIT_INVOICE_S: AWAIT_INVOICE_S,
      PYTHONUNBUFFERED: '1',
      PYTHONDONTWRITEBYTECODE: '1',
    };
    // The script passes base_url and bearer_token explicitly; nothing else may leak in.
    delete env.METRONOME_BASE_URL;
    delete env.METRONOME_BEARER_TOKEN;
    const proc = spawn('python3', [path.join(ROOT, 'tests', 'sdk', 'quickstart.py')], { cwd: ROOT, env });
    let out = '';
    proc.stdout.on('data', (c) => { out += c; });
    proc.stderr.on('data', (c) => { out += c; });
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`quickstart.py did not finish within ${SCRIPT_TIMEOUT_MS} ms:\n${out}`));
    }, SCRIPT_TIMEOUT_MS);
    proc.on('error', reject);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

describe('official Python SDK through the edge', () => {
  const cleanup = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c.dispose();
  });

  test('the quickstart passes with the same exact invoice totals as against central', async () => {
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const edge = await new Edge({ centralUrl: central.url, hmacKey: KEY, shardCount: 4, flushIntervalMs: 200 }).start();
    cleanup.push(edge);

    const { code, out } = await runQuickstart(edge.url, central.token);
    assert.equal(code, 0, `quickstart.py through the edge failed (exit ${code}):\n${out}\n--- central ---\n${central.logs.join('\n')}`);
    assert.match(out, /\[quickstart\] PASS/);
    // The draft totals were awaited (the edge path), and every partial merged at central.
    assert.match(out, /draft total 1504\.5 after \d+ poll\(s\)/);
    assert.match(out, /draft total 1509\.6 after \d+ poll\(s\)/);
    const ts = Date.now();
    const stats = await call(central.url, null, 'GET', '/internal/v1/stats', undefined, {
      'x-tally-timestamp': String(ts),
      'x-tally-signature': sign(KEY, ts, 'GET', '/internal/v1/stats', ''),
    });
    assert.equal(stats.status, 200, stats.text);
    assert.deepEqual(stats.body, { dead_letters: { sandbox: 0, production: 0 } });
  });
});
