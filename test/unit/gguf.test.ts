import { gguf as hfGguf } from "@huggingface/gguf";
import { describe, expect, it } from "vitest";
import {
  f16ToF32,
  f32ToF16,
  GgmlType,
  GgufError,
  GgufType,
  parseGguf,
  writeGguf,
} from "../../shared/gguf/gguf.ts";
import { readTensorF32 } from "../../shared/model/quant.ts";
import {
  HAVE_REFERENCE_MODELS,
  REFERENCE_MODELS_DIR,
  readReferenceModel,
} from "../helpers/models.ts";

describe("gguf", () => {
  it("round-trips metadata and F32/F16 tensors through the writer", () => {
    const data = new Float32Array([0.5, -1.25, 3, 65504, 1e-5, -0]);
    const bytes = writeGguf(
      [
        { key: "general.architecture", type: GgufType.STRING, value: "llama" },
        { key: "llama.block_count", type: GgufType.UINT32, value: 2 },
        { key: "t.scores", type: GgufType.ARRAY, itemType: GgufType.FLOAT32, value: [0.25, -2] },
        { key: "t.flag", type: GgufType.BOOL, value: true },
      ],
      [
        { name: "a", dims: [3, 2], type: GgmlType.F32, data },
        { name: "b", dims: [6], type: GgmlType.F16, data },
      ],
    );
    const f = parseGguf(bytes);
    expect(f.metadata.get("general.architecture")).toBe("llama");
    expect(f.metadata.get("llama.block_count")).toBe(2);
    expect(f.metadata.get("t.scores")).toEqual([0.25, -2]);
    expect(f.metadata.get("t.flag")).toBe(true);
    expect(f.tensors.get("a")?.dims).toEqual([3, 2]);
    expect(Array.from(readTensorF32(f, bytes, "a"))).toEqual(Array.from(data));
    const b = readTensorF32(f, bytes, "b");
    expect(b[0]).toBe(0.5);
    expect(b[3]).toBe(65504);
    expect(Math.abs((b[4] as number) - 1e-5)).toBeLessThan(1e-7);
  });

  it("rounds f16 to nearest even and handles subnormals and infinities", () => {
    for (const v of [0, 1, -2, 0.1, 1 / 3, 6.1e-5, 5.96e-8, 1e-8, 70000, Number.NaN]) {
      const h = f32ToF16(v);
      const back = f16ToF32(h);
      if (Number.isNaN(v)) expect(Number.isNaN(back)).toBe(true);
      else if (Math.abs(v) > 65520) expect(back).toBe(Math.sign(v) * Number.POSITIVE_INFINITY);
      else
        expect(Math.abs(back - v)).toBeLessThanOrEqual(Math.max(Math.abs(v) * 2 ** -11, 2 ** -25));
    }
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie goes to even
  });

  it("rejects bad magic, truncation and unsupported tensor types with clear errors", () => {
    expect(() => parseGguf(new Uint8Array([1, 2, 3, 4, 5]))).toThrow(/bad magic/);
    const ok = writeGguf(
      [],
      [{ name: "a", dims: [4], type: GgmlType.F32, data: new Float32Array(4) }],
    );
    expect(() => parseGguf(ok.subarray(0, ok.length - 24))).toThrow(GgufError);
    const q4 = ok.slice();
    const f = parseGguf(ok);
    const view = new DataView(q4.buffer);
    // the tensor info ends with dims [4] (u64), then the type (u32): change it to Q2_K (10),
    // which this engine does not read, then to Q4_K (12), whose blocks hold 256 values
    let typeAt = -1;
    for (let p = 24; p < f.dataOffset - 12; p++) {
      if (view.getBigUint64(p, true) === 4n && view.getUint32(p + 8, true) === 0) {
        typeAt = p + 8;
        break;
      }
    }
    view.setUint32(typeAt, 10, true);
    expect(() => parseGguf(q4)).toThrow(/unsupported tensor type Q2_K/);
    view.setUint32(typeAt, 12, true);
    expect(() => parseGguf(q4)).toThrow(/Q4_K tensor size is not a multiple of 256/);
  });

  it.skipIf(!HAVE_REFERENCE_MODELS)(
    "agrees with @huggingface/gguf on the reference models",
    async () => {
      for (const file of [
        "stories260K-f32.gguf",
        "tiny-mixtral-f32.gguf",
        "tiny-qwen3moe-f32.gguf",
      ]) {
        const ours = parseGguf(readReferenceModel(file));
        const theirs = await hfGguf(`${REFERENCE_MODELS_DIR}/${file}`, { allowLocalFile: true });
        expect(ours.tensors.size).toBe(theirs.tensorInfos.length);
        for (const t of theirs.tensorInfos) {
          const o = ours.tensors.get(t.name);
          expect(o?.dims).toEqual(t.shape.map(Number));
          expect(o?.offset).toBe(ours.dataOffset + Number(t.offset));
        }
        for (const [k, v] of Object.entries(theirs.metadata)) {
          if (k === "version" || k === "tensor_count" || k === "kv_count") continue;
          const mine = ours.metadata.get(k);
          if (Array.isArray(v)) expect((mine as unknown[]).length).toBe(v.length);
          else expect(mine).toEqual(typeof v === "bigint" ? Number(v) : v);
        }
      }
    },
  );
});
