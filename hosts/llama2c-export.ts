/**
 * Writes a dense llama GGUF in llama2.c's checkpoint and tokenizer formats (run.c's legacy
 * version-0 layout), so that llama2.c's run.c can be timed on the same model in the same
 * benchmark run. Node-only; used by bench/engine.ts --runc.
 *
 * Checkpoint: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size negated when
 * the classifier is not shared, seq_len), then f32 arrays: token embedding, rms_att, wq, wk, wv,
 * wo, rms_ffn, w1 (gate), w2 (down), w3 (up), rms_final, two unused RoPE tables
 * (seq_len * head_size / 2 each), and the classifier. Every matrix is (out, in) row-major, the
 * layout GGUF stores. Tokenizer: int32 max_token_length, then per token f32 score, int32 length
 * and the bytes, with "▁" written as a space.
 */
import { writeFileSync } from "node:fs";
import { parseGguf } from "../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../shared/model/config.ts";
import { readTensorF32 } from "../shared/model/quant.ts";

export function exportLlama2c(
  bytes: Uint8Array,
  checkpointPath: string,
  tokenizerPath: string,
): void {
  const file = parseGguf(bytes);
  const c = modelConfigFromGguf(file);
  if (c.numExperts > 0 || c.architecture !== "llama")
    throw new Error("llama2.c runs dense llama models only");
  const t = (name: string) => readTensorF32(file, bytes, name);
  const layers = (suffix: string) => {
    const parts = Array.from({ length: c.numHiddenLayers }, (_, l) => t(`blk.${l}.${suffix}`));
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  };
  const header = new Int32Array([
    c.hiddenSize,
    c.intermediateSize,
    c.numHiddenLayers,
    c.numAttentionHeads,
    c.numKeyValueHeads,
    c.tieWordEmbeddings ? c.vocabSize : -c.vocabSize,
    c.maxPositionEmbeddings,
  ]);
  const rope = new Float32Array(c.maxPositionEmbeddings * (c.headDim / 2));
  const arrays: ArrayBufferView[] = [
    header,
    t("token_embd.weight"),
    layers("attn_norm.weight"),
    layers("attn_q.weight"),
    layers("attn_k.weight"),
    layers("attn_v.weight"),
    layers("attn_output.weight"),
    layers("ffn_norm.weight"),
    layers("ffn_gate.weight"),
    layers("ffn_down.weight"),
    layers("ffn_up.weight"),
    t("output_norm.weight"),
    rope,
    rope,
    ...(c.tieWordEmbeddings ? [] : [t("output.weight")]),
  ];
  writeFileSync(
    checkpointPath,
    Buffer.concat(arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))),
  );

  const tokens = file.metadata.get("tokenizer.ggml.tokens") as string[];
  const scores = file.metadata.get("tokenizer.ggml.scores") as number[];
  const pieces = tokens.map((p) => Buffer.from(p.replaceAll("\u2581", " "), "utf8"));
  const parts: Buffer[] = [
    Buffer.from(new Int32Array([Math.max(...pieces.map((p) => p.length))]).buffer),
  ];
  pieces.forEach((p, i) => {
    parts.push(Buffer.from(new Float32Array([scores[i] ?? 0]).buffer));
    parts.push(Buffer.from(new Int32Array([p.length]).buffer));
    parts.push(p);
  });
  writeFileSync(tokenizerPath, Buffer.concat(parts));
}
