/**
 * The gateway's HTTP surface: routing, parsing and validation, then the domain (authenticate → authorize →
 * reserve → forward → settle), then rendering in the caller's dialect. Framework-free: the local server and
 * the Lambda handler both call {@link GatewayApp.handle}.
 */
import { randomUUID } from 'node:crypto';
import type { Authenticator, Principal } from '../core/auth';
import type { Clock } from '../core/clock';
import {
  asTollgateError,
  type ErrorKind,
  InvalidRequestError,
  NotFoundError,
  PayloadTooLargeError,
  type TollgateError,
} from '../core/errors';
import type { Logger } from '../core/log';
import { formatUsd } from '../core/money';
import type { BillableCall, RequestPipeline } from '../core/pipeline';
import type { PriceBook, ResolvedModel } from '../core/pricing';
import { estimateChatInputTokens, estimateEmbeddingInputTokens, estimateMessagesInputTokens } from '../core/tokens';
import type { KeyScope, RequestType, UsageRecord } from '../core/types';
import { WINDOWS } from '../core/windows';
import type { ChatCompletionBody, MessagesBody, ProviderCallContext, ProviderResult } from '../providers/contract';
import type { ProviderRegistry } from '../providers/registry';
import { type Dialect, dialectOf, errorResponse, jsonResponse } from './dialects';
import { chatCompletionSchema, embeddingsSchema, messagesSchema, parseJsonBody, validate } from './schemas';
import type { HttpRequest, HttpResponse } from './types';

export interface GatewayAppOptions {
  readonly authenticator: Authenticator;
  readonly pipeline: RequestPipeline;
  readonly prices: PriceBook;
  readonly providers: ProviderRegistry;
  readonly clock: Clock;
  readonly log: Logger;
  readonly maxBodyBytes: number;
  readonly defaultMaxOutputTokens: number;
  readonly newRequestId?: () => string;
  /** More routes (admin API, BYOK, agent runs…), matched after the built-in ones. */
  readonly routes?: readonly Route[];
  /** Told of every request once it is over (settlement included): metrics, alerts, audit. */
  readonly observers?: readonly RequestObserver[];
  /**
   * The caller's own provider keys (BYOK): when the user has one for the model's provider, the call uses it
   * (decrypted for this call only) and is recorded with `byok: true`.
   */
  readonly byok?: { keyFor(userId: string, provider: string): Promise<string | undefined> };
}

/** What one request's handler gets. */
export interface RouteContext {
  readonly req: HttpRequest;
  readonly requestId: string;
  readonly startedAt: number;
  readonly dialect: Dialect;
  /** Values of `:name` segments of the route's path. */
  readonly params: Readonly<Record<string, string>>;
  /** Authenticates the caller (API key) and remembers who it was for observers. */
  authenticate(): Promise<Principal>;
}

export type RouteHandler = (ctx: RouteContext) => Promise<HttpResponse>;

export interface Route {
  readonly method: string;
  /** An exact path, or one with `:name` segments (`/v1/byok/:provider`). */
  readonly path: string;
  readonly handler: RouteHandler;
}

/** One finished request, as observers see it. */
export interface RequestEvent {
  readonly requestId: string;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  /** From arrival until the response (and its settlement) finished. */
  readonly durationMs: number;
  readonly error?: { readonly kind: ErrorKind; readonly code?: string; readonly message: string };
  readonly principal?: Pick<Principal, 'keyId' | 'userId' | 'orgId'>;
  /** The usage record, for requests that reached a provider (or were reserved for). */
  readonly usage?: UsageRecord;
  /** How long the provider took to answer (to its first byte, for streams), for requests that called one. */
  readonly upstreamMs?: number;
  /** The tightest budget left after this request, as its `x-tollgate-budget-*` headers told the caller. */
  readonly budget?: { readonly scope: string; readonly remainingUsd: string };
}

export type RequestObserver = (event: RequestEvent) => void;

function isUsageRecord(value: unknown): value is UsageRecord {
  return typeof value === 'object' && value !== null && 'requestId' in value && 'costMicros' in value;
}

