/**
 * OpenAI and every OpenAI-compatible upstream. {@link OpenAiCompatibleProvider} does the work; a new
 * compatible provider is a subclass that names itself and, if it must, overrides {@link
 * OpenAiCompatibleProvider.authHeaders} or {@link OpenAiCompatibleProvider.prepareChatBody}.
 *
 * Streams pass the upstream's bytes through as they arrive. The upstream is always asked for usage
 * (`stream_options.include_usage`); when the caller did not ask for it, the usage-only final chunk is dropped
 * from what the caller receives.
 */
import { StreamWatch } from '../../core/stream-errors';
import type { TokenUsage } from '../../core/types';
import type {
  ChatCompletionBody,
  EmbeddingsBody,
  JsonResult,
  Provider,
  ProviderCallContext,
  ProviderResult,
  StreamResult,
} from '../contract';
import { encodeSse, SseParser, type SseEvent } from '../sse';
import { StreamEnd } from '../stream-end';
import { postUpstream, readBody, readJson, resolveApiKey, type ApiKeySource, type UpstreamResponse } from '../upstream-http';
import { usageFromResponses } from '../responses/response';
import { usageFromOpenAi } from './chat-format';
import { relayResponsesStream } from './responses';

export type { ApiKeySource } from '../upstream-http';

export interface OpenAiCompatibleOptions {
  /** Base URL ending in `/v1` (the SDK convention): requests go to `${baseUrl}/chat/completions`. */
  readonly baseUrl: string;
  /** The platform key. A call's `apiKeyOverride` (BYOK) wins over it. */
  readonly apiKey: ApiKeySource;
  /** Headers sent with every request, e.g. an organization id. */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * The body field that carries the output cap the gateway adds when the caller set none
   * ({@link ProviderCallContext.maxOutputTokens}).
   * @default 'max_completion_tokens' (OpenAI's; `max_tokens` is deprecated there and refused by reasoning models)
   */
  readonly outputCapField?: 'max_completion_tokens' | 'max_tokens';
}

/** The provider for any upstream that speaks OpenAI's chat-completions and embeddings APIs. */
export class OpenAiCompatibleProvider implements Provider {
  private readonly baseUrl: string;

  constructor(
    readonly id: string,
    private readonly options: OpenAiCompatibleOptions,
  ) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
  }

  /** The headers that authenticate with `apiKey`; `Authorization: Bearer` unless overridden. */
  protected authHeaders(apiKey: string): Record<string, string> {
    return { authorization: `Bearer ${apiKey}` };
  }

  /** A hook for compatible upstreams that need the request adjusted; returns the body unchanged here. */
  protected prepareChatBody(body: Record<string, unknown>): Record<string, unknown> {
    return body;
  }

  private async post(path: string, body: unknown, ctx: ProviderCallContext): Promise<UpstreamResponse> {
    const apiKey = await resolveApiKey(this.id, this.options.apiKey, ctx);
    return postUpstream({
      providerId: this.id,
      url: `${this.baseUrl}${path}`,
      headers: { ...this.options.headers, ...this.authHeaders(apiKey) },
      body,
      signal: ctx.signal,
      secrets: [apiKey],
    });
  }

  /** The body with the gateway's output cap added when the caller set neither cap field. */
  private withOutputCap(body: ChatCompletionBody, ctx: ProviderCallContext): ChatCompletionBody {
    if (ctx.maxOutputTokens === undefined || body.max_completion_tokens !== undefined || body.max_tokens !== undefined) return body;
    return { ...body, [this.options.outputCapField ?? 'max_completion_tokens']: ctx.maxOutputTokens };
  }

  async chatCompletions(callerBody: ChatCompletionBody, ctx: ProviderCallContext): Promise<ProviderResult> {
    const body = this.withOutputCap(callerBody, ctx);
    if (!body.stream) {
      const response = await this.post('/chat/completions', this.prepareChatBody({ ...body }), ctx);
      const json = await readJson(this.id, response, ctx.signal);
      return { kind: 'json', body: json, usage: usageFromOpenAi((json as { usage?: unknown } | null)?.usage) };
    }
    const callerOptions = typeof body.stream_options === 'object' && body.stream_options !== null ? body.stream_options : {};
    const upstreamBody = this.prepareChatBody({
      ...body,
      stream_options: { ...callerOptions, include_usage: true },
    });
    const response = await this.post('/chat/completions', upstreamBody, ctx);
    return relayChatStream(readBody(this.id, response, ctx.signal), {
      passUsageChunk: ctx.callerWantsStreamUsage === true,
      provider: this.id,
    });
  }

