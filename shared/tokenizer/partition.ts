/**
 * tokenizer_st_partition: special-token texts cut out of text before a tokenizer model sees it.
 * Pure.
 */

/**
 * Splits text into raw text fragments and special token ids (tokenizer_st_partition): for each
 * special token, longest first, every occurrence in every remaining text fragment is cut out.
 */
export function partitionSpecials(
  text: string,
  specials: readonly number[],
  pieces: readonly string[],
  attrs: Uint8Array,
  skipAttrs: number,
): (string | number)[] {
  let fragments: (string | number)[] = [text];
  // A token whose first two UTF-16 units do not occur in the text cannot occur: skipping it
  // saves a scan of the text per special token (thousands in some BPE vocabs: "[PAD123]").
  const units = new Uint8Array(65536);
  const pairs = new Set<number>();
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    units[c] = 1;
    if (i > 0) pairs.add(text.charCodeAt(i - 1) * 65536 + c);
  }
  for (const id of specials) {
    const attr = attrs[id] as number;
    if (attr & skipAttrs) continue;
    const piece = pieces[id] as string;
    const c0 = piece.charCodeAt(0);
    if (piece.length === 1 ? !units[c0] : !pairs.has(c0 * 65536 + piece.charCodeAt(1))) continue;
    let next: (string | number)[] | null = null;
    for (let f = 0; f < fragments.length; f++) {
      const frag = fragments[f] as string | number;
      const at = typeof frag === "string" ? frag.indexOf(piece) : -1;
      if (at < 0) {
        next?.push(frag);
        continue;
      }
      next ??= fragments.slice(0, f);
      let from = 0;
      for (let m = at; m >= 0; m = (frag as string).indexOf(piece, from)) {
        if (m > from) next.push((frag as string).slice(from, m));
        next.push(id);
        from = m + piece.length;
      }
      if (from < (frag as string).length) next.push((frag as string).slice(from));
    }
    if (next) fragments = next;
  }
  return fragments;
}
