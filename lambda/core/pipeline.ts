/**
 * The request path after authentication: reserve → forward → settle.
 *
 *   caller ──► reserve (1 TransactWriteItems: rate buckets + every budget counter + the hold)
 *                 │ denied: 429, nothing written
 *                 ▼
 *              forward to the provider ──► bytes to the caller as they arrive
 *                 │                           (budget read runs alongside the upstream call)
 *                 ▼ after the last byte
 *              settle (1 TransactWriteItems: drop the hold, add the actual cost, write the usage record)
 *
 * Every failure after the hold (provider error, timeout, client gone) still settles: the hold is released and
 * the failure recorded. A stream that ends without reported usage is charged its reservation, never $0.
 *
 * Guardrails ride in the same two transactions: reserve also checks the scopes' circuits and counts the
 * request's fingerprint for the loop guard (429 `circuit_open` / `loop_detected`, nothing forwarded); settle
 * also records the upstream outcome on the fingerprint. Tier alerts and circuit trips are decided after
 * settle, off the hot path (core/guardrails/alerts.ts).
 */
import type { ProviderCallContext, ProviderResult } from '../providers/contract';
import type { Principal } from './auth';
import { byokScopesOf } from './byok/scope';
import type { Clock } from './clock';
import { isPreamble, type StreamError, streamErrorOf } from './stream-errors';
import { SseParser } from '../providers/sse';
import { asTollgateError, LoopDetectedError, SpendVelocityError, type TollgateError, UpstreamError } from './errors';
import { type AlertSink, crossingsOf, recordCrossings } from './guardrails/alerts';
import { countersPastLimit, overshootAlert, overshootOf } from './guardrails/overshoot';
import { type DefaultLimits, effectiveLimits, keyRateLimits, NO_DEFAULT_LIMITS } from './guardrails/defaults';
import { isEmptyAnswer, loopCheckFor, type LoopCheck, repeatedTurns, type RepeatedTurn, requestFingerprint } from './guardrails/loop-guard';
import { type GuardrailSettings, loopSettingsFor, type LoopOverrides } from './guardrails/settings';
import { baselineHourKey, VelocityBaselines, velocityScopes } from './guardrails/velocity';
import { chooseOutputCap } from './output-cap';
import type { Logger } from './log';
import { displayUsd, formatUsd, type MicroUsd } from './money';
import { costOf, maxCostOf, type ResolvedModel } from './pricing';
import type {
  CircuitRef,
  CounterRef,
  CounterValue,
  GuardrailStore,
  KeyStore,
  Ledger,
  RateCharge,
  RateState,
  Reservation,
} from './stores';
import type { BudgetLimits, RequestType, ScopeId, TokenUsage, UsageOutcome, UsageRecord } from './types';
import { WINDOWS, windowBounds, windowKey } from './windows';
import { settleWithRetries, type SettleRetryOptions } from './settle-retry';

/**
 * How long past its cache time a scope's limits (and a key's loop overrides) may still serve requests while a
 * fresh read runs in the background: a key-cache miss on a busy instance then costs the key read and the
 * admission, not a third round trip for limits that rarely change. A limit change reaches an instance within
 * the cache time plus this (an admin change made through this instance clears its cache at once). With a cache
 * time of 0 (TOLLGATE_AUTH_CACHE_MS=0) nothing is served stale.
 */
export const STALE_LIMITS_MS = 30_000;

export interface PipelineOptions {
  readonly ledger: Ledger;
  readonly keys: KeyStore;
  readonly clock: Clock;
  readonly log: Logger;
  /** How long budget limits are cached in memory. */
  readonly limitsCacheMs: number;
  readonly holdTtlMs: number;
  readonly platformShards: number;
  readonly upstreamTimeoutMs: number;
  /**
   * Retries of a settle the store refused for being unreachable (bounded, with backoff); after them the hold
   * is left for the sweeper, which charges its full reservation.
   * @default 4 attempts, 250 ms × 4ⁿ apart (core/settle-retry.ts)
   */
  readonly settleRetry?: SettleRetryOptions;
  /**
   * Limits of keys, users and the platform that set none of their own (core/guardrails/defaults.ts).
   * @default none (the composition root passes the configured ones)
   */
  readonly defaults?: DefaultLimits;
  /** The least output a gateway-chosen cap reserves (core/output-cap.ts). @default 1024 */
  readonly minOutputTokens?: number;
  /** Circuit breaker, loop guard and tier alerts; without it none of them run. */
  readonly guardrails?: {
    readonly store: GuardrailStore;
    readonly settings: GuardrailSettings;
    /** Told of every alert as it is recorded (locally: printed); in AWS the dispatcher publishes the outbox. */
    readonly sink?: AlertSink;
  };
}

/** One billable call, already authenticated, validated, routed and estimated. */
export interface BillableCall {
  readonly requestId: string;
  readonly startedAt: number;
  readonly principal: Principal;
  readonly requestType: RequestType;
  readonly endpoint: string;
  readonly model: ResolvedModel;
  readonly stream: boolean;
  readonly estimate: {
    readonly inputTokens: number;
    /** The caller's cap (or, when `gatewayChoosesCap`, the model's cap, which the gateway may lower). */
    readonly maxOutputTokens: number;
    /** The caller set no cap: the gateway picks one (core/output-cap.ts), reserves for it and sends it upstream. */
    readonly gatewayChoosesCap?: boolean;
  };
  readonly userAgent?: string;
  readonly byok?: boolean;
  /**
   * The loop guard's fingerprint of the normalized request body (core/guardrails/loop-guard.ts
   * `requestFingerprint`); without one the loop guard does not apply to the call.
   */
  readonly fingerprint?: string;
  /** A turn the conversation keeps repeating (`repeatedTurnOf`): the call is a loop and is refused. */
  readonly repeatedTurn?: RepeatedTurn;
  /**
   * Aborted when the caller goes away. A stream's upstream call is stopped with it (nobody reads the tokens);
   * a non-stream call runs to its end and is settled with its real usage (the provider bills it anyway).
   */
  readonly clientSignal: AbortSignal;
  /** Calls the provider; `maxOutputTokens` is set when the gateway chose the cap (send it upstream). */
  readonly invoke: (ctx: Pick<ProviderCallContext, 'signal'> & { readonly maxOutputTokens?: number }) => Promise<ProviderResult>;
}

