/**
 * The seeded MoE that no single NPU holds (scripts/big-moe.ts with make-big-moe.ts's defaults,
 * about 145 MiB, over the 96 MiB NPU budget) against llama.cpp: the model is regenerated in
 * the OS temp folder once and reused while its sha256 matches (never written to the repo; building
 * it takes a few seconds), proven to be the file llama.cpp ran by its sha256, and our
 * engine's greedy output in Node (one arena, no budget) must equal llama.cpp's greedy ids in
 * test/fixtures/big-moe-llama-cpp.json (scripts/fixtures/llama-cpp-big-moe.ts made it).
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SYNTHETIC_MODEL_PATH } from "../../../hosts/node-engine.ts";
import { createKernels } from "../../../hosts/node-kernels.ts";
import { BIG_MOE_DEFAULTS, buildBigMoe } from "../../../scripts/big-moe.ts";
import { createInstance } from "../../../shared/engine/instance.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import FIXTURE from "../../fixtures/big-moe-llama-cpp.json";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The generated model: the cached copy when it is the fixture's file, else built and cached. */
function bigMoe(): Uint8Array {
  const path = join(tmpdir(), `flowserve-big-moe-${FIXTURE.checkpoint.sha256.slice(0, 16)}.gguf`);
  if (existsSync(path)) {
    const cached = new Uint8Array(readFileSync(path));
    if (sha256(cached) === FIXTURE.checkpoint.sha256) return cached;
  }
  const bytes = buildBigMoe(new Uint8Array(readFileSync(SYNTHETIC_MODEL_PATH)), BIG_MOE_DEFAULTS);
  writeFileSync(`${path}.part`, bytes);
  renameSync(`${path}.part`, path);
  return bytes;
}

describe("the big generated MoE against llama.cpp", () => {
  it("greedy output equals llama.cpp's", { timeout: 120_000 }, async () => {
    const { bytes: _b, sha256: _s, ...options } = FIXTURE.checkpoint;
    expect(options).toEqual(BIG_MOE_DEFAULTS);
    const bytes = bigMoe();
    expect(bytes.byteLength).toBe(FIXTURE.checkpoint.bytes);
    expect(bytes.byteLength).toBeGreaterThan(96 * 2 ** 20); // more than one NPU's default budget
    expect(sha256(bytes)).toBe(FIXTURE.checkpoint.sha256);

    const kernels = await createKernels("wasm", 192 * 2 ** 20);
    const inst = createInstance(bytes, kernels, { maxNumSeqs: 2 });
    for (const c of FIXTURE.cases) {
      expect(inst.tokenizer.encode(c.prompt)).toEqual(c.prompt_ids);
      const ids: number[] = [];
      inst.engine.add(c.prompt, c.prompt_ids, {
        ...GREEDY,
        maxTokens: FIXTURE.max_new_tokens,
        ignoreEos: true,
      });
      while (inst.engine.hasWork()) {
        for (const o of (await inst.engine.step()).outputs) ids.push(...o.newTokenIds);
      }
      expect(ids, c.prompt).toEqual(c.expected_ids);
    }
  });
});
