/**
 * Quantised weights against llama.cpp: the seeded checkpoint quantised by llama-quantize (F16,
 * Q8_0, Q4_0, Q4_1, Q4_K_M = Q4_K + Q6_K, Q5_K_M = Q5_K + Q6_K, Q6_K) gives llama.cpp's greedy ids on both kernel backends,
 * first-step logits within the README's tolerance, and js and wasm logits equal bit for bit.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { parseGguf } from "../../../shared/gguf/gguf.ts";
import { greedyWithLogits, instanceFor, KERNEL_KINDS } from "../../helpers/engine.ts";
import { quantModelBytes, readQuantFixture } from "../../helpers/quant.ts";

const fixture = readQuantFixture();
const TYPES = Object.keys(fixture.cases);
/** Largest |ours - llama.cpp| of a first-step logit (logits span about +-50). */
const LOGIT_TOLERANCE: Record<string, number> = { F16: 3e-3 };
const QUANT_LOGIT_TOLERANCE = 1e-4;

describe("quantised weights match llama.cpp", () => {
  it("covers F16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K tensors", () => {
    const types = new Set(
      Object.values(fixture.files).flatMap((f) => Object.values(f.tensor_types)),
    );
    for (const t of ["F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"]) {
      expect(types).toContain(t);
    }
    expect(new Set(Object.values(fixture.files.Q4_K_M?.tensor_types ?? {}))).toEqual(
      new Set(["F32", "Q4_K", "Q6_K"]),
    );
  });

  it("our F16 writer gives llama-quantize's F16 tensors byte for byte", () => {
    const bytes = quantModelBytes("F16");
    const file = parseGguf(bytes);
    const got = Object.fromEntries(
      [...file.tensors.values()].map((t) => [
        t.name,
        createHash("sha256")
          .update(bytes.subarray(t.offset, t.offset + t.numBytes))
          .digest("hex"),
      ]),
    );
    expect(got).toEqual(fixture.f16_tensor_sha256);
  });

  for (const type of TYPES) {
    it(`${type}: greedy ids equal llama.cpp's on js and wasm, logits bit-identical across them`, async () => {
      const bytes = quantModelBytes(type);
      const runs = [];
      for (const kind of KERNEL_KINDS) {
        const { inst } = await instanceFor(bytes, kind, { maxNumSeqs: 1 });
        const cases = (fixture.cases[type] ?? []).map((c) => ({
          c,
          out: greedyWithLogits(inst, c.prompt_ids, fixture.max_new_tokens, -1),
        }));
        for (const { c, out } of cases) {
          expect(out.ids, `${type} ${kind} "${c.prompt}"`).toEqual(c.steps.map((s) => s.id));
        }
        const first = cases[0] as (typeof cases)[number];
        let maxDiff = 0;
        first.c.first_logits.forEach((v, i) => {
          maxDiff = Math.max(maxDiff, Math.abs((first.out.logits[0]?.[i] as number) - v));
        });
        expect(maxDiff).toBeLessThanOrEqual(LOGIT_TOLERANCE[type] ?? QUANT_LOGIT_TOLERANCE);
        runs.push(cases.flatMap(({ out }) => out.logits));
      }
      const [js, wasm] = runs as [Float32Array[], Float32Array[]];
      expect(js.length).toBe(wasm.length);
      js.forEach((row, i) => {
        expect(Buffer.from(row.buffer).equals(Buffer.from((wasm[i] as Float32Array).buffer))).toBe(
          true,
        );
      });
    });
  }
});
