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

export const DEFAULT_CHAT_TEMPLATE =
  "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}" +
  "{% if add_generation_prompt %}assistant:{% endif %}";

export interface ChatRenderer {
  render(messages: readonly ChatMessage[]): string;
}

export function createChatRenderer(
  template: string | undefined,
  special: { bos: string; eos: string },
): ChatRenderer {
  const t = new Template(template ?? DEFAULT_CHAT_TEMPLATE);
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
