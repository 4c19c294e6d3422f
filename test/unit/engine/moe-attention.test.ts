/**
 * moe-attention at the engine level (in-process fabric): attention ranks hold no expert weights,
 * expert ranks hold only their experts (measured), greedy outputs equal colocated for every
 * (attention, expert) rank count in {1, 2, 4} under concurrent sequences (and with quantised
 * experts, which expert ranks keep in their GGUF type), every A2E payload is
 * exactly the (token, destination rank) pairs x hidden x 4 bytes, and a silent expert rank fails
 * the step with a clear error instead of hanging it.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createLocalMoe, type LocalMoe } from "../../../hosts/moe-local.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { f32ToF16, GgmlType, type GgufTensorInfo, parseGguf } from "../../../shared/gguf/gguf.ts";
import { isExpertTensor } from "../../../shared/model/expert-shard.ts";
import type { WeightType } from "../../../shared/model/quant.ts";
import type { DisaggMoe } from "../../../shared/moe/disagg-executor.ts";
import { rankFor } from "../../../shared/moe/expert-map.ts";
import { PingPongMoe } from "../../../shared/moe/ping-pong.ts";
import { mulberry32 } from "../../../shared/random.ts";
import { instanceFor } from "../../helpers/engine.ts";
import { HAVE_REFERENCE_MODELS, REPO_ROOT, readReferenceModel } from "../../helpers/models.ts";
import { randomQuantWeights } from "../../helpers/quant.ts";

const PROMPTS = ["Once upon a time", "The little dog", "Hello", "A cat sat on the mat and"];
const MAX_TOKENS = 8;

function models(): { name: string; bytes: Uint8Array }[] {
  const out: { name: string; bytes: Uint8Array }[] = [
    {
      name: "synthetic-moe",
      bytes: new Uint8Array(readFileSync(join(REPO_ROOT, "models/synthetic-moe.gguf"))),
    },
  ];
  if (HAVE_REFERENCE_MODELS) {
    for (const f of ["tiny-qwen3moe-f32.gguf", "tiny-mixtral-f32.gguf"]) {
      out.push({ name: f, bytes: readReferenceModel(f) });
    }
  }
  return out;
}

/**
 * The default model with its expert tensors retyped in place to `types` (gate, up, down) and
 * filled with random blocks of that type: each quantised tensor is smaller than the F16 one, so
 * it fits at the same offset and the header changes only in the type fields.
 */
function withQuantExperts(types: [WeightType, WeightType, WeightType]): Uint8Array {
  const bytes = new Uint8Array(readFileSync(join(REPO_ROOT, "models/synthetic-moe.gguf")));
  const file = parseGguf(bytes);
  const view = new DataView(bytes.buffer);
  const rng = mulberry32(8);
  for (const t of file.tensors.values()) {
    const which = ["_gate_exps", "_up_exps", "_down_exps"].findIndex((k) => t.name.includes(k));
    if (which < 0) continue;
    const type = types[which] as WeightType;
    // the tensor's info: u64 name length, name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset
    const name = new TextEncoder().encode(t.name);
    let at = -1;
    for (let p = 24; p < file.dataOffset && at < 0; p++) {
      if (view.getUint32(p, true) !== name.length || view.getUint32(p + 4, true) !== 0) continue;
      if (name.every((b, i) => bytes[p + 8 + i] === b)) at = p + 8 + name.length;
    }
    expect(at).toBeGreaterThan(0);
    const typeAt = at + 4 + 8 * view.getUint32(at, true);
    expect(view.getUint32(typeAt, true)).toBe(GgmlType.F16);
    view.setUint32(typeAt, type, true);
    const cols = t.dims[0] as number;
    const data = randomQuantWeights(type, cols, t.numElements / cols, rng);
    expect(data.byteLength).toBeLessThan(t.numBytes);
    // scales for values of std about 1 / sqrt(cols), as the F16 weights have (Q4_1: centred)
    const [block, qStd] =
      type === GgmlType.Q8_0 ? [34, 74] : type === GgmlType.Q4_0 ? [18, 4.6] : [20, 4.6];
    const d = 1 / Math.sqrt(cols) / qStd;
    const dv = new DataView(data.buffer);
    for (let b = 0; b < data.byteLength / block; b++) {
      const db = d * (0.5 + rng());
      dv.setUint16(b * block, f32ToF16(db), true);
      if (type === GgmlType.Q4_1) dv.setUint16(b * block + 2, f32ToF16(-7.5 * db), true);
    }
    bytes.set(data, t.offset);
  }
  return bytes;
}

async function colocated(bytes: Uint8Array): Promise<Map<string, number[]>> {
  const { inst } = await instanceFor(bytes, "wasm", { maxNumSeqs: 8 });
  const params = { ...GREEDY, maxTokens: MAX_TOKENS, ignoreEos: true };
  PROMPTS.forEach((p, i) => {
    inst.engine.add(`s${i}`, inst.tokenizer.encode(p), params);
  });
  const out = new Map<string, number[]>();
  while (inst.engine.hasWork()) {
    for (const o of (await inst.engine.step()).outputs) {
      out.set(o.seqId, [...(out.get(o.seqId) ?? []), ...o.newTokenIds]);
    }
  }
  return out;
}

