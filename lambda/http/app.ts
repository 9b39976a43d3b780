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
import { type RequestedCap, requestedCapFor } from '../core/output-cap';
import { knownMaxOutputTokens } from '../core/output-limits';
import type { BillableCall, RequestPipeline } from '../core/pipeline';
import { SPEND_HEADERS, type SpendLayer } from '../core/routing/spend-layer';
import type { PriceBook, ResolvedModel } from '../core/pricing';
import { estimateChatInputTokens, estimateEmbeddingInputTokens, estimateMessagesInputTokens, inputTokensFor } from '../core/tokens';
import type { KeyScope, RequestType, UsageRecord } from '../core/types';
import { WINDOWS } from '../core/windows';
import type { ChatCompletionBody, MessagesBody, Provider, ProviderCallContext, ProviderResult } from '../providers/contract';
import type { ProviderRegistry } from '../providers/registry';
import { CredentialRedactor } from '../core/credential-redactor';
import type { UsageStore } from '../core/stores';
import { createClientRoutes } from './client-routes';
import { type Dialect, dialectOf, errorResponse, jsonResponse } from './dialects';
import { checkOutputCap, checkRequestBody, checkStoredByokKey, decodePathParam, DEFAULT_INPUT_LIMITS, forwardedHeader, type InputLimits } from './input-boundary';
import { checkResponsesFor, checkResponsesRequest, estimateResponsesInputTokens, responsesOperation, responsesSchema } from './responses-routes';
import { checkMessagesFor, messagesOperation } from './messages-routes';
import { chatCompletionSchema, embeddingsSchema, messagesSchema, parseJsonBody, validate } from './schemas';
import { type StreamDialect, withStreamCost } from './stream-cost';
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
  /** JSON depth and output-cap limits of the input boundary. @default {@link DEFAULT_INPUT_LIMITS} */
  readonly inputLimits?: Partial<InputLimits>;
  /**
   * Scrubs the gateway's credentials (and a call's BYOK key) from every error a caller or a log sees.
   * @default one that knows no credential and scrubs only key-shaped text
   */
  readonly redactor?: CredentialRedactor;
  /** Recorded requests, for `GET /v1/usage/requests/{id}`; without it that route answers 404. */
  readonly usage?: Pick<UsageStore, 'findRequest'>;
  /**
   * Response cache, routing rules and fallback in front of the pipeline (lambda/core/routing/spend-layer.ts);
   * without it every request goes to the model it names, once.
   */
  readonly spend?: Pick<SpendLayer, 'serve'>;
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
  readonly error?: {
    readonly kind: ErrorKind;
    readonly code?: string;
    readonly message: string;
    /** The error's own response headers (scope of a budget or circuit, rate-limit dimensions, Retry-After). */
    readonly headers?: Readonly<Record<string, string>>;
  };
  readonly principal?: Pick<Principal, 'keyId' | 'userId' | 'orgId'>;
  /** The usage record, for requests that reached a provider (or were reserved for). */
  readonly usage?: UsageRecord;
  /** How long the provider took to answer (to its first byte, for streams), for requests that called one. */
  readonly upstreamMs?: number;
  /** The tightest budget left after this request, as its `x-tollgate-budget-*` headers told the caller. */
  readonly budget?: { readonly scope: string; readonly remainingUsd: string };
  /** What the spend layer did, as its `x-tollgate-cache*` and `x-tollgate-fallback` headers told the caller. */
  readonly spend?: { readonly cache?: 'hit' | 'miss'; readonly savedUsd?: string; readonly fallback?: string };
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
      params[p[i]!.slice(1)] = decodePathParam(p[i]!.slice(1), a[i]!);
    } else if (p[i] !== a[i]) return undefined;
  }
  return params;
}

type ProviderOperation = (body: Record<string, unknown>, ctx: ProviderCallContext) => Promise<ProviderResult>;

