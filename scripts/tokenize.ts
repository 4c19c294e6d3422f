/**
 * Tokenizer CLI: reads UTF-8 text from standard input and prints its token ids as JSON on the
 * last line, with the model's own tokenizer (SentencePiece or byte-level BPE, from the GGUF
 * metadata). Works on vocab-only GGUF files.
 *
 *   echo -n "Hello world" | npm run -s tokenize -- --model PATH [--no-bos] --json
 *
 * Special-token text ("<s>", "<|endoftext|>") is tokenized as plain text. BOS is added where the
 * vocabulary asks for it (tokenizer.ggml.add_bos_token or the model's default), unless
 * --no-bos; EOS likewise (add_eos_token). Without --json the pieces are printed first, one per
 * line, as "id -> 'text'".
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseGguf } from "../shared/gguf/gguf.ts";
import { Tokenizer } from "../shared/tokenizer/tokenizer.ts";

function fail(msg: string): never {
  console.error(`error: ${msg}`);
  process.exit(1);
}

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    "no-bos": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  },
  strict: true,
});
if (!values.model) fail("--model PATH is required");

let tokenizer: Tokenizer;
try {
  const file = parseGguf(new Uint8Array(readFileSync(values.model)), { headerOnly: true });
  tokenizer = Tokenizer.fromGguf(file.metadata);
} catch (e) {
  fail(`cannot read the tokenizer of ${values.model}: ${(e as Error).message}`);
}

// a leading U+FEFF is kept: llama.cpp tokenizes it like any other text
const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(readFileSync(0));
const ids = tokenizer.encode(text, {
  addBos: tokenizer.addBos && !values["no-bos"],
  parseSpecial: false,
});
if (!values.json) {
  for (const id of ids) console.log(`${id} -> ${JSON.stringify(tokenizer.tokenText(id))}`);
}
console.log(JSON.stringify({ ids }));
