/**
 * Byte-level BPE pre-tokenizers: the regex sets llama.cpp selects by GGUF `tokenizer.ggml.pre`
 * (llm_tokenizer_bpe, unicode_regex_split), applied the way llama.cpp applies them. Pure.
 *
 * Each regex of a set splits every piece left by the previous one into the matches and the text
 * between matches (both kept), so the pieces always concatenate to the input. A regex sees only
 * its piece: `$` and lookaheads stop at the piece's end.
 *
 * Character classes follow llama.cpp, not the JS engine's Unicode tables, where the two differ:
 * - A regex that uses \p{N} \p{L} \p{P} \p{M} \p{S} runs on a "collapsed" copy of the text, one
 *   character per code point: ASCII stays, other whitespace becomes \v, other code points become
 *   one marker per category (number, letter, punctuation, mark, symbol, anything else), and each
 *   \p{X} becomes [marker + the ASCII members of X]. So \p{P} also covers "ASCII punctuation" as
 *   llama.cpp lists it, and a non-ASCII code point is whitespace exactly when llama.cpp says so.
 * - A regex without categories runs on the text itself (code points: the `u` flag) with
 *   non-ASCII whitespace replaced by \v.
 * - \s is llama.cpp's (C locale) [\t\n\v\f\r ] in both: JS's \s would also match U+FEFF.
 */

/** llama.cpp's GPT-2 regex; llama.cpp runs an equivalent hand-written scanner for it. */
const GPT2 = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`;

/** Llama 3's regex (llama.cpp runs an equivalent hand-written scanner); Qwen2's splits digits. */
const LLAMA3 = String.raw`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const QWEN2 = LLAMA3.replace(String.raw`\p{N}{1,3}`, String.raw`\p{N}`);

const DEFAULT = [String.raw`[\p{P}\$\+<=>\^~\|]+`, GPT2, String.raw`\p{N}+`, "[0-9][0-9][0-9]"];
const STARCODER = [String.raw`\p{N}`, GPT2];

/** Regex sets by `tokenizer.ggml.pre`, with the names llama.cpp maps onto the same set. */
const REGEX_SETS: Record<string, readonly string[]> = {
  default: DEFAULT,
  llama3: [LLAMA3],
  "llama-v3": [LLAMA3],
  "llama-bpe": [LLAMA3],
  falcon3: [LLAMA3],
  dbrx: [LLAMA3],
  "smaug-bpe": [LLAMA3],
  qwen2: [QWEN2],
  "deepseek-r1-qwen": [QWEN2],
  stablelm2: [QWEN2],
  "gpt-2": [GPT2],
  mpt: [GPT2],
  "phi-2": [GPT2],
  "roberta-bpe": [GPT2],
  olmo: [GPT2],
  jais: [GPT2],
  falcon: [String.raw`[\p{P}\$\+<=>\^~\|\`]+`, GPT2, "[0-9][0-9][0-9]"],
  starcoder: STARCODER,
  refact: STARCODER,
  "command-r": STARCODER,
  smollm: STARCODER,
  codeshell: STARCODER,
  exaone: STARCODER,
  "minerva-7b": STARCODER,
  "deepseek-coder": [
    "[\r\n]",
    String.raw`\s?\p{L}+`,
    String.raw`\s?\p{P}+`,
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    String.raw`\p{N}`,
  ],
  // Letters, ASCII and full-width punctuation, trailing whitespace, CJK and Hangul, numbers.
  "deepseek-llm": [
    "[\r\n]",
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
    "\\p{N}+",
  ],
};

/**
 * The Llama 3 family: llama.cpp emits a word that is a token as that token without merging
 * (`ignore_merges`) and adds BOS by default.
 */
const LLAMA3_FAMILY = new Set(["llama3", "llama-v3", "llama-bpe", "falcon3"]);

/** The `tokenizer.ggml.pre` values implemented here (a GGUF without the key uses "default"). */
export const PRE_TOKENIZER_NAMES: readonly string[] = Object.keys(REGEX_SETS);

const WS = String.raw`\t\n\v\f\r `;
// llama.cpp's whitespace code points beyond ASCII (unicode_set_whitespace).
const NON_ASCII_WS = /[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/g;
const WS_MARK = "\v";
const OTHER_MARK = "\xd0";
/** Category -> [collapsed marker, its ASCII members as a class body] (unicode.cpp k_ucat_*). */
const CATEGORIES: Record<string, [string, string]> = {
  N: ["\xd1", "0-9"],
  L: ["\xd2", "A-Za-z"],
  P: ["\xd3", String.raw`!-#%-*,-/:-;?-@\[-\]_{}`],
  M: ["\xd4", ""],
  S: ["\xd5", "$+<=>^`|"],
};
const CATEGORY_OF = /(\p{N})|(\p{L})|(\p{P})|(\p{M})|(\p{S})/u;
const MARKS = [OTHER_MARK, "\xd1", "\xd2", "\xd3", "\xd4", "\xd5"];

interface Splitter {
  regex: RegExp;
  collapsed: boolean;
}

/** Rewrites one llama.cpp regex for the collapsed or the plain text (see the module header). */
function compile(source: string): Splitter {
  const collapsed = /\\p\{[NLPMS]\}/.test(source);
  let out = "";
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i] as string;
    if (c === "\\") {
      const next = source[i + 1];
      const category = /^\\p\{([NLPMS])\}/.exec(source.slice(i, i + 5));
      if (category) {
        const [mark, ascii] = CATEGORIES[category[1] as string] as [string, string];
        out += inClass ? mark + ascii : `[${mark}${ascii}]`;
        i += 4;
      } else if (next === "s") {
        out += inClass ? WS : `[${WS}]`;
        i++;
      } else if (next === "S") {
        if (inClass) throw new Error(`pre-tokenizer regex ${source}: \\S inside a class`);
        out += `[^${WS}]`;
        i++;
      } else {
        out += c + (next ?? "");
        i++;
      }
      continue;
    }
    if (c === "[") inClass = true;
    else if (c === "]") inClass = false;
    out += c;
  }
  return { regex: new RegExp(out, collapsed ? "g" : "gu"), collapsed };
}

