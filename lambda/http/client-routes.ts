/**
 * Routes the official clients call besides completions: the model list in OpenAI's or Anthropic's shape,
 * one model, Anthropic's token counting (an estimate), and the cost of one recorded request.
 *
 * - `GET /v1/models`: OpenAI's `{object: 'list', data: [{id, object: 'model', …}]}`, or Anthropic's
 *   `{data: [{type: 'model', id, display_name, created_at}], has_more, first_id, last_id}` when the request
 *   carries `anthropic-version` (every Anthropic SDK sends it).
 * - `GET /v1/models/{id}` (the id may hold a `/`, raw or as `%2F`): one model in the same two shapes; 404
 *   when the gateway does not serve it.
 * - `POST /v1/messages/count_tokens` (Claude Code asks it before reading a file): `{input_tokens}`, the
 *   provider's own count where it has one (Anthropic's count_tokens, the body forwarded as given), else the
 *   gateway's tokenizer (core/tokens.ts, scaled for the model's family; `x-tollgate-token-count: tokenizer`).
 *   Never billed and never seen by the loop guard (it is free at Anthropic); limited per key and instance to
 *   {@link ClientRoutesOptions.countTokensPerMinute} calls a minute.
 * - `GET /v1/usage/requests/{requestId}`: the usage record of a request made with the same key (404 for
 *   any other key's request).
 */
import type { Authenticator } from '../core/auth';
import type { Clock } from '../core/clock';
import { NotFoundError, RateLimitError, UpstreamError } from '../core/errors';
import { formatUsd } from '../core/money';
import type { PriceBook } from '../core/pricing';
import type { UsageStore } from '../core/stores';
import { estimateMessagesInputTokens, inputTokensFor, loadTokenizer, tokenizerReady } from '../core/tokens';
import type { MessagesBody } from '../providers/contract';
import type { ProviderRegistry } from '../providers/registry';
import type { Route, RouteContext } from './app';
import { jsonResponse } from './dialects';
import { messagesSchema, parseJsonBody, validate } from './schemas';
import type { HttpResponse } from './types';

export interface ClientRoutesOptions {
  readonly authenticator: Authenticator;
  readonly prices: PriceBook;
  /** Where recorded requests are looked up; without it `/v1/usage/requests/{id}` answers 404. */
  readonly usage?: Pick<UsageStore, 'findRequest'>;
  /** How many of a key's newest records a request lookup reads at most. @default 5000 */
  readonly maxRecordsScanned?: number;
  /** Providers whose own token count `count_tokens` forwards to; without them the tokenizer answers. */
  readonly providers?: ProviderRegistry;
  /** Time for the count_tokens limit. */
  readonly clock?: Clock;
  /** count_tokens calls one key may make per minute on one instance. @default 600 */
  readonly countTokensPerMinute?: number;
  /** How long a forwarded count may take. @default 30000 */
  readonly countTokensTimeoutMs?: number;
}

/** A fixed-window count per key, on this instance only: count_tokens is free, so this only bounds abuse. */
class PerKeyMinuteLimit {
  private window = -1;
  private readonly counts = new Map<string, number>();
  constructor(
    private readonly perMinute: number,
    private readonly clock: Clock,
  ) {}

  take(keyId: string): void {
    const now = this.clock.now();
    const window = Math.floor(now / 60_000);
    if (window !== this.window) {
      this.window = window;
      this.counts.clear();
    }
    const n = (this.counts.get(keyId) ?? 0) + 1;
    if (n > this.perMinute) {
      const retryS = Math.max(1, Math.ceil(((window + 1) * 60_000 - now) / 1000));
      throw new RateLimitError(
        `Rate limit reached for key ${keyId}: ${this.perMinute} count_tokens calls per minute; try again in ${retryS}s.`,
        { code: 'rate_limit_exceeded', headers: { 'Retry-After': String(retryS) } },
      );
    }
    this.counts.set(keyId, n);
  }
}

/** Anthropic lists carry a creation time; the gateway has none for priced models. */
const EPOCH_ISO = '1970-01-01T00:00:00Z';

function anthropicSurface(ctx: RouteContext): boolean {
  return ctx.req.headers['anthropic-version'] !== undefined;
}

function openAiModel(m: { id: string; provider: string }): Record<string, unknown> {
  return { id: m.id, object: 'model', created: 0, owned_by: m.provider };
}

function anthropicModel(m: { id: string }): Record<string, unknown> {
  return { type: 'model', id: m.id, display_name: m.id, created_at: EPOCH_ISO };
}