export type CallOutcome =
  | { readonly kind: 'json'; readonly body: unknown; readonly headers: Record<string, string>; readonly after: Settle }
  | { readonly kind: 'stream'; readonly body: AsyncIterable<Uint8Array>; readonly headers: Record<string, string>; readonly after: Settle }
  | { readonly kind: 'error'; readonly error: TollgateError; readonly headers: Record<string, string>; readonly after: Settle };

/** Settles a call after its response; resolves with the usage record written (undefined if settling failed). */
export type Settle = (options?: SettleOptions) => Promise<UsageRecord | undefined>;

export interface SettleOptions {
  /**
   * A fallback answers instead of this failed attempt: the caller did not experience a failure, so the loop
   * guard does not count it against the caller's loop.
   */
  readonly routedAround?: boolean;
}

interface Settlement {
  readonly outcome: UsageOutcome;
  readonly usage: TokenUsage | undefined;
  readonly httpStatus: number;
  readonly endedAt: number;
  /** Whether the provider may have produced output: then missing usage is charged at the reservation. */
  readonly mayHaveOutput: boolean;
  /** A complete answer with nothing in it: a failure for the loop guard. */
  readonly emptyAnswer?: boolean;
  /** A fallback answered instead: not a failure of the caller's loop. */
  readonly routedAround?: boolean;
}

const LAST_USED_EVERY_MS = 60_000;
/** The most of a stream's preamble held back while waiting for its first real event (then it flows as is). */
const PREAMBLE_MAX_BYTES = 16_384;

function hashShard(id: string, shards: number): number {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return h % shards;
}

export class RequestPipeline {
  private readonly limitsCache = new Map<ScopeId, { limits: Promise<BudgetLimits>; at: number }>();
  /** Last committed value read per counter, to answer the remaining-budget headers without a read. */
  private readonly knownCommitted = new Map<string, { committed: MicroUsd; at: number }>();
  private readonly lastTouched = new Map<string, number>();
  /** The read-back of each recent lease or scope pool (see sharedReadBack). */
  private readonly sharedReads = new Map<string, Promise<CounterValue[] | undefined>>();
  private readonly loopCache = new Map<string, { overrides: Promise<LoopOverrides | undefined>; at: number }>();
  private readonly velocity: VelocityBaselines | undefined;
  private readonly defaults: DefaultLimits;

  constructor(private readonly options: PipelineOptions) {
    const v = options.guardrails?.settings.velocity;
    this.velocity = v?.enabled ? new VelocityBaselines(v) : undefined;
    this.defaults = options.defaults ?? NO_DEFAULT_LIMITS;
  }

  /** Scopes a principal's spend counts toward, tightest first in messages. */
  scopesOf(principal: Pick<Principal, 'keyId' | 'userId' | 'orgId'>): ScopeId[] {
    const scopes: ScopeId[] = [`key:${principal.keyId}`, `user:${principal.userId}`];
    if (principal.orgId) scopes.push(`org:${principal.orgId}`);
    scopes.push('platform');
    return scopes;
  }

  /**
   * Effective budget limits of the given scopes (their own, or the defaults), cached for a few seconds;
   * concurrent callers share one read.
   */
  async limitsOf(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    const now = this.options.clock.now();
    const missing: ScopeId[] = [];
    const stale = new Map<ScopeId, Promise<BudgetLimits>>();
    for (const scope of scopes) {
      const hit = this.limitsCache.get(scope);
      if (hit && now - hit.at < this.options.limitsCacheMs) continue;
      missing.push(scope);
      // Read a moment ago and now being read again: this request uses the value it has (see STALE_LIMITS_MS).
      if (hit && this.options.limitsCacheMs > 0 && now - hit.at < this.options.limitsCacheMs + STALE_LIMITS_MS) stale.set(scope, hit.limits);
    }
    if (missing.length > 0) {
      if (this.limitsCache.size >= 10_000) this.limitsCache.clear();
      const fetched = this.options.ledger.getLimitSettings(missing);
      for (const scope of missing) {
        const limits = fetched.then((m) => effectiveLimits(scope, m.get(scope), this.defaults));
        const entry = { limits, at: now };
        const previous = this.limitsCache.get(scope);
        this.limitsCache.set(scope, entry);
        // A failed read is not cached: the next request reads again (or uses the previous value while fresh enough).
        limits.catch(() => {
          if (this.limitsCache.get(scope) !== entry) return;
          if (previous) this.limitsCache.set(scope, previous);
          else this.limitsCache.delete(scope);
        });
      }
    }
    const out = new Map<ScopeId, BudgetLimits>();
    await Promise.all(scopes.map(async (scope) => out.set(scope, await (stale.get(scope) ?? this.limitsCache.get(scope)!.limits))));
    return out;
  }

  /** A key's loop guard overrides, cached like limits. */
  private loopOverridesOf(keyId: string): Promise<LoopOverrides | undefined> {
    const now = this.options.clock.now();
    const hit = this.loopCache.get(keyId);
    if (hit && now - hit.at < this.options.limitsCacheMs) return hit.overrides;
    if (hit && this.options.limitsCacheMs > 0 && now - hit.at < this.options.limitsCacheMs + STALE_LIMITS_MS) {
      // Refreshed in the background; this request uses what was read a moment ago (see STALE_LIMITS_MS).
      void this.readLoopOverrides(keyId, now).catch(() => undefined);
      return hit.overrides;
    }
    return this.readLoopOverrides(keyId, now);
  }

  private readLoopOverrides(keyId: string, now: number): Promise<LoopOverrides | undefined> {
    const overrides = this.options.ledger.getLoopOverrides([keyId]).then((m) => m.get(keyId));
    if (this.loopCache.size > 10_000) this.loopCache.clear();
    const entry = { overrides, at: now };
    this.loopCache.set(keyId, entry);
    overrides.catch(() => {
      if (this.loopCache.get(keyId) === entry) this.loopCache.delete(keyId);
    });
    return overrides;
  }

