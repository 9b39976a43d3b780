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
 */
import type { ProviderCallContext, ProviderResult } from '../providers/contract';
import type { Principal } from './auth';
import type { Clock } from './clock';
import { asTollgateError, type TollgateError, UpstreamError } from './errors';
import type { Logger } from './log';
import { formatUsd, type MicroUsd } from './money';
import { costOf, maxCostOf, type ResolvedModel } from './pricing';
import type { CounterRef, CounterValue, KeyStore, Ledger, RateCharge, RateState, Reservation } from './stores';
import type { BudgetLimits, RequestType, ScopeId, TokenUsage, UsageOutcome, UsageRecord } from './types';
import { WINDOWS, windowBounds, windowKey } from './windows';

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
  readonly estimate: { readonly inputTokens: number; readonly maxOutputTokens: number };
  readonly userAgent?: string;
  readonly byok?: boolean;
  /** Aborted when the caller goes away. */
  readonly clientSignal: AbortSignal;
  readonly invoke: (ctx: Pick<ProviderCallContext, 'signal'>) => Promise<ProviderResult>;
}

export type CallOutcome =
  | { readonly kind: 'json'; readonly body: unknown; readonly headers: Record<string, string>; readonly after: Settle }
  | { readonly kind: 'stream'; readonly body: AsyncIterable<Uint8Array>; readonly headers: Record<string, string>; readonly after: Settle }
  | { readonly kind: 'error'; readonly error: TollgateError; readonly headers: Record<string, string>; readonly after: Settle };

/** Settles a call after its response; resolves with the usage record written (undefined if settling failed). */
export type Settle = () => Promise<UsageRecord | undefined>;

interface Settlement {
  readonly outcome: UsageOutcome;
  readonly usage: TokenUsage | undefined;
  readonly httpStatus: number;
  readonly endedAt: number;
  /** Whether the provider may have produced output: then missing usage is charged at the reservation. */
  readonly mayHaveOutput: boolean;
}

const LAST_USED_EVERY_MS = 60_000;

function hashShard(id: string, shards: number): number {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return h % shards;
}

export class RequestPipeline {
  private readonly limitsCache = new Map<ScopeId, { limits: BudgetLimits; at: number }>();
  private readonly lastTouched = new Map<string, number>();

  constructor(private readonly options: PipelineOptions) {}

  /** Scopes a principal's spend counts toward, tightest first in messages. */
  scopesOf(principal: Pick<Principal, 'keyId' | 'userId' | 'orgId'>): ScopeId[] {
    const scopes: ScopeId[] = [`key:${principal.keyId}`, `user:${principal.userId}`];
    if (principal.orgId) scopes.push(`org:${principal.orgId}`);
    scopes.push('platform');
    return scopes;
  }