function matchPath(pattern: string, path: string): Record<string, string> | undefined {
  if (!pattern.includes(':')) return pattern === path ? {} : undefined;
  const p = pattern.split('/');
  const a = path.split('/');
  if (p.length !== a.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    if (p[i]!.startsWith(':')) {
      if (a[i] === '') return undefined;
      params[p[i]!.slice(1)] = decodeURIComponent(a[i]!);
    } else if (p[i] !== a[i]) return undefined;
  }
  return params;
}

/** A completion-like route: how to validate it, estimate it, and call a provider for it. */
interface BillableRoute {
  readonly requestType: RequestType;
  readonly scope: KeyScope;
  readonly schema: Parameters<typeof validate>[0];
  estimateInput(body: Record<string, unknown>): number;
  maxOutput(body: Record<string, unknown>, model: ResolvedModel): number;
  stream(body: Record<string, unknown>): boolean;
  /** The provider operation that serves this route. */
  readonly operation: 'chatCompletions' | 'messages' | 'embeddings';
}

export class GatewayApp {
  private readonly routes: readonly Route[];
  private readonly newRequestId: () => string;
  /** Provider latency by request id, kept only while observers are waiting for the request to finish. */
  private readonly upstreamMs = new Map<string, number>();

  constructor(private readonly o: GatewayAppOptions) {
    this.newRequestId = o.newRequestId ?? (() => `req_${randomUUID().replace(/-/g, '')}`);
    const outputCap = (body: Record<string, unknown>, model: ResolvedModel, ...fields: string[]): number => {
      for (const f of fields) if (typeof body[f] === 'number') return body[f] as number;
      return model.price.maxOutputTokens ?? o.defaultMaxOutputTokens;
    };
    const chat: BillableRoute = {
      requestType: 'chat',
      scope: 'ai:complete',
      schema: chatCompletionSchema,
      estimateInput: (b) => estimateChatInputTokens(b as ChatCompletionBody),
      // n choices each produce up to the cap.
      maxOutput: (b, m) => outputCap(b, m, 'max_completion_tokens', 'max_tokens') * (typeof b.n === 'number' ? b.n : 1),
      stream: (b) => b.stream === true,
      operation: 'chatCompletions',
    };
    const messages: BillableRoute = {
      requestType: 'messages',
      scope: 'ai:complete',
      schema: messagesSchema,
      estimateInput: (b) => estimateMessagesInputTokens(b as MessagesBody),
      maxOutput: (b, m) => outputCap(b, m, 'max_tokens'),
      stream: (b) => b.stream === true,
      operation: 'messages',
    };
    const embeddings: BillableRoute = {
      requestType: 'embeddings',
      scope: 'ai:embed',
      schema: embeddingsSchema,
      estimateInput: (b) => estimateEmbeddingInputTokens(b.input),
      maxOutput: () => 0,
      stream: () => false,
      operation: 'embeddings',
    };
    this.routes = [
      { method: 'POST', path: '/v1/chat/completions', handler: (c) => this.billable(c, chat) },
      { method: 'POST', path: '/v1/messages', handler: (c) => this.billable(c, messages) },
      { method: 'POST', path: '/v1/embeddings', handler: (c) => this.billable(c, embeddings) },
      { method: 'GET', path: '/v1/models', handler: (c) => this.models(c) },
      { method: 'GET', path: '/v1/usage', handler: (c) => this.usage(c) },
      { method: 'GET', path: '/health', handler: async () => jsonResponse(200, { status: 'ok' }) },
      ...(o.routes ?? []),
    ];
  }