  /**
   * Starts the reads `run` will need for this principal (limits of its platform and BYOK scopes, its loop
   * overrides) so they run alongside other lookups (the BYOK key) instead of after them: a cold key then
   * costs two sequential round trips before the reserve, not three. Never rejects; `run` sees any failure.
   */
  prefetch(principal: Principal): void {
    void this.limitsOf([...this.scopesOf(principal), ...byokScopesOf(principal)]).catch(() => undefined);
    if (this.options.guardrails) void this.loopOverridesOf(principal.keyId).catch(() => undefined);
  }

  /** The loop guard's fingerprint of a validated request body (BillableCall.fingerprint). */
  fingerprintOf(body: Readonly<Record<string, unknown>>): string {
    return requestFingerprint(body);
  }

  /** The turn a conversation keeps repeating, if it repeats one often enough to be a loop (BillableCall.repeatedTurn). */
  repeatedTurnOf(body: Readonly<Record<string, unknown>>): RepeatedTurn | undefined {
    const guard = this.options.guardrails;
    return guard ? repeatedTurns(body, guard.settings.loop.maxTurnRepeats) : undefined;
  }

  /** The circuit items a request must find closed: one per scope, the platform's in the request's shard. */
  circuitsFor(scopes: readonly ScopeId[], requestId: string): CircuitRef[] {
    const shard = hashShard(requestId, this.options.platformShards);
    return scopes.map((scope) => (scope === 'platform' ? { scope, shard } : { scope }));
  }

