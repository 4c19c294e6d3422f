/**
 * Node host helpers for the kernels (CLI, benchmarks, Node tests): loads wasm/kernels.wasm from
 * the repository and picks a `Kernels` implementation by name. Node-only (reads files).
 */

import { readFileSync } from "node:fs";
import type { Kernels } from "../shared/model/kernels.ts";
import { createJsKernels } from "../shared/model/kernels-js.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../shared/model/kernels-wasm.ts";

export type KernelKind = "js" | "wasm";

/** Path of the committed kernels module (built by `npm run build:wasm`). */
export const WASM_KERNELS_URL = new URL("../wasm/kernels.wasm", import.meta.url);

let compiled: Promise<WebAssembly.Module> | undefined;

/** The compiled module, compiled once per process (instances are not shared). */
function wasmModule(): Promise<WebAssembly.Module> {
  compiled ??= WebAssembly.compile(readFileSync(WASM_KERNELS_URL));
  return compiled;
}

/** Wasm SIMD kernels on a fresh instance with an arena of `capacityBytes`. */
export async function loadWasmKernels(capacityBytes: number): Promise<Kernels> {
  const instance = await WebAssembly.instantiate(await wasmModule(), WASM_KERNEL_IMPORTS);
  return createWasmKernels(instance, capacityBytes);
}

/** Kernels of the given kind with an arena of `capacityBytes`. */
export async function createKernels(kind: KernelKind, capacityBytes: number): Promise<Kernels> {
  return kind === "wasm" ? loadWasmKernels(capacityBytes) : createJsKernels(capacityBytes);
}
