/**
 * A deterministic provider with no network, for local runs, demos and tests. It answers in OpenAI and
 * Anthropic shapes, streams in several chunks, and reports usage estimated from the text.
 *
 * The last user message steers it:
 * - `tollgate:fail` → an {@link UpstreamError} 502
 * - `tollgate:empty` → an empty reply
 * - `tollgate:slow:<ms>` → waits that long first (an abort of the call's signal ends the wait)
 *
 * Tools and structured output are answered plausibly (see ./plan.ts): a declared tool is called with
 * arguments generated from its schema, a tool result is answered in text, and a requested JSON schema gets
 * JSON that validates against it.
 */
import { createHash } from 'node:crypto';
import { systemClock, type Clock } from '../../core/clock';
import { UpstreamError } from '../../core/errors';
import type { TokenUsage } from '../../core/types';
import type {
  ChatCompletionBody,
  EmbeddingsBody,
  JsonResult,
  MessagesBody,
  Provider,
  ProviderCallContext,
  ProviderResult,
} from '../contract';
import { ChatChunkEncoder, chatCompletionBody } from '../openai/chat-format';
import { encodeSseJson } from '../sse';
import { networkError } from '../upstream-http';
import { chatPlanInput, messagesPlanInput, planAnswer, textOf, type PlanInput } from './plan';

/** Tokens added per message for role and framing, roughly as real tokenizers do. */
const MESSAGE_OVERHEAD_TOKENS = 4;
/** How much of the last user message the reply quotes, in characters. */
const QUOTED_CHARS = 40;
const DEFAULT_DIMENSIONS = 8;

const utf8 = new TextEncoder();

/** The mock's token estimate for a text: one token per 4 UTF-8 bytes, rounded up. */
export function estimateTokens(text: string): number {
  return Math.ceil(utf8.encode(text).length / 4);
}

/** The first `maxBytes` UTF-8 bytes of `text`, never cutting a character. */
function clipBytes(text: string, maxBytes: number): string {
  let bytes = 0;
  let out = '';
  for (const ch of text) {
    bytes += utf8.encode(ch).length;
    if (bytes > maxBytes) break;
    out += ch;
  }
  return out;
}

interface MockAnswer {
  readonly text: string;
  /** A tool call the answer makes (after its text, which is then empty). */
  readonly toolCall?: { readonly id: string; readonly name: string; readonly arguments: string };
  readonly truncated: boolean;
  readonly usage: TokenUsage;
}

interface Conversation {
  readonly messages: readonly Record<string, unknown>[];
  readonly system?: unknown;
  readonly maxTokens?: number;
  /** Reads the plan inputs (tools, structured output) from the request in its dialect. */
  readonly plan: (prompt: string) => PlanInput;
  readonly requestId: string;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(networkError('mock', signal, signal.reason));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(networkError('mock', signal, signal.reason));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Yields to the event loop between chunks, so a stream arrives in several pieces. */
async function gap(signal: AbortSignal): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (signal.aborted) throw networkError('mock', signal, signal.reason);
}

/** The reply split into word-sized pieces, as a model streams them. */
function pieces(text: string): string[] {
  return text.match(/\s*\S+/g) ?? (text === '' ? [] : [text]);
}

export interface MockProviderOptions {
  /** Stamps `created` on answers. @default systemClock */
  readonly clock?: Clock;
}

/** The built-in mock: chat completions, messages and embeddings, no network (see the file comment). */
export class MockProvider implements Provider {
  readonly id = 'mock';
  private readonly clock: Clock;

  constructor(options: MockProviderOptions = {}) {
    this.clock = options.clock ?? systemClock;
  }

