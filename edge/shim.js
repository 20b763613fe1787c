// The Worker's entry module, used by worker-build 0.8.7 through CUSTOM_SHIM (set by
// scripts/edge-tools.sh build). It is worker-build's own template for this mode (src/js/shim-legacy.js,
// with its $PLACEHOLDERS) plus one change: the shard Durable Object class derives from the
// runtime's `DurableObject`, which is what enables Durable Object RPC on it (the Worker calls the
// shard's `ingestEvents` method instead of its `fetch`, without a Request, a Response or streams).
// worker-build's default template wraps Durable Object classes in a Proxy that does not derive from
// `DurableObject`, so RPC is refused there. That template also re-creates the WASM instance after
// a trap (a Rust panic); this mode has no such reset, which the edge does without because it never
// panics by design (no unwrap/expect; see edge/src/lib.rs).
import * as imports from "./index_bg.js";
export * from "./index_bg.js";
import wasmModule from "./index.wasm";
import { DurableObject, WorkerEntrypoint } from "cloudflare:workers";
$SNIPPET_JS_IMPORTS

const instance = new WebAssembly.Instance(wasmModule, {
	"./index_bg.js": imports,
	$SNIPPET_WASM_IMPORTS
});

imports.__wbg_set_wasm(instance.exports);

// Run the worker's initialization function.
instance.exports.__wbindgen_start?.();

export { wasmModule };

// The runtime enables RPC on an exported class whose constructor derives from DurableObject; it
// checks this when it loads the module, so it must happen here, at the top level.
Object.setPrototypeOf(imports.Shard.prototype, DurableObject.prototype);
Object.setPrototypeOf(imports.Shard, DurableObject);

class Entrypoint extends WorkerEntrypoint {
	async fetch(request) {
		let response = imports.fetch(request, this.env, this.ctx);
		$WAIT_UNTIL_RESPONSE;
		return await response;
	}
}

export default Entrypoint;
