/**
 * Token types and the attributes llama.cpp derives from them (llama-vocab.cpp), shared by the
 * SentencePiece and byte-level BPE tokenizers. Pure.
 */

/** GGUF `tokenizer.ggml.token_type` values (llama_token_type). */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

// llama_token_attr bits (the effective attributes llama.cpp derives from the token types).
export const ATTR_UNKNOWN = 1 << 0;
export const ATTR_UNUSED = 1 << 1;
export const ATTR_NORMAL = 1 << 2;
export const ATTR_CONTROL = 1 << 3;
export const ATTR_USER_DEFINED = 1 << 4;
export const ATTR_BYTE = 1 << 5;

export const TYPE_TO_ATTR: Record<number, number> = {
  [TokenType.NORMAL]: ATTR_NORMAL,
  [TokenType.UNKNOWN]: ATTR_UNKNOWN,
  [TokenType.CONTROL]: ATTR_CONTROL,
  [TokenType.USER_DEFINED]: ATTR_USER_DEFINED,
  [TokenType.UNUSED]: ATTR_UNUSED,
  [TokenType.BYTE]: ATTR_BYTE,
};

/**
 * Token texts llama.cpp treats as end-of-generation, forcing them to control type when a GGUF
 * marks them otherwise (llama-vocab.cpp "control-looking token"; model-specific exceptions for
 * gpt-oss, solar-open, gemma4 and paddleocr are not reproduced).
 */
export const EOG_TEXTS = new Set([
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|flush|>",
  "<|calls|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "</s>",
  "<|eom_id|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "[EOS]",
  "<|end_of_text|>",
  "<end_of_utterance>",
  "<eos>",
  "<turn|>",
  "<|tool_response>",
  "<｜end▁of▁sentence｜>",
  "[e~[",
]);

/** The FIM pad, repo and file-separator texts, which also end generation in llama.cpp. */
const FIM_EOG_LIST = [
  "<|fim_pad|>",
  "<fim-pad>",
  "<PAD>",
  "<|fim_repo|>",
  "<|repo_name|>",
  "<fim-repo>",
  "<REPO>",
  "<|file_sep|>",
];
export const FIM_EOG_TEXTS = new Set(FIM_EOG_LIST);

/**
 * Fill-in-the-middle token texts llama.cpp also forces to control type (its FIM_PRE, FIM_SUF,
 * FIM_MID, FIM_PAD, FIM_REP and FIM_SEP detection), so that plain text never matches them:
 * deepseek-coder's GGUF marks "<｜fim▁begin｜>" and its siblings user-defined. When a vocab has
 * several texts of one kind, llama.cpp forces only the first it finds; all are forced here.
 */
export const FIM_TEXTS = new Set([
  "<|fim_prefix|>",
  "<fim-prefix>",
  "<｜fim▁begin｜>",
  "<PRE>",
  "<|fim_suffix|>",
  "<fim-suffix>",
  "<｜fim▁hole｜>",
  "<SUF>",
  "<|fim_middle|>",
  "<fim-middle>",
  "<｜fim▁end｜>",
  "<MID>",
  ...FIM_EOG_LIST,
]);