/** A completion-like route: how to validate it, estimate it, and call a provider for it. */
interface BillableRoute {
  readonly requestType: RequestType;
  readonly scope: KeyScope;
  readonly schema: Parameters<typeof validate>[0];
  estimateInput(body: Record<string, unknown>): number;
  /** The output cap per choice (core/output-cap.ts); undefined for routes without output (embeddings). */
  outputCap(body: Record<string, unknown>, model: ResolvedModel): RequestedCap | undefined;
  /** Output tokens reserved for: the cap times the choices asked for. */
  maxOutput(body: Record<string, unknown>, cap: RequestedCap | undefined): number;
  stream(body: Record<string, unknown>): boolean;
  /** The provider operation that serves this route, by name or chosen per provider. */
  readonly operation: 'chatCompletions' | 'embeddings' | ((provider: Provider) => ProviderOperation | undefined);
  /** Body fields that cap the output, bounded by {@link checkOutputCap}. */
  readonly outputCapFields: readonly string[];
  /** Refusals that need the validated body, before anything is reserved. */
  check?(body: Record<string, unknown>): void;
  /** Refusals that need the provider chosen (a translation it cannot express), before anything is reserved. */
  checkFor?(provider: Provider, body: Record<string, unknown>): void;
  /**
   * The body `provider` is sent (and reserved on), when the route adjusts it for that provider: a Messages
   * request translated to chat completions has its `max_tokens` lowered to the model's own output limit.
   */
  forProvider?(provider: Provider, model: ResolvedModel, body: Record<string, unknown>): Record<string, unknown>;
  /** The wire format of the route's streams, whose usage event gets the call's cost. */
  readonly streamDialect?: StreamDialect;
}

function withModelMax(modelMax: number | undefined): { modelMax?: number } {
  return modelMax === undefined ? {} : { modelMax };
}

/** The provider operation that serves `route`, if the provider has one. */
function operationOf(route: BillableRoute, provider: Provider): ProviderOperation | undefined {
  return typeof route.operation === 'function'
    ? route.operation(provider)
    : (provider[route.operation] as ProviderOperation | undefined)?.bind(provider);
}

export class GatewayApp {
  private readonly routes: readonly Route[];
  private readonly newRequestId: () => string;
  /** Provider latency by request id, kept only while observers are waiting for the request to finish. */
  private readonly upstreamMs = new Map<string, number>();
  /**
   * Errors a billable route answered with without throwing (the pipeline's loop, repeated-turn and velocity
   * refusals, upstream failures after a reservation), by request id, for observers: kept only until notified.
   */
  private readonly answeredErrors = new Map<string, TollgateError>();
  private readonly limits: InputLimits;
  private readonly redactor: CredentialRedactor;
  /** The billable surfaces by path, for {@link GatewayApp.serves}. */
  private readonly billableRoutes: ReadonlyMap<string, BillableRoute>;