  /** Current values of counters (for usage reports). */
  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    return this.options.ledger.readCounters(refs);
  }

  /** Forgets cached limits (after an admin change in this process). */
  invalidateLimits(): void {
    this.limitsCache.clear();
  }

  /** Every counter a request touches: each scope × each window; limits attached where set. */
  countersFor(scopes: readonly ScopeId[], limits: Map<ScopeId, BudgetLimits>, now: number, requestId: string): CounterRef[] {
    const refs: CounterRef[] = [];
    const platformShard = hashShard(requestId, this.options.platformShards);
    // Each window's key and end, once per request rather than once per scope.
    const windows = WINDOWS.map((window) => ({ window, windowKey: windowKey(window, now), windowEnd: windowBounds(window, now).end }));
    for (const scope of scopes) {
      for (const { window, windowKey: key, windowEnd } of windows) {
        const limit = limits.get(scope)?.[window];
        const base = { scope, window, windowKey: key, windowEnd };
        if (scope === 'platform') {
          // Each shard enforces its share, so no single item is hot and the sum never passes the limit.
          refs.push({
            ...base,
            shard: platformShard,
            ...(limit === undefined ? {} : { limit: Math.floor(limit / this.options.platformShards) }),
          });
        } else {
          refs.push({ ...base, ...(limit === undefined ? {} : { limit }) });
        }
      }
    }
    return refs;
  }

  async run(call: BillableCall): Promise<CallOutcome> {
    const { clock, ledger, log } = this.options;
    // The arrival time is the hold's time too, so the usage record of a late settle and the sweeper's
    // "abandoned" record share a key and the settle replaces it.
    const now = call.startedAt;
    const { principal } = call;
    // BYOK spend is the caller's own money: only their BYOK budget, never platform, org or platform-funded ones.
    const scopes = call.byok ? byokScopesOf(principal) : this.scopesOf(principal);
    const guard = this.options.guardrails;
    const loopWanted = guard !== undefined && call.fingerprint !== undefined;
    const [limits, loopOverrides] = await Promise.all([
      this.limitsOf(scopes),
      loopWanted ? this.loopOverridesOf(principal.keyId) : Promise.resolve(undefined),
    ]);
    const loop: LoopCheck | undefined =
      guard && call.fingerprint !== undefined
        ? loopCheckFor(
            {
              keyId: principal.keyId,
              // Keyed by user: the same loop through several keys is one loop, and a service acting for
              // many users sees each user's requests apart.
              userId: principal.userId,
              model: call.model.id,
              bodyFingerprint: call.fingerprint,
            },
            now,
            loopSettingsFor(guard.settings.loop, loopOverrides),
          )
        : undefined;
    if (guard && call.repeatedTurn) {
      const err = repeatedTurnError(call.repeatedTurn, principal.keyId);
      return { kind: 'error', error: err, headers: {}, after: () => this.alertRepeatedTurn(call, call.repeatedTurn!, err).then(() => undefined) };
    }
    const counters = this.countersFor(scopes, limits, now, call.requestId);
    const rates = keyRateLimits(principal.key, this.defaults, { service: principal.service !== undefined });
    const cap = chooseOutputCap({
      ...(call.estimate.gatewayChoosesCap ? {} : { requested: call.estimate.maxOutputTokens }),
      modelCap: call.estimate.maxOutputTokens,
      inputTokens: call.estimate.inputTokens,
      price: call.model.price,
      ...this.remainingOf(counters),
      ...(rates.tpm ? { tokensPerMinute: rates.tpm } : {}),
      floorTokens: this.options.minOutputTokens ?? 1_024,
    });
    const estimate = { inputTokens: call.estimate.inputTokens, maxOutputTokens: cap.maxOutputTokens };
    const rateCharges: RateCharge[] = [];
    if (rates.rpm) rateCharges.push({ keyId: principal.keyId, dimension: 'requests', limitPerMinute: rates.rpm, amount: 1 });
    if (rates.tpm) {
      // The token bucket paces throughput; money is bounded by the budgets. At admission it takes the input and
      // the output cap, but at most a quarter of a minute's capacity for the output, so a caller's large
      // max_tokens (the AI SDK sends the model's maximum) is not refused as "too large" and does not need an
      // empty bucket; settle then charges the bucket the actual tokens, so the sustained rate still holds.
      const admitted = estimate.inputTokens + Math.min(estimate.maxOutputTokens, Math.floor(rates.tpm / 4));
      rateCharges.push({ keyId: principal.keyId, dimension: 'tokens', limitPerMinute: rates.tpm, amount: admitted });
    }
    const amount = maxCostOf(call.model.price, estimate);
    // The velocity breaker counts the input and a modest output at admission; settle puts in the real cost.
    const admitted = Math.min(amount, maxCostOf(call.model.price, { inputTokens: estimate.inputTokens, maxOutputTokens: this.options.minOutputTokens ?? 1_024 }));
    const velocity = this.velocity && guard && !call.byok ? this.velocity.chargesFor(scopes, now, admitted) : [];

    // Throws 429 (rate, budget, open circuit) or 503 before anything reaches the provider; a loop becomes a
    // 429 whose alert is recorded after the response.
    let reservation: Reservation;
    try {
      reservation = await ledger.reserve({
        requestId: call.requestId,
        now,
        expiresAt: now + this.options.holdTtlMs,
        amount,
        counters,
        rateCharges,
        ...(guard ? { circuits: this.circuitsFor(scopes, call.requestId) } : {}),
        ...(loop ? { loop } : {}),
        ...(velocity.length ? { velocity } : {}),
        context: {
          keyId: principal.keyId,
          userId: principal.userId,
          ...(principal.orgId ? { orgId: principal.orgId } : {}),
          model: call.model.id,
          provider: call.model.provider,
          requestType: call.requestType,
          endpoint: call.endpoint,
          ...(call.stream ? { stream: true } : {}),
          ...(call.byok ? { byok: true } : {}),
        },
      });
    } catch (err) {
      if (err instanceof LoopDetectedError && loop && guard) {
        return { kind: 'error', error: err, headers: {}, after: () => this.alertLoop(call, loop, err).then(() => undefined) };
      }
      if (err instanceof SpendVelocityError && guard) {
        const refused = this.velocityRefusal(err);
        return { kind: 'error', error: refused, headers: {}, after: () => this.recordVelocityTrip(call, refused).then(() => undefined) };
      }
      throw err;
    }

    // Off the critical path: the limited counters after the hold, read while the provider works; they tell
    // settle whether any alert tier is within reach. The remaining-budget headers never wait for this read:
    // they use it if it is already back, else the last values this instance read (see knownRemaining).
    // Shared per lease, and per scope pool (whose grants hold more than its requests take).
    const shared = reservation.leaseId ?? (reservation.pool ? `${reservation.pool.pk}|${reservation.pool.sk}` : undefined);
    const afterHold = shared ? this.sharedReadBack(reservation, shared) : this.readLimited(reservation);
    void this.readBaselines(scopes, now);
    let readBack: CounterValue[] | undefined;
    void afterHold.then((values) => {
      readBack = values;
      if (values) this.remember(values);
    });
    const remaining = () => (readBack ? tightestOf(readBack, limits) : this.knownRemaining(reservation, limits));

    const timeout = AbortSignal.timeout(this.options.upstreamTimeoutMs);
    const upstreamAbort = new AbortController();
    const signal = AbortSignal.any([...(call.stream ? [call.clientSignal] : []), timeout, upstreamAbort.signal]);
    const baseHeaders = rateHeaders(reservation.rateStates);

    const settleWith = (s: Settlement) => (o?: SettleOptions) =>
      this.settle(call, reservation, o?.routedAround ? { ...s, routedAround: true } : s, { limits, afterHold });
    const failureOutcome = (): UsageOutcome =>
      call.clientSignal.aborted ? 'client_disconnected' : timeout.aborted ? 'timeout' : 'upstream_error';

    let result: ProviderResult;
    try {
      result = await call.invoke({ signal, ...(cap.chosenByGateway ? { maxOutputTokens: cap.maxOutputTokens } : {}) });
    } catch (err) {
      const error = timeout.aborted && !call.clientSignal.aborted
        ? new UpstreamError(`The provider did not answer within ${this.options.upstreamTimeoutMs} ms.`, { cause: err })
        : asTollgateError(err);
      if (isGatewayRefusal(error)) {
        // Nothing reached the provider: the hold is released at $0 and the loop guard hears nothing.
        return {
          kind: 'error',
          error,
          headers: baseHeaders,
          after: settleWith({ outcome: 'rejected', usage: undefined, httpStatus: error.status, endedAt: clock.now(), mayHaveOutput: false }),
        };
      }
      log.log('warn', 'upstream call failed', { requestId: call.requestId, model: call.model.id, status: error.status, error: error.message });
      return {
        kind: 'error',
        error,
        headers: baseHeaders,
        after: settleWith({ outcome: failureOutcome(), usage: undefined, httpStatus: error.status, endedAt: clock.now(), mayHaveOutput: false }),
      };
    }

    if (result.kind === 'json') {
      const cost = result.usage ? costOf(call.model.price, result.usage) : reservation.amount;
      const headers = { ...baseHeaders, 'x-tollgate-cost-usd': formatUsd(cost), ...budgetHeaders(remaining(), amount - cost) };
      const emptyAnswer = loop !== undefined && isEmptyAnswer(result.body);
      return {
        kind: 'json',
        body: result.body,
        headers,
        // A caller that left while the provider answered is billed like any other (the provider billed us).
        after: settleWith({
          outcome: call.clientSignal.aborted ? 'client_disconnected' : 'ok',
          usage: result.usage,
          httpStatus: 200,
          endedAt: clock.now(),
          mayHaveOutput: true,
          emptyAnswer,
        }),
      };
    }

    // Stream: hold back the provider's preamble (nothing for the caller yet) until the first real event, so an
    // error the provider sends before any token becomes its error in the caller's dialect (and a fallback may
    // answer) instead of an empty 200. Charged at the usage it reported, else its reservation: the gateway
    // cannot prove the provider spent nothing.
    const upstream = result;
    const source = upstream.body[Symbol.asyncIterator]();
    const sse = new SseParser();
    const held: Uint8Array[] = [];
    let heldBytes = 0;
    let early: StreamError | undefined;
    let sourceDone = false;
    // An error after the first real event counts as one that reached the caller, even in the same chunk.
    let failedInStream = false;
    try {
      let started = false;
      while (!started && !early && heldBytes < PREAMBLE_MAX_BYTES) {
        const next = await source.next();
        if (next.done) {
          sourceDone = true;
          break;
        }
        held.push(next.value);
        heldBytes += next.value.byteLength;
        for (const event of sse.push(next.value)) {
          const error = streamErrorOf(event);
          if (error && !started) early ??= error;
          else if (error) failedInStream = true;
          else if (!isPreamble(event)) started = true;
        }
      }
    } catch (err) {
      upstreamAbort.abort();
      const error = asTollgateError(err);
      return {
        kind: 'error',
        error: error instanceof UpstreamError ? error : new UpstreamError('The provider stream failed before any output.', { cause: err }),
        headers: baseHeaders,
        after: settleWith({ outcome: failureOutcome(), usage: upstream.usage(), httpStatus: 502, endedAt: clock.now(), mayHaveOutput: true }),
      };
    }
    if (early) {
      upstreamAbort.abort();
      await source.return?.(undefined);
      log.log('warn', 'provider error inside a 200 stream', { requestId: call.requestId, model: call.model.id, type: early.type });
      const error = new UpstreamError(early.message, { status: early.status, code: early.type });
      return {
        kind: 'error',
        error,
        headers: baseHeaders,
        after: settleWith({ outcome: 'upstream_error', usage: upstream.usage(), httpStatus: early.status, endedAt: clock.now(), mayHaveOutput: true }),
      };
    }

    // Then pass bytes through as they arrive, note how it ended (an error event later is a failure too), settle
    // after the last byte.
    const state: { outcome: UsageOutcome; endedAt: number } = { outcome: 'stream_incomplete', endedAt: now };
    async function* observed(): AsyncGenerator<Uint8Array> {
      let completed = false;
      try {
        for (const chunk of held) yield chunk;
        if (!sourceDone) {
          for (;;) {
            const next = await source.next();
            if (next.done) break;
            if (!failedInStream) for (const event of sse.push(next.value)) if (streamErrorOf(event)) failedInStream = true;
            yield next.value;
          }
        }
        if (!failedInStream) for (const event of sse.end()) if (streamErrorOf(event)) failedInStream = true;
        completed = true;
      } catch (err) {
        const failure = failureOutcome();
        state.outcome = failure === 'upstream_error' ? 'stream_incomplete' : failure;
        throw err;
      } finally {
        if (completed) state.outcome = failedInStream ? 'upstream_error' : 'ok';
        else if (call.clientSignal.aborted && state.outcome === 'stream_incomplete') state.outcome = 'client_disconnected';
        state.endedAt = clock.now();
        // The caller stopped reading: stop the upstream generating tokens nobody will read.
        if (!completed) {
          upstreamAbort.abort();
          await source.return?.(undefined);
        }
      }
    }
    return {
      kind: 'stream',
      body: observed(),
      headers: { ...baseHeaders, ...budgetHeaders(remaining(), 0) },
      after: () =>
        this.settle(
          call,
          reservation,
          { outcome: state.outcome, usage: upstream.usage(), httpStatus: 200, endedAt: state.endedAt, mayHaveOutput: true },
          { limits, afterHold },
        ),
    };
  }

  /** Keeps the committed values just read, for later requests' headers. */
  private remember(values: readonly CounterValue[]): void {
    const now = this.options.clock.now();
    if (this.knownCommitted.size > 10_000) this.knownCommitted.clear();
    for (const v of values) {
      const key = counterIdentity(v.ref);
      const known = this.knownCommitted.get(key);
      if (!known || known.at <= now) this.knownCommitted.set(key, { committed: v.committed, at: now });
    }
  }

  /**
   * The tightest remaining budget without a store read: each limited counter's last value this instance read
   * (in an earlier request's read-back, which included that request's hold) plus this request's hold, or just
   * this hold when the counter was never read here. Advisory: other instances' spend since then is not in it.
   */
  private knownRemaining(reservation: Reservation, limits: Map<ScopeId, BudgetLimits>): { scope: string; remaining: MicroUsd } | undefined {
    const values: CounterValue[] = [];
    for (const ref of reservation.counters) {
      if (ref.limit === undefined) continue;
      const known = this.knownCommitted.get(counterIdentity(ref))?.committed ?? 0;
      values.push({ ref, spent: 0, reserved: 0, requests: 0, committed: known + reservation.amount });
    }
    return tightestOf(values, limits);
  }

  /**
   * The read-back of a request admitted against a lease or taken from a scope pool: one read per lease or pool
   * (taken after its hold or grant, so it includes what that holds: an upper bound of what its requests can
   * add), shared by its requests.
   */
  private sharedReadBack(reservation: Reservation, holder: string): Promise<CounterValue[] | undefined> {
    const known = this.sharedReads.get(holder);
    if (known) return known;
    if (this.sharedReads.size >= 1_000) this.sharedReads.clear();
    const read = this.readLimited(reservation);
    this.sharedReads.set(holder, read);
    return read;
  }

  /** The values of the reservation's limited counters (empty when none is limited, undefined when unreadable). */
  private async readLimited(reservation: Reservation): Promise<CounterValue[] | undefined> {
    const limited = reservation.counters.filter((c) => c.limit !== undefined);
    if (limited.length === 0) return [];
    return this.options.ledger.readCounters(limited).catch(() => undefined);
  }

  /**
   * The tightest budget left among a request's counters, from the values last read here (or the whole limit
   * when none was read): what a gateway-chosen output cap may spend. Platform shards count their share.
   */
  private remainingOf(counters: readonly CounterRef[]): { remainingMicros?: MicroUsd } {
    let tightest: number | undefined;
    for (const c of counters) {
      if (c.limit === undefined) continue;
      const committed = this.knownCommitted.get(counterIdentity(c))?.committed ?? 0;
      const share = c.scope === 'platform' ? committed / this.options.platformShards : committed;
      const left = Math.max(0, c.limit - Math.ceil(share));
      if (tightest === undefined || left < tightest) tightest = left;
    }
    return tightest === undefined ? {} : { remainingMicros: tightest };
  }

  /**
   * Reads the velocity baselines (the previous hour's spend) this instance lacks, off the critical path (the
   * provider is working meanwhile); until read, the floor alone is the ceiling.
   */
  private async readBaselines(scopes: readonly ScopeId[], now: number): Promise<void> {
    if (!this.velocity) return;
    const missing = this.velocity.missing(velocityScopes(scopes), now);
    if (missing.length === 0) return;
    const hourKey = baselineHourKey(now);
    const prev = now - 3_600_000;
    try {
      const values = await this.options.ledger.readCounters(
        missing.map((scope) => ({ scope, window: 'hour' as const, windowKey: hourKey, windowEnd: windowBounds('hour', prev).end })),
      );
      for (const scope of missing) this.velocity.remember(scope, now, values.find((v) => v.ref.scope === scope)?.spent ?? 0);
    } catch (err) {
      this.options.log.log('warn', 'velocity baseline read failed', { error: err instanceof Error ? err.message : String(err) });
    }
  }

  /** The velocity refusal as the caller sees it: Retry-After is the circuit's cooldown, not the window's end. */
  private velocityRefusal(err: SpendVelocityError): SpendVelocityError {
    const cooldownMs = this.options.guardrails?.settings.velocity?.cooldownMs ?? 0;
    return new SpendVelocityError(err.message, err.trip, {
      code: 'circuit_open',
      headers: { ...err.headers, 'Retry-After': String(Math.max(1, Math.ceil(cooldownMs / 1000))) },
    });
  }

  /**
   * After a velocity refusal: counts the trip (once per velocity window) and opens the scope's circuit — for
   * the cooldown on the day's first trip, until an operator acknowledges it on a later one — with one alert.
   */
  private async recordVelocityTrip(call: BillableCall, err: SpendVelocityError): Promise<void> {
    const guard = this.options.guardrails;
    const settings = guard?.settings.velocity;
    if (!guard || !settings) return;
    const { scope, window, spentMicros, ceilingMicros } = err.trip;
    const now = this.options.clock.now();
    const day = new Date(now).toISOString().slice(0, 10);
    try {
      const trips = await guard.store.countVelocityTrip(scope, day, window);
      if (trips === undefined) return;
      const escalate = trips >= 2;
      const why = `${displayUsd(spentMicros)} within ${Math.round(settings.windowMs / 60_000)} minutes, over its ceiling of ${displayUsd(ceilingMicros)}`;
      const alert = {
        id: `velocity-${call.requestId}`,
        at: now,
        type: escalate ? 'spend_velocity_escalation' : 'spend_velocity',
        severity: 'critical' as const,
        scope,
        summary: escalate
          ? `${scope} tripped the spend-velocity breaker again today (${why}); its circuit is open until an operator acknowledges it`
          : `${scope} tripped the spend-velocity breaker (${why}); its circuit is open until ${new Date(now + settings.cooldownMs).toISOString()}`,
        details: { scope, keyId: call.principal.keyId, userId: call.principal.userId, model: call.model.id, spentMicros, ceilingMicros, trips },
      };
      const fresh = await guard.store.recordAlert(alert, {
        dedupeKey: `velocity#${day}#w${window}`,
        dedupeUntil: err.trip.windowEnd + settings.cooldownMs,
        openCircuit: {
          scope,
          cause: escalate ? 'escalation' : 'velocity',
          openedAt: now,
          ...(escalate ? {} : { closesAt: now + settings.cooldownMs }),
          reason: escalate ? 'spend velocity tripped twice today' : 'spend velocity over its ceiling',
        },
      });
      if (!fresh) return;
      this.options.log.log('error', 'guardrail alert', { requestId: call.requestId, alertType: alert.type, scope, summary: alert.summary, circuitOpened: true });
      if (guard.sink) await guard.sink.publish(alert);
    } catch (e) {
      this.options.log.log('warn', 'velocity trip record failed', { requestId: call.requestId, error: e instanceof Error ? e.message : String(e) });
    }
  }

  /** Records the alert of a repeated-turn loop, once per user, turn and loop window. */
  private async alertRepeatedTurn(call: BillableCall, turn: RepeatedTurn, err: LoopDetectedError): Promise<void> {
    const guard = this.options.guardrails;
    if (!guard) return;
    const now = this.options.clock.now();
    const windowMs = guard.settings.loop.windowMs;
    const window = Math.floor(now / windowMs);
    const scope: ScopeId = `user:${call.principal.userId}`;
    try {
      const alert = {
        id: `loop-${call.requestId}`,
        at: now,
        type: 'loop_detected',
        severity: 'warning' as const,
        scope,
        summary: `Loop guard stopped user ${call.principal.userId} (key ${call.principal.keyId}) on ${call.model.id}: ${err.message}`,
        details: { keyId: call.principal.keyId, userId: call.principal.userId, model: call.model.id, kind: `repeated_${turn.kind}`, repeats: turn.count },
      };
      const sample = turn.sample.replace(/[^A-Za-z0-9]+/g, '').slice(0, 40);
      const fresh = await guard.store.recordAlert(alert, { dedupeKey: `loopturn#${call.model.id}#${sample}#${window}`, dedupeUntil: (window + 1) * windowMs });
      if (!fresh) return;
      this.options.log.log('warn', 'guardrail alert', { requestId: call.requestId, alertType: alert.type, scope, summary: alert.summary });
      if (guard.sink) await guard.sink.publish(alert);
    } catch (e) {
      this.options.log.log('warn', 'loop alert failed', { requestId: call.requestId, error: e instanceof Error ? e.message : String(e) });
    }
  }

  /**
   * After settle: records tier alerts and trips circuits. TransactWriteItems returns no new values, so the
   * counters are read again, but only when the read after the hold showed a counter within reach of the
   * first tier: `committed` then included every hold in flight (an upper bound of what they will spend), so
   * far below 80 % nothing can have crossed. A failure here is logged, never the caller's problem.
   */
  private async checkTiers(
    call: BillableCall,
    reservation: Reservation,
    cost: MicroUsd,
    ctx: { readonly limits: Map<ScopeId, BudgetLimits>; readonly afterHold: Promise<CounterValue[] | undefined> },
  ): Promise<void> {
    const guard = this.options.guardrails;
    if (!guard) return;
    try {
      const before = await ctx.afterHold;
      const overshoot = Math.max(0, cost - reservation.amount);
      const inReach = (values: readonly CounterValue[]) =>
        values.some((v) => {
          const limit = ctx.limits.get(v.ref.scope)?.[v.ref.window];
          return limit !== undefined && v.committed + overshoot >= 0.8 * limit;
        });
      if (before !== undefined && !inReach(before)) return;
      const limited = reservation.counters.filter((c) => c.limit !== undefined);
      if (limited.length === 0) return;
      const values = await this.options.ledger.readCounters(limited);
      const crossings = crossingsOf(values, ctx.limits, {
        now: this.options.clock.now(),
        lastReservation: reservation.amount,
        cooldownMs: guard.settings.breaker.cooldownMs,
      });
      if (crossings.length === 0) return;
      const recorded = await recordCrossings(crossings, { store: guard.store, settings: guard.settings.breaker, ...(guard.sink ? { sink: guard.sink } : {}) });
      for (const alert of recorded) {
        this.options.log.log(alert.severity === 'critical' ? 'error' : 'warn', 'guardrail alert', {
          requestId: call.requestId,
          alertType: alert.type,
          scope: alert.scope,
          summary: alert.summary,
          ...(alert.type !== 'spend_warning' && alert.details.window === 'hour' ? { circuitOpened: true } : {}),
        });
      }
    } catch (err) {
      this.options.log.log('warn', 'guardrail check failed', { requestId: call.requestId, error: err instanceof Error ? err.message : String(err) });
    }
  }

  /** Records the loop guard's alert (once per fingerprint and window), after the 429 went out. */
  private async alertLoop(call: BillableCall, loop: LoopCheck, err: LoopDetectedError): Promise<void> {
    const guard = this.options.guardrails;
    if (!guard) return;
    const scope: ScopeId = `user:${call.principal.userId}`;
    try {
      const alert = {
        id: `loop-${call.requestId}`,
        at: this.options.clock.now(),
        type: 'loop_detected',
        severity: 'warning' as const,
        scope,
        summary: `Loop guard stopped key ${call.principal.keyId} (user ${call.principal.userId}) on ${call.model.id}: ${err.message}`,
        details: { keyId: call.principal.keyId, userId: call.principal.userId, model: call.model.id, fingerprint: loop.fingerprint.slice(0, 12) },
      };
      const fresh = await guard.store.recordAlert(alert, { dedupeKey: `loop#${loop.fingerprint}#${loop.window}`, dedupeUntil: loop.windowEnd });
      if (!fresh) return;
      this.options.log.log('warn', 'guardrail alert', { requestId: call.requestId, alertType: alert.type, scope, summary: alert.summary });
      if (guard.sink) await guard.sink.publish(alert);
    } catch (e) {
      this.options.log.log('warn', 'loop alert failed', { requestId: call.requestId, error: e instanceof Error ? e.message : String(e) });
    }
  }

  private async settle(
    call: BillableCall,
    reservation: Reservation,
    s: Settlement,
    ctx: { readonly limits: Map<ScopeId, BudgetLimits>; readonly afterHold: Promise<CounterValue[] | undefined> },
  ): Promise<UsageRecord | undefined> {
    const { ledger, log } = this.options;
    const usage = s.usage;
    // No usage from the provider: a failure before any output costs nothing; an answer or stream that may
    // have produced output without reporting usage is charged its reservation (the most it could cost), never $0.
    const cost = usage ? costOf(call.model.price, usage) : s.mayHaveOutput ? reservation.amount : 0;
    const p = call.principal;
    const record: UsageRecord = {
      requestId: call.requestId,
      timestamp: new Date(call.startedAt).toISOString(),
      userId: p.userId,
      keyId: p.keyId,
      ...(p.orgId ? { orgId: p.orgId } : {}),
      provider: call.model.provider,
      model: call.model.id,
      requestType: call.requestType,
      endpoint: call.endpoint,
      stream: call.stream,
      usage: usage ?? { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 },
      costMicros: cost,
      costEstimated: usage === undefined && cost > 0,
      ...(overshootOf(reservation.amount, cost) > 0 ? { overshootMicros: overshootOf(reservation.amount, cost) } : {}),
      outcome: s.outcome,
      httpStatus: s.httpStatus,
      durationMs: Math.max(0, s.endedAt - call.startedAt),
      ...(call.userAgent ? { userAgent: call.userAgent.slice(0, 256) } : {}),
      byok: call.byok ?? false,
    };
    const actualTokens = usage ? usage.inputTokens + usage.outputTokens : undefined;
    try {
      await settleWithRetries(
        () =>
          ledger.settle({
            reservation,
            cost,
            ...(actualTokens === undefined ? {} : { actualTokens }),
            usage: record,
            ...(loopOutcomeOf(s) ? { loopOutcome: loopOutcomeOf(s) } : {}),
          }),
        {
          ...this.options.settleRetry,
          onRetry: (err, attempt) =>
            log.log('warn', 'settle failed; retrying', { requestId: call.requestId, attempt, error: err.message }),
        },
      );
    } catch (err) {
      // The hold stays; after its expiry the sweeper charges its full reservation (never less than this cost
      // unless the answer overshot), and a later settle of this request would still replace that estimate.
      log.log('error', 'settle failed; hold left for the sweeper, which charges the reservation', {
        requestId: call.requestId,
        costMicros: cost,
        reservedMicros: reservation.amount,
        error: err instanceof Error ? err.message : String(err),
      });
      return undefined;
    }
    log.log('info', 'request settled', {
      requestId: call.requestId,
      userId: p.userId,
      keyId: p.keyId,
      model: call.model.id,
      outcome: s.outcome,
      costMicros: cost,
      inputTokens: record.usage.inputTokens,
      outputTokens: record.usage.outputTokens,
      durationMs: record.durationMs,
    });
    await Promise.all([
      this.touchLastUsed(p.keyId, p.key.lastUsedAt),
      this.checkTiers(call, reservation, cost, ctx),
      record.overshootMicros ? this.reportOvershoot(call, reservation, cost, ctx.limits) : Promise.resolve(),
    ]);
    return record;
  }

  /**
   * A settle above its reservation (core/guardrails/overshoot.ts): logged, alerted once per request, and the
   * circuit of a scope it took past a limit opens until the window ends. Failures are logged, never thrown.
   */
  private async reportOvershoot(
    call: BillableCall,
    reservation: Reservation,
    cost: MicroUsd,
    limits: Map<ScopeId, BudgetLimits>,
  ): Promise<void> {
    const { log, clock } = this.options;
    log.log('warn', 'settle above its reservation', {
      requestId: call.requestId,
      keyId: call.principal.keyId,
      model: call.model.id,
      reservedMicros: reservation.amount,
      costMicros: cost,
      overshootMicros: overshootOf(reservation.amount, cost),
    });
    const guard = this.options.guardrails;
    if (!guard) return;
    try {
      const limited = reservation.counters.filter((c) => c.limit !== undefined);
      const values = limited.length > 0 ? await this.options.ledger.readCounters(limited) : [];
      const past = countersPastLimit(values, limits)[0];
      const now = clock.now();
      const { alert, circuit } = overshootAlert({
        requestId: call.requestId,
        keyId: call.principal.keyId,
        model: call.model.id,
        reserved: reservation.amount,
        cost,
        now,
        ...(past ? { past } : {}),
      });
      const fresh = await guard.store.recordAlert(alert, {
        dedupeKey: `overshoot#${call.requestId}`,
        dedupeUntil: now + 86_400_000,
        ...(circuit ? { openCircuit: circuit } : {}),
      });
      if (!fresh) return;
      log.log(alert.severity === 'critical' ? 'error' : 'warn', 'guardrail alert', {
        requestId: call.requestId,
        alertType: alert.type,
        scope: alert.scope,
        summary: alert.summary,
        ...(circuit ? { circuitOpened: true } : {}),
      });
      if (guard.sink) await guard.sink.publish(alert);
    } catch (err) {
      log.log('warn', 'overshoot alert failed', { requestId: call.requestId, error: err instanceof Error ? err.message : String(err) });
    }
  }

  /** lastUsedAt is written at most once a minute per key, after the response. */
  private async touchLastUsed(keyId: string, storedIso: string | undefined): Promise<void> {
    const now = this.options.clock.now();
    const last = Math.max(this.lastTouched.get(keyId) ?? 0, storedIso ? Date.parse(storedIso) : 0);
    if (now - last < LAST_USED_EVERY_MS) return;
    this.lastTouched.set(keyId, now);
    try {
      await this.options.keys.touchLastUsed(keyId, new Date(now).toISOString());
    } catch (err) {
      this.options.log.log('warn', 'lastUsedAt update failed', { keyId, error: err instanceof Error ? err.message : String(err) });
    }
  }
}

