/**
 * The synthetic checkpoint, models/synthetic-moe.gguf: it is exactly what
 * scripts/make-synthetic-model.ts builds, it is a small Mixtral-style MoE that both our reader and
 * @huggingface/gguf parse, and its chat template and vocabulary are our own.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gguf as hfGguf } from "@huggingface/gguf";
import { Template } from "@huggingface/jinja";
import { describe, expect, it } from "vitest";
import {
  buildSyntheticModel,
  CHAT_TEMPLATE,
  renderChat,
  SYNTHETIC_MODEL_DIMS,
  SYNTHETIC_MODEL_FILE,
  spmTokenize,
  tokenizeLlama,
  trainVocab,
} from "../../scripts/make-synthetic-model.ts";
import { GgmlType, parseGguf, requireNumber } from "../../shared/gguf/gguf.ts";
import { HAVE_REFERENCE_MODELS, REPO_ROOT, readReferenceModel } from "../helpers/models.ts";

const MODEL_PATH = join(REPO_ROOT, SYNTHETIC_MODEL_FILE);
const FIXTURE_PATH = join(REPO_ROOT, "test/fixtures/synthetic-moe-llama-cpp.json");
const README_PROMPT = "Hello! Who are you?";

const bytes = new Uint8Array(readFileSync(MODEL_PATH));
const file = parseGguf(bytes);
const tokens = file.metadata.get("tokenizer.ggml.tokens") as string[];
const types = file.metadata.get("tokenizer.ggml.token_type") as number[];

interface LlamaCppFixture {
  provenance: string;
  model_sha256: string;
  cases: { name: string; prompt: string; prompt_ids: number[]; expected_ids: number[] }[];
}

describe("default model", () => {
  it("is byte-identical to a fresh build", () => {
    const fresh = buildSyntheticModel();
    expect(fresh.byteLength).toBe(bytes.byteLength);
    expect(Buffer.from(fresh).equals(Buffer.from(bytes))).toBe(true);
  });

  it("is a small Mixtral-style MoE on the llama architecture", () => {
    const d = SYNTHETIC_MODEL_DIMS;
    expect(bytes.byteLength).toBeLessThan(2 * 1024 * 1024);
    expect(file.metadata.get("general.architecture")).toBe("llama");
    expect(file.metadata.get("general.name")).toBe("flowserve-default-moe");
    expect(requireNumber(file, "general.file_type")).toBe(1);
    expect(requireNumber(file, "llama.expert_count")).toBeGreaterThanOrEqual(4);
    expect(requireNumber(file, "llama.expert_used_count")).toBe(2);
    expect(requireNumber(file, "llama.context_length")).toBeGreaterThanOrEqual(512);
    const heads = requireNumber(file, "llama.attention.head_count");
    const kvHeads = requireNumber(file, "llama.attention.head_count_kv");
    expect(kvHeads).toBeLessThan(heads);
    expect(requireNumber(file, "llama.rope.freq_base")).toBe(10000);
    expect(requireNumber(file, "llama.attention.layer_norm_rms_epsilon")).toBeCloseTo(1e-5, 10);

    const dim = d.hiddenSize;
    const kvDim = d.numKeyValueHeads * d.headDim;
    const ff = d.intermediateSize;
    const nExp = d.numExperts;
    const expected: Record<string, number[]> = {
      "token_embd.weight": [dim, d.vocabSize],
      "output_norm.weight": [dim],
      "output.weight": [dim, d.vocabSize],
    };
    for (let l = 0; l < d.numHiddenLayers; l++) {
      Object.assign(expected, {
        [`blk.${l}.attn_norm.weight`]: [dim],
        [`blk.${l}.attn_q.weight`]: [dim, dim],
        [`blk.${l}.attn_k.weight`]: [dim, kvDim],
        [`blk.${l}.attn_v.weight`]: [dim, kvDim],
        [`blk.${l}.attn_output.weight`]: [dim, dim],
        [`blk.${l}.ffn_norm.weight`]: [dim],
        [`blk.${l}.ffn_gate_inp.weight`]: [dim, nExp],
        [`blk.${l}.ffn_gate_exps.weight`]: [dim, ff, nExp],
        [`blk.${l}.ffn_up_exps.weight`]: [dim, ff, nExp],
        [`blk.${l}.ffn_down_exps.weight`]: [ff, dim, nExp],
      });
    }
    expect([...file.tensors.keys()].sort()).toEqual(Object.keys(expected).sort());
    for (const [name, t] of file.tensors) {
      expect(t.dims, name).toEqual(expected[name]);
      expect(t.type, name).toBe(name.endsWith("norm.weight") ? GgmlType.F32 : GgmlType.F16);
    }
  });

  it("parses with @huggingface/gguf", async () => {
    const parsed = await hfGguf(MODEL_PATH, { allowLocalFile: true });
    const metadata = parsed.metadata as unknown as Record<string, unknown>;
    const { tensorInfos } = parsed;
    expect(metadata["general.architecture"]).toBe("llama");
    expect(metadata["llama.expert_count"]).toBe(SYNTHETIC_MODEL_DIMS.numExperts);
    expect(metadata["tokenizer.ggml.tokens"]).toEqual(tokens);
    expect(metadata["tokenizer.chat_template"]).toBe(CHAT_TEMPLATE);
    expect(tensorInfos.map((t) => t.name).sort()).toEqual([...file.tensors.keys()].sort());
  });

  it("has a chat template that renders with @huggingface/jinja, without BOS", () => {
    expect(file.metadata.get("tokenizer.chat_template")).toBe(CHAT_TEMPLATE);
    const template = new Template(CHAT_TEMPLATE);
    const messages: [string, string][] = [
      ["system", "You are a helpful assistant."],
      ["user", README_PROMPT],
      ["assistant", "Hello! I am a small language model."],
    ];
    const asObjects = messages.map(([role, content]) => ({ role, content }));
    for (const addGenerationPrompt of [true, false]) {
      const text = template.render({
        messages: asObjects,
        add_generation_prompt: addGenerationPrompt,
        bos_token: "<s>",
        eos_token: "</s>",
      });
      expect(text).toBe(renderChat(messages, addGenerationPrompt));
      expect(text).not.toContain("<s>");
    }
    expect(template.render({ messages: [asObjects[1]], add_generation_prompt: true })).toBe(
      `<|user|>\n${README_PROMPT}</s>\n<|assistant|>\n`,
    );
  });

  it("has its own llama-style vocabulary", () => {
    expect(file.metadata.get("tokenizer.ggml.model")).toBe("llama");
    expect(tokens).toHaveLength(SYNTHETIC_MODEL_DIMS.vocabSize);
    expect(tokens.slice(0, 3)).toEqual(["<unk>", "<s>", "</s>"]);
    expect(types.slice(0, 3)).toEqual([2, 3, 3]);
    for (let b = 0; b < 256; b++) {
      expect(tokens[3 + b]).toBe(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
      expect(types[3 + b]).toBe(6);
    }
    expect(types.slice(259).every((t) => t === 1)).toBe(true);
    expect(new Set(tokens).size).toBe(tokens.length);
    expect(requireNumber(file, "tokenizer.ggml.bos_token_id")).toBe(1);
    expect(requireNumber(file, "tokenizer.ggml.eos_token_id")).toBe(2);
    expect(requireNumber(file, "tokenizer.ggml.unknown_token_id")).toBe(0);
    expect(file.metadata.get("tokenizer.ggml.add_bos_token")).toBe(true);
    expect(file.metadata.get("tokenizer.ggml.add_eos_token")).toBe(false);

    // Every piece is what llama.cpp's SPM merging makes of its own text.
    const vocab = trainVocab();
    expect(vocab.tokens).toEqual(tokens);
    for (let id = 259; id < tokens.length; id++) {
      expect(spmTokenize(vocab, tokens[id] as string)).toEqual([id]);
    }
    // The role markers are single pieces; only the newlines fall back to bytes.
    const ids = tokenizeLlama(vocab, renderChat([["user", README_PROMPT]], true));
    const pieces = ids.map((id) => tokens[id]);
    expect(pieces).toContain("\u2581<|user|>");
    expect(pieces).toContain("<|assistant|>");
    expect(ids.filter((id) => id >= 3 && id < 259).every((id) => id === 3 + 0x0a)).toBe(true);
    expect(ids.filter((id) => id === 1)).toHaveLength(1);
  });

  it.skipIf(!HAVE_REFERENCE_MODELS)("does not reuse the reference models' vocabulary", () => {
    const ref = readReferenceModel("stories260K-f32.gguf");
    const refTokens = parseGguf(ref).metadata.get("tokenizer.ggml.tokens") as string[];
    expect(tokens.slice(259)).not.toEqual(refTokens.slice(259, tokens.length));
    const shared = tokens.slice(259).filter((t, i) => refTokens[259 + i] === t);
    expect(shared.length).toBeLessThan(10);
  });

  it.skipIf(!existsSync(FIXTURE_PATH))("matches the llama.cpp fixture's model and prompts", () => {
    const fixture = JSON.parse(readFileSync(FIXTURE_PATH, "utf8")) as LlamaCppFixture;
    expect(fixture.provenance).toMatch(/llama\.cpp via node-llama-cpp/);
    // A rebuilt model needs a fresh fixture (scripts/fixtures/check-llama-cpp-load.mjs).
    expect(fixture.model_sha256).toBe(createHash("sha256").update(bytes).digest("hex"));
    const vocab = trainVocab();
    for (const c of fixture.cases) {
      expect(tokenizeLlama(vocab, c.prompt), c.name).toEqual(c.prompt_ids);
      expect(c.expected_ids.length, c.name).toBeGreaterThan(0);
    }
  });
});
