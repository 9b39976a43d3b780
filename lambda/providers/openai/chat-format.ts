/**
 * OpenAI chat-completions response shapes, for the providers that translate other upstreams into them
 * (anthropic, bedrock, mock), and the conversion between OpenAI usage and {@link TokenUsage}.
 */
import type { TokenUsage } from '../../core/types';
import { encodeSse, encodeSseJson } from '../sse';

/** OpenAI `finish_reason` values. */
export type ChatFinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter';

/** A complete tool call in an assistant message. */
export interface ChatToolCall {
  readonly id: string;
  readonly name: string;
  /** JSON text, as OpenAI sends `function.arguments`. */
  readonly arguments: string;
}

/** OpenAI's `usage` object. */
export interface OpenAiUsageJson {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  readonly prompt_tokens_details: { readonly cached_tokens: number };
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

/**
 * Reads an OpenAI `usage` object (chat or embeddings). `prompt_tokens` already includes the cached tokens.
 * Undefined when there is no usage object.
 */
export function usageFromOpenAi(usage: unknown): TokenUsage | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const u = usage as Record<string, unknown>;
  const details = u.prompt_tokens_details as Record<string, unknown> | null | undefined;
  return {
    inputTokens: count(u.prompt_tokens),
    outputTokens: count(u.completion_tokens),
    cachedInputTokens: count(details?.cached_tokens),
    cacheWriteTokens: 0,
  };
}

/** Writes {@link TokenUsage} as OpenAI `usage`; prompt tokens include cached and cache-write tokens. */
export function usageToOpenAi(usage: TokenUsage): OpenAiUsageJson {
  return {
    prompt_tokens: usage.inputTokens,
    completion_tokens: usage.outputTokens,
    total_tokens: usage.inputTokens + usage.outputTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedInputTokens },
  };
}

/** Identity of one answer, shared by its body or all its chunks. */
export interface ChatAnswerIdentity {
  readonly id: string;
  readonly model: string;
  /** Seconds since the epoch. */
  readonly created: number;
}

/** A non-stream `chat.completion` body. */
export function chatCompletionBody(
  identity: ChatAnswerIdentity,
  answer: {
    readonly text: string | null;
    readonly toolCalls: readonly ChatToolCall[];
    readonly finishReason: ChatFinishReason;
    readonly usage: TokenUsage;
  },
): Record<string, unknown> {
  const message: Record<string, unknown> = { role: 'assistant', content: answer.text, refusal: null };
  if (answer.toolCalls.length > 0) {
    message.tool_calls = answer.toolCalls.map((call) => ({
      id: call.id,
      type: 'function',
      function: { name: call.name, arguments: call.arguments },
    }));
  }
  return {
    id: identity.id,
    object: 'chat.completion',
    created: identity.created,
    model: identity.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: answer.finishReason }],
    usage: usageToOpenAi(answer.usage),
  };
}

/**
 * Writes one answer as `chat.completion.chunk` SSE events, ending with `data: [DONE]`. Each method returns
 * the bytes of one event, ready to pass to the caller.
 */
export class ChatChunkEncoder {
  constructor(private readonly identity: ChatAnswerIdentity) {}

  private chunk(delta: Record<string, unknown>, finishReason: ChatFinishReason | null): Uint8Array {
    return encodeSseJson({
      id: this.identity.id,
      object: 'chat.completion.chunk',
      created: this.identity.created,
      model: this.identity.model,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    });
  }

  /** The first chunk: the assistant role with empty content. */
  start(): Uint8Array {
    return this.chunk({ role: 'assistant', content: '' }, null);
  }

  text(content: string): Uint8Array {
    return this.chunk({ content }, null);
  }

  /** Opens tool call number `index` (0-based among this answer's tool calls). */
  toolCallStart(index: number, call: { readonly id: string; readonly name: string }): Uint8Array {
    return this.chunk(
      { tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.name, arguments: '' } }] },
      null,
    );
  }

  toolCallArguments(index: number, argumentsDelta: string): Uint8Array {
    return this.chunk({ tool_calls: [{ index, function: { arguments: argumentsDelta } }] }, null);
  }

  finish(reason: ChatFinishReason): Uint8Array {
    return this.chunk({}, reason);
  }

  /** The usage-only chunk OpenAI sends when `stream_options.include_usage` is set. */
  usage(usage: TokenUsage): Uint8Array {
    return encodeSseJson({
      id: this.identity.id,
      object: 'chat.completion.chunk',
      created: this.identity.created,
      model: this.identity.model,
      choices: [],
      usage: usageToOpenAi(usage),
    });
  }

  done(): Uint8Array {
    return encodeSse({ data: '[DONE]' });
  }
}