/** The client-facing routes (see the file comment). */
export function createClientRoutes(o: ClientRoutesOptions): Route[] {
  const maxScanned = o.maxRecordsScanned ?? 5000;
  const countLimit = new PerKeyMinuteLimit(o.countTokensPerMinute ?? 600, o.clock ?? { now: () => Date.now() });

  const list = async (ctx: RouteContext): Promise<HttpResponse> => {
    await ctx.authenticate();
    const models = o.prices.listModels();
    if (!anthropicSurface(ctx)) return jsonResponse(200, { object: 'list', data: models.map(openAiModel) });
    return jsonResponse(200, {
      data: models.map(anthropicModel),
      has_more: false,
      first_id: models[0]?.id ?? null,
      last_id: models[models.length - 1]?.id ?? null,
    });
  };

  const one = async (ctx: RouteContext): Promise<HttpResponse> => {
    await ctx.authenticate();
    const name = ctx.params.provider !== undefined ? `${ctx.params.provider}/${ctx.params.model}` : ctx.params.id!;
    const models = o.prices.listModels();
    let found = models.find((m) => m.id === name);
    if (!found) {
      // A bare name (`gpt-4o`) is the model the gateway routes it to.
      try {
        const resolved = o.prices.resolve(name);
        found = { id: resolved.id, provider: resolved.provider };
      } catch {
        found = undefined;
      }
    }
    if (!found) throw new NotFoundError(`The model "${name}" does not exist on this gateway.`, { code: 'model_not_found', param: 'model' });
    return jsonResponse(200, anthropicSurface(ctx) ? anthropicModel(found) : openAiModel(found));
  };

  const countTokens = async (ctx: RouteContext): Promise<HttpResponse> => {
    const principal = await ctx.authenticate();
    o.authenticator.authorize(principal, 'ai:complete');
    // count_tokens takes a Messages body without max_tokens.
    const raw = parseJsonBody(ctx.req.body) as Record<string, unknown>;
    const body = validate(messagesSchema, { max_tokens: 1, ...raw }) as MessagesBody;
    const model = o.prices.resolve(body.model);
    countLimit.take(principal.keyId);
    const provider = o.providers?.get(model.provider);
    if (provider?.countTokens && !o.providers?.needsCallerKey(model.provider)) {
      const signal = AbortSignal.any([ctx.req.signal, AbortSignal.timeout(o.countTokensTimeoutMs ?? 30_000)]);
      const beta = ctx.req.headers['anthropic-beta'];
      const version = ctx.req.headers['anthropic-version'];
      try {
        const n = await provider.countTokens(
          { ...raw, model: model.upstreamModel },
          {
            requestId: ctx.requestId,
            signal,
            ...(typeof version === 'string' ? { anthropicVersion: version } : {}),
            ...(typeof beta === 'string' ? { anthropicBeta: beta } : {}),
          },
        );
        return jsonResponse(200, { input_tokens: n }, { 'x-tollgate-token-count': 'provider' });
      } catch (err) {
        // The caller's own mistakes (400, 404, 413, 422, 429) are the provider's answer; an unreachable or
        // failing provider is answered by the tokenizer, which is close and costs nothing.
        const providerDown = err instanceof UpstreamError && err.status >= 500 && !ctx.req.signal.aborted;
        if (!providerDown) throw err;
      }
    }
    // count_tokens is the tokenizer's own answer, never the bytes ÷ 3 a deferred load starts with (only if the
    // tokenizer cannot be loaded at all is it that estimate, and the header says so).
    try {
      loadTokenizer();
    } catch {
      // answered below from bytes ÷ 3
    }
    const n = inputTokensFor(model.provider, estimateMessagesInputTokens(body));
    return jsonResponse(200, { input_tokens: n }, { 'x-tollgate-token-count': tokenizerReady() ? 'tokenizer' : 'estimate' });
  };

  const requestCost = async (ctx: RouteContext): Promise<HttpResponse> => {
    const principal = await ctx.authenticate();
    const requestId = ctx.params.requestId!;
    const record = /^[A-Za-z0-9_-]{1,128}$/.test(requestId)
      ? await o.usage?.findRequest({ keyId: principal.keyId, userId: principal.userId, requestId, maxScanned })
      : undefined;
    if (!record) {
      throw new NotFoundError(`No request ${requestId.slice(0, 128)} was recorded for this key.`, { code: 'request_not_found' });
    }
    return jsonResponse(200, {
      object: 'usage.request',
      request_id: record.requestId,
      timestamp: record.timestamp,
      model: record.model,
      endpoint: record.endpoint,
      stream: record.stream,
      outcome: record.outcome,
      cost_usd: formatUsd(record.costMicros),
      cost_estimated: record.costEstimated,
      usage: {
        input_tokens: record.usage.inputTokens,
        output_tokens: record.usage.outputTokens,
        cached_input_tokens: record.usage.cachedInputTokens,
        cache_write_tokens: record.usage.cacheWriteTokens,
      },
    });
  };

  return [
    { method: 'GET', path: '/v1/models', handler: list },
    { method: 'GET', path: '/v1/models/:id', handler: one },
    { method: 'GET', path: '/v1/models/:provider/:model', handler: one },
    { method: 'POST', path: '/v1/messages/count_tokens', handler: countTokens },
    { method: 'GET', path: '/v1/usage/requests/:requestId', handler: requestCost },
  ];
}
