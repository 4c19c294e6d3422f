/**
 * Renders chat messages through the model's `tokenizer.chat_template` (Jinja, via
 * @huggingface/jinja), or through the documented default when the GGUF has none:
 *
 *   <role>: <content>\n ... then "assistant:" when a generation prompt is wanted
 *
 * (roles as sent: system, user, assistant, ...). The Template is parsed once per model.
 */
import { Template } from "@huggingface/jinja";
import type { ChatMessage } from "../shared/protocol/messages.ts";
import type { Tokenizer } from "../shared/tokenizer/tokenizer.ts";

export const DEFAULT_CHAT_TEMPLATE =
  "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}" +
  "{% if add_generation_prompt %}assistant:{% endif %}";

export interface ChatRenderer {
  render(messages: readonly ChatMessage[]): string;
}

/** The renderer for a model: its GGUF `tokenizer.chat_template`, with its BOS/EOS texts. */
export function createChatRenderer(
  template: string | undefined,
  tokenizer: Tokenizer,
): ChatRenderer {
  const t = new Template(template ?? DEFAULT_CHAT_TEMPLATE);
  const piece = (id: number | null) => (id === null ? "" : tokenizer.tokenPiece(id));
  const special = { bos: piece(tokenizer.bosId), eos: piece(tokenizer.eosId) };
  return {
    render(messages) {
      return t.render({
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: true,
        bos_token: special.bos,
        eos_token: special.eos,
      });
    },
  };
}
