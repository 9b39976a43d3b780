/**
 * OpenAI chat completions ⇄ Anthropic Messages: the request going up, the message and the event stream
 * coming back. Scalar parameters map through {@link ANTHROPIC_PARAMS}; stop reasons through
 * {@link ANTHROPIC_FINISH_REASONS}.
 */
import { UpstreamError } from '../../core/errors';
import type { TokenUsage } from '../../core/types';
import type { ChatCompletionBody } from '../contract';
import {
  ChatChunkEncoder,
  chatCompletionBody,
  type ChatAnswerIdentity,
  type ChatFinishReason,
  type ChatToolCall,
} from '../openai/chat-format';
import {
  mapParams,
  readChatRequest,
  readStructuredOutput,
  stopSequences,
  type StructuredOutput,
  type ChatPart,
  type ChatToolChoice,
  type ParamRule,
} from '../openai/chat-request';
import { encodeSseJson, type SseEvent } from '../sse';
import { redactSecrets } from '../upstream-http';
import { AnthropicStreamUsage, usageFromAnthropic } from './usage';

/** OpenAI parameter → Anthropic parameter. */
export const ANTHROPIC_PARAMS: readonly ParamRule[] = [
  // OpenAI accepts 0–2, Anthropic 0–1.
  { from: 'temperature', to: 'temperature', convert: (v) => (typeof v === 'number' ? Math.min(v, 1) : v) },
  { from: 'top_p', to: 'top_p' },
  { from: 'stop', to: 'stop_sequences', convert: stopSequences },
  { from: 'user', to: 'metadata', convert: (v) => (typeof v === 'string' ? { user_id: v } : undefined) },
  { from: 'stream', to: 'stream', convert: (v) => (v === true ? true : undefined) },
];

/** Anthropic `stop_reason` → OpenAI `finish_reason`; anything else is `stop`. */
export const ANTHROPIC_FINISH_REASONS: Readonly<Record<string, ChatFinishReason>> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  pause_turn: 'stop',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
  tool_use: 'tool_calls',
  refusal: 'content_filter',
};

function finishReason(stopReason: unknown): ChatFinishReason {
  return (typeof stopReason === 'string' && ANTHROPIC_FINISH_REASONS[stopReason]) || 'stop';
}

function renderPart(part: ChatPart): Record<string, unknown> {
  switch (part.type) {
    case 'text':
      return { type: 'text', text: part.text };
    case 'image':
      return {
        type: 'image',
        source:
          part.source.kind === 'base64'
            ? { type: 'base64', media_type: part.source.mediaType, data: part.source.data }
            : { type: 'url', url: part.source.url },
      };
    case 'tool_call':
      return { type: 'tool_use', id: part.id, name: part.name, input: part.input };
    case 'tool_result':
      return { type: 'tool_result', tool_use_id: part.toolCallId, content: part.text };
  }
}

const TOOL_CHOICES: Readonly<Record<ChatToolChoice['type'], (c: ChatToolChoice) => Record<string, unknown>>> = {
  auto: () => ({ type: 'auto' }),
  any: () => ({ type: 'any' }),
  none: () => ({ type: 'none' }),
  tool: (c) => ({ type: 'tool', name: c.type === 'tool' ? c.name : '' }),
};

/** Translates an OpenAI chat request into an Anthropic Messages request. */
export function toAnthropicRequest(
  body: ChatCompletionBody,
  options: { readonly defaultMaxTokens: number },
): Record<string, unknown> {
  const request = readChatRequest(body, options);
  const out: Record<string, unknown> = {
    model: body.model,
    max_tokens: request.maxTokens,
    messages: request.turns.map((turn) => ({ role: turn.role, content: turn.parts.map(renderPart) })),
    ...mapParams(body, ANTHROPIC_PARAMS),
  };
  if (request.system.length > 0) out.system = request.system.join('\n\n');
  const structured = readStructuredOutput(body);
  if (request.tools.length > 0 || structured) {
    out.tools = [
      ...request.tools.map((tool) => ({
        name: tool.name,
        ...(tool.description ? { description: tool.description } : {}),
        input_schema: tool.parameters,
      })),
      ...(structured ? [{ name: structured.toolName, description: structured.description, input_schema: structured.schema }] : []),
    ];
    let choice = request.toolChoice ? TOOL_CHOICES[request.toolChoice.type](request.toolChoice) : undefined;
    // Structured output: the answer must be a tool call, the schema's own unless the caller named another.
    if (structured && choice?.type !== 'tool') {
      choice = request.tools.length > 0 && choice?.type !== 'none' ? { type: 'any' } : { type: 'tool', name: structured.toolName };
    }
    if (body.parallel_tool_calls === false && choice?.type !== 'none') {
      out.tool_choice = { ...(choice ?? { type: 'auto' }), disable_parallel_tool_use: true };
    } else if (choice) {
      out.tool_choice = choice;
    }
  }
  return out;
}

