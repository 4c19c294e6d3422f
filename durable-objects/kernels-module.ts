/**
 * The wasm kernels module the Durable Objects instantiate: wasm/kernels-relaxed.wasm where this
 * isolate compiles relaxed SIMD (workerd does by default), else wasm/kernels.wasm. Both are bundled;
 * the choice is made once per isolate and gives the same bits (shared/model/kernels-wasm.ts).
 */

import { type WasmBuild, wasmBuild } from "../shared/model/kernels-wasm.ts";
import plainModule from "../wasm/kernels.wasm";
import relaxedModule from "../wasm/kernels-relaxed.wasm";

/** The build in use, for logs and stats. */
export const KERNELS_BUILD: WasmBuild = wasmBuild((b) => WebAssembly.validate(b));

/** The compiled module of KERNELS_BUILD. */
export const kernelsModule: WebAssembly.Module =
  KERNELS_BUILD === "relaxed-simd" ? relaxedModule : plainModule;
