/**
 * Input-token estimates used to size a reservation before the provider has counted anything. They must not
 * undercount: a UTF-8 byte count divided by 3 over-counts English (≈4 characters a token) and matches CJK
 * (3 bytes, ≈1 token, a character), so the hold covers the real cost and settle refunds the difference.
 */
const BYTES_PER_TOKEN = 3;
const PER_MESSAGE_OVERHEAD = 4;
/** A high-detail image costs OpenAI up to ~1,100 tokens and Anthropic up to ~1,600. */
const IMAGE_TOKENS = 1_600;

function textTokens(text: string): number {
  return Math.ceil(Buffer.byteLength(text, 'utf8') / BYTES_PER_TOKEN);
}

/** Tokens of a message `content`: a string, or an array of parts (text, images, tool results…). */
function contentTokens(content: unknown): number {
  if (typeof content === 'string') return textTokens(content);
  if (!Array.isArray(content)) return content === undefined || content === null ? 0 : textTokens(JSON.stringify(content));
  let total = 0;
  for (const part of content) {
    const p = part as Record<string, unknown>;
    const type = p?.type;
    if (type === 'text' && typeof p.text === 'string') total += textTokens(p.text);
    else if (type === 'image_url' || type === 'image' || type === 'input_image') total += IMAGE_TOKENS;
    else if (type === 'tool_result') total += contentTokens(p.content);
    else total += textTokens(JSON.stringify(part));
  }
  return total;
}

function messagesTokens(messages: readonly Record<string, unknown>[]): number {
  let total = 3;
  for (const m of messages) {
    total += PER_MESSAGE_OVERHEAD + contentTokens(m.content);
    if (m.tool_calls !== undefined) total += textTokens(JSON.stringify(m.tool_calls));
    if (typeof m.name === 'string') total += textTokens(m.name);
  }
  return total;
}

/** Estimated input tokens of an OpenAI chat-completions body. */
export function estimateChatInputTokens(body: { messages: readonly Record<string, unknown>[]; tools?: unknown }): number {
  return messagesTokens(body.messages) + (body.tools === undefined ? 0 : textTokens(JSON.stringify(body.tools)));
}

/** Estimated input tokens of an Anthropic Messages body. */
export function estimateMessagesInputTokens(body: {
  messages: readonly Record<string, unknown>[];
  system?: unknown;
  tools?: unknown;
}): number {
  return (
    messagesTokens(body.messages) +
    (body.system === undefined ? 0 : contentTokens(body.system)) +
    (body.tools === undefined ? 0 : textTokens(JSON.stringify(body.tools)))
  );
}

/** Estimated input tokens of an embeddings `input` (text, texts, or pre-tokenized arrays). */
export function estimateEmbeddingInputTokens(input: unknown): number {
  if (typeof input === 'string') return textTokens(input);
  if (!Array.isArray(input)) return 0;
  let total = 0;
  for (const item of input) {
    if (typeof item === 'string') total += textTokens(item);
    else if (typeof item === 'number') total += 1;
    else if (Array.isArray(item)) total += item.length;
  }
  return total;
}