/** Translates an Anthropic message into an OpenAI `chat.completion` body. */
export function fromAnthropicMessage(
  message: unknown,
  identity: ChatAnswerIdentity,
  structured?: StructuredOutput,
): { body: Record<string, unknown>; usage: TokenUsage | undefined } {
  const m = (typeof message === 'object' && message !== null ? message : {}) as Record<string, unknown>;
  if (!Array.isArray(m.content)) {
    throw new UpstreamError('upstream anthropic answered without message content', { status: 502 });
  }
  const texts: string[] = [];
  const toolCalls: ChatToolCall[] = [];
  for (const block of m.content as Record<string, unknown>[]) {
    if (block?.type === 'text' && typeof block.text === 'string') texts.push(block.text);
    if (block?.type === 'tool_use' && structured && block.name === structured.toolName) {
      texts.push(JSON.stringify(block.input ?? {}));
    } else if (block?.type === 'tool_use' && typeof block.id === 'string' && typeof block.name === 'string') {
      toolCalls.push({ id: block.id, name: block.name, arguments: JSON.stringify(block.input ?? {}) });
    }
  }
  const usage = usageFromAnthropic(m.usage);
  const body = chatCompletionBody(identity, {
    text: texts.length === 0 && toolCalls.length > 0 ? null : texts.join(''),
    toolCalls,
    finishReason: structured && m.stop_reason === 'tool_use' && toolCalls.length === 0 ? 'stop' : finishReason(m.stop_reason),
    usage: usage ?? { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 },
  });
  return { body, usage };
}

/**
 * Translates an Anthropic Messages event stream into OpenAI `chat.completion.chunk` events ending with
 * `data: [DONE]`, with a usage chunk before it when `includeUsage`. `usage` receives every update.
 * An `error` event becomes an OpenAI error chunk ending the stream; a stream that ends before `message_stop` is a cut
 * answer: it ends with an OpenAI error chunk, not `[DONE]` (`onCut` is called, and the usage is only what
 * a `message_delta` reported, see AnthropicStreamUsage.ofCutStream).
 */
export async function* anthropicStreamToChatChunks(
  events: AsyncIterable<SseEvent>,
  options: {
    readonly identity: ChatAnswerIdentity;
    readonly includeUsage: boolean;
    readonly onUsage: (usage: TokenUsage | undefined) => void;
    /** The structured-output tool, whose input streams as the message's text. */
    readonly structured?: StructuredOutput;
    /** Told when the stream ended before `message_stop` (a cut answer). */
    readonly onCut?: () => void;
  },
): AsyncGenerator<Uint8Array> {
  const encoder = new ChatChunkEncoder(options.identity);
  const usage = new AnthropicStreamUsage();
  let seen = 0;
  /** Content-block indexes of the structured-output tool. */
  const jsonBlocks = new Set<number>();
  /** Anthropic content-block index → OpenAI tool-call index. */
  const toolIndex = new Map<number, number>();

  for await (const sse of events) {
    seen++;
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(sse.data) as Record<string, unknown>;
    } catch {
      continue;
    }
    usage.observe(event);
    options.onUsage(usage.current());
    const block = (event.content_block ?? {}) as Record<string, unknown>;
    const delta = (event.delta ?? {}) as Record<string, unknown>;
    const index = typeof event.index === 'number' ? event.index : -1;

    switch (event.type) {
      case 'message_start':
        yield encoder.start();
        break;
      case 'content_block_start':
        if (block.type === 'tool_use' && options.structured && block.name === options.structured.toolName) {
          jsonBlocks.add(index);
        } else if (block.type === 'tool_use') {
          toolIndex.set(index, toolIndex.size);
          yield encoder.toolCallStart(toolIndex.size - 1, { id: String(block.id), name: String(block.name) });
        } else if (block.type === 'text' && typeof block.text === 'string' && block.text !== '') {
          yield encoder.text(block.text);
        }
        break;
      case 'content_block_delta':
        if (delta.type === 'text_delta' && typeof delta.text === 'string') {
          yield encoder.text(delta.text);
        } else if (delta.type === 'input_json_delta' && jsonBlocks.has(index)) {
          if (typeof delta.partial_json === 'string' && delta.partial_json !== '') yield encoder.text(delta.partial_json);
        } else if (delta.type === 'input_json_delta' && typeof delta.partial_json === 'string') {
          const at = toolIndex.get(index);
          if (at !== undefined && delta.partial_json !== '') yield encoder.toolCallArguments(at, delta.partial_json);
        }
        break;
      case 'message_delta':
        if (delta.stop_reason !== undefined && delta.stop_reason !== null) {
          yield encoder.finish(jsonBlocks.size > 0 && delta.stop_reason === 'tool_use' && toolIndex.size === 0 ? 'stop' : finishReason(delta.stop_reason));
        }
        break;
      case 'message_stop': {
        const final = usage.current();
        if (options.includeUsage && final) yield encoder.usage(final);
        yield encoder.done();
        return;
      }
      case 'error': {
        // OpenAI's own report of a failure mid-stream, an error chunk (and no [DONE]), carrying Anthropic's error
        // type (`overloaded_error` stays one: core/stream-errors.ts gives it its status, 529).
        const error = (event.error ?? {}) as Record<string, unknown>;
        const detail = typeof error.message === 'string' ? `: ${redactSecrets(error.message, []).slice(0, 500)}` : '';
        const type = typeof error.type === 'string' && /^[a-z_]{1,64}$/.test(error.type) ? error.type : 'api_error';
        yield encodeSseJson({ error: { message: `upstream anthropic failed mid-stream${detail}`, type, param: null, code: type } });
        return;
      }
      default:
        break;
    }
  }
  // Closed cleanly before message_stop: a cut answer, reported as OpenAI reports a failure mid-stream.
  options.onUsage(usage.ofCutStream());
  options.onCut?.();
  const message = seen === 0 ? 'upstream anthropic answered an empty stream' : 'upstream anthropic ended the stream before message_stop (a cut answer)';
  yield encodeSseJson({ error: { message, type: 'server_error', param: null, code: seen === 0 ? 'upstream_empty_answer' : 'upstream_stream_cut' } });
}