const compiled = new Map<string, Splitter[]>();
// Collapsed marker per non-ASCII code point, filled on first sight.
const markCache = new Map<number, string>();

function markOf(cp: number): string {
  let mark = markCache.get(cp);
  if (mark === undefined) {
    const ch = String.fromCodePoint(cp);
    NON_ASCII_WS.lastIndex = 0;
    if (NON_ASCII_WS.test(ch)) mark = WS_MARK;
    else {
      const m = CATEGORY_OF.exec(ch);
      mark = MARKS[m ? m.findIndex((g, i) => i > 0 && g !== undefined) : 0] as string;
    }
    markCache.set(cp, mark);
  }
  return mark;
}

/** Splits text into words, as llama.cpp's unicode_regex_split before byte encoding. */
export class PreTokenizer {
  private readonly splitters: Splitter[];
  /** A word that is a token is that token, unmerged (llama.cpp's `ignore_merges`). */
  readonly ignoreMerges: boolean;
  /** llama.cpp's add_bos default for this pre-tokenizer's vocabularies. */
  readonly addBosByDefault: boolean;

  /** @throws for a `tokenizer.ggml.pre` that is not implemented here. */
  constructor(readonly name: string) {
    const set = REGEX_SETS[name];
    if (!set) {
      throw new Error(
        `unsupported pre-tokenizer ${JSON.stringify(name)} (tokenizer.ggml.pre); ` +
          `implemented: ${PRE_TOKENIZER_NAMES.join(", ")}`,
      );
    }
    let splitters = compiled.get(name);
    if (!splitters) {
      splitters = set.map(compile);
      compiled.set(name, splitters);
    }
    this.splitters = splitters;
    this.ignoreMerges = LLAMA3_FAMILY.has(name);
    this.addBosByDefault = LLAMA3_FAMILY.has(name);
  }

  /** The words of `text` (well-formed UTF-16), in order; they concatenate to `text`. */
  split(text: string): string[] {
    if (text.length === 0) return [];
    // Piece boundaries as UTF-16 offsets; code point index <-> UTF-16 offset maps for the
    // collapsed text, which has one character per code point.
    let bounds = [0, text.length];
    let plain: string | null = null;
    let collapsed: string | null = null;
    let cpStart: Int32Array | null = null;
    let cpIndex: Int32Array | null = null;
    for (const { regex, collapsed: useCollapsed } of this.splitters) {
      let subject: string;
      if (useCollapsed) {
        if (collapsed === null) {
          cpStart = new Int32Array(text.length + 1);
          cpIndex = new Int32Array(text.length + 1);
          let s = "";
          let n = 0;
          for (let i = 0; i < text.length; n++) {
            const cp = text.codePointAt(i) as number;
            cpStart[n] = i;
            cpIndex[i] = n;
            s += cp < 0x80 ? String.fromCharCode(cp) : markOf(cp);
            i += cp > 0xffff ? 2 : 1;
          }
          cpStart[n] = text.length;
          cpIndex[text.length] = n;
          collapsed = s;
        }
        subject = collapsed;
      } else {
        plain ??= text.replace(NON_ASCII_WS, WS_MARK);
        subject = plain;
      }
      const toSubject = (u: number): number => (useCollapsed ? (cpIndex as Int32Array)[u] : u);
      const toText = (k: number): number => (useCollapsed ? (cpStart as Int32Array)[k] : k);
      const next = [0];
      for (let b = 1; b < bounds.length; b++) {
        const from = toSubject(bounds[b - 1] as number) as number;
        const to = toSubject(bounds[b] as number) as number;
        const piece = subject.slice(from, to);
        regex.lastIndex = 0;
        for (let m = regex.exec(piece); m !== null; m = regex.exec(piece)) {
          if (m[0].length === 0) {
            regex.lastIndex++;
            continue;
          }
          const at = from + m.index;
          if (toText(at) !== next[next.length - 1]) next.push(toText(at) as number);
          next.push(toText(at + m[0].length) as number);
        }
        if (next[next.length - 1] !== bounds[b]) next.push(bounds[b] as number);
      }
      bounds = next;
    }
    const words: string[] = new Array(bounds.length - 1);
    for (let b = 1; b < bounds.length; b++) {
      words[b - 1] = text.slice(bounds[b - 1] as number, bounds[b] as number);
    }
    return words;
  }
}
