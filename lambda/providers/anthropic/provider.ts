/**
 * Anthropic: native Messages pass-through (`messages`) and OpenAI chat completions translated to Messages
 * (`chatCompletions`). The caller's `anthropic-version` and `anthropic-beta` headers reach the upstream through
 * {@link AnthropicCallContext}.
 */
import { systemClock, type Clock } from '../../core/clock';
import { InvalidRequestError, UpstreamError } from '../../core/errors';
import { StreamWatch } from '../../core/stream-errors';
import type { TokenUsage } from '../../core/types';
import type {
  ChatCompletionBody,
  MessagesBody,
  Provider,
  ProviderCallContext,
  ProviderOperation,
  ProviderResult,
  StreamResult,
} from '../contract';
import type { ChatAnswerIdentity } from '../openai/chat-format';
import { parseSse, SseParser } from '../sse';
import { StreamEnd } from '../stream-end';
import { postUpstream, readBody, readJson, resolveApiKey, type ApiKeySource, type UpstreamResponse } from '../upstream-http';
import { readStructuredOutput } from '../openai/chat-request';
import { anthropicStreamToChatChunks, fromAnthropicMessage, toAnthropicRequest } from './translate';
import { AnthropicStreamUsage, usageFromAnthropic } from './usage';

/** The `anthropic-version` sent when the caller names none. */
export const DEFAULT_ANTHROPIC_VERSION = '2023-06-01';

/**
 * A call context that may carry the caller's Anthropic headers. The HTTP layer copies them from the
 * request; they are validated here before they are forwarded.
 */
export interface AnthropicCallContext extends ProviderCallContext {
  /** The caller's `anthropic-version` header. @default DEFAULT_ANTHROPIC_VERSION */
  readonly anthropicVersion?: string;
  /** The caller's `anthropic-beta` header (comma-separated feature names). */
  readonly anthropicBeta?: string;
}

export interface AnthropicProviderOptions {
  /** Base URL without `/v1` (the SDK's `ANTHROPIC_BASE_URL`): requests go to `${baseUrl}/v1/messages`. */
  readonly baseUrl: string;
  /** The platform key. A call's `apiKeyOverride` (BYOK) wins over it. */
  readonly apiKey: ApiKeySource;
  /** `max_tokens` for translated chat requests that set neither max_completion_tokens nor max_tokens. @default 4096 */
  readonly defaultMaxTokens?: number;
  /** Stamps `created` on translated answers. @default systemClock */
  readonly clock?: Clock;
}

const HEADER_VALUE = /^[A-Za-z0-9._,\- ]{1,4096}$/;

function headerValue(value: string | undefined, name: string): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (!HEADER_VALUE.test(value)) throw new InvalidRequestError(`the ${name} header has an invalid value`, { param: name });
  return value;
}

/** Anthropic's Messages API: native pass-through plus OpenAI chat completions translated to it. */
export class AnthropicProvider implements Provider {
  readonly id = 'anthropic';
  private readonly baseUrl: string;
  private readonly defaultMaxTokens: number;
  private readonly clock: Clock;

  constructor(private readonly options: AnthropicProviderOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.defaultMaxTokens = options.defaultMaxTokens ?? 4096;
    this.clock = options.clock ?? systemClock;
  }

  private async post(body: Record<string, unknown>, ctx: AnthropicCallContext, path = '/v1/messages'): Promise<UpstreamResponse> {
    const apiKey = await resolveApiKey(this.id, this.options.apiKey, ctx);
    const beta = headerValue(ctx.anthropicBeta, 'anthropic-beta');
    return postUpstream({
      providerId: this.id,
      url: `${this.baseUrl}${path}`,
      headers: {
        'x-api-key': apiKey,
        'anthropic-version': headerValue(ctx.anthropicVersion, 'anthropic-version') ?? DEFAULT_ANTHROPIC_VERSION,
        ...(beta ? { 'anthropic-beta': beta } : {}),
      },
      body,
      signal: ctx.signal,
      secrets: [apiKey],
    });
  }