async function disaggregated(m: LocalMoe): Promise<Map<string, number[]>> {
  const params = { ...GREEDY, maxTokens: MAX_TOKENS, ignoreEos: true };
  const tok = m.attention[0]!.tokenizer;
  PROMPTS.forEach((p, i) => {
    const ids = tok.encode(p);
    const a = m.group.pick(ids.length + MAX_TOKENS);
    expect(a).not.toBeNull();
    m.group.ranks[a!]!.engine.add(`s${i}`, ids, params);
  });
  // DP balancing spread the sequences over the attention ranks
  const busy = m.group.ranks.filter((r) => r.engine.hasWork()).length;
  expect(busy).toBe(Math.min(m.group.ranks.length, PROMPTS.length));
  const out = new Map<string, number[]>();
  while (m.group.hasWork()) {
    for (const r of await m.group.step()) {
      for (const o of r?.outputs ?? [])
        out.set(o.seqId, [...(out.get(o.seqId) ?? []), ...o.newTokenIds]);
    }
  }
  return out;
}

describe("moe-attention (in-process fabric)", () => {
  for (const { name, bytes } of models()) {
    it(`${name}: greedy output equals colocated for A, E in {1, 2, 4}, ping-pong or not`, async () => {
      const want = await colocated(bytes);
      expect(want.size).toBe(PROMPTS.length);
      for (const pingPong of [false, true]) {
        for (const A of [1, 2, 4]) {
          for (const E of [1, 2, 4]) {
            const m = await createLocalMoe(bytes, {
              attention: A,
              experts: E,
              instance: { maxNumSeqs: 8 },
              pingPong,
            });
            // count the second micro-batch's dispatches that carried tokens
            const rank0 = m.group.ranks[0]!.moe;
            let second = 0;
            if (rank0 instanceof PingPongMoe) {
              const half = rank0.halves[1];
              const dispatch = half.experts.bind(half);
              half.experts = (b, out) => {
                if (b.numTokens > 0) second++;
                return dispatch(b, out);
              };
            }
            const got = await disaggregated(m);
            expect(got, `A=${A} E=${E} pingPong=${pingPong}`).toEqual(want);
            // with 4 sequences on one rank, both micro-batches carried tokens
            if (pingPong && A === 1) expect(second).toBeGreaterThan(0);
          }
        }
      }
    });
  }

  it("quantised experts: kept in their GGUF type on expert ranks, greedy output equals colocated", async () => {
    const cases: [WeightType, WeightType, WeightType][] = [
      [GgmlType.Q8_0, GgmlType.Q8_0, GgmlType.Q4_0], // kept quantised
      [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q4_1], // a gate/up pair of two types: f32
    ];
    for (const types of cases) {
      const bytes = withQuantExperts(types);
      const file = parseGguf(bytes);
      let stored = 0;
      let asF32 = 0;
      for (const t of file.tensors.values()) {
        if (!isExpertTensor(t.name)) continue;
        stored += t.numBytes;
        asF32 += 4 * t.numElements;
      }
      const want = await colocated(bytes);
      expect(want.size).toBe(PROMPTS.length);
      for (const [A, E] of [
        [1, 1],
        [2, 2],
        [1, 4],
      ] as const) {
        const m = await createLocalMoe(bytes, {
          attention: A,
          experts: E,
          instance: { maxNumSeqs: 8 },
          pingPong: A === 2,
        });
        expect(await disaggregated(m), `types ${types} A=${A} E=${E}`).toEqual(want);
        expect(m.bytesRangeRead()).toBe(stored);
        const held = m.expertShards.reduce((a, s) => a + s.residentBytes, 0);
        if (types[0] === types[1]) expect(held).toBeLessThan(stored + 16 * 2 * 8 * 4);
        else expect(held).toBeGreaterThan(asF32 / 2);
      }
    }
  });

  it("attention ranks hold no expert weights, expert ranks only their experts (measured)", async () => {
    const bytes = models()[0]!.bytes;
    const file = parseGguf(bytes);
    // in kernel memory tensors keep their GGUF type (F32 and BF16 as f32): the experts are F16
    const inKernel = (t: GgufTensorInfo) =>
      t.type === GgmlType.F32 || t.type === GgmlType.BF16 ? 4 * t.numElements : t.numBytes;
    let expertBytes = 0; // in kernel memory
    let expertFileBytes = 0; // as stored in the GGUF
    let otherBytes = 0;
    for (const t of file.tensors.values()) {
      if (isExpertTensor(t.name)) {
        expect(t.type).toBe(GgmlType.F16);
        expertBytes += inKernel(t);
        expertFileBytes += t.numBytes;
      } else otherBytes += inKernel(t);
    }
    const m = await createLocalMoe(bytes, {
      attention: 2,
      experts: 2,
      instance: { maxNumSeqs: 4 },
    });
    const shardBytes = m.expertShards.map((s) => s.residentBytes);
    // together the expert ranks hold every expert once, and read nothing else
    expect(shardBytes.reduce((a, b) => a + b, 0)).toBe(expertBytes);
    expect(m.bytesRangeRead()).toBe(expertFileBytes);
    for (const s of shardBytes) expect(s).toBe(expertBytes / 2);
    // an attention rank loaded the other tensors (q|k|v and gate|up fused; allocations 16-aligned)
    const colo = await instanceFor(bytes, "wasm", { maxNumSeqs: 4 });
    for (const inst of m.attention) {
      expect(inst.residentWeightBytes).toBeGreaterThanOrEqual(otherBytes);
      expect(inst.residentWeightBytes).toBeLessThan(otherBytes + 16 * file.tensors.size);
      expect(inst.residentWeightBytes + expertBytes).toBe(colo.inst.residentWeightBytes);
    }
    // and read only those: every range an attention rank read misses every expert tensor, and
    // together its ranges cover every other tensor
    const experts = [...file.tensors.values()].filter((t) => isExpertTensor(t.name));
    for (const ranges of m.attentionReads) {
      for (const r of ranges) {
        for (const t of experts) {
          const overlaps = r.offset < t.offset + t.numBytes && t.offset < r.offset + r.length;
          expect(overlaps, `${t.name} read by [${r.offset}, +${r.length})`).toBe(false);
        }
      }
      for (const t of file.tensors.values()) {
        if (isExpertTensor(t.name)) continue;
        const covered = ranges.some(
          (r) => r.offset <= t.offset && t.offset + t.numBytes <= r.offset + r.length,
        );
        expect(covered, t.name).toBe(true);
      }
      const read = ranges.reduce((a, r) => a + r.length, 0);
      expect(read).toBeLessThan(bytes.byteLength - expertFileBytes);
    }
  });

  it("dispatches (token, destination rank) pairs x hidden x 4 bytes per layer and step", async () => {
    const bytes = models()[0]!.bytes;
    const m = await createLocalMoe(bytes, {
      attention: 1,
      experts: 4,
      instance: { maxNumSeqs: 4 },
    });
    const inst = m.attention[0]!;
    const c = inst.config;
    const moe = m.group.ranks[0]!.moe as DisaggMoe;
    // record the routing the attention rank computed, then let it dispatch as usual
    const routes = new Map<string, Int32Array>();
    const dispatch = moe.experts.bind(moe);
    moe.experts = (b, slotOut) => {
      routes.set(`${moe.step}/${b.layer}`, Int32Array.from(b.routeIds));
      return dispatch(b, slotOut);
    };
    inst.engine.add("s", inst.tokenizer.encode("Once upon a time there was"), {
      ...GREEDY,
      maxTokens: 4,
      ignoreEos: true,
    });
    while (m.group.hasWork()) await m.group.step();
    const entries = moe.counters.list();
    expect(entries).toHaveLength(routes.size);
    expect(routes.size).toBe(4 * c.numHiddenLayers);
    const k = c.numExpertsPerTok;
    for (const e of entries) {
      const r = routes.get(`${e.step}/${e.layer}`)!;
      const pairs = new Set<string>();
      const seen = new Map<number, number>();
      for (let row = 0; row < r.length / k; row++) {
        for (let s = 0; s < k; s++) {
          const x = r[row * k + s]!;
          const n = seen.get(x) ?? 0;
          seen.set(x, n + 1);
          pairs.add(`${row}/${rankFor(m.map.current, e.layer, x, n)}`);
        }
      }
      expect(e.payloadBytesSent).toBe(pairs.size * c.hiddenSize * 4);
      expect(e.messagesSent).toBe(4); // one part per expert rank, empty ones included
    }
  });

  it("a silent expert rank fails the step with a clear error, not a hang", async () => {
    const bytes = models()[0]!.bytes;
    const m = await createLocalMoe(bytes, {
      attention: 2,
      experts: 2,
      silentExperts: [1],
      timeoutMs: 200,
      instance: { maxNumSeqs: 4 },
    });
    m.attention[0]!.engine.add("s", m.attention[0]!.tokenizer.encode("Hello"), {
      ...GREEDY,
      maxTokens: 2,
    });
    await expect(m.group.step()).rejects.toThrow(/no part from rank\(s\) 1 within 200 ms/);
    // a part that arrives after its gather timed out is dropped, not kept forever
    const moe = m.group.ranks[0]!.moe as DisaggMoe;
    moe.deliver({ kind: "e2a", step: 0, layer: 0, from: 1, bytes: new Uint8Array(4) });
    expect(moe.inbox.numLate).toBe(1);
    expect(moe.inbox.count("e2a", 0, 0)).toBe(0);
  });
});
