/**
 * Refusals as data: every request the gateway refused (a budget, a rate limit, an open circuit, the loop guard,
 * a revoked key, a busy or unreachable store…) is classified once, at the one place every failure becomes a
 * response (the request observers of lambda/http/app.ts), by
 *
 *   reason  a small fixed set ({@link REFUSAL_REASONS}): the `Reason` dimension of the `Refusals` metric
 *   scope   what refused: `platform`, `org:acme`, `user:alice`, `key:k_…` (the budget's or circuit's scope),
 *           `gateway` (shed or fail-closed), `-` for a caller we could not identify
 *   key     the caller's key id when known (`-` for an unknown key)
 *
 * and counted per UTC day in the usage table ({@link RefusalStore}). Refusals move no money, so the count is
 * kept off the refusal path: the observer runs after the response, and {@link RefusalRecorder} coalesces counts in
 * memory and writes them in the background (one ADD per distinct reason/scope/key per flush), logging a failed
 * write at most once a minute. A count can be lost when a write fails or the process dies before the flush;
 * the `Refusals` metric and the request log line are written independently of it.
 *
 * Not refusals: bad input (400/404/413: the caller's mistake, in `ErrorCount` class `client`) and upstream
 * failures (the provider's, class `upstream`): the dashboard shows those separately, named.
 */
import type { Clock } from '../core/clock';
import type { Logger } from '../core/log';
import type { RequestEvent, RequestObserver } from '../http/app';

