// The browser cost preview in headless Chromium (issue 15), against a real `tally serve`:
// sets up pricing through the API, opens GET /preview, enters a token, a customer and
// hypothetical usage for several scenarios (tiers, group keys, UNIQUE, an override, replace and
// merge), and checks that the page's numbers (computed in the browser by the WASM module) are
// exactly `previewEvents`' response, byte for byte, and that the same events, ingested, make
// exactly the previewed invoices. Bad input must get a clear message.
//
// Environment: TALLY_URL, TALLY_TOKEN (a sandbox token), CHROMIUM (the browser binary; Debian's
// `chromium`: playwright-core never downloads one), optional SCREENSHOT (a PNG path).
// Driven by tests/it/preview_page.rs. Exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.TALLY_URL;
const token = process.env.TALLY_TOKEN;
const executablePath = process.env.CHROMIUM;
assert.ok(base && token && executablePath, "TALLY_URL, TALLY_TOKEN and CHROMIUM are required");

const HOUR = 3_600_000;
const nowHour = Math.floor(Date.now() / HOUR) * HOUR;
const iso = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");
// The contract starts 30 hours ago; usage falls in the hours since.
const start = iso(nowHour - 30 * HOUR);
const at = (hoursAgo, minutes = 0) => iso(nowHour - hoursAgo * HOUR + minutes * 60_000);

async function api(method, path, bodyText) {
  const res = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: bodyText,
  });
  return { status: res.status, text: await res.text() };
}

async function create(path, body) {
  const { status, text } = await api("POST", path, JSON.stringify(body));
  assert.equal(status, 200, `${path}: ${text}`);
  return JSON.parse(text).data.id;
}

// JSON with every number kept as its exact text (a string), for comparisons to the last digit.
function exactParse(text) {
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === "\\") out += text[++i];
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
      out += c;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      let j = i;
      while (j < text.length && /[-+0-9.eE]/.test(text[j])) j++;
      out += JSON.stringify(text.slice(i, j));
      i = j - 1;
    } else {
      out += c;
    }
  }
  return JSON.parse(out);
}

// --- pricing: three products on one card, two customers (one with an override) ---------
const suffix = Date.now().toString(36);
const calls = await create("/v1/billable-metrics/create", {
  name: `calls ${suffix}`, aggregation_type: "SUM", aggregation_key: "n",
  event_type_filter: { in_values: ["call"] },
});
const storage = await create("/v1/billable-metrics/create", {
  name: `storage ${suffix}`, aggregation_type: "SUM", aggregation_key: "gb",
  event_type_filter: { in_values: ["store"] }, group_keys: [["region"]],
});
const seats = await create("/v1/billable-metrics/create", {
  name: `seats ${suffix}`, aggregation_type: "UNIQUE", aggregation_key: "user",
  event_type_filter: { in_values: ["login"] },
});
const product = (name, metric, extra = {}) => create("/v1/contract-pricing/products/create",
  { name, type: "USAGE", billable_metric_id: metric, ...extra });
const pCalls = await product("API calls", calls);
const pStorage = await product("Storage GB", storage, { presentation_group_key: ["region"] });
const pSeats = await product("Seats", seats);
const card = await create("/v1/contract-pricing/rate-cards/create", { name: `card ${suffix}` });
const addRate = async (rate) => {
  const { status, text } = await api("POST", "/v1/contract-pricing/rate-cards/addRate",
    JSON.stringify({ rate_card_id: card, starting_at: start, entitled: true, ...rate }));
  assert.equal(status, 200, text);
};
await addRate({ product_id: pCalls, rate_type: "TIERED",
  tiers: [{ price: 0.02, size: 1000 }, { price: 0.015, size: 9000 }, { price: 0.0125 }] });
await addRate({ product_id: pStorage, rate_type: "FLAT", price: 0.125 });
await addRate({ product_id: pSeats, rate_type: "FLAT", price: 7 });

const customer = async (name, alias, contractExtra = {}) => {
  const id = await create("/v1/customers", { name: `${name} ${suffix}`, ingest_aliases: [alias] });
  await create("/v1/contracts/create",
    { customer_id: id, rate_card_id: card, starting_at: start, ...contractExtra });
  return id;
};
const acme = await customer("Acme", `acme-${suffix}`);
const globex = await customer("Globex", `globex-${suffix}`, {
  overrides: [{ starting_at: start, product_id: pStorage, type: "MULTIPLIER", multiplier: 0.8 }],
});
// Stored usage of Acme: 800 calls and one seat, which `merge` adds to.
{
  const { status, text } = await api("POST", "/v1/ingest", JSON.stringify([
    { transaction_id: `s1-${suffix}`, customer_id: `acme-${suffix}`, event_type: "call",
      timestamp: at(20), properties: { n: "800" } },
    { transaction_id: `s2-${suffix}`, customer_id: `acme-${suffix}`, event_type: "login",
      timestamp: at(19), properties: { user: "ada" } },
  ]));
  assert.equal(status, 200, text);
}

const ev = (tid, type, hoursAgo, properties) =>
  ({ transaction_id: `${tid}-${suffix}`, event_type: type, timestamp: at(hoursAgo, 17), properties });