  /** Decides the answer, after the fail and slow behaviours. */
  private async answer(conversation: Conversation, ctx: ProviderCallContext): Promise<MockAnswer> {
    const lastUser = [...conversation.messages].reverse().find((m) => m.role === 'user');
    const prompt = textOf(lastUser?.content);
    const slow = /tollgate:slow:(\d{1,7})/.exec(prompt);
    if (slow) await sleep(Number(slow[1]), ctx.signal);
    if (ctx.signal.aborted) throw networkError('mock', ctx.signal, ctx.signal.reason);
    if (prompt.includes('tollgate:fail')) {
      throw new UpstreamError('upstream mock failed as asked (tollgate:fail)', { status: 502, code: 'upstream_error' });
    }
    const plan = planAnswer(conversation.plan(prompt));
    const inputTokens =
      conversation.messages.reduce((sum, m) => sum + estimateTokens(textOf(m.content)) + MESSAGE_OVERHEAD_TOKENS, 0) +
      (conversation.system === undefined ? 0 : estimateTokens(textOf(conversation.system)) + MESSAGE_OVERHEAD_TOKENS);
    const usageOf = (outputText: string): TokenUsage => ({ inputTokens, outputTokens: estimateTokens(outputText), cachedInputTokens: 0, cacheWriteTokens: 0 });
    if (plan.kind === 'tool_call') {
      const toolCall = { id: `call_mock_${conversation.requestId.slice(-12)}`, name: plan.tool.name, arguments: plan.arguments };
      return { text: '', toolCall, truncated: false, usage: usageOf(plan.tool.name + plan.arguments) };
    }
    // JSON is never clipped: a cut document would not parse.
    if (plan.kind === 'json') return { text: plan.json, truncated: false, usage: usageOf(plan.json) };
    const full = prompt.includes('tollgate:empty')
      ? ''
      : plan.kind === 'tool_result'
        ? `Mock reply using the tool result: ${plan.result}`
        : `Mock reply to: ${Array.from(prompt).slice(0, QUOTED_CHARS).join('')}`;
    const text = conversation.maxTokens === undefined ? full : clipBytes(full, conversation.maxTokens * 4);
    return { text, truncated: text.length < full.length, usage: usageOf(text) };
  }

  async chatCompletions(body: ChatCompletionBody, ctx: ProviderCallContext): Promise<ProviderResult> {
    const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? ctx.maxOutputTokens;
    const answer = await this.answer(
      {
        messages: body.messages,
        maxTokens: typeof maxTokens === 'number' ? maxTokens : undefined,
        plan: (prompt) => chatPlanInput(body, prompt),
        requestId: ctx.requestId,
      },
      ctx,
    );
    const identity = { id: `chatcmpl-mock-${ctx.requestId}`, model: body.model, created: Math.floor(this.clock.now() / 1000) };
    const finishReason = answer.toolCall ? 'tool_calls' : answer.truncated ? 'length' : 'stop';
    const toolCall = answer.toolCall;
    if (!body.stream) {
      const json = chatCompletionBody(identity, {
        text: toolCall ? null : answer.text,
        toolCalls: toolCall ? [toolCall] : [],
        finishReason,
        usage: answer.usage,
      });
      return { kind: 'json', body: json, usage: answer.usage };
    }
    let usage: TokenUsage | undefined;
    const includeUsage = ctx.callerWantsStreamUsage === true;
    async function* stream(): AsyncGenerator<Uint8Array> {
      const encoder = new ChatChunkEncoder(identity);
      yield encoder.start();
      for (const piece of pieces(answer.text)) {
        await gap(ctx.signal);
        yield encoder.text(piece);
      }
      if (toolCall) {
        yield encoder.toolCallStart(0, toolCall);
        const half = Math.floor(toolCall.arguments.length / 2);
        for (const part of [toolCall.arguments.slice(0, half), toolCall.arguments.slice(half)]) {
          await gap(ctx.signal);
          if (part !== '') yield encoder.toolCallArguments(0, part);
        }
      }
      await gap(ctx.signal);
      yield encoder.finish(finishReason);
      usage = answer.usage;
      if (includeUsage) yield encoder.usage(answer.usage);
      yield encoder.done();
    }
    return { kind: 'stream', body: stream(), usage: () => usage };
  }

