/**
 * The layer in front of the pipeline that spends less per request: the response cache, routing rules and
 * fallback. It never changes how one call is reserved and settled; it decides which calls to make.
 *
 *   request ──► cache lookup (policy: key setting + headers) ── hit ──► rate limiter only ──► stored answer, $0
 *                 │ miss / off
 *                 ▼
 *              routing rule ──► models [m1, m2, …] (past a budget tier: [downgrade model])
 *                 ▼
 *              attempt m1: pipeline.run (reserve → forward → settle, its own hold and usage record)
 *                 │ provider 5xx / timeout / unavailable: settle m1, then attempt m2 …
 *                 │ reservation refused for budget: attempt the downgrade model, if the rule has one
 *                 ▼
 *              answer (+ store in the cache after settle, when the policy writes)
 *
 * Every attempt is a full pipeline run with its own request id (`<id>`, `<id>-a2`, …), so the loop guard,
 * the circuits and the budget see each one, and a failed attempt is settled before the next is reserved.
 */
import type { Principal } from '../auth';
import { cacheKeyOf, tenantOf } from '../cache/key';
import { cachePolicyOf, type CachePolicy, type CachePolicySettings } from '../cache/policy';
import type { CachedAnswer, CacheStore, SavingsDelta } from '../cache/store';
import type { Clock } from '../clock';
import { BudgetExceededError, LoopDetectedError, type TollgateError, UpstreamError } from '../errors';
import type { Logger } from '../log';
import { formatUsd } from '../money';
import type { BillableCall, CallOutcome, RequestPipeline } from '../pipeline';
import type { RateCharge, RateState } from '../stores';
import type { UsageRecord } from '../types';
import { planRoute, type RoutingSettings } from './rules';

/** Response header names the layer sets. */
export const SPEND_HEADERS = {
  cache: 'x-tollgate-cache',
  cacheSaved: 'x-tollgate-cache-saved-usd',
  cacheAge: 'x-tollgate-cache-age',
  model: 'x-tollgate-model',
  fallback: 'x-tollgate-fallback',
} as const;

export interface ResponseCacheSettings extends CachePolicySettings {
  /** Largest answer captured for storing (raw bytes, before compression); bigger ones are skipped. */
  readonly maxCaptureBytes: number;
}

export interface SpendLayerOptions {
  readonly pipeline: RequestPipeline;
  readonly routing: RoutingSettings;
  readonly clock: Clock;
  readonly log: Logger;
  /** Without it the cache is off for every request. */
  readonly cache?: { readonly store: CacheStore; readonly settings: ResponseCacheSettings };
  /**
   * How long identical requests wait for the one that claimed their cache key (request collapsing) before
   * going on by themselves. @default 60_000
   */
  readonly collapseWaitMs?: number;
  /** Charges the rate buckets of a cache hit (no hold, no budget). */
  readonly rates: { chargeRate(input: { readonly now: number; readonly rateCharges: readonly RateCharge[] }): Promise<RateState[]> };
}

/** One request as the layer sees it: validated and authorized, not yet routed or priced. */
export interface SpendRequest {
  readonly requestId: string;
  readonly startedAt: number;
  readonly principal: Principal;
  readonly endpoint: string;
  readonly body: Readonly<Record<string, unknown>>;
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly stream: boolean;
  /** Input estimate (model-independent), for rules on prompt size. */
  readonly inputTokens: number;
  /** Builds one attempt's call at a model; throws 400 when that model cannot serve the route. */
  callFor(model: string, attemptId: string): Promise<BillableCall>;
}

/**
 * A loop refusal (a failure streak) of the last model of a chain whose earlier models failed in this request:
 * the refusal names every model tried and what its provider answered, so the caller sees the chain failed, not
 * one model. Other errors pass unchanged.
 */