  /** The Responses API, passed through (see ./responses.ts). */
  async responses(body: Record<string, unknown> & { readonly model: string }, ctx: ProviderCallContext): Promise<ProviderResult> {
    // The cap the reservation assumed, when the caller set none (the Responses API's own field).
    const capped = ctx.maxOutputTokens === undefined || body.max_output_tokens !== undefined ? body : { ...body, max_output_tokens: ctx.maxOutputTokens };
    const response = await this.post('/responses', capped, ctx);
    if (body.stream !== true) {
      const json = await readJson(this.id, response, ctx.signal);
      return { kind: 'json', body: json, usage: usageFromResponses((json as { usage?: unknown } | null)?.usage) };
    }
    return relayResponsesStream(readBody(this.id, response, ctx.signal), this.id);
  }

  async embeddings(body: EmbeddingsBody, ctx: ProviderCallContext): Promise<JsonResult> {
    const response = await this.post('/embeddings', body, ctx);
    const json = await readJson(this.id, response, ctx.signal);
    return { kind: 'json', body: json, usage: usageFromOpenAi((json as { usage?: unknown } | null)?.usage) };
  }
}

/** Reads the usage of one chat chunk; `usageOnly` when it is the final chunk with no choices. */
function inspectChunk(event: SseEvent): { usage?: TokenUsage; usageOnly: boolean } {
  if (event.data === '[DONE]' || !event.data.includes('"usage"')) return { usageOnly: false };
  try {
    const chunk = JSON.parse(event.data) as { usage?: unknown; choices?: unknown };
    const usage = usageFromOpenAi(chunk.usage);
    const usageOnly = usage !== undefined && Array.isArray(chunk.choices) && chunk.choices.length === 0;
    return { usage, usageOnly };
  } catch {
    return { usageOnly: false };
  }
}

/**
 * Passes an OpenAI chat stream through while watching it for usage. With `passUsageChunk` the bytes go
 * through untouched; without it the stream is re-framed event by event so the usage-only chunk can be left
 * out (each event is forwarded as soon as it is complete; nothing else is held back).
 */
export function relayChatStream(
  upstream: AsyncIterable<Uint8Array>,
  options: {
    readonly passUsageChunk: boolean;
    /** Names the upstream in the error event of a cut stream. @default 'openai' */
    readonly provider?: string;
  },
): StreamResult {
  let usage: TokenUsage | undefined;
  const watch = new StreamWatch();
  const end = new StreamEnd('chat', options.provider ?? 'openai');
  /** Records usage; returns the events the caller should see (and the watch is told of). */
  const observe = (events: SseEvent[]): SseEvent[] =>
    events.filter((event) => {
      const seen = inspectChunk(event);
      if (seen.usage) usage = seen.usage;
      end.observe(event);
      const kept = options.passUsageChunk || !seen.usageOnly;
      if (kept) watch.observe(event);
      return kept;
    });
  async function* relay(): AsyncGenerator<Uint8Array> {
    const parser = new SseParser();
    for await (const chunk of upstream) {
      const kept = observe(parser.push(chunk));
      if (options.passUsageChunk) yield chunk;
      else for (const event of kept) yield encodeSse(event);
    }
    const kept = observe(parser.end());
    if (!options.passUsageChunk) for (const event of kept) yield encodeSse(event);
    // Closed cleanly before [DONE]: the caller's stream ends with an error chunk (a cut answer).
    const last = end.finish();
    if (last) {
      for (const event of new SseParser().push(last)) watch.observe(event);
      yield last;
    }
  }
  return { kind: 'stream', body: relay(), usage: () => usage, watch, cut: () => end.cut() };
}

/** OpenAI itself. */
export class OpenAiProvider extends OpenAiCompatibleProvider {
  constructor(options: OpenAiCompatibleOptions) {
    super('openai', options);
  }
}
