/**
 * Node host helpers for the kernels (CLI, benchmarks, Node tests): loads the wasm build this Node
 * runs from the repository (wasm/kernels-relaxed.wasm where relaxed SIMD is on, i.e. under
 * `node --experimental-wasm-relaxed-simd` on Node 20; else wasm/kernels.wasm) and picks a
 * `Kernels` implementation by name. Node-only (reads files).
 */

import { readFileSync } from "node:fs";
import type { Kernels } from "../shared/model/kernels.ts";
import { createJsKernels } from "../shared/model/kernels-js.ts";
import {
  createWasmKernels,
  WASM_KERNEL_IMPORTS,
  type WasmBuild,
  wasmBuild,
} from "../shared/model/kernels-wasm.ts";

export type KernelKind = "js" | "wasm";

/** The wasm build this process runs (relaxed SIMD is a V8 flag on Node 20). */
export const WASM_BUILD: WasmBuild = wasmBuild((b) => WebAssembly.validate(b));

/** Paths of the committed builds (both written by `npm run build:wasm`). */
export const WASM_BUILD_URLS: Readonly<Record<WasmBuild, URL>> = {
  "relaxed-simd": new URL("../wasm/kernels-relaxed.wasm", import.meta.url),
  simd128: new URL("../wasm/kernels.wasm", import.meta.url),
};

/** Path of the committed kernels module this process runs (WASM_BUILD). */
export const WASM_KERNELS_URL = WASM_BUILD_URLS[WASM_BUILD];

let compiled: Promise<WebAssembly.Module> | undefined;

/** The compiled module, compiled once per process (instances are not shared). */
function wasmModule(): Promise<WebAssembly.Module> {
  compiled ??= WebAssembly.compile(readFileSync(WASM_KERNELS_URL));
  return compiled;
}

/**
 * Wasm SIMD kernels on a fresh instance with an arena of `capacityBytes`, of the committed module
 * or of `module` (another build of wasm/kernels.ts, for bench/kernels-ab.ts).
 */
export async function loadWasmKernels(
  capacityBytes: number,
  module?: WebAssembly.Module,
): Promise<Kernels> {
  const instance = await WebAssembly.instantiate(
    module ?? (await wasmModule()),
    WASM_KERNEL_IMPORTS,
  );
  return createWasmKernels(instance, capacityBytes);
}

/** Kernels of the given kind with an arena of `capacityBytes` (`module`: as loadWasmKernels). */
export async function createKernels(
  kind: KernelKind,
  capacityBytes: number,
  module?: WebAssembly.Module,
): Promise<Kernels> {
  return kind === "wasm" ? loadWasmKernels(capacityBytes, module) : createJsKernels(capacityBytes);
}