export function chainLoopRefusal(error: TollgateError, failures: readonly { model: string; status: number }[], refused: string, rule: string | undefined): TollgateError {
  if (!(error instanceof LoopDetectedError) || !error.streak) return error;
  const { fails, lastStatus, blockMinutes } = error.streak;
  const named = failures.map((f) => `${f.model} answered ${f.status}`);
  named.push(lastStatus === undefined ? `${refused} failed` : `${refused} answered ${lastStatus}`);
  const list = named.length > 1 ? `${named.slice(0, -1).join(', ')} and ${named[named.length - 1]}` : named[0]!;
  const refusal = new LoopDetectedError(
    `Loop detected: every model of ${rule ? `route ${rule}` : 'the route'} failed for this request: ${list} on the last ${fails} attempts; ` +
      `${refused} is refused for ${blockMinutes} minutes after its last failure (doubling with each failed retry). Retrying will not help until a provider recovers.`,
    { code: error.code, headers: { ...error.headers, 'x-should-retry': 'false' }, cause: error },
  );
  refusal.streak = error.streak;
  return refusal;
}

/** Whether a failed attempt may be retried at the next model: the provider failed, not the caller. */
export function isFallbackWorthy(error: TollgateError): boolean {
  return error instanceof UpstreamError && (error.status >= 500 || error.status === 429 || error.status === 408);
}

const DEFAULT_COLLAPSE_WAIT_MS = 60_000;
/** Polls of a waiting request (20 ms doubling to 250 ms: about a minute in all). */
const MAX_COLLAPSE_POLLS = 245;

const dayOf = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

export class SpendLayer {
  constructor(private readonly o: SpendLayerOptions) {}

  async serve(req: SpendRequest): Promise<CallOutcome> {
    const cache = this.o.cache;
    const policy = cache ? cachePolicyOf(req.headers, req.principal.key.responseCache === true, cache.settings) : undefined;
    const key = policy ? cacheKeyOf({ tenant: tenantOf(req.principal), endpoint: req.endpoint, body: req.body }) : undefined;
    let claim: string | undefined;
    if (policy?.read && key) {
      const hit = await this.lookup(key, req, policy);
      if (hit) return this.replay(hit, req);
      // Request collapsing: identical requests of one tenant at once make one upstream call. The first claims
      // the key and pays; the others wait for its answer and get it as a cache hit at $0.
      if (policy.write) {
        const collapsed = await this.collapse(key, req, policy);
        if (collapsed.kind === 'hit') return this.replay(collapsed.hit, req);
        claim = collapsed.holder;
      }
    }
    let outcome: Awaited<ReturnType<SpendLayer['attempts']>>;
    try {
      outcome = await this.attempts(req);
    } catch (err) {
      if (claim && key) await this.release(key, claim);
      throw err;
    }
    const cacheHeaders: Record<string, string> = policy ? { [SPEND_HEADERS.cache]: 'miss' } : {};
    const withHeaders = { ...outcome.outcome, headers: { ...outcome.outcome.headers, ...cacheHeaders, ...outcome.headers } } as CallOutcome;
    return this.afterwards(withHeaders, {
      ...(policy && key ? { store: { policy, key, tenant: tenantOf(req.principal) } } : {}),
      ...(claim && key ? { release: () => this.release(key, claim) } : {}),
      counted: policy?.read === true,
      routed: outcome.routed,
    });
  }

  /** The stored answer for a request, if any and young enough; a store failure is a miss, never an error. */
  private async lookup(key: string, req: SpendRequest, policy: CachePolicy): Promise<CachedAnswer | undefined> {
    const now = this.o.clock.now();
    try {
      const hit = await this.o.cache!.store.get(key, now);
      if (!hit || hit.tenant !== tenantOf(req.principal)) return undefined;
      if (policy.maxAgeSeconds !== undefined && now - hit.storedAt > policy.maxAgeSeconds * 1000) return undefined;
      return hit;
    } catch (err) {
      this.o.log.log('warn', 'response cache read failed; serving fresh', { requestId: req.requestId, error: err instanceof Error ? err.message : String(err) });
      return undefined;
    }
  }