/** The refusal of a conversation that keeps repeating a turn (see core/guardrails/loop-guard.ts `repeatedTurns`). */
function repeatedTurnError(turn: RepeatedTurn, keyId: string): LoopDetectedError {
  const what = turn.kind === 'assistant' ? 'the same answer' : 'the same tool call with the same result';
  return new LoopDetectedError(
    `Loop detected: this conversation carries ${what} ${turn.count} times ("${turn.sample.slice(0, 60)}"), so it is retrying a ` +
      `failing step (key ${keyId}). Change the approach or start a new conversation; retrying this one will not help.`,
    { code: 'loop_detected', headers: { 'x-should-retry': 'false' } },
  );
}

/** OpenAI-style rate-limit headers from the buckets a request was charged against. */
export function rateHeaders(states: readonly RateState[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const s of states) {
    headers[`x-ratelimit-limit-${s.dimension}`] = String(s.limit);
    headers[`x-ratelimit-remaining-${s.dimension}`] = String(Math.max(0, s.remaining));
    headers[`x-ratelimit-reset-${s.dimension}`] = `${Math.max(0, Math.ceil(s.resetMs / 1000))}s`;
  }
  return headers;
}

/**
 * A failure of the gateway's own making before the provider was called (a request its translator cannot
 * express, a bad header value): a 4xx that is not the provider's answer.
 */
