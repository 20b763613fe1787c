// A webhook receiver for tests/it/webhooks.rs. It verifies every request with Metronome's
// official SDK (`client.webhooks.unwrap`, which checks `Metronome-Webhook-Signature` over
// `X-Metronome-Date` + "\n" + body and that the date is within 5 minutes) and appends one JSON
// line per request to the log file: {id, type, properties, verified, error, answered, date,
// date_header}.
//
//   node receiver.mjs --secret S --log FILE [--fail-first N] [--hang-first N]
//
// --fail-first N answers 500 to the first N requests of each message id, then 200.
// --hang-first N never answers the first N requests of each message id (the connection stays
// open until the sender gives up or dies).
// Prints "listening on PORT" once it accepts connections.
import { createServer } from 'node:http';
import { appendFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Metronome } = require('@metronome/sdk');

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const secret = arg('--secret');
const log = arg('--log');
const failFirst = Number(arg('--fail-first', '0'));
const hangFirst = Number(arg('--hang-first', '0'));
const client = new Metronome({ bearerToken: 'unused', webhookSecret: secret });
const seen = new Map();

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    let entry = { verified: false };
    try {
      const event = client.webhooks.unwrap(body, req.headers, secret);
      entry = { id: event.id, type: event.type, properties: event.properties, verified: true };
    } catch (e) {
      entry.error = String(e && e.message ? e.message : e);
      try {
        const event = JSON.parse(body);
        Object.assign(entry, { id: event.id, type: event.type });
      } catch {}
    }
    entry.date = req.headers['date'];
    entry.date_header = req.headers['x-metronome-date'];
    const n = (seen.get(entry.id) ?? 0) + 1;
    seen.set(entry.id, n);
    if (n <= hangFirst) {
      entry.answered = 'hang';
      appendFileSync(log, JSON.stringify(entry) + '\n');
      return; // never answer
    }
    const status = !entry.verified ? 400 : n <= hangFirst + failFirst ? 500 : 200;
    entry.answered = status;
    appendFileSync(log, JSON.stringify(entry) + '\n');
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(status === 200 ? 'ok' : status === 500 ? 'receiver failing on purpose' : entry.error);
  });
});
server.listen(0, '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