  /**
   * Claims `key` for this request (it then calls the provider), or waits while another request holds it: its
   * answer, once stored, is this one's hit. When the holder ends without storing an answer (it failed, or was
   * not cacheable), the next waiting request claims the key in turn (a failure is never shared); after about
   * {@link SpendLayerOptions.collapseWaitMs}, or when the store fails, a request goes on by itself. Across
   * instances: the claim is an item of the cache table.
   */
  private async collapse(key: string, req: SpendRequest, policy: CachePolicy): Promise<{ kind: 'hit'; hit: CachedAnswer } | { kind: 'go'; holder?: string }> {
    const store = this.o.cache!.store;
    if (!store.claim || !store.claimed || !store.release) return { kind: 'go' };
    const waitMs = this.o.collapseWaitMs ?? DEFAULT_COLLAPSE_WAIT_MS;
    const holder = req.requestId;
    try {
      const now = this.o.clock.now();
      if (await store.claim(key, holder, now, now + waitMs)) return { kind: 'go', holder };
      let pause = 20;
      for (let polls = 0; polls < MAX_COLLAPSE_POLLS; polls++) {
        await new Promise((r) => setTimeout(r, pause));
        pause = Math.min(pause * 2, 250);
        const hit = await this.lookup(key, req, policy);
        if (hit) return { kind: 'hit', hit };
        // The holder ended without an answer to share: this request claims the key in turn (or waits for
        // whoever did).
        const at = this.o.clock.now();
        if (!(await store.claimed(key, at)) && (await store.claim(key, holder, at, at + waitMs))) return { kind: 'go', holder };
      }
    } catch (err) {
      this.o.log.log('warn', 'request collapsing failed; serving fresh', { requestId: req.requestId, error: err instanceof Error ? err.message : String(err) });
    }
    return { kind: 'go' };
  }

  private async release(key: string, holder: string): Promise<void> {
    try {
      await this.o.cache?.store.release?.(key, holder);
    } catch (err) {
      this.o.log.log('warn', 'request-collapsing claim not released', { error: err instanceof Error ? err.message : String(err) });
    }
  }

  /** A cache hit: the rate limiter still counts it (429 as usual), nothing is reserved, the answer costs $0. */
  private async replay(hit: CachedAnswer, req: SpendRequest): Promise<CallOutcome> {
    const now = this.o.clock.now();
    const rpm = req.principal.key.rpm;
    const states = rpm
      ? await this.o.rates.chargeRate({ now, rateCharges: [{ keyId: req.principal.keyId, dimension: 'requests', limitPerMinute: rpm, amount: 1 }] })
      : [];
    const headers: Record<string, string> = {
      [SPEND_HEADERS.cache]: 'hit',
      [SPEND_HEADERS.cacheSaved]: formatUsd(hit.costMicros),
      [SPEND_HEADERS.cacheAge]: String(Math.max(0, Math.floor((now - hit.storedAt) / 1000))),
      [SPEND_HEADERS.model]: hit.model,
      'x-tollgate-cost-usd': formatUsd(0),
    };
    for (const s of states) {
      headers[`x-ratelimit-limit-${s.dimension}`] = String(s.limit);
      headers[`x-ratelimit-remaining-${s.dimension}`] = String(Math.max(0, s.remaining));
    }
    const after = async (): Promise<undefined> => {
      await this.count(now, { cacheHits: 1, savedMicros: hit.costMicros });
      return undefined;
    };
    if (hit.kind === 'json') return { kind: 'json', body: JSON.parse(new TextDecoder().decode(hit.body)), headers, after };
    return { kind: 'stream', body: sseEvents(hit.body), headers, after };
  }