  /** Translated chat requests are translated once here, before the reservation, to refuse what cannot be expressed. */
  check(operation: ProviderOperation, body: Record<string, unknown>): void {
    if (operation === 'chatCompletions') toAnthropicRequest(body as ChatCompletionBody, { defaultMaxTokens: this.defaultMaxTokens });
  }

  /** Native Messages: the body goes up as given; streams come back byte for byte. */
  async messages(body: MessagesBody, ctx: AnthropicCallContext): Promise<ProviderResult> {
    const capped = body.max_tokens === undefined && ctx.maxOutputTokens !== undefined ? { max_tokens: ctx.maxOutputTokens } : {};
    const response = await this.post({ ...body, ...capped }, ctx);
    if (!body.stream) {
      const json = await readJson(this.id, response, ctx.signal);
      return { kind: 'json', body: json, usage: usageFromAnthropic((json as { usage?: unknown } | null)?.usage) };
    }
    return relayMessagesStream(readBody(this.id, response, ctx.signal));
  }

  /** Anthropic's own count (`POST /v1/messages/count_tokens`, free there) of a Messages body, sent as given. */
  async countTokens(body: Record<string, unknown> & { readonly model: string }, ctx: AnthropicCallContext): Promise<number> {
    const response = await this.post(body, ctx, '/v1/messages/count_tokens');
    const json = (await readJson(this.id, response, ctx.signal)) as { input_tokens?: unknown } | null;
    const n = json?.input_tokens;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) {
      throw new UpstreamError(`upstream ${this.id} answered count_tokens without an input_tokens count`, { status: 502 });
    }
    return n;
  }

  /** OpenAI chat completions, answered by the Messages API and translated both ways. */
  async chatCompletions(body: ChatCompletionBody, ctx: AnthropicCallContext): Promise<ProviderResult> {
    const request = toAnthropicRequest(body, { defaultMaxTokens: ctx.maxOutputTokens ?? this.defaultMaxTokens });
    const structured = readStructuredOutput(body);
    const response = await this.post(request, ctx);
    const identity: ChatAnswerIdentity = {
      id: `chatcmpl-${ctx.requestId}`,
      model: body.model,
      created: Math.floor(this.clock.now() / 1000),
    };
    if (!body.stream) {
      const json = await readJson(this.id, response, ctx.signal);
      const { body: answer, usage } = fromAnthropicMessage(json, identity, structured);
      return { kind: 'json', body: answer, usage };
    }
    let usage: TokenUsage | undefined;
    let cut = false;
    const chunks = anthropicStreamToChatChunks(parseSse(readBody(this.id, response, ctx.signal)), {
      identity,
      includeUsage: ctx.callerWantsStreamUsage === true,
      onUsage: (u) => {
        usage = u;
      },
      onCut: () => {
        cut = true;
      },
      ...(structured ? { structured } : {}),
    });
    return { kind: 'stream', body: chunks, usage: () => usage, cut: () => cut };
  }
}

/** Passes a Messages stream through untouched while following its usage. */
export function relayMessagesStream(upstream: AsyncIterable<Uint8Array>): StreamResult {
  const usage = new AnthropicStreamUsage();
  const watch = new StreamWatch();
  const end = new StreamEnd('messages', 'anthropic');
  const observe = (data: string): void => {
    if (!data.includes('"message_start"') && !data.includes('"message_delta"')) return;
    try {
      usage.observe(JSON.parse(data) as Record<string, unknown>);
    } catch {
      // Not JSON: nothing to learn from it; the caller still gets the bytes.
    }
  };
  async function* relay(): AsyncGenerator<Uint8Array> {
    const parser = new SseParser();
    for await (const chunk of upstream) {
      for (const event of parser.push(chunk)) {
        watch.observe(event);
        end.observe(event);
        observe(event.data);
      }
      yield chunk;
    }
    for (const event of parser.end()) {
      watch.observe(event);
      end.observe(event);
      observe(event.data);
    }
    // Closed cleanly before message_stop: the caller's stream ends with an `error` event (a cut answer).
    const last = end.finish();
    if (last) {
      for (const event of new SseParser().push(last)) watch.observe(event);
      yield last;
    }
  }
  return { kind: 'stream', body: relay(), usage: () => (end.cut() ? usage.ofCutStream() : usage.current()), watch, cut: () => end.cut() };
}
