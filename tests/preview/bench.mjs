// Benchmark of the browser preview's WASM module in Node (V8, as in Chromium): evaluations per
// second of `Previewer.preview(request, now)` (JSON text in and out against a snapshot parsed
// once: what the page calls on every keystroke), of the one-shot `preview(snapshot, request,
// now)` that also parses the snapshot, and the module's gzipped size.
//
//   node tests/preview/bench.mjs SNAPSHOT_FILE REQUEST_FILE [SECONDS]
//
// tests/src/bin/bench_preview.rs writes the two files from a real `tally serve` (a 20-rate card,
// 50 usage groups) and runs this.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { initSync, preview, Previewer } from "../../central/assets/preview/tally_core.js";

const [snapshotFile, requestFile, secondsArg] = process.argv.slice(2);
const dir = new URL("../../central/assets/preview/", import.meta.url);
const wasm = readFileSync(new URL("tally_core_bg.wasm", dir));
const glue = readFileSync(new URL("tally_core.js", dir));
initSync({ module: wasm });
const snapshot = readFileSync(snapshotFile, "utf8");
const request = readFileSync(requestFile, "utf8");
const now = new Date().toISOString();
const seconds = Number(secondsArg ?? 3);

const previewer = new Previewer(snapshot);
const first = JSON.parse(previewer.preview(request, now));
if (preview(snapshot, request, now) !== previewer.preview(request, now)) {
  throw new Error("Previewer and preview answer differently");
}
const lines = first.data.reduce((n, inv) => n + inv.line_items.length, 0);

// Evaluations per second of `evaluate` over `seconds`, after a warm-up.
function measure(evaluate, seconds) {
  for (let i = 0; i < 200; i++) evaluate();
  let n = 0;
  const t0 = process.hrtime.bigint();
  const deadline = t0 + BigInt(Math.round(seconds * 1e9));
  let t = t0;
  while (t < deadline) {
    for (let i = 0; i < 50; i++) evaluate();
    n += 50;
    t = process.hrtime.bigint();
  }
  const elapsedNs = Number(t - t0);
  return { n, perSecond: Math.round(n / (elapsedNs / 1e9)), meanUs: Math.round(elapsedNs / n / 100) / 10 };
}
const keystroke = measure(() => previewer.preview(request, now), seconds);
const oneShot = measure(() => preview(snapshot, request, now), seconds / 3);
const result = {
  evaluations: keystroke.n,
  evaluations_per_second: keystroke.perSecond,
  mean_us: keystroke.meanUs,
  one_shot_evaluations_per_second: oneShot.perSecond,
  one_shot_mean_us: oneShot.meanUs,
  invoices: first.data.length,
  line_items: lines,
  snapshot_bytes: snapshot.length,
  wasm_bytes: wasm.length,
  wasm_gzip_bytes: gzipSync(wasm, { level: 9 }).length,
  glue_gzip_bytes: gzipSync(glue, { level: 9 }).length,
};
console.log(JSON.stringify(result));