  /** Handles one request; never throws (every failure becomes a response in the caller's dialect). */
  async handle(req: HttpRequest): Promise<HttpResponse> {
    const requestId = this.newRequestId();
    let principal: Principal | undefined;
    let params: Record<string, string> = {};
    const ctx: RouteContext = {
      req,
      requestId,
      startedAt: this.o.clock.now(),
      dialect: dialectOf(req.path),
      get params() {
        return params;
      },
      authenticate: async () => {
        principal = await this.o.authenticator.authenticate(req.headers);
        return principal;
      },
    };
    let res: HttpResponse;
    let error: TollgateError | undefined;
    try {
      if (req.body.length > this.o.maxBodyBytes) throw this.tooLarge(req.body.length);
      const matched = this.match(req);
      params = matched.params;
      res = await matched.route.handler(ctx);
      res = { ...res, headers: { ...res.headers, 'x-request-id': requestId } };
    } catch (err) {
      error = asTollgateError(err);
      res = this.fail(ctx, error);
    }
    const observers = this.o.observers ?? [];
    if (observers.length === 0) return res;
    const settle = res.after;
    const status = res.status;
    const budgetScope = res.headers['x-tollgate-budget-scope'];
    const budgetRemaining = res.headers['x-tollgate-budget-remaining-usd'];
    const notify = (usage: UsageRecord | undefined) => {
      const upstreamMs = this.upstreamMs.get(requestId);
      this.upstreamMs.delete(requestId);
      const event: RequestEvent = {
        requestId,
        method: req.method,
        path: req.path,
        status,
        durationMs: Math.max(0, this.o.clock.now() - ctx.startedAt),
        ...(error ? { error: { kind: error.kind, ...(error.code ? { code: error.code } : {}), message: error.message } } : {}),
        ...(principal ? { principal: { keyId: principal.keyId, userId: principal.userId, ...(principal.orgId ? { orgId: principal.orgId } : {}) } } : {}),
        ...(usage ? { usage } : {}),
        ...(upstreamMs !== undefined ? { upstreamMs } : {}),
        ...(budgetScope && budgetRemaining ? { budget: { scope: budgetScope, remainingUsd: budgetRemaining } } : {}),
      };
      for (const observe of observers) {
        try {
          observe(event);
        } catch (err) {
          this.o.log.log('warn', 'request observer failed', { requestId, error: err instanceof Error ? err.message : String(err) });
        }
      }
    };
    return {
      ...res,
      after: async () => {
        const settled = settle ? await settle() : undefined;
        notify(isUsageRecord(settled) ? settled : undefined);
      },
    };
  }

  /** The response for a request rejected before it could be read (e.g. a body over the size limit). */
  reject(path: string, err: TollgateError): HttpResponse {
    return errorResponse(dialectOf(path), err, { 'x-request-id': this.newRequestId() });
  }

  tooLarge(bytes?: number): PayloadTooLargeError {
    const size = bytes === undefined ? 'is' : `is ${bytes} bytes,`;
    return new PayloadTooLargeError(`The request body ${size} over this gateway's limit of ${this.o.maxBodyBytes} bytes.`, {
      code: 'request_too_large',
    });
  }

  private fail(ctx: RouteContext, err: unknown): HttpResponse {
    const error = asTollgateError(err);
    if (error.status >= 500) {
      this.o.log.log('error', 'request failed', {
        requestId: ctx.requestId,
        path: ctx.req.path,
        status: error.status,
        error: error.message,
        cause: error.cause instanceof Error ? error.cause.message : undefined,
      });
    }
    return errorResponse(ctx.dialect, error, { 'x-request-id': ctx.requestId });
  }

  private match(req: HttpRequest): { route: Route; params: Record<string, string> } {
    const path = req.path.length > 1 ? req.path.replace(/\/+$/, '') : req.path;
    const candidates = this.routes
      .map((route) => ({ route, params: matchPath(route.path, path) }))
      .filter((c): c is { route: Route; params: Record<string, string> } => c.params !== undefined);
    const found = candidates.find((c) => c.route.method === req.method);
    if (found) return found;
    if (candidates.length > 0) {
      throw new InvalidRequestError(`${req.method} is not supported on ${path}; use ${candidates.map((c) => c.route.method).join(', ')}.`, {
        code: 'method_not_allowed',
      });
    }
    throw new NotFoundError(`Unknown route: ${req.method} ${path}.`, { code: 'unknown_url' });
  }

