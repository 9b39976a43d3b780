/**
 * Anthropic Messages answers written from a chat-completions answer of any chat provider: the `message`
 * object, and its event stream in the order Anthropic sends it:
 *
 *   message_start → (content_block_start → content_block_delta… → content_block_stop)… → message_delta → message_stop
 *
 * Text arrives as `text_delta`, tool arguments as `input_json_delta`. The chat stream reports usage only at
 * its end, so `message_start` carries zero counts and the final `message_delta` carries every count
 * (`input_tokens`, `output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`), which the
 * Anthropic SDKs take as the message's usage.
 */
import { UpstreamError } from '../../core/errors';
import type { TokenUsage } from '../../core/types';
import { usageFromOpenAi } from '../openai/chat-format';
import { encodeSseJson, type SseEvent } from '../sse';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Identity of one translated message. */
export interface MessageIdentity {
  /** `msg_…`. */
  readonly id: string;
  readonly model: string;
}

/** Chat `finish_reason` → Anthropic `stop_reason`. */
export const CHAT_STOP_REASONS: Readonly<Record<string, string>> = {
  stop: 'end_turn',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  function_call: 'tool_use',
  content_filter: 'refusal',
};

function stopReason(finishReason: unknown, refused: boolean): string {
  if (refused) return 'refusal';
  return (typeof finishReason === 'string' && CHAT_STOP_REASONS[finishReason]) || 'end_turn';
}

/** {@link TokenUsage} as Anthropic `usage`: Anthropic's `input_tokens` excludes cache reads and writes. */
export function usageToAnthropic(usage: TokenUsage | undefined): Record<string, number> {
  const u = usage ?? { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 };
  return {
    input_tokens: Math.max(0, u.inputTokens - u.cachedInputTokens - u.cacheWriteTokens),
    cache_creation_input_tokens: u.cacheWriteTokens,
    cache_read_input_tokens: u.cachedInputTokens,
    output_tokens: u.outputTokens,
  };
}

