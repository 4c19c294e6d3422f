/**
 * Server-sent events for tests: `parseSse` splits an SSE body into its `data:` payloads (JSON
 * parsed, or the literal "[DONE]"); `readAll` drains a byte stream into text.
 */

/** Each event's data, in order. Comment lines and other fields are skipped; bad JSON throws. */
export function parseSse(text: string): (object | "[DONE]")[] {
  const out: (object | "[DONE]")[] = [];
  for (const block of text.replace(/\r\n?/g, "\n").split("\n\n")) {
    const data = block
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).replace(/^ /, ""));
    if (data.length === 0) continue;
    const payload = data.join("\n");
    out.push(payload === "[DONE]" ? "[DONE]" : (JSON.parse(payload) as object));
  }
  return out;
}

/** The whole stream as text. */
export async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  return text + decoder.decode();
}
