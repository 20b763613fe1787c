// The interface the checks use, from the repository root:
//   npx wrangler dev --ip 127.0.0.1 --port PORT --persist-to DIR \
//     --var CENTRAL_URL:URL --var EDGE_HMAC_KEY:KEY --var FLUSH_INTERVAL_MS:300
// in front of `TALLY_EDGE_HMAC_KEY=KEY tally serve`: GET / answers once ready, ingest reaches the
// invoice, and the Worker's state survives a restart of wrangler on the same --persist-to.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { Central, WranglerDev, call, tempDir, until } from './harness.mjs';
import { lineQuantity, setupBilling, timeLayout } from './scenario.mjs';

const KEY = 'wrangler-test-key';

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

describe('wrangler dev', () => {
  const cleanup = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c.dispose();
  });

  test('serves the edge in front of tally serve, and keeps its state across restarts', async () => {
    const central = await new Central({ hmacKey: KEY }).start();
    cleanup.push(central);
    const persistDir = tempDir('wrangler');
    const port = await freePort();
    let dev = await new WranglerDev({ centralUrl: central.url, hmacKey: KEY, port, persistDir }).start();
    cleanup.push(dev);
    const root = await call(dev.url, null, 'GET', '/');
    assert.equal(root.status, 200);
    const layout = timeLayout();
    const setup = await setupBilling(dev.url, central.token, layout, { kinds: ['count'] });
    const ts = new Date(layout.lo).toISOString();
    const evs = Array.from({ length: 30 }, (_, i) => ({ transaction_id: `w-${i}`, customer_id: 'acme', event_type: 'api_call', timestamp: ts }));
    const r = await call(dev.url, central.token, 'POST', '/v1/ingest', evs);
    assert.deepEqual(r.body.data, { accepted: 30, duplicates: 0, rejected: [] }, r.text);
    const quantity = () => lineQuantity(dev.url, central.token, setup.customers.acme, setup.products.count, layout.lo);
    await until('30 API calls on the invoice', async () => (await quantity()) === 30);

    // Restart wrangler on the same --persist-to: the shards remember the keys they claimed.
    await dev.dispose();
    dev = await new WranglerDev({ centralUrl: central.url, hmacKey: KEY, port, persistDir }).start();
    cleanup.push(dev);
    const again = await call(dev.url, central.token, 'POST', '/v1/ingest', evs.slice(0, 10));
    assert.deepEqual(again.body.data, { accepted: 0, duplicates: 10, rejected: [] }, again.text);
    assert.equal(await quantity(), 30);
  });
});