  async messages(body: MessagesBody, ctx: ProviderCallContext): Promise<ProviderResult> {
    const answer = await this.answer(
      {
        messages: body.messages,
        system: body.system,
        maxTokens: body.max_tokens ?? ctx.maxOutputTokens,
        plan: (prompt) => messagesPlanInput(body, prompt),
        requestId: ctx.requestId,
      },
      ctx,
    );
    const id = `msg_mock_${ctx.requestId}`;
    const toolCall = answer.toolCall ? { ...answer.toolCall, id: answer.toolCall.id.replace('call_', 'toolu_') } : undefined;
    const stopReason = toolCall ? 'tool_use' : answer.truncated ? 'max_tokens' : 'end_turn';
    const toolBlock = toolCall
      ? { type: 'tool_use', id: toolCall.id, name: toolCall.name, input: JSON.parse(toolCall.arguments) as unknown }
      : undefined;
    const wireUsage = (u: TokenUsage, outputTokens: number): Record<string, number> => ({
      input_tokens: u.inputTokens,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      output_tokens: outputTokens,
    });
    if (!body.stream) {
      return {
        kind: 'json',
        body: {
          id,
          type: 'message',
          role: 'assistant',
          model: body.model,
          content: [...(answer.text === '' ? [] : [{ type: 'text', text: answer.text }]), ...(toolBlock ? [toolBlock] : [])],
          stop_reason: stopReason,
          stop_sequence: null,
          usage: wireUsage(answer.usage, answer.usage.outputTokens),
        },
        usage: answer.usage,
      };
    }
    let usage: TokenUsage | undefined;
    async function* stream(): AsyncGenerator<Uint8Array> {
      const event = (type: string, data: Record<string, unknown>): Uint8Array => encodeSseJson({ type, ...data }, { event: type });
      usage = { ...answer.usage, outputTokens: 0 };
      yield event('message_start', {
        message: {
          id,
          type: 'message',
          role: 'assistant',
          model: body.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: wireUsage(answer.usage, 0),
        },
      });
      yield event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
      yield event('ping', {});
      for (const piece of pieces(answer.text)) {
        await gap(ctx.signal);
        yield event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: piece } });
      }
      await gap(ctx.signal);
      yield event('content_block_stop', { index: 0 });
      if (toolCall) {
        yield event('content_block_start', { index: 1, content_block: { type: 'tool_use', id: toolCall.id, name: toolCall.name, input: {} } });
        const half = Math.floor(toolCall.arguments.length / 2);
        for (const part of [toolCall.arguments.slice(0, half), toolCall.arguments.slice(half)]) {
          await gap(ctx.signal);
          yield event('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: part } });
        }
        yield event('content_block_stop', { index: 1 });
      }
      usage = answer.usage;
      yield event('message_delta', {
        delta: { stop_reason: stopReason, stop_sequence: null },
        usage: { output_tokens: answer.usage.outputTokens },
      });
      yield event('message_stop', {});
    }
    return { kind: 'stream', body: stream(), usage: () => usage };
  }

  async embeddings(body: EmbeddingsBody, ctx: ProviderCallContext): Promise<JsonResult> {
    if (ctx.signal.aborted) throw networkError('mock', ctx.signal, ctx.signal.reason);
    const dimensions =
      typeof body.dimensions === 'number' && Number.isInteger(body.dimensions) && body.dimensions > 0
        ? Math.min(body.dimensions, 4096)
        : DEFAULT_DIMENSIONS;
    const items = embeddingItems(body.input);
    let inputTokens = 0;
    const data = items.map((item, index) => {
      inputTokens += typeof item === 'string' ? estimateTokens(item) : item.length;
      const vector = mockVector(typeof item === 'string' ? item : item.join(','), dimensions);
      const embedding =
        body.encoding_format === 'base64' ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector;
      return { object: 'embedding', index, embedding };
    });
    const usage: TokenUsage = { inputTokens, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 };
    return {
      kind: 'json',
      body: { object: 'list', data, model: body.model, usage: { prompt_tokens: inputTokens, total_tokens: inputTokens } },
      usage,
    };
  }
}

/** The separate inputs of an embeddings request: texts or token arrays. */
function embeddingItems(input: EmbeddingsBody['input']): (string | readonly number[])[] {
  if (typeof input === 'string') return [input];
  if (input.length === 0) return [];
  if (typeof input[0] === 'number') return [input as readonly number[]];
  return [...(input as readonly (string | readonly number[])[])];
}

/** A unit vector derived from the text's hash: the same text always gets the same vector. */
function mockVector(text: string, dimensions: number): number[] {
  const raw: number[] = [];
  for (let block = 0; raw.length < dimensions; block++) {
    const digest = createHash('sha256').update(`${block}:${text}`).digest();
    for (let i = 0; i + 4 <= digest.length && raw.length < dimensions; i += 4) {
      raw.push(digest.readUInt32BE(i) / 0x80000000 - 1);
    }
  }
  const norm = Math.sqrt(raw.reduce((sum, v) => sum + v * v, 0)) || 1;
  return raw.map((v) => v / norm);
}