  /** Budget limits of the given scopes, cached for a few seconds. */
  async limitsOf(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    const now = this.options.clock.now();
    const out = new Map<ScopeId, BudgetLimits>();
    const missing: ScopeId[] = [];
    for (const scope of scopes) {
      const hit = this.limitsCache.get(scope);
      if (hit && now - hit.at < this.options.limitsCacheMs) out.set(scope, hit.limits);
      else missing.push(scope);
    }
    if (missing.length > 0) {
      const fetched = await this.options.ledger.getLimits(missing);
      for (const scope of missing) {
        const limits = fetched.get(scope) ?? {};
        this.limitsCache.set(scope, { limits, at: now });
        out.set(scope, limits);
      }
    }
    return out;
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
    for (const scope of scopes) {
      for (const window of WINDOWS) {
        const limit = limits.get(scope)?.[window];
        const base = { scope, window, windowKey: windowKey(window, now), windowEnd: windowBounds(window, now).end };
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
    const scopes = this.scopesOf(principal);
    const limits = await this.limitsOf(scopes);
    const counters = this.countersFor(scopes, limits, now, call.requestId);
    const estimatedTokens = call.estimate.inputTokens + call.estimate.maxOutputTokens;
    const rateCharges: RateCharge[] = [];
    if (principal.key.rpm) rateCharges.push({ keyId: principal.keyId, dimension: 'requests', limitPerMinute: principal.key.rpm, amount: 1 });
    if (principal.key.tpm) {
      rateCharges.push({ keyId: principal.keyId, dimension: 'tokens', limitPerMinute: principal.key.tpm, amount: estimatedTokens });
    }
    const amount = maxCostOf(call.model.price, call.estimate);

    // Throws 429 (rate or budget) or 503 before anything reaches the provider.
    const reservation = await ledger.reserve({
      requestId: call.requestId,
      now,
      expiresAt: now + this.options.holdTtlMs,
      amount,
      counters,
      rateCharges,
      context: {
        keyId: principal.keyId,
        userId: principal.userId,
        ...(principal.orgId ? { orgId: principal.orgId } : {}),
        model: call.model.id,
        provider: call.model.provider,
        requestType: call.requestType,
        endpoint: call.endpoint,
      },
    });

    // Off the critical path: how much budget is left, read while the provider works.
    const remaining = this.remainingAfterHold(reservation, limits).catch(() => undefined);

    const timeout = AbortSignal.timeout(this.options.upstreamTimeoutMs);
    const upstreamAbort = new AbortController();
    const signal = AbortSignal.any([call.clientSignal, timeout, upstreamAbort.signal]);
    const baseHeaders = rateHeaders(reservation.rateStates);

    const settleWith = (s: Settlement) => () => this.settle(call, reservation, s);
    const failureOutcome = (): UsageOutcome =>
      call.clientSignal.aborted ? 'client_disconnected' : timeout.aborted ? 'timeout' : 'upstream_error';

    let result: ProviderResult;
    try {
      result = await call.invoke({ signal });
    } catch (err) {
      const error = timeout.aborted && !call.clientSignal.aborted
        ? new UpstreamError(`The provider did not answer within ${this.options.upstreamTimeoutMs} ms.`, { cause: err })
        : asTollgateError(err);
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
      const headers = { ...baseHeaders, 'x-tollgate-cost-usd': formatUsd(cost), ...budgetHeaders(await remaining, amount - cost) };
      return {
        kind: 'json',
        body: result.body,
        headers,
        after: settleWith({ outcome: 'ok', usage: result.usage, httpStatus: 200, endedAt: clock.now(), mayHaveOutput: true }),
      };
    }

    // Stream: pass bytes through as they arrive, note how it ended, settle after the last byte.
    const state: { outcome: UsageOutcome; endedAt: number } = { outcome: 'stream_incomplete', endedAt: now };
    const upstream = result;
    async function* observed(): AsyncGenerator<Uint8Array> {
      let completed = false;
      try {
        for await (const chunk of upstream.body) yield chunk;
        completed = true;
      } catch (err) {
        const failure = failureOutcome();
        state.outcome = failure === 'upstream_error' ? 'stream_incomplete' : failure;
        throw err;
      } finally {
        if (completed) state.outcome = 'ok';
        else if (call.clientSignal.aborted && state.outcome === 'stream_incomplete') state.outcome = 'client_disconnected';
        state.endedAt = clock.now();
        // The caller stopped reading: stop the upstream generating tokens nobody will read.
        if (!completed) upstreamAbort.abort();
      }
    }
    return {
      kind: 'stream',
      body: observed(),
      headers: { ...baseHeaders, ...budgetHeaders(await remaining, 0) },
      after: () =>
        this.settle(call, reservation, {
          outcome: state.outcome,
          usage: upstream.usage(),
          httpStatus: 200,
          endedAt: state.endedAt,
          mayHaveOutput: true,
        }),
    };
  }

  private async remainingAfterHold(
    reservation: Reservation,
    limits: Map<ScopeId, BudgetLimits>,
  ): Promise<{ scope: string; remaining: MicroUsd } | undefined> {
    const limited = reservation.counters.filter((c) => c.limit !== undefined);
    if (limited.length === 0) return undefined;
    const values = await this.options.ledger.readCounters(limited);
    let tightest: { scope: string; remaining: MicroUsd } | undefined;
    for (const v of values) {
      const limit = limits.get(v.ref.scope)?.[v.ref.window];
      if (limit === undefined) continue;
      const left = limit - v.committed;
      if (!tightest || left < tightest.remaining) tightest = { scope: `${v.ref.scope}/${v.ref.window}`, remaining: left };
    }
    return tightest;
  }

  private async settle(call: BillableCall, reservation: Reservation, s: Settlement): Promise<UsageRecord | undefined> {
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
      outcome: s.outcome,
      httpStatus: s.httpStatus,
      durationMs: Math.max(0, s.endedAt - call.startedAt),
      ...(call.userAgent ? { userAgent: call.userAgent.slice(0, 256) } : {}),
      byok: call.byok ?? false,
    };
    const actualTokens = usage ? usage.inputTokens + usage.outputTokens : undefined;
    try {
      await ledger.settle({ reservation, cost, ...(actualTokens === undefined ? {} : { actualTokens }), usage: record });
    } catch (err) {
      // The hold stays and the sweeper will release it after its expiry; the actual cost is what we lose.
      log.log('error', 'settle failed; hold left for the sweeper', {
        requestId: call.requestId,
        costMicros: cost,
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
    await this.touchLastUsed(p.keyId, p.key.lastUsedAt);
    return record;
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

function budgetHeaders(tightest: { scope: string; remaining: MicroUsd } | undefined, refund: MicroUsd): Record<string, string> {
  if (!tightest) return {};
  return {
    'x-tollgate-budget-remaining-usd': formatUsd(Math.max(0, tightest.remaining + refund)),
    'x-tollgate-budget-scope': tightest.scope,
  };
}