function isGatewayRefusal(error: TollgateError): boolean {
  return !(error instanceof UpstreamError) && error.status >= 400 && error.status < 500;
}

/** What an ended call says about the upstream, for the loop guard's failure streak. */
function loopOutcomeOf(s: Settlement): 'failed' | 'succeeded' | undefined {
  if (s.routedAround || s.outcome === 'client_disconnected' || s.outcome === 'abandoned' || s.outcome === 'rejected') return undefined;
  if (s.outcome !== 'ok' || s.emptyAnswer) return 'failed';
  return 'succeeded';
}

/** One counter item's identity (scope, window, window key, platform shard). */
/** A counter as read back: platform shards are summed into one value per window, so the shard is not part of it. */
function counterIdentity(ref: CounterRef): string {
  return `${ref.scope}|${ref.windowKey}`;
}

/** The tightest remaining budget among counter values (for the response headers). */
function tightestOf(values: readonly CounterValue[], limits: Map<ScopeId, BudgetLimits>): { scope: string; remaining: MicroUsd } | undefined {
  let tightest: { scope: string; remaining: MicroUsd } | undefined;
  for (const v of values) {
    const limit = limits.get(v.ref.scope)?.[v.ref.window];
    if (limit === undefined) continue;
    const left = limit - v.committed;
    if (!tightest || left < tightest.remaining) tightest = { scope: `${v.ref.scope}/${v.ref.window}`, remaining: left };
  }
  return tightest;
}

function budgetHeaders(tightest: { scope: string; remaining: MicroUsd } | undefined, refund: MicroUsd): Record<string, string> {
  if (!tightest) return {};
  return {
    'x-tollgate-budget-remaining-usd': formatUsd(Math.max(0, tightest.remaining + refund)),
    'x-tollgate-budget-scope': tightest.scope,
  };
}
