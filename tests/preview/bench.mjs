// Benchmark of the browser preview's WASM module in Node (V8, as in Chromium): evaluations per
// second of `preview(snapshot, request, now)` (JSON text in and out, what the page calls on
// every keystroke) and the module's gzipped size.
//
//   node tests/preview/bench.mjs SNAPSHOT_FILE REQUEST_FILE [SECONDS]
//
// tests/src/bin/bench_preview.rs writes the two files from a real `tally serve` (a 20-rate card,
// 50 usage groups) and runs this.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { initSync, preview } from "../../central/assets/preview/tally_core.js";

const [snapshotFile, requestFile, secondsArg] = process.argv.slice(2);
const dir = new URL("../../central/assets/preview/", import.meta.url);
const wasm = readFileSync(new URL("tally_core_bg.wasm", dir));
const glue = readFileSync(new URL("tally_core.js", dir));
initSync({ module: wasm });
const snapshot = readFileSync(snapshotFile, "utf8");
const request = readFileSync(requestFile, "utf8");
const now = new Date().toISOString();
const seconds = Number(secondsArg ?? 3);

const first = JSON.parse(preview(snapshot, request, now));
const lines = first.data.reduce((n, inv) => n + inv.line_items.length, 0);
for (let i = 0; i < 200; i++) preview(snapshot, request, now); // warm-up
let n = 0;
const t0 = process.hrtime.bigint();
const deadline = t0 + BigInt(Math.round(seconds * 1e9));
let t = t0;
while (t < deadline) {
  for (let i = 0; i < 50; i++) preview(snapshot, request, now);
  n += 50;
  t = process.hrtime.bigint();
}
const elapsedNs = Number(t - t0);
const perSecond = Math.round(n / (elapsedNs / 1e9));
const result = {
  evaluations: n,
  evaluations_per_second: perSecond,
  mean_us: Math.round(elapsedNs / n / 100) / 10,
  invoices: first.data.length,
  line_items: lines,
  snapshot_bytes: snapshot.length,
  wasm_bytes: wasm.length,
  wasm_gzip_bytes: gzipSync(wasm, { level: 9 }).length,
  glue_gzip_bytes: gzipSync(glue, { level: 9 }).length,
};
console.log(JSON.stringify(result));