  constructor(private readonly o: GatewayAppOptions) {
    this.limits = { ...DEFAULT_INPUT_LIMITS, ...o.inputLimits };
    this.redactor = o.redactor ?? new CredentialRedactor();
    this.newRequestId = o.newRequestId ?? (() => `req_${randomUUID().replace(/-/g, '')}`);
    const outputCap = (body: Record<string, unknown>, model: ResolvedModel, ...fields: string[]): RequestedCap => {
      const requested = fields.map((f) => body[f]).find((v): v is number => typeof v === 'number');
      return requestedCapFor({
        ...(requested !== undefined ? { requested } : {}),
        // The operator's maxOutputTokens, else the family's known limit (only for the default; validation uses
        // the operator's figure or TOLLGATE_MAX_OUTPUT_TOKENS, so a too-low table entry never refuses a call).
        ...withModelMax(model.price.maxOutputTokens ?? knownMaxOutputTokens(model.upstreamModel)),
        defaultMax: o.defaultMaxOutputTokens,
      });
    };
    const chat: BillableRoute = {
      requestType: 'chat',
      scope: 'ai:complete',
      schema: chatCompletionSchema,
      estimateInput: (b) => estimateChatInputTokens(b as ChatCompletionBody),
      outputCap: (b, m) => outputCap(b, m, 'max_completion_tokens', 'max_tokens'),
      // n choices each produce up to the cap.
      maxOutput: (b, cap) => (cap?.tokens ?? 0) * (typeof b.n === 'number' ? b.n : 1),
      stream: (b) => b.stream === true,
      operation: 'chatCompletions',
      outputCapFields: ['max_completion_tokens', 'max_tokens'],
      streamDialect: 'chat',
    };
    const messages: BillableRoute = {
      requestType: 'messages',
      scope: 'ai:complete',
      schema: messagesSchema,
      estimateInput: (b) => estimateMessagesInputTokens(b as MessagesBody),
      outputCap: (b, m) => outputCap(b, m, 'max_tokens'),
      maxOutput: (_b, cap) => cap?.tokens ?? 0,
      stream: (b) => b.stream === true,
      operation: (provider) => messagesOperation(provider),
      checkFor: checkMessagesFor,
      forProvider: (provider, model, b) => {
        // Anthropic answers as sent; a chat provider refuses a cap above the model's own limit (Claude Code sends
        // 32k–128k whatever the model), so it is lowered to that limit and reserved at it.
        if (provider.messages) return b;
        const limit = model.price.maxOutputTokens ?? knownMaxOutputTokens(model.upstreamModel);
        return limit !== undefined && typeof b.max_tokens === 'number' && b.max_tokens > limit ? { ...b, max_tokens: limit } : b;
      },
      outputCapFields: ['max_tokens'],
      streamDialect: 'messages',
    };
    const responses: BillableRoute = {
      requestType: 'chat',
      scope: 'ai:complete',
      schema: responsesSchema,
      estimateInput: (b) => estimateResponsesInputTokens(b),
      outputCap: (b, m) => outputCap(b, m, 'max_output_tokens'),
      maxOutput: (_b, cap) => cap?.tokens ?? 0,
      stream: (b) => b.stream === true,
      operation: (provider) => responsesOperation(provider, o.clock),
      check: checkResponsesRequest,
      checkFor: checkResponsesFor,
      outputCapFields: ['max_output_tokens'],
      streamDialect: 'responses',
    };
    const embeddings: BillableRoute = {
      requestType: 'embeddings',
      scope: 'ai:embed',
      schema: embeddingsSchema,
      estimateInput: (b) => estimateEmbeddingInputTokens(b.input),
      outputCap: () => undefined,
      maxOutput: () => 0,
      stream: () => false,
      operation: 'embeddings',
      outputCapFields: [],
    };
    this.billableRoutes = new Map([
      ['/v1/chat/completions', chat],
      ['/v1/messages', messages],
      ['/v1/embeddings', embeddings],
      ['/v1/responses', responses],
    ]);
    this.routes = [
      { method: 'POST', path: '/v1/chat/completions', handler: (c) => this.billable(c, chat) },
      { method: 'POST', path: '/v1/messages', handler: (c) => this.billable(c, messages) },
      { method: 'POST', path: '/v1/embeddings', handler: (c) => this.billable(c, embeddings) },
      { method: 'POST', path: '/v1/responses', handler: (c) => this.billable(c, responses) },
      ...createClientRoutes({
        authenticator: o.authenticator,
        prices: o.prices,
        providers: o.providers,
        clock: o.clock,
        ...(o.usage ? { usage: o.usage } : {}),
      }),
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
      dialect: dialectOf(req.path, req.headers),
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
      checkRequestBody(req, this.limits);
      const matched = this.match(req);
      if (!matched.route) {
        // Authentication comes before route lookup: without a valid key, an unknown route is a 401 too.
        await ctx.authenticate();
        throw matched.error;
      }
      params = matched.params;
      res = await matched.route.handler(ctx);
      res = { ...res, headers: { ...res.headers, 'x-request-id': requestId } };
    } catch (err) {
      error = this.redactor.redactError(asTollgateError(err));
      res = this.fail(ctx, error);
    }
    const observers = this.o.observers ?? [];
    const answered = this.answeredErrors.get(requestId);
    this.answeredErrors.delete(requestId);
    if (observers.length === 0) return res;
    error ??= answered;
    const settle = res.after;
    const status = res.status;
    const budgetScope = res.headers['x-tollgate-budget-scope'];
    const budgetRemaining = res.headers['x-tollgate-budget-remaining-usd'];
    const cacheState = res.headers[SPEND_HEADERS.cache];
    const spend: NonNullable<RequestEvent['spend']> = {
      ...(cacheState === 'hit' || cacheState === 'miss' ? { cache: cacheState } : {}),
      ...(res.headers[SPEND_HEADERS.cacheSaved] ? { savedUsd: res.headers[SPEND_HEADERS.cacheSaved] } : {}),
      ...(res.headers[SPEND_HEADERS.fallback] ? { fallback: res.headers[SPEND_HEADERS.fallback] } : {}),
    };
    // A key refused before it became a principal (revoked, expired, suspended) is named by the error.
    const who = principal ?? error?.subject;
    const notify = (usage: UsageRecord | undefined) => {
      const upstreamMs = this.upstreamMs.get(requestId);
      this.upstreamMs.delete(requestId);
      const event: RequestEvent = {
        requestId,
        method: req.method,
        path: req.path,
        status,
        durationMs: Math.max(0, this.o.clock.now() - ctx.startedAt),
        ...(error
          ? { error: { kind: error.kind, ...(error.code ? { code: error.code } : {}), message: error.message, ...(Object.keys(error.headers).length ? { headers: error.headers } : {}) } }
          : {}),
        ...(who ? { principal: { keyId: who.keyId, userId: who.userId, ...(who.orgId ? { orgId: who.orgId } : {}) } } : {}),
        ...(usage ? { usage } : {}),
        ...(upstreamMs !== undefined ? { upstreamMs } : {}),
        ...(budgetScope && budgetRemaining ? { budget: { scope: budgetScope, remainingUsd: budgetRemaining } } : {}),
        ...(Object.keys(spend).length ? { spend } : {}),
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

  private match(req: HttpRequest): { route: Route; params: Record<string, string> } | { route?: undefined; error: TollgateError } {
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
    return { error: new NotFoundError(`Unknown route: ${req.method} ${path}.`, { code: 'unknown_url' }) };
  }

  /**
   * Whether `modelName` can answer requests to the billable surface `path` (the same test a request meets):
   * `undefined` when the model or the surface is unknown here. Used to check routing chains at start.
   */
  serves(modelName: string, path: string): boolean | undefined {
    const route = this.billableRoutes.get(path);
    if (!route) return undefined;
    let model: ResolvedModel;
    try {
      model = this.o.prices.resolve(modelName);
    } catch {
      return undefined;
    }
    const provider = this.o.providers.get(model.provider);
    return provider !== undefined && operationOf(route, provider) !== undefined;
  }

  private async billable(ctx: RouteContext, route: BillableRoute): Promise<HttpResponse> {
    const { req, requestId } = ctx;
    const principal = await ctx.authenticate();
    this.o.authenticator.authorize(principal, route.scope);
    const body = validate(route.schema, parseJsonBody(req.body)) as Record<string, unknown>;
    route.check?.(body);
    const anthropicVersion = forwardedHeader(req.headers, 'anthropic-version');
    const anthropicBeta = forwardedHeader(req.headers, 'anthropic-beta');
    const stream = route.stream(body);
    const wantsUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    const inputTokens = route.estimateInput(body);
    const fingerprint = this.o.pipeline.fingerprintOf(body);
    const repeatedTurn = this.o.pipeline.repeatedTurnOf(body);
    // The reserve's reads (limits, loop overrides) start now, alongside the BYOK lookup rather than after it.
    if (this.o.byok) this.o.pipeline.prefetch(principal);
    // Callers' own keys used by any attempt: scrubbed from whatever error reaches the caller.
    const byokKeys: string[] = [];
    // One attempt's call at one model: the requested one, or the one a routing rule chose (lambda/core/routing).
    const callFor = async (modelName: string, attemptId: string): Promise<BillableCall> => {
      const model = this.o.prices.resolve(modelName);
      const provider = this.o.providers.get(model.provider);
      const operation = provider ? operationOf(route, provider) : undefined;
      if (!provider || !operation) {
        checkOutputCap(body, route.outputCapFields, model, this.limits);
        throw new InvalidRequestError(`The model "${modelName}" cannot be used with ${req.path}.`, {
          code: 'unsupported_endpoint',
          param: 'model',
        });
      }
      const asSent = { ...body, model: model.upstreamModel };
      const upstreamBody = route.forProvider ? route.forProvider(provider, model, asSent) : asSent;
      checkOutputCap(upstreamBody, route.outputCapFields, model, this.limits);
      // What the provider cannot express is refused here, before anything is reserved or counted.
      if (typeof route.operation === 'string') provider.check?.(route.operation, upstreamBody);
      route.checkFor?.(provider, upstreamBody);
      // The user's own key for this provider, if any: held only in this request's closure, never stored or logged.
      const byokKey = this.o.byok ? await this.o.byok.keyFor(principal.userId, model.provider) : undefined;
      if (byokKey) {
        checkStoredByokKey(byokKey, model.provider);
        byokKeys.push(byokKey);
      }
      if (!byokKey && this.o.providers.needsCallerKey(model.provider)) {
        throw new InvalidRequestError(
          `This gateway has no platform key for ${model.provider}; store your own with PUT /v1/byok/${model.provider} to use "${modelName}".`,
          { code: 'provider_key_required', param: 'model' },
        );
      }
      const cap = route.outputCap(upstreamBody, model);
      return {
        requestId: attemptId,
        startedAt: attemptId === requestId ? ctx.startedAt : this.o.clock.now(),
        principal,
        ...(byokKey ? { byok: true } : {}),
        requestType: route.requestType,
        endpoint: req.path,
        model,
        stream,
        estimate: {
          // The o200k estimate in the model's own tokens (scaled for families without a public tokenizer).
          inputTokens: inputTokensFor(model.provider, inputTokens),
          maxOutputTokens: route.maxOutput(upstreamBody, cap),
          // No cap from the caller: the pipeline lowers the model's to what the budget allows (chooseOutputCap),
          // reserves for it and hands it to the provider, which sends it upstream in its own field.
          ...(cap && !cap.fromCaller ? { gatewayChoosesCap: true } : {}),
        },
        userAgent: req.headers['user-agent'],
        fingerprint,
        ...(repeatedTurn ? { repeatedTurn } : {}),
        clientSignal: req.signal,
        invoke: async ({ signal, maxOutputTokens }) => {
          const calledAt = this.o.clock.now();
          const choices = typeof body.n === 'number' && body.n > 0 ? body.n : 1;
          try {
            return await operation(upstreamBody, {
              requestId: attemptId,
              signal,
              callerWantsStreamUsage: wantsUsage,
              // The cap (per choice) the reservation assumed, for the provider to send when the caller gave none.
              ...(maxOutputTokens !== undefined ? { maxOutputTokens: Math.max(1, Math.floor(maxOutputTokens / choices)) } : {}),
              ...(byokKey ? { apiKeyOverride: byokKey } : {}),
              ...(anthropicVersion ? { anthropicVersion } : {}),
              ...(anthropicBeta ? { anthropicBeta } : {}),
            });
          } catch (err) {
            // Whatever the upstream echoed (our key, the caller's own key) is gone before the pipeline logs it.
            throw this.redactor.redactError(err, byokKey ? [byokKey] : []);
          } finally {
            if (this.o.observers?.length) this.upstreamMs.set(requestId, Math.max(0, this.o.clock.now() - calledAt));
          }
        },
      };
    };
    const outcome = this.o.spend
      ? await this.o.spend.serve({ requestId, startedAt: ctx.startedAt, principal, endpoint: req.path, body, headers: req.headers, stream, inputTokens, callFor })
      : await this.o.pipeline.run(await callFor(body.model as string, requestId));
    if (outcome.kind === 'error') {
      const error = this.redactor.redactError(outcome.error, byokKeys);
      if (this.o.observers?.length) this.answeredErrors.set(requestId, error);
      return { ...errorResponse(ctx.dialect, error, outcome.headers), after: outcome.after };
    }
    if (outcome.kind === 'json') return { ...jsonResponse(200, outcome.body, outcome.headers), after: outcome.after };
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...outcome.headers },
      body: this.redactor.redactStream(
        route.streamDialect
          ? withStreamCost(outcome.body, {
              dialect: route.streamDialect,
              model: this.servedModel(outcome.headers, body),
              requestId,
              // A cache hit replays the usage of the call that filled it, but costs nothing.
              ...(outcome.headers[SPEND_HEADERS.cache] === 'hit' ? { costMicros: 0 } : {}),
            })
          : outcome.body,
        byokKeys,
      ),
      after: outcome.after,
    };
  }

  /** The model that served a call: the one a routing rule or fallback chose (its header), else the one named. */
  private servedModel(headers: Readonly<Record<string, string>>, body: Record<string, unknown>): ResolvedModel {
    const routed = headers[SPEND_HEADERS.model];
    if (routed) {
      try {
        return this.o.prices.resolve(routed);
      } catch {
        // A header naming no priced model: price the stream as the model the caller named.
      }
    }
    return this.o.prices.resolve(body.model as string);
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