/** Parses tool arguments as JSON; arguments that are not a JSON object are kept as `{}`, never invented. */
function toolInput(args: unknown): Record<string, unknown> {
  if (typeof args !== 'string' || args.trim() === '') return {};
  try {
    const parsed: unknown = JSON.parse(args);
    return isRecord(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

/** Translates a non-stream `chat.completion` into an Anthropic `message`. */
export function chatCompletionToMessage(completion: unknown, identity: MessageIdentity, usage: TokenUsage | undefined): Record<string, unknown> {
  const c = isRecord(completion) ? completion : {};
  const choice = Array.isArray(c.choices) && isRecord(c.choices[0]) ? c.choices[0] : undefined;
  if (!choice || !isRecord(choice.message)) {
    throw new UpstreamError('the upstream answered without a message', { status: 502 });
  }
  const message = choice.message;
  const content: Record<string, unknown>[] = [];
  const refusal = typeof message.refusal === 'string' && message.refusal !== '' ? message.refusal : undefined;
  if (typeof message.content === 'string' && message.content !== '') content.push({ type: 'text', text: message.content });
  if (refusal) content.push({ type: 'text', text: refusal });
  if (Array.isArray(message.tool_calls)) {
    for (const call of message.tool_calls) {
      if (!isRecord(call) || !isRecord(call.function)) continue;
      content.push({ type: 'tool_use', id: String(call.id), name: String(call.function.name), input: toolInput(call.function.arguments) });
    }
  }
  return {
    id: identity.id,
    type: 'message',
    role: 'assistant',
    model: identity.model,
    content,
    stop_reason: stopReason(choice.finish_reason, refusal !== undefined),
    stop_sequence: null,
    usage: usageToAnthropic(usage),
  };
}

/** An OpenAI stream error as the `error` of Anthropic's `error` event. */
function anthropicStreamError(error: Record<string, unknown>): { type: string; message: string } {
  const kind = `${String(error.type ?? '')} ${String(error.code ?? '')}`;
  const type = /rate_limit/.test(kind) ? 'rate_limit_error' : /invalid_request|context_length/.test(kind) ? 'invalid_request_error' : 'api_error';
  return { type, message: typeof error.message === 'string' && error.message !== '' ? error.message : 'The provider failed while streaming.' };
}

/**
 * Translates a `chat.completion.chunk` event stream (ending `data: [DONE]`, with a usage chunk before it)
 * into Anthropic's event stream. A block opens at its first delta and closes when another opens or the
 * answer ends. A chat stream that ends without `[DONE]` ends here without `message_delta` and
 * `message_stop`, as the upstream did, so the caller sees an incomplete message; an OpenAI error chunk
 * becomes Anthropic's `error` event and ends the stream.
 */
export async function* chatChunksToMessageEvents(
  chunks: AsyncIterable<SseEvent>,
  options: { readonly identity: MessageIdentity },
): AsyncGenerator<Uint8Array> {
  const emit = (type: string, data: Record<string, unknown> = {}): Uint8Array => encodeSseJson({ type, ...data }, { event: type });
  let index = -1;
  let open: { kind: 'text' } | { kind: 'tool'; chatIndex: number } | undefined;
  const toolBlocks = new Map<number, number>();
  let finishReason: unknown;
  let refused = false;
  let usage: TokenUsage | undefined;

  yield emit('message_start', {
    message: {
      id: options.identity.id,
      type: 'message',
      role: 'assistant',
      model: options.identity.model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: usageToAnthropic(undefined),
    },
  });
  yield emit('ping');

  function* close(): Generator<Uint8Array> {
    if (!open) return;
    open = undefined;
    yield emit('content_block_stop', { index });
  }
  function* openText(): Generator<Uint8Array> {
    if (open?.kind === 'text') return;
    yield* close();
    index += 1;
    open = { kind: 'text' };
    yield emit('content_block_start', { index, content_block: { type: 'text', text: '' } });
  }

  for await (const event of chunks) {
    if (event.data === '[DONE]') {
      yield* close();
      yield emit('message_delta', {
        delta: { stop_reason: stopReason(finishReason, refused), stop_sequence: null },
        usage: usageToAnthropic(usage),
      });
      yield emit('message_stop');
      return;
    }
    let chunk: Record<string, unknown>;
    try {
      chunk = JSON.parse(event.data) as Record<string, unknown>;
    } catch {
      continue;
    }
    // OpenAI reports a failure mid-stream as a chunk holding only `error`: Anthropic's own `error` event.
    if (isRecord(chunk.error) && !Array.isArray(chunk.choices)) {
      yield emit('error', { error: anthropicStreamError(chunk.error) });
      return;
    }
    if (isRecord(chunk.usage)) usage = usageFromOpenAi(chunk.usage);
    const choice = Array.isArray(chunk.choices) && isRecord(chunk.choices[0]) ? chunk.choices[0] : undefined;
    if (!choice) continue;
    if (choice.finish_reason !== null && choice.finish_reason !== undefined) finishReason = choice.finish_reason;
    const delta = isRecord(choice.delta) ? choice.delta : {};
    const texts = [delta.content, delta.refusal].filter((t): t is string => typeof t === 'string' && t !== '');
    if (typeof delta.refusal === 'string' && delta.refusal !== '') refused = true;
    for (const text of texts) {
      yield* openText();
      yield emit('content_block_delta', { index, delta: { type: 'text_delta', text } });
    }
    if (!Array.isArray(delta.tool_calls)) continue;
    for (const raw of delta.tool_calls) {
      if (!isRecord(raw)) continue;
      const chatIndex = typeof raw.index === 'number' ? raw.index : 0;
      const fn = isRecord(raw.function) ? raw.function : {};
      if (!toolBlocks.has(chatIndex)) {
        yield* close();
        index += 1;
        toolBlocks.set(chatIndex, index);
        open = { kind: 'tool', chatIndex };
        const id = typeof raw.id === 'string' ? raw.id : `toolu_${options.identity.id.slice(4)}_${index}`;
        yield emit('content_block_start', { index, content_block: { type: 'tool_use', id, name: typeof fn.name === 'string' ? fn.name : '', input: {} } });
      }
      if (typeof fn.arguments === 'string' && fn.arguments !== '') {
        // Chat streams interleave parallel calls only by index; Anthropic's blocks are sequential, so a
        // delta for an already closed call cannot be placed and is an upstream fault.
        if (open?.kind !== 'tool' || open.chatIndex !== chatIndex) {
          throw new UpstreamError('the upstream interleaved the arguments of parallel tool calls', { status: 502 });
        }
        yield emit('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: fn.arguments } });
      }
    }
  }
}