const scenarios = [
  // Totals by hand: 10500.5 calls = 1000 x 0.02 + 9000 x 0.015 + 500.5 x 0.0125.
  { name: "tiers (replace)", customer: acme, mode: "replace", total: "161.25625",
    events: [ev("a1", "call", 10, { n: "1500" }), ev("a2", "call", 3, { n: "9000.5" })] },
  // 12.5 x 0.125 + 0.333 x 0.125 + 2 seats (ada, bob) x 7.
  { name: "group keys and UNIQUE (replace)", customer: acme, mode: "replace", total: "15.604125",
    events: [ev("b1", "store", 9, { gb: "12.5", region: "eu" }),
      ev("b2", "store", 8, { gb: "0.333", region: "us" }),
      ev("b3", "login", 7, { user: "ada" }), ev("b4", "login", 6, { user: "bob" }),
      ev("b5", "login", 5, { user: "ada" })] },
  // 100 x 0.125 x 0.8 (the override) + 42 x 0.02.
  { name: "override (replace)", customer: globex, mode: "replace", total: "10.84",
    events: [ev("c1", "store", 4, { gb: "100", region: "eu" }), ev("c2", "call", 4, { n: "42" })] },
  // (800 stored + 250.75) calls = 1000 x 0.02 + 50.75 x 0.015; seats ada (stored) and cy x 7;
  // 3 x 0.125.
  { name: "merge with stored usage", customer: acme, mode: "merge", ingest: true, total: "35.13625",
    events: [ev("d1", "call", 2, { n: "250.75" }), ev("d2", "login", 2, { user: "cy" }),
      ev("d3", "store", 1, { gb: "3", region: "eu" })] },
];

// --- the page --------------------------------------------------------------------------
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${base}/preview`);
  await page.waitForSelector("body[data-ready=true]");
  const engine = await page.textContent("#engine");
  assert.match(engine, /WebAssembly/);

  // Clear messages for bad input: no pricing yet, a wrong customer, then bad usage.
  assert.match(await page.textContent("#error"), /Load a customer's pricing/);
  await page.fill("#token", token);
  await page.fill("#customer", "no-such-customer");
  await page.click("#load");
  await page.waitForFunction(() => /404/.test(document.querySelector("#error").textContent));

  async function load(customerId) {
    await page.fill("#customer", customerId);
    await page.click("#load");
    await page.waitForFunction(() => document.querySelector("#status").textContent === "loaded");
  }
  async function enter(text, mode) {
    await page.selectOption("#mode", mode);
    await page.fill("#events", text);
  }

  await load(acme);
  await enter('[{"event_type": "call", "properties": {"n": ', "replace");
  assert.match(await page.textContent("#error"), /Cannot price this usage: request: /);
  assert.equal(await page.textContent("#result"), "");
  const dup = JSON.stringify([ev("x", "call", 1, { n: "1" }), ev("x", "call", 2, { n: "2" })]);
  await enter(dup, "replace");
  assert.match(await page.textContent("#error"), /appears more than once in the request/);
  await enter('"calls"', "replace");
  assert.match(await page.textContent("#error"), /must be a JSON array of events/);
  // The server refuses the same things in the same words.
  const server = await api("POST", `/v1/customers/${acme}/previewEvents`,
    JSON.stringify({ events: JSON.parse(dup), mode: "replace", skip_zero_qty_line_items: false }));
  assert.equal(server.status, 400);
  assert.match(JSON.parse(server.text).message, /appears more than once in the request/);

  let loaded = acme;
  let shot = false;
  for (const s of scenarios) {
    if (loaded !== s.customer) {
      await load(s.customer);
      loaded = s.customer;
    }
    const eventsText = JSON.stringify(s.events, null, 2);
    await enter(eventsText, s.mode);
    await page.waitForFunction(() => document.querySelector("#result").textContent !== "");
    assert.equal(await page.textContent("#error"), "", s.name);
    const shown = await page.textContent("#result");
    const body = `{"events": ${eventsText}, "mode": ${JSON.stringify(s.mode)}, "skip_zero_qty_line_items": false}`;
    const server = await api("POST", `/v1/customers/${s.customer}/previewEvents`, body);
    assert.equal(server.status, 200, server.text);
    assert.equal(shown, server.text, `${s.name}: the page's preview is previewEvents' response`);
    // What is on screen is those numbers, to the last digit.
    const previewed = exactParse(server.text).data;
    const totals = await page.$$eval(".invoice-total", (cells) => cells.map((c) => c.textContent));
    assert.deepEqual(totals, previewed.map((inv) => inv.total), s.name);
    const lineTotals = await page.$$eval("tr.line td.total", (cells) => cells.map((c) => c.textContent));
    assert.deepEqual(lineTotals, previewed.flatMap((inv) => inv.line_items.map((l) => l.total)), s.name);
    // Within one calendar month the customer has one open draft, priced as computed by hand
    // (at a month's first hours the usage spans two periods: the byte checks above still hold).
    const months = new Set([start, ...s.events.map((e) => e.timestamp)].map((t) => t.slice(0, 7)));
    if (months.size === 1) {
      assert.equal(previewed.length, 1, s.name);
      assert.equal(previewed[0].total, s.total, `${s.name}: the total computed by hand`);
    }
    console.log(`${s.name}: ${previewed.map((inv) => inv.total).join(", ")} (page = previewEvents)`);
    if (!shot && process.env.SCREENSHOT && s.name.startsWith("group")) {
      await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
      shot = true;
    }
    if (s.ingest) {
      const events = s.events.map((e) => ({ ...e, customer_id: `acme-${suffix}` }));
      const ing = await api("POST", "/v1/ingest", JSON.stringify(events));
      assert.equal(ing.status, 200, ing.text);
      for (const inv of previewed) {
        const got = await api("GET", `/v1/customers/${s.customer}/invoices/${inv.id}`);
        assert.equal(got.status, 200, got.text);
        assert.deepEqual(exactParse(got.text).data, inv, `${s.name}: the invoice is the preview`);
      }
      console.log(`${s.name}: the ingested events make exactly the previewed invoice`);
    }
  }
  assert.deepEqual(errors, [], "no uncaught page errors");
} finally {
  await browser.close();
}
console.log("preview page: ok");