  private async billable(ctx: RouteContext, route: BillableRoute): Promise<HttpResponse> {
    const { req, requestId } = ctx;
    const principal = await ctx.authenticate();
    this.o.authenticator.authorize(principal, route.scope);
    const body = validate(route.schema, parseJsonBody(req.body)) as Record<string, unknown>;
    const model = this.o.prices.resolve(body.model as string);
    const upstreamBody = { ...body, model: model.upstreamModel };
    const stream = route.stream(body);
    const wantsUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    const provider = this.o.providers.get(model.provider);
    const operation = provider?.[route.operation] as
      | ((b: Record<string, unknown>, c: ProviderCallContext) => Promise<ProviderResult>)
      | undefined;
    if (!provider || !operation) {
      throw new InvalidRequestError(`The model "${body.model as string}" cannot be used with ${req.path}.`, {
        code: 'unsupported_endpoint',
        param: 'model',
      });
    }
    // The reserve's reads (limits, loop overrides) start now, alongside the BYOK lookup rather than after it.
    if (this.o.byok) this.o.pipeline.prefetch(principal);
    // The user's own key for this provider, if any: held only in this request's closure, never stored or logged.
    const byokKey = this.o.byok ? await this.o.byok.keyFor(principal.userId, model.provider) : undefined;
    if (!byokKey && this.o.providers.needsCallerKey(model.provider)) {
      throw new InvalidRequestError(
        `This gateway has no platform key for ${model.provider}; store your own with PUT /v1/byok/${model.provider} to use "${body.model as string}".`,
        { code: 'provider_key_required', param: 'model' },
      );
    }
    const call: BillableCall = {
      requestId,
      startedAt: ctx.startedAt,
      principal,
      ...(byokKey ? { byok: true } : {}),
      requestType: route.requestType,
      endpoint: req.path,
      model,
      stream,
      estimate: { inputTokens: route.estimateInput(body), maxOutputTokens: route.maxOutput(body, model) },
      userAgent: req.headers['user-agent'],
      fingerprint: this.o.pipeline.fingerprintOf(body),
      clientSignal: req.signal,
      invoke: async ({ signal }) => {
        const calledAt = this.o.clock.now();
        try {
          return await operation.call(provider, upstreamBody, {
            requestId,
            signal,
            callerWantsStreamUsage: wantsUsage,
            ...(byokKey ? { apiKeyOverride: byokKey } : {}),
            ...(req.headers['anthropic-version'] ? { anthropicVersion: req.headers['anthropic-version'] } : {}),
            ...(req.headers['anthropic-beta'] ? { anthropicBeta: req.headers['anthropic-beta'] } : {}),
          });
        } finally {
          if (this.o.observers?.length) this.upstreamMs.set(requestId, Math.max(0, this.o.clock.now() - calledAt));
        }
      },
    };
    const outcome = await this.o.pipeline.run(call);
    if (outcome.kind === 'error') {
      return { ...errorResponse(ctx.dialect, outcome.error, outcome.headers), after: outcome.after };
    }
    if (outcome.kind === 'json') return { ...jsonResponse(200, outcome.body, outcome.headers), after: outcome.after };
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...outcome.headers },
      body: outcome.body,
      after: outcome.after,
    };
  }

  private async models(ctx: RouteContext): Promise<HttpResponse> {
    await ctx.authenticate();
    const data = this.o.prices.listModels().map((m) => ({ id: m.id, object: 'model', created: 0, owned_by: m.provider }));
    return jsonResponse(200, { object: 'list', data });
  }

  /** The caller's own spend and remaining budgets, for its key, user and org. */
  private async usage(ctx: RouteContext): Promise<HttpResponse> {
    const principal: Principal = await ctx.authenticate();
    const pipeline = this.o.pipeline;
    const scopes = pipeline.scopesOf(principal).filter((s) => s !== 'platform');
    const limits = await pipeline.limitsOf(scopes);
    const refs = pipeline.countersFor(scopes, limits, this.o.clock.now(), ctx.requestId);
    const values = await pipeline.readCounters(refs);
    const byScope = scopes.map((scope) => ({
      scope,
      windows: Object.fromEntries(
        WINDOWS.map((w) => {
          const v = values.find((x) => x.ref.scope === scope && x.ref.window === w);
          const limit = limits.get(scope)?.[w];
          return [
            w,
            {
              window: v?.ref.windowKey,
              spent_usd: formatUsd(v?.spent ?? 0),
              reserved_usd: formatUsd(v?.reserved ?? 0),
              requests: v?.requests ?? 0,
              limit_usd: limit === undefined ? null : formatUsd(limit),
              remaining_usd: limit === undefined ? null : formatUsd(Math.max(0, limit - (v?.committed ?? 0))),
            },
          ];
        }),
      ),
    }));
    return jsonResponse(200, { object: 'usage', key_id: principal.keyId, user_id: principal.userId, scopes: byScope });
  }
}
