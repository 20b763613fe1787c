// The browser preview's WASM module (central/assets/preview/) run in Node: reads JSON lines
// `{"snapshot": text, "request": text, "now": RFC 3339}` on stdin and writes one JSON line per
// input, `{"ok": the preview's JSON text}` or `{"error": its message}`. Driven by the property
// test in central/tests/it/previews.rs (WASM equals native byte for byte); the texts are passed
// through untouched, so no number is ever a JavaScript float.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { initSync, preview } from "../../central/assets/preview/tally_core.js";

const dir = new URL("../../central/assets/preview/", import.meta.url);
initSync({ module: readFileSync(new URL("tally_core_bg.wasm", dir)) });

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === "") continue;
  const { snapshot, request, now } = JSON.parse(line);
  let out;
  try {
    out = { ok: preview(snapshot, request, now) };
  } catch (e) {
    out = { error: String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