/** Why a request was refused: the `Reason` dimension (bounded: each value is one billed metric). */
export const REFUSAL_REASONS = [
  'budget',
  'rate_rpm',
  'rate_tpm',
  'concurrency',
  'circuit_open',
  'spend_velocity',
  'loop_detected',
  'guardrail',
  'key_revoked',
  'key_suspended',
  'key_expired',
  'invalid_key',
  'missing_scope',
  'gateway_busy',
  'store_unavailable',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** What each reason means, for people (dashboard tooltips, docs/operations.md). */
export const REFUSAL_LABELS: Readonly<Record<RefusalReason, string>> = {
  budget: 'budget exhausted',
  rate_rpm: 'requests per minute',
  rate_tpm: 'tokens per minute',
  concurrency: 'concurrent requests',
  circuit_open: 'circuit breaker open',
  spend_velocity: 'spend velocity breaker',
  loop_detected: 'loop guard',
  guardrail: 'content guardrail',
  key_revoked: 'key revoked',
  key_suspended: 'key suspended',
  key_expired: 'key expired',
  invalid_key: 'missing or unknown key',
  missing_scope: 'key lacks the scope',
  gateway_busy: 'gateway busy (shed)',
  store_unavailable: 'store down (fail closed)',
};

/** One refused request, classified. */
export interface Refusal {
  readonly reason: RefusalReason;
  readonly scope: string;
  /** For budget refusals: the window of the budget that refused (`day`, `month`, `hour`). */
  readonly window?: string;
  readonly keyId: string;
  readonly userId?: string;
  readonly orgId?: string;
}

/** A day's count of one reason × scope × key. */
export interface RefusalCount extends Refusal {
  /** UTC day, `YYYY-MM-DD`. */
  readonly day: string;
  readonly count: number;
  /** ms epoch of the last refusal counted in this item (as far as the writer saw). */
  readonly lastAt: number;
}

/** Where the daily refusal counters live (the usage table: lambda/store/dynamodb/refusal-store.ts). */
export interface RefusalStore {
  /** Adds counts (idempotence is not needed: refusals move no money). */
  add(counts: readonly RefusalCount[]): Promise<void>;
  /** Every counter of the given days. */
  read(days: readonly string[]): Promise<RefusalCount[]>;
}

/** Placeholder for a part of the key that is unknown (an unidentified caller). */
export const UNKNOWN = '-';

const GUARDRAIL_CODE = /guardrail|content_(?:filter|blocked|policy)|moderation/i;

/**
 * The refusal a finished request was, or undefined when it was not one (it succeeded, was bad input, or the
 * provider failed).
 */
export function refusalOf(event: Pick<RequestEvent, 'status' | 'error' | 'principal'>): Refusal | undefined {
  const error = event.error;
  if (!error || event.status < 400) return undefined;
  const headers = error.headers ?? {};
  const who = event.principal;
  const keyId = who?.keyId ?? UNKNOWN;
  const keyScope = who ? `key:${who.keyId}` : UNKNOWN;
  const code = error.code ?? '';
  const base = { keyId, ...(who?.userId ? { userId: who.userId } : {}), ...(who?.orgId ? { orgId: who.orgId } : {}) };
  const of = (reason: RefusalReason, scope: string): Refusal => ({ reason, scope, ...base });
  if (GUARDRAIL_CODE.test(code)) return of('guardrail', keyScope);
  switch (error.kind) {
    case 'insufficient_quota': {
      const window = headers['x-tollgate-budget-window'];
      return { ...of('budget', headers['x-tollgate-budget-scope'] ?? keyScope), ...(window ? { window } : {}) };
    }
    case 'rate_limit': {
      if (code === 'circuit_open') {
        const cause = headers['x-tollgate-circuit-cause'];
        return of(cause === 'velocity' ? 'spend_velocity' : 'circuit_open', headers['x-tollgate-circuit-scope'] ?? keyScope);
      }
      if (code === 'loop_detected') return of('loop_detected', keyScope);
      if (code === 'gateway_busy') return of('gateway_busy', 'gateway');
      if (headers['x-ratelimit-limit-tokens'] !== undefined) return of('rate_tpm', keyScope);
      if (headers['x-ratelimit-limit-requests'] !== undefined) return of('rate_rpm', keyScope);
      return of('concurrency', keyScope);
    }
    case 'authentication':
      if (code === 'expired_api_key') return of('key_expired', keyScope);
      // A known key or service that was refused (the authenticator names it): revoked; otherwise unknown.
      if (who && (code === 'invalid_api_key' || code === 'service_revoked')) return of('key_revoked', keyScope);
      if (code === 'missing_admin_token' || code === 'invalid_admin_token') return undefined;
      return of('invalid_key', UNKNOWN);
    case 'permission':
      if (code === 'key_suspended' || code === 'service_suspended') return of('key_suspended', keyScope);
      if (code === 'missing_scope') return of('missing_scope', keyScope);
      return undefined;
    case 'unavailable':
      return of('store_unavailable', 'gateway');
    default:
      return undefined;
  }
}

/** `YYYY-MM-DD` of an instant (UTC). */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

export interface RefusalRecorderOptions {
  readonly store: RefusalStore;
  readonly clock: Clock;
  readonly log: Logger;
  /**
   * At most one log line about failed writes per this many ms (a store outage must not flood the log).
   * @default 60_000
   */
  readonly errorLogIntervalMs?: number;
  /**
   * Most distinct counters kept waiting while a write is in flight; past it, counts are dropped (and counted in
   * the next error log line) rather than growing memory without bound.
   * @default 10_000
   */
  readonly maxPending?: number;
}

/**
 * Counts refusals off the request path: {@link RefusalRecorder.observer} only adds to an in-memory map; one
 * background flush at a time writes it, and counts arriving meanwhile wait for the next flush (so a flood of
 * refusals of one key costs one write per flush, not one per request).
 */
export class RefusalRecorder {
  private pending = new Map<string, RefusalCount>();
  private flushing: Promise<void> | undefined;
  private dropped = 0;
  private failed = 0;
  private lastErrorLogAt = Number.NEGATIVE_INFINITY;
  private readonly errorLogIntervalMs: number;
  private readonly maxPending: number;

  constructor(private readonly o: RefusalRecorderOptions) {
    this.errorLogIntervalMs = o.errorLogIntervalMs ?? 60_000;
    this.maxPending = o.maxPending ?? 10_000;
  }

  /** The request observer: classifies the request and, for a refusal, schedules its count. */
  readonly observer: RequestObserver = (event) => {
    const refusal = refusalOf(event);
    if (refusal) this.count(refusal);
  };

  /** Adds one refusal to the pending counts and starts a flush if none is running. */
  count(refusal: Refusal): void {
    const now = this.o.clock.now();
    const day = utcDay(now);
    const id = `${day}|${refusal.reason}|${refusal.scope}|${refusal.window ?? ''}|${refusal.keyId}`;
    const prev = this.pending.get(id);
    if (!prev && this.pending.size >= this.maxPending) {
      this.dropped += 1;
      return;
    }
    this.pending.set(id, { ...refusal, day, count: (prev?.count ?? 0) + 1, lastAt: now });
    if (!this.flushing) this.flushing = this.flushLoop();
  }

  /** Resolves once every count so far has been written (or its write failed). */
  async flushed(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private async flushLoop(): Promise<void> {
    try {
      while (this.pending.size > 0) {
        const batch = [...this.pending.values()];
        this.pending = new Map();
        try {
          await this.o.store.add(batch);
        } catch (err) {
          this.failed += batch.reduce((s, c) => s + c.count, 0);
          this.logFailure(err);
        }
      }
      if (this.dropped > 0) this.logFailure(undefined);
    } finally {
      this.flushing = undefined;
    }
  }

  private logFailure(err: unknown): void {
    const now = this.o.clock.now();
    if (now - this.lastErrorLogAt < this.errorLogIntervalMs) return;
    this.lastErrorLogAt = now;
    this.o.log.log('warn', 'refusal counts not recorded', {
      lostRefusals: this.failed + this.dropped,
      ...(err ? { error: err instanceof Error ? err.message : String(err) } : {}),
    });
    this.failed = 0;
    this.dropped = 0;
  }
}