  /** Routes and runs attempts until one answers or none is left. */
  private async attempts(req: SpendRequest): Promise<{ outcome: CallOutcome; headers: Record<string, string>; routed: 'fallback' | 'downgrade' | undefined }> {
    const requested = typeof req.body.model === 'string' ? req.body.model : '';
    const hasTools = Array.isArray(req.body.tools) && req.body.tools.length > 0;
    const plan = planRoute(this.o.routing, { endpoint: req.endpoint, model: requested, inputTokens: req.inputTokens, hasTools });
    let models = [...plan.models];
    const notes: string[] = [];
    let routed: 'fallback' | 'downgrade' | undefined;
    let downgraded = false;
    /** The models this request tried that failed, and what their provider answered. */
    const failures: { model: string; status: number }[] = [];
    if (plan.downgrade && (await this.pastTier(req.principal, plan.downgrade.atPercent))) {
      notes.push(`downgrade; from=${models[0]}; to=${plan.downgrade.model}; reason=budget_${plan.downgrade.atPercent}pct`);
      models = [plan.downgrade.model];
      routed = 'downgrade';
      downgraded = true;
    }
    for (let i = 0; ; i++) {
      const model = models[i]!;
      const attemptId = i === 0 ? req.requestId : `${req.requestId}-a${i + 1}`;
      const call = await req.callFor(model, attemptId);
      let outcome: CallOutcome;
      try {
        outcome = await this.o.pipeline.run(call);
      } catch (err) {
        // Refused for budget before anything was forwarded: the rule's cheaper model instead of a refusal.
        if (err instanceof BudgetExceededError && plan.downgrade && !downgraded) {
          notes.push(`downgrade; from=${call.model.id}; to=${plan.downgrade.model}; reason=budget_exceeded`);
          models = [...models.slice(0, i + 1), plan.downgrade.model];
          routed = 'downgrade';
          downgraded = true;
          continue;
        }
        throw err;
      }
      const last = i === models.length - 1;
      if (outcome.kind === 'error' && !last && isFallbackWorthy(outcome.error)) {
        // Settle this attempt (its hold released, its failure recorded) before reserving the next; the caller
        // is answered by the next model, so the loop guard does not count this failure against it.
        await outcome.after({ routedAround: true });
        this.o.log.log('warn', 'fallback to the next model', { requestId: req.requestId, failed: call.model.id, status: outcome.error.status, next: models[i + 1] });
        notes.push(`fallback; from=${call.model.id}; to=${models[i + 1]}; reason=upstream_${outcome.error.status}`);
        failures.push({ model: call.model.id, status: outcome.error instanceof UpstreamError ? (outcome.error.upstreamStatus ?? outcome.error.status) : outcome.error.status });
        routed = routed ?? 'fallback';
        continue;
      }
      if (outcome.kind === 'error' && failures.length > 0) outcome = { ...outcome, error: chainLoopRefusal(outcome.error, failures, call.model.id, plan.rule) };
      const headers: Record<string, string> = { [SPEND_HEADERS.model]: call.model.id };
      if (notes.length) headers[SPEND_HEADERS.fallback] = notes.join(', ');
      if (plan.rule) headers['x-tollgate-route'] = plan.rule;
      return { outcome, headers, routed: outcome.kind === 'error' ? undefined : routed };
    }
  }

  /** Whether any of the caller's limited windows is at or past `percent` of its limit (committed spend). */
  private async pastTier(principal: Principal, percent: number): Promise<boolean> {
    const pipeline = this.o.pipeline;
    const scopes = pipeline.scopesOf(principal).filter((s) => s !== 'platform');
    const limits = await pipeline.limitsOf(scopes);
    const limited = pipeline.countersFor(scopes, limits, this.o.clock.now(), 'tier-check').filter((c) => c.limit !== undefined);
    if (limited.length === 0) return false;
    const values = await pipeline.readCounters(limited);
    return values.some((v) => v.ref.limit !== undefined && v.ref.limit > 0 && v.committed * 100 >= percent * v.ref.limit);
  }

  /** Chains the cache write and the day's counters after the call's own settlement. */
  private afterwards(
    outcome: CallOutcome,
    ctx: {
      readonly store?: { policy: CachePolicy; key: string; tenant: string };
      /** Drops this request's collapsing claim, once its answer is stored (or not). */
      readonly release?: () => Promise<void>;
      readonly counted: boolean;
      readonly routed: 'fallback' | 'downgrade' | undefined;
    },
  ): CallOutcome {
    const startedAt = this.o.clock.now();
    const model = outcome.headers[SPEND_HEADERS.model] ?? '';
    const settle = outcome.after;
    let capture: { chunks: Uint8Array[]; bytes: number; overflow: boolean } | undefined;
    let body = outcome.kind === 'stream' ? outcome.body : undefined;
    if (outcome.kind === 'stream' && ctx.store?.policy.write) {
      const cap = { chunks: [] as Uint8Array[], bytes: 0, overflow: false };
      capture = cap;
      const max = this.o.cache!.settings.maxCaptureBytes;
      const source = outcome.body;
      body = (async function* () {
        for await (const chunk of source) {
          if (!cap.overflow) {
            cap.bytes += chunk.byteLength;
            if (cap.bytes > max) {
              cap.overflow = true;
              cap.chunks = [];
            } else cap.chunks.push(chunk);
          }
          yield chunk;
        }
      })();
    }
    const after = async (): Promise<UsageRecord | undefined> => {
      try {
        return await stored();
      } finally {
        await ctx.release?.();
      }
    };
    const stored = async (): Promise<UsageRecord | undefined> => {
      const record = await settle();
      const delta: { -readonly [K in keyof SavingsDelta]: SavingsDelta[K] } = {};
      if (ctx.counted) delta.cacheMisses = 1;
      if (ctx.routed && record) {
        delta[ctx.routed === 'fallback' ? 'fallbacks' : 'downgrades'] = 1;
        delta.fallbackCostMicros = record.costMicros;
      }
      const store = ctx.store;
      if (store?.policy.write && record?.outcome === 'ok' && outcome.kind !== 'error') {
        const bytes =
          outcome.kind === 'json'
            ? new TextEncoder().encode(JSON.stringify(outcome.body))
            : capture && !capture.overflow
              ? concat(capture.chunks)
              : undefined;
        const stored = bytes ? await this.put({ key: store.key, tenant: store.tenant, kind: outcome.kind === 'json' ? 'json' : 'sse', body: bytes, model, costMicros: record.costMicros, storedAt: startedAt, expiresAt: startedAt + store.policy.ttlSeconds * 1000 }) : false;
        if (stored) delta.cacheStores = 1;
        else delta.cacheSkipped = 1;
      }
      await this.count(startedAt, delta);
      return record;
    };
    if (outcome.kind === 'stream') return { ...outcome, body: body!, after };
    return { ...outcome, after };
  }

  private async put(answer: CachedAnswer): Promise<boolean> {
    try {
      const stored = await this.o.cache!.store.put(answer);
      if (!stored) this.o.log.log('info', 'answer too large for the response cache; not stored', { model: answer.model, bytes: answer.body.byteLength });
      return stored;
    } catch (err) {
      this.o.log.log('warn', 'response cache write failed', { error: err instanceof Error ? err.message : String(err) });
      return false;
    }
  }

  /** Adds to the day's savings counters; a failure is logged, never the caller's problem. */
  private async count(at: number, delta: SavingsDelta): Promise<void> {
    if (!this.o.cache || Object.keys(delta).length === 0) return;
    try {
      await this.o.cache.store.addSavings(dayOf(at), delta);
    } catch (err) {
      this.o.log.log('warn', 'savings counters not updated', { error: err instanceof Error ? err.message : String(err) });
    }
  }
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Replays stored SSE bytes one event at a time, as the provider sent them. */
async function* sseEvents(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  const text = new TextDecoder().decode(bytes);
  const encoder = new TextEncoder();
  for (const event of text.split(/(?<=\n\n)/)) if (event) yield encoder.encode(event);
}
